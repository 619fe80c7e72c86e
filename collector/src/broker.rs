//! The embedded MQTT broker (rumqttd), for sites that need no other server.
//!
//! Why rumqttd lost messages in bursts, and what this module does about it: rumqttd keeps
//! each subscription's messages in an in-memory commit log of `segments × segment_bytes`.
//! A subscriber that falls further behind than that has its read cursor jumped forward to
//! the oldest segment still held ("cursor jump"): the messages in between are gone. A
//! network subscriber at QoS 1 also waits for acks with at most 100 messages in flight, so
//! in a burst it falls behind the publishers and loses exactly that way.
//!
//! Here the intake reads through rumqttd's in-process link instead: no network hop, no
//! acks, no inflight limit; it is only ever paused by the intake queue (back-pressure).
//! The log is sized by config (default 8 × 16 MiB: about 130k agent batches of 1 KB). If the
//! collector ever falls further behind than that, the loss is not silent: every agent batch
//! carries a sequence number and the intake counts the gaps (`dcwatt_batches_missing`).

use crate::config::BrokerConfig;
use crate::intake::RawMessage;
use dcwatt_common::secret::Secret;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours.
    #[error("embedded broker cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The in-process link was refused.
    #[error("embedded broker link: {0}")]
    Link(String),
    /// The broker did not come up.
    #[error("embedded broker did not start: {0}")]
    Start(String),
}

/// The user the collector's own publishers (summaries, alerts) connect as when the broker
/// requires authentication; its password is made afresh at every start.
pub const INTERNAL_USER: &str = "dcwatt-collector-internal";

fn connection_settings(
    auth: Option<HashMap<String, String>>,
    external_auth: Option<rumqttd::AuthHandler>,
) -> ConnectionSettings {
    ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: dcwatt_common::protocol::MAX_PAYLOAD_BYTES + 4096,
        max_inflight_count: 1000,
        auth,
        external_auth,
        dynamic_filters: true,
    }
}

/// Why a login was refused, in the operator's words.
fn refusal(users: &HashMap<String, String>, user: &str, password: &str) -> Option<&'static str> {
    match users.get(user) {
        None => Some("unknown user"),
        // Constant time, as rumqttd compares its own static logins (subtle).
        Some(p) if !bool::from(p.as_bytes().ct_eq(password.as_bytes())) => Some("wrong password"),
        Some(_) => None,
    }
}

/// The agents' listener checks logins itself, so that each refusal is logged with the
/// client id, user and reason: one WARN line per reason and user every 10 s, with the
/// number held back, however hard a client retries.
fn login_checker(
    users: HashMap<String, String>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> rumqttd::AuthHandler {
    let users = std::sync::Arc::new(users);
    let limiter = std::sync::Arc::new(std::sync::Mutex::new(
        dcwatt_common::logging::RateLimiter::new(std::time::Duration::from_secs(10)),
    ));
    std::sync::Arc::new(move |client_id: String, user: String, password: String| {
        let why = refusal(&users, &user, &password);
        if let Some(reason) = why {
            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let key = format!("{reason}/{user}");
            let allowed = limiter
                .lock()
                .ok()
                .and_then(|mut l| l.allow(&key, std::time::Instant::now()));
            if let Some(held_back) = allowed {
                tracing::warn!(client_id = %client_id, user = %user, reason, held_back, "embedded broker refused a login");
            }
        }
        Box::pin(std::future::ready(why.is_none()))
    })
}

/// Two listeners: the agents' (TLS when configured, passwords when configured) and a
/// plain one on an ephemeral loopback port for the collector's own publishers, which
/// admits only the internal user.
fn rumqttd_config(
    cfg: &BrokerConfig,
    internal: &Secret,
    internal_listen: SocketAddr,
    refused: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Config {
    let auth = cfg.users.as_ref().map(|users| {
        users
            .iter()
            .map(|(u, p)| (u.clone(), p.expose().to_owned()))
            .collect::<HashMap<String, String>>()
    });
    let tls = cfg.tls.as_ref().map(|t| rumqttd::TlsConfig::Rustls {
        capath: None,
        certpath: t.cert_file.display().to_string(),
        keypath: t.key_file.display().to_string(),
    });
    let agents = ServerSettings {
        name: "dcwatt-v4".to_owned(),
        listen: cfg.listen,
        tls,
        next_connection_delay_ms: 0,
        connections: connection_settings(None, auth.map(|u| login_checker(u, refused.clone()))),
    };
    let own = ServerSettings {
        name: "dcwatt-internal".to_owned(),
        listen: internal_listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connection_settings(
            Some(HashMap::from([(
                INTERNAL_USER.to_owned(),
                internal.expose().to_owned(),
            )])),
            None,
        ),
    };
    let mut v4 = HashMap::new();
    v4.insert("1".to_owned(), agents);
    v4.insert("2".to_owned(), own);
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: cfg.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: cfg.segment_bytes,
            max_segment_count: cfg.segments,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        ..Config::default()
    }
}

/// Starts the broker, subscribes the in-process link to `filters` (retained messages
/// included, so births survive a collector restart) and forwards everything to `tx` from a
/// dedicated thread. Returns once the broker accepts connections.
///
/// # Errors
/// The address is taken, or the broker does not come up within 5 s.
pub async fn start(
    cfg: &BrokerConfig,
    filters: &[String],
    tx: mpsc::Sender<RawMessage>,
    internal: &Secret,
    logins_refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<SocketAddr, BrokerError> {
    // rumqttd only logs a bind failure from its server thread: check first, to fail clearly.
    drop(
        TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Bind {
            addr: cfg.listen,
            source,
        })?,
    );
    // The internal listener's port: free now, taken by the broker right after.
    let internal_listen = TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|source| BrokerError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
    if let Some(t) = &cfg.tls {
        for f in [&t.cert_file, &t.key_file] {
            if !f.is_file() {
                return Err(BrokerError::Start(format!(
                    "broker.tls: {} is not a readable file",
                    f.display()
                )));
            }
        }
    }
    let mut broker = Broker::new(rumqttd_config(
        cfg,
        internal,
        internal_listen,
        &logins_refused,
    ));
    let (mut link_tx, link_rx) = tokio::task::block_in_place(|| {
        broker
            .link("dcwatt-collector-intake")
            .map_err(|e| BrokerError::Link(e.to_string()))
    })?;
    crate::intake::embedded::subscribe(&mut link_tx, filters)
        .await
        .map_err(BrokerError::Link)?;
    std::thread::Builder::new()
        .name("embedded-broker".to_owned())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    std::thread::Builder::new()
        .name("broker-link".to_owned())
        .spawn(move || crate::intake::embedded::forward(link_tx, link_rx, tx))
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(answers_mqtt(internal_listen, Some(internal))
        && TcpStream::connect_timeout(&cfg.listen, Duration::from_millis(200)).is_ok())
    {
        if Instant::now() > deadline {
            return Err(BrokerError::Start(format!(
                "nothing listening on {} after 5 s (a bad broker.tls certificate or key is logged above)",
                cfg.listen
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(listen = %cfg.listen, tls = cfg.tls.is_some(), log_mib = (cfg.segment_bytes >> 20) * cfg.segments, "embedded broker listening");
    tracing::warn!(
        "the embedded broker has no per-topic ACL: any user it admits may publish as any site and node (the collector counts a second publisher's batches as duplicate_conflict); run it on a trusted network, or use Mosquitto with configs/mosquitto/dcwatt.acl"
    );
    Ok(internal_listen)
}

/// An MQTT 3.1.1 CONNECT packet (clean session, keep-alive 10 s), with the internal
/// user's credentials when given.
fn connect_packet(password: Option<&Secret>) -> Vec<u8> {
    let field = |v: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
    };
    let mut body = Vec::new();
    field(b"MQTT", &mut body);
    body.push(4);
    body.push(if password.is_some() { 0xC2 } else { 0x02 });
    body.extend_from_slice(&10u16.to_be_bytes());
    field(b"~", &mut body);
    if let Some(pw) = password {
        field(INTERNAL_USER.as_bytes(), &mut body);
        field(pw.expose().as_bytes(), &mut body);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// True once the broker answers a real MQTT CONNECT with a successful CONNACK.
fn answers_mqtt(addr: SocketAddr, password: Option<&Secret>) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut ack = [0u8; 4];
    let ok = s.write_all(&connect_packet(password)).is_ok()
        && s.read_exact(&mut ack).is_ok()
        && ack[0] == 0x20
        && ack[3] == 0;
    let _ = s.write_all(&[0xE0, 0]);
    let mut rest = [0u8; 16];
    let _ = s.read(&mut rest);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why() {
        let users = HashMap::from([("h-1".to_owned(), "s3cret".to_owned())]);
        assert_eq!(refusal(&users, "h-1", "s3cret"), None);
        assert_eq!(refusal(&users, "h-1", "s3cre"), Some("wrong password"));
        assert_eq!(refusal(&users, "h-1", "s3cretx"), Some("wrong password"));
        assert_eq!(refusal(&users, "h-2", "s3cret"), Some("unknown user"));
    }

    #[test]
    fn connect_packets() {
        assert_eq!(
            connect_packet(None),
            vec![0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 1, b'~']
        );
        let p = connect_packet(Some(&Secret::new("pw")));
        assert_eq!(p[1] as usize, p.len() - 2, "remaining length");
        assert_eq!(p[9], 0xC2, "username and password flags");
        assert!(p.ends_with(b"\0\x02pw"));
    }
}
