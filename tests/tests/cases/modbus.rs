//! The modbus source against real Modbus TCP servers (pymodbus) shaped like an Eastron
//! SDM630 and a Schneider PM5xxx: exact SI values in every word order, an INT64 energy
//! counter, plausibility rejections for a wrong word order, a meter that disappears
//! mid-poll, and a category-1 PUE from a UPS-output meter. And the figures beyond PUE
//! from a water meter (a millilitre totaliser) and a heat meter at the boundary, read by
//! the agent and turned into WUE, ERF and ERE by the collector.

use dcwatt_e2e::*;
use std::process::Command;
use std::time::Duration;

fn meters(dir: &TempDir, name: &str) -> Option<(Proc, u16)> {
    peer(dir, name, "modbus_meters.py")
}

fn peer(dir: &TempDir, name: &str, script: &str) -> Option<(Proc, u16)> {
    let py = python_with("pymodbus")?;
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(script);
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(port.to_string());
    let mut p = Proc::spawn(name, cmd, dir.0.join(format!("{name}.log")));
    wait_for("the Modbus meters", Duration::from_secs(20), || {
        assert!(p.running(), "meters exited:\n{}", p.log());
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    Some((p, port))
}

fn device(port: u16, unit: u8, component: &str, extra: &str) -> String {
    format!("[[sources]]\ntype = \"modbus\"\nhost = \"127.0.0.1\"\nport = {port}\nunit_id = {unit}\ncomponent = \"{component}\"\ntimeout_secs = 2\n{extra}\n")
}

fn value(
    readings: &[dcwatt_common::protocol::Reading],
    component: &str,
    metric: &str,
) -> Option<f64> {
    readings
        .iter()
        .find(|r| r.component == component && r.metric == metric)
        .map(|r| r.value)
}

#[test]
fn meters_in_every_word_order_read_as_exact_si_values() {
    let dir = TempDir::new("modbus-once");
    let Some((_m, port)) = meters(&dir, "meters") else {
        return skip_or_fail("modbus", "pymodbus is not installed in .venv");
    };
    let sources = [
        device(
            port,
            1,
            "sdm-abcd",
            "profile = \"sdm630\"\npoint = \"facility_input\"",
        ),
        device(
            port,
            2,
            "pm5xxx",
            "profile = \"pm5xxx\"\npoint = \"ups_output\"",
        ),
        device(
            port,
            3,
            "sdm-cdab",
            "profile = \"sdm630\"\nword_order = \"CDAB\"",
        ),
        device(
            port,
            4,
            "sdm-badc",
            "profile = \"sdm630\"\nword_order = \"BADC\"",
        ),
        device(
            port,
            5,
            "sdm-dcba",
            "profile = \"sdm630\"\nword_order = \"DCBA\"",
        ),
    ]
    .concat();
    let (ok, r, err) = agent_once(&dir, "all", &sources);
    assert!(ok, "{err}");
    for c in ["sdm-abcd", "sdm-cdab", "sdm-badc", "sdm-dcba"] {
        assert_eq!(value(&r, c, "power_w"), Some(12345.5), "{c}");
        assert_eq!(
            value(&r, c, "voltage_l1_v"),
            Some(f64::from(230.1f32)),
            "{c}"
        );
        assert_eq!(value(&r, c, "energy_j"), Some(5678.25 * 3.6e6), "{c}");
        assert_eq!(value(&r, c, "device_up"), Some(1.0));
    }
    assert_eq!(value(&r, "pm5xxx", "power_w"), Some(42_500.0));
    assert_eq!(
        value(&r, "pm5xxx", "energy_j"),
        Some(123_456_789_012.0 * 3600.0),
        "INT64 Wh counter"
    );
    let energy = r
        .iter()
        .find(|x| x.component == "pm5xxx" && x.metric == "energy_j")
        .unwrap();
    assert_eq!(
        (energy.kind, energy.point),
        (
            dcwatt_common::protocol::Kind::Counter,
            Some(dcwatt_common::protocol::Point::UpsOutput)
        )
    );
    let volts = r
        .iter()
        .find(|x| x.component == "sdm-abcd" && x.metric == "voltage_l1_v")
        .unwrap();
    assert_eq!(volts.point, None, "only power and energy carry the point");

    // The word-swapped meter configured as big-endian: rejected with the reason.
    let (ok, r, err) = agent_once(
        &dir,
        "wrong",
        &device(port, 3, "misconfigured", "profile = \"sdm630\""),
    );
    assert!(!ok);
    assert!(err.contains("wrong scale or word order"), "{err}");
    assert_eq!(
        value(&r, "misconfigured", "power_w"),
        None,
        "nothing absurd is published"
    );
    assert_eq!(value(&r, "misconfigured", "voltage_l1_v"), None);
}

#[test]
fn a_vanished_meter_is_reported_and_the_others_keep_feeding_category_1_pue() {
    let dir = TempDir::new("modbus-e2e");
    let Some((_a, port_a)) = meters(&dir, "meters-a") else {
        return skip_or_fail("modbus", "pymodbus is not installed in .venv");
    };
    let (mut b, port_b) = meters(&dir, "meters-b").unwrap();
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    // The simulated registers hold still, energy counters included, so these meters are
    // read for power only (a custom register map): the collector integrates the gauges.
    let power_only = |reg: &str| format!("[[sources.registers]]\nmetric = \"power_w\"\n{reg}\n");
    let pm_power = power_only(
        "address = 3059\nfunction = \"holding\"\ntype = \"f32\"\nscale = 1000.0\nunit = \"kW\"",
    );
    let sdm_power = power_only("address = 52\ntype = \"f32\"");
    let sources = [
        device(
            port_a,
            2,
            "incomer",
            &format!("point = \"facility_input\"\n{pm_power}"),
        ),
        device(
            port_a,
            1,
            "ups-a",
            &format!("point = \"ups_output\"\n{sdm_power}"),
        ),
        device(
            port_b,
            1,
            "chiller",
            "profile = \"sdm630\"\npoint = \"cooling\"",
        ),
    ]
    .concat();
    let _agent = start_agent(&dir, "facility", &format!("site = \"fac\"\nnode = \"facility\"\nrole = \"meter\"\ninterval_secs = 1\n[mqtt]\nport = {}\n{sources}", c.mqtt));
    let view = wait_for("category-1 power ratio", Duration::from_secs(30), || {
        let v = c.site("fac")?;
        (v["power"]["category"] == 1 && v["power"]["ratio"].is_number()).then_some(v)
    });
    assert_eq!(view["power"]["facility_w"], 42_500.0);
    assert_eq!(
        view["power"]["it_w"], 12_345.5,
        "IT energy at the UPS output"
    );
    let w = wait_for("a category-1 PUE window", Duration::from_secs(30), || {
        let v = c.site("fac")?;
        v["pue"]["1m"]["value"]
            .as_f64()
            .map(|_| v["pue"]["1m"].clone())
    });
    assert_eq!(w["category"], 1);
    assert_eq!(w["label"], "PUE₁, 1m");
    assert!(
        (w["value"].as_f64().unwrap() - 42_500.0 / 12_345.5).abs() < 1e-6,
        "{w:#}"
    );

    // The chiller's meter disappears; the agent says so and keeps polling the others.
    let _ = b.terminate(Duration::from_secs(5));
    let before = get_json(c.http, "/api/v1/sites/fac/nodes").unwrap()["nodes"][0]
        ["last_reading_ms"]
        .as_i64()
        .unwrap();
    wait_for(
        "the agent to report the lost meter",
        Duration::from_secs(20),
        || {
            let log = std::fs::read_to_string(dir.0.join("facility.log")).unwrap_or_default();
            log.contains("chiller").then_some(())
        },
    );
    wait_for("readings to keep flowing", Duration::from_secs(20), || {
        let n = get_json(c.http, "/api/v1/sites/fac/nodes")?;
        (n["nodes"][0]["last_reading_ms"].as_i64()? > before + 2_000).then_some(())
    });
    let v = c.site("fac").unwrap();
    assert_eq!(v["power"]["facility_w"], 42_500.0);
    assert_eq!(v["power"]["category"], 1);
}

#[test]
fn a_water_meter_and_a_heat_meter_give_wue_erf_and_ere() {
    let dir = TempDir::new("modbus-utility");
    let Some((_m, port)) = peer(&dir, "utility", "modbus_utility.py") else {
        return skip_or_fail("modbus", "pymodbus is not installed in .venv");
    };
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let kw = |point: &str| {
        format!(
            "point = \"{point}\"\n[[sources.registers]]\nmetric = \"power_w\"\naddress = 0\nfunction = \"holding\"\ntype = \"f32\"\nscale = 1000.0\nunit = \"kW\"\n"
        )
    };
    let water = "point = \"water_input\"\n[[sources.registers]]\nmetric = \"water_m3\"\naddress = 0\nfunction = \"holding\"\ntype = \"u32\"\nscale = 0.000001\nunit = \"mL\"\nkind = \"counter\"\n";
    let sources = [
        device(port, 1, "make-up-water", water),
        device(port, 2, "heat-export", &kw("energy_reused")),
        device(port, 3, "incomer", &kw("facility_input")),
        device(port, 4, "ups", &kw("ups_output")),
    ]
    .concat();
    let _agent = start_agent(
        &dir,
        "utility-agent",
        &format!("site = \"util\"\nnode = \"plant\"\nrole = \"meter\"\ninterval_secs = 1\n[mqtt]\nport = {}\n{sources}", c.mqtt),
    );
    // Twenty seconds of data in the 1m window: 2 L/s of water over 100 kW of IT is 72 L
    // per IT kWh; 30 kW reused of 150 kW is an ERF of 0.2; ERE = 0.8 × 1.5 = 1.2.
    let w = wait_for("WUE over 20 s of data", Duration::from_secs(60), || {
        let v = c.site("util")?;
        let w = v["pue"]["1m"].clone();
        let span = w["span_share"].as_f64()?;
        (span >= 20.0 / 60.0 && w["kpis"]["wue"]["value"].is_number()).then_some(w)
    });
    assert_eq!(
        (w["category"].as_u64(), w["value"].as_f64()),
        (Some(1), Some(1.5)),
        "{w:#}"
    );
    let k = &w["kpis"];
    let wue = k["wue"]["value"].as_f64().expect("wue");
    // The totaliser is read up to an agent interval's jitter at each end of the window.
    assert!((wue - 72.0).abs() / 72.0 < 0.02, "WUE {wue} vs 72: {k:#}");
    assert_eq!(k["erf"]["value"].as_f64(), Some(0.2), "{k:#}");
    let ere = k["ere"]["value"].as_f64().expect("ere");
    assert!((ere - 1.2).abs() < 1e-9, "{k:#}");
    // A partial window says why, and the meters' own coverage is full.
    assert_eq!(k["wue"]["quality"], "partial", "{k:#}");
    assert!(
        k["wue"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("so far")),
        "{k:#}"
    );
    assert_eq!(k["wue"]["coverage"], 1.0, "{k:#}");
    let litres = k["water_l"].as_f64().expect("water_l");
    let seconds = (w["to_ms"].as_i64().unwrap() - w["from_ms"].as_i64().unwrap()) as f64 / 1000.0;
    assert!(
        (litres - 2.0 * seconds).abs() < 2.0 * 2.0,
        "{litres} L in {seconds} s"
    );
    // No factor, no contract, no PV: CUE and REF say what is missing.
    assert_eq!(k["cue"]["quality"], "no_data");
    assert!(k["ref"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("renewable_onsite")));
    // A grid operator's carbon-intensity series over MQTT gives the CUE: 0.6 kg/kWh over
    // a day around now, the whole window. 150 kW from the grid per 100 kW of IT: 0.9.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let series = format!(
        r#"{{"v":1,"site":"util","source":"grid operator","intervals":[{{"from_ms":{},"to_ms":{},"kg_per_kwh":0.6}}]}}"#,
        now - 43_200_000,
        now + 43_200_000
    );
    let msgs = vec![("dcwatt/v1/util/carbon".to_owned(), series.into_bytes())];
    publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(10));
    let k = wait_for("CUE from the live series", Duration::from_secs(20), || {
        let v = c.site("util")?;
        let k = v["pue"]["1m"]["kpis"].clone();
        k["cue"]["value"].is_number().then_some(k)
    });
    let cue = k["cue"]["value"].as_f64().expect("cue");
    assert!((cue - 0.9).abs() < 1e-9, "{k:#}");
    let m = c.metrics();
    assert_eq!(
        metric(&m, "dcwatt_site_carbon_intervals{site=\"util\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "dcwatt_messages_received_total{kind=\"carbon\"}"),
        Some(1.0)
    );
}
