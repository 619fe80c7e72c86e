//! Publishes each site's view, retained, on `dcwatt/v1/{site}/summary` every interval, so
//! dashboards, other systems and fleet collectors get live site numbers from the broker
//! without polling the API. The payload is the same JSON as `GET /api/v1/sites/{site}`.

use crate::engine::Snapshot;
use dcwatt_common::mqtt::MqttSettings;
use rumqttc::QoS;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The topic of a site's summary.
pub fn topic(site: &str) -> String {
    format!("{}/{site}/summary", dcwatt_common::protocol::TOPIC_ROOT)
}

/// The summary publisher.
pub struct SummarySink {
    /// The engine owner's snapshots.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Where to publish.
    pub mqtt: MqttSettings,
    /// How often.
    pub interval: Duration,
}

impl super::Sink for SummarySink {
    const NAME: &'static str = "summary";

    /// Publishes summaries every `interval` until `cancel`.
    async fn run(self, cancel: CancellationToken) {
        let client = super::publish::client(&self.mqtt, 256, "summary", cancel.clone());
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let snap = self.snapshots.borrow().clone();
            for v in snap.views() {
                let payload = serde_json::to_vec(v).unwrap_or_default();
                // A full request queue (broker away) skips this round; the next one is fresh.
                if client
                    .try_publish(topic(&v.site), QoS::AtLeastOnce, true, payload)
                    .is_err()
                {
                    break;
                }
            }
        }
    }
}
