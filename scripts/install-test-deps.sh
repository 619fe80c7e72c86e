#!/usr/bin/env bash
# Installs what dcwatt's tests talk to, when missing: Mosquitto, Prometheus Alertmanager and
# promtool,
# ipmitool, net-snmp's snmpd, bzip2, VictoriaMetrics (it accepts the InfluxDB v2 write API) and
# headless Chromium with its WebDriver for the dashboard tests, collectd and node_exporter for
# the benchmarks (Debian packages), and the
# BMC, Modbus and SNMP simulators (PyPI, into .venv).
# Idempotent; needs root and apt-get to install. Without them the Mosquitto tests skip
# loudly, or fail when DCWATT_REQUIRE_SERVICES=1.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
# promtool (Prometheus' own linter) checks the collector's /metrics.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v ipmitool >/dev/null 2>&1 || need+=(ipmitool)
command -v snmpd >/dev/null 2>&1 || [ -x /usr/sbin/snmpd ] || need+=(snmpd snmp)
command -v victoria-metrics >/dev/null 2>&1 || [ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium chromium-driver)
# The benchmarks' peers: collectd (with its MQTT plugin) and Prometheus node_exporter.
[ -x /usr/sbin/collectd ] || need+=(collectd-core)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
# bzcat: snmpsim-data ships most real devices' recordings compressed.
command -v bzcat >/dev/null 2>&1 || need+=(bzip2)
# A CJK font, so that the Chinese dashboard renders in screenshots.
[ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-microhei)

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

# Python protocol peers in .venv: a DCMI BMC (pyghmi), Modbus meters (pymodbus), an SNMP
# agent simulator with real devices' recordings (snmpsim, snmpsim-data).
venv=.venv
if ! "$venv/bin/python" -c 'import pyghmi, pymodbus, snmpsim' >/dev/null 2>&1; then
    echo "install-test-deps: installing the Python protocol peers into $venv" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q 'pyghmi==1.6.19' 'pymodbus==3.16.1' \
        'snmpsim==1.2.2' 'snmpsim-data==1.0.1' \
        || echo "install-test-deps: could not install the Python peers; their tests skip" >&2
fi
if [ -x "$venv/bin/setup-snmpsim-data" ] && [ ! -f "$venv/snmpsim-data/UPS/eaton-93e-80.snmprec" ]; then
    "$venv/bin/setup-snmpsim-data" "$venv/snmpsim-data" >/dev/null 2>&1 || true
    bunzip2 -kf "$venv/snmpsim-data/UPS/eaton-93e-80.snmprec.bz2" 2>/dev/null || true
fi
