//! Samples the sources on their intervals and assembles one protocol-v1 batch per tick.

use crate::sources::{Source, SourceError};
use dcwatt_common::logging::RateLimiter;
use dcwatt_common::protocol::{Reading, ReadingsMessage, VERSION};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Counters the agent logs at shutdown and serves on its `/metrics`.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Batches assembled.
    pub batches_built: AtomicU64,
    /// Batches handed to the MQTT client.
    pub batches_published: AtomicU64,
    /// Batches lost: publish queue full without a spool, spool full (oldest dropped), or
    /// a spool write failure.
    pub batches_dropped: AtomicU64,
    /// Batches written to the spool while the broker was away.
    pub batches_spooled: AtomicU64,
    /// Spooled batches the broker acknowledged (PUBACK), and so taken off the spool.
    pub batches_acknowledged: AtomicU64,
    /// Syncs of the spool to the disk (batches that waited unacknowledged).
    pub spool_syncs: AtomicU64,
    /// Source reads that failed.
    pub read_errors: AtomicU64,
    /// When the last batch was built, ms since the epoch (0: none yet).
    pub last_batch_ms: AtomicU64,
    /// Batches waiting for the publisher (gauge).
    pub queued: AtomicU64,
    /// Batches in the spool, sent or not, until the broker has them (gauge).
    pub spool_batches: AtomicU64,
    /// Bytes the spool holds (gauge).
    pub spool_bytes: AtomicU64,
    /// Connected to the broker now.
    pub connected: AtomicBool,
    /// Connections made so far (a batch sent in an earlier one is not confirmed).
    pub connections: AtomicU64,
    /// Connection attempts that failed and connections lost.
    pub connection_errors: AtomicU64,
    /// Publishes the MQTT client refused (it has stopped).
    pub publish_errors: AtomicU64,
}

/// One source's reads, for `/metrics`.
#[derive(Debug, Default)]
pub struct SourceStat {
    /// Reads done.
    pub reads: AtomicU64,
    /// Reads that failed.
    pub errors: AtomicU64,
    /// Time spent reading, ns, summed.
    pub nanos: AtomicU64,
    /// The last read's duration, ns.
    pub last_nanos: AtomicU64,
}

impl SourceStat {
    fn record(&self, took: Duration, ok: bool) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.nanos.fetch_add(ns, Ordering::Relaxed);
        self.last_nanos.store(ns, Ordering::Relaxed);
    }
}

/// A source with its interval as a multiple of the agent's tick.
pub struct Scheduled {
    /// The source.
    pub source: Box<dyn Source>,
    /// Read on every `every`-th tick.
    pub every: u64,
    /// Its reads, errors and durations.
    pub stat: Arc<SourceStat>,
}

impl Scheduled {
    /// `source`, read every `every`-th tick.
    pub fn new(source: Box<dyn Source>, every: u64) -> Self {
        Scheduled {
            source,
            every,
            stat: Arc::default(),
        }
    }
}

/// Reads every source due on `tick` at the same instant `now_ms`, so that a meter's power
/// and energy share one timestamp. Failed sources are reported, the others still read.
/// When several sources offer whole-system power, only the first in `order` keeps its
/// `it_input` point.
pub fn sample(
    sources: &mut [Scheduled],
    tick: u64,
    now_ms: i64,
    order: &[String],
) -> (Vec<Reading>, Vec<(&'static str, SourceError)>) {
    let mut readings = Vec::new();
    let mut errors = Vec::new();
    let mut produced = Vec::new();
    for s in sources.iter_mut().filter(|s| tick % s.every == 0) {
        let start = readings.len();
        let began = Instant::now();
        let read = s.source.read(now_ms, &mut readings);
        s.stat.record(began.elapsed(), read.is_ok());
        if let Err(e) = read {
            errors.push((s.source.kind(), e));
        }
        produced.push((s.source.kind(), start..readings.len()));
    }
    crate::sources::keep_one_whole_system(&mut readings, &produced, order);
    (readings, errors)
}

/// Assembles a batch, with the next sequence number.
pub fn batch(
    site: &str,
    node: &str,
    seq: u64,
    now_ms: i64,
    readings: Vec<Reading>,
) -> ReadingsMessage {
    ReadingsMessage {
        v: VERSION,
        site: site.to_owned(),
        node: node.to_owned(),
        seq,
        sent_ms: now_ms,
        readings,
    }
}

/// The sampling task.
pub struct Scheduler {
    /// Sources with their multiples.
    pub sources: Vec<Scheduled>,
    /// Site id.
    pub site: String,
    /// Node id.
    pub node: String,
    /// Tick interval.
    pub interval: Duration,
    /// Where batches go (the publisher).
    pub tx: mpsc::Sender<ReadingsMessage>,
    /// Shared counters.
    pub stats: Arc<AgentStats>,
    /// Whole-system power source preference.
    pub whole_system_order: Vec<String>,
    /// Where the last sequence number is kept across restarts, if anywhere.
    pub seq_file: Option<crate::spool::NumberFile>,
    /// The last sequence number an earlier run may have used (see
    /// [`crate::spool::first_seq`]); this run goes on after it.
    pub first_seq: u64,
}

impl Scheduler {
    /// Ticks until cancelled. Sequence numbers start at 1 for each run of the agent.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut limiter = RateLimiter::new(Duration::from_secs(60));
        // Sequence numbers keep increasing across restarts when there is a place to keep
        // the last one (the spool directory); otherwise each run starts at 1.
        let mut seq = self.first_seq;
        let mut tick = 0u64;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = dcwatt_common::now_ms();
            let mut sources = std::mem::take(&mut self.sources);
            let t = tick;
            let order = self.whole_system_order.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let (readings, errors) = sample(&mut sources, t, now, &order);
                let errors: Vec<String> = errors
                    .into_iter()
                    .map(|(k, e)| format!("{k}: {e}"))
                    .collect();
                (sources, readings, errors)
            })
            .await;
            let Ok((sources, readings, errors)) = joined else {
                tracing::error!("a source panicked while reading; stopping the agent's sampling");
                break;
            };
            self.sources = sources;
            tick = tick.wrapping_add(1);
            for e in errors {
                self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(held) = limiter.allow(&e, Instant::now()) {
                    tracing::warn!(error = %e, suppressed = held, "source read failed");
                }
            }
            if readings.is_empty() {
                continue;
            }
            seq += 1;
            if let Some(file) = &mut self.seq_file {
                if let Err(e) = file.save(seq, false) {
                    if limiter.allow("seq", Instant::now()).is_some() {
                        tracing::error!(error = %e, "cannot persist the sequence number; after a restart numbering jumps past the spooled batches");
                    }
                }
            }
            self.stats.batches_built.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_batch_ms
                .store(u64::try_from(now).unwrap_or(0), Ordering::Relaxed);
            match self
                .tx
                .try_send(batch(&self.site, &self.node, seq, now, readings))
            {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = self.stats.batches_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if limiter.allow("queue full", Instant::now()).is_some() {
                        tracing::warn!(
                            dropped_total = n,
                            "publish queue full (broker unreachable?): batch dropped"
                        );
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::sim::{SimConfig, SimSource};
    use dcwatt_common::protocol::Point;

    struct Broken;
    impl Source for Broken {
        fn kind(&self) -> &'static str {
            "broken"
        }
        fn read(
            &mut self,
            _: i64,
            _: &mut Vec<dcwatt_common::protocol::Reading>,
        ) -> Result<(), SourceError> {
            Err(SourceError::Read("sensor gone".into()))
        }
    }

    fn sim() -> Box<dyn Source> {
        Box::new(SimSource::new(SimConfig::constant(Point::Cooling, 10.0)))
    }

    #[test]
    fn due_sources_read_at_one_instant_and_failures_do_not_stop_others() {
        let mut s = vec![
            Scheduled::new(sim(), 1),
            Scheduled::new(Box::new(Broken), 1),
            Scheduled::new(sim(), 3),
        ];
        let (r, e) = sample(&mut s, 0, 5_000, &[]);
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|x| x.ts_ms == 5_000));
        assert_eq!(e.len(), 1);
        let (r, _) = sample(&mut s, 1, 6_000, &[]);
        assert_eq!(r.len(), 2, "the every-3 source is not due on tick 1");
        let count = |i: usize| {
            let st = &s[i].stat;
            (
                st.reads.load(Ordering::Relaxed),
                st.errors.load(Ordering::Relaxed),
            )
        };
        assert_eq!([count(0), count(1), count(2)], [(2, 0), (2, 2), (1, 0)]);
        let b = batch("s", "n", 7, 6_000, r);
        assert_eq!((b.v, b.seq, b.sent_ms), (1, 7, 6_000));
    }
}
