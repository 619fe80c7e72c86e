//! sinks: where the collector's results go besides its API — InfluxDB ([`influx`]), the
//! embedded history ([`history`]), the engine's saved state ([`state`]), retained site
//! summaries on MQTT ([`summary`]), and the MQTT client the collector publishes with
//! ([`publish`], also used by the alert notifier). [`files`]: what happens to the state or
//! history file when it is damaged or cannot be read.
//!
//! Every sink has the same shape ([`Sink`]): it is built from its config and the feeds it
//! reads — the latest [`Snapshot`](crate::engine::Snapshot) on a `watch`, accepted batches
//! from an intake tap, or the engine owner's exports — and runs until told to stop, then
//! writes what it holds. A new sink is one folder here and one line of wiring in `run`.
//!
//! Must not: import the intake or the alerts, take the engine's lock (sinks never see the
//! engine, only what its owner hands out), block the intake.

pub mod files;
pub mod history;
pub mod influx;
pub mod publish;
pub mod state;
pub mod summary;

use std::future::Future;
use tokio_util::sync::CancellationToken;

/// One output of the collector.
pub trait Sink: Send + 'static {
    /// Its name in logs.
    const NAME: &'static str;

    /// Runs until `stop`, then writes what it still holds (within the shutdown's grace)
    /// and returns.
    fn run(self, stop: CancellationToken) -> impl Future<Output = ()> + Send;
}
