//! The snmp source against real SNMP agents: snmpsim serving a UPS-MIB UPS and an APC
//! rPDU2 recorded for these tests plus a real Eaton 93E UPS recording from snmpsim-data
//! (v2c), and net-snmp's snmpd with an SNMPv3 authPriv (SHA/AES) user. End to end, a
//! facility agent polling a Modbus utility meter and the SNMP UPS gives a category-1 PUE
//! with the UPS output as IT energy.

use dcwatt_common::protocol::{Point, Reading};
use dcwatt_e2e::*;
use std::process::Command;
use std::time::Duration;

fn device(port: u16, community: &str, component: &str, extra: &str) -> String {
    format!(
        "[[sources]]\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {port}\ncommunity = \"{community}\"\ncomponent = \"{component}\"\ntimeout_secs = 2\nretries = 2\n{extra}\n"
    )
}

fn find<'a>(
    r: &'a [Reading],
    component: &str,
    metric: &str,
    point: Option<Point>,
) -> Option<&'a Reading> {
    r.iter()
        .find(|x| x.component == component && x.metric == metric && x.point == point)
}

/// snmpsim indexes its recordings at start-up; wait until it answers.
fn wait_ready(dir: &TempDir, port: u16) {
    wait_for("snmpsim to answer", Duration::from_secs(60), || {
        let (ok, _, _) = agent_once(dir, "ready", &device(port, "ups", "probe", "[[sources.oids]]\noid = \"1.3.6.1.2.1.33.1.4.1.0\"\nmetric = \"ups_output_source\""));
        ok.then_some(())
    });
}

#[test]
fn ups_and_pdu_profiles_over_v2c_including_a_real_device_recording() {
    let dir = TempDir::new("snmp-v2c");
    let Some(sim) = SnmpSim::start(&dir, &["UPS/eaton-93e-80"]) else {
        return skip_or_fail("snmp", "snmpsim is not installed in .venv");
    };
    wait_ready(&dir, sim.port);
    let sources = [
        device(sim.port, "ups", "ups-a", "profile = \"ups_mib\""),
        device(sim.port, "eaton-93e-80", "ups-eaton", "profile = \"ups_mib\""),
        device(sim.port, "apc-rpdu2", "pdu-7", "profile = \"apc_rpdu2\"\npoint = \"pdu_input\""),
        device(sim.port, "ups-on-battery", "ups-b", "profile = \"ups_mib\"\n[[sources.oids]]\noid = \"1.3.6.1.2.1.33.1.3.3.1.5\"\nmetric = \"power_w\"\nwalk = true\npoint = \"ups_input\"\nscale = 1.0"),
    ]
    .concat();
    let (_, r, err) = agent_once(&dir, "all", &sources);
    assert_eq!(
        find(&r, "ups-a", "power_w", Some(Point::UpsOutput)).map(|x| x.value),
        Some(5750.0),
        "{err}"
    );
    assert_eq!(
        find(&r, "ups-a", "power_w", Some(Point::UpsInput)).map(|x| x.value),
        Some(6130.0)
    );
    assert_eq!(
        find(&r, "ups-a", "ups_output_source", None).map(|x| x.value),
        Some(3.0)
    );
    assert_eq!(
        find(&r, "ups-a", "ups_load_ratio", None).map(|x| x.value),
        Some(0.41)
    );
    assert_eq!(
        find(&r, "ups-eaton", "power_w", Some(Point::UpsOutput)).map(|x| x.value),
        Some(11_400.0),
        "the Eaton 93E's three lines"
    );
    assert_eq!(
        find(&r, "pdu-7", "power_w", Some(Point::PduInput)).map(|x| x.value),
        Some(1_210.0),
        "121 × 0.01 kW"
    );
    let energy = find(&r, "pdu-7", "energy_j", Some(Point::PduInput)).unwrap();
    assert_eq!(
        (energy.value, energy.kind),
        (19_516.0 * 360_000.0, dcwatt_common::protocol::Kind::Counter),
        "19516 × 0.1 kWh"
    );
    assert_eq!(
        find(&r, "ups-b", "ups_output_source", None).map(|x| x.value),
        Some(5.0),
        "on battery"
    );
    assert!(
        err.contains("ups-b") && err.contains("not on this device"),
        "a missing table is reported: {err}"
    );

    // A wrong scale (0.01 kW read as kW) is refused as implausible, not published.
    let wrong_scale = "profile = \"apc_rpdu2\"\npoint = \"pdu_input\"\n[[sources.oids]]\noid = \"1.3.6.1.4.1.318.1.1.26.4.3.1.5\"\nmetric = \"power_w\"\nwalk = true\nscale = 1000.0";
    let (ok, r, err) = agent_once(
        &dir,
        "scale",
        &device(sim.port, "apc-rpdu2", "pdu-8", wrong_scale),
    );
    assert!(!ok && err.contains("wrong scale"), "{err}");
    assert!(find(&r, "pdu-8", "power_w", Some(Point::PduInput)).is_none());

    // A wrong community gets no answer: reported, not a crash, not a zero.
    let (ok, r, err) = agent_once(
        &dir,
        "wrong",
        &device(sim.port, "nobody", "ups-x", "profile = \"ups_mib\"").replace(
            "timeout_secs = 2\nretries = 2",
            "timeout_secs = 1\nretries = 0",
        ),
    );
    assert!(!ok && err.contains("ups-x"), "{err}");
    assert_eq!(
        find(&r, "ups-x", "device_up", None).map(|x| x.value),
        Some(0.0)
    );
    assert!(find(&r, "ups-x", "power_w", Some(Point::UpsOutput)).is_none());
}

#[test]
fn snmp_v3_auth_priv_with_sha_and_aes() {
    let dir = TempDir::new("snmp-v3");
    let Some((_snmpd, port)) = snmpd_v3(&dir, "dcwatt", "auth-pass-123", "priv-pass-456") else {
        return skip_or_fail("snmp v3", "snmpd is not installed");
    };
    let auth = dir.write("auth", "auth-pass-123\n");
    let good = dir.write("priv", "priv-pass-456\n");
    let bad = dir.write("bad", "not-the-key\n");
    let v3 = |component: &str, privacy: &std::path::Path| {
        format!(
            "[[sources]]\ntype = \"snmp\"\nhost = \"127.0.0.1\"\nport = {port}\nversion = \"v3\"\nusername = \"dcwatt\"\nauth_protocol = \"sha\"\nauth_password_file = \"{}\"\nprivacy_protocol = \"aes\"\nprivacy_password_file = \"{}\"\ncomponent = \"{component}\"\ntimeout_secs = 2\nretries = 1\n[[sources.oids]]\noid = \"1.3.6.1.2.1.1.3.0\"\nmetric = \"uptime_s\"\nscale = 0.01\n",
            auth.display(),
            privacy.display()
        )
    };
    let r = wait_for("an SNMPv3 reading", Duration::from_secs(20), || {
        let (ok, r, _) = agent_once(&dir, "v3", &v3("agent", &good));
        ok.then_some(r)
    });
    let up = find(&r, "agent", "uptime_s", None).unwrap();
    assert!(
        up.value > 0.0 && up.value < 3600.0,
        "sysUpTime in seconds: {}",
        up.value
    );
    let (ok, r, err) = agent_once(&dir, "v3-bad", &v3("agent", &bad));
    assert!(!ok, "a wrong privacy key must not read: {r:?}");
    assert!(find(&r, "agent", "uptime_s", None).is_none(), "{err}");
}

#[test]
fn facility_agent_gives_category_1_pue_from_the_snmp_ups_output() {
    let dir = TempDir::new("snmp-e2e");
    let Some(sim) = SnmpSim::start(&dir, &[]) else {
        return skip_or_fail("snmp", "snmpsim is not installed in .venv");
    };
    let Some(py) = python_with("pymodbus") else {
        return skip_or_fail("snmp e2e", "pymodbus is not installed in .venv");
    };
    wait_ready(&dir, sim.port);
    let mb_port = free_port();
    let mut cmd = Command::new(py);
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/modbus_meters.py"))
        .arg(mb_port.to_string());
    let _meters = Proc::spawn("meters", cmd, dir.0.join("meters.log"));
    wait_for("the Modbus meter", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", mb_port))
            .ok()
            .map(|_| ())
    });
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let sources = format!(
        "[[sources]]\ntype = \"modbus\"\nhost = \"127.0.0.1\"\nport = {mb_port}\nunit_id = 1\ncomponent = \"utility\"\npoint = \"facility_input\"\n[[sources.registers]]\nmetric = \"power_w\"\naddress = 52\ntype = \"f32\"\n{}",
        device(sim.port, "ups", "ups-a", "profile = \"ups_mib\"")
    );
    let _agent = start_agent(&dir, "facility", &format!("site = \"snmp\"\nnode = \"facility\"\nrole = \"meter\"\ninterval_secs = 1\n[mqtt]\nport = {}\n{sources}", c.mqtt));
    let w = wait_for("a category-1 PUE", Duration::from_secs(40), || {
        let v = c.site("snmp")?;
        v["pue"]["1m"]["value"]
            .as_f64()
            .map(|_| v["pue"]["1m"].clone())
    });
    assert_eq!(w["category"], 1, "{w:#}");
    assert!(
        (w["value"].as_f64().unwrap() - 12_345.5 / 5_750.0).abs() < 1e-6,
        "{w:#}"
    );
    assert_eq!(w["coverage_it"], 1.0);
}

fn reading(r: &[Reading], component: &str, metric: &str, point: Option<Point>) -> Option<f64> {
    find(r, component, metric, point).map(|x| x.value)
}

/// Every UPS and PDU recording of snmpsim-data that carries UPS-MIB or PowerNet data, and
/// the Raritan PDU2 and ServerTech Sentry4 profiles against snmprec files built from their
/// MIBs (tests/peers/snmp, values chosen for the test): each value is right or refused
/// with the device, the OID and the reason, never a wrong measurement. All devices are
/// read by one agent, so each device's `device_up` is its own. The expected values are
/// computed by hand from the recordings, in the comments.
#[test]
fn real_ups_and_pdu_recordings_read_right_or_are_refused_with_the_reason() {
    let dir = TempDir::new("snmp-real");
    let recordings = [
        "UPS/eaton-93e-80",
        "UPS/eastpower-istars-swv053",
        "UPS/huawei-gse200m",
        "UPS/ingrasys-power-switch",
        "UPS/phoenixtec-power",
        "UPS/apc-7902b",
        "UPS/apc-8641",
        "UPS/apc-8932",
        "network/appliance/tripplite-poweralert",
    ];
    let Some(sim) = SnmpSim::start(&dir, &recordings) else {
        return skip_or_fail("snmp", "snmpsim or snmpsim-data is not installed in .venv");
    };
    wait_ready(&dir, sim.port);
    let ups = |community: &str| device(sim.port, community, community, "profile = \"ups_mib\"");
    let pdu = |community: &str, profile: &str| {
        device(
            sim.port,
            community,
            community,
            &format!("profile = \"{profile}\"\npoint = \"pdu_input\""),
        )
    };
    let sources = [
        ups("eaton-93e-80"),
        ups("eastpower-istars-swv053"),
        ups("huawei-gse200m"),
        ups("ingrasys-power-switch"),
        ups("phoenixtec-power"),
        ups("tripplite-poweralert"),
        pdu("apc-7902b", "apc_rpdu2"),
        pdu("apc-8641", "apc_rpdu2"),
        pdu("apc-8932", "apc_rpdu2"),
        pdu("raritan-px2", "raritan_pdu2"),
        pdu("raritan-px2-decimals", "raritan_pdu2"),
        pdu("sentry4", "servertech_sentry4"),
        pdu("sentry4-inconsistent", "servertech_sentry4"),
        // Last, after devices that answer: a device that does not.
        device(sim.port, "nobody", "gone", "profile = \"ups_mib\"").replace(
            "timeout_secs = 2\nretries = 2",
            "timeout_secs = 1\nretries = 0",
        ),
    ]
    .concat();
    let (ok, r, err) = agent_once(&dir, "real", &sources);
    assert!(!ok, "refusals are read errors: {err}");
    let out = |c: &str| reading(&r, c, "power_w", Some(Point::UpsOutput));
    let inp = |c: &str| reading(&r, c, "power_w", Some(Point::UpsInput));
    let pdu_w = |c: &str| reading(&r, c, "power_w", Some(Point::PduInput));
    let pdu_j = |c: &str| reading(&r, c, "energy_j", Some(Point::PduInput));
    let gauge = |c: &str, m: &str| reading(&r, c, m, None);
    let says = |what: &str| assert!(err.contains(what), "expected {what:?} in: {err}");

    // Eaton 93E, three lines: 5100 + 3600 + 2700 W, each under its V × I (220 V × 27.0,
    // 18.0, 15.0 A) and near its load (21, 16, 12 % of 72090 W / 3). Its input reports
    // 0 W beside 21.0 A on every line: not measured.
    assert_eq!(out("eaton-93e-80"), Some(11_400.0), "{err}");
    assert_eq!(inp("eaton-93e-80"), None);
    says("eaton-93e-80 (127.0.0.1");
    says("1.3.6.1.2.1.33.1.3.3.1.5.1 = 0 W beside 21 A on the same line");
    assert_eq!(gauge("eaton-93e-80", "ups_load_ratio"), Some(0.21));
    assert_eq!(gauge("eaton-93e-80", "device_read_ratio"), Some(0.75));

    // East Power iStars: 0 W output beside 20, 26, 30 % load; 0 W input on mains at
    // 236 V. Neither is a measurement; the load and the source are.
    assert_eq!(out("eastpower-istars-swv053"), None);
    assert_eq!(inp("eastpower-istars-swv053"), None);
    says("1.3.6.1.2.1.33.1.4.4.1.4.1.0 = 0 W beside 20 % load on the same line");
    says("upsInputTruePower (1.3.6.1.2.1.33.1.3.3.1.5) = 0 W on every input line while the UPS runs on mains (upsOutputSource = 3)");
    assert_eq!(
        gauge("eastpower-istars-swv053", "ups_load_ratio"),
        Some(0.30)
    );
    assert_eq!(
        gauge("eastpower-istars-swv053", "ups_output_source"),
        Some(3.0)
    );
    assert_eq!(
        gauge("eastpower-istars-swv053", "device_read_ratio"),
        Some(0.5)
    );

    // Huawei UPS5000 (GSE200M card): upsOutputPower 34 beside 2199 × 18.3 A = 40,242
    // VA on the same line: another unit, refused. It has no upsInputTruePower column.
    assert_eq!(out("huawei-gse200m"), None);
    says("1.3.6.1.2.1.33.1.4.4.1.4.1 = 34 W is under a tenth of the line's V × I = 40242 VA");
    says("upsInputTruePower (1.3.6.1.2.1.33.1.3.3.1.5): not on this device");
    assert_eq!(gauge("huawei-gse200m", "ups_load_ratio"), Some(0.08));
    let ratio = gauge("huawei-gse200m", "device_read_ratio").expect("ratio");
    assert!((ratio - 2.0 / 3.0).abs() < 1e-12, "{ratio}");

    // Santak Array 3A3 (Ingrasys card): 7900 + 5500 + 7700 W, under 220 V × 40.0, 28.0,
    // 41.0 A and within a factor 3 of 33 % of 48000 W / 3. Its input power row 1 is a
    // TimeTicks: refused.
    assert_eq!(out("ingrasys-power-switch"), Some(21_100.0));
    assert_eq!(inp("ingrasys-power-switch"), None);
    says("1.3.6.1.2.1.33.1.3.3.1.5.1 is a TimeTicks, not the INTEGER or Gauge32 the MIB defines for power_w");
    assert_eq!(gauge("ingrasys-power-switch", "ups_load_ratio"), Some(0.33));

    // Phoenixtec: output 0 W beside 0 A and 0 % load on its one line — a measured zero;
    // input 0 W at 238 V on mains — not measured.
    assert_eq!(out("phoenixtec-power"), Some(0.0));
    assert_eq!(inp("phoenixtec-power"), None);
    assert_eq!(gauge("phoenixtec-power", "ups_load_ratio"), Some(0.0));

    // Tripp Lite PowerAlert: answers, without the UPS-MIB tables.
    assert_eq!(gauge("tripplite-poweralert", "device_up"), Some(1.0));
    assert_eq!(
        gauge("tripplite-poweralert", "device_read_ratio"),
        Some(0.0)
    );
    assert_eq!(out("tripplite-poweralert"), None);
    says("tripplite-poweralert (127.0.0.1");
    says("the device answers but has none of this source's 4 entries");

    // APC AP7902B: rPDU2DeviceStatusPower and Energy are −1, unsupported by the model.
    assert_eq!(pdu_w("apc-7902b"), None);
    says("rPDU2DeviceStatusPower (1.3.6.1.4.1.318.1.1.26.4.3.1.5): the device reports −1");
    assert_eq!(gauge("apc-7902b", "device_up"), Some(1.0));
    assert_eq!(gauge("apc-7902b", "device_read_ratio"), Some(0.0));
    // APC AP8641: 121 × 0.01 kW (peak 243), 19516 × 0.1 kWh; AP8932: 16 (peak 28), 6426.
    assert_eq!(pdu_w("apc-8641"), Some(1_210.0));
    assert_eq!(pdu_j("apc-8641"), Some(19_516.0 * 360_000.0));
    assert_eq!(pdu_w("apc-8932"), Some(160.0));
    assert_eq!(pdu_j("apc-8932"), Some(6_426.0 * 360_000.0));
    assert_eq!(gauge("apc-8932", "device_read_ratio"), Some(1.0));

    // Raritan PX2 (from PDU2-MIB): 2346 W with 0 decimal digits, under its 2414 VA;
    // 8,123,456 Wh. The same inlet with one decimal digit: 23460 / 10.
    assert_eq!(pdu_w("raritan-px2"), Some(2_346.0));
    assert_eq!(pdu_j("raritan-px2"), Some(8_123_456.0 * 3_600.0));
    assert_eq!(pdu_w("raritan-px2-decimals"), Some(2_346.0));

    // ServerTech Sentry4 (from Sentry4-MIB): cords A and B, 1520 + 1480 W (under 1600
    // and 1560 VA), (45678 + 44321) × 0.1 kWh. With cord A's apparent power at 160 VA,
    // its power is refused, and its energy still read.
    assert_eq!(pdu_w("sentry4"), Some(3_000.0));
    assert_eq!(pdu_j("sentry4"), Some(89_999.0 * 360_000.0));
    assert_eq!(pdu_w("sentry4-inconsistent"), None);
    says("1.3.6.1.4.1.1718.4.1.3.3.1.3.1.1 = 1520 W is above the 160 of st4InputCordApparentPower");
    assert_eq!(pdu_j("sentry4-inconsistent"), Some(89_999.0 * 360_000.0));

    // The device that does not answer reads 0, after twelve that did.
    assert_eq!(gauge("gone", "device_up"), Some(0.0));
    assert_eq!(gauge("gone", "device_read_ratio"), None);
}

/// `probe --config` reads the configured devices, `check-config` warns of a facility
/// device whose power has no point, an entry the device lacks is reported once and then
/// skipped, and `disable` switches an entry off.
#[test]
fn probe_check_config_and_entries_a_device_lacks() {
    let dir = TempDir::new("snmp-probe");
    let Some(sim) = SnmpSim::start(&dir, &["UPS/huawei-gse200m", "UPS/apc-8932"]) else {
        return skip_or_fail("snmp", "snmpsim or snmpsim-data is not installed in .venv");
    };
    wait_ready(&dir, sim.port);
    let sources = [
        device(sim.port, "huawei-gse200m", "ups-h", "profile = \"ups_mib\""),
        device(sim.port, "apc-8932", "pdu-np", "profile = \"apc_rpdu2\""),
    ]
    .concat();
    let cfg = dir.write(
        "probe.toml",
        &format!("site = \"s\"\nnode = \"n\"\nrole = \"meter\"\ninterval_secs = 1\n[mqtt]\nport = {}\n{sources}", free_port()),
    );
    let check = Command::new(bin("dcwatt-agent"))
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .expect("check-config");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: sources[1]: its power and energy have no point, so they never count towards PUE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("sources[0]"),
        "the UPS profile sets its points: {stderr}"
    );

    let probe = Command::new(bin("dcwatt-agent"))
        .arg("--config")
        .arg(&cfg)
        .args(["probe", "--json"])
        .output()
        .expect("probe");
    let probes: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("probe json");
    let snmp: Vec<&serde_json::Value> = probes
        .as_array()
        .expect("list")
        .iter()
        .filter(|p| p["source"] == "snmp")
        .collect();
    assert_eq!(snmp.len(), 2, "one line per configured device: {probes}");
    let detail = |i: usize| snmp[i]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(
        detail(0).contains("ups-h ups_load_ratio = 0.08"),
        "{}",
        detail(0)
    );
    assert!(detail(0).contains("upsInputTruePower (1.3.6.1.2.1.33.1.3.3.1.5): not on this device"));
    assert!(detail(1).contains("pdu-np power_w = 160"), "{}", detail(1));
    assert_eq!(snmp[1]["available"], true);

    // Polled every second: the missing column is reported on the first poll only, the
    // refused output on every poll (logged again once the message changes).
    let mut agent = start_agent(&dir, "polls", &std::fs::read_to_string(&cfg).expect("cfg"));
    wait_for("two polls logged", Duration::from_secs(20), || {
        let log = agent.log();
        (log.matches("is under a tenth of the line's V × I").count() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    agent.kill();
    let log = agent.log();
    assert_eq!(
        log.matches("upsInputTruePower (1.3.6.1.2.1.33.1.3.3.1.5): not on this device")
            .count(),
        1,
        "{log}"
    );

    let (_, r, err) = agent_once(
        &dir,
        "disabled",
        &device(
            sim.port,
            "huawei-gse200m",
            "ups-h",
            "profile = \"ups_mib\"\ndisable = [\"power_w@ups_input\"]",
        ),
    );
    assert!(!err.contains("upsInputTruePower"), "{err}");
    assert_eq!(reading(&r, "ups-h", "ups_load_ratio", None), Some(0.08));
}
