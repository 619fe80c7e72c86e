//! The MQTT side of the agent: birth on every connection, a last will saying `offline`,
//! batches at QoS 1, an explicit `offline` on clean shutdown, and reconnects with
//! exponential backoff and jitter (rumqttc alone would retry in a tight loop).

use crate::scheduler::AgentStats;
use crate::spool::Spool;
use dcwatt_common::logging::RateLimiter;
use dcwatt_common::mqtt::MqttSettings;
use dcwatt_common::protocol::{readings_topic, status_topic, ReadingsMessage, StatusMessage};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a spooled batch must have been out, on a connection that stayed up, before it
/// is taken as delivered (PUBACKs on a healthy connection take milliseconds).
const ACK_GRACE: Duration = Duration::from_secs(3);
/// Spacing of replay steps (each sends `replay_per_sec / 10` batches).
const REPLAY_STEP: Duration = Duration::from_millis(100);

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
    /// Where batches wait while the broker is away; none when disabled.
    pub spool: Option<Spool>,
    /// Spooled batches replayed per second once the broker is back.
    pub replay_per_sec: u32,
}

impl Publisher {
    /// Runs until its queue closes (the scheduler has stopped), taking every batch still
    /// queued (spooled, or published without a spool); then publishes `offline`,
    /// disconnects and returns. `cancel` is the shutdown phase that lets it finish: a
    /// publisher still waiting on a broker when the grace period ends is abandoned, its
    /// spooled batches kept for the next start.
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
        // The event loop tells the publisher about the connection through the shared
        // counters: `connected`, and `connections` (a batch sent in an earlier connection
        // is not confirmed).
        let link = self.stats.clone();
        let poller = tokio::spawn(drive(
            eventloop,
            client.clone(),
            status.clone(),
            birth,
            self.mqtt.endpoint(),
            stopping.clone(),
            link.clone(),
        ));
        let topic = readings_topic(&site, &node);
        let connected = &link.connected;
        let epoch = &link.connections;
        // With a spool every batch is written ahead and kept until it has been out for
        // ACK_GRACE on a connection that stayed up; a reconnection sends the unconfirmed
        // ones again (the collector drops duplicates). A crash loses nothing written.
        // Replay goes in small steps so a thousand agents coming back together do not
        // flatten the broker: replay_per_sec batches a second, in ten steps.
        let per_step = (self.replay_per_sec / 10).max(1);
        let mut last_step = Instant::now()
            .checked_sub(REPLAY_STEP)
            .unwrap_or_else(Instant::now);
        let mut unconfirmed: VecDeque<(Instant, u64)> = VecDeque::new();
        let mut limiter = RateLimiter::new(Duration::from_secs(60));
        loop {
            self.gauges();
            let online = connected.load(Ordering::Relaxed);
            // Wake only when there is something to do: unsent batches (one replay step
            // after the last), or the oldest unconfirmed one's grace running out. An idle
            // agent sleeps between its batches (a fixed 100 ms tick cost it more CPU
            // than reading its sources).
            let wake = self.spool.as_ref().and_then(|s| {
                if s.has_unsent() {
                    Some(last_step + REPLAY_STEP)
                } else {
                    unconfirmed.front().map(|(at, _)| *at + ACK_GRACE)
                }
            });
            let until = tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now));
            tokio::select! {
                // Told to stop with nothing left to take: the scheduler is gone.
                () = cancel.cancelled(), if self.rx.is_closed() && self.rx.is_empty() => break,
                b = self.rx.recv() => {
                    let Some(batch) = b else { break };
                    let payload = to_json(&batch);
                    let Some(spool) = &mut self.spool else {
                        if client.publish(topic.clone(), QoS::AtLeastOnce, false, payload).await.is_err() {
                            self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        self.stats.batches_published.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let before = spool.dropped;
                    if let Err(e) = spool.push(&payload) {
                        self.stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
                        if limiter.allow("spool", Instant::now()).is_some() {
                            tracing::error!(error = %e, "cannot spool a batch; it is lost");
                        }
                    }
                    let dropped = spool.dropped - before;
                    if dropped > 0 {
                        self.stats.batches_dropped.fetch_add(dropped, Ordering::Relaxed);
                        // Dropped records may have been in flight: resend from the new head.
                        unconfirmed.clear();
                        spool.rewind();
                        if limiter.allow("spool full", Instant::now()).is_some() {
                            tracing::warn!(dropped_total = spool.dropped, "spool full: oldest batches dropped");
                        }
                    }
                    if !online {
                        self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ = tokio::time::sleep_until(until), if online && wake.is_some() => {
                    // `online` was read before the sleep: the connection may have dropped
                    // since, and a batch is only taken as delivered on a connection that
                    // is still up.
                    if !connected.load(Ordering::Relaxed) {
                        continue;
                    }
                    let Some(spool) = self.spool.as_mut() else { continue };
                    let now = Instant::now();
                    last_step = now;
                    let current = epoch.load(Ordering::Relaxed);
                    if unconfirmed.iter().any(|(_, e)| *e != current) {
                        // A reconnection since they went out: not confirmed, send again.
                        unconfirmed.clear();
                        spool.rewind();
                    }
                    while unconfirmed.front().is_some_and(|(at, _)| now.duration_since(*at) >= ACK_GRACE) {
                        unconfirmed.pop_front();
                        if let Err(e) = spool.pop() {
                            tracing::error!(error = %e, "cannot advance the spool; batches may be sent twice (the collector drops duplicates)");
                        }
                    }
                    for _ in 0..per_step {
                        let Some(payload) = spool.next_unsent() else { break };
                        if client.publish(topic.clone(), QoS::AtLeastOnce, false, payload).await.is_err() {
                            self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        unconfirmed.push_back((now, current));
                        self.stats.batches_published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.gauges();
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

impl Publisher {
    /// The queue's and the spool's gauges, for `/metrics`.
    fn gauges(&self) {
        let st = &self.stats;
        st.queued.store(self.rx.len() as u64, Ordering::Relaxed);
        if let Some(s) = &self.spool {
            st.spool_batches.store(s.len(), Ordering::Relaxed);
            st.spool_bytes.store(s.bytes(), Ordering::Relaxed);
        }
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
    link: Arc<AgentStats>,
) {
    let (connected, epoch) = (&link.connected, &link.connections);
    let mut backoff = dcwatt_common::mqtt::reconnect_backoff();
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
                epoch.fetch_add(1, Ordering::Relaxed);
                connected.store(true, Ordering::Relaxed);
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
                connected.store(false, Ordering::Relaxed);
                link.connection_errors.fetch_add(1, Ordering::Relaxed);
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
