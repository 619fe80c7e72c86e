//! Wires the collector: broker (embedded or external) → intake queue → intake → engine,
//! and the HTTP API reading the engine. One cancellation token; SIGTERM and SIGINT trigger
//! it; inputs stop first, the queue drains, the API goes last.

use crate::api::{self, AppState};
use crate::broker::{self, BrokerError};
use crate::config::CollectorConfig;
use crate::engine::Engine;
use crate::intake::{mqtt, Intake, IntakeStats};
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
}

/// The subscription filters for the configured sites (all sites when none).
pub fn filters(sites: &[String]) -> Vec<String> {
    if sites.is_empty() {
        vec![readings_filter("+"), status_filter("+")]
    } else {
        sites
            .iter()
            .flat_map(|s| [readings_filter(s), status_filter(s)])
            .collect()
    }
}

/// Runs until `cancel`.
///
/// # Errors
/// An address could not be bound or the broker did not start.
pub async fn run(cfg: CollectorConfig, cancel: CancellationToken) -> Result<(), RunError> {
    let engine = Arc::new(Mutex::new(Engine::new(cfg.engine.clone())));
    let stats = Arc::new(IntakeStats::default());
    let (tx, rx) = mpsc::channel(cfg.intake.queue_messages);
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .map_err(|source| RunError::Http {
            addr: cfg.http_listen,
            source,
        })?;
    let filters = filters(&cfg.intake.sites);
    let tracker = TaskTracker::new();
    let inputs = CancellationToken::new();
    // The collector's own publishers log in to its embedded broker with a password made
    // afresh at every start.
    let internal = random_password();
    if let Some(b) = &cfg.broker {
        broker::start(b, &filters, tx.clone(), Some(&internal)).await?;
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
    let intake = Intake::new(engine.clone(), stats.clone(), cfg.intake.clone());
    let intake_stop = CancellationToken::new();
    let intake_done = tokio::spawn(intake.run(rx, intake_stop.clone()));
    let book = Arc::new(Mutex::new(crate::alerts::store::Book::default()));
    let alert_stats = Arc::new(crate::alerts::notify::AlertStats::default());
    let rules = cfg
        .alerts
        .iter()
        .flat_map(|a| a.rules.iter().map(|r| (r.name.clone(), r.clone())))
        .collect();
    // Where the collector itself publishes (summaries, alerts): its own broker or the
    // external one, each publisher with its own client id.
    let publish_to = |suffix: &str| match (&cfg.broker, &cfg.mqtt) {
        (Some(b), _) => Some(MqttSettings {
            host: b.listen.ip().to_string(),
            port: b.listen.port(),
            client_id: format!("dcwatt-collector-{suffix}"),
            credentials: b
                .users
                .as_ref()
                .map(|_| (broker::INTERNAL_USER.to_owned(), internal.clone())),
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
            racks: cfg.racks.clone(),
            stats: alert_stats.clone(),
            mqtt,
        };
        if let Err(e) = runner.restore() {
            tracing::error!(error = %e, "cannot read the alert state file; starting with no alert states");
        }
        tracker.spawn(runner.run(inputs.clone()));
    }
    let state = AppState {
        engine,
        stats,
        queue: tx,
        book,
        alert_stats,
        rules: Arc::new(rules),
        racks: Arc::new(cfg.racks.clone()),
    };
    let api_stop = CancellationToken::new();
    let api_cancel = api_stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(http, api::router(state))
            .with_graceful_shutdown(async move { api_cancel.cancelled().await })
            .await
    });
    tracing::info!(http = %cfg.http_listen, "collector ready");
    cancel.cancelled().await;
    tracing::info!("shutting down: stopping inputs");
    inputs.cancel();
    tracker.close();
    tracker.wait().await;
    // The intake takes what is already queued, then stops.
    intake_stop.cancel();
    let _ = intake_done.await;
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
