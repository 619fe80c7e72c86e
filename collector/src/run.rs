//! Wires the collector: broker (embedded or external) → intake queue → intake → engine,
//! and the HTTP API reading the engine. One cancellation token; SIGTERM and SIGINT trigger
//! it; inputs stop first, the queue drains, the API goes last.

use crate::api::{self, AppState};
use crate::broker::{self, BrokerError};
use crate::config::CollectorConfig;
use crate::engine::Engine;
use crate::intake::{mqtt, Intake, IntakeStats};
use crate::sink::{Sinks, Tap, Taps};
use dcwatt_common::mqtt::MqttSettings;
use dcwatt_common::protocol::{readings_filter, status_filter};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    Influx(#[from] crate::sink::influx::SetupError),
    /// The state directory could not be created.
    #[error(transparent)]
    StateDir(#[from] dcwatt_common::state_dir::CreateError),
    /// The history database could not be opened.
    #[error("{source} ({path})")]
    History {
        /// The database file.
        path: std::path::PathBuf,
        /// Cause.
        source: crate::history::store::StoreError,
    },
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
    if fleet {
        f.push(crate::summary::topic("+"));
    }
    f
}

/// How the running collector is reloaded: each message on `requests` (one per SIGHUP) reads
/// `source` again and applies what can change live.
pub struct Reloads {
    /// Reload requests.
    pub requests: mpsc::Receiver<()>,
    /// Where the configuration comes from.
    pub source: crate::reload::Source,
    /// The log level handle, when the subscriber is dcwatt's own.
    pub log: Option<dcwatt_common::logging::LogHandle>,
}

/// Runs until `cancel`.
///
/// # Errors
/// An address could not be bound or the broker did not start.
pub async fn run(
    cfg: CollectorConfig,
    cancel: CancellationToken,
    reloads: Option<Reloads>,
) -> Result<(), RunError> {
    dcwatt_common::state_dir::create(&cfg.state_dir)?;
    let mut restored = Engine::new(cfg.engine.clone());
    if let Some(sc) = &cfg.state {
        match crate::state::load(&sc.path) {
            Ok(Some((mut saved, saved_ms))) => {
                saved.set_config(cfg.engine.clone());
                tracing::info!(
                    path = %sc.path.display(),
                    age_secs = (dcwatt_common::now_ms() - saved_ms) / 1000,
                    sites = saved.site_ids().len(),
                    "engine state restored"
                );
                restored = saved;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the engine state; starting afresh");
            }
        }
    }
    let engine = Arc::new(Mutex::new(restored));
    let stats = Arc::new(IntakeStats::default());
    let (tx, rx) = mpsc::channel(cfg.intake.queue_messages);
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| RunError::Http {
            addr: cfg.http_listen,
            source,
        })?;
    let filters = filters(&cfg.intake.sites, cfg.fleet.is_some());
    let tracker = TaskTracker::new();
    let inputs = CancellationToken::new();
    // The collector's own publishers log in to its embedded broker with a password made
    // afresh at every start.
    let internal = random_password();
    let mut internal_listen = None;
    if let Some(b) = &cfg.broker {
        internal_listen = Some(broker::start(b, &filters, tx.clone(), &internal).await?);
        stats.broker_connected.store(true, Ordering::Relaxed);
    }
    if let Some(m) = cfg.mqtt.clone() {
        tracker.spawn(mqtt::run(
            m,
            filters,
            tx.clone(),
            stats.clone(),
            inputs.clone(),
        ));
    }
    let live = crate::reload::LiveSettings::new(&cfg, engine.clone());
    let racks = live.racks.clone();
    let sinks_stop = CancellationToken::new();
    let mut taps = Taps::default();
    let mut sinks = Sinks::default();
    let mut influx_task = None;
    if let Some(ic) = cfg.influx.clone() {
        let client = crate::sink::influx::client(&ic)?;
        let rx = ic.raw.then(|| {
            let (tap, rx) = Tap::new(ic.queue_batches);
            taps.influx = Some(tap);
            rx
        });
        let influx_stats = Arc::new(crate::sink::influx::InfluxStats::default());
        sinks.influx = Some(influx_stats.clone());
        tracing::info!(url = %ic.url, bucket = %ic.bucket, raw = ic.raw, "writing to InfluxDB");
        let sink = crate::sink::influx::Sink {
            cfg: ic,
            client,
            rx,
            engine: engine.clone(),
            racks: racks.clone(),
            stats: influx_stats,
        };
        // Lines spooled to disk wait for the next start; lines in memory get longer.
        let drain = if sink.cfg.spool_dir.is_some() { 2 } else { 10 };
        influx_task = Some(tokio::spawn(
            sink.run(sinks_stop.clone(), std::time::Duration::from_secs(drain)),
        ));
    }
    let mut history_thread = None;
    if let Some(hc) = cfg.history.clone() {
        let rx = (!hc.raw_retention.is_zero()).then(|| {
            let (tap, rx) = Tap::new(hc.queue_batches);
            taps.history = Some(tap);
            rx
        });
        let history_stats = Arc::new(crate::history::HistoryStats::default());
        let path = hc.path.clone();
        history_thread = Some(
            crate::history::start(
                hc,
                rx,
                engine.clone(),
                racks.clone(),
                history_stats.clone(),
                sinks_stop.clone(),
            )
            .map_err(|source| RunError::History {
                path: path.clone(),
                source,
            })?,
        );
        tracing::info!(path = %path.display(), "history database open");
        sinks.history = Some((path, history_stats));
    }
    let state_stats = Arc::new(crate::state::StateStats::default());
    let state_last = CancellationToken::new();
    let state_task = cfg.state.clone().map(|sc| {
        tokio::spawn(crate::state::run(
            sc,
            engine.clone(),
            state_stats.clone(),
            inputs.clone(),
            state_last.clone(),
        ))
    });
    sinks.state = cfg.state.is_some().then(|| state_stats.clone());
    sinks.taps = taps.clone();
    sinks.engine = live.engine_cfg.clone();
    sinks.site_offsets = live.site_offsets.clone();
    let fleet = Arc::new(Mutex::new(crate::fleet::Fleet::default()));
    let mut intake = Intake::new(engine.clone(), stats.clone(), cfg.intake.clone()).with_taps(taps);
    if cfg.fleet.is_some() {
        intake = intake.with_fleet(fleet.clone());
    }
    let intake_stop = CancellationToken::new();
    let intake_done = tokio::spawn(intake.run(rx, intake_stop.clone()));
    let book = Arc::new(Mutex::new(crate::alerts::store::Book::default()));
    let alert_stats = Arc::new(crate::alerts::notify::AlertStats::default());
    // Where the collector itself publishes (summaries, alerts): its own broker or the
    // external one, each publisher with its own client id.
    let publish_to = |suffix: &str| match (internal_listen, &cfg.mqtt) {
        (Some(own), _) => Some(MqttSettings {
            host: own.ip().to_string(),
            port: own.port(),
            client_id: format!("dcwatt-collector-{suffix}"),
            credentials: Some((broker::INTERNAL_USER.to_owned(), internal.clone())),
            keep_alive: std::time::Duration::from_secs(30),
            tls: None,
        }),
        (None, Some(m)) => Some(MqttSettings {
            client_id: format!("{}-{suffix}", m.client_id),
            ..m.clone()
        }),
        (None, None) => None,
    };
    if let (Some(every), Some(m)) = (cfg.summary_interval, publish_to("summary")) {
        tracker.spawn(crate::summary::run(
            engine.clone(),
            m,
            every,
            inputs.clone(),
        ));
    }
    if let Some(alerts) = cfg.alerts.clone() {
        let mqtt = publish_to("alerts");
        let runner = crate::alerts::notify::Runner {
            engine: engine.clone(),
            book: book.clone(),
            cfg: alerts,
            racks: live.racks.clone(),
            rules: live.rules.clone(),
            stats: alert_stats.clone(),
            mqtt,
        };
        if let Err(e) = runner.restore() {
            tracing::error!(error = %e, "cannot read the alert state file; starting with no alert states");
        }
        tracker.spawn(runner.run(inputs.clone()));
    }
    let watched = engine.clone();
    let state = AppState {
        engine,
        stats,
        queue: tx,
        book,
        alert_stats,
        rules: live.rules.clone(),
        racks,
        sinks: Arc::new(sinks),
        token: cfg.http_token.clone().map(Arc::new),
        fleet: cfg.fleet.clone().map(|c| (fleet.clone(), c)),
    };
    let api_stop = CancellationToken::new();
    let api_cancel = api_stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(http, api::router(state))
            .with_graceful_shutdown(async move { api_cancel.cancelled().await })
            .await
    });
    tracing::info!(http = %cfg.http_listen, state_dir = %cfg.state_dir.display(), "collector ready");
    dcwatt_common::service::notify_ready(&format!("serving on {}", cfg.http_listen));
    tracker.spawn(dcwatt_common::service::watchdog(
        inputs.clone(),
        move |within| {
            let engine = watched.clone();
            async move {
                // Healthy: the engine's lock can be taken (the intake is not wedged).
                let check = tokio::task::spawn_blocking(move || engine.lock().is_ok());
                matches!(tokio::time::timeout(within, check).await, Ok(Ok(true)))
            }
        },
    ));
    if let Some(mut r) = reloads {
        let stop = inputs.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    got = r.requests.recv() => {
                        if got.is_none() {
                            return;
                        }
                        dcwatt_common::service::reloading(|| {
                            crate::reload::reload_and_log(&mut r.source, &live, r.log.as_ref());
                        });
                    }
                }
            }
        });
    }
    cancel.cancelled().await;
    tracing::info!("shutting down: stopping inputs");
    inputs.cancel();
    tracker.close();
    tracker.wait().await;
    // The intake takes what is already queued, then stops.
    intake_stop.cancel();
    let _ = intake_done.await;
    // Everything taken in is in the engine: save it once more.
    state_last.cancel();
    if let Some(t) = state_task {
        let _ = t.await;
    }
    // The intake is gone, so the sinks' queues close: they write what they hold and stop.
    sinks_stop.cancel();
    if let Some(t) = influx_task {
        let _ = t.await;
    }
    if let Some(h) = history_thread {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    api_stop.cancel();
    let _ = server.await;
    Ok(())
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
