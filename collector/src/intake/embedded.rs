//! The embedded broker's in-process link to the intake: the intake's subscription on the
//! router, and the thread that moves what the router forwards into the intake queue
//! (decoding readings on the way, so decoding runs beside the engine). See `broker` for
//! why the intake reads through the link rather than over the network.

use super::RawMessage;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe};
use rumqttd::Notification;
use tokio::sync::mpsc;

/// Subscribes the intake's link to `filters` on the router.
pub async fn subscribe(link_tx: &mut LinkTx, filters: &[String]) -> Result<(), String> {
    let filters = filters
        .iter()
        .map(|f| Filter {
            path: f.clone(),
            // In-process: no acks to wait for, nothing lost between router and intake.
            qos: QoS::AtMostOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        })
        .collect();
    link_tx
        .send(Packet::Subscribe(Subscribe { pkid: 1, filters }, None))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Moves messages from the router to the intake queue. Blocking on a full queue is the
/// point: the router keeps the messages in its log meanwhile.
pub fn forward(_link_tx: LinkTx, mut link_rx: LinkRx, tx: mpsc::Sender<RawMessage>) {
    loop {
        match link_rx.recv() {
            Ok(Some(Notification::Forward(f))) => {
                let msg = RawMessage::decoded_ahead(
                    String::from_utf8_lossy(&f.publish.topic).into_owned(),
                    f.publish.payload,
                );
                if tx.blocking_send(msg).is_err() {
                    return;
                }
            }
            Ok(Some(Notification::Unschedule)) => {
                // The router paused us because our buffer was full; ask for more.
                if link_rx.ready().is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "embedded broker link closed; no data is coming in");
                return;
            }
        }
    }
}
