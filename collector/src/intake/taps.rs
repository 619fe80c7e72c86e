//! Taps: the bounded queues through which the intake hands every accepted batch to the
//! outputs that want raw readings (InfluxDB, the history), without waiting. A full queue
//! drops the batch for that output and counts its readings, so a slow database never slows
//! the PUE.

use crate::engine::Batch;
use dcwatt_common::metrics::{Exposition, Source};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

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

impl Source for Taps {
    fn encode(&self, o: &mut Exposition) {
        let taps = [("influx", &self.influx), ("history", &self.history)];
        if taps.iter().all(|(_, t)| t.is_none()) {
            return;
        }
        const DROPPED: &str = "dcwatt_sink_queue_dropped_total";
        o.family(
            DROPPED,
            "counter",
            "Readings a sink's full queue refused (the sink was behind), by sink.",
        );
        for (name, t) in taps {
            if let Some(t) = t {
                o.sample(DROPPED, &format!("sink=\"{name}\""), t.dropped());
            }
        }
        const DEPTH: &str = "dcwatt_sink_queue_batches";
        o.family(
            DEPTH,
            "gauge",
            "Batches waiting in a sink's queue, by sink.",
        );
        for (name, t) in taps {
            if let Some(t) = t {
                o.sample(DEPTH, &format!("sink=\"{name}\""), t.depth());
            }
        }
    }
}
