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

/// What a SIGKILL and a restart 3 s later left: the site view once its 1h window has
/// passed the outage, the window's start before the kill, and the PUE's relative error
/// against the simulation.
struct AfterKill {
    view: Value,
    started: i64,
    err: f64,
    kwh_err: f64,
}

/// Four agents (1 s) through Mosquitto; the collector killed and restarted, saving its
/// state every `state_interval` seconds (the default when `None`).
fn kill_and_restart(tag: &str, state_interval: Option<&str>) -> Option<AfterKill> {
    let dir = TempDir::new(tag);
    let Some(broker) = Mosquitto::start(&dir) else {
        skip_or_fail(tag, "mosquitto is not installed");
        return None;
    };
    let mut env = vec![("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".to_owned())];
    if let Some(secs) = state_interval {
        env.push(("DCWATT__STATE__INTERVAL_SECS", secs.to_owned()));
    }
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
    let (from, to) = (started, w["to_ms"].as_i64().expect("to"));
    let fac = facility().energy(from, to);
    let it: f64 = hosts().iter().map(|h| h.energy(from, to)).sum();
    let truth = fac / it;
    let err = (f(&w["value"]) - truth).abs() / truth;
    let kwh_err = (f(&w["facility_kwh"]) - fac / 3.6e6).abs() / (fac / 3.6e6);
    drop(agents);
    Some(AfterKill {
        view: after,
        started,
        err,
        kwh_err,
    })
}

#[test]
fn a_killed_collector_resumes_its_windows_from_the_saved_state() {
    let Some(AfterKill {
        view: after,
        started,
        err,
        kwh_err,
    }) = kill_and_restart("restart", Some("1"))
    else {
        return;
    };
    let w = &after["pue"]["1h"];
    assert_eq!(
        w["from_ms"].as_i64(),
        Some(started),
        "the window kept its start: {w:#}"
    );
    assert!(err < 0.001, "PUE {:.4}% off\n{w:#}", err * 100.0);
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
        "after a SIGKILL, saving every 1 s: PUE {:.4}% off, facility energy {:.4}% off, {missing} batches lost",
        err * 100.0,
        kwh_err * 100.0
    );
}

/// The bound docs/operations.md gives for the default (5 s saves): at most 5 s of
/// batches per node missing, and the 1h window exact or partial — never "measured" off
/// the truth.
#[test]
fn with_the_default_save_interval_a_kill_loses_at_most_five_seconds_and_says_so() {
    let Some(AfterKill {
        view: after,
        started,
        err,
        kwh_err,
    }) = kill_and_restart("restart-default", None)
    else {
        return;
    };
    let w = &after["pue"]["1h"];
    assert_eq!(w["from_ms"].as_i64(), Some(started), "{w:#}");
    let missing = after["missing_batches"].as_u64().expect("missing batches");
    // Four nodes at 1 s: 5 s between saves, and a batch either side.
    assert!(missing <= 4 * 7, "{missing} batches lost with 5 s saves");
    let quality = w["quality"].as_str().unwrap_or("");
    eprintln!(
        "after a SIGKILL, saving every 5 s: {quality}, PUE {:.4}% off, facility energy {:.4}% off, coverage {}, {missing} batches lost",
        err * 100.0,
        kwh_err * 100.0,
        w["coverage_it"]
    );
    // Fully covered: exact, and measured but for its span (an hour's window after a
    // minute). Not fully covered: partial, and said so.
    if f(&w["coverage_it"]) == 1.0 && f(&w["coverage_facility"]) == 1.0 {
        assert!(err < 0.001, "{quality} yet {:.4}% off\n{w:#}", err * 100.0);
        assert_measured_so_far(w);
    } else {
        assert_eq!(quality, "partial", "{w:#}");
        assert!(err < 0.01, "partial and {:.4}% off\n{w:#}", err * 100.0);
    }
}

/// After the engine state is lost (deleted here) and the embedded broker has no retained
/// births, a host that is still away is expected all the same: the history's node
/// inventory brings it back, so the site's values are partial until it reports, never
/// "measured" without it.
#[test]
fn after_a_state_reset_the_known_nodes_are_expected_again() {
    let dir = TempDir::new("state-reset");
    let config = dir.write("collector.toml", "");
    let port = free_port();
    let env = [
        ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".to_owned()),
        ("DCWATT__HISTORY__INTERVAL_SECS", "1".to_owned()),
    ];
    let mut c = Collector::start_with_config(&dir, BrokerKind::Embedded, &config, Some(port), &env);
    let mut calm = dcwatt_e2e::sim::CalmSite::start(&dir, "reset", &c);
    // The inventory is written with the history, every second here.
    std::thread::sleep(Duration::from_secs(3));
    c.proc.kill();
    calm.agents[3].kill(); // h2 stays away
    for f in [
        "dcwatt-state.sqlite",
        "dcwatt-state.sqlite-wal",
        "dcwatt-state.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(dir.0.join(f));
    }
    c = Collector::start_with_config(&dir, BrokerKind::Embedded, &config, Some(port), &env);
    let view = wait_for("a PUE without h2", Duration::from_secs(60), || {
        let v = c.site("reset")?;
        v["pue"]["1m"]["value"].as_f64()?;
        (v["pue"]["1m"]["span_share"].as_f64()? >= 0.1).then_some(v)
    });
    let w = &view["pue"]["1m"];
    assert_eq!(w["quality"], "partial", "without h2: {w:#}");
    assert!(f(&w["coverage_it"]) < 1.0, "{w:#}");
    let nodes = get_json(c.http, "/api/v1/sites/reset/nodes").expect("nodes");
    assert!(
        nodes["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x["node"] == "h2")),
        "h2 is known again: {nodes:#}"
    );
    assert!(c
        .proc
        .log()
        .contains("the nodes the history knows are expected again"));
}
