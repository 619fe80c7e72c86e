//! Sources: one module per kind of thing the agent can read, behind one [`Source`] trait
//! and one tagged configuration enum (`type = "sim"`).
//!
//! Sources know nothing of MQTT or batches: they turn a moment into readings in SI units,
//! converting vendor units at this edge, once.

pub mod sim;
pub mod sysinfo;

use dcwatt_common::protocol::Reading;
use dcwatt_common::settings::Problems;
use serde::Deserialize;

/// Why a read failed. The scheduler logs it (rate-limited) and carries on with the other
/// sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The thing to read is not there on this host.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Reading failed this time.
    #[error("read failed: {0}")]
    Read(String),
}

/// Something the agent can sample.
pub trait Source: Send {
    /// The source type name, as in configuration and in each reading's `source`.
    fn kind(&self) -> &'static str;

    /// Appends the readings for the instant `now_ms` to `out`.
    ///
    /// # Errors
    /// The source could not be read this time.
    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError>;
}

/// Whether a source type can read on this host, as `dcwatt-agent probe` prints it.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Source type name.
    pub kind: &'static str,
    /// True when it can read here.
    pub available: bool,
    /// What it found, or exactly what is missing and how to fix it.
    pub detail: String,
}

/// `[[sources]]` entries, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// CPU, load, memory and disk through the sysinfo crate.
    Sysinfo(sysinfo::SysinfoConfig),
    /// A deterministic simulated power meter.
    Sim(sim::SimConfig),
}

impl SourceConfig {
    /// What a host runs when no source is configured.
    pub fn default_host() -> Self {
        SourceConfig::Sysinfo(sysinfo::SysinfoConfig::default())
    }

    /// The source type name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sysinfo(_) => sysinfo::KIND,
            SourceConfig::Sim(_) => sim::KIND,
        }
    }

    /// The source's own interval, when it has one.
    pub fn interval_secs(&self) -> Option<u64> {
        match self {
            SourceConfig::Sysinfo(c) => c.interval_secs,
            SourceConfig::Sim(c) => c.interval_secs,
        }
    }

    /// Records every problem with this entry under `path`.
    pub fn validate(&self, path: &str, agent_interval_secs: u64, p: &mut Problems) {
        if let Some(i) = self.interval_secs() {
            if i == 0 || agent_interval_secs == 0 || i % agent_interval_secs != 0 {
                p.push(
                    format!("{path}.interval_secs"),
                    format!("must be a positive multiple of the agent's interval_secs ({agent_interval_secs})"),
                );
            }
        }
        match self {
            SourceConfig::Sysinfo(_) => {}
            SourceConfig::Sim(c) => c.validate(path, p),
        }
    }

    /// Builds the source.
    ///
    /// # Errors
    /// The source cannot start on this host.
    pub fn build(&self) -> Result<Box<dyn Source>, SourceError> {
        Ok(match self {
            SourceConfig::Sysinfo(_) => Box::new(sysinfo::SysinfoSource::new()?),
            SourceConfig::Sim(c) => Box::new(sim::SimSource::new(c.clone())),
        })
    }
}

/// Probes every source type this build knows.
pub fn probe_all() -> Vec<Probe> {
    vec![sysinfo::probe(), sim::probe()]
}
