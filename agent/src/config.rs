//! Agent configuration: a raw serde layer converted into a validated [`AgentConfig`] that
//! reports every problem at once, with its dotted path.

use crate::sources::SourceConfig;
use dcwatt_common::mqtt::{MqttRaw, MqttSettings};
use dcwatt_common::protocol::{validate_id, Encoding, Role};
use dcwatt_common::settings::{Loader, Problems};
use std::path::Path;
use std::time::Duration;

/// The commented default configuration, printed by `print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/agent.toml");

const KNOWN_KEYS: &[&str] = &[
    "site",
    "node",
    "interval_secs",
    "encoding",
    "role",
    "rack",
    "zone",
    "mqtt",
    "sources",
    "whole_system_order",
    "spool",
    "state_dir",
    "log",
    "http",
];

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpRaw {
    listen: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SpoolRaw {
    enabled: bool,
    dir: std::path::PathBuf,
    max_mib: f64,
    replay_per_sec: u32,
}

impl Default for SpoolRaw {
    fn default() -> Self {
        SpoolRaw {
            enabled: true,
            dir: "dcwatt-spool".into(),
            max_mib: 64.0,
            replay_per_sec: 50,
        }
    }
}

/// Where batches wait while the broker is away.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// This node's spool directory (`spool.dir`/site/node).
    pub dir: std::path::PathBuf,
    /// Size bound; the oldest batches are dropped (and counted) beyond it.
    pub max_bytes: u64,
    /// Batches replayed per second once the broker is back.
    pub replay_per_sec: u32,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where everything the agent writes lives (spool, sequence numbers); relative paths
    /// are resolved against it.
    pub state_dir: std::path::PathBuf,
    /// Log level and format.
    pub log: dcwatt_common::logging::LogSettings,
    /// Site id.
    pub site: String,
    /// Node id.
    pub node: String,
    /// Batch interval: every source is sampled on a multiple of it.
    pub interval: Duration,
    /// Host or meter.
    pub role: Role,
    /// How readings batches are written: `json` (default) or `cbor` (docs/protocol.md).
    pub encoding: Encoding,
    /// Rack id, when known.
    pub rack: Option<String>,
    /// Zone, room or row, when known.
    pub zone: Option<String>,
    /// Broker connection.
    pub mqtt: MqttSettings,
    /// Sources to read.
    pub sources: Vec<SourceConfig>,
    /// Which source's whole-system (`it_input`) power counts when several offer it.
    pub whole_system_order: Vec<String>,
    /// The spool, unless disabled.
    pub spool: Option<SpoolConfig>,
    /// Where the agent serves its own `/metrics` (`http.listen`); off when unset.
    pub http_listen: Option<std::net::SocketAddr>,
}

impl AgentConfig {
    /// Warnings about a valid configuration, by source (`check-config` prints them, the
    /// agent logs them at start).
    pub fn warnings(&self) -> Vec<String> {
        self.sources
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.warnings(&format!("sources[{i}]")))
            .collect()
    }

    /// Loads the file (if any), the `DCWATT__` environment and command-line values that win
    /// over both (`--state-dir`), and validates the result.
    ///
    /// # Errors
    /// Every problem found, with its path.
    pub fn load_with(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, Problems> {
        Self::from_loader(&Loader::with_overrides(file, overrides)?)
    }

    /// Validates configuration from any loader.
    ///
    /// # Errors
    /// Every problem found, with its path.
    pub fn from_loader(l: &Loader) -> Result<Self, Problems> {
        let mut p = Problems::default();
        l.check_keys(KNOWN_KEYS, &mut p);
        let state_dir = dcwatt_common::state_dir::from_loader(l, &mut p);
        let log = dcwatt_common::logging::LogSettings::from_loader(l, &mut p);
        // An agent never reports under a made-up site: the collector would count its
        // power into whatever site happens to be called that.
        let site: String = match l.get_opt::<String>("site", &mut p) {
            Some(site) => {
                if let Err(e) = validate_id(&site) {
                    p.push("site", e.to_string());
                }
                site
            }
            None => {
                p.push(
                    "site",
                    "not set: name the site this agent belongs to (site = \"dc1\" in the configuration file, or DCWATT__SITE=dc1)",
                );
                "unset".to_owned()
            }
        };
        let node: String = l.get_opt("node", &mut p).unwrap_or_else(default_node);
        if let Err(e) = validate_id(&node) {
            p.push(
                "node",
                format!("{e} (set node explicitly when the host name does not fit)"),
            );
        }
        let interval_secs: u64 = l.get_opt("interval_secs", &mut p).unwrap_or(10);
        if !(1..=3600).contains(&interval_secs) {
            p.push("interval_secs", "must be 1..=3600");
        }
        let role: Role = l.get_opt("role", &mut p).unwrap_or_default();
        let encoding: Encoding = l.get_opt("encoding", &mut p).unwrap_or_default();
        let rack: Option<String> = l.get_opt("rack", &mut p);
        let zone: Option<String> = l.get_opt("zone", &mut p);
        for (key, v) in [("rack", &rack), ("zone", &zone)] {
            if let Some(Err(e)) = v.as_deref().map(validate_id) {
                p.push(key, e.to_string());
            }
        }
        let mqtt_raw: MqttRaw = l.get_or_default("mqtt", &mut p);
        let mqtt = mqtt_raw.validate("mqtt", &format!("dcwatt-agent-{site}-{node}"), &mut p);
        let sources: Vec<SourceConfig> = l
            .get_opt("sources", &mut p)
            .unwrap_or_else(|| vec![SourceConfig::default_host()]);
        if sources.is_empty() {
            p.push("sources", "at least one source is needed");
        }
        for (i, s) in sources.iter().enumerate() {
            s.validate(&format!("sources[{i}]"), interval_secs, &mut p);
        }
        let whole_system_order: Vec<String> =
            l.get_opt("whole_system_order", &mut p).unwrap_or_else(|| {
                crate::sources::WHOLE_SYSTEM_ORDER
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
        for (i, kind) in whole_system_order.iter().enumerate() {
            if !crate::sources::WHOLE_SYSTEM_ORDER.contains(&kind.as_str()) {
                p.push(
                    format!("whole_system_order[{i}]"),
                    format!(
                        "{kind:?} offers no whole-system power (one of: {})",
                        crate::sources::WHOLE_SYSTEM_ORDER.join(", ")
                    ),
                );
            }
        }
        let spool: SpoolRaw = l.get_or_default("spool", &mut p);
        if !spool.max_mib.is_finite() || !(0.001..=1_048_576.0).contains(&spool.max_mib) {
            p.push(
                "spool.max_mib",
                "must be 0.001..=1048576 (fractions allowed)",
            );
        }
        if !(1..=100_000).contains(&spool.replay_per_sec) {
            p.push("spool.replay_per_sec", "must be 1..=100000");
        }
        let spool = spool.enabled.then(|| SpoolConfig {
            dir: dcwatt_common::state_dir::resolve(&state_dir, &spool.dir)
                .join(&site)
                .join(&node),
            max_bytes: (spool.max_mib.clamp(0.001, 1_048_576.0) * 1_048_576.0) as u64,
            replay_per_sec: spool.replay_per_sec,
        });
        let http: HttpRaw = l.get_or_default("http", &mut p);
        let http_listen = match http.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => match a.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    p.push(
                        "http.listen",
                        format!("{a:?} is not an address and port, e.g. \"127.0.0.1:9184\""),
                    );
                    None
                }
            },
        };
        p.into_result(AgentConfig {
            state_dir,
            log,
            site,
            node,
            interval: Duration::from_secs(interval_secs),
            role,
            encoding,
            rack,
            zone,
            mqtt,
            sources,
            whole_system_order,
            spool,
            http_listen,
        })
    }
}

/// The host name, cut down to a valid node id.
fn default_node() -> String {
    let name = sysinfo::System::host_name().unwrap_or_default();
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "unnamed-host".to_owned()
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_config_is_valid_once_the_site_is_named() {
        let err =
            AgentConfig::from_loader(&Loader::from_toml(DEFAULT_CONFIG).unwrap()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].path, "site", "{err}");
        assert!(err.0[0].message.contains("DCWATT__SITE"), "{err}");
        let with_site = format!("site = \"dc1\"\n{DEFAULT_CONFIG}");
        let c = AgentConfig::from_loader(&Loader::from_toml(&with_site).unwrap()).unwrap();
        assert_eq!(c.site, "dc1");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert!(!c.sources.is_empty());
    }

    #[test]
    fn the_spool_lives_under_the_state_dir() {
        let dir = std::env::temp_dir();
        let toml = format!(
            "site = \"s\"\nnode = \"n\"\nstate_dir = {:?}\n",
            dir.display().to_string()
        );
        let c = AgentConfig::from_loader(&Loader::from_toml(&toml).unwrap()).unwrap();
        assert_eq!(c.spool.unwrap().dir, dir.join("dcwatt-spool/s/n"));
        let abs = format!("{toml}[spool]\ndir = \"/srv/spool\"\n");
        let c = AgentConfig::from_loader(&Loader::from_toml(&abs).unwrap()).unwrap();
        assert_eq!(c.spool.unwrap().dir, std::path::Path::new("/srv/spool/s/n"));
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        let cfg = |t: &str| AgentConfig::from_loader(&Loader::from_toml(t).unwrap());
        assert_eq!(cfg("site = \"s\"\n").unwrap().http_listen, None);
        let c = cfg("site = \"s\"\n[http]\nlisten = \"0.0.0.0:9184\"\n").unwrap();
        assert_eq!(c.http_listen, Some("0.0.0.0:9184".parse().unwrap()));
        let err = cfg("site = \"s\"\n[http]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(err.0[0].path, "http.listen", "{err}");
    }

    #[test]
    fn all_problems_at_once() {
        let toml = r#"
            site = "bad site"
            interval_secs = 0
            colour = "blue"
            [mqtt]
            port = 0
            [[sources]]
            type = "sim"
            point = "it_input"
            base_w = 100.0
            amplitude_w = 150.0
            [[sources]]
            type = "quantum"
        "#;
        let err = AgentConfig::from_loader(&Loader::from_toml(toml).unwrap()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|x| x.path.as_str()).collect();
        for want in [
            "colour",
            "site",
            "interval_secs",
            "mqtt.port",
            "sources[0].amplitude_w",
            "sources[1].type",
        ] {
            assert!(paths.contains(&want), "{want} missing in {err}");
        }
    }
}
