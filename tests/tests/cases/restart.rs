//! A collector killed with SIGKILL and restarted resumes its windows from the saved
//! engine state: the 1h PUE keeps its start, covers the outage (agents and the broker
//! held the data) and stays within 0.1% of the simulation's exact energy ratio.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use serde_json::Value;
use std::time::Duration;

const SITE: &str = "restart";

fn facility() -> Profile {
    Profile {
        base_w: 6_000.0,
        amplitude_w: 500.0,
        period_secs: 37.0,
    }
}

fn hosts() -> Vec<Profile> {
    (0..3)
        .map(|i| Profile {
            base_w: 1_200.0 + 100.0 * i as f64,
            amplitude_w: 80.0,
            period_secs: 19.0 + 4.0 * i as f64,
        })
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_killed_collector_resumes_its_windows_from_the_saved_state() {
    let dir = TempDir::new("restart");
    let Some(broker) = Mosquitto::start(&dir) else {
        return skip_or_fail("restart", "mosquitto is not installed");
    };
    let env = [
        ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".to_owned()),
        ("DCWATT__STATE__INTERVAL_SECS", "1".to_owned()),
    ];
    let mut c = Collector::start(&dir, BrokerKind::External(broker.port), &env);
    let mut agents = vec![start_agent(
        &dir,
        "meter",
        &agent_toml(
            SITE,
            "meter",
            "meter",
            broker.port,
            &facility(),
            "facility_input",
        ),
    )];
    for (i, h) in hosts().iter().enumerate() {
        let node = format!("h{i}");
        agents.push(start_agent(
            &dir,
            &node,
            &agent_toml(SITE, &node, "host", broker.port, h, "it_input"),
        ));
    }
    // The 1h window moves in whole minutes: wait for its first one.
    let before = wait_for(
        "a minute in the 1h window",
        Duration::from_secs(180),
        || {
            let s = c.site(SITE)?;
            let w = &s["pue"]["1h"];
            (w["value"].is_f64() && w["to_ms"].as_i64()? - w["from_ms"].as_i64()? >= 60_000)
                .then_some(s)
        },
    );
    let started = before["pue"]["1h"]["from_ms"].as_i64().expect("from");

    c.proc.kill();
    let killed_at = dcwatt_common::now_ms();
    std::thread::sleep(Duration::from_secs(3));
    c = Collector::start(&dir, BrokerKind::External(broker.port), &env);
    assert!(
        c.proc.log().contains("engine state restored") || {
            std::thread::sleep(Duration::from_secs(1));
            c.proc.log().contains("engine state restored")
        },
        "{}",
        c.proc.log()
    );

    let after = wait_for(
        "the window to pass the outage",
        Duration::from_secs(60),
        || {
            let s = c.site(SITE)?;
            (s["pue"]["1h"]["to_ms"].as_i64()? > killed_at + 15_000).then_some(s)
        },
    );
    let w = &after["pue"]["1h"];
    assert_eq!(
        w["from_ms"].as_i64(),
        Some(started),
        "the window kept its start: {w:#}"
    );
    let (from, to) = (started, w["to_ms"].as_i64().expect("to"));
    let fac = facility().energy(from, to);
    let it: f64 = hosts().iter().map(|h| h.energy(from, to)).sum();
    let truth = fac / it;
    let got = f(&w["value"]);
    let err = (got - truth).abs() / truth;
    assert!(
        err < 0.001,
        "PUE {got} vs exact {truth} ({:.4}% off)\n{w:#}",
        err * 100.0
    );
    let kwh_err = (f(&w["facility_kwh"]) - fac / 3.6e6).abs() / (fac / 3.6e6);
    assert!(
        kwh_err < 0.001,
        "facility energy off by {kwh_err}: lost or counted twice\n{w:#}"
    );
    assert!(f(&w["coverage_it"]) > 0.999, "{w:#}");
    // What the killed collector had taken in since its last save (1 s) is gone, and shows
    // as missing batches: at most a couple of batches per node. The energy counters span
    // the hole, so the energy above is still exact.
    let missing = after["missing_batches"].as_u64().expect("missing batches");
    assert!(
        missing <= 4 * 3,
        "{missing} batches lost: more than one save interval"
    );
    eprintln!(
        "after a SIGKILL: PUE {got:.6} vs exact {truth:.6} ({:.4}% off), facility energy {:.4}% off, {missing} batches lost",
        err * 100.0,
        kwh_err * 100.0
    );
    drop(agents);
}
