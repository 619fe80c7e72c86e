//! The MQTT connection section both binaries share, validated before any `rumqttc` option
//! is built: a bad value is an error message, never a panic inside rumqttc.

use crate::secret::Secret;
use crate::settings::Problems;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `[mqtt]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttRaw {
    /// Broker host name or address.
    pub host: String,
    /// Broker TCP port (1883 plain, 8883 usual for TLS).
    pub port: u16,
    /// Client id; each binary has its own default.
    pub client_id: Option<String>,
    /// User name for password authentication.
    pub username: Option<String>,
    /// Password; prefer `password_file` or the environment (`DCWATT__MQTT__PASSWORD`).
    pub password: Option<String>,
    /// File holding the password (one line).
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive in seconds (0 disables it).
    pub keep_alive_secs: u64,
    /// TLS settings; plain TCP when absent.
    pub tls: Option<TlsRaw>,
}

impl Default for MqttRaw {
    fn default() -> Self {
        MqttRaw {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            keep_alive_secs: 30,
            tls: None,
        }
    }
}

/// `[mqtt.tls]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsRaw {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
}

/// A validated MQTT connection.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id.
    pub client_id: String,
    /// User name and password, when set.
    pub credentials: Option<(String, Secret)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// TLS, with the rustls client configuration already built from the files.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl MqttRaw {
    /// Validates the section, recording every problem under `prefix` (e.g. `mqtt`).
    pub fn validate(
        &self,
        prefix: &str,
        default_client_id: &str,
        problems: &mut Problems,
    ) -> MqttSettings {
        if self.host.trim().is_empty() {
            problems.push(format!("{prefix}.host"), "must not be empty");
        }
        if self.port == 0 {
            problems.push(format!("{prefix}.port"), "must be 1..=65535");
        }
        if self.keep_alive_secs > u64::from(u16::MAX) {
            problems.push(
                format!("{prefix}.keep_alive_secs"),
                "must be at most 65535 (or 0 to disable)",
            );
        }
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id.to_owned());
        if client_id.is_empty() || client_id.len() > 128 {
            problems.push(format!("{prefix}.client_id"), "must be 1 to 128 characters");
        }
        let password = crate::settings::secret_setting(
            self.password.as_deref(),
            self.password_file.as_deref(),
            prefix,
            "password",
            problems,
        );
        let credentials = match (&self.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (Some(u), None) => Some((u.clone(), Secret::new(""))),
            (None, Some(_)) => {
                problems.push(
                    format!("{prefix}.username"),
                    "a password is set but no username",
                );
                None
            }
            (None, None) => None,
        };
        let tls = self.tls.as_ref().and_then(|t| match t.client_config() {
            Ok(c) => Some(Arc::new(c)),
            Err((key, message)) => {
                problems.push(format!("{prefix}.tls.{key}"), message);
                None
            }
        });
        MqttSettings {
            host: self.host.clone(),
            port: self.port,
            client_id,
            credentials,
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            tls,
        }
    }
}

impl TlsRaw {
    fn client_config(&self) -> Result<rustls::ClientConfig, (&'static str, String)> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(ca) => {
                let certs = read_certs(ca).map_err(|m| ("ca_file", m))?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err((
                        "ca_file",
                        format!("{} holds no usable CA certificate", ca.display()),
                    ));
                }
            }
            None => {
                return Err((
                    "ca_file",
                    "required when [tls] is set (dcwatt does not trust a system store implicitly)"
                        .to_owned(),
                ))
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ("ca_file", e.to_string()))?
            .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert).map_err(|m| ("cert_file", m))?;
                let key_der = read_key(key).map_err(|m| ("key_file", m))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| ("key_file", format!("does not match cert_file: {e}")))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(_), None) => Err(("key_file", "required with cert_file".to_owned())),
            (None, Some(_)) => Err(("cert_file", "required with key_file".to_owned())),
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(format!("{} holds no PEM certificate", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match rustls_pemfile::private_key(&mut data.as_slice()) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(format!("{} holds no PEM private key", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl MqttSettings {
    /// rumqttc options for this connection. Everything rumqttc would assert on was
    /// validated already.
    pub fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(
            crate::protocol::MAX_PAYLOAD_BYTES + 4096,
            crate::protocol::MAX_PAYLOAD_BYTES + 4096,
        );
        if let Some((user, pass)) = &self.credentials {
            o.set_credentials(user.clone(), pass.expose().to_owned());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        o
    }

    /// `host:port`, for logs.
    pub fn endpoint(&self) -> String {
        format!(
            "{}:{}{}",
            self.host,
            self.port,
            if self.tls.is_some() { " (TLS)" } else { "" }
        )
    }
}

/// The reconnect backoff every dcwatt MQTT client uses (the collector's intake and
/// publishers, the agent): 250 ms doubling to 30 s, with jitter seeded by the process so
/// that agents restarted together do not reconnect in step.
pub fn reconnect_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(30),
        u64::from(std::process::id()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_problems_not_panics() {
        let raw = MqttRaw {
            host: String::new(),
            port: 0,
            keep_alive_secs: 100_000,
            password: Some("x".into()),
            tls: Some(TlsRaw {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsRaw::default()
            }),
            ..MqttRaw::default()
        };
        let mut p = Problems::default();
        let s = raw.validate("mqtt", "id", &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "mqtt.host",
                "mqtt.port",
                "mqtt.keep_alive_secs",
                "mqtt.username",
                "mqtt.tls.ca_file"
            ]
        );
        assert!(s.tls.is_none());
    }

    #[test]
    fn defaults_are_valid() {
        let mut p = Problems::default();
        let s = MqttRaw::default().validate("mqtt", "dcwatt-x", &mut p);
        assert!(p.is_empty());
        assert_eq!(s.endpoint(), "127.0.0.1:1883");
        let o = s.options();
        assert_eq!(o.client_id(), "dcwatt-x");
    }

    #[test]
    fn secrets_from_file_never_print() {
        let dir = std::env::temp_dir().join(format!("dcwatt-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let raw = MqttRaw {
            username: Some("agent".into()),
            password_file: Some(f),
            ..MqttRaw::default()
        };
        let mut p = Problems::default();
        let s = raw.validate("mqtt", "id", &mut p);
        assert!(p.is_empty(), "{p}");
        let (_, pw) = s.credentials.clone().unwrap();
        assert_eq!(pw.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
