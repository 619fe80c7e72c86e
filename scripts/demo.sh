#!/usr/bin/env bash
# Runs a whole demo site on this machine: the collector with its embedded MQTT broker, two
# facility meter agents (utility, UPS, and each hall's cooling), 40 simulated hosts in
# racks r1–r4 and 10 GPU servers in r5, all publishing over real MQTT, over seven days of
# history generated at start. Every file it writes lives in .run/demo/ (git status stays
# clean). Ctrl-C stops everything. Needs only a Rust toolchain.
#
#   DCWATT_DEMO_HOSTS=50        number of host agents (the last ten are GPU servers)
#   DCWATT_DEMO_HTTP=127.0.0.1:8080   collector HTTP address
#   DCWATT_DEMO_MQTT_PORT=1883  embedded broker port
#   DCWATT_DEMO_HISTORY_DAYS=7  days of history generated before the start
#   DCWATT_DEMO_SECONDS=        stop by itself after this many seconds
set -euo pipefail
cd "$(dirname "$0")/.."

hosts=${DCWATT_DEMO_HOSTS:-50}
days=${DCWATT_DEMO_HISTORY_DAYS:-7}
http=${DCWATT_DEMO_HTTP:-127.0.0.1:8080}
mqtt_port=${DCWATT_DEMO_MQTT_PORT:-1883}

echo "demo: building (release)..." >&2
cargo build --release --bins --quiet
bin=target/release
run=.run/demo
rm -rf "$run"
mkdir -p "$run"

pids=()
cleanup() {
    trap - EXIT INT TERM
    [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "demo: stopped (logs in $run/)" >&2
}
trap cleanup EXIT INT TERM

# Seven days of history for the demo site, as the collector would have written them.
if [ "$days" -gt 0 ]; then
    echo "demo: generating $days days of history..." >&2
    "$bin/dcwatt-backfill" --db "$run/collector/dcwatt-history.sqlite" --site demo --days "$days" \
        --hosts "$hosts" >"$run/backfill.log" 2>&1 || { cat "$run/backfill.log" >&2; exit 1; }
fi

DCWATT__HTTP__LISTEN="$http" DCWATT__BROKER__LISTEN="127.0.0.1:$mqtt_port" \
    "$bin/dcwatt-collector" --config configs/demo/collector.toml --state-dir "$run/collector" \
    >"$run/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "collector ready" "$run/collector.log" 2>/dev/null && break
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "demo: the collector did not start:" >&2
        cat "$run/collector.log" >&2
        exit 1
    fi
    sleep 0.1
done

for meters in facility-meter hall-2-cooling; do
    DCWATT__MQTT__PORT="$mqtt_port" "$bin/dcwatt-agent" --config "configs/demo/$meters.toml" \
        --state-dir "$run/agents" >"$run/$meters.log" 2>&1 &
    pids+=($!)
done
for i in $(seq -w 1 "$hosts"); do
    n=$((10#$i))
    if [ "$n" -gt $((hosts - 10)) ]; then
        # The last ten: GPU servers in rack r5, hall-2.
        sed -e "s/^seed = .*/seed = $((40 + n))/" configs/demo/gpu-host.toml >"$run/host-$i.toml"
        node="gpu-$i" rack=r5 zone=hall-2
    else
        # Hosts differ in base power (280-439 W), phase of their load cycle, and rack (10
        # per rack); racks r1-r3 are in hall-1, r4 in hall-2.
        sed -e "s/^base_w = .*/base_w = $((280 + (n * 37) % 160)).0/" \
            -e "s/^period_secs = .*/period_secs = $((240 + (n * 13) % 120)).0/" \
            -e "s/^seed = .*/seed = $n/" configs/demo/host.toml >"$run/host-$i.toml"
        node="host-$i" rack="r$(((n - 1) / 10 + 1))"
        zone=hall-1
        [ "$n" -gt 30 ] && zone=hall-2
    fi
    DCWATT__NODE="$node" DCWATT__RACK="$rack" DCWATT__ZONE="$zone" DCWATT__MQTT__PORT="$mqtt_port" \
        "$bin/dcwatt-agent" --config "$run/host-$i.toml" --state-dir "$run/agents" >"$run/host-$i.log" 2>&1 &
    pids+=($!)
done

cat <<EOT
dcwatt demo running: 1 collector (embedded broker on 127.0.0.1:$mqtt_port), 2 facility meter agents, $hosts host agents ($days days of history).

  Dashboard:                                   http://$http/
  Site (live power ratio, PUE 1m/15m/1h/24h):  http://$http/api/v1/sites/demo
  Racks (budgets, A/B headroom, U space):      http://$http/api/v1/sites/demo/racks
  Nodes:                                       http://$http/api/v1/sites/demo/nodes
  All sites:                                   http://$http/api/v1/sites
  Alerts:                                      http://$http/api/v1/alerts
  Energy report, last 7 days:                  http://$http/api/v1/sites/demo/calendar
  Prometheus metrics:                          http://$http/metrics

The first PUE values appear within a few seconds and an alert fires within a minute; the
trends and energy reports start $days days back.
Press Ctrl-C to stop.
EOT

if [ -n "${DCWATT_DEMO_SECONDS:-}" ]; then
    sleep "$DCWATT_DEMO_SECONDS"
else
    wait "${pids[0]}"
fi
