//! The MQTT side of the agent: birth on every connection, a last will saying `offline`,
//! batches at QoS 1, an explicit `offline` on clean shutdown, and reconnects with
//! exponential backoff and jitter (rumqttc alone would retry in a tight loop).

use crate::scheduler::AgentStats;
use crate::spool::Spool;
use dcwatt_common::logging::RateLimiter;
use dcwatt_common::mqtt::MqttSettings;
use dcwatt_common::protocol::{
    readings_topic, status_topic, Encoding, ReadingsMessage, StatusMessage,
};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Spacing of replay steps (each sends `replay_per_sec / 10` batches).
const REPLAY_STEP: Duration = Duration::from_millis(100);

/// How long a clean shutdown waits for the broker to take the offline status.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Which of the client's publishes are spooled batches, so that the broker's PUBACK for
/// one confirms exactly that record. The client sends requests in the order they are
/// queued and reports each as it goes out with its packet id; a PUBACK names the id. A
/// publish is queued with its record's token under this lock, so the order of `queued`
/// is the client's.
#[derive(Default)]
struct Outbox {
    /// Publishes queued and not yet out, oldest first: a batch's token, or none (a status).
    queued: VecDeque<Option<u64>>,
    /// Batches out and waiting for their PUBACK, by packet id.
    out: HashMap<u16, u64>,
    /// Tokens acknowledged, for the publisher to take.
    acked: Vec<u64>,
    /// Counts connections: what was queued or out on an earlier one is gone (a clean
    /// session), and is sent again.
    epoch: u64,
    online: bool,
}

/// The [`Outbox`] and the publisher's wake-up on a PUBACK.
#[derive(Default)]
struct Tracker {
    outbox: Mutex<Outbox>,
    acked: tokio::sync::Notify,
}

/// Why a tracked publish was not queued.
enum NotQueued {
    /// Not connected, or connected again since the caller looked.
    Offline,
    /// The client's queue is full: try again on the next step.
    Full,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding this lock cannot leave it inconsistent for our use.
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a publish, remembering its token (none for a status). With `epoch`, only on
    /// that connection and while it is up.
    fn publish(
        &self,
        client: &AsyncClient,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        token: Option<u64>,
        epoch: Option<u64>,
    ) -> Result<(), NotQueued> {
        let mut o = self.lock();
        if epoch.is_some_and(|e| !o.online || o.epoch != e) {
            return Err(NotQueued::Offline);
        }
        o.queued.push_back(token);
        if client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .is_err()
        {
            o.queued.pop_back();
            return Err(NotQueued::Full);
        }
        Ok(())
    }

    /// A publish went out with this packet id.
    fn sent(&self, pkid: u16) {
        let mut o = self.lock();
        if let Some(Some(token)) = o.queued.pop_front() {
            o.out.insert(pkid, token);
        }
    }

    /// The broker acknowledged this packet id.
    fn puback(&self, pkid: u16) {
        let mut o = self.lock();
        if let Some(token) = o.out.remove(&pkid) {
            o.acked.push(token);
            drop(o);
            self.acked.notify_one();
        }
    }

    /// The tokens acknowledged since the last call, and the connection they came on.
    fn take_acked(&self) -> (Vec<u64>, u64, bool) {
        let mut o = self.lock();
        (std::mem::take(&mut o.acked), o.epoch, o.online)
    }
}

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
    /// How batches are written (births and the last will are always JSON).
    pub encoding: Encoding,
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
        // The event loop tells the publisher about the connection, and which batches the
        // broker acknowledged, through the tracker; the shared counters (`connected`,
        // `connections`) are for /metrics.
        let link = self.stats.clone();
        let tracker = Arc::new(Tracker::default());
        let poller = tokio::spawn(drive(
            eventloop,
            client.clone(),
            (status.clone(), birth),
            self.mqtt.endpoint(),
            stopping.clone(),
            link.clone(),
            tracker.clone(),
        ));
        let topic = readings_topic(&site, &node);
        // With a spool every batch is written ahead and kept until the broker acknowledges
        // it (its PUBACK, matched by packet id); a reconnection sends the unacknowledged
        // ones again (the collector drops duplicates). A crash of the agent loses nothing
        // written; a crash of the machine at most the last SYNC_AFTER unacknowledged
        // (crate::spool). Replay goes in small steps so a thousand agents coming back
        // together do not flatten the broker: replay_per_sec batches a second, in ten steps.
        let per_step = (self.replay_per_sec / 10).max(1);
        let mut last_step = Instant::now()
            .checked_sub(REPLAY_STEP)
            .unwrap_or_else(Instant::now);
        // Records out and not yet acknowledged, oldest first: (token, acknowledged), all
        // sent on connection `sent_on`.
        let mut unconfirmed: VecDeque<(u64, bool)> = VecDeque::new();
        let (mut next_token, mut sent_on) = (0u64, 0u64);
        let mut limiter = RateLimiter::new(Duration::from_secs(60));
        loop {
            let (acked, epoch, online) = tracker.take_acked();
            if let Some(spool) = self.spool.as_mut() {
                if !unconfirmed.is_empty() && epoch != sent_on {
                    // A new connection since they went out: not acknowledged, send again.
                    unconfirmed.clear();
                    spool.rewind();
                }
                confirm(&mut unconfirmed, spool, &acked, &self.stats);
            }
            // After the acknowledgements: the spool's gauges say what it holds now, not
            // what it held before the last PUBACK (an idle agent sleeps until its next
            // batch, so a gauge set earlier would stay one batch behind until then).
            self.gauges();
            // Wake only when there is something to do: unsent batches (one replay step
            // after the last) on a live connection, or written ones due for a sync. An
            // idle agent sleeps between its batches (a fixed 100 ms tick cost it more CPU
            // than reading its sources).
            let wake = self.spool.as_ref().and_then(|s| {
                let send = (online && s.has_unsent()).then_some(last_step + REPLAY_STEP);
                match (send, s.sync_due()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            });
            let until = tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now));
            tokio::select! {
                // Told to stop with nothing left to take: the scheduler is gone.
                () = cancel.cancelled(), if self.rx.is_closed() && self.rx.is_empty() => break,
                b = self.rx.recv() => {
                    let Some(batch) = b else { break };
                    let payload = batch.encode(self.encoding);
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
                        // A full or failing disk: on a live connection the batch still goes
                        // out, unspooled (a crash before its PUBACK loses it).
                        let sent = online
                            && tracker.publish(&client, &topic, false, payload, None, Some(epoch)).is_ok();
                        if sent {
                            self.stats.batches_published.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.stats.batches_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        if limiter.allow("spool", Instant::now()).is_some() {
                            if sent {
                                tracing::error!(error = %e, "cannot spool a batch; sent without the spool's protection");
                            } else {
                                tracing::error!(error = %e, "cannot spool a batch while the broker is away; it is lost");
                            }
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
                () = tracker.acked.notified() => {}
                _ = tokio::time::sleep_until(until), if wake.is_some() => {
                    let Some(spool) = self.spool.as_mut() else { continue };
                    let now = Instant::now();
                    if spool.sync_due().is_some_and(|t| t <= now) {
                        if let Err(e) = spool.sync() {
                            if limiter.allow("sync", now).is_some() {
                                tracing::error!(error = %e, "cannot sync the spool; its batches survive an agent crash but not a power cut");
                            }
                        }
                    }
                    if !online || now < last_step + REPLAY_STEP {
                        continue;
                    }
                    last_step = now;
                    // Whatever is still unconfirmed went out on this connection (older
                    // ones were rewound at the top of the loop).
                    sent_on = epoch;
                    for _ in 0..per_step {
                        let Some((payload, next)) = spool.peek_unsent() else { break };
                        let token = next_token;
                        match tracker.publish(&client, &topic, false, payload, Some(token), Some(epoch)) {
                            Ok(()) => {}
                            Err(NotQueued::Full) => break,
                            Err(NotQueued::Offline) => {
                                self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        spool.mark_sent(next);
                        next_token += 1;
                        unconfirmed.push_back((token, false));
                        self.stats.batches_published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Some(spool) = self.spool.as_mut() {
            let (acked, epoch, _) = tracker.take_acked();
            if epoch == sent_on {
                confirm(&mut unconfirmed, spool, &acked, &self.stats);
            }
            if let Err(e) = spool.close() {
                tracing::error!(error = %e, "cannot sync the spool at shutdown");
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
            st.spool_syncs.store(s.syncs, Ordering::Relaxed);
        }
    }
}

/// Takes acknowledged records off the spool, oldest first: a record stays until it and
/// every record before it are acknowledged, so the spool's head only moves forward.
fn confirm(
    unconfirmed: &mut VecDeque<(u64, bool)>,
    spool: &mut Spool,
    acked: &[u64],
    stats: &AgentStats,
) {
    for token in acked {
        // Tokens increase along the queue.
        if let Ok(i) = unconfirmed.binary_search_by_key(token, |(t, _)| *t) {
            unconfirmed[i].1 = true;
        }
    }
    while unconfirmed.front().is_some_and(|(_, acked)| *acked) {
        unconfirmed.pop_front();
        if let Err(e) = spool.pop() {
            tracing::error!(error = %e, "cannot advance the spool; batches may be sent twice (the collector drops duplicates)");
        }
        stats.batches_acknowledged.fetch_add(1, Ordering::Relaxed);
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
    (status_topic, birth): (String, Vec<u8>),
    endpoint: String,
    stopping: CancellationToken,
    link: Arc<AgentStats>,
    tracker: Arc<Tracker>,
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
                {
                    // A clean session: nothing queued or out on the last connection will
                    // be sent or acknowledged.
                    let mut o = tracker.lock();
                    o.epoch += 1;
                    o.online = true;
                    o.queued.clear();
                    o.out.clear();
                    o.acked.clear();
                }
                tracker.acked.notify_one();
                tracing::info!(broker = %endpoint, "connected to broker");
                if tracker
                    .publish(&client, &status_topic, true, birth.clone(), None, None)
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
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => tracker.sent(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => tracker.puback(ack.pkid),
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                tracker.lock().online = false;
                tracker.acked.notify_one();
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
