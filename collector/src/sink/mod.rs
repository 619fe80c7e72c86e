//! sinks: where the collector's stream goes besides the engine — InfluxDB (the v2 write
//! API) and the embedded history (SQLite). The intake hands each accepted batch to every
//! sink's bounded queue without waiting: a full queue drops the batch for that sink and
//! counts it, so a slow database never slows the PUE.
//!
//! Must not: block the intake, hold the engine lock while doing I/O.

pub mod influx;
pub mod line;
pub mod schema;

use crate::alerts::notify::{rack_views_with_load, RackBudget};
use crate::alerts::RackView;
use crate::engine::{Engine, SiteView};
use dcwatt_common::protocol::Reading;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// One accepted batch, as the sinks see it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Site.
    pub site: String,
    /// Node.
    pub node: String,
    /// The node's rack, from its birth.
    pub rack: Option<String>,
    /// The node's zone, from its birth.
    pub zone: Option<String>,
    /// The readings that passed validation.
    pub readings: Vec<Reading>,
}

/// One site's derived values at one instant.
#[derive(Debug, Clone)]
pub struct SiteSnapshot {
    /// The site view (live power, PUE per window, counts, capacity).
    pub view: SiteView,
    /// Rack power, budget and utilization.
    pub racks: Vec<RackView>,
}

/// Every site's derived values now, taken under one engine lock.
pub fn snapshot(engine: &Engine, budgets: &[RackBudget], now_ms: i64) -> Vec<SiteSnapshot> {
    engine
        .site_ids()
        .iter()
        .filter_map(|id| {
            let view = engine.site_view(id, now_ms)?;
            let racks = rack_views_with_load(
                id,
                &engine.rack_power(id, now_ms),
                &engine.rack_loads(id, now_ms),
                budgets,
            );
            Some(SiteSnapshot { view, racks })
        })
        .collect()
}

/// A sink's queue, with what it had to drop.
#[derive(Debug, Clone)]
pub struct Tap {
    tx: mpsc::Sender<Arc<Batch>>,
    dropped_readings: Arc<AtomicU64>,
}

impl Tap {
    /// A queue of `capacity` batches; the receiver goes to the sink.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Arc<Batch>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Tap {
                tx,
                dropped_readings: Arc::default(),
            },
            rx,
        )
    }

    /// Hands a batch over without waiting; a full or closed queue counts its readings.
    pub fn offer(&self, batch: &Arc<Batch>) {
        if self.tx.try_send(batch.clone()).is_err() {
            self.dropped_readings
                .fetch_add(batch.readings.len() as u64, Ordering::Relaxed);
        }
    }

    /// Readings dropped because the sink's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped_readings.load(Ordering::Relaxed)
    }

    /// Batches waiting in the queue.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The sinks the intake feeds.
#[derive(Debug, Clone, Default)]
pub struct Taps {
    /// InfluxDB, when configured.
    pub influx: Option<Tap>,
    /// The embedded history's raw readings, when kept.
    pub history: Option<Tap>,
}

impl Taps {
    /// True when no sink wants readings.
    pub fn is_empty(&self) -> bool {
        self.influx.is_none() && self.history.is_none()
    }

    /// Offers a batch to every sink.
    pub fn offer(&self, batch: Batch) {
        let batch = Arc::new(batch);
        for t in [&self.influx, &self.history].into_iter().flatten() {
            t.offer(&batch);
        }
    }
}

/// What the API and `/metrics` know about the sinks.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// The intake's taps (for their queue depth and drops).
    pub taps: Taps,
    /// InfluxDB counters, when the sink runs.
    pub influx: Option<Arc<influx::InfluxStats>>,
    /// The history database and its counters, when it runs.
    pub history: Option<(std::path::PathBuf, Arc<crate::history::HistoryStats>)>,
    /// The engine's settings, for periods computed from the history by the same rules
    /// (replaced on reload).
    pub engine: Arc<crate::live::Live<crate::engine::EngineConfig>>,
    /// Engine state saves, when enabled.
    pub state: Option<Arc<crate::state::StateStats>>,
    /// Each site's offset from UTC, seconds (calendar periods).
    pub site_offsets: Arc<crate::live::Live<std::collections::BTreeMap<String, i32>>>,
}

impl Sinks {
    /// How the IT level of `site` is picked for periods computed from the history: the
    /// same rule as the engine's.
    pub fn level_rule(&self, site: &str) -> crate::engine::LevelRule {
        self.engine.get().level_rule(site)
    }
}
