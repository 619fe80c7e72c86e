//! The slice end to end: a facility meter agent and 20 host agents (sim source) publish
//! over MQTT, half of the hosts in the compact encoding; the collector's PUE must equal the
//! simulation's exact energy ratio.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use serde_json::Value;
use std::time::Duration;

const SITE: &str = "e2e";
const HOSTS: usize = 20;

fn facility() -> Profile {
    Profile {
        base_w: 9_000.0,
        amplitude_w: 700.0,
        period_secs: 41.0,
    }
}

fn hosts() -> Vec<Profile> {
    (0..HOSTS)
        .map(|i| Profile {
            base_w: 250.0 + 7.0 * i as f64,
            amplitude_w: 20.0 + i as f64,
            period_secs: 17.0 + 2.0 * i as f64,
        })
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks one window against the simulation's exact energies over the window's interval.
fn assert_matches_truth(view: &Value, window: &str) {
    let w = &view["pue"][window];
    let (from, to) = (w["from_ms"].as_i64().unwrap(), w["to_ms"].as_i64().unwrap());
    let fac = facility().energy(from, to);
    let it: f64 = hosts().iter().map(|h| h.energy(from, to)).sum();
    let truth = fac / it;
    let got = f(&w["value"]);
    let err = (got - truth).abs() / truth;
    assert!(
        err < 0.005,
        "{window}: PUE {got} vs exact {truth} ({:.4}% off)\n{w:#}",
        err * 100.0
    );
    assert_eq!(w["category"], 3, "{w:#}");
    assert_eq!(f(&w["coverage_it"]), 1.0, "{w:#}");
    assert_eq!(f(&w["coverage_facility"]), 1.0, "{w:#}");
    assert_measured_so_far(w);
    assert_eq!(w["label"], format!("PUE₃, {window}"));
    let kwh_err = (f(&w["facility_kwh"]) - fac / 3.6e6).abs() / (fac / 3.6e6);
    assert!(kwh_err < 0.005, "facility energy off by {kwh_err}");
    eprintln!(
        "{window}: PUE {got:.6} vs exact {truth:.6} over {} ms ({:.4}% off)",
        to - from,
        err * 100.0
    );
}

fn scenario(dir: &TempDir, broker: BrokerKind) {
    let c = Collector::start(
        dir,
        broker,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let _meter = start_agent(
        dir,
        "meter",
        &agent_toml(
            SITE,
            "meter",
            "meter",
            c.mqtt,
            &facility(),
            "facility_input",
        ),
    );
    let mut agents: Vec<Proc> = hosts()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let node = format!("host-{i:02}");
            let mut toml = agent_toml(SITE, &node, "host", c.mqtt, p, "it_input");
            // Odd hosts send the compact encoding: one site, both encodings, one PUE.
            if i % 2 == 1 {
                toml = format!("encoding = \"cbor\"\n{toml}");
            }
            start_agent(dir, &node, &toml)
        })
        .collect();

    // Let the 1m window fill with at least 15 s of data at full coverage.
    let view = wait_for(
        "15 s of fully covered data",
        Duration::from_secs(90),
        || {
            let v = c.site(SITE)?;
            let w = &v["pue"]["1m"];
            let span = w["to_ms"].as_i64()? - w["from_ms"].as_i64()?;
            (span >= 15_000 && w["coverage_it"] == 1.0 && w["coverage_facility"] == 1.0)
                .then_some(v)
        },
    );
    assert_matches_truth(&view, "1m");
    assert_matches_truth(&view, "15m");
    assert_eq!(view["power"]["category"], 3);
    assert_eq!(view["nodes"]["online"], HOSTS + 1);
    assert_eq!(view["missing_batches"], 0);
    // The odd hosts' batches really are CBOR on the wire, and none was refused.
    let wire = mqtt_collect(
        c.mqtt,
        &format!("dcwatt/v1/{SITE}/host-01/readings"),
        Duration::from_secs(3),
    );
    let (_, batch, _) = wire.first().expect("a batch from host-01 within 3 s");
    assert_eq!(batch[0], 0x86, "a six-element CBOR array, not JSON");
    let decoded = dcwatt_common::protocol::compact::decode(batch).expect("compact v1");
    assert_eq!(decoded.node, "host-01");
    assert!(decoded.readings.iter().any(|r| r.metric == "power_w"));
    let metrics = c.metrics();
    for reason in ["malformed_cbor", "invalid_schema", "malformed_json"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("dcwatt_messages_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(0.0),
            "{reason}"
        );
    }

    // The same view is published, retained, for anyone on the broker.
    let summary = wait_for("a retained site summary", Duration::from_secs(30), || {
        let got = mqtt_collect(
            c.mqtt,
            &format!("dcwatt/v1/{SITE}/summary"),
            Duration::from_secs(2),
        );
        got.into_iter()
            .find(|(_, p, retain)| *retain && !p.is_empty())
    });
    let summary: Value = serde_json::from_slice(&summary.1).unwrap();
    assert_eq!(summary["site"], SITE);
    assert_eq!(summary["pue"]["1m"]["category"], 3);
    let metrics = c.metrics();
    assert!(metric(
        &metrics,
        &format!("dcwatt_site_standard_racks{{site=\"{SITE}\",state=\"configured\"}}")
    )
    .is_some());
    assert_eq!(
        metric(
            &metrics,
            &format!("dcwatt_site_fp16_pflops{{site=\"{SITE}\"}}")
        ),
        Some(0.0)
    );

    // Stop a quarter of the hosts cleanly: they say offline, coverage falls accordingly.
    for a in agents.iter_mut().take(HOSTS / 4) {
        let status = a.terminate(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly:\n{}",
            a.name,
            a.log()
        );
    }
    let view = wait_for("live IT coverage 0.75", Duration::from_secs(20), || {
        let v = c.site(SITE)?;
        (v["power"]["coverage_it"].as_f64()? == 0.75).then_some(v)
    });
    assert_eq!(view["power"]["quality"], "partial", "{:#}", view["power"]);
    let nodes = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes")).unwrap();
    let nodes = nodes["nodes"].as_array().unwrap();
    let offline: Vec<&Value> = nodes.iter().filter(|n| n["state"] == "offline").collect();
    assert_eq!(offline.len(), HOSTS / 4, "{nodes:#?}");
    assert!(offline
        .iter()
        .all(|n| n["node"].as_str().unwrap() < "host-05"));

    // The window's IT coverage: 15 hosts all the way, the stopped 5 up to their last reading.
    let w = &view["pue"]["1m"];
    let (from, to) = (w["from_ms"].as_i64().unwrap(), w["to_ms"].as_i64().unwrap());
    let len = (to - from) as f64;
    let stopped: f64 = offline
        .iter()
        .map(|n| ((n["last_reading_ms"].as_i64().unwrap() - from) as f64).clamp(0.0, len))
        .sum();
    let expected = (15.0 * len + stopped) / (20.0 * len);
    let got = f(&w["coverage_it"]);
    assert!(
        (got - expected).abs() < 0.01,
        "coverage_it {got}, expected {expected}\n{w:#}"
    );
    assert!((0.75..1.0).contains(&got));
    assert_eq!(w["quality"], "partial", "{w:#}");
    assert_eq!(w["category"], 3);
}

#[test]
fn pue_matches_simulation_over_embedded_broker() {
    let dir = TempDir::new("pue-embedded");
    scenario(&dir, BrokerKind::Embedded);
}

#[test]
fn pue_matches_simulation_over_mosquitto() {
    let dir = TempDir::new("pue-mosquitto");
    let Some(m) = Mosquitto::start(&dir) else {
        return skip_or_fail(
            "pue_matches_simulation_over_mosquitto",
            "mosquitto is not installed",
        );
    };
    scenario(&dir, BrokerKind::External(m.port));
}
