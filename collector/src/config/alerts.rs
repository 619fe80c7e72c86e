//! `[alerts]`: rules (with their per-site overrides), the webhook and Alertmanager.

use super::*;

/// The default alert rules, used when the configuration has none.
pub const DEFAULT_RULES: &str = include_str!("../../../configs/alert-rules.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct AlertsRaw {
    pub(super) enabled: bool,
    pub(super) evaluate_interval_secs: u64,
    pub(super) repeat_interval_secs: u64,
    pub(super) state_file: std::path::PathBuf,
    pub(super) mqtt: bool,
    pub(super) webhook: Option<WebhookRaw>,
    pub(super) alertmanager: Option<AlertmanagerRaw>,
    pub(super) rules: Option<Vec<RuleRaw>>,
    pub(super) overrides: Vec<OverrideRaw>,
}

impl Default for AlertsRaw {
    fn default() -> Self {
        AlertsRaw {
            enabled: true,
            evaluate_interval_secs: 10,
            repeat_interval_secs: 3600,
            state_file: "dcwatt-alerts.json".into(),
            mqtt: true,
            webhook: None,
            alertmanager: None,
            rules: None,
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookRaw {
    pub(super) url: String,
    pub(super) secret_file: Option<std::path::PathBuf>,
    #[serde(default = "five")]
    pub(super) timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertmanagerRaw {
    pub(super) url: String,
    #[serde(default = "five")]
    pub(super) timeout_secs: u64,
    #[serde(default = "sixty")]
    pub(super) resend_interval_secs: u64,
}

pub(super) fn five() -> u64 {
    5
}

pub(super) fn sixty() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleRaw {
    pub(super) name: String,
    pub(super) subject: String,
    pub(super) window: Option<String>,
    /// For `site_kpi`: which figure.
    pub(super) kpi: Option<String>,
    pub(super) metric: Option<String>,
    pub(super) component: Option<String>,
    pub(super) op: crate::alerts::Op,
    pub(super) threshold: f64,
    pub(super) clear: Option<f64>,
    #[serde(default)]
    pub(super) for_secs: u64,
    #[serde(default)]
    pub(super) keep_firing_for_secs: u64,
    #[serde(default = "warning")]
    pub(super) severity: String,
    #[serde(default = "min_cov")]
    pub(super) min_coverage: f64,
    #[serde(default = "yes")]
    pub(super) require_full_window: bool,
    #[serde(default)]
    pub(super) labels: std::collections::BTreeMap<String, String>,
    pub(super) summary: Option<String>,
    #[serde(default)]
    pub(super) sites: Vec<String>,
}

pub(super) fn warning() -> String {
    "warning".to_owned()
}

pub(super) fn yes() -> bool {
    true
}

pub(super) fn min_cov() -> f64 {
    0.95
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideRaw {
    pub(super) site: String,
    pub(super) rule: String,
    pub(super) threshold: f64,
    pub(super) clear: Option<f64>,
}

pub(super) fn rule_from_raw(
    r: RuleRaw,
    path: &str,
    p: &mut Problems,
) -> Option<crate::alerts::Rule> {
    use crate::alerts::Subject;
    let before = p.0.len();
    if validate_id(&r.name).is_err() {
        p.push(
            format!("{path}.name"),
            "must match [A-Za-z0-9_.-]{1,64} (it is part of the alert's MQTT topic)",
        );
    }
    let window = |p: &mut Problems| match r.window.as_deref() {
        Some(w) if crate::engine::WINDOWS.iter().any(|(n, _)| *n == w) => Some(w.to_owned()),
        other => {
            p.push(
                format!("{path}.window"),
                format!("{other:?} is not one of 1m, 15m, 1h, 24h, 7d, 30d"),
            );
            None
        }
    };
    let kpi_named = |names: &[&str], p: &mut Problems| match r.kpi.as_deref() {
        Some(k) if names.contains(&k) => Some(k.to_owned()),
        other => {
            p.push(
                format!("{path}.kpi"),
                format!("{other:?} is not one of {}", names.join(", ")),
            );
            None
        }
    };
    let subject = match r.subject.as_str() {
        "site_pue" => window(p).map(Subject::SitePue),
        "site_target" => {
            let names = crate::engine::targets::FIGURES.map(|(k, _)| k);
            match (kpi_named(&names, p), window(p)) {
                (Some(kpi), Some(window)) => Some(Subject::SiteTarget { kpi, window }),
                _ => None,
            }
        }
        "site_kpi" => match (kpi_named(&crate::engine::kpi::FIGURES, p), window(p)) {
            (Some(kpi), Some(window)) => Some(Subject::SiteKpi { kpi, window }),
            _ => None,
        },
        "coverage" => window(p).map(Subject::Coverage),
        "completeness" => window(p).map(Subject::Completeness),
        "power_ratio" => Some(Subject::PowerRatio),
        "node_offline" => Some(Subject::NodeOffline),
        "stale_meter" => Some(Subject::StaleMeter),
        "inlet_temperature" => Some(Subject::NodeMetric {
            metric: "temp_c".into(),
            component: "inlet".into(),
        }),
        "ups_on_battery" => Some(Subject::NodeMetric {
            metric: "ups_output_source".into(),
            component: String::new(),
        }),
        "node_metric" => match &r.metric {
            Some(m) => Some(Subject::NodeMetric {
                metric: m.clone(),
                component: r.component.clone().unwrap_or_default(),
            }),
            None => {
                p.push(format!("{path}.metric"), "node_metric needs a metric");
                None
            }
        },
        "rack_power_utilization" => Some(Subject::RackUtilization),
        "rack_failover_headroom" => Some(Subject::RackFailoverHeadroom),
        other => {
            p.push(
                format!("{path}.subject"),
                format!("unknown subject {other:?}"),
            );
            None
        }
    };
    if !r.threshold.is_finite() || r.clear.is_some_and(|c| !c.is_finite()) {
        p.push(format!("{path}.threshold"), "must be a finite number");
    }
    if !matches!(r.severity.as_str(), "info" | "warning" | "critical") {
        p.push(
            format!("{path}.severity"),
            "must be info, warning or critical",
        );
    }
    if !(0.0..=1.0).contains(&r.min_coverage) {
        p.push(format!("{path}.min_coverage"), "must be between 0 and 1");
    }
    if p.0.len() > before {
        return None;
    }
    let summary = r.summary.unwrap_or_else(|| {
        format!(
            "{} on {{site}} {{target}}: {{value}} (threshold {{threshold}})",
            r.name
        )
    });
    Some(crate::alerts::Rule {
        name: r.name,
        subject: subject?,
        op: r.op,
        threshold: r.threshold,
        clear: r.clear,
        for_ms: (r.for_secs.min(86_400 * 30) * 1000) as i64,
        keep_firing_for_ms: (r.keep_firing_for_secs.min(86_400 * 30) * 1000) as i64,
        severity: r.severity,
        min_coverage: r.min_coverage,
        require_full_window: r.require_full_window,
        labels: r.labels,
        summary,
        sites: r.sites,
        overrides: Default::default(),
    })
}

pub(super) fn alerts_config(
    a: AlertsRaw,
    p: &mut Problems,
) -> Option<crate::alerts::notify::AlertsConfig> {
    use crate::alerts::notify::{AlertmanagerConfig, AlertsConfig, WebhookConfig};
    use std::time::Duration;
    let raw_rules = match a.rules {
        Some(r) => r,
        None => Loader::from_toml(DEFAULT_RULES)
            .ok()
            .and_then(|l| l.get_opt::<Vec<RuleRaw>>("alerts.rules", p))
            .unwrap_or_default(),
    };
    let mut rules: Vec<crate::alerts::Rule> = raw_rules
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| rule_from_raw(r, &format!("alerts.rules[{i}]"), p))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for r in &rules {
        if !names.insert(r.name.clone()) {
            p.push("alerts.rules", format!("rule name {:?} used twice", r.name));
        }
    }
    for (i, o) in a.overrides.iter().enumerate() {
        match rules.iter_mut().find(|r| r.name == o.rule) {
            Some(r) => {
                r.overrides.insert(o.site.clone(), (o.threshold, o.clear));
            }
            None => p.push(
                format!("alerts.overrides[{i}].rule"),
                format!("no rule named {:?}", o.rule),
            ),
        }
    }
    if !(1..=3600).contains(&a.evaluate_interval_secs) {
        p.push("alerts.evaluate_interval_secs", "must be 1..=3600");
    }
    let webhook = a.webhook.map(|w| {
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            p.push("alerts.webhook.url", "must be an http:// or https:// URL");
        }
        let secret = match &w.secret_file {
            Some(f) => match dcwatt_common::secret::Secret::from_file(f) {
                Ok(s) => Some(s),
                Err(e) => {
                    p.push(
                        "alerts.webhook.secret_file",
                        format!("cannot read {}: {e}", f.display()),
                    );
                    None
                }
            },
            None => std::env::var("DCWATT_WEBHOOK_SECRET")
                .ok()
                .map(dcwatt_common::secret::Secret::new),
        };
        WebhookConfig {
            url: w.url,
            secret,
            timeout: Duration::from_secs(w.timeout_secs.clamp(1, 120)),
        }
    });
    let alertmanager = a.alertmanager.map(|m| {
        if !(m.url.starts_with("http://") || m.url.starts_with("https://")) {
            p.push(
                "alerts.alertmanager.url",
                "must be an http:// or https:// URL",
            );
        }
        AlertmanagerConfig {
            url: m.url,
            timeout: Duration::from_secs(m.timeout_secs.clamp(1, 120)),
            resend: Duration::from_secs(m.resend_interval_secs.clamp(1, 240)),
        }
    });
    a.enabled.then(|| AlertsConfig {
        rules,
        interval: Duration::from_secs(a.evaluate_interval_secs.max(1)),
        repeat: Duration::from_secs(a.repeat_interval_secs.max(1)),
        state_file: a.state_file,
        mqtt: a.mqtt,
        webhook,
        alertmanager,
    })
}
