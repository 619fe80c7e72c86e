//! `[intake]`: what the intake accepts and how much it queues.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct IntakeRaw {
    pub(super) sites: Vec<String>,
    pub(super) max_host_power_w: f64,
    pub(super) max_future_skew_secs: u64,
    pub(super) queue_messages: usize,
    pub(super) max_readings_per_batch: usize,
    pub(super) max_nodes: usize,
    pub(super) max_sites: usize,
    pub(super) max_zones_per_site: usize,
    pub(super) max_racks_per_site: usize,
    pub(super) max_series_per_node: usize,
    pub(super) max_clock_skew_secs: u64,
    pub(super) max_readings_per_node_per_sec: f64,
}

impl Default for IntakeRaw {
    fn default() -> Self {
        IntakeRaw {
            sites: Vec::new(),
            max_host_power_w: 20_000.0,
            max_future_skew_secs: 300,
            queue_messages: 8_192,
            max_readings_per_batch: 10_000,
            max_nodes: 100_000,
            max_sites: 1_000,
            max_zones_per_site: 1_000,
            max_racks_per_site: 20_000,
            max_series_per_node: 5_000,
            max_clock_skew_secs: 5,
            max_readings_per_node_per_sec: 100_000.0,
        }
    }
}

/// Intake validation settings.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Sites to subscribe to; empty means all.
    pub sites: Vec<String>,
    /// Largest plausible power for one host (W).
    pub max_host_power_w: f64,
    /// How far in the future a reading's timestamp may be (ms).
    pub max_future_skew_ms: i64,
    /// Messages buffered between the broker and the intake.
    pub queue_messages: usize,
    /// Largest number of readings one batch may carry.
    pub max_readings_per_batch: usize,
    /// Most nodes known over all sites; messages from further new nodes are refused.
    pub max_nodes: usize,
    /// Most sites known; messages for further new sites are refused.
    pub max_sites: usize,
    /// A batch sent further ahead of the collector's clock than this has its readings'
    /// times corrected by the difference, ms.
    pub max_clock_skew_ms: i64,
}
