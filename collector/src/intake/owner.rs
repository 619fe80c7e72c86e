//! The engine's owner: the one task that holds the engine. It applies the intake's
//! batches and the operators' edits, and on every tick publishes an immutable
//! [`Snapshot`] that every output reads without locking anything. It also hands the
//! history its closed minutes (keeping the history's cursor, outside the engine) and the
//! state sink the engine encoded for saving (never a copy of the engine: a save costs the
//! size of its file, not a second engine).

use super::{Intake, RawMessage};
use crate::engine::{Edit, EncodedEngine, Engine, Export, MinuteCursor, RackBudget, Snapshot};
use dcwatt_common::live::Live;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// An edit and where its outcome goes.
pub type EditRequest = (Edit, oneshot::Sender<crate::engine::Edited>);

/// How often a snapshot is published unless configured otherwise.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Messages taken per turn of the loop (and per snapshot check).
const TURN: usize = 512;

/// Where the owner's outputs go.
pub struct Outlets {
    /// The latest snapshot.
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    /// Rack budgets (a reload may replace them).
    pub racks: Arc<Live<Vec<RackBudget>>>,
    /// How often a snapshot is taken.
    pub every: Duration,
    /// The engine encoded every interval, for the state sink.
    pub state: Option<(Duration, watch::Sender<Option<Arc<EncodedEngine>>>)>,
    /// Closed minutes and a snapshot every interval, for the history.
    pub export: Option<ExportOutlet>,
}

/// The history's feed.
pub struct ExportOutlet {
    /// How often.
    pub every: Duration,
    /// Where to.
    pub tx: mpsc::Sender<Export>,
    /// Counts an export that found the queue full (its minutes follow with the next).
    pub dropped: Arc<AtomicU64>,
}

/// The engine, the intake that feeds it, and its outlets.
pub struct Owner {
    engine: Engine,
    intake: Intake,
    out: Outlets,
    cursors: HashMap<String, MinuteCursor>,
}

impl Owner {
    /// An owner of `engine`, fed by `intake`.
    pub fn new(engine: Engine, intake: Intake, out: Outlets) -> Self {
        Owner {
            engine,
            intake,
            out,
            cursors: HashMap::new(),
        }
    }

    /// Applies messages, now.
    pub fn apply(&mut self, msgs: impl Iterator<Item = RawMessage>) {
        let now = dcwatt_common::now_ms();
        for m in msgs {
            self.intake.handle_message(&mut self.engine, m, now);
        }
    }

    /// Takes and publishes a snapshot.
    pub fn publish(&self) {
        let started = std::time::Instant::now();
        let now = dcwatt_common::now_ms();
        let mut snap = Snapshot::take(&self.engine, &self.out.racks.get(), now);
        snap.fleet = self.intake.fleet_view(now);
        // Readings wait while a snapshot is taken: at ten thousand hosts this is what an
        // ingest latency's tail is made of (docs/benchmarks.md).
        snap.took_s = started.elapsed().as_secs_f64();
        self.out.snapshots.send_replace(Arc::new(snap));
    }

    fn save_copy(&self) {
        if let Some((_, tx)) = &self.out.state {
            let taken_ms = dcwatt_common::now_ms();
            let mut cbor = Vec::new();
            let cbor = match ciborium::into_writer(&self.engine, &mut cbor) {
                Ok(()) => Ok(cbor),
                Err(e) => Err(e.to_string()),
            };
            tx.send_replace(Some(Arc::new(EncodedEngine { taken_ms, cbor })));
        }
    }

    /// The closed minutes since each site's cursor; the cursors move on only once the
    /// export is handed over, so a history that is behind loses nothing.
    async fn export(&mut self, wait: bool) {
        let Some(out) = &self.out.export else {
            return;
        };
        let now = dcwatt_common::now_ms();
        let mut cursors = Vec::new();
        let mut minutes = Vec::new();
        for site in self.engine.site_ids() {
            let cur = self.cursors.get(&site).copied().unwrap_or_default();
            let (m, next) = self.engine.closed_minutes(&site, cur, now);
            cursors.push((site.clone(), next));
            minutes.push((site, m));
        }
        let export = Export {
            snapshot: self.out.snapshots.borrow().clone(),
            minutes,
            last: wait,
        };
        let sent = if wait {
            out.tx.send(export).await.is_ok()
        } else {
            out.tx.try_send(export).is_ok()
        };
        if sent {
            self.cursors.extend(cursors);
        } else {
            out.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs until the queue closes or `stop`: then takes what is still queued, publishes
    /// a last snapshot, hands over the last minutes and the last copy, and returns.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<RawMessage>,
        mut edits: mpsc::Receiver<EditRequest>,
        stop: CancellationToken,
    ) {
        let ticker = |d: Duration| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let never = Duration::from_secs(86_400 * 365);
        let mut snap_tick = ticker(self.out.every);
        let mut state_tick = ticker(self.out.state.as_ref().map_or(never, |s| s.0));
        let mut export_tick = ticker(self.out.export.as_ref().map_or(never, |e| e.every));
        // The first tick of an interval is immediate: nothing to save or export yet.
        state_tick.tick().await;
        export_tick.tick().await;
        let mut batch = Vec::with_capacity(TURN);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                n = rx.recv_many(&mut batch, TURN) => {
                    if n == 0 {
                        break;
                    }
                    self.apply(batch.drain(..));
                }
                Some((edit, reply)) = edits.recv() => {
                    let lasting = matches!(edit, Edit::Contract { .. } | Edit::Withdraw { .. });
                    let done = self.engine.edit(edit);
                    // What the edit changed is visible as soon as it is answered, and an
                    // entered contract is in the next state file at once.
                    self.publish();
                    if lasting && done.is_ok() {
                        self.save_copy();
                    }
                    let _ = reply.send(done);
                }
                _ = snap_tick.tick() => {
                    self.engine.tick(dcwatt_common::now_ms());
                    self.publish();
                }
                _ = state_tick.tick() => self.save_copy(),
                _ = export_tick.tick() => self.export(false).await,
            }
        }
        // Take what was queued when asked to stop (bounded: the embedded broker may still
        // be sending).
        for _ in 0..rx.max_capacity() {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        self.apply(batch.drain(..));
        self.publish();
        self.export(true).await;
        self.save_copy();
    }
}
