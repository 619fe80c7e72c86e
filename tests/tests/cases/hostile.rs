//! 100,000 random and mutated payloads over MQTT, interleaved with a site's real agents:
//! the collector keeps running, counts every message it receives, its memory stays
//! bounded, and the real site's PUE stays exact.

use dcwatt_e2e::sim::CalmSite;
use dcwatt_e2e::*;
use std::time::Duration;

const SITE: &str = "calm";
const HOSTILE: u64 = 100_000;

/// The n-th hostile message: random bytes, mutated valid batches, wrong topics.
fn hostile(n: u64) -> (String, Vec<u8>) {
    let mut st = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5;
    let mut rnd = move || dcwatt_common::backoff::splitmix64(&mut st);
    let now = dcwatt_common::now_ms();
    match rnd() % 4 {
        // Random bytes aimed at the real site's nodes.
        0 => {
            let len = (rnd() % 600) as usize;
            let bytes = (0..len).map(|_| (rnd() & 0xff) as u8).collect();
            (format!("dcwatt/v1/{SITE}/h{}/readings", rnd() % 3), bytes)
        }
        // A valid batch for a real node, mutated, sent on another node's topic.
        1 => {
            let mut p = format!(
                r#"{{"v":1,"site":"{SITE}","node":"h0","seq":{},"sent_ms":{now},"readings":[{{"metric":"power_w","value":{},"ts_ms":{now},"point":"it_input"}}]}}"#,
                rnd() % 100_000,
                rnd() % 20_000
            )
            .into_bytes();
            for _ in 0..(rnd() % 3) {
                let i = (rnd() as usize) % p.len();
                p[i] = (rnd() & 0x7f) as u8;
            }
            (format!("dcwatt/v1/{SITE}/intruder/readings"), p)
        }
        // Mutated batches and statuses for a hostile site (some stay valid: they are that
        // site's business, bounded to 50 node names).
        2 => {
            let node = format!("x{}", rnd() % 50);
            let mut p = format!(
                r#"{{"v":1,"site":"hostile","node":"{node}","seq":{},"sent_ms":{now},"readings":[{{"metric":"temp_c","value":{},"ts_ms":{now}}}]}}"#,
                rnd() % 1_000,
                rnd() % 100
            )
            .into_bytes();
            if rnd() % 2 == 0 {
                let i = (rnd() as usize) % p.len();
                p.truncate(i);
            }
            let kind = if rnd() % 5 == 0 { "status" } else { "readings" };
            (format!("dcwatt/v1/hostile/{node}/{kind}"), p)
        }
        // Topics of the wrong shape.
        _ => {
            let levels = [
                "dcwatt/v1/a b/c/readings",
                "dcwatt/v1/calm/h0/readings/x",
                "dcwatt/v1/calm//readings",
                "dcwatt/v1/ü/h/readings",
            ];
            (levels[(rnd() % 4) as usize].to_owned(), b"{}".to_vec())
        }
    }
}

#[test]
fn a_hundred_thousand_hostile_payloads_change_nothing() {
    let dir = TempDir::new("hostile");
    let mut c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let calm = CalmSite::start(&dir, SITE, &c);
    let rss_before = c.proc.rss_kib();
    let received = |t: &str| {
        metric(t, "dcwatt_messages_received_total{kind=\"readings\"}").unwrap_or(0.0)
            + metric(t, "dcwatt_messages_received_total{kind=\"status\"}").unwrap_or(0.0)
    };
    let before = received(&c.metrics());
    assert_eq!(
        publish_all(c.mqtt, (0..HOSTILE).map(hostile), Duration::from_secs(300)),
        HOSTILE
    );
    // Three quarters match the collector's subscriptions (the wrong-shape topics mostly do
    // not reach it); every one that does is counted. The agents add their own batches.
    let text = wait_for("the storm counted", Duration::from_secs(60), || {
        let t = c.metrics();
        (received(&t) - before >= HOSTILE as f64 * 0.75).then_some(t)
    });
    let rss_after = c.proc.rss_kib();
    assert!(c.proc.running(), "the collector died:\n{}", c.proc.log());
    let rejected: f64 = text
        .lines()
        .filter(|l| l.starts_with("dcwatt_messages_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        rejected >= HOSTILE as f64 * 0.5,
        "refusals counted: {rejected}\n{text}"
    );
    // Memory: the embedded broker keeps up to 128 MiB of messages in its log; beyond that
    // nothing may grow with the number of messages.
    eprintln!(
        "collector RSS {} MiB before, {} MiB after {HOSTILE} hostile messages",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // The real site: exact, over a window that overlaps the storm.
    calm.assert_exact(&c, dcwatt_common::now_ms());
    let nodes = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes")).expect("nodes");
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "no node created in the real site by hostile input: {names:?}"
    );
    assert!(c
        .site("hostile")
        .is_none_or(|h| h["nodes"]["total"].as_u64().unwrap_or(0) <= 50));
}
