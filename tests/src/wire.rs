//! v1 messages as an agent would publish them, built by hand for tests that must send
//! what no well-behaved agent would: each is a topic and a JSON payload.

use serde_json::{json, Value};

/// A readings batch sent now.
pub fn readings(site: &str, node: &str, seq: u64, readings: Value) -> (String, Vec<u8>) {
    readings_sent_at(site, node, seq, dcwatt_common::now_ms(), readings)
}

/// A readings batch whose `sent_ms` is `sent_ms` (an agent's clock, right or wrong).
pub fn readings_sent_at(
    site: &str,
    node: &str,
    seq: u64,
    sent_ms: i64,
    readings: Value,
) -> (String, Vec<u8>) {
    let body = json!({"v": 1, "site": site, "node": node, "seq": seq, "sent_ms": sent_ms,
                      "readings": readings});
    (
        format!("dcwatt/v1/{site}/{node}/readings"),
        serde_json::to_vec(&body).expect("json"),
    )
}

/// A birth (`state: online`, stamped now) with `fields` (role, interval, rack, GPUs …)
/// added or replacing the defaults.
pub fn birth(site: &str, node: &str, fields: Value) -> (String, Vec<u8>) {
    let mut body = json!({"v": 1, "site": site, "node": node, "state": "online",
                          "ts_ms": dcwatt_common::now_ms()});
    if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
        b.extend(f.clone());
    }
    (
        format!("dcwatt/v1/{site}/{node}/status"),
        serde_json::to_vec(&body).expect("json"),
    )
}
