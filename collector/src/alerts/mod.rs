//! alerts: rules over the engine's outputs, a state machine per alert, and notifications.
//!
//! The rule evaluation and the state machine ([`observe`], [`step`], [`evaluate`]) are
//! PURE: functions of (rules, state, inputs, now), tested by table. Sinks live in
//! [`notify`] and never block evaluation or each other; [`store`] persists states.
//!
//! An alert is one (rule, site, target) — target is a node or rack for per-node and
//! per-rack rules, empty for site rules. States: inactive → pending (condition true,
//! waiting `for`) → firing → resolved (condition false past the clear threshold for
//! `keep_firing_for`). Efficiency rules are suppressed, with the reason kept, when the
//! value's quality is not good enough: alerting on a bad ratio is worse than silence.
//! "No data" — a value that is missing (its meters silent, its node offline), not
//! trustworthy, or only a bound that does not decide the condition — never moves an alert:
//! it keeps its phase, says why, and records since when, until the data is back.

mod board;
pub mod notify;
pub mod store;

pub use board::Board;

#[cfg(test)]
mod tests;

pub use crate::engine::RackView;
use crate::engine::SiteSnapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// Site PUE over a window ("1m", "15m", "1h", "24h").
    SitePue(String),
    /// How far a site's figure over a window is on the wrong side of the site's own
    /// target for it (`[[sites]] targets`): value − target for PUE and WUE, target −
    /// value for REF, occupancy (now) and IT load utilization; positive when missed.
    SiteTarget {
        /// The figure's name.
        kpi: String,
        /// The window.
        window: String,
    },
    /// A figure beyond PUE (`wue`, `cue`, `cue_market`, `ref`, `erf`, `ere`) over a window.
    SiteKpi {
        /// The figure's name.
        kpi: String,
        /// The window.
        window: String,
    },
    /// Live power ratio.
    PowerRatio,
    /// IT coverage of a window.
    Coverage(String),
    /// The least of a window's IT and facility coverage: the data completeness that
    /// online energy monitoring asks to be at least 90 % (docs/reports.md).
    Completeness(String),
    /// 1 while a node is offline or stale, per node.
    NodeOffline,
    /// Seconds since a meter node's last reading, per meter node.
    StaleMeter,
    /// A node's latest reading of `metric` on components starting with `component`.
    NodeMetric {
        /// Metric name.
        metric: String,
        /// Component prefix ("" for any).
        component: String,
    },
    /// Rack power / derated budget, per rack.
    RackUtilization,
    /// Derated capacity of one feed minus rack power (W), per rack with A/B feeds.
    RackFailoverHeadroom,
}

/// Comparison of value against threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// value > threshold
    #[serde(rename = ">")]
    Gt,
    /// value >= threshold
    #[serde(rename = ">=")]
    Ge,
    /// value < threshold
    #[serde(rename = "<")]
    Lt,
    /// value <= threshold
    #[serde(rename = "<=")]
    Le,
    /// value == threshold
    #[serde(rename = "==")]
    Eq,
    /// value != threshold
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// Applies the comparison.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// A validated rule, with any per-site overrides already applied by [`Rule::for_site`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name, `[A-Za-z0-9_.-]`: part of the alert id and MQTT topic.
    pub name: String,
    /// What it looks at.
    pub subject: Subject,
    /// Comparison.
    pub op: Op,
    /// Fires when `value op threshold` has held for `for_ms`.
    pub threshold: f64,
    /// Once firing, stays firing while `value op clear` holds (hysteresis); defaults to the
    /// threshold.
    pub clear: Option<f64>,
    /// How long the condition must hold before firing.
    pub for_ms: i64,
    /// How long a firing alert stays firing after the condition stops.
    pub keep_firing_for_ms: i64,
    /// info, warning, critical.
    pub severity: String,
    /// Efficiency rules: minimum IT and facility coverage of the value.
    pub min_coverage: f64,
    /// Window rules: act only once the window's data spans its whole length.
    pub require_full_window: bool,
    /// Extra labels for notifications.
    pub labels: BTreeMap<String, String>,
    /// Summary template: {site} {target} {value} {threshold} {rule} {severity}.
    pub summary: String,
    /// Sites the rule applies to; empty for all.
    pub sites: Vec<String>,
    /// Per-site (threshold, clear) overrides.
    pub overrides: BTreeMap<String, (f64, Option<f64>)>,
}

impl Subject {
    /// The configuration's name of the subject (`inlet_temperature` and `ups_on_battery`
    /// are node metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Subject::SitePue(_) => "site_pue",
            Subject::SiteKpi { .. } => "site_kpi",
            Subject::SiteTarget { .. } => "site_target",
            Subject::PowerRatio => "power_ratio",
            Subject::Coverage(_) => "coverage",
            Subject::Completeness(_) => "completeness",
            Subject::NodeOffline => "node_offline",
            Subject::StaleMeter => "stale_meter",
            Subject::NodeMetric { .. } => "node_metric",
            Subject::RackUtilization => "rack_power_utilization",
            Subject::RackFailoverHeadroom => "rack_failover_headroom",
        }
    }

    /// The window of a window subject.
    pub fn window(&self) -> Option<&str> {
        match self {
            Subject::SitePue(w) | Subject::Coverage(w) | Subject::Completeness(w) => Some(w),
            Subject::SiteKpi { window, .. } | Subject::SiteTarget { window, .. } => Some(window),
            _ => None,
        }
    }
}

impl Rule {
    pub(crate) fn applies_to(&self, site: &str) -> bool {
        self.sites.is_empty() || self.sites.iter().any(|s| s == site)
    }

    /// Threshold and clear for one site.
    pub fn limits(&self, site: &str) -> (f64, f64) {
        let (t, c) = self
            .overrides
            .get(site)
            .map_or((self.threshold, self.clear), |(t, c)| (*t, *c));
        (t, c.unwrap_or(t))
    }
}

/// Identifies one alert.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    /// Rule name.
    pub rule: String,
    /// Site id.
    pub site: String,
    /// Node or rack, empty for site rules.
    pub target: String,
}

impl AlertKey {
    /// The alert id used in topics and APIs: `rule` or `rule.target`.
    pub fn id(&self) -> String {
        if self.target.is_empty() {
            self.rule.clone()
        } else {
            format!("{}.{}", self.rule, self.target)
        }
    }
}

/// What a partial value says about the true one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The true value is at least this (a rack's power with some meters silent).
    AtLeast,
    /// The true value is at most this (a feed's headroom with some meters silent).
    AtMost,
}

/// One rule's view of one alert at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Which alert.
    pub key: AlertKey,
    /// The value, when there is one.
    pub value: Option<f64>,
    /// Why the rule must not act on it now.
    pub suppressed: Option<String>,
    /// When the value is only a bound on the true one: which, and why. The rule acts on
    /// it only where the bound decides the condition (at least 0.97 decides `> 0.95`).
    pub partial: Option<(Bound, String)>,
}

impl Observation {
    /// An exact value, or none.
    pub fn exact(key: AlertKey, value: Option<f64>, suppressed: Option<String>) -> Self {
        Observation {
            key,
            value,
            suppressed,
            partial: None,
        }
    }
}

/// Whether `value op limit` holds for the true value, of which `value` is `bound`; `None`
/// when the bound does not decide it.
fn decide(op: Op, value: f64, limit: f64, bound: Option<Bound>) -> Option<bool> {
    let holds = op.holds(value, limit);
    match (bound, op) {
        (None, _) => Some(holds),
        (Some(Bound::AtLeast), Op::Gt | Op::Ge) | (Some(Bound::AtMost), Op::Lt | Op::Le) => {
            holds.then_some(true)
        }
        (Some(Bound::AtLeast), Op::Lt | Op::Le) | (Some(Bound::AtMost), Op::Gt | Op::Ge) => {
            (!holds).then_some(false)
        }
        (Some(_), Op::Eq | Op::Ne) => None,
    }
}

/// What each rule sees now, in one snapshot's sites (read in place: an evaluation copies
/// none of the snapshot's nodes, metrics or racks).
pub fn observe(rules: &[Rule], sites: &[SiteSnapshot], now_ms: i64) -> Vec<Observation> {
    let mut out = Vec::new();
    for rule in rules {
        for snap in sites {
            let site = &snap.view;
            if !rule.applies_to(&site.site) {
                continue;
            }
            let key = |target: &str| AlertKey {
                rule: rule.name.clone(),
                site: site.site.clone(),
                target: target.to_owned(),
            };
            match &rule.subject {
                Subject::SitePue(w) | Subject::Coverage(w) | Subject::Completeness(w) => {
                    let Some(win) = site.pue.get(w) else { continue };
                    let value = match rule.subject {
                        Subject::Coverage(_) => Some(win.coverage_it),
                        Subject::Completeness(_) => {
                            Some(win.coverage_it.min(win.coverage_facility))
                        }
                        _ => win.value,
                    };
                    let suppressed = if let Some(wait) = full_window_wait(rule, w, win) {
                        Some(wait)
                    } else if matches!(rule.subject, Subject::SitePue(_)) {
                        efficiency_suppression(
                            win.value,
                            win.quality,
                            win.coverage_it,
                            win.coverage_facility,
                            rule.min_coverage,
                        )
                    } else {
                        None
                    };
                    out.push(Observation::exact(key(""), value, suppressed));
                }
                Subject::SiteKpi { kpi, window } => {
                    let Some(win) = site.pue.get(window) else {
                        continue;
                    };
                    let Some(k) = win.kpis.get(kpi) else {
                        continue;
                    };
                    let suppressed = full_window_wait(rule, window, win).or_else(|| {
                        efficiency_suppression(
                            k.value,
                            k.quality,
                            k.coverage,
                            k.coverage,
                            rule.min_coverage,
                        )
                    });
                    out.push(Observation::exact(key(""), k.value, suppressed));
                }
                Subject::SiteTarget { kpi, window } => {
                    // Sites without a target for the figure are not judged.
                    let Some(t) = site.targets.iter().find(|t| t.target.kpi == kpi) else {
                        continue;
                    };
                    let t = &t.target;
                    let (value, suppressed) = if kpi == "occupancy" {
                        let v = site.capacity.occupancy;
                        let why = v.is_none().then(|| "no data: no occupancy".to_owned());
                        (v, why)
                    } else {
                        let Some(win) = site.pue.get(window) else {
                            continue;
                        };
                        let (v, quality, cov_it, cov_fac) = if kpi == "pue" {
                            (
                                win.value,
                                win.quality,
                                win.coverage_it,
                                win.coverage_facility,
                            )
                        } else {
                            let Some(f) = win.kpis.get(kpi) else { continue };
                            (f.value, f.quality, f.coverage, f.coverage)
                        };
                        let why = full_window_wait(rule, window, win).or_else(|| {
                            efficiency_suppression(v, quality, cov_it, cov_fac, rule.min_coverage)
                        });
                        (v, why)
                    };
                    out.push(Observation::exact(
                        key(""),
                        value.map(|v| t.gap(v)),
                        suppressed,
                    ));
                }
                Subject::PowerRatio => {
                    let p = &site.power;
                    let suppressed = efficiency_suppression(
                        p.ratio,
                        p.quality,
                        p.coverage_it,
                        p.coverage_facility,
                        rule.min_coverage,
                    );
                    out.push(Observation::exact(key(""), p.ratio, suppressed));
                }
                Subject::NodeOffline => {
                    // A retired node is gone on purpose: no alert, and a firing one resolves.
                    for n in snap.nodes.iter().filter(|n| n.state != "retired") {
                        let down = f64::from(u8::from(n.state != "online"));
                        out.push(Observation::exact(key(&n.node), Some(down), None));
                    }
                }
                Subject::StaleMeter => {
                    for n in snap
                        .nodes
                        .iter()
                        .filter(|n| n.role == Some("meter") && n.state != "retired")
                    {
                        let age = n
                            .last_reading_ms
                            .map(|t| (now_ms - t).max(0) as f64 / 1000.0);
                        out.push(Observation::exact(key(&n.node), age, None));
                    }
                }
                Subject::NodeMetric { metric, component } => {
                    // A reading is only as current as its node: the latest one of a node
                    // that has gone silent is no data, and a retired node's alerts end.
                    let state: BTreeMap<&str, &str> = snap
                        .nodes
                        .iter()
                        .map(|n| (n.node.as_str(), n.state))
                        .collect();
                    for m in snap.metric_samples() {
                        if m.metric != *metric || !m.component.starts_with(component.as_str()) {
                            continue;
                        }
                        let st = state.get(m.node.as_str()).copied().unwrap_or("online");
                        if st == "retired" {
                            continue;
                        }
                        let target = if m.component == "system" {
                            m.node.to_string()
                        } else {
                            format!("{}.{}", m.node, m.component)
                        };
                        let (value, suppressed) = if st == "online" {
                            (Some(m.value), None)
                        } else {
                            (None, Some(format!("no data: node {} is {st}", m.node)))
                        };
                        out.push(Observation::exact(key(&target), value, suppressed));
                    }
                }
                Subject::RackUtilization | Subject::RackFailoverHeadroom => {
                    let util = rule.subject == Subject::RackUtilization;
                    for r in &snap.racks {
                        // Racks the rule can apply to: a budget, or A/B feeds.
                        let (applies, value, bound) = if util {
                            (r.budget_w.is_some(), r.utilization, Bound::AtLeast)
                        } else {
                            (r.feed_w.is_some(), r.failover_headroom_w, Bound::AtMost)
                        };
                        if !applies {
                            continue;
                        }
                        let why = || r.reason.clone().unwrap_or_else(|| r.quality.to_owned());
                        let (suppressed, partial) = match (value, r.quality) {
                            (None, _) => (Some(format!("no data: {}", why())), None),
                            (Some(_), "partial") => (None, Some((bound, why()))),
                            _ => (None, None),
                        };
                        out.push(Observation {
                            key: key(&r.rack),
                            value,
                            suppressed,
                            partial,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Why a window rule waits: its window's data does not span the window yet (and the rule
/// requires it to).
fn full_window_wait(rule: &Rule, name: &str, win: &crate::engine::WindowView) -> Option<String> {
    let span = win.span_share.unwrap_or(1.0);
    (rule.require_full_window && span < 1.0).then(|| {
        format!(
            "waiting for a full {name} window: its data spans {:.1}% of it so far",
            span * 100.0
        )
    })
}

fn efficiency_suppression(
    value: Option<f64>,
    quality: &str,
    cov_it: f64,
    cov_fac: f64,
    min: f64,
) -> Option<String> {
    if value.is_none() || quality == "invalid" || quality == "no_data" {
        return Some(format!("no data: no trustworthy value (quality {quality})"));
    }
    if cov_it < min || cov_fac < min {
        return Some(format!(
            "coverage below the rule's minimum {:.0}% (IT {:.1}%, facility {:.1}%)",
            min * 100.0,
            cov_it * 100.0,
            cov_fac * 100.0
        ));
    }
    None
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Condition false.
    #[default]
    Inactive,
    /// Condition true, waiting for `for`.
    Pending,
    /// Firing.
    Firing,
}

/// The state kept per alert (persisted across restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// Phase.
    pub phase: Phase,
    /// When the current phase began (pending or firing).
    pub since_ms: i64,
    /// Last time the (hysteresis) condition held while firing.
    pub last_bad_ms: i64,
    /// Latest value.
    pub value: Option<f64>,
    /// Why the rule is suppressed now, if it is.
    pub suppressed: Option<String>,
    /// When notifications for it were last sent (for repeats).
    pub notified_ms: i64,
    /// When a rule last observed it (0: not since a restore).
    #[serde(default)]
    pub seen_ms: i64,
    /// Since when the rule has had no value it can act on (missing, untrustworthy, or a
    /// bound that does not decide); `None` while it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_since_ms: Option<i64>,
}

/// An alert no rule has observed for this long (its node retired, refused or gone, its
/// rack unconfigured) is dropped from the states — resolved first if it was firing — so
/// that the alert state file stays bounded by what is observed.
pub const UNOBSERVED_MS: i64 = 3_600_000;

/// A change worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Started firing.
    Fired,
    /// Stopped firing.
    Resolved,
}

/// Advances one alert's state. Returns the new state and the change, if any.
pub fn step(
    rule: &Rule,
    site: &str,
    prev: &AlertState,
    obs: &Observation,
    now_ms: i64,
) -> (AlertState, Option<Change>) {
    let (threshold, clear) = rule.limits(site);
    let mut s = prev.clone();
    s.value = obs.value;
    s.suppressed.clone_from(&obs.suppressed);
    let limit = if prev.phase == Phase::Firing {
        clear
    } else {
        threshold
    };
    let bound = obs.partial.as_ref().map(|(b, _)| *b);
    let verdict = match (obs.value, &obs.suppressed) {
        (Some(v), None) => decide(rule.op, v, limit, bound),
        _ => None,
    };
    let Some(bad) = verdict else {
        // No value the rule can act on: the alert keeps its phase — nothing starts, a
        // pending alert keeps waiting, a firing one keeps firing — and says why. Missing
        // data never resolves an alert.
        if s.suppressed.is_none() {
            s.suppressed = Some(match &obs.partial {
                Some((_, why)) => format!("no data: {why}, which does not decide the rule"),
                None => "no data".to_owned(),
            });
        }
        s.no_data_since_ms.get_or_insert(now_ms);
        return (s, None);
    };
    s.no_data_since_ms = None;
    match prev.phase {
        Phase::Inactive | Phase::Pending => {
            if !bad {
                s.phase = Phase::Inactive;
                return (s, None);
            }
            if prev.phase == Phase::Inactive {
                s.since_ms = now_ms;
            }
            if now_ms - s.since_ms >= rule.for_ms {
                s.phase = Phase::Firing;
                s.since_ms = now_ms;
                s.last_bad_ms = now_ms;
                s.notified_ms = now_ms;
                return (s, Some(Change::Fired));
            }
            s.phase = Phase::Pending;
            (s, None)
        }
        Phase::Firing => {
            if bad {
                s.last_bad_ms = now_ms;
                return (s, None);
            }
            if now_ms - s.last_bad_ms >= rule.keep_firing_for_ms {
                s.phase = Phase::Inactive;
                s.since_ms = now_ms;
                return (s, Some(Change::Resolved));
            }
            (s, None)
        }
    }
}

/// One transition, as notifications and the history carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Alert id (`rule` or `rule.target`).
    pub alert: String,
    /// The alert.
    pub key: AlertKey,
    /// Fired or resolved.
    pub change: Change,
    /// When.
    pub at_ms: i64,
    /// When it started firing.
    pub since_ms: i64,
    /// Value at the transition.
    pub value: Option<f64>,
    /// Threshold in force for the site.
    pub threshold: f64,
    /// Severity.
    pub severity: String,
    /// Rendered summary.
    pub summary: String,
    /// Labels: rule labels plus alertname, site, severity and target.
    pub labels: BTreeMap<String, String>,
}

/// Renders the summary template.
pub fn render(rule: &Rule, key: &AlertKey, value: Option<f64>) -> String {
    let (threshold, _) = rule.limits(&key.site);
    let window = rule.subject.window().unwrap_or_default();
    rule.summary
        .replace("{site}", &key.site)
        .replace("{target}", &key.target)
        .replace("{rule}", &rule.name)
        .replace("{severity}", &rule.severity)
        .replace("{window}", window)
        .replace("{threshold}", &format!("{threshold}"))
        .replace(
            "{value}",
            &value.map_or("n/a".to_owned(), |v| format!("{:.3}", v)),
        )
}

/// The labels notifications carry.
pub fn labels(rule: &Rule, key: &AlertKey) -> BTreeMap<String, String> {
    let mut l = rule.labels.clone();
    l.insert("alertname".into(), rule.name.clone());
    l.insert("site".into(), key.site.clone());
    l.insert("severity".into(), rule.severity.clone());
    if !key.target.is_empty() {
        l.insert("target".into(), key.target.clone());
    }
    l
}

/// Evaluates every rule: advances states and returns the transitions. Alerts whose
/// observation disappeared (a node removed) keep their state for [`UNOBSERVED_MS`]; then
/// they are dropped, a firing one resolved.
pub fn evaluate(
    rules: &[Rule],
    states: &mut BTreeMap<AlertKey, AlertState>,
    obs: &[Observation],
    now_ms: i64,
) -> Vec<Transition> {
    let by_name: BTreeMap<&str, &Rule> = rules.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut out = Vec::new();
    for o in obs {
        let Some(rule) = by_name.get(o.key.rule.as_str()) else {
            continue;
        };
        let prev = states.get(&o.key).cloned().unwrap_or_default();
        let (mut next, change) = step(rule, &o.key.site, &prev, o, now_ms);
        next.seen_ms = now_ms;
        if let Some(change) = change {
            out.push(Transition {
                alert: o.key.id(),
                key: o.key.clone(),
                change,
                at_ms: now_ms,
                since_ms: if change == Change::Fired {
                    now_ms
                } else {
                    prev.since_ms
                },
                value: o.value,
                threshold: rule.limits(&o.key.site).0,
                severity: rule.severity.clone(),
                summary: render(rule, &o.key, o.value),
                labels: labels(rule, &o.key),
            });
        }
        if next.phase == Phase::Inactive && next.suppressed.is_none() && change.is_none() {
            states.remove(&o.key);
        } else {
            states.insert(o.key.clone(), next);
        }
    }
    let mut gone = Vec::new();
    for (key, st) in states.iter_mut() {
        if st.seen_ms == 0 {
            // Restored from a state written before `seen_ms`: the clock starts now.
            st.seen_ms = now_ms;
        } else if now_ms - st.seen_ms > UNOBSERVED_MS {
            gone.push(key.clone());
        }
    }
    for key in gone {
        let Some(st) = states.remove(&key) else {
            continue;
        };
        let Some(rule) = by_name
            .get(key.rule.as_str())
            .filter(|_| st.phase == Phase::Firing)
        else {
            continue;
        };
        out.push(Transition {
            alert: key.id(),
            summary: format!("{} (no longer observed)", render(rule, &key, st.value)),
            change: Change::Resolved,
            at_ms: now_ms,
            since_ms: st.since_ms,
            value: st.value,
            threshold: rule.limits(&key.site).0,
            severity: rule.severity.clone(),
            labels: labels(rule, &key),
            key,
        });
    }
    out
}
