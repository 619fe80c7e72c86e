//! Counts and values an attacker (or a fault) could falsify, over real MQTT to a collector
//! on its defaults, with a well-behaved site beside: sequence numbers that would wrap the
//! missing-batch counts, a second publisher reusing a node's numbers, births and readings
//! out of range, `.` and `..` as ids, a site string that would forge a log line, and a
//! time that overflows. Each is refused or bounded and counted; the calm site stays exact.

use dcwatt_e2e::sim::CalmSite;
use dcwatt_e2e::wire::{birth, readings as batch};
use dcwatt_e2e::*;
use serde_json::json;
use std::time::Duration;

fn temp(value: f64) -> serde_json::Value {
    json!([{"metric": "temp_c", "value": value, "ts_ms": dcwatt_common::now_ms()}])
}

/// The node's entry, once the snapshot (taken every second) has it.
fn node(c: &Collector, site: &str, name: &str) -> serde_json::Value {
    wait_for(&format!("node {name}"), Duration::from_secs(10), || {
        let nodes = get_json(c.http, &format!("/api/v1/sites/{site}/nodes"))?;
        (nodes["nodes"].as_array()?.iter())
            .find(|n| n["node"] == name)
            .cloned()
    })
}

#[test]
fn counts_and_values_cannot_be_forged() {
    let dir = TempDir::new("forged");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let calm = CalmSite::start(&dir, "calm", &c);
    let before = c.metrics();
    let counter = |t: &str, series: &str| metric(t, series).unwrap_or(0.0);
    let msgs = vec![
        // seq 0, then 2^64 − 5: a restart, never 2^64 − 6 missing batches wrapping the count.
        batch("odd", "wrap", 0, temp(20.0)),
        batch("odd", "wrap", u64::MAX - 4, temp(20.0)),
        batch("odd", "wrap", u64::MAX - 3, temp(20.0)),
        // seq 0, then 2^64 − 1.
        batch("odd", "fall", 0, temp(20.0)),
        batch("odd", "fall", u64::MAX, temp(20.0)),
        // seq 0 … then 100,000 within a second: a restart, not 99,999 missing.
        batch("odd", "jump", 0, temp(20.0)),
        batch("odd", "jump", 100_000, temp(20.0)),
        // A second publisher with the same numbers and other content.
        batch("odd", "dup", 1, temp(20.0)),
        batch("odd", "dup", 1, temp(99.0)),
        // Births and readings out of range.
        birth("odd", "slow", json!({"role": "meter", "interval_ms": 1_000_000_000_000_000_000u64})),
        birth("odd", "gpus", json!({"role": "meter", "gpus": [{"model": "X", "count": 4_294_967_295u32}]})),
        birth("odd", "gpus", json!({"role": "meter", "gpus": [{"model": "X", "count": 8_600_000_000u64}]})),
        birth("odd", "gpus", json!({"role": "meter", "gpus": [{"model": "X", "count": 8, "fp16_tflops": -5.0}]})),
        batch(
            "odd",
            "huge",
            0,
            json!([{"metric": "power_w", "value": 1e308, "ts_ms": dcwatt_common::now_ms(),
                    "point": "facility_input"}]),
        ),
        // Path segments as ids.
        batch("..", "n", 0, temp(1.0)),
        batch("odd", ".", 0, temp(1.0)),
        // A site string that would start a log line of its own.
        (
            "dcwatt/v1/odd/n/readings".to_owned(),
            format!(
                r#"{{"v":1,"site":"odd\n2026-12-02T00:00:00.000000Z ERROR dcwatt_collector: forged","node":"n","seq":0,"sent_ms":{},"readings":[]}}"#,
                dcwatt_common::now_ms()
            )
            .into_bytes(),
        ),
    ];
    let n = msgs.len() as u64;
    assert_eq!(
        publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(60)),
        n
    );
    // Statuses and readings travel on different topics: wait for every refusal.
    let expected = [
        ("topic_mismatch", 1.0),
        ("invalid_birth", 3.0),
        ("invalid_schema", 1.0),
        ("duplicate_conflict", 1.0),
        ("invalid_topic", 2.0),
    ];
    let text = wait_for("every refusal counted", Duration::from_secs(30), || {
        let t = c.metrics();
        let d = |reason: &str| {
            let s = format!("dcwatt_messages_rejected_total{{reason=\"{reason}\"}}");
            counter(&t, &s) - counter(&before, &s)
        };
        let read = "dcwatt_readings_rejected_total{reason=\"value_out_of_range\"}";
        let done = expected.iter().all(|(r, n)| d(r) >= *n)
            && counter(&t, read) - counter(&before, read) >= 1.0
            && counter(&t, "dcwatt_agent_restarts_total")
                - counter(&before, "dcwatt_agent_restarts_total")
                >= 3.0;
        done.then_some(t)
    });
    let delta = |series: &str| counter(&text, series) - counter(&before, series);
    let msg = |r: &str| delta(&format!("dcwatt_messages_rejected_total{{reason=\"{r}\"}}"));
    let reading = |r: &str| delta(&format!("dcwatt_readings_rejected_total{{reason=\"{r}\"}}"));

    // Sequence numbers: no missing batches at all, one restart per node.
    assert_eq!(delta("dcwatt_batches_missing"), 0.0, "missing batches");
    let wrap = node(&c, "odd", "wrap");
    assert_eq!(
        (wrap["missing_batches"].as_u64(), wrap["restarts"].as_u64()),
        (Some(0), Some(1)),
        "{wrap:#}"
    );
    let jump = node(&c, "odd", "jump");
    assert_eq!(
        (jump["missing_batches"].as_u64(), jump["restarts"].as_u64()),
        (Some(0), Some(1)),
        "{jump:#}"
    );
    assert_eq!(delta("dcwatt_agent_restarts_total"), 3.0);

    // The second copy of seq 1 carried other readings: a conflict, not a redelivery.
    assert_eq!(msg("duplicate_conflict"), 1.0);
    assert_eq!(msg("duplicate_seq"), 0.0);
    assert_eq!(node(&c, "odd", "dup")["refused"]["duplicate_conflict"], 1);

    // Out of range.
    assert_eq!(
        msg("invalid_birth"),
        3.0,
        "interval 10^18, 2^32 − 1 GPUs, negative TFLOPS"
    );
    assert_eq!(
        msg("invalid_schema"),
        1.0,
        "8.6 × 10^9 GPUs do not fit a count"
    );
    assert_eq!(reading("value_out_of_range"), 1.0, "1e308 W");
    assert!(
        !text
            .lines()
            .any(|l| l.contains(" inf") || l.contains("NaN")),
        "/metrics shows a non-finite value"
    );

    // `.` and `..` are not ids.
    assert_eq!(msg("invalid_topic"), 2.0);
    let sites = get_json(c.http, "/api/v1/sites").expect("sites");
    assert!(!sites.to_string().contains("\"..\""), "{sites}");

    // The refused site string is in the log escaped, never as a line of its own.
    let log = c.proc.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR dcwatt_collector: forged") && !l.contains("\\n")),
        "a forged log line:\n{log}"
    );
    assert!(
        log.contains("odd\\n2026-12-02"),
        "the refusal is logged escaped:\n{log}"
    );

    // A time that overflows is a bad request, not one minute's energy.
    let (status, body) = http_get(
        c.http,
        "/api/v1/sites/calm/energy?from=now-9223372036854775807ms",
    )
    .expect("an answer");
    assert_eq!(status, 400, "{body}");

    // A packet over the embedded broker's size limit: the broker drops the connection,
    // and the collector counts it.
    let big = ("dcwatt/v1/odd/big/readings".to_owned(), vec![b' '; 3 << 19]);
    let _ = std::panic::catch_unwind(|| {
        publish_all(c.mqtt, std::iter::once(big), Duration::from_secs(5))
    });
    wait_for(
        "the oversized packet counted",
        Duration::from_secs(10),
        || (metric(&c.metrics(), "dcwatt_broker_packets_refused_total")? >= 1.0).then_some(()),
    );

    calm.assert_exact(&c, dcwatt_common::now_ms());
}
