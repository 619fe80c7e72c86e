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
        err.contains("ups-b") && err.contains("no value"),
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
