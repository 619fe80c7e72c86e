//! An MQTT client for what the collector itself publishes (site summaries, alerts), with
//! its event loop driven by a task of its own that backs off with jitter after errors.

use dcwatt_common::mqtt::MqttSettings;
use rumqttc::AsyncClient;
use tokio_util::sync::CancellationToken;

/// Connects a publishing client; `what` names it in logs. The connection is kept (and
/// re-made) until `cancel`.
pub fn client(
    settings: &MqttSettings,
    capacity: usize,
    what: &'static str,
    cancel: CancellationToken,
) -> AsyncClient {
    let (client, mut eventloop) = AsyncClient::new(settings.options(), capacity);
    tokio::spawn(async move {
        let mut backoff = dcwatt_common::mqtt::reconnect_backoff();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = eventloop.poll() => match r {
                    Ok(_) => backoff.reset(),
                    Err(e) => {
                        tracing::warn!(error = %e, client = what, "MQTT connection failed");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                },
            }
        }
    });
    client
}
