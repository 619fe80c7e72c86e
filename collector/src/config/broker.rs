//! `[broker]`: the embedded broker, its users and TLS.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct BrokerRaw {
    pub(super) embedded: bool,
    pub(super) listen: String,
    pub(super) max_connections: usize,
    pub(super) log_segment_mib: usize,
    pub(super) log_segments: usize,
    pub(super) users_file: Option<std::path::PathBuf>,
    pub(super) tls: Option<BrokerTlsRaw>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BrokerTlsRaw {
    pub(super) cert_file: std::path::PathBuf,
    pub(super) key_file: std::path::PathBuf,
}

impl Default for BrokerRaw {
    fn default() -> Self {
        BrokerRaw {
            embedded: true,
            listen: "127.0.0.1:1883".to_owned(),
            max_connections: 20_000,
            log_segment_mib: 16,
            log_segments: 8,
            users_file: None,
            tls: None,
        }
    }
}

/// Reads `username:password` lines (`#` starts a comment), recording problems by line.
pub(super) fn read_users(
    path: &std::path::Path,
    p: &mut Problems,
) -> std::collections::BTreeMap<String, dcwatt_common::secret::Secret> {
    let mut users = std::collections::BTreeMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            p.push(
                "broker.users_file",
                format!("cannot read {}: {e}", path.display()),
            );
            return users;
        }
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((u, pw)) if !u.is_empty() && !pw.is_empty() => {
                users.insert(u.to_owned(), dcwatt_common::secret::Secret::new(pw));
            }
            _ => p.push(
                "broker.users_file",
                format!(
                    "{} line {}: expected username:password",
                    path.display(),
                    i + 1
                ),
            ),
        }
    }
    if users.is_empty() {
        p.push(
            "broker.users_file",
            format!("{} has no users", path.display()),
        );
    }
    users
}

/// The embedded broker (rumqttd) settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where agents connect.
    pub listen: SocketAddr,
    /// Most concurrent MQTT connections.
    pub max_connections: usize,
    /// Size of one commit-log segment in bytes.
    pub segment_bytes: usize,
    /// Segments kept: `segment_bytes × segments` is how far the collector may fall behind
    /// before the broker drops unread messages (which the collector then counts as
    /// sequence gaps).
    pub segments: usize,
    /// Username → password, when the broker requires authentication.
    pub users: Option<std::collections::BTreeMap<String, dcwatt_common::secret::Secret>>,
    /// TLS for the agents' listener.
    pub tls: Option<BrokerTls>,
}

/// The embedded broker's server certificate.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    /// PEM certificate chain (a leaf signed by the CA the agents trust).
    pub cert_file: std::path::PathBuf,
    /// PEM private key.
    pub key_file: std::path::PathBuf,
}
