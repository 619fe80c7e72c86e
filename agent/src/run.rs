//! Wires the agent together: sources → scheduler → publisher, under one cancellation token.

use crate::config::AgentConfig;
use crate::publisher::Publisher;
use crate::scheduler::{AgentStats, Scheduled, Scheduler};
use crate::sources::SourceError;
use dcwatt_common::protocol::{SourceInfo, State, StatusMessage, VERSION};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Batches buffered while the broker is slow or away (about 4 minutes at 1 s intervals).
const QUEUE_BATCHES: usize = 256;

/// Builds every configured source, failing on the first that cannot start.
///
/// # Errors
/// A source is unavailable on this host.
pub fn build_sources(config: &AgentConfig) -> Result<Vec<Scheduled>, SourceError> {
    let tick = config.interval.as_secs().max(1);
    config
        .sources
        .iter()
        .map(|s| {
            Ok(Scheduled {
                source: s.build()?,
                every: s.interval_secs().map_or(1, |i| (i / tick).max(1)),
            })
        })
        .collect()
}

/// The birth message for this configuration and the GPUs the sources found.
pub fn birth(config: &AgentConfig, sources: &[Scheduled], now_ms: i64) -> StatusMessage {
    let interval_ms = config.interval.as_millis() as u64;
    StatusMessage {
        v: VERSION,
        site: config.site.clone(),
        node: config.node.clone(),
        state: State::Online,
        ts_ms: now_ms,
        role: Some(config.role),
        rack: config.rack.clone(),
        zone: config.zone.clone(),
        agent: Some(dcwatt_common::VERSION.to_owned()),
        sources: config
            .sources
            .iter()
            .map(|s| SourceInfo {
                kind: s.kind().to_owned(),
                interval_ms: s.interval_secs().map_or(interval_ms, |i| i * 1000),
            })
            .collect(),
        interval_ms: Some(interval_ms),
        gpus: sources.iter().flat_map(|s| s.source.gpus()).collect(),
    }
}

/// Runs the agent until `cancel`.
///
/// # Errors
/// A configured source cannot start on this host.
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), SourceError> {
    let sources = build_sources(&config)?;
    let stats = Arc::new(AgentStats::default());
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    tracing::info!(site = %config.site, node = %config.node, broker = %config.mqtt.endpoint(), sources = sources.len(), "agent starting");
    let publisher = Publisher {
        mqtt: config.mqtt.clone(),
        birth: birth(&config, &sources, dcwatt_common::now_ms()),
        rx,
        stats: stats.clone(),
    };
    let scheduler = Scheduler {
        sources,
        site: config.site.clone(),
        node: config.node.clone(),
        interval: config.interval,
        tx,
        stats: stats.clone(),
        whole_system_order: config.whole_system_order.clone(),
    };
    let publishing = tokio::spawn(publisher.run(cancel.clone()));
    scheduler.run(cancel.clone()).await;
    cancel.cancel();
    let _ = publishing.await;
    tracing::info!(
        built = stats.batches_built.load(Ordering::Relaxed),
        published = stats.batches_published.load(Ordering::Relaxed),
        dropped = stats.batches_dropped.load(Ordering::Relaxed),
        read_errors = stats.read_errors.load(Ordering::Relaxed),
        "agent stopped"
    );
    Ok(())
}
