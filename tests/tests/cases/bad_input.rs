//! Every kind of bad input, published over real MQTT to a running collector: each is
//! refused and counted by reason, and the PUE stays right.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use std::time::Duration;

const SITE: &str = "bad";

fn readings(site: &str, node: &str, seq: u64, value: &str, extra: &str) -> Vec<u8> {
    let now = dcwatt_common::now_ms();
    format!(
        r#"{{"v":1,"site":"{site}","node":"{node}","seq":{seq},"sent_ms":{now},"readings":[{{"metric":"power_w","value":{value},"ts_ms":{now},"point":"it_input"{extra}}}]}}"#
    )
    .into_bytes()
}

/// One `power_w` reading at `it_input` in the compact encoding.
fn compact(site: &str, node: &str, value: f64, now: i64) -> Vec<u8> {
    use dcwatt_common::protocol::{compact, Point, Reading, ReadingsMessage};
    compact::encode(&ReadingsMessage {
        v: 1,
        site: site.into(),
        node: node.into(),
        seq: 1,
        sent_ms: now,
        readings: vec![Reading::gauge("power_w", value, now).at(Point::ItInput)],
    })
}

fn topic(site: &str, node: &str) -> String {
    format!("dcwatt/v1/{site}/{node}/readings")
}

#[test]
fn bad_input_is_refused_counted_and_harmless() {
    let dir = TempDir::new("bad-input");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let fac = Profile {
        base_w: 2_000.0,
        amplitude_w: 150.0,
        period_secs: 29.0,
    };
    let hosts: Vec<Profile> = (0..3)
        .map(|i| Profile {
            base_w: 400.0 + 50.0 * i as f64,
            amplitude_w: 30.0,
            period_secs: 13.0 + i as f64,
        })
        .collect();
    let _m = start_agent(
        &dir,
        "meter",
        &agent_toml(SITE, "meter", "meter", c.mqtt, &fac, "facility_input"),
    );
    let _h: Vec<Proc> = hosts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            start_agent(
                &dir,
                &format!("h{i}"),
                &agent_toml(SITE, &format!("h{i}"), "host", c.mqtt, p, "it_input"),
            )
        })
        .collect();
    wait_for("a PUE value", Duration::from_secs(60), || {
        c.site(SITE)?["pue"]["1m"]["value"].as_f64()
    });

    let now = dcwatt_common::now_ms();
    let day = 86_400_000;
    let temp = |seq: u64| {
        format!(r#"{{"v":1,"site":"{SITE}","node":"probe","seq":{seq},"sent_ms":{now},"readings":[{{"metric":"temp_c","value":21.5,"ts_ms":{now}}}]}}"#).into_bytes()
    };
    let bad: Vec<(String, Vec<u8>)> = vec![
        // Whole messages.
        (topic(SITE, "x1"), b"{not json".to_vec()),
        (topic(SITE, "x2"), br#"{"v":2,"site":"bad","node":"x2","seq":1,"sent_ms":1,"readings":[]}"#.to_vec()),
        (topic(SITE, "x3"), br#"{"v":1,"site":"bad","node":"x3","sent_ms":1,"readings":[]}"#.to_vec()),
        (topic(SITE, "x4"), readings(SITE, "someone-else", 1, "100", "")),
        (topic(SITE, "x5"), readings("other-site", "x5", 1, "100", "")),
        ("dcwatt/v1/bad site/x6/readings".to_owned(), readings("bad site", "x6", 1, "100", "")),
        // The compact encoding: cut short; a point no version has; NaN as a CBOR float.
        (topic(SITE, "c1"), {
            let mut p = compact(SITE, "c1", 300.0, now);
            p.truncate(p.len() - 3);
            p
        }),
        (topic(SITE, "c2"), {
            let mut p = compact(SITE, "c2", 300.0, now);
            let at = p.windows(8).position(|w| w == b"it_input").expect("the point");
            p[at..at + 8].copy_from_slice(b"it_imput");
            p
        }),
        (topic(SITE, "c3"), compact(SITE, "c3", f64::NAN, now)),
        // Single readings.
        (topic(SITE, "r1"), readings(SITE, "r1", 1, "\"NaN\"", "")),
        (topic(SITE, "r2"), readings(SITE, "r2", 1, "\"Infinity\"", "")),
        (topic(SITE, "r3"), readings(SITE, "r3", 1, "-250", "")),
        (topic(SITE, "r4"), readings(SITE, "r4", 1, "25000", "")),
        (topic(SITE, "r5"), format!(r#"{{"v":1,"site":"{SITE}","node":"r5","seq":1,"sent_ms":{now},"readings":[{{"metric":"power_w","value":300,"ts_ms":{},"point":"it_input"}}]}}"#, now + day).into_bytes()),
        // Limits: more readings than a batch may carry; a payload over 1 MiB.
        (topic(SITE, "x7"), {
            let one = format!(r#"{{"metric":"temp_c","value":21.5,"ts_ms":{now}}}"#);
            let many = vec![one; 10_001].join(",");
            format!(r#"{{"v":1,"site":"{SITE}","node":"x7","seq":1,"sent_ms":{now},"readings":[{many}]}}"#).into_bytes()
        }),
        (topic(SITE, "x8"), {
            let mut p = readings(SITE, "x8", 1, "100", "");
            p.extend(std::iter::repeat_n(b' ', dcwatt_common::protocol::MAX_PAYLOAD_BYTES));
            p
        }),
        // Redelivery and loss.
        (topic(SITE, "probe"), temp(5)),
        (topic(SITE, "probe"), temp(5)),
        (topic(SITE, "probe"), temp(9)),
    ];
    let n = bad.len() as u64;
    assert_eq!(
        publish_all(c.mqtt, bad.into_iter(), Duration::from_secs(30)),
        n
    );

    let expect_msgs = [
        ("malformed_json", 1.0),
        ("malformed_cbor", 1.0),
        ("unsupported_version", 1.0),
        ("invalid_schema", 2.0),
        ("topic_mismatch", 2.0),
        ("invalid_topic", 1.0),
        ("duplicate_seq", 1.0),
        ("too_many_readings", 1.0),
        ("payload_too_large", 1.0),
    ];
    let expect_readings = [
        ("non_finite", 3.0),
        ("negative_power", 1.0),
        ("power_above_host_max", 1.0),
        ("future_timestamp", 1.0),
    ];
    let text = wait_for("every bad message counted", Duration::from_secs(20), || {
        let t = c.metrics();
        let all = expect_msgs.iter().all(|(r, v)| {
            metric(
                &t,
                &format!("dcwatt_messages_rejected_total{{reason=\"{r}\"}}"),
            ) == Some(*v)
        }) && expect_readings.iter().all(|(r, v)| {
            metric(
                &t,
                &format!("dcwatt_readings_rejected_total{{reason=\"{r}\"}}"),
            ) == Some(*v)
        });
        all.then_some(t)
    });
    assert_eq!(
        metric(&text, "dcwatt_batches_missing"),
        Some(3.0),
        "seq 5 → 9 loses three batches"
    );
    assert_eq!(
        metric(
            &text,
            "dcwatt_readings_rejected_total{reason=\"kind_mismatch\"}"
        ),
        Some(0.0)
    );
    assert!(c.proc.log().contains("rejected"), "refusals are logged");

    // Still alive, still right: wait for a window that starts after the bad input, so a
    // wrongly accepted 25 kW host would show.
    let (view, after) = wait_for(
        "a fresh window after the bad input",
        Duration::from_secs(30),
        || {
            let v = c.site(SITE)?;
            let to = v["pue"]["1m"]["to_ms"].as_i64()?;
            (to > now + 5_000).then_some((v.clone(), to))
        },
    );
    let w = &view["pue"]["1m"];
    let from = w["from_ms"].as_i64().unwrap();
    let truth = fac.energy(from, after) / hosts.iter().map(|h| h.energy(from, after)).sum::<f64>();
    let got = w["value"].as_f64().unwrap();
    assert!(
        (got - truth).abs() / truth < 0.005,
        "PUE {got} vs exact {truth}\n{w:#}"
    );
    assert_eq!(w["coverage_it"], 1.0, "{w:#}");
    assert_measured_so_far(w);
    assert!(
        get_json(c.http, "/api/v1/sites/other-site").is_none(),
        "a mismatched payload must not create its site"
    );
    assert_eq!(
        http_get(c.http, "/api/v1/sites/nope").map(|r| r.0),
        Some(404)
    );
}
