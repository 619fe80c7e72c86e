#!/usr/bin/env bash
# The packaged dcwatt, tested the way an operator installs it (needs root and dpkg):
#   build both .debs (scripts/package.sh) → dpkg -i → files, owners and modes → run the
#   installed binaries as the dcwatt user from / (a working directory it cannot write) with
#   the packaged configuration, until the first PUE → SIGHUP reload, SIGTERM save →
#   systemd-analyze verify and security (exposure ≤ 2.9) → upgrade keeps an edited
#   configuration → the Ansible role twice on localhost (second run changed=0) → purge
#   leaves nothing behind but a state directory asked to be kept.
# PID 1 is not systemd here, so the binaries run directly as the package user.
# Without root it skips, loudly (fails with DCWATT_REQUIRE_SERVICES=1).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -ne 0 ] || ! command -v dpkg >/dev/null 2>&1; then
    echo "test-packages: SKIPPED: needs root and dpkg" >&2
    [ "${DCWATT_REQUIRE_SERVICES:-}" = 1 ] && exit 1
    exit 0
fi
if ! command -v ansible-playbook >/dev/null 2>&1; then
    echo "test-packages: installing ansible-core" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core >/dev/null; }
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

work=$(mktemp -d /tmp/dcwatt-pkgtest.XXXXXX)
chmod 755 "$work"
pids=()
purge_all() { dpkg --purge dcwatt-agent dcwatt-collector >/dev/null 2>&1 || true; rm -rf /var/lib/dcwatt-collector /var/lib/dcwatt-agent; }
cleanup() {
    [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
    # Whatever still runs as the package user was started here: stop it too.
    pkill -u dcwatt 2>/dev/null || true
    wait 2>/dev/null || true
    # Leave the machine as it was: the rest of the suite must not pick up /etc/dcwatt.
    purge_all
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# From / (the dcwatt user cannot write there), with an empty environment. Only ever
# called in the background (&) or in $(...), whose subshell the exec replaces: the PID
# that $! gives is the binary's own, so signals reach it.
as_dcwatt() { cd / && exec env -i PATH=/usr/bin:/bin "$@"; }
# The package user, with its own groups only.
as_user=(setpriv --reuid=dcwatt --regid=dcwatt --init-groups)
mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null; }

echo "test-packages: building"
scripts/package.sh >"$work/package.log" 2>&1 || { cat "$work/package.log"; exit 1; }
deb_c=$(ls -t target/debian/dcwatt-collector_*.deb | head -1)
deb_a=$(ls -t target/debian/dcwatt-agent_*.deb | head -1)
echo "test-packages: $(du -k "$deb_c" | cut -f1) KiB $(basename "$deb_c"), $(du -k "$deb_a" | cut -f1) KiB $(basename "$deb_a")"
purge_all

echo "test-packages: install"
t0=$(date +%s%N)
check "dpkg -i both packages" dpkg -i "$deb_c" "$deb_a"
check "user dcwatt exists, no login shell" bash -c 'getent passwd dcwatt | grep -q ":/usr/sbin/nologin$"'
check "binaries in /usr/bin, 755 root" bash -c '[ "$(stat -c "%a %U" /usr/bin/dcwatt-collector)" = "755 root" ] && [ "$(stat -c "%a %U" /usr/bin/dcwatt-agent)" = "755 root" ]'
for p in collector agent; do
    check "/etc/dcwatt/$p.toml is a conffile, 640 root:dcwatt" \
        bash -c "[ \"\$(stat -c '%a %U:%G' /etc/dcwatt/$p.toml)\" = '640 root:dcwatt' ] && dpkg-query -W -f='\${Conffiles}' dcwatt-$p | grep -q /etc/dcwatt/$p.toml"
    check "/var/lib/dcwatt-$p is 750 dcwatt:dcwatt" bash -c "[ \"\$(stat -c '%a %U:%G' /var/lib/dcwatt-$p)\" = '750 dcwatt:dcwatt' ]"
    unit=$(dpkg -L dcwatt-$p | grep "/systemd/system/dcwatt-$p.service$" | head -1)
    check "unit dcwatt-$p.service installed" test -f "$unit"
    check "sysusers.d and tmpfiles.d entries" test -f /usr/lib/sysusers.d/dcwatt-$p.conf -a -f /usr/lib/tmpfiles.d/dcwatt-$p.conf
    check "docs in /usr/share/doc/dcwatt-$p" test -f /usr/share/doc/dcwatt-$p/README.md
    if [ "$p" = collector ]; then
        ex=/usr/share/doc/dcwatt-collector/examples
        check "Prometheus rules and Grafana dashboards in $ex" test -f $ex/prometheus/dcwatt-alerts.yml \
            -a -f $ex/prometheus/prometheus.yml -a -f $ex/grafana/dcwatt-prometheus.json \
            -a -f $ex/grafana/dcwatt-influxql.json -a -f $ex/grafana/provisioning/datasources/dcwatt.yaml
    fi
    check "systemd-analyze verify dcwatt-$p.service" systemd-analyze verify "$unit"
    score=$(systemd-analyze security --offline=true --threshold=29 "$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    check "systemd-analyze security dcwatt-$p: exposure $score ≤ 2.9" systemd-analyze security --offline=true --threshold=29 "$unit" >/dev/null 2>&1
    echo "  exposure dcwatt-$p.service: $score"
done
check "udev rule gives RAPL to the dcwatt group, never to all" \
    bash -c 'grep -q "chgrp dcwatt" /usr/lib/udev/rules.d/60-dcwatt-agent.rules && grep -q "chmod 0440" /usr/lib/udev/rules.d/60-dcwatt-agent.rules'

echo "test-packages: run as the dcwatt user from /"
http=$(free_port); mqtt=$(free_port)
as_dcwatt DCWATT__HTTP__LISTEN=127.0.0.1:$http DCWATT__BROKER__LISTEN=127.0.0.1:$mqtt DCWATT__STATE__INTERVAL_SECS=1 \
    "${as_user[@]}" /usr/bin/dcwatt-collector >"$work/collector.log" 2>&1 &
cpid=$!; pids+=($cpid)
# The packaged agent (sysinfo) with the site set from the environment, and a facility
# meter agent beside it (utility input and UPS output: a category-1 PUE).
as_dcwatt DCWATT__SITE=pkg DCWATT__NODE=host-1 DCWATT__MQTT__PORT=$mqtt DCWATT__INTERVAL_SECS=1 \
    "${as_user[@]}" /usr/bin/dcwatt-agent >"$work/agent.log" 2>&1 &
pids+=($!)
sed -e 's/^site = .*/site = "pkg"/' -e 's/^interval_secs = .*/interval_secs = 1/' configs/demo/facility-meter.toml >"$work/meter.toml"
chmod 644 "$work/meter.toml"
as_dcwatt DCWATT__MQTT__PORT=$mqtt DCWATT__STATE_DIR=/var/lib/dcwatt-agent "${as_user[@]}" /usr/bin/dcwatt-agent --config "$work/meter.toml" >"$work/meter.log" 2>&1 &
pids+=($!)
first_pue=""
for _ in $(seq 1 600); do
    v=$(curl -s "http://127.0.0.1:$http/api/v1/sites/pkg" | python3 -c 'import json,sys; w=json.load(sys.stdin)["pue"]["1m"]; print(w["value"] if w.get("value") is not None else "")' 2>/dev/null)
    if [ -n "$v" ]; then first_pue=$v; break; fi
    kill -0 $cpid 2>/dev/null || break
    sleep 0.1
done
t1=$(date +%s%N)
check "first PUE served (1m window: $first_pue)" test -n "$first_pue" \
    || { tail -5 "$work"/*.log; curl -s "http://127.0.0.1:$http/api/v1/sites/pkg" | head -c 2000; echo; }
echo "  time from dpkg -i to the first PUE: $(( (t1 - t0) / 1000000 )) ms"
check "the packaged agent is online in the collector" bash -c "curl -s http://127.0.0.1:$http/api/v1/sites/pkg/nodes | grep -q host-1"
check "state files under /var/lib/dcwatt-collector, owned by dcwatt" \
    bash -c 'sleep 2; [ "$(stat -c %U /var/lib/dcwatt-collector/dcwatt-history.sqlite)" = dcwatt ] && [ -f /var/lib/dcwatt-collector/dcwatt-state.sqlite ]'
check "agent spool under /var/lib/dcwatt-agent" test -d /var/lib/dcwatt-agent/dcwatt-spool/pkg/host-1
check "nothing written to /" bash -c '! ls / | grep -q dcwatt'
kill -HUP $cpid
sleep 1
check "SIGHUP reloads, does not kill" bash -c "kill -0 $cpid && grep -q 'configuration reloaded' '$work/collector.log'"
kill -TERM $cpid
wait $cpid
rc=$?
check "SIGTERM: clean exit (status $rc) with a final state save" \
    bash -c "[ $rc = 0 ] && grep -q 'shutting down' '$work/collector.log'"
kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; pids=()

echo "test-packages: refusals"
out=$(as_dcwatt "${as_user[@]}" /usr/bin/dcwatt-agent check-config 2>&1); rc=$?
check "agent without a site exits 64 and says how to set it" bash -c "[ $rc = 64 ] && grep -q DCWATT__SITE <<<\"\$0\"" "$out"
mkdir -p "$work/ro" && chmod 555 "$work/ro"
out=$(as_dcwatt DCWATT__STATE_DIR="$work/ro" "${as_user[@]}" /usr/bin/dcwatt-collector check-config 2>&1); rc=$?
check "unwritable state_dir: exit 64 naming the path" bash -c "[ $rc = 64 ] && grep -q 'state_dir: $work/ro is not writable' <<<\"\$0\"" "$out"

echo "test-packages: upgrade keeps an edited configuration"
echo '# edited by the operator' >>/etc/dcwatt/collector.toml
cargo deb -p dcwatt-collector --no-build --deb-version 0.1.0-99 -o "$work/" >/dev/null 2>&1
check "dpkg -i a newer version" bash -c "DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold $work/dcwatt-collector_*99*.deb >/dev/null"
check "edited configuration kept" grep -q 'edited by the operator' /etc/dcwatt/collector.toml
check "state kept across the upgrade" test -f /var/lib/dcwatt-collector/dcwatt-state.sqlite

echo "test-packages: the Ansible role, twice"
dpkg --purge dcwatt-agent >/dev/null
(cd deploy/ansible && ansible-playbook tests/localhost.yml -e "dcwatt_agent_deb=$root/$deb_a") >"$work/ansible1.log" 2>&1
check "first run succeeds" grep -Eq 'localhost +: ok=[0-9]+ +changed=[1-9][0-9]* +unreachable=0 +failed=0' "$work/ansible1.log" || cat "$work/ansible1.log"
(cd deploy/ansible && ansible-playbook tests/localhost.yml -e "dcwatt_agent_deb=$root/$deb_a") >"$work/ansible2.log" 2>&1
check "second run: changed=0" grep -Eq 'localhost +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$work/ansible2.log" || cat "$work/ansible2.log"
check "configuration from the inventory" bash -c 'grep -q "^site = \"ci-site\"" /etc/dcwatt/agent.toml && grep -q "^rack = \"r07\"" /etc/dcwatt/agent.toml && dcwatt-agent --config /etc/dcwatt/agent.toml check-config | grep -q "site ci-site node ci-node-1, 2 source"'
check "MQTT password 640 root:dcwatt" bash -c '[ "$(stat -c "%a %U:%G" /etc/dcwatt/mqtt-password)" = "640 root:dcwatt" ]'
check "service enabled" test -L /etc/systemd/system/multi-user.target.wants/dcwatt-agent.service

echo "test-packages: purge"
files_c=$(dpkg -L dcwatt-collector | grep -v '^/\.$')
files_a=$(dpkg -L dcwatt-agent | grep -v '^/\.$')
DCWATT_KEEP_STATE=1 dpkg --purge dcwatt-collector >/dev/null 2>&1
dpkg --purge dcwatt-agent >/dev/null 2>&1
left=""
for f in $files_c $files_a /etc/dcwatt/mqtt-password; do
    case "$f" in /usr|/usr/bin|/usr/lib|/usr/share|/usr/share/doc|/etc|/lib|/lib/systemd|/lib/systemd/system|/usr/lib/systemd|/usr/lib/systemd/system|/usr/lib/sysusers.d|/usr/lib/tmpfiles.d|/usr/lib/udev|/usr/lib/udev/rules.d) continue ;; esac
    [ -e "$f" ] && left="$left $f"
done
check "purge leaves no packaged file behind${left:+ (left:$left)}" test -z "$left"
check "no /etc/dcwatt, no enablement link" bash -c '[ ! -e /etc/dcwatt ] && [ ! -e /etc/systemd/system/multi-user.target.wants/dcwatt-agent.service ]'
check "DCWATT_KEEP_STATE=1 kept the collector's data" test -f /var/lib/dcwatt-collector/dcwatt-state.sqlite
check "the agent's state went with its purge" test ! -e /var/lib/dcwatt-agent

echo "test-packages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
