//! The intake's hot path without a network: decode → validate → engine, per message, for
//! batches shaped like dcwatt-loadgen's (20 readings: power, energy counter, load and
//! temperatures), in JSON and in the compact encoding. `cargo bench -p dcwatt-collector --bench intake`; the numbers and what
//! they led to are in docs/benchmarks.md.

use dcwatt_collector::config::IntakeConfig;
use dcwatt_collector::engine::{Engine, EngineConfig};
use dcwatt_collector::intake::{Intake, IntakeStats, RawMessage};
use dcwatt_common::protocol::{compact, decode, ReadingsMessage};
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const HOSTS: usize = 1_000;
const ROUNDS: usize = 20;

fn payload(node: usize, seq: u64, ts: i64, epoch: i64) -> String {
    let watts = 150.0 + (node % 200) as f64;
    let energy = watts * (ts - epoch) as f64 / 1000.0;
    let mut s = format!(
        r#"{{"v":1,"site":"bench","node":"h{node:06}","seq":{seq},"sent_ms":{ts},"readings":[{{"metric":"power_w","value":{watts},"ts_ms":{ts},"point":"it_input"}},{{"metric":"energy_j","kind":"counter","value":{energy},"ts_ms":{ts},"point":"it_input"}},{{"metric":"cpu_util","value":0.{},"ts_ms":{ts}}}"#,
        seq % 10
    );
    for k in 3..20 {
        let _ = write!(
            s,
            r#",{{"metric":"temp_c","value":{}.5,"ts_ms":{ts},"component":"sensor{k}"}}"#,
            20 + k
        );
    }
    s.push_str("]}");
    s
}

fn main() {
    let now = dcwatt_common::now_ms();
    let epoch = now - (ROUNDS as i64 + 1) * 10_000;
    let msgs: Vec<(String, bytes::Bytes)> = (0..ROUNDS)
        .flat_map(|r| {
            (0..HOSTS).map(move |h| {
                (
                    format!("dcwatt/v1/bench/h{h:06}/readings"),
                    bytes::Bytes::from(
                        payload(h, r as u64 + 1, epoch + (r as i64 + 1) * 10_000, epoch)
                            .into_bytes(),
                    ),
                )
            })
        })
        .collect();
    let n = msgs.len() as f64;
    // The same batches in the compact encoding, and as CBOR maps through serde (what a
    // generic CBOR library makes of the JSON shape), for comparison.
    let compact: Vec<(String, bytes::Bytes)> = msgs
        .iter()
        .map(|(t, p)| {
            let m: ReadingsMessage = decode(p).expect("the bench's own batch");
            (t.clone(), bytes::Bytes::from(compact::encode(&m)))
        })
        .collect();
    let serde_cbor: Vec<Vec<u8>> = msgs
        .iter()
        .map(|(_, p)| {
            let m: ReadingsMessage = decode(p).expect("the bench's own batch");
            let mut v = Vec::new();
            ciborium::into_writer(&m, &mut v).expect("into a Vec");
            v
        })
        .collect();
    let size = |total: usize| total as f64 / n;
    let json_bytes = size(msgs.iter().map(|(_, p)| p.len()).sum());
    let compact_bytes = size(compact.iter().map(|(_, p)| p.len()).sum());
    let cbor_bytes = size(serde_cbor.iter().map(Vec::len).sum());

    let json_ns = time(msgs.iter().map(|(_, p)| &p[..]), |p| {
        decode::<ReadingsMessage>(p).is_ok()
    }) / n;
    let compact_ns = time(compact.iter().map(|(_, p)| &p[..]), |p| {
        decode::<ReadingsMessage>(p).is_ok()
    }) / n;
    let cbor_ns = time(serde_cbor.iter().map(|p| &p[..]), |p| {
        ciborium::from_reader::<ReadingsMessage, _>(p).is_ok()
    }) / n;
    println!(
        "decode, ns/message: JSON {json_ns:.0} ({json_bytes:.0} B), compact {compact_ns:.0} ({compact_bytes:.0} B, {:.2}× faster), CBOR maps through serde {cbor_ns:.0} ({cbor_bytes:.0} B, {:.2}×)",
        json_ns / compact_ns,
        json_ns / cbor_ns
    );

    // The whole path on one thread, then with the payloads decoded ahead (as the broker's
    // receiving task does), which leaves the intake thread the rest.
    for (name, set, decode_ns) in [("JSON", &msgs, json_ns), ("compact", &compact, compact_ns)] {
        let full_ns = run(set, now, RawMessage::new) / n;
        let rest_ns = run(set, now, RawMessage::decoded_ahead) / n;
        println!(
            "intake, {name}: {} messages × 20 readings; full path {full_ns:.0} ns/message ({:.0} messages/s, decode {:.0} % of it); after decoding ahead, {rest_ns:.0} ns/message on the intake thread",
            set.len(),
            1e9 / full_ns,
            100.0 * decode_ns / full_ns
        );
    }
}

/// Nanoseconds to decode every payload.
fn time<'a>(payloads: impl Iterator<Item = &'a [u8]>, decode: impl Fn(&[u8]) -> bool) -> f64 {
    let t = Instant::now();
    let mut ok = 0usize;
    for p in payloads {
        ok += usize::from(black_box(decode(p)));
    }
    let ns = t.elapsed().as_nanos() as f64;
    assert!(ok > 0, "every payload decodes");
    ns
}

fn intake() -> (Intake, Arc<IntakeStats>) {
    let stats = Arc::new(IntakeStats::default());
    let cfg = IntakeConfig {
        sites: Vec::new(),
        max_host_power_w: 20_000.0,
        max_future_skew_ms: 300_000,
        queue_messages: 16,
        max_readings_per_batch: 10_000,
        max_nodes: 100_000,
        max_sites: 1_000,
        max_clock_skew_ms: 5_000,
    };
    (Intake::new(stats.clone(), cfg), stats)
}

fn check(stats: &IntakeStats, messages: usize) {
    let accepted = stats
        .readings_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(accepted, messages as u64 * 20, "every reading accepted");
}

/// Nanoseconds to handle every message, in the intake's chunks of 512.
fn run(
    msgs: &[(String, bytes::Bytes)],
    now: i64,
    make: fn(String, bytes::Bytes) -> RawMessage,
) -> f64 {
    let chunks: Vec<Vec<RawMessage>> = msgs
        .chunks(512)
        .map(|c| c.iter().map(|(t, p)| make(t.clone(), p.clone())).collect())
        .collect();
    let (mut intake, stats) = intake();
    let mut engine = Engine::new(EngineConfig::default());
    let t = Instant::now();
    for chunk in chunks {
        for m in chunk {
            intake.handle_message(&mut engine, m, now);
        }
    }
    let ns = t.elapsed().as_nanos() as f64;
    check(&stats, msgs.len());
    ns
}
