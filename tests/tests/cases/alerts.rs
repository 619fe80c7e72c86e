//! Alerting end to end: a simulated site whose PUE rises above target fires an alert that a
//! real Alertmanager lists with the right labels, a webhook receives (signed), and a fresh
//! MQTT subscriber sees retained; the alert survives a collector restart and resolves when
//! the PUE falls.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SITE: &str = "alerting";
const SECRET: &str = "hook-secret";

/// A webhook receiver recording (signature header, body) of every POST.
/// (signature verdict, body) of every POST received.
type Hooks = Arc<Mutex<Vec<(String, Value)>>>;

fn receiver() -> (u16, Hooks) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break (String::new(), Vec::new()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < i + 4 + len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    break (head, buf[i + 4..].to_vec());
                }
            };
            let sig = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("X-Dcwatt-Signature: ")
                        .or_else(|| l.strip_prefix("x-dcwatt-signature: "))
                })
                .unwrap_or("")
                .to_owned();
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                let expected = {
                    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
                    let tag = ring::hmac::sign(&key, &body);
                    format!(
                        "sha256={}",
                        tag.as_ref()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    )
                };
                sink.lock().unwrap().push((
                    if sig == expected {
                        "valid".into()
                    } else {
                        format!("invalid: {sig}")
                    },
                    v,
                ));
            }
            let _ = s.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, got)
}

fn collector(dir: &TempDir, am: u16, hook: u16, http: Option<u16>, mqtt: Option<u16>) -> Collector {
    dir.write("hook-secret", SECRET);
    let cfg = dir.write(
        "collector.toml",
        &format!(
            r#"
[engine]
default_interval_secs = 1

[alerts]
evaluate_interval_secs = 1
state_file = "alerts.json"

[alerts.webhook]
url = "http://127.0.0.1:{hook}/hook"
secret_file = "{secret}"

[alerts.alertmanager]
url = "http://127.0.0.1:{am}"
resend_interval_secs = 5

[[alerts.rules]]
name = "pue_1m_high"
subject = "site_pue"
window = "1m"
op = ">"
threshold = 1.5
clear = 1.45
severity = "critical"
min_coverage = 0.9
# A young site's 1m window: act on it before it spans a full minute.
require_full_window = false
labels = {{ team = "facilities" }}
summary = "PUE {{window}} of {{site}} is {{value}}"
"#,
            secret = dir.0.join("hook-secret").display()
        ),
    );
    let mut env = vec![(
        "DCWATT__ALERTS__STATE_FILE",
        dir.0.join("alerts.json").display().to_string(),
    )];
    if let Some(h) = http {
        env.push(("DCWATT__HTTP__LISTEN", format!("127.0.0.1:{h}")));
    }
    let _ = mqtt;
    Collector::start_with_config(dir, BrokerKind::Embedded, &cfg, mqtt, &env)
}

fn am_alerts(port: u16) -> Vec<Value> {
    get_json(port, "/api/v2/alerts")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn firing(c: &Collector) -> Option<Value> {
    let a = get_json(c.http, "/api/v1/alerts")?;
    a["alerts"]
        .as_array()?
        .iter()
        .find(|x| x["alert"] == "pue_1m_high" && x["state"] == "firing")
        .cloned()
}

#[test]
fn pue_alert_fires_to_alertmanager_webhook_and_mqtt_survives_restart_and_resolves() {
    let dir = TempDir::new("alerts");
    let Some(am) = Alertmanager::start(&dir) else {
        return skip_or_fail(
            "alerting end to end",
            "prometheus-alertmanager is not installed",
        );
    };
    let (hook, hooks) = receiver();
    let c = collector(&dir, am.port, hook, None, None);
    // IT 1000 W; facility swings 1550 ± 800 W every 80 s: the 1m PUE crosses 1.5 both ways.
    let fac = Profile {
        base_w: 1_550.0,
        amplitude_w: 800.0,
        period_secs: 80.0,
    };
    let it = Profile {
        base_w: 500.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let mqtt_port = c.mqtt;
    let agents = |port: u16| {
        vec![
            start_agent(
                &dir,
                "meter",
                &agent_toml(SITE, "meter", "meter", port, &fac, "facility_input"),
            ),
            start_agent(
                &dir,
                "h1",
                &agent_toml(SITE, "h1", "host", port, &it, "it_input"),
            ),
            start_agent(
                &dir,
                "h2",
                &agent_toml(SITE, "h2", "host", port, &it, "it_input"),
            ),
        ]
    };
    let _agents = agents(mqtt_port);

    let fired = wait_for("the PUE alert to fire", Duration::from_secs(150), || {
        firing(&c)
    });
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["threshold"], 1.5);
    assert!(fired["value"].as_f64().unwrap() > 1.45, "{fired:#}");
    let since = fired["since_ms"].as_i64().unwrap();

    // Alertmanager lists it with the rule's labels.
    let listed = wait_for(
        "Alertmanager to list the alert",
        Duration::from_secs(20),
        || {
            am_alerts(am.port)
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "pue_1m_high")
        },
    );
    let labels = &listed["labels"];
    assert_eq!(
        (
            labels["site"].as_str(),
            labels["severity"].as_str(),
            labels["team"].as_str()
        ),
        (Some(SITE), Some("critical"), Some("facilities")),
        "{listed:#}"
    );
    assert!(listed["annotations"]["summary"]
        .as_str()
        .unwrap()
        .starts_with("PUE 1m of alerting is"));

    // The webhook got a signed firing notification.
    wait_for("a signed webhook", Duration::from_secs(20), || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .find(|(sig, v)| {
                sig == "valid" && v["status"] == "firing" && v["alert"] == "pue_1m_high"
            })
            .cloned()
    });

    // A fresh MQTT subscriber sees the retained alert.
    let retained = mqtt_collect(
        mqtt_port,
        &format!("dcwatt/v1/{SITE}/alerts/#"),
        Duration::from_secs(2),
    );
    let (topic, payload, retain) = retained
        .iter()
        .find(|(t, _, _)| t.ends_with("/pue_1m_high"))
        .expect("retained alert message");
    assert_eq!(topic, &format!("dcwatt/v1/{SITE}/alerts/pue_1m_high"));
    assert!(*retain);
    let msg: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(msg["status"], "firing");

    // Restart the collector: the firing alert comes back with its original start.
    let http = c.http;
    drop(c);
    let c = collector(&dir, am.port, hook, Some(http), Some(mqtt_port));
    let again = wait_for("the alert after a restart", Duration::from_secs(10), || {
        firing(&c)
    });
    assert_eq!(
        again["since_ms"].as_i64(),
        Some(since),
        "state restored, not re-fired: {again:#}"
    );

    // PUE falls: resolved everywhere.
    let resolved = wait_for("the alert to resolve", Duration::from_secs(150), || {
        let h = get_json(c.http, "/api/v1/alerts/history")?;
        h["history"]
            .as_array()?
            .iter()
            .find(|t| t["alert"] == "pue_1m_high" && t["change"] == "resolved")
            .cloned()
    });
    let resolved_at = resolved["at_ms"].as_i64().expect("at_ms");
    // The facility swings on: the alert may fire again later, as a new alert (a new
    // start). What must be gone is the one that resolved.
    let refired = |a: &Value| a["since_ms"].as_i64().is_some_and(|t| t >= resolved_at);
    assert!(firing(&c).is_none_or(|a| refired(&a)));
    wait_for(
        "Alertmanager to see it resolved",
        Duration::from_secs(20),
        || {
            let still = am_alerts(am.port).into_iter().any(|a| {
                a["labels"]["alertname"] == "pue_1m_high" && a["status"]["state"] == "active"
            });
            (!still).then_some(())
        },
    );
    wait_for("a resolved webhook", Duration::from_secs(20), || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .find(|(sig, v)| sig == "valid" && v["status"] == "resolved")
            .cloned()
    });
    let after = mqtt_collect(
        mqtt_port,
        &format!("dcwatt/v1/{SITE}/alerts/#"),
        Duration::from_secs(2),
    );
    assert!(
        !after.iter().any(|(t, p, _)| {
            t.ends_with("/pue_1m_high")
                && !p.is_empty()
                && !serde_json::from_slice::<Value>(p).is_ok_and(|m| refired(&m))
        }),
        "retained alert cleared: {after:?}"
    );
    let metrics = c.metrics();
    let still = usize::from(firing(&c).is_some());
    assert_eq!(
        metric(&metrics, "dcwatt_alerts_firing{severity=\"critical\"}"),
        Some(still as f64)
    );
    assert!(
        metric(
            &metrics,
            "dcwatt_alert_notifications_total{sink=\"alertmanager\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "dcwatt_alert_notification_failures_total{sink=\"webhook\"}"
        ),
        Some(0.0)
    );
}
