//! The intake's client for an external broker (Mosquitto, EMQX, …): subscribes at QoS 1
//! and forwards every message to the intake queue. When the queue is full the client stops
//! polling, so the broker holds the messages (back-pressure, no drop). A dedicated task only
//! drives the event loop and backs off with jitter after errors.

use super::{IntakeStats, RawMessage};
use dcwatt_common::logging::RateLimiter;
use dcwatt_common::mqtt::MqttSettings;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Subscribes to `filters` on the broker and forwards messages to `tx` until `cancel`.
pub async fn run(
    settings: MqttSettings,
    filters: Vec<String>,
    tx: mpsc::Sender<RawMessage>,
    stats: Arc<IntakeStats>,
    cancel: CancellationToken,
) {
    let mut options = settings.options();
    // Many agents, bursts after an outage: let the broker keep sending while we work.
    options.set_inflight(1000);
    // A persistent session: while the collector is away (restart, network), the broker
    // queues its QoS 1 messages instead of dropping them. The client id must therefore be
    // unique per collector (mqtt.client_id).
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut backoff = dcwatt_common::mqtt::reconnect_backoff();
    let mut limiter = RateLimiter::new(Duration::from_secs(60));
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                stats.broker_connected.store(true, Ordering::Relaxed);
                tracing::info!(broker = %settings.endpoint(), "connected to broker");
                for f in &filters {
                    // The request queue is empty right after a connection.
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::error!(filter = %f, error = %e, "cannot subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let msg = RawMessage::decoded_ahead(p.topic, p.payload);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = tx.send(msg) => if r.is_err() { break },
                }
            }
            Ok(_) => {}
            Err(e) => {
                if stats.broker_connected.swap(false, Ordering::Relaxed) {
                    stats.broker_disconnects.fetch_add(1, Ordering::Relaxed);
                }
                let delay = backoff.next_delay();
                if let Some(held) = limiter.allow("broker", Instant::now()) {
                    tracing::error!(broker = %settings.endpoint(), error = %e, retry_in_ms = delay.as_millis() as u64, suppressed = held, "broker connection failed; no data is coming in");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
}
