#!/usr/bin/env bash
# Runs a whole demo site on this machine: the collector with its embedded MQTT broker, a
# facility meter agent and 50 simulated hosts, all publishing over real MQTT. Ctrl-C stops
# everything. Needs only a Rust toolchain.
#
#   DCWATT_DEMO_HOSTS=50        number of host agents
#   DCWATT_DEMO_HTTP=127.0.0.1:8080   collector HTTP address
#   DCWATT_DEMO_MQTT_PORT=1883  embedded broker port
#   DCWATT_DEMO_SECONDS=        stop by itself after this many seconds
set -euo pipefail
cd "$(dirname "$0")/.."

hosts=${DCWATT_DEMO_HOSTS:-50}
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

DCWATT__HTTP__LISTEN="$http" DCWATT__BROKER__LISTEN="127.0.0.1:$mqtt_port" DCWATT__ALERTS__STATE_FILE="$run/alerts.json" \
    "$bin/dcwatt-collector" --config configs/demo/collector.toml >"$run/collector.log" 2>&1 &
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

DCWATT__MQTT__PORT="$mqtt_port" DCWATT__SPOOL__DIR="$run/spool" "$bin/dcwatt-agent" --config configs/demo/facility-meter.toml \
    >"$run/facility-meters.log" 2>&1 &
pids+=($!)
for i in $(seq -w 1 "$hosts"); do
    n=$((10#$i))
    # Hosts differ in base power (280-439 W), phase of their load cycle, and rack (10 per rack).
    sed -e "s/^base_w = .*/base_w = $((280 + (n * 37) % 160)).0/" \
        -e "s/^period_secs = .*/period_secs = $((240 + (n * 13) % 120)).0/" \
        -e "s/^seed = .*/seed = $n/" configs/demo/host.toml >"$run/host-$i.toml"
    DCWATT__NODE="host-$i" DCWATT__RACK="r$(((n - 1) / 10 + 1))" DCWATT__MQTT__PORT="$mqtt_port" DCWATT__SPOOL__DIR="$run/spool" \
        "$bin/dcwatt-agent" --config "$run/host-$i.toml" >"$run/host-$i.log" 2>&1 &
    pids+=($!)
done

cat <<EOT
dcwatt demo running: 1 collector (embedded broker on 127.0.0.1:$mqtt_port), 1 facility meter agent, $hosts host agents.

  Site (live power ratio, PUE 1m/15m/1h/24h):  http://$http/api/v1/sites/demo
  Nodes:                                       http://$http/api/v1/sites/demo/nodes
  All sites:                                   http://$http/api/v1/sites
  Prometheus metrics:                          http://$http/metrics

The first PUE values appear within a few seconds; the 1h and 24h windows fill with time.
Press Ctrl-C to stop.
EOT

if [ -n "${DCWATT_DEMO_SECONDS:-}" ]; then
    sleep "$DCWATT_DEMO_SECONDS"
else
    wait "${pids[0]}"
fi
