//! Wires the collector: broker (embedded or external) → intake queue → the engine's owner
//! → snapshots, read by the API, /metrics, the alerts and the sinks. Stops in phases:
//! inputs first, then the owner drains the queue, then the outputs flush, the API last,
//! all within one grace period.

use crate::api::{self, AppState};
use crate::broker::{self, BrokerError};
use crate::config::CollectorConfig;
use crate::engine::{Engine, Snapshot};
use crate::intake::owner::{ExportOutlet, Outlets, Owner};
use crate::intake::taps::{Tap, Taps};
use crate::intake::{mqtt, Intake, IntakeStats, QueueDepth};
use crate::sinks::Sink;
use dcwatt_common::metrics::Registry;
use dcwatt_common::mqtt::MqttSettings;
use dcwatt_common::protocol::{readings_filter, status_filter};
use dcwatt_common::shutdown::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The shutdown phases, in order.
const INPUTS: &str = "inputs";
const DRAIN: &str = "drain";
const OUTPUTS: &str = "outputs";
const API: &str = "api";

/// How long a stop may take in all (systemd's TimeoutStopSec is longer).
const GRACE: Duration = Duration::from_secs(30);

/// Why the collector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr} for HTTP: {source}")]
    Http {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The InfluxDB client could not be set up.
    #[error(transparent)]
    Influx(#[from] crate::sinks::influx::SetupError),
    /// The state directory could not be created.
    #[error(transparent)]
    StateDir(#[from] dcwatt_common::state_dir::CreateError),
}

/// The subscription filters for the configured sites (all sites when none), and the
/// site summaries for a fleet collector.
pub fn filters(sites: &[String], fleet: bool) -> Vec<String> {
    let mut f: Vec<String> = if sites.is_empty() {
        vec![readings_filter("+"), status_filter("+")]
    } else {
        sites
            .iter()
            .flat_map(|s| [readings_filter(s), status_filter(s)])
            .collect()
    };
    if sites.is_empty() {
        f.push(crate::engine::carbon::topic("+"));
    } else {
        f.extend(sites.iter().map(|s| crate::engine::carbon::topic(s)));
    }
    if fleet {
        f.push(crate::sinks::summary::topic("+"));
    }
    f
}

/// How the running collector is reloaded: each message on `requests` (one per SIGHUP) reads
/// `source` again and applies what can change live.
pub struct Reloads {
    /// Reload requests.
    pub requests: mpsc::Receiver<()>,
    /// Where the configuration comes from.
    pub source: crate::config::reload::Source,
    /// The log level handle, when the subscriber is dcwatt's own.
    pub log: Option<dcwatt_common::logging::LogHandle>,
}

/// Runs until `cancel`.
///
/// # Errors
/// An address could not be bound or the broker did not start.
pub async fn run(
    mut cfg: CollectorConfig,
    cancel: CancellationToken,
    reloads: Option<Reloads>,
) -> Result<(), RunError> {
    dcwatt_common::state_dir::create(&cfg.state_dir)?;
    fit_descriptors(&mut cfg);
    let (mut engine, unrestored) = restore(&cfg);
    if engine.site_count() == 0 {
        if let Some(h) = &cfg.history {
            expect_known_nodes(&mut engine, &h.path, &cfg.intake);
        }
    }
    let stats = Arc::new(IntakeStats::default());
    let (tx, rx) = mpsc::channel(cfg.intake.queue_messages);
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| RunError::Http {
            addr: cfg.http_listen,
            source,
        })?;
    let filters = filters(&cfg.intake.sites, cfg.fleet.is_some());
    let stop = Shutdown::new(&[INPUTS, DRAIN, OUTPUTS, API], GRACE);
    let metrics = Arc::new(Registry::default());
    metrics.set_deprecated_names(cfg.http_deprecated_metric_names);
    metrics.register(Arc::new(dcwatt_common::metrics::ProcessMetrics {
        program: "dcwatt-collector",
        version: env!("CARGO_PKG_VERSION"),
    }));
    metrics.register(stats.clone());
    metrics.register(Arc::new(QueueDepth(tx.clone())));
    // The collector's own publishers log in to its embedded broker with a password made
    // afresh at every start.
    let internal = random_password();
    let mut internal_listen = None;
    if let Some(b) = &cfg.broker {
        let refused = stats.broker_logins_refused.clone();
        internal_listen = Some(broker::start(b, &filters, tx.clone(), &internal, refused).await?);
        stats.broker_connected.store(true, Ordering::Relaxed);
    }
    if let Some(m) = cfg.mqtt.clone() {
        let task = mqtt::run(m, filters, tx.clone(), stats.clone(), stop.token(INPUTS));
        stop.spawn(INPUTS, "mqtt intake", task);
    }
    let (edits_tx, edits_rx) = mpsc::channel(64);
    let live = crate::config::reload::LiveSettings::new(&cfg, edits_tx.clone());
    let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let mut taps = Taps::default();
    let rules = live.rules.clone();
    let board = crate::alerts::Board {
        book: Arc::default(),
        rules: rules.clone(),
        stats: Arc::default(),
        snapshots: snapshots.clone(),
    };
    metrics.register(Arc::new(board.clone()));
    let mut outlets = Outlets {
        snapshots: snapshots_tx,
        racks: live.racks.clone(),
        every: crate::intake::owner::SNAPSHOT_EVERY,
        state: None,
        export: None,
    };
    // Each sink: its feeds, one registry line, one spawn.
    let mut registered: Vec<Arc<dyn dcwatt_common::metrics::Source>> = Vec::new();
    if let Some(ic) = cfg.influx.clone() {
        let client = crate::sinks::influx::client(&ic)?;
        let rx = ic.raw.then(|| {
            let (tap, rx) = Tap::new(ic.queue_batches);
            taps.influx = Some(tap);
            rx
        });
        let influx_stats = Arc::new(crate::sinks::influx::InfluxStats::default());
        registered.push(influx_stats.clone());
        tracing::info!(url = %ic.url, bucket = %ic.bucket, raw = ic.raw, "writing to InfluxDB");
        // Lines spooled to disk wait for the next start; lines in memory get longer.
        let drain = if ic.spool_dir.is_some() { 2 } else { 10 };
        let sink = crate::sinks::influx::InfluxSink {
            cfg: ic,
            client,
            rx,
            snapshots: snapshots.clone(),
            stats: influx_stats,
            drain: Duration::from_secs(drain),
        };
        spawn_sink(&stop, sink);
    }
    if let Some(sc) = cfg.state.clone() {
        let state_stats = Arc::new(crate::sinks::state::StateStats::default());
        let (copies_tx, copies) = watch::channel(None);
        outlets.state = Some((sc.interval, copies_tx));
        registered.push(state_stats.clone());
        let sink = crate::sinks::state::StateSink::open(sc, copies, state_stats, unrestored);
        spawn_sink(&stop, sink);
    }
    let mut history_path = None;
    if let Some(hc) = cfg.history.clone() {
        let rx = (!hc.raw_retention.is_zero()).then(|| {
            let (tap, rx) = Tap::new(hc.queue_batches);
            taps.history = Some(tap);
            rx
        });
        let history_stats = Arc::new(crate::sinks::history::HistoryStats::default());
        let (exports_tx, exports) = mpsc::channel(4);
        outlets.export = Some(ExportOutlet {
            every: hc.interval,
            tx: exports_tx,
            dropped: history_stats.snapshots_dropped.clone(),
        });
        let path = hc.path.clone();
        let sink = crate::sinks::history::HistorySink::open(hc, rx, exports, history_stats.clone());
        spawn_sink(&stop, sink);
        registered.push(history_stats);
        history_path = Some(path);
    }
    // The families in the order /metrics has always listed them.
    metrics.register(Arc::new(taps.clone()));
    for source in registered {
        metrics.register(source);
    }
    metrics.register(Arc::new(api::SiteFamilies {
        snapshots: snapshots.clone(),
        nodes: cfg.http_node_metrics,
    }));
    let mut intake = Intake::new(stats.clone(), cfg.intake.clone()).with_taps(taps);
    if let Some(f) = cfg.fleet.clone() {
        intake = intake.with_fleet(f);
    }
    let owner = Owner::new(engine, intake, outlets);
    stop.spawn(
        DRAIN,
        "engine owner",
        owner.run(rx, edits_rx, stop.token(DRAIN)),
    );
    // Where the collector itself publishes (summaries, alerts): its own broker or the
    // external one, each publisher with its own client id.
    let publish_to = |suffix: &str| match (internal_listen, &cfg.mqtt) {
        (Some(own), _) => Some(MqttSettings {
            host: own.ip().to_string(),
            port: own.port(),
            client_id: format!("dcwatt-collector-{suffix}"),
            credentials: Some((broker::INTERNAL_USER.to_owned(), internal.clone())),
            keep_alive: Duration::from_secs(30),
            tls: None,
        }),
        (None, Some(m)) => Some(MqttSettings {
            client_id: format!("{}-{suffix}", m.client_id),
            ..m.clone()
        }),
        (None, None) => None,
    };
    if let (Some(interval), Some(mqtt)) = (cfg.summary_interval, publish_to("summary")) {
        let sink = crate::sinks::summary::SummarySink {
            snapshots: snapshots.clone(),
            mqtt,
            interval,
        };
        stop.spawn(INPUTS, "summary publisher", sink.run(stop.token(INPUTS)));
    }
    if let Some(alerts) = cfg.alerts.clone() {
        let runner = crate::alerts::notify::Runner {
            snapshots: snapshots.clone(),
            book: board.book.clone(),
            cfg: alerts,
            rules: rules.clone(),
            stats: board.stats.clone(),
            mqtt: publish_to("alerts"),
        };
        if let Err(e) = runner.restore() {
            tracing::error!(error = %e, "cannot read the alert state file; starting with no alert states");
        }
        stop.spawn(INPUTS, "alert evaluator", runner.run(stop.token(INPUTS)));
    }
    let watched = snapshots.clone();
    let http_stats = Arc::new(api::serve::HttpStats::default());
    metrics.register(http_stats.clone());
    let state = AppState {
        snapshots,
        edits: edits_tx,
        metrics,
        alerts: Arc::new(board),
        history: api::HistoryAccess {
            projections: Default::default(),
            path: history_path,
            engine: live.engine_cfg.clone(),
            site_zones: live.site_zones.clone(),
        },
        broker_connected: stats.broker_connected.clone(),
        fleet: cfg.fleet.is_some(),
        token: cfg.http_token.clone().map(Arc::new),
    };
    let api_stop = stop.token(API);
    let limits = api::serve::Limits {
        max_connections: cfg.http_max_connections,
        header_timeout: cfg.http_header_timeout,
    };
    stop.spawn(API, "http api", async move {
        api::serve::serve(http, api::router(state), limits, http_stats, api_stop).await;
    });
    tracing::info!(http = %cfg.http_listen, state_dir = %cfg.state_dir.display(), "collector ready");
    dcwatt_common::service::notify_ready(&format!("serving on {}", cfg.http_listen));
    // Healthy: the owner publishes snapshots (the intake is not wedged).
    let stale_ms = 3 * crate::intake::owner::SNAPSHOT_EVERY.as_millis() as i64;
    stop.spawn(
        INPUTS,
        "watchdog",
        dcwatt_common::service::watchdog(stop.token(INPUTS), move |within| {
            let fresh = dcwatt_common::now_ms() - watched.borrow().taken_ms
                <= stale_ms + within.as_millis() as i64;
            async move { fresh }
        }),
    );
    if let Some(mut r) = reloads {
        let quit = stop.token(INPUTS);
        stop.spawn(INPUTS, "reloads", async move {
            loop {
                tokio::select! {
                    () = quit.cancelled() => return,
                    got = r.requests.recv() => {
                        if got.is_none() {
                            return;
                        }
                        let reload = crate::config::reload::reload_and_log(
                            &mut r.source,
                            &live,
                            r.log.as_ref(),
                        );
                        dcwatt_common::service::reloading_async(reload).await;
                    }
                }
            }
        });
    }
    cancel.cancelled().await;
    tracing::info!("shutting down: stopping inputs");
    stop.stop().await;
    Ok(())
}

/// Spawns a sink in the outputs phase: it is told to stop once the engine's owner has
/// drained the queue and handed over everything.
fn spawn_sink<S: Sink>(stop: &Shutdown, sink: S) {
    stop.spawn(OUTPUTS, S::NAME, sink.run(stop.token(OUTPUTS)));
}

/// Descriptors kept for everything but client connections: the state and history files
/// (with their journals), the API's readers, the listeners, the logs.
const RESERVED_FDS: u64 = 128;

/// The process's soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many broker and API connections fit under a soft limit of `soft` open files with
/// [`RESERVED_FDS`] kept back: as configured when they fit, else the API gets at most a
/// quarter of what is left and the broker the rest.
fn share_descriptors(soft: u64, broker: u64, http: u64) -> (u64, u64) {
    let room = soft.saturating_sub(RESERVED_FDS).max(2);
    if broker + http <= room {
        return (broker, http);
    }
    let http = http.min((room / 4).max(1));
    (broker.min(room - http).max(1), http)
}

/// Connections can never take the descriptors the state and history need: when the
/// configured connection limits do not fit under the process's open-files limit, they are
/// lowered to fit, with a WARN saying how to raise it.
fn fit_descriptors(cfg: &mut CollectorConfig) {
    let Some(soft) = open_files_limit() else {
        return;
    };
    let broker = cfg.broker.as_ref().map_or(0, |b| b.max_connections as u64);
    let http = cfg.http_max_connections as u64;
    let (b, h) = share_descriptors(soft, broker, http);
    if (b, h) == (broker, http) {
        return;
    }
    tracing::warn!(
        open_files_limit = soft,
        broker_connections = b,
        http_connections = h,
        "broker.max_connections + http.max_connections do not fit under the open-files limit (with {RESERVED_FDS} kept for files): lowered to fit; raise LimitNOFILE (the packaged unit sets 65536) or ulimit -n"
    );
    if let Some(bc) = cfg.broker.as_mut() {
        bc.max_connections = usize::try_from(b).unwrap_or(usize::MAX);
    }
    cfg.http_max_connections = usize::try_from(h).unwrap_or(usize::MAX);
}

/// After the engine state was lost (or never kept): the nodes the history's inventory knows
/// are expected again from now, so that until they report the values they enter are
/// partial (their meters missing), not "measured" without them — whatever the broker
/// still holds of their births.
fn expect_known_nodes(
    engine: &mut Engine,
    path: &std::path::Path,
    intake: &crate::config::IntakeConfig,
) {
    let now = dcwatt_common::now_ms();
    let mut expected = 0;
    for birth in crate::sinks::history::known_nodes(path, now) {
        if crate::intake::admit_node(intake, engine, &birth.site, &birth.node).is_err()
            || crate::intake::admit_birth(engine, &birth).is_err()
        {
            continue;
        }
        engine.apply_status(&birth, now);
        expected += 1;
    }
    if expected > 0 {
        tracing::info!(
            nodes = expected,
            path = %path.display(),
            "no engine state: the nodes the history knows are expected again (values stay partial until they report)"
        );
    }
}

/// The engine, restored from the saved state when there is one, and whether the state
/// file could not be read now (it is then kept, and read again before every save).
fn restore(cfg: &CollectorConfig) -> (Engine, bool) {
    use crate::sinks::state::Found;
    let fresh = || Engine::new(cfg.engine.clone());
    let Some(sc) = &cfg.state else {
        return (fresh(), false);
    };
    let path = sc.path.display();
    match crate::sinks::state::restore(&sc.path) {
        Found::Saved(mut saved, saved_ms) => {
            saved.set_config(cfg.engine.clone());
            tracing::info!(
                %path,
                age_secs = (dcwatt_common::now_ms() - saved_ms) / 1000,
                sites = saved.site_ids().len(),
                "engine state restored"
            );
            (*saved, false)
        }
        Found::Nothing => (fresh(), false),
        Found::Empty => {
            tracing::error!(
                %path,
                "the state file is empty (0 bytes): the saved windows, energy and sequence state are lost; starting afresh"
            );
            (fresh(), false)
        }
        Found::Damaged { error, aside } => match aside {
            Ok(aside) => {
                tracing::error!(
                    %path, %error, aside = %aside.display(),
                    "the state file is damaged: moved aside; the saved windows, energy and sequence state in it are lost; starting afresh"
                );
                (fresh(), false)
            }
            Err(io) => {
                tracing::error!(
                    %path, %error, rename = %io,
                    "the state file is damaged and cannot be moved aside; it is kept and saves wait until it can be; starting afresh"
                );
                (fresh(), true)
            }
        },
        Found::Unavailable(error) => {
            tracing::error!(
                %path, %error,
                "cannot read the state file now; it is kept, never overwritten, and read again before each save; starting afresh meanwhile"
            );
            (fresh(), true)
        }
    }
}

/// 32 random hex characters from the system's generator.
fn random_password() -> dcwatt_common::secret::Secret {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("no system randomness: the internal broker password is weak");
    }
    dcwatt_common::secret::Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_fitted_under_the_open_files_limit() {
        // The packaged unit's 65,536 fits the defaults.
        assert_eq!(share_descriptors(65_536, 20_000, 512), (20_000, 512));
        // A shell's 1,024: 896 left for connections, a quarter at most for the API.
        let (b, h) = share_descriptors(1_024, 20_000, 512);
        assert_eq!((b, h), (672, 224));
        assert!(b + h + RESERVED_FDS <= 1_024);
        // No broker (an external one): the API keeps what fits.
        assert_eq!(share_descriptors(1_024, 0, 512), (0, 512));
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
