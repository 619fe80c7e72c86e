//! Memory is a function of what is configured and legitimately measured, not of what an
//! attacker sends: against a collector on its defaults (embedded broker, state saved every
//! 5 s), hostile but well-formed input — thousands of zones in one batch, births of
//! ~970 KB, hundreds of new sites, 200,000 metric names from one node — is refused at the
//! limits, counted by reason and on the node, and RSS stays within a bound measured around
//! it, while a well-behaved site beside it keeps its exact PUE.

use dcwatt_e2e::sim::CalmSite;
use dcwatt_e2e::wire::{birth, readings};
use dcwatt_e2e::*;
use serde_json::json;
use std::time::Duration;

/// Readings per hostile batch: just under the 1 MiB payload limit.
const PER_BATCH: usize = 8_000;

/// The hostile messages, in order.
fn hostile() -> Vec<(String, Vec<u8>)> {
    let now = dcwatt_common::now_ms();
    let mut out = Vec::new();
    // Five batches from five nodes, each reading naming a zone of its own: 40,000 zones.
    for b in 0..5 {
        let batch: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                json!({"metric": "power_w", "value": 100.0, "ts_ms": now, "point": "it_input",
                       "component": format!("c{i}"), "zone": format!("z{b}-{i}")})
            })
            .collect();
        out.push(readings("zoo", &format!("n{b}"), 0, json!(batch)));
    }
    // 30 births of ~970 KB: a long agent string, or 10,000 GPU entries.
    for i in 0..30 {
        let mut fields = json!({"role": "host", "interval_ms": 1000});
        if i % 2 == 0 {
            fields["agent"] = json!("x".repeat(970_000));
        } else {
            fields["gpus"] = json!(vec![
                json!({"model": "NVIDIA H200", "count": 8, "fp16_tflops": 989.4});
                10_000
            ]);
        }
        out.push(birth("zoo", &format!("big{i}"), fields));
    }
    // 200,000 metric names from one node.
    for b in 0..25u64 {
        let batch: Vec<_> = (0..PER_BATCH)
            .map(|i| json!({"metric": format!("m_{b}_{i}"), "value": 1.0, "ts_ms": now}))
            .collect();
        out.push(readings("names", "n", b, json!(batch)));
    }
    // 300 new sites, one birth each.
    for i in 0..300 {
        out.push(birth(
            &format!("s{i}"),
            "n",
            json!({"role": "host", "interval_ms": 1000}),
        ));
    }
    for (topic, payload) in &out {
        assert!(payload.len() < 1 << 20, "{topic}: {} bytes", payload.len());
    }
    out
}

fn rejected(text: &str, family: &str, reason: &str) -> f64 {
    metric(text, &format!("{family}{{reason=\"{reason}\"}}")).unwrap_or(0.0)
}

#[test]
fn hostile_input_costs_what_the_limits_allow() {
    let dir = TempDir::new("limits");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[
            ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into()),
            ("DCWATT__INTAKE__MAX_SITES", "20".into()),
            // The rate limit is another test's (engine); here every reading counts.
            (
                "DCWATT__INTAKE__MAX_READINGS_PER_NODE_PER_SEC",
                "1000000".into(),
            ),
        ],
    );
    let calm = CalmSite::start(&dir, "calm", &c);
    let saves = |t: &str| metric(t, "dcwatt_state_saves_total").unwrap_or(0.0);
    let before = c.metrics();
    let rss_before = c.proc.rss_kib();
    let msgs = hostile();
    let bytes: usize = msgs.iter().map(|m| m.1.len()).sum();
    let n = msgs.len() as u64;
    assert_eq!(
        publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(300)),
        n
    );
    let text = wait_for("every refusal counted", Duration::from_secs(120), || {
        let t = c.metrics();
        let done = rejected(&t, "dcwatt_messages_rejected_total", "too_many_sites") >= 283.0
            && rejected(&t, "dcwatt_readings_rejected_total", "too_many_series") >= 195_000.0;
        done.then_some(t)
    });
    // Two state saves after it all, so that what a save costs is in the measurement.
    let saved = saves(&text);
    wait_for("two state saves", Duration::from_secs(30), || {
        (saves(&c.metrics()) >= saved + 2.0).then_some(())
    });
    let rss_after = c.proc.rss_kib();
    let text = c.metrics();
    eprintln!(
        "collector RSS {} MiB before, {} MiB after {n} hostile messages ({} MiB); state save {} KiB",
        rss_before / 1024,
        rss_after / 1024,
        bytes >> 20,
        metric(&text, "dcwatt_state_last_save_bytes").unwrap_or(0.0) / 1024.0
    );
    // The embedded broker keeps the messages it passed on in its log (about their size,
    // 50 MiB here); beyond that nothing may grow with the hostile input. Before the
    // limits, the zones alone took 1.4 GB.
    assert!(
        rss_after < rss_before + 160 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let state_bytes = metric(&text, "dcwatt_state_last_save_bytes").unwrap_or(f64::MAX);
    assert!(state_bytes < 16e6, "a state save of {state_bytes} bytes");

    // Counted exactly, by reason. Zones: each site names at most 1,000.
    let delta = |family: &str, reason: &str| {
        rejected(&text, family, reason) - rejected(&before, family, reason)
    };
    let readings = "dcwatt_readings_rejected_total";
    let messages = "dcwatt_messages_rejected_total";
    assert_eq!(
        delta(readings, "too_many_zones"),
        (5 * PER_BATCH - 1_000) as f64
    );
    // Metric names: a node reports at most 5,000 series.
    assert_eq!(
        delta(readings, "too_many_series"),
        (25 * PER_BATCH - 5_000) as f64
    );
    assert_eq!(delta(messages, "invalid_birth"), 30.0);
    // Sites: calm, zoo and names were known; 17 more fit under intake.max_sites = 20.
    assert_eq!(delta(messages, "too_many_sites"), 283.0);
    // And on the node that sent them.
    let nodes = get_json(c.http, "/api/v1/sites/names/nodes").expect("nodes");
    assert_eq!(
        nodes["nodes"][0]["refused"]["too_many_series"],
        (25 * PER_BATCH - 5_000) as u64,
        "{nodes:#}"
    );
    let zoo = get_json(c.http, "/api/v1/sites/zoo/nodes").expect("nodes");
    let zoned: u64 = (zoo["nodes"].as_array().expect("nodes").iter())
        .filter_map(|n| n["refused"]["too_many_zones"].as_u64())
        .sum();
    assert_eq!(zoned, (5 * PER_BATCH - 1_000) as u64, "{zoo:#}");
    let sites = get_json(c.http, "/api/v1/sites").expect("sites");
    assert_eq!(sites["sites"].as_array().map(Vec::len), Some(20), "{sites}");

    calm.assert_exact(&c, dcwatt_common::now_ms());
}
