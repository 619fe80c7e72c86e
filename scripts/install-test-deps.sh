#!/usr/bin/env bash
# Installs what dcwatt's tests talk to, when missing: Mosquitto and Prometheus Alertmanager
# (Debian packages).
# Idempotent; needs root and apt-get to install. Without them the Mosquitto tests skip
# loudly, or fail when DCWATT_REQUIRE_SERVICES=1.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or the tests that need them skip" >&2
    exit 0
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
