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
