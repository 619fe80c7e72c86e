//! The impure half of alerting: the evaluation loop and the notification sinks (retained
//! MQTT messages, a webhook, Prometheus Alertmanager). Every sink has its own task and a
//! bounded queue: a failing sink never blocks evaluation or the other sinks; what a full
//! queue refuses is counted.

use super::store::{Book, Store};
use super::{evaluate, labels, observe, render, Change, Phase, Rule, Transition};
use crate::engine::Snapshot;
use dcwatt_common::backoff::Backoff;
use dcwatt_common::live::Live;
use dcwatt_common::mqtt::MqttSettings;
use dcwatt_common::secret::Secret;
use rumqttc::QoS;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Sink names, as metric labels.
pub const SINKS: [&str; 3] = ["mqtt", "webhook", "alertmanager"];

/// Notification counters per sink.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Delivered, per sink (index in [`SINKS`]).
    pub sent: [AtomicU64; 3],
    /// Failed after retries, per sink.
    pub failed: [AtomicU64; 3],
    /// Refused by a full sink queue, per sink.
    pub dropped: [AtomicU64; 3],
    /// Evaluations run.
    pub evaluations: AtomicU64,
}

/// What a sink is told.
#[derive(Debug, Clone)]
pub struct SinkEvent {
    /// The transition (for repeats: the firing alert as it stands).
    pub t: Transition,
    /// True for a repeat of a still-firing alert.
    pub repeat: bool,
}

/// Webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key for the `X-Dcwatt-Signature` header.
    pub secret: Option<Secret>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Alertmanager settings.
#[derive(Debug, Clone)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How often firing alerts are re-posted (Alertmanager resolves what it stops hearing
    /// about after its resolve_timeout, 5 min by default).
    pub resend: Duration,
}

/// Alerting settings.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// Rules.
    pub rules: Vec<Rule>,
    /// Evaluation interval.
    pub interval: Duration,
    /// Repeat interval for still-firing alerts (webhook and MQTT).
    pub repeat: Duration,
    /// Where states survive restarts.
    pub state_file: std::path::PathBuf,
    /// Publish retained alert messages on MQTT.
    pub mqtt: bool,
    /// Webhook.
    pub webhook: Option<WebhookConfig>,
    /// Alertmanager.
    pub alertmanager: Option<AlertmanagerConfig>,
}

/// Logs one alert transition at a level that matches what it asks of the operator: a
/// critical alert firing is an ERROR, a warning firing is a WARN, a resolution is INFO.
/// Fields are plain values (the value is absent, not `None`, when unknown).
fn log_transition(t: &Transition) {
    let change = match t.change {
        Change::Fired => "fired",
        Change::Resolved => "resolved",
    };
    let fired = matches!(t.change, Change::Fired);
    macro_rules! emit {
        ($level:ident) => {
            match t.value {
                Some(v) => tracing::$level!(alert = %t.alert, site = %t.key.site, severity = %t.severity, change, value = v, threshold = t.threshold, "{}", t.summary),
                None => tracing::$level!(alert = %t.alert, site = %t.key.site, severity = %t.severity, change, threshold = t.threshold, "{}", t.summary),
            }
        };
    }
    match (fired, t.severity.as_str()) {
        (true, "critical") => emit!(error),
        (true, _) => emit!(warn),
        (false, _) => emit!(info),
    }
}

/// RFC 3339 UTC time for a ms timestamp (Alertmanager's format).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = dcwatt_common::civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// The JSON a webhook receives.
pub fn webhook_body(e: &SinkEvent) -> serde_json::Value {
    let t = &e.t;
    json!({
        "version": 1,
        "alert": t.alert,
        "rule": t.key.rule,
        "site": t.key.site,
        "target": t.key.target,
        "status": if t.change == Change::Resolved { "resolved" } else { "firing" },
        "repeat": e.repeat,
        "severity": t.severity,
        "value": t.value,
        "threshold": t.threshold,
        "summary": t.summary,
        "labels": t.labels,
        "since_ms": t.since_ms,
        "at_ms": t.at_ms,
    })
}

/// The alert Alertmanager receives (API v2).
pub fn alertmanager_body(e: &SinkEvent) -> serde_json::Value {
    let t = &e.t;
    let mut a = json!({
        "labels": t.labels,
        "annotations": {
            "summary": t.summary,
            "value": t.value.map(|v| format!("{v}")).unwrap_or_default(),
            "threshold": format!("{}", t.threshold),
        },
        "startsAt": rfc3339(t.since_ms),
    });
    if t.change == Change::Resolved {
        a["endsAt"] = json!(rfc3339(t.at_ms));
    }
    json!([a])
}

/// `sha256=<hex>` HMAC of the body.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn post(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> Result<(), String> {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    match req.send(body) {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// POSTs with retries and backoff; returns whether it was delivered.
async fn deliver(
    name: &'static str,
    agent: ureq::Agent,
    url: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(10),
        u64::from(std::process::id()),
    );
    for attempt in 1..=4 {
        let (a, u, b, h) = (agent.clone(), url.clone(), body.clone(), headers.clone());
        let r = tokio::task::spawn_blocking(move || post(&a, &u, &b, &h))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match r {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(sink = name, attempt, error = %e, "alert notification failed");
                tokio::select! {
                    _ = cancel.cancelled() => return false,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    false
}

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

async fn webhook_sink(
    cfg: WebhookConfig,
    mut rx: mpsc::Receiver<SinkEvent>,
    stats: Arc<AlertStats>,
    cancel: CancellationToken,
) {
    let agent = http_agent(cfg.timeout);
    while let Some(e) = tokio::select! { _ = cancel.cancelled() => None, e = rx.recv() => e } {
        let body = serde_json::to_vec(&webhook_body(&e)).unwrap_or_default();
        let mut headers = Vec::new();
        if let Some(s) = &cfg.secret {
            headers.push(("X-Dcwatt-Signature", signature(s, &body)));
        }
        let ok = deliver(
            "webhook",
            agent.clone(),
            cfg.url.clone(),
            body,
            headers,
            &cancel,
        )
        .await;
        let counter = if ok { &stats.sent[1] } else { &stats.failed[1] };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn alertmanager_sink(
    cfg: AlertmanagerConfig,
    mut rx: mpsc::Receiver<SinkEvent>,
    stats: Arc<AlertStats>,
    cancel: CancellationToken,
) {
    let agent = http_agent(cfg.timeout);
    let url = format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'));
    while let Some(e) = tokio::select! { _ = cancel.cancelled() => None, e = rx.recv() => e } {
        let body = serde_json::to_vec(&alertmanager_body(&e)).unwrap_or_default();
        let ok = deliver(
            "alertmanager",
            agent.clone(),
            url.clone(),
            body,
            Vec::new(),
            &cancel,
        )
        .await;
        let counter = if ok { &stats.sent[2] } else { &stats.failed[2] };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn mqtt_sink(
    settings: MqttSettings,
    mut rx: mpsc::Receiver<SinkEvent>,
    stats: Arc<AlertStats>,
    cancel: CancellationToken,
) {
    let client = crate::sinks::publish::client(&settings, 64, "alerts", cancel.clone());
    while let Some(e) = tokio::select! { _ = cancel.cancelled() => None, e = rx.recv() => e } {
        let topic = format!(
            "{}/{}/alerts/{}",
            dcwatt_common::protocol::TOPIC_ROOT,
            e.t.key.site,
            e.t.alert
        );
        // A resolved alert clears the retained message.
        let payload = if e.t.change == Change::Resolved {
            Vec::new()
        } else {
            serde_json::to_vec(&webhook_body(&e)).unwrap_or_default()
        };
        let ok = client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
            .is_ok();
        let counter = if ok { &stats.sent[0] } else { &stats.failed[0] };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sink queues.
struct Sinks(Vec<(usize, mpsc::Sender<SinkEvent>)>);

impl Sinks {
    fn send(&self, e: &SinkEvent, stats: &AlertStats, only: Option<usize>) {
        for (i, tx) in &self.0 {
            if only.is_some_and(|o| o != *i) {
                continue;
            }
            if tx.try_send(e.clone()).is_err() {
                stats.dropped[*i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The evaluation loop.
pub struct Runner {
    /// The engine owner's snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// States and history, shared with the API.
    pub book: Arc<Mutex<Book>>,
    /// Settings.
    pub cfg: AlertsConfig,
    /// The rules (replaced on reload; `cfg.rules` is what they were at start).
    pub rules: Arc<Live<Vec<Rule>>>,
    /// Counters.
    pub stats: Arc<AlertStats>,
    /// Where the MQTT sink connects (the embedded broker or the external one).
    pub mqtt: Option<MqttSettings>,
}

impl Runner {
    /// Loads the persisted book into `book`.
    ///
    /// # Errors
    /// The state file exists but is unreadable.
    pub fn restore(&self) -> Result<(), String> {
        let loaded = Store::new(self.cfg.state_file.clone()).load()?;
        if let Ok(mut b) = self.book.lock() {
            *b = loaded;
        }
        Ok(())
    }

    /// One evaluation: observe, advance states, notify; returns the book to persist when
    /// it changed. Synchronous, so no lock is held across an await.
    fn evaluate_once(
        &self,
        sinks: &Sinks,
        am_sent: &mut BTreeMap<super::AlertKey, i64>,
        resend_am: Option<i64>,
        repeat_ms: i64,
    ) -> Option<Book> {
        let now = dcwatt_common::now_ms();
        // The snapshot itself, not a copy; the Arc is cloned so that the channel's lock is
        // not held while the rules run.
        let snap = self.snapshots.borrow().clone();
        let rules = self.rules.get();
        let obs = observe(&rules, &snap.sites, now);
        let Ok(mut book) = self.book.lock() else {
            return None;
        };
        let before = serde_json::to_vec(&*book).unwrap_or_default();
        let transitions = evaluate(&rules, &mut book.states, &obs, now);
        book.record(&transitions);
        for t in &transitions {
            log_transition(t);
            sinks.send(
                &SinkEvent {
                    t: t.clone(),
                    repeat: false,
                },
                &self.stats,
                None,
            );
            am_sent.insert(t.key.clone(), now);
        }
        // Repeats of still-firing alerts.
        let rules: BTreeMap<&str, &Rule> = rules.iter().map(|r| (r.name.as_str(), r)).collect();
        for (key, st) in book
            .states
            .iter_mut()
            .filter(|(_, s)| s.phase == Phase::Firing)
        {
            let Some(rule) = rules.get(key.rule.as_str()) else {
                continue;
            };
            let event = || SinkEvent {
                t: Transition {
                    alert: key.id(),
                    key: key.clone(),
                    change: Change::Fired,
                    at_ms: now,
                    since_ms: st.since_ms,
                    value: st.value,
                    threshold: rule.limits(&key.site).0,
                    severity: rule.severity.clone(),
                    summary: render(rule, key, st.value),
                    labels: labels(rule, key),
                },
                repeat: true,
            };
            if now - st.notified_ms >= repeat_ms {
                st.notified_ms = now;
                sinks.send(&event(), &self.stats, None);
                am_sent.insert(key.clone(), now);
            } else if let Some(r) = resend_am {
                if now - am_sent.get(key).copied().unwrap_or(0) >= r {
                    sinks.send(&event(), &self.stats, Some(2));
                    am_sent.insert(key.clone(), now);
                }
            }
        }
        self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
        let after = serde_json::to_vec(&*book).unwrap_or_default();
        (after != before).then(|| book.clone())
    }

    /// Evaluates every interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let store = Store::new(self.cfg.state_file.clone());
        let mut queues = Vec::new();
        let mut spawn = |i: usize| {
            let (tx, rx) = mpsc::channel(256);
            queues.push((i, tx));
            rx
        };
        if let (true, Some(m)) = (self.cfg.mqtt, self.mqtt.clone()) {
            tokio::spawn(mqtt_sink(m, spawn(0), self.stats.clone(), cancel.clone()));
        }
        if let Some(w) = self.cfg.webhook.clone() {
            tokio::spawn(webhook_sink(
                w,
                spawn(1),
                self.stats.clone(),
                cancel.clone(),
            ));
        }
        if let Some(a) = self.cfg.alertmanager.clone() {
            tokio::spawn(alertmanager_sink(
                a,
                spawn(2),
                self.stats.clone(),
                cancel.clone(),
            ));
        }
        let sinks = Sinks(queues);
        let resend_am = self
            .cfg
            .alertmanager
            .as_ref()
            .map(|a| a.resend.as_millis() as i64);
        let repeat_ms = self.cfg.repeat.as_millis() as i64;
        let mut am_sent: BTreeMap<super::AlertKey, i64> = BTreeMap::new();
        let mut ticker = tokio::time::interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let snapshot = self.evaluate_once(&sinks, &mut am_sent, resend_am, repeat_ms);
            if let Some(b) = snapshot {
                let store = store.clone();
                let saved = tokio::task::spawn_blocking(move || store.save(&b)).await;
                if let Ok(Err(e)) = saved {
                    tracing::error!(error = %e, "cannot persist alert states; they will not survive a restart");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_signature() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_905_087_338), "2026-11-28T22:31:27.338Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        // RFC 4231 test case 2.
        let s = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
