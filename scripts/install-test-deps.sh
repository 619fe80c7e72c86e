#!/usr/bin/env bash
# Installs what dcwatt's tests talk to, when missing: Mosquitto, Prometheus Alertmanager
# and ipmitool (Debian packages), and pyghmi and pymodbus for the BMC and meter simulators
# (PyPI, into .venv).
# Idempotent; needs root and apt-get to install. Without them the Mosquitto tests skip
# loudly, or fail when DCWATT_REQUIRE_SERVICES=1.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v ipmitool >/dev/null 2>&1 || need+=(ipmitool)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or the tests that need them skip" >&2
    else
        echo "install-test-deps: installing ${need[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi

# Python protocol peers (a DCMI BMC on pyghmi, Modbus meters on pymodbus) in .venv.
venv=.venv
if ! "$venv/bin/python" -c 'import pyghmi, pymodbus' >/dev/null 2>&1; then
    echo "install-test-deps: installing pyghmi and pymodbus into $venv" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'pyghmi==1.6.19' 'pymodbus==3.16.1' \
        || echo "install-test-deps: could not install the Python peers; their tests skip" >&2
fi
