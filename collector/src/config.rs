//! Collector configuration: a raw serde layer converted into a validated
//! [`CollectorConfig`] that reports every problem at once, with its dotted path.
//! With no file at all the defaults run a complete single-site collector: HTTP on
//! 127.0.0.1:8080 and the embedded broker on 127.0.0.1:1883, accepting any site.

use crate::engine::EngineConfig;
use dcwatt_common::mqtt::{MqttRaw, MqttSettings};
use dcwatt_common::protocol::validate_id;
use dcwatt_common::settings::{Loader, Problems};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// The commented default configuration, printed by `print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/collector.toml");

const KNOWN_KEYS: &[&str] = &["http", "broker", "mqtt", "intake", "engine"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpRaw {
    listen: String,
}

impl Default for HttpRaw {
    fn default() -> Self {
        HttpRaw {
            listen: "127.0.0.1:8080".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BrokerRaw {
    embedded: bool,
    listen: String,
    max_connections: usize,
    log_segment_mib: usize,
    log_segments: usize,
}

impl Default for BrokerRaw {
    fn default() -> Self {
        BrokerRaw {
            embedded: true,
            listen: "127.0.0.1:1883".to_owned(),
            max_connections: 20_000,
            log_segment_mib: 16,
            log_segments: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IntakeRaw {
    sites: Vec<String>,
    max_host_power_w: f64,
    max_future_skew_secs: u64,
    queue_messages: usize,
}

impl Default for IntakeRaw {
    fn default() -> Self {
        IntakeRaw {
            sites: Vec::new(),
            max_host_power_w: 20_000.0,
            max_future_skew_secs: 300,
            queue_messages: 8_192,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EngineRaw {
    min_coverage: f64,
    gap_factor: f64,
    default_interval_secs: u64,
}

impl Default for EngineRaw {
    fn default() -> Self {
        EngineRaw {
            min_coverage: 0.95,
            gap_factor: 3.0,
            default_interval_secs: 10,
        }
    }
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
}

/// Intake validation settings.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Sites to subscribe to; empty means all.
    pub sites: Vec<String>,
    /// Largest plausible power for one host (W).
    pub max_host_power_w: f64,
    /// How far in the future a reading's timestamp may be (ms).
    pub max_future_skew_ms: i64,
    /// Messages buffered between the broker and the intake.
    pub queue_messages: usize,
}

/// A validated collector configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// HTTP API address.
    pub http_listen: SocketAddr,
    /// The embedded broker, when `broker.embedded` is true.
    pub broker: Option<BrokerConfig>,
    /// The external broker, when `broker.embedded` is false.
    pub mqtt: Option<MqttSettings>,
    /// Intake settings.
    pub intake: IntakeConfig,
    /// Engine settings.
    pub engine: EngineConfig,
}

fn parse_addr(s: &str, path: &str, p: &mut Problems) -> SocketAddr {
    s.parse().unwrap_or_else(|e| {
        p.push(path, format!("{s:?} is not an address:port ({e})"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

impl CollectorConfig {
    /// Loads the file (if any) and the `DCWATT__` environment, and validates the result.
    ///
    /// # Errors
    /// Every problem found, with its path.
    pub fn load(file: Option<&Path>) -> Result<Self, Problems> {
        Self::from_loader(&Loader::new(file)?)
    }

    /// Validates configuration from any loader.
    ///
    /// # Errors
    /// Every problem found, with its path.
    pub fn from_loader(l: &Loader) -> Result<Self, Problems> {
        let mut p = Problems::default();
        l.check_keys(KNOWN_KEYS, &mut p);
        let http: HttpRaw = l.get_or_default("http", &mut p);
        let broker: BrokerRaw = l.get_or_default("broker", &mut p);
        let mqtt: MqttRaw = l.get_or_default("mqtt", &mut p);
        let intake: IntakeRaw = l.get_or_default("intake", &mut p);
        let engine: EngineRaw = l.get_or_default("engine", &mut p);

        let http_listen = parse_addr(&http.listen, "http.listen", &mut p);
        let broker_cfg = if broker.embedded {
            let listen = parse_addr(&broker.listen, "broker.listen", &mut p);
            if broker.max_connections == 0 {
                p.push("broker.max_connections", "must be at least 1");
            }
            if !(1..=1024).contains(&broker.log_segment_mib) {
                p.push("broker.log_segment_mib", "must be 1..=1024");
            }
            if !(1..=64).contains(&broker.log_segments) {
                p.push("broker.log_segments", "must be 1..=64");
            }
            if listen == http_listen {
                p.push("broker.listen", "must differ from http.listen");
            }
            Some(BrokerConfig {
                listen,
                max_connections: broker.max_connections,
                segment_bytes: broker.log_segment_mib << 20,
                segments: broker.log_segments,
            })
        } else {
            None
        };
        let mqtt_cfg =
            (!broker.embedded).then(|| mqtt.validate("mqtt", "dcwatt-collector", &mut p));
        for (i, s) in intake.sites.iter().enumerate() {
            if let Err(e) = validate_id(s) {
                p.push(format!("intake.sites[{i}]"), e.to_string());
            }
        }
        if !intake.max_host_power_w.is_finite() || intake.max_host_power_w <= 0.0 {
            p.push(
                "intake.max_host_power_w",
                "must be a positive number of watts",
            );
        }
        if intake.queue_messages == 0 {
            p.push("intake.queue_messages", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&engine.min_coverage) {
            p.push("engine.min_coverage", "must be between 0 and 1");
        }
        if !engine.gap_factor.is_finite() || engine.gap_factor < 1.0 {
            p.push("engine.gap_factor", "must be at least 1");
        }
        if !(1..=86_400).contains(&engine.default_interval_secs) {
            p.push("engine.default_interval_secs", "must be 1..=86400");
        }
        p.into_result(CollectorConfig {
            http_listen,
            broker: broker_cfg,
            mqtt: mqtt_cfg,
            intake: IntakeConfig {
                sites: intake.sites,
                max_host_power_w: intake.max_host_power_w,
                max_future_skew_ms: (intake.max_future_skew_secs.min(86_400 * 365) * 1000) as i64,
                queue_messages: intake.queue_messages,
            },
            engine: EngineConfig {
                min_coverage: engine.min_coverage,
                gap_factor: engine.gap_factor,
                default_interval_ms: (engine.default_interval_secs * 1000) as i64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_working_defaults() {
        let c = CollectorConfig::from_loader(&Loader::from_toml("").unwrap()).unwrap();
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.broker.as_ref().unwrap().listen.to_string(),
            "127.0.0.1:1883"
        );
        assert!(c.mqtt.is_none());
        assert!(c.intake.sites.is_empty());
        assert_eq!(c.engine.min_coverage, 0.95);
        assert_eq!(c.intake.max_host_power_w, 20_000.0);
    }

    #[test]
    fn shipped_default_config_is_valid() {
        CollectorConfig::from_loader(&Loader::from_toml(DEFAULT_CONFIG).unwrap()).unwrap();
    }

    #[test]
    fn external_broker_and_all_problems_at_once() {
        let c = CollectorConfig::from_loader(
            &Loader::from_toml("[broker]\nembedded = false\n[mqtt]\nhost = \"mq\"\nport = 8883\n")
                .unwrap(),
        )
        .unwrap();
        assert!(c.broker.is_none());
        assert_eq!(c.mqtt.unwrap().endpoint(), "mq:8883");

        let bad = "[http]\nlisten = \"nowhere\"\n[engine]\nmin_coverage = 1.5\ngap_factor = 0.5\n[intake]\nsites = [\"ok\", \"not ok\"]\nmax_host_power_w = -1\n[extra]\nx = 1\n";
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "extra",
                "http.listen",
                "intake.sites[1]",
                "intake.max_host_power_w",
                "engine.min_coverage",
                "engine.gap_factor"
            ],
            "{err}"
        );
    }
}
