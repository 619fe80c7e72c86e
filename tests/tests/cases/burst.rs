//! The embedded broker under a burst: 200,000 QoS 1 batches must all reach the intake.
//! (rumqttd with a network subscriber lost 4–7.5 % of such a burst; see collector/src/broker.rs.)

use dcwatt_e2e::*;
use std::time::Duration;

const NODES: u64 = 20;
const TOTAL: u64 = 200_000;

#[test]
fn embedded_broker_delivers_a_200k_burst_without_loss() {
    let dir = TempDir::new("burst");
    let c = Collector::start(&dir, BrokerKind::Embedded, &[]);
    let now = dcwatt_common::now_ms();
    let msgs = (0..TOTAL).map(move |i| {
        let node = i % NODES;
        let seq = i / NODES + 1;
        let payload = format!(
            r#"{{"v":1,"site":"burst","node":"n{node}","seq":{seq},"sent_ms":{now},"readings":[{{"metric":"temp_c","value":24.5,"ts_ms":{now},"component":"inlet"}}]}}"#
        );
        (format!("dcwatt/v1/burst/n{node}/readings"), payload.into_bytes())
    });
    assert_eq!(publish_all(c.mqtt, msgs, Duration::from_secs(300)), TOTAL);
    let text = wait_for(
        "every message of the burst at the intake",
        Duration::from_secs(120),
        || {
            let t = c.metrics();
            (metric(&t, "dcwatt_messages_received_total{kind=\"readings\"}")? >= TOTAL as f64)
                .then_some(t)
        },
    );
    assert_eq!(
        metric(&text, "dcwatt_messages_received_total{kind=\"readings\"}"),
        Some(TOTAL as f64)
    );
    assert_eq!(
        metric(&text, "dcwatt_readings_accepted_total"),
        Some(TOTAL as f64)
    );
    assert_eq!(metric(&text, "dcwatt_batches_missing"), Some(0.0));
    assert_eq!(
        metric(
            &text,
            "dcwatt_messages_rejected_total{reason=\"duplicate_seq\"}"
        ),
        Some(0.0)
    );
}

/// Three minutes of a whole site's data delivered in one go (an import, the last spool
/// replay before a site goes quiet), then silence: the windows open from the data and the
/// engine's tick, without waiting for a later batch. Constant powers: PUE 1500 / 1000.
#[test]
fn a_backlog_delivered_at_once_then_silence_opens_the_windows() {
    use dcwatt_e2e::wire::{birth, readings_sent_at};
    use serde_json::json;
    let dir = TempDir::new("backlog");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let start = dcwatt_common::now_ms() - 180_000;
    let nodes = [
        ("meter", "meter", 1500.0, "facility_input"),
        ("h1", "host", 600.0, "it_input"),
        ("h2", "host", 400.0, "it_input"),
    ];
    let mut msgs: Vec<(String, Vec<u8>)> = nodes
        .iter()
        .map(|(node, role, _, _)| birth("import", node, json!({"role": role, "interval_ms": 1000})))
        .collect();
    for s in 0..=180u64 {
        let ts = start + s as i64 * 1000;
        for (node, _, w, point) in nodes {
            let power = json!([{"metric": "power_w", "value": w, "ts_ms": ts, "point": point}]);
            msgs.push(readings_sent_at("import", node, s, ts, power));
        }
    }
    publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(30));
    let w = wait_for(
        "the 1m window from the backlog alone",
        Duration::from_secs(20),
        || {
            let v = c.site("import")?;
            let w = v["pue"]["1m"].clone();
            w["value"].as_f64().map(|_| w)
        },
    );
    let value = w["value"].as_f64().unwrap_or_default();
    assert!((value - 1.5).abs() < 1e-9, "{w:#}");
    let (from, to) = (
        w["from_ms"].as_i64().unwrap_or(0),
        w["to_ms"].as_i64().unwrap_or(0),
    );
    assert!(
        from >= start && to <= start + 181_000,
        "the backlog's own minute: {w:#}"
    );
}
