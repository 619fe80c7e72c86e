//! A collector that stalls (a stop signal, a slow disk, a long pause of its host) longer than
//! the stale threshold: on resume its hosts look silent until their next batches arrive. A
//! rack whose meters are silent has unknown power, not 0 W, so a firing rack alert must
//! hold — firing, marked "no data" — and never resolve because its input went missing.

use dcwatt_e2e::wire::{birth, readings};
use dcwatt_e2e::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const SITE: &str = "stall";

fn alert(c: &Collector) -> Option<Value> {
    let a = get_json(c.http, "/api/v1/alerts")?;
    a["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["alert"] == "rack_hot.r1")
        .cloned()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_stalled_collector_keeps_a_firing_rack_alert_firing() {
    let dir = TempDir::new("stall");
    let cfg = dir.write(
        "collector.toml",
        r#"
[engine]
default_interval_secs = 1

[alerts]
evaluate_interval_secs = 1

[[racks]]
site = "stall"
rack = "r1"
budget_kw = 1.0
derating = 1.0

[[alerts.rules]]
name = "rack_hot"
subject = "rack_power_utilization"
op = ">"
threshold = 0.9
clear = 0.87
for_secs = 1
keep_firing_for_secs = 0
severity = "critical"
summary = "Rack {target} in {site} draws {value} of its budget"
"#,
    );
    let c = Collector::start_with_config(&dir, BrokerKind::Embedded, &cfg, None, &[]);
    let hosts = [("h1", 500.0), ("h2", 450.0)];
    publish_all(
        c.mqtt,
        hosts
            .iter()
            .map(|(h, _)| birth(SITE, h, json!({"rack": "r1", "interval_ms": 1000})))
            .collect::<Vec<_>>()
            .into_iter(),
        Duration::from_secs(10),
    );
    // Both hosts every second: 950 W of a 1 kW budget, 0.95 > 0.9.
    let mut seq = 0u64;
    let send = |seq: &mut u64| {
        *seq += 1;
        let now = dcwatt_common::now_ms();
        let msgs: Vec<_> = hosts
            .iter()
            .map(|(h, w)| {
                let r = json!([{"metric": "power_w", "value": w, "ts_ms": now,
                                "point": "it_input"}]);
                readings(SITE, h, *seq, r)
            })
            .collect();
        publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(10));
    };
    let firing = Instant::now() + Duration::from_secs(30);
    loop {
        send(&mut seq);
        if alert(&c).is_some_and(|a| a["state"] == "firing") {
            break;
        }
        assert!(
            Instant::now() < firing,
            "rack_hot.r1 never fired: {:?}",
            get_json(c.http, "/api/v1/alerts")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    send(&mut seq);

    // Stop the collector for 8 s, well past the 3 s stale bound (gap factor 3 × 1 s), and
    // keep the hosts quiet for 3 s after it resumes.
    signal(c.proc.pid(), "-STOP");
    std::thread::sleep(Duration::from_secs(8));
    signal(c.proc.pid(), "-CONT");
    let (mut polls, mut no_data, mut unknown_power) = (0, 0, 0);
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        if let Some(a) = alert(&c) {
            polls += 1;
            assert_eq!(a["state"], "firing", "after the stall: {a:#}");
            if a["no_data"] == true {
                no_data += 1;
                assert!(
                    a["suppressed"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("no data")),
                    "{a:#}"
                );
            }
        } else if let Some(all) = get_json(c.http, "/api/v1/alerts") {
            panic!("rack_hot.r1 left the active alerts after the stall: {all:#}");
        }
        if let Some(r) = get_json(c.http, &format!("/api/v1/sites/{SITE}/racks")) {
            let r1 = r["racks"]
                .as_array()
                .and_then(|v| v.iter().find(|x| x["rack"] == "r1").cloned());
            if let Some(r1) = r1.filter(|r| r["power_w"].is_null()) {
                unknown_power += 1;
                assert_eq!(r1["quality"], "no_data", "{r1:#}");
                assert!(r1["utilization"].is_null(), "unknown, not 0: {r1:#}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(polls > 0, "the collector answered after the stall");
    assert!(
        no_data > 0 && unknown_power > 0,
        "the silent hosts were seen as no data ({no_data} of {polls} polls) and the rack's \
         power as unknown ({unknown_power})"
    );

    // The data is back: firing, with data.
    for _ in 0..4 {
        send(&mut seq);
        std::thread::sleep(Duration::from_secs(1));
    }
    let a = wait_for("data back for rack_hot.r1", Duration::from_secs(10), || {
        alert(&c).filter(|a| a["no_data"] == false)
    });
    assert_eq!(a["state"], "firing", "{a:#}");
    let h = get_json(c.http, "/api/v1/alerts/history").expect("history");
    let changes: Vec<&str> = h["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["alert"] == "rack_hot.r1")
        .filter_map(|x| x["change"].as_str())
        .collect();
    assert_eq!(changes, vec!["fired"], "fired once, never resolved: {h:#}");
}
