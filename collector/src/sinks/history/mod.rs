//! history: the collector's own time series in one SQLite file, so that a site without
//! InfluxDB still has PUE trends and monthly energy reports.
//!
//! - Every `interval` the engine's owner hands over the snapshot of that instant and each
//!   site's closed minutes of energy (it keeps the history's cursor); raw readings come
//!   from the intake's tap. Nothing here ever holds the engine or waits in the intake.
//! - One OS thread owns the writing connection: it takes everything queued, writes it in
//!   one transaction, and prunes old rows every `prune_interval`.
//! - The API reads through read-only connections of its own (WAL mode: readers never
//!   block the writer).
//!
//! Must not: block the intake or the engine on disk.

pub mod intervals;
pub mod store;

#[cfg(test)]
mod tests;

use crate::engine::{Batch, Export, MinuteEnergy};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::{derived_rows, inventory_rows, DerivedRow, InventoryRow, Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// History settings.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// The database file.
    pub path: PathBuf,
    /// How long derived values and energy minutes are kept.
    pub derived_retention: Duration,
    /// How long raw readings are kept; zero keeps none.
    pub raw_retention: Duration,
    /// How often derived values are taken (their resolution; default one minute).
    pub interval: Duration,
    /// How often old rows are deleted.
    pub prune_interval: Duration,
    /// Raw batches queued between the intake and the writer.
    pub queue_batches: usize,
}

/// Counters shown on `/metrics`.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Raw readings written.
    pub raw_written: AtomicU64,
    /// Derived rows written.
    pub derived_written: AtomicU64,
    /// Minutes of energy written (one per site, point and minute; rewrites included).
    pub minutes_written: AtomicU64,
    /// Rows deleted by retention.
    pub pruned: AtomicU64,
    /// Transactions that failed (their rows are lost; the error is logged).
    pub write_errors: AtomicU64,
    /// Snapshots dropped because the writer was behind (shared with the engine's owner,
    /// which counts an export it could not hand over).
    pub snapshots_dropped: Arc<AtomicU64>,
}

/// What the writer thread is asked to write.
enum Job {
    Raw(Arc<Batch>),
    Snapshot {
        rows: Vec<DerivedRow>,
        minutes: Vec<(String, Vec<MinuteEnergy>)>,
        nodes: Vec<InventoryRow>,
    },
}

/// The history sink: the database, opened and checked, and its feeds.
pub struct HistorySink {
    cfg: HistoryConfig,
    /// `None` while the file cannot be opened: the writer tries again every
    /// [`REOPEN_EVERY`].
    store: Option<Store>,
    raw: Option<mpsc::Receiver<Arc<Batch>>>,
    exports: mpsc::Receiver<Export>,
    stats: Arc<HistoryStats>,
}

impl HistorySink {
    /// Opens the database at `cfg.path` and checks it; `raw` carries the intake's
    /// accepted batches (when raw readings are kept), `exports` the engine owner's
    /// snapshots and closed minutes.
    ///
    /// Never fails: a damaged file is moved aside and a new one created; a file that
    /// cannot be opened now is kept and opened again later (see [`open_store`]).
    pub fn open(
        cfg: HistoryConfig,
        raw: Option<mpsc::Receiver<Arc<Batch>>>,
        exports: mpsc::Receiver<Export>,
        stats: Arc<HistoryStats>,
    ) -> Self {
        HistorySink {
            store: open_store(&cfg.path),
            cfg,
            raw,
            exports,
            stats,
        }
    }
}

/// How long a node stays in the inventory's memory without being heard from.
pub const INVENTORY_DAYS: i64 = 7;

/// The nodes the history's inventory has heard from in the last [`INVENTORY_DAYS`], as
/// births: what a collector whose engine state was lost expects again, independently of
/// the broker's retained messages. Empty when there is no history file or it cannot be
/// read (logged).
pub fn known_nodes(
    path: &std::path::Path,
    now_ms: i64,
) -> Vec<dcwatt_common::protocol::StatusMessage> {
    if !path.exists() {
        return Vec::new();
    }
    let rows =
        Store::open_read(path).and_then(|s| s.inventory(now_ms - INVENTORY_DAYS * 86_400_000));
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot read the node inventory from the history");
            return Vec::new();
        }
    };
    rows.into_iter()
        .filter_map(|r| {
            let birth = serde_json::json!({
                "v": 1, "site": r.site, "node": r.node, "state": "online", "ts_ms": now_ms,
                "role": r.role, "rack": r.rack, "zone": r.zone, "interval_ms": r.interval_ms,
            });
            serde_json::from_value(birth).ok()
        })
        .collect()
}

/// How often the writer tries again to open a history file it could not open.
pub const REOPEN_EVERY: Duration = Duration::from_secs(30);

/// Opens the history database; a damaged one (not a database, corrupt, or of a schema
/// this dcwatt does not know) is moved aside with a timestamp and a new one created. A
/// file that cannot be opened now is kept: `None`, logged at ERROR.
pub fn open_store(path: &std::path::Path) -> Option<Store> {
    use crate::sinks::files::{classify, set_aside, Fault};
    let error = match Store::open(path) {
        Ok(s) => {
            tracing::info!(path = %path.display(), "history database open");
            return Some(s);
        }
        Err(e) => e,
    };
    let damaged = match &error {
        StoreError::Sqlite(e) => classify(e) == Fault::Damaged,
        StoreError::Schema { .. } => true,
        StoreError::Thread(_) => false,
    };
    if damaged {
        match set_aside(path, "damaged") {
            Ok(aside) => {
                tracing::error!(
                    path = %path.display(), %error, aside = %aside.display(),
                    "the history database is damaged: moved aside (its history is no longer served); starting a new one"
                );
                match Store::open(path) {
                    Ok(s) => return Some(s),
                    Err(e) => tracing::error!(
                        path = %path.display(), error = %e,
                        "cannot create a new history database; history is not written, trying again every 30 s"
                    ),
                }
            }
            Err(io) => tracing::error!(
                path = %path.display(), %error, rename = %io,
                "the history database is damaged and cannot be moved aside; history is not written, trying again every 30 s"
            ),
        }
    } else {
        tracing::error!(
            path = %path.display(), %error,
            "cannot open the history database now; it is kept, and opened again every 30 s; history is not written meanwhile"
        );
    }
    None
}

impl super::Sink for HistorySink {
    const NAME: &'static str = "history";

    /// One OS thread writes; two small tasks feed its single queue, so it needs one
    /// blocking receive only. Raw batches stop at `stop` (once the intake has stopped,
    /// what it queued is taken first); exports end when the engine's owner has handed
    /// over its last one. The thread ends once both are done.
    async fn run(self, stop: CancellationToken) {
        let HistorySink {
            cfg,
            store,
            raw,
            mut exports,
            stats,
        } = self;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(64);
        if let Some(mut raw) = raw {
            let tx = jobs_tx.clone();
            tokio::spawn(async move {
                loop {
                    let b = tokio::select! {
                        b = raw.recv() => b,
                        () = stop.cancelled() => {
                            while let Ok(b) = raw.try_recv() {
                                if tx.send(Job::Raw(b)).await.is_err() {
                                    break;
                                }
                            }
                            break;
                        }
                    };
                    let Some(b) = b else { break };
                    if tx.send(Job::Raw(b)).await.is_err() {
                        break;
                    }
                }
            });
        }
        let export_stats = stats.clone();
        tokio::spawn(async move {
            while let Some(e) = exports.recv().await {
                if e.last {
                    // At shutdown, wait for room: these are the last minutes.
                    let _ = jobs_tx.send(job_of(&e)).await;
                } else if jobs_tx.try_send(job_of(&e)).is_err() {
                    export_stats
                        .snapshots_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("history writer behind: a snapshot was dropped");
                }
            }
        });
        let writing = std::thread::Builder::new()
            .name("dcwatt-history".into())
            .spawn(move || writer(store, cfg, jobs_rx, stats));
        match writing {
            Ok(h) => {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot start the history writer"),
        }
    }
}

fn job_of(e: &Export) -> Job {
    Job::Snapshot {
        rows: e.snapshot.sites.iter().flat_map(derived_rows).collect(),
        minutes: e.minutes.clone(),
        nodes: e.snapshot.sites.iter().flat_map(inventory_rows).collect(),
    }
}

fn writer(
    mut store: Option<Store>,
    cfg: HistoryConfig,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<HistoryStats>,
) {
    let mut last_prune: Option<std::time::Instant> = None;
    let mut last_open = std::time::Instant::now();
    let mut jobs = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if store.is_none() && last_open.elapsed() >= REOPEN_EVERY {
            last_open = std::time::Instant::now();
            store = open_store(&cfg.path);
        }
        let Some(store) = store.as_mut() else {
            // Counted, never silent: these rows are lost.
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            jobs.clear();
            continue;
        };
        let (mut raw, mut derived, mut minutes) = (0u64, 0u64, 0u64);
        let result = (|| -> Result<(), StoreError> {
            store.begin()?;
            for j in &jobs {
                match j {
                    Job::Raw(b) if !cfg.raw_retention.is_zero() => {
                        raw += store.put_raw(b)? as u64;
                    }
                    Job::Raw(_) => {}
                    Job::Snapshot {
                        rows,
                        minutes: m,
                        nodes,
                    } => {
                        store.put_derived(rows)?;
                        store.put_inventory(nodes)?;
                        derived += rows.len() as u64;
                        for (site, ms) in m {
                            store.put_minutes(site, ms)?;
                            minutes += ms.len() as u64;
                        }
                    }
                }
            }
            store.commit()
        })();
        jobs.clear();
        match result {
            Ok(()) => {
                stats.raw_written.fetch_add(raw, Ordering::Relaxed);
                stats.derived_written.fetch_add(derived, Ordering::Relaxed);
                stats.minutes_written.fetch_add(minutes, Ordering::Relaxed);
            }
            Err(e) => {
                store.rollback();
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "history write failed; this batch of rows is lost");
            }
        }
        if last_prune.is_none_or(|t| t.elapsed() >= cfg.prune_interval) {
            last_prune = Some(std::time::Instant::now());
            let now = dcwatt_common::now_ms();
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            match store.prune(
                now.saturating_sub(ms(cfg.derived_retention)),
                now.saturating_sub(ms(cfg.raw_retention)),
            ) {
                Ok(n) => {
                    stats.pruned.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "history pruning failed"),
            }
        }
    }
}

impl dcwatt_common::metrics::Source for HistoryStats {
    fn encode(&self, o: &mut dcwatt_common::metrics::Exposition) {
        let h = self;
        o.counter(
            "dcwatt_history_raw_written_total",
            "Raw readings written to the history database.",
            &h.raw_written,
        );
        o.counter(
            "dcwatt_history_derived_written_total",
            "Derived rows written to the history database.",
            &h.derived_written,
        );
        o.counter_renamed("dcwatt_history_energy_rows_written_total", "dcwatt_history_minutes_written_total", "Rows of closed-minute energy per point written to the history database (rewrites of late minutes included).", &h.minutes_written);
        o.counter(
            "dcwatt_history_pruned_total",
            "Rows deleted from the history database by retention.",
            &h.pruned,
        );
        o.counter(
            "dcwatt_history_write_errors_total",
            "History transactions that failed (their rows are lost).",
            &h.write_errors,
        );
        o.counter(
            "dcwatt_history_snapshots_dropped_total",
            "Derived snapshots dropped because the history writer was behind.",
            &h.snapshots_dropped,
        );
    }
}
