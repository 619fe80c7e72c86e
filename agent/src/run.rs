//! Wires the agent together: sources → scheduler → publisher, stopped in that order.

use crate::config::AgentConfig;
use crate::publisher::Publisher;
use crate::scheduler::{AgentStats, Scheduled, Scheduler};
use crate::sources::SourceError;
use dcwatt_common::protocol::{SourceInfo, State, StatusMessage, VERSION};
use dcwatt_common::shutdown::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The shutdown phases, in order.
const SOURCES: &str = "sources";
const PUBLISH: &str = "publish";
/// How long a stop may take in all: the last batches, `offline`, the disconnect.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
            Ok(Scheduled::new(
                s.build()?,
                s.interval_secs().map_or(1, |i| (i / tick).max(1)),
            ))
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

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configured source cannot start on this host.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// The state directory could not be created.
    #[error(transparent)]
    StateDir(#[from] dcwatt_common::state_dir::CreateError),
    /// The `/metrics` address cannot be listened on.
    #[error("cannot serve /metrics on {addr} (http.listen): {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the agent until `cancel`.
///
/// # Errors
/// A configured source cannot start on this host, or the spool cannot be opened.
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), RunError> {
    dcwatt_common::state_dir::create(&config.state_dir)?;
    let sources = build_sources(&config)?;
    let mut first_seq = 0;
    let spool = match &config.spool {
        Some(sc) => {
            let ran_before = sc.dir.join("spool.pos").exists();
            let (mut spool, recovered) = crate::spool::Spool::open(&sc.dir, sc.max_bytes)?;
            let previous = crate::spool::begin_run(&sc.dir)?;
            first_seq = crate::spool::first_seq(&sc.dir, Some(&mut spool), ran_before, previous);
            // Written now, so that every later save overwrites it in place (and keeps
            // working on a full disk).
            if let Err(e) = crate::spool::save_seq(&sc.dir, first_seq) {
                tracing::warn!(error = %e, "cannot write the sequence number yet");
            }
            if recovered.torn_bytes > 0 {
                tracing::warn!(
                    bytes = recovered.torn_bytes,
                    "spool: cut off a torn tail left by a crash"
                );
            }
            if recovered.records > 0 {
                tracing::info!(
                    batches = recovered.records,
                    "spool: batches from an earlier run will be replayed"
                );
            }
            Some(spool)
        }
        None => None,
    };
    let stats = Arc::new(AgentStats::default());
    let metrics = match config.http_listen {
        Some(addr) => Some(metrics_server(&config, &sources, &stats, addr).await?),
        None => None,
    };
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    tracing::info!(site = %config.site, node = %config.node, broker = %config.mqtt.endpoint(), sources = sources.len(), "agent starting");
    let publisher = Publisher {
        mqtt: config.mqtt.clone(),
        birth: birth(&config, &sources, dcwatt_common::now_ms()),
        rx,
        stats: stats.clone(),
        spool,
        replay_per_sec: config.spool.as_ref().map_or(50, |s| s.replay_per_sec),
        encoding: config.encoding,
    };
    let scheduler = Scheduler {
        sources,
        site: config.site.clone(),
        node: config.node.clone(),
        interval: config.interval,
        tx,
        stats: stats.clone(),
        whole_system_order: config.whole_system_order.clone(),
        seq_file: (config.spool.as_ref()).map(|s| crate::spool::NumberFile::new(&s.dir, "seq")),
        first_seq,
    };
    // Stops in phases: the sources first (no batch is built after), then the publisher,
    // which takes what is still queued before it says offline.
    let stop = Shutdown::new(&[SOURCES, PUBLISH], SHUTDOWN_GRACE);
    stop.spawn(PUBLISH, "publisher", publisher.run(stop.token(PUBLISH)));
    let service = serve_systemd(stats.clone(), config.interval, stop.token(SOURCES));
    stop.spawn(SOURCES, "service manager", service);
    if let Some((listener, registry, refused)) = metrics {
        let serve = crate::metrics::serve(listener, registry, refused, stop.token(PUBLISH));
        stop.spawn(PUBLISH, "metrics", serve);
    }
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let sources = stop.token(SOURCES);
    stop.spawn(SOURCES, "scheduler", async move {
        scheduler.run(sources).await;
        let _ = done_tx.send(());
    });
    tokio::select! {
        () = cancel.cancelled() => {}
        _ = done => {}
    }
    stop.stop().await;
    if let Some(sc) = &config.spool {
        // The sequence number synced: the next run goes on from it exactly.
        if let Err(e) = crate::spool::end_run(&sc.dir) {
            tracing::warn!(error = %e, "cannot mark the run as ended cleanly; the next start numbers on past a margin");
        }
    }
    tracing::info!(
        built = stats.batches_built.load(Ordering::Relaxed),
        published = stats.batches_published.load(Ordering::Relaxed),
        dropped = stats.batches_dropped.load(Ordering::Relaxed),
        spooled = stats.batches_spooled.load(Ordering::Relaxed),
        read_errors = stats.read_errors.load(Ordering::Relaxed),
        "agent stopped"
    );
    Ok(())
}

/// What `/metrics` serves, and the listener, bound before anything starts (a port in use
/// is a start-up error, not a silent absence).
async fn metrics_server(
    config: &AgentConfig,
    sources: &[Scheduled],
    stats: &Arc<AgentStats>,
    addr: std::net::SocketAddr,
) -> Result<MetricsServer, RunError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Http { addr, source })?;
    let registry = Arc::new(dcwatt_common::metrics::Registry::default());
    registry.register(Arc::new(dcwatt_common::metrics::ProcessMetrics {
        program: "dcwatt-agent",
        version: env!("CARGO_PKG_VERSION"),
    }));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    registry.register(Arc::new(crate::metrics::AgentFamilies {
        stats: stats.clone(),
        sources: sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.source.kind(), i, s.stat.clone()))
            .collect(),
        spool_max_bytes: config.spool.as_ref().map(|s| s.max_bytes),
        refused: refused.clone(),
    }));
    tracing::info!(%addr, "serving /metrics");
    Ok((listener, registry, refused))
}

type MetricsServer = (
    tokio::net::TcpListener,
    Arc<dcwatt_common::metrics::Registry>,
    Arc<std::sync::atomic::AtomicU64>,
);

/// Tells systemd the agent is ready once its first batch is built, then pings the watchdog
/// while batches keep coming (a wedged source read stops the pings, and systemd restarts
/// the agent).
async fn serve_systemd(stats: Arc<AgentStats>, interval: Duration, cancel: CancellationToken) {
    let built = || stats.batches_built.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while built() == 0 {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
    dcwatt_common::service::notify_ready("first batch built");
    let mut last = (built(), tokio::time::Instant::now());
    // A batch is due every interval; three missed in a row is a wedged agent.
    let allowed = interval * 3;
    dcwatt_common::service::watchdog(cancel, move |_| {
        let now = (built(), tokio::time::Instant::now());
        if now.0 != last.0 {
            last = now;
        }
        let healthy = now.1.duration_since(last.1) <= allowed;
        async move { healthy }
    })
    .await;
}
