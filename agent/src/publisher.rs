//! The MQTT side of the agent: birth on every connection, a last will saying `offline`,
//! batches at QoS 1, an explicit `offline` on clean shutdown, and reconnects with
//! exponential backoff and jitter (rumqttc alone would retry in a tight loop).

use crate::scheduler::AgentStats;
use dcwatt_common::backoff::Backoff;
use dcwatt_common::logging::RateLimiter;
use dcwatt_common::mqtt::MqttSettings;
use dcwatt_common::protocol::{readings_topic, status_topic, ReadingsMessage, StatusMessage};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a clean shutdown waits for the broker to take the offline status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Publishes batches and status for one node.
pub struct Publisher {
    /// Broker connection.
    pub mqtt: MqttSettings,
    /// The birth message, re-published on every (re)connection.
    pub birth: StatusMessage,
    /// Batches from the scheduler.
    pub rx: mpsc::Receiver<ReadingsMessage>,
    /// Shared counters.
    pub stats: Arc<AgentStats>,
}

impl Publisher {
    /// Runs until `cancel`, then publishes `offline`, disconnects and returns.
    pub async fn run(mut self, cancel: CancellationToken) {
        let site = self.birth.site.clone();
        let node = self.birth.node.clone();
        let status = status_topic(&site, &node);
        let mut options = self.mqtt.options();
        let will = StatusMessage::offline(&site, &node, self.birth.ts_ms);
        options.set_last_will(LastWill::new(
            status.clone(),
            to_json(&will),
            QoS::AtLeastOnce,
            true,
        ));
        let (client, eventloop) = AsyncClient::new(options, 64);
        let stopping = CancellationToken::new();
        let birth = to_json(&self.birth);
        let poller = tokio::spawn(drive(
            eventloop,
            client.clone(),
            status.clone(),
            birth,
            self.mqtt.endpoint(),
            stopping.clone(),
        ));
        let topic = readings_topic(&site, &node);
        loop {
            let batch = tokio::select! {
                _ = cancel.cancelled() => break,
                b = self.rx.recv() => match b { Some(b) => b, None => break },
            };
            let payload = to_json(&batch);
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = client.publish(topic.clone(), QoS::AtLeastOnce, false, payload) => {
                    if r.is_err() { break; }
                    self.stats.batches_published.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Clean shutdown: say so (the broker does not send the will on a clean disconnect).
        let offline = to_json(&StatusMessage::offline(
            &site,
            &node,
            dcwatt_common::now_ms(),
        ));
        let bye = async {
            let _ = client
                .publish(status, QoS::AtLeastOnce, true, offline)
                .await;
            let _ = client.disconnect().await;
        };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, bye).await;
        stopping.cancel();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, poller).await;
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain structs cannot fail; an empty payload would be refused
    // by the collector rather than crash the agent.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Drives the event loop: this task only polls, never blocks on anything else.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    status_topic: String,
    birth: Vec<u8>,
    endpoint: String,
    stopping: CancellationToken,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(30),
        u64::from(std::process::id()),
    );
    let mut limiter = RateLimiter::new(Duration::from_secs(60));
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    loop {
        if stop_deadline.is_none() && stopping.is_cancelled() {
            stop_deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
        }
        let polled = match stop_deadline {
            Some(d) => match tokio::time::timeout_at(d, eventloop.poll()).await {
                Ok(r) => r,
                Err(_) => return,
            },
            None => tokio::select! {
                r = eventloop.poll() => r,
                _ = stopping.cancelled() => continue,
            },
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                tracing::info!(broker = %endpoint, "connected to broker");
                if client
                    .try_publish(status_topic.clone(), QoS::AtLeastOnce, true, birth.clone())
                    .is_err()
                {
                    tracing::warn!(
                        "could not queue the birth message; it is sent on the next connection"
                    );
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if stopping.is_cancelled() => {
                // Let the disconnect reach the socket, then stop.
                let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if stopping.is_cancelled() {
                    return;
                }
                let delay = backoff.next_delay();
                if let Some(held) = limiter.allow("connection", Instant::now()) {
                    tracing::warn!(broker = %endpoint, error = %e, retry_in_ms = delay.as_millis() as u64, suppressed = held, "broker connection failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopping.cancelled() => return,
                }
            }
        }
    }
}
