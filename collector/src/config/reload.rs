//! reload: what SIGHUP changes without a restart. The configuration is read and validated
//! whole again; a configuration with problems is refused (logged, the running one kept).
//! Applied live: `[log]` level, `[alerts]` rules and their per-site overrides, `[[racks]]`,
//! `[[sites]]` and `[engine]`.
//! Any other section that changed is named in a warning: it needs a restart.
//!
//! Must not: stop the process, or apply half of a configuration.

use crate::config::CollectorConfig;
use crate::engine::{Edit, EngineConfig, RackBudget};
use dcwatt_common::live::Live;
use dcwatt_common::settings::Loader;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Sections (or `alerts.rules`) applied without a restart.
pub const LIVE_SECTIONS: &[&str] = &[
    "log",
    "alerts.rules",
    "alerts.overrides",
    "racks",
    "sites",
    "engine",
];

/// Where the configuration comes from, and how it looked when last applied.
pub struct Source {
    /// The file, when there is one.
    pub file: Option<PathBuf>,
    /// Command-line values that win over file and environment.
    pub overrides: Vec<(&'static str, String)>,
    /// Each section as last applied (see [`sections`]).
    pub applied: BTreeMap<String, String>,
}

/// Each top-level section of `l` as text, with `alerts.rules` and `alerts.overrides` apart
/// from the rest of `[alerts]`, so that a change to the rules alone is told apart.
pub fn sections(l: &Loader) -> BTreeMap<String, String> {
    let mut s = l.sections();
    if let Some(alerts) = s.remove("alerts") {
        if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(&alerts) {
            for part in ["rules", "overrides"] {
                if let Some(v) = m.remove(part) {
                    s.insert(format!("alerts.{part}"), v.to_string());
                }
            }
            s.insert(
                "alerts".to_owned(),
                serde_json::Value::Object(m).to_string(),
            );
        }
    }
    s
}

/// The values SIGHUP replaces, shared with their readers.
#[derive(Clone)]
pub struct LiveSettings {
    /// Rack budgets.
    pub racks: Arc<Live<Vec<RackBudget>>>,
    /// Alert rules.
    pub rules: Arc<Live<Vec<crate::alerts::Rule>>>,
    /// Each site's time zone.
    pub site_zones: Arc<Live<BTreeMap<String, crate::zone::SiteZone>>>,
    /// The engine's settings as the sinks see them.
    pub engine_cfg: Arc<Live<EngineConfig>>,
    /// The engine's owner, which applies new engine settings.
    pub edits: mpsc::Sender<(Edit, oneshot::Sender<crate::engine::Edited>)>,
}

impl LiveSettings {
    /// The live parts of `cfg` as started; engine settings go to the engine's owner.
    pub fn new(
        cfg: &CollectorConfig,
        edits: mpsc::Sender<(Edit, oneshot::Sender<crate::engine::Edited>)>,
    ) -> Self {
        LiveSettings {
            racks: Arc::new(Live::new(cfg.racks.clone())),
            rules: Arc::new(Live::new(rules_of(cfg))),
            site_zones: Arc::new(Live::new(cfg.site_zones.clone())),
            engine_cfg: Arc::new(Live::new(cfg.engine.clone())),
            edits,
        }
    }

    /// Applies the live parts of `cfg`, and returns once the engine's owner has taken its
    /// new settings and published a snapshot that shows them (so a reader asking after the
    /// reload sees the new rack budgets), or after [`EDIT_WAIT`], logged.
    pub async fn apply(&self, cfg: &CollectorConfig) {
        self.racks.set(cfg.racks.clone());
        self.rules.set(rules_of(cfg));
        self.site_zones.set(cfg.site_zones.clone());
        self.engine_cfg.set(cfg.engine.clone());
        let (reply, answer) = oneshot::channel();
        let edit = (Edit::Config(cfg.engine.clone()), reply);
        let taken = tokio::time::timeout(EDIT_WAIT, async {
            self.edits.send(edit).await.is_ok() && answer.await.is_ok()
        })
        .await;
        match taken {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!("the engine is not taking edits: [engine] settings not applied");
            }
            Err(_) => tracing::warn!(
                wait_secs = EDIT_WAIT.as_secs(),
                "the engine has not taken the new [engine] settings yet; they apply when it does"
            ),
        }
    }
}

/// The alert rules of `cfg` (none when alerting is off).
fn rules_of(cfg: &CollectorConfig) -> Vec<crate::alerts::Rule> {
    cfg.alerts
        .as_ref()
        .map(|a| a.rules.clone())
        .unwrap_or_default()
}

/// How long a reload waits for the engine's owner to take new settings.
pub const EDIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Live sections that changed and were applied.
    pub applied: Vec<String>,
    /// Sections that changed but need a restart.
    pub needs_restart: Vec<String>,
}

/// Reads the configuration again and applies it: `Ok` with what changed, or `Err` with the
/// problems (nothing applied).
///
/// # Errors
/// The configuration has problems.
pub async fn reload(
    src: &mut Source,
    live: &LiveSettings,
    log: Option<&dcwatt_common::logging::LogHandle>,
) -> Result<Outcome, dcwatt_common::settings::Problems> {
    let loader = Loader::with_overrides(src.file.as_deref(), &src.overrides)?;
    let cfg = CollectorConfig::from_loader(&loader)?;
    let now = sections(&loader);
    let mut out = Outcome::default();
    let keys: std::collections::BTreeSet<&String> = now.keys().chain(src.applied.keys()).collect();
    for key in keys {
        if now.get(key) == src.applied.get(key) {
            continue;
        }
        if LIVE_SECTIONS.contains(&key.as_str()) {
            out.applied.push(key.clone());
        } else {
            out.needs_restart.push(key.clone());
        }
    }
    live.apply(&cfg).await;
    if let Some(h) = log {
        h.apply_level(&cfg.log.level);
    }
    // What needs a restart keeps its old value in the comparison, so it is named again at
    // the next reload until the process restarts.
    for key in &out.applied {
        match now.get(key) {
            Some(v) => src.applied.insert(key.clone(), v.clone()),
            None => src.applied.remove(key),
        };
    }
    Ok(out)
}

/// [`reload`], logged: what was applied, what needs a restart, or why nothing was.
pub async fn reload_and_log(
    src: &mut Source,
    live: &LiveSettings,
    log: Option<&dcwatt_common::logging::LogHandle>,
) {
    match reload(src, live, log).await {
        Ok(out) => {
            if out.applied.is_empty() && out.needs_restart.is_empty() {
                tracing::info!("configuration reloaded: nothing changed");
            } else {
                tracing::info!(
                    applied = %out.applied.join(", "),
                    "configuration reloaded"
                );
            }
            if !out.needs_restart.is_empty() {
                tracing::warn!(
                    sections = %out.needs_restart.join(", "),
                    "configuration changed where a reload cannot apply it: restart the collector to apply these"
                );
            }
        }
        Err(problems) => tracing::error!(
            problems = %problems.to_string().trim_end(),
            "configuration not reloaded: it has problems; the running configuration stays"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_overrides_are_told_apart_from_the_rest_of_alerts() {
        let l = Loader::from_toml(
            "[alerts]\nenabled = true\n[[alerts.rules]]\nname = \"x\"\n[[alerts.overrides]]\nsite = \"a\"\n",
        )
        .unwrap();
        let s = sections(&l);
        assert!(s["alerts.rules"].contains("\"x\""), "{s:?}");
        assert!(s["alerts.overrides"].contains("\"a\""), "{s:?}");
        assert!(!s["alerts"].contains("rules"), "{s:?}");
        for live in ["alerts.rules", "alerts.overrides"] {
            assert!(LIVE_SECTIONS.contains(&live));
        }
        assert!(
            !LIVE_SECTIONS.contains(&"alerts"),
            "webhooks and sinks need a restart"
        );
    }
}
