//! Publishes each site's view, retained, on `dcwatt/v1/{site}/summary` every interval, so
//! dashboards, other systems and fleet collectors get live site numbers from the broker
//! without polling the API. The payload is the same JSON as `GET /api/v1/sites/{site}`.

use crate::engine::Engine;
use dcwatt_common::mqtt::MqttSettings;
use rumqttc::QoS;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The topic of a site's summary.
pub fn topic(site: &str) -> String {
    format!("{}/{site}/summary", dcwatt_common::protocol::TOPIC_ROOT)
}

/// Publishes summaries every `interval` until `cancel`.
pub async fn run(
    engine: Arc<Mutex<Engine>>,
    mqtt: MqttSettings,
    interval: Duration,
    cancel: CancellationToken,
) {
    let client = crate::publish::client(&mqtt, 256, "summary", cancel.clone());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = dcwatt_common::now_ms();
        let views: Vec<(String, Vec<u8>)> = match engine.lock() {
            Ok(e) => e
                .site_ids()
                .iter()
                .filter_map(|id| e.site_view(id, now))
                .map(|v| (topic(&v.site), serde_json::to_vec(&v).unwrap_or_default()))
                .collect(),
            Err(_) => continue,
        };
        for (t, payload) in views {
            // A full request queue (broker away) skips this round; the next one is fresh.
            if client
                .try_publish(t, QoS::AtLeastOnce, true, payload)
                .is_err()
            {
                break;
            }
        }
    }
}
