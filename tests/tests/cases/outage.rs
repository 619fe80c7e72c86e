//! Nothing lost across a broker outage: Mosquitto is stopped while agents publish, one
//! agent is killed with SIGKILL during the outage and restarted; once the broker is back,
//! every batch arrives (from the agents' on-disk spools, in order, with their original
//! timestamps), sequence numbers continue across the restart, and the PUE window is whole.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use std::time::Duration;

const SITE: &str = "outage";

#[test]
fn a_broker_outage_and_an_agent_crash_lose_nothing() {
    let dir = TempDir::new("outage");
    let Some(mut broker) = Mosquitto::start(&dir) else {
        return skip_or_fail("outage", "mosquitto is not installed");
    };
    let port = broker.port;
    let c = Collector::start(
        &dir,
        BrokerKind::External(port),
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let fac = Profile {
        base_w: 1_800.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let host = Profile {
        base_w: 400.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let toml = |node: &str, role: &str, p: &Profile, point: &str| {
        agent_toml(SITE, node, role, port, p, point)
    };
    let _meter = start_agent(
        &dir,
        "meter",
        &toml("meter", "meter", &fac, "facility_input"),
    );
    let _h1 = start_agent(&dir, "h1", &toml("h1", "host", &host, "it_input"));
    let h2 = start_agent(&dir, "h2", &toml("h2", "host", &host, "it_input"));
    wait_for("a PUE value", Duration::from_secs(60), || {
        c.site(SITE)?["pue"]["1m"]["value"].as_f64()
    });

    // The broker goes away; h2 crashes in the middle of the outage and comes back.
    let _ = broker.proc.terminate(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    drop(h2);
    let _h2 = start_agent(&dir, "h2", &toml("h2", "host", &host, "it_input"));
    std::thread::sleep(Duration::from_secs(3));
    broker = Mosquitto::start_on(&dir, port).expect("mosquitto restarts");

    // Everything spooled arrives; nothing is missing, nothing went back.
    let nodes = wait_for("the spools to drain", Duration::from_secs(60), || {
        let n = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes"))?;
        let now = dcwatt_common::now_ms();
        let all_current = n["nodes"].as_array()?.iter().all(|x| {
            x["last_reading_ms"]
                .as_i64()
                .is_some_and(|t| now - t < 3_000)
        });
        all_current.then_some(n)
    });
    let metrics = c.metrics();
    assert_eq!(
        metric(&metrics, "dcwatt_batches_missing"),
        Some(0.0),
        "{nodes:#}"
    );
    assert_eq!(
        metric(&metrics, "dcwatt_agent_restarts_total"),
        Some(0.0),
        "seq persisted across the crash"
    );
    for n in nodes["nodes"].as_array().unwrap() {
        assert_eq!(n["missing_batches"], 0, "{n}");
        assert_eq!(n["restarts"], 0, "{n}");
    }
    // The outage is covered by replayed data: a window over it is whole and exact.
    let w = wait_for("a whole 1m window", Duration::from_secs(30), || {
        let v = c.site(SITE)?;
        let w = v["pue"]["1m"].clone();
        (w["coverage_it"] == 1.0 && w["coverage_facility"] == 1.0).then_some(w)
    });
    let value = w["value"].as_f64().unwrap();
    assert!((value - 1_800.0 / 800.0).abs() < 1e-6, "{w:#}");
    let log = std::fs::read_to_string(dir.0.join("h2.log")).unwrap_or_default();
    assert!(log.contains("replayed") || log.contains("spool"), "{log}");
    drop(broker);
}
