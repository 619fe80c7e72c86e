//! Agents whose clocks are wrong, inside `max_future_skew_secs`: a host 4 minutes ahead has
//! its readings' times corrected by the offset its batches show (a batch cannot arrive
//! before it was sent), and the site's PUE is exact and measured; a host 10 minutes
//! behind cannot be told from a backlog, so the values it enters are partial with the
//! reason — never "measured". Each host is published by the test as an agent with that
//! clock would (readings and `sent_ms` from the same wrong clock); the facility meter's
//! clock is right. Constant powers: the exact PUE is 1500 / 1000.

use dcwatt_e2e::wire::{birth, readings_sent_at};
use dcwatt_e2e::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn a_host_clock_ahead_is_corrected_and_one_behind_is_partial() {
    let dir = TempDir::new("clocks");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let sites = [("ahead", 240_000i64), ("behind", -600_000i64)];
    let mut first = Vec::new();
    for (site, _) in sites {
        for role in ["meter", "host"] {
            first.push(birth(
                site,
                role,
                json!({"role": role, "interval_ms": 1000}),
            ));
        }
    }
    publish_all(c.mqtt, first.into_iter(), Duration::from_secs(10));
    for seq in 0..15u64 {
        let now = dcwatt_common::now_ms();
        let mut msgs = Vec::new();
        for (site, skew) in sites {
            // Readings and `sent_ms` from the same clock.
            for (node, clock, w, point) in [
                ("meter", now, 1500.0, "facility_input"),
                ("host", now + skew, 1000.0, "it_input"),
            ] {
                let power = json!([{"metric": "power_w", "value": w, "ts_ms": clock,
                                    "point": point}]);
                msgs.push(readings_sent_at(site, node, seq, clock, power));
            }
        }
        publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1000));
    }
    let node = |site: &str| {
        let nodes = get_json(c.http, &format!("/api/v1/sites/{site}/nodes")).expect("nodes");
        (nodes["nodes"].as_array().expect("nodes").iter())
            .find(|n| n["node"] == "host")
            .cloned()
            .expect("the host")
    };

    // Ahead: corrected, exact and measured.
    let ahead = c.site("ahead").expect("site ahead");
    let w = &ahead["pue"]["1m"];
    assert_measured_so_far(w);
    let v = w["value"].as_f64().expect("a PUE");
    assert!((v - 1.5).abs() < 1e-6, "PUE {v}, exact 1.5: {w:#}");
    let off = node("ahead")["clock_offset_ms"].as_i64().expect("offset");
    assert!((-241_000..=-239_000).contains(&off), "offset {off}");
    let text = c.metrics();
    assert!(metric(&text, "dcwatt_clock_corrected_batches_total").unwrap_or(0.0) >= 15.0);

    // Behind: never measured, and says why.
    let behind = c.site("behind").expect("site behind");
    for window in ["1m", "15m"] {
        let w = &behind["pue"][window];
        assert_ne!(w["quality"], "measured", "{w:#}");
        if w["value"].is_f64() {
            assert_eq!(w["quality"], "partial", "{w:#}");
            let why = w["reason"].as_str().unwrap_or("");
            assert!(why.contains("clock skew") && why.contains("host"), "{w:#}");
        }
    }
    assert_ne!(
        behind["power"]["quality"], "measured",
        "{:#}",
        behind["power"]
    );
    let off = node("behind")["clock_offset_ms"].as_i64().expect("offset");
    assert!(off >= 599_000, "offset {off}");
    assert!(metric(&text, "dcwatt_clock_late_batches_total").unwrap_or(0.0) >= 15.0);
}
