//! What the alerts show outside: the states and history for the API (through the API's
//! [`AlertBoard`](crate::api::AlertBoard) port) and their families on `/metrics`.

use super::notify::{AlertStats, SINKS};
use super::store::Book;
use super::{render, Phase, Rule};
use crate::api::AlertBoard;
use dcwatt_common::live::Live;
use dcwatt_common::metrics::{Exposition, Source};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The alert states and counters, shared by the evaluator, the API and `/metrics`.
#[derive(Clone)]
pub struct Board {
    /// States and history.
    pub book: Arc<Mutex<Book>>,
    /// The rules (replaced on reload).
    pub rules: Arc<Live<Vec<Rule>>>,
    /// Notification counters.
    pub stats: Arc<AlertStats>,
    /// The latest snapshot: the sites thresholds are written for.
    pub snapshots: tokio::sync::watch::Receiver<Arc<crate::engine::Snapshot>>,
}

/// The unit of a rule's value, for showing it: `pue` (a ratio ≥ 1, three decimals),
/// `share` (0..1, shown as %), `W`, `°C`, `s`, `state` (1 = the bad state), or `""`.
fn unit(rule: &Rule) -> &'static str {
    use super::Subject;
    match &rule.subject {
        Subject::SitePue(_) | Subject::PowerRatio => "pue",
        Subject::SiteTarget { .. } => "",
        Subject::SiteKpi { kpi, .. } => match kpi.as_str() {
            "wue" => "L/kWh",
            "cue" | "cue_market" => "kg/kWh",
            "ref" | "erf" | "it_utilization" => "share",
            _ => "pue",
        },
        Subject::Coverage(_) | Subject::Completeness(_) | Subject::RackUtilization => "share",
        Subject::RackFailoverHeadroom => "W",
        Subject::StaleMeter => "s",
        Subject::NodeOffline => "state",
        Subject::NodeMetric { metric, .. } => match metric.as_str() {
            "temp_c" => "°C",
            m if m.ends_with("_w") => "W",
            m if m.ends_with("_util") => "share",
            _ => "",
        },
    }
}

impl AlertBoard for Board {
    fn alerts(&self) -> Option<Value> {
        let book = self.book.lock().ok()?;
        let mut active = Vec::new();
        let mut suppressed = Vec::new();
        let rules = self.rules.get();
        for (key, st) in &book.states {
            let rule = rules.iter().find(|r| r.name == key.rule);
            let severity = rule.map(|r| r.severity.clone()).unwrap_or_default();
            if st.phase != Phase::Inactive {
                active.push(json!({
                    "alert": key.id(), "rule": key.rule, "site": key.site, "target": key.target,
                    "state": st.phase, "severity": severity, "since_ms": st.since_ms,
                    "value": st.value, "threshold": rule.map(|r| r.limits(&key.site).0),
                    "summary": rule.map(|r| render(r, key, st.value)),
                    "suppressed": st.suppressed,
                    "unit": rule.map(unit),
                    "no_data": st.no_data_since_ms.is_some(),
                    "no_data_since_ms": st.no_data_since_ms,
                }));
            } else if let Some(reason) = &st.suppressed {
                suppressed.push(json!({
                    "alert": key.id(), "rule": key.rule, "site": key.site, "target": key.target,
                    "reason": reason, "value": st.value,
                    "no_data_since_ms": st.no_data_since_ms,
                }));
            }
        }
        Some(json!({ "alerts": active, "suppressed": suppressed }))
    }

    fn history(&self) -> Option<Value> {
        let book = self.book.lock().ok()?;
        let history: Vec<_> = book.history.iter().rev().collect();
        Some(json!({ "history": history }))
    }
}

impl Source for Board {
    fn encode(&self, o: &mut Exposition) {
        o.family(
            "dcwatt_alerts_firing",
            "gauge",
            "Alerts firing, by severity.",
        );
        let mut firing: BTreeMap<&str, u64> = ["info", "warning", "critical"]
            .iter()
            .map(|s| (*s, 0))
            .collect();
        let rules = self.rules.get();
        // The sites known, and those with overrides.
        let mut sites: std::collections::BTreeSet<String> = rules
            .iter()
            .flat_map(|r| r.overrides.keys().cloned())
            .collect();
        sites.extend(self.snapshots.borrow().views().map(|v| v.site.clone()));
        if let Ok(book) = self.book.lock() {
            for (key, st) in &book.states {
                if st.phase == Phase::Firing {
                    let sev = rules
                        .iter()
                        .find(|r| r.name == key.rule)
                        .map_or("warning", |r| r.severity.as_str());
                    *firing.entry(sev).or_default() += 1;
                }
            }
        }
        for (sev, n) in &firing {
            let _ = writeln!(o, "dcwatt_alerts_firing{{severity=\"{sev}\"}} {n}");
        }
        o.family(
            "dcwatt_alert_threshold",
            "gauge",
            "The threshold in force for each rule and site (per-site overrides applied): a site's PUE target for dashboards, or dcwatt's thresholds for Prometheus rules.",
        );
        for r in rules.iter() {
            for site in sites.iter().filter(|s| r.applies_to(s)) {
                let _ = writeln!(
                    o,
                    "dcwatt_alert_threshold{{rule=\"{}\",subject=\"{}\",window=\"{}\",site=\"{site}\"}} {}",
                    r.name,
                    r.subject.name(),
                    r.subject.window().unwrap_or_default(),
                    r.limits(site).0
                );
            }
        }
        let a = &self.stats;
        for (name, help, arr) in [
            (
                "dcwatt_alert_notifications_total",
                "Alert notifications delivered, by sink.",
                &a.sent,
            ),
            (
                "dcwatt_alert_notification_failures_total",
                "Alert notifications that failed after retries, by sink.",
                &a.failed,
            ),
            (
                "dcwatt_alert_notifications_dropped_total",
                "Alert notifications refused by a full sink queue, by sink.",
                &a.dropped,
            ),
        ] {
            o.family(name, "counter", help);
            for (i, sink) in SINKS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{name}{{sink=\"{sink}\"}} {}",
                    arr[i].load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Op, Subject};
    use crate::engine::{Engine, EngineConfig, Snapshot};
    use dcwatt_common::protocol::{Point, Reading};

    #[test]
    fn each_site_gets_the_threshold_in_force_for_it() {
        let rule = Rule {
            name: "pue_1h_above_target".into(),
            subject: Subject::SitePue("1h".into()),
            op: Op::Gt,
            threshold: 1.5,
            clear: None,
            for_ms: 0,
            keep_firing_for_ms: 0,
            severity: "warning".into(),
            min_coverage: 0.95,
            require_full_window: true,
            labels: BTreeMap::new(),
            summary: String::new(),
            sites: Vec::new(),
            overrides: [("hub".to_owned(), (1.25, None))].into(),
        };
        let mut e = Engine::new(EngineConfig::default());
        let t = 1_800_000_000_000;
        let r = Reading::gauge("power_w", 100.0, t).at(Point::ItInput);
        e.apply_readings("dc", "h1", &[r], t);
        let (_tx, snapshots) =
            tokio::sync::watch::channel(Arc::new(Snapshot::take(&e, &[], t + 100)));
        let board = Board {
            book: Arc::default(),
            rules: Arc::new(Live::new(vec![rule])),
            stats: Arc::default(),
            snapshots,
        };
        let mut o = Exposition::default();
        board.encode(&mut o);
        let text = o.into_text();
        let line = |site: &str| {
            format!("dcwatt_alert_threshold{{rule=\"pue_1h_above_target\",subject=\"site_pue\",window=\"1h\",site=\"{site}\"}}")
        };
        assert!(text.contains(&format!("{} 1.25\n", line("hub"))), "{text}");
        assert!(text.contains(&format!("{} 1.5\n", line("dc"))), "{text}");
    }
}
