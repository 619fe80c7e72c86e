//! history: the collector's own time series in one SQLite file, so that a site without
//! InfluxDB still has PUE trends and monthly energy reports.
//!
//! - Every `interval` a task takes, under the engine lock, each site's derived values and
//!   its closed minutes of energy, and queues them; raw readings come from the intake's
//!   tap. Nothing here waits on disk while holding the engine or the intake.
//! - One OS thread owns the writing connection: it takes everything queued, writes it in
//!   one transaction, and prunes old rows every `prune_interval`.
//! - The API reads through read-only connections of its own (WAL mode: readers never
//!   block the writer).
//!
//! Must not: block the intake or the engine on disk.

pub mod store;

#[cfg(test)]
mod tests;

use crate::alerts::notify::RackBudget;
use crate::engine::{Engine, MinuteEnergy};
use crate::sink::{snapshot, Batch};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{derived_rows, DerivedRow, Store, StoreError};
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
    /// Snapshots dropped because the writer was behind.
    pub snapshots_dropped: AtomicU64,
}

/// What the writer thread is asked to write.
enum Job {
    Raw(Arc<Batch>),
    Snapshot {
        rows: Vec<DerivedRow>,
        minutes: Vec<(String, Vec<MinuteEnergy>)>,
    },
}

/// Opens the database, checks it, and starts the writer thread and the snapshot task.
/// Returns the writer's join handle (it ends once both queues are closed).
///
/// # Errors
/// The database cannot be opened.
pub fn start(
    cfg: HistoryConfig,
    raw: Option<mpsc::Receiver<Arc<Batch>>>,
    engine: Arc<Mutex<Engine>>,
    racks: Arc<crate::live::Live<Vec<RackBudget>>>,
    stats: Arc<HistoryStats>,
    cancel: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let store = Store::open(&cfg.path)?;
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(64);
    // Raw batches are forwarded into the writer's single queue by a small task, so the
    // writer thread needs one blocking receive only.
    if let Some(mut raw) = raw {
        let tx = jobs_tx.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                let b = tokio::select! {
                    b = raw.recv() => b,
                    // The intake has stopped: take what it queued, then end.
                    _ = stop.cancelled() => {
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
    tokio::spawn(snapshots(
        cfg.interval,
        engine,
        racks,
        jobs_tx,
        stats.clone(),
        cancel,
    ));
    let handle = std::thread::Builder::new()
        .name("dcwatt-history".into())
        .spawn(move || writer(store, cfg, jobs_rx, stats))?;
    Ok(handle)
}

async fn snapshots(
    every: Duration,
    engine: Arc<Mutex<Engine>>,
    racks: Arc<crate::live::Live<Vec<RackBudget>>>,
    tx: mpsc::Sender<Job>,
    stats: Arc<HistoryStats>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        let now = dcwatt_common::now_ms();
        let job = {
            let Ok(mut e) = engine.lock() else {
                tracing::error!("engine state poisoned; history snapshots stop");
                return;
            };
            let rows = snapshot(&e, &racks.get(), now)
                .iter()
                .flat_map(derived_rows)
                .collect();
            let minutes = e
                .site_ids()
                .into_iter()
                .map(|s| {
                    let m = e.export_minutes(&s, now);
                    (s, m)
                })
                .collect();
            Job::Snapshot { rows, minutes }
        };
        if last {
            // At shutdown, wait for room: these are the last minutes.
            let _ = tx.send(job).await;
            return;
        }
        if tx.try_send(job).is_err() {
            stats.snapshots_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("history writer behind: a snapshot was dropped");
        }
    }
}

fn writer(
    mut store: Store,
    cfg: HistoryConfig,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<HistoryStats>,
) {
    let mut last_prune: Option<std::time::Instant> = None;
    let mut jobs = Vec::with_capacity(256);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (mut raw, mut derived, mut minutes) = (0u64, 0u64, 0u64);
        let result = (|| -> Result<(), StoreError> {
            store.begin()?;
            for j in &jobs {
                match j {
                    Job::Raw(b) if !cfg.raw_retention.is_zero() => {
                        raw += store.put_raw(b)? as u64;
                    }
                    Job::Raw(_) => {}
                    Job::Snapshot { rows, minutes: m } => {
                        store.put_derived(rows)?;
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
