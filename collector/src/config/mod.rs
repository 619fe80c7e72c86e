//! Collector configuration: a raw serde layer converted into a validated
//! [`CollectorConfig`] that reports every problem at once, with its dotted path.
//! With no file at all the defaults run a complete single-site collector: HTTP on
//! 127.0.0.1:8080 and the embedded broker on 127.0.0.1:1883, accepting any site.

mod alerts;
mod broker;
mod engine;
mod intake;
pub mod reload;
mod sinks;

pub use alerts::DEFAULT_RULES;
use alerts::*;
use broker::*;
pub use broker::{BrokerConfig, BrokerTls};
pub use engine::parse_utc_offset;
use engine::*;
pub use intake::IntakeConfig;
use intake::*;
use sinks::*;

use crate::engine::EngineConfig;
use dcwatt_common::mqtt::{MqttRaw, MqttSettings};
use dcwatt_common::protocol::{validate_id, Point};
use dcwatt_common::settings::{Loader, Problems};
use serde::Deserialize;
use std::net::SocketAddr;

/// The commented default configuration, printed by `print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/collector.toml");

const KNOWN_KEYS: &[&str] = &[
    "http",
    "broker",
    "mqtt",
    "intake",
    "engine",
    "alerts",
    "racks",
    "summary",
    "influx",
    "history",
    "state",
    "fleet",
    "sites",
    "state_dir",
    "log",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpRaw {
    listen: String,
    token_file: Option<std::path::PathBuf>,
    token: Option<String>,
    max_connections: usize,
    header_timeout_secs: u64,
    deprecated_metric_names: bool,
    node_metrics: String,
}

impl Default for HttpRaw {
    fn default() -> Self {
        HttpRaw {
            listen: "127.0.0.1:8080".to_owned(),
            token_file: None,
            token: None,
            max_connections: 512,
            header_timeout_secs: 10,
            deprecated_metric_names: false,
            node_metrics: "problems".to_owned(),
        }
    }
}

/// A validated collector configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Where everything the collector writes lives; relative file paths are resolved
    /// against it.
    pub state_dir: std::path::PathBuf,
    /// Log level and format.
    pub log: dcwatt_common::logging::LogSettings,
    /// HTTP API address.
    pub http_listen: SocketAddr,
    /// Bearer token the API and `/metrics` require, when set.
    pub http_token: Option<dcwatt_common::secret::Secret>,
    /// Connections the API serves at once (`http.max_connections`).
    pub http_max_connections: usize,
    /// Time an API client has to send its request headers (`http.header_timeout_secs`).
    pub http_header_timeout: std::time::Duration,
    /// `/metrics` also carries the old names of renamed families
    /// (`http.deprecated_metric_names`, for one release).
    pub http_deprecated_metric_names: bool,
    /// Which nodes get per-node series on `/metrics` (`http.node_metrics`).
    pub http_node_metrics: crate::engine::NodeSeries,
    /// The embedded broker, when `broker.embedded` is true.
    pub broker: Option<BrokerConfig>,
    /// The external broker, when `broker.embedded` is false.
    pub mqtt: Option<MqttSettings>,
    /// Intake settings.
    pub intake: IntakeConfig,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Alerting, when enabled.
    pub alerts: Option<crate::alerts::notify::AlertsConfig>,
    /// Rack budgets.
    pub racks: Vec<crate::engine::RackBudget>,
    /// How often retained site summaries are published, when they are.
    pub summary_interval: Option<std::time::Duration>,
    /// The InfluxDB sink, when enabled.
    pub influx: Option<crate::sinks::influx::InfluxConfig>,
    /// The embedded history, when enabled.
    pub history: Option<crate::sinks::history::HistoryConfig>,
    /// Where the engine is saved, when it is.
    pub state: Option<crate::sinks::state::StateConfig>,
    /// Fleet mode: site summaries in, the region out.
    pub fleet: Option<crate::engine::fleet::FleetConfig>,
    /// Each site's time zone (for calendar periods); UTC when absent.
    pub site_zones: std::collections::BTreeMap<String, crate::zone::SiteZone>,
}

fn parse_addr(s: &str, path: &str, p: &mut Problems) -> SocketAddr {
    s.parse().unwrap_or_else(|e| {
        p.push(path, format!("{s:?} is not an address:port ({e})"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

impl CollectorConfig {
    /// Resolves every file the collector writes against `state_dir` (absolute paths stay).
    fn resolve_paths(&mut self) {
        let dir = self.state_dir.clone();
        let at = |p: &mut std::path::PathBuf| *p = dcwatt_common::state_dir::resolve(&dir, p);
        if let Some(h) = &mut self.history {
            at(&mut h.path);
        }
        if let Some(s) = &mut self.state {
            at(&mut s.path);
        }
        if let Some(a) = &mut self.alerts {
            at(&mut a.state_file);
        }
        if let Some(i) = &mut self.influx {
            if let Some(d) = &mut i.spool_dir {
                at(d);
            }
        }
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
        let http: HttpRaw = l.get_or_default("http", &mut p);
        let broker: BrokerRaw = l.get_or_default("broker", &mut p);
        let mqtt: MqttRaw = l.get_or_default("mqtt", &mut p);
        let intake: IntakeRaw = l.get_or_default("intake", &mut p);
        let engine: EngineRaw = l.get_or_default("engine", &mut p);
        let alerts: AlertsRaw = l.get_or_default("alerts", &mut p);
        let racks: Vec<RackRaw> = l.get_or_default("racks", &mut p);
        let summary: SummaryRaw = l.get_or_default("summary", &mut p);
        let influx: InfluxRaw = l.get_or_default("influx", &mut p);
        let influx = influx_config(influx, &mut p);
        let history: HistoryRaw = l.get_or_default("history", &mut p);
        let history = history_config(history, &mut p);
        let sites: Vec<SiteRaw> = l.get_or_default("sites", &mut p);
        let mut site_zones = std::collections::BTreeMap::new();
        let mut site_categories = std::collections::BTreeMap::new();
        let mut site_expected = std::collections::BTreeMap::new();
        let mut site_kpis = std::collections::BTreeMap::new();
        let mut site_racks = std::collections::BTreeMap::new();
        let mut site_targets = std::collections::BTreeMap::new();
        for (i, sr) in sites.iter().enumerate() {
            let mut expected = std::collections::BTreeMap::new();
            for (name, &n) in &sr.expected_meters {
                match Point::from_name(name) {
                    Some(point) if n <= 1_000_000 => {
                        expected.insert(point, n);
                    }
                    Some(_) => p.push(
                        format!("sites[{i}].expected_meters.{name}"),
                        "must be at most 1000000",
                    ),
                    None => p.push(
                        format!("sites[{i}].expected_meters.{name}"),
                        format!(
                            "not a measurement point (one of {})",
                            Point::ALL.map(Point::as_str).join(", ")
                        ),
                    ),
                }
            }
            if !expected.is_empty() {
                site_expected.insert(sr.site.clone(), expected);
            }
            if let Err(e) = validate_id(&sr.site) {
                p.push(format!("sites[{i}].site"), e.to_string());
            }
            match sr.category {
                None => {}
                Some(c @ 1..=3) => {
                    site_categories.insert(sr.site.clone(), c);
                }
                Some(c) => p.push(
                    format!("sites[{i}].category"),
                    format!(
                        "{c} is not a PUE category (1, 2 or 3; leave it out to choose by coverage)"
                    ),
                ),
            }
            match (&sr.time_zone, &sr.utc_offset) {
                (Some(_), Some(_)) => p.push(
                    format!("sites[{i}].time_zone"),
                    "set time_zone or utc_offset, not both (time_zone follows daylight saving)",
                ),
                (Some(name), None) => match crate::zone::SiteZone::iana(name) {
                    Some(z) => {
                        site_zones.insert(sr.site.clone(), z);
                    }
                    None => p.push(
                        format!("sites[{i}].time_zone"),
                        format!(
                            "{name:?} is not an IANA time zone (e.g. \"Europe/Berlin\", \"Asia/Shanghai\", spelled as in the tz database)"
                        ),
                    ),
                },
                (None, offset) => {
                    let text = offset.as_deref().unwrap_or("+00:00");
                    match parse_utc_offset(text).and_then(crate::zone::SiteZone::fixed) {
                        Some(z) => {
                            site_zones.insert(sr.site.clone(), z);
                        }
                        None => p.push(
                            format!("sites[{i}].utc_offset"),
                            format!("{text:?} is not an offset like +08:00"),
                        ),
                    }
                }
            }
            let targets = engine::site_targets(i, sr, &mut p);
            if !targets.is_empty() {
                site_targets.insert(sr.site.clone(), targets);
            }
            let racks = engine::site_racks(i, sr, &mut p);
            if racks != crate::engine::SiteRacks::default() {
                site_racks.insert(sr.site.clone(), racks);
            }
            let utc = crate::zone::SiteZone::fixed(0);
            if let Some(zone) = site_zones.get(&sr.site).or(utc.as_ref()) {
                let kpis = engine::site_kpis(i, sr, zone, &mut p);
                if kpis != crate::engine::kpi::SiteKpiConfig::default() {
                    site_kpis.insert(sr.site.clone(), kpis);
                }
            }
        }
        let fleet: FleetRaw = l.get_or_default("fleet", &mut p);
        if !(1..=86_400).contains(&fleet.stale_after_secs) {
            p.push("fleet.stale_after_secs", "must be 1..=86400");
        }
        let fleet = fleet.enabled.then(|| crate::engine::fleet::FleetConfig {
            stale_after_ms: (fleet.stale_after_secs * 1000) as i64,
        });
        let state: StateRaw = l.get_or_default("state", &mut p);
        if !(1..=3600).contains(&state.interval_secs) {
            p.push("state.interval_secs", "must be 1..=3600");
        }
        if state.enabled && state.path.as_os_str().is_empty() {
            p.push("state.path", "must not be empty");
        }
        let state = state.enabled.then(|| crate::sinks::state::StateConfig {
            path: state.path,
            interval: std::time::Duration::from_secs(state.interval_secs.max(1)),
        });
        if !(1..=3600).contains(&summary.interval_secs) {
            p.push("summary.interval_secs", "must be 1..=3600");
        }

        let http_listen = parse_addr(&http.listen, "http.listen", &mut p);
        let http_token = dcwatt_common::settings::secret_setting(
            http.token.as_deref(),
            http.token_file.as_deref(),
            "http",
            "token",
            &mut p,
        );
        if http.max_connections == 0 || http.max_connections > 1_000_000 {
            p.push("http.max_connections", "must be between 1 and 1000000");
        }
        let node_metrics =
            crate::engine::NodeSeries::parse(&http.node_metrics).unwrap_or_else(|| {
                p.push(
                    "http.node_metrics",
                    format!("{:?} is not one of off, problems, all", http.node_metrics),
                );
                crate::engine::NodeSeries::Problems
            });
        if !(1..=3_600).contains(&http.header_timeout_secs) {
            p.push("http.header_timeout_secs", "must be between 1 and 3600");
        }
        if http_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            p.push("http.token", "must be at least 16 characters");
        }
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
                users: broker.users_file.as_deref().map(|f| read_users(f, &mut p)),
                tls: broker.tls.map(|t| {
                    for (key, f) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
                        if !f.is_file() {
                            p.push(
                                format!("broker.tls.{key}"),
                                format!("{} is not a readable file", f.display()),
                            );
                        }
                    }
                    BrokerTls {
                        cert_file: t.cert_file,
                        key_file: t.key_file,
                    }
                }),
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
        let rate = intake.max_readings_per_node_per_sec;
        if !rate.is_finite() || rate * 2.0 < intake.max_readings_per_batch as f64 {
            p.push(
                "intake.max_readings_per_node_per_sec",
                "must be a number, at least half of intake.max_readings_per_batch (a whole batch must fit in its 2 s burst)",
            );
        }
        if intake.max_clock_skew_secs == 0 {
            p.push("intake.max_clock_skew_secs", "must be at least 1");
        }
        for (key, v) in [
            ("intake.max_nodes", intake.max_nodes),
            ("intake.max_sites", intake.max_sites),
            ("intake.max_zones_per_site", intake.max_zones_per_site),
            ("intake.max_racks_per_site", intake.max_racks_per_site),
            ("intake.max_series_per_node", intake.max_series_per_node),
        ] {
            if v == 0 {
                p.push(key, "must be at least 1");
            }
        }
        if intake.max_readings_per_batch == 0 {
            p.push("intake.max_readings_per_batch", "must be at least 1");
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
        if engine.frozen_gauge_readings == 1 {
            p.push(
                "engine.frozen_gauge_readings",
                "must be 0 (off) or at least 2: one reading cannot repeat",
            );
        }
        let alerts = alerts_config(alerts, &mut p);
        let racks: Vec<crate::engine::RackBudget> = racks
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if !r.budget_kw.is_finite() || r.budget_kw <= 0.0 {
                    p.push(
                        format!("racks[{i}].budget_kw"),
                        "must be a positive number of kW",
                    );
                }
                if !(0.0..=1.0).contains(&r.derating) || r.derating == 0.0 {
                    p.push(format!("racks[{i}].derating"), "must be in (0, 1]");
                }
                if r.feed_kw.is_some_and(|f| !f.is_finite() || f <= 0.0) {
                    p.push(
                        format!("racks[{i}].feed_kw"),
                        "must be a positive number of kW",
                    );
                }
                if let (Some(used), Some(total)) = (r.u_used, r.u_total) {
                    if used > total {
                        p.push(
                            format!("racks[{i}].u_used"),
                            format!("{used} U used is more than the rack's {total} U"),
                        );
                    }
                }
                for (key, id) in [("site", &r.site), ("rack", &r.rack)] {
                    if let Err(e) = validate_id(id) {
                        p.push(format!("racks[{i}].{key}"), e.to_string());
                    }
                }
                crate::engine::RackBudget {
                    site: r.site,
                    rack: r.rack,
                    budget_w: r.budget_kw * 1000.0,
                    derating: r.derating,
                    feed_w: r.feed_kw.map(|f| f * 1000.0),
                    u_total: r.u_total,
                    u_used: r.u_used,
                }
            })
            .collect();
        // The rated IT power IT load utilization divides by: the installed capacity set for
        // the site, else the sum of its racks' budgets.
        let mut rated: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
        for r in &racks {
            *rated.entry(r.site.clone()).or_default() += r.budget_w;
        }
        for (site, r) in &site_racks {
            if let Some(w) = r.installed_w {
                rated.insert(site.clone(), w);
            }
        }
        for (site, w) in rated {
            site_kpis
                .entry(site)
                .or_insert_with(crate::engine::kpi::SiteKpiConfig::default)
                .rated_it_w = Some(w);
        }
        let mut cfg = CollectorConfig {
            state_dir,
            log,
            http_listen,
            http_token,
            http_max_connections: http.max_connections,
            http_header_timeout: std::time::Duration::from_secs(http.header_timeout_secs),
            http_deprecated_metric_names: http.deprecated_metric_names,
            http_node_metrics: node_metrics,
            broker: broker_cfg,
            mqtt: mqtt_cfg,
            intake: IntakeConfig {
                sites: intake.sites,
                max_host_power_w: intake.max_host_power_w,
                max_future_skew_ms: (intake.max_future_skew_secs.min(86_400 * 365) * 1000) as i64,
                queue_messages: intake.queue_messages,
                max_readings_per_batch: intake.max_readings_per_batch,
                max_nodes: intake.max_nodes,
                max_sites: intake.max_sites,
                max_clock_skew_ms: (intake.max_clock_skew_secs.min(86_400) * 1000) as i64,
            },
            engine: EngineConfig {
                min_coverage: engine.min_coverage,
                gap_factor: engine.gap_factor,
                frozen_gauge_readings: engine.frozen_gauge_readings,
                default_interval_ms: (engine.default_interval_secs * 1000) as i64,
                rack_budgets: racks
                    .iter()
                    .map(|r| ((r.site.clone(), r.rack.clone()), r.budget_w))
                    .collect(),
                site_categories,
                site_expected,
                site_kpis,
                site_racks,
                site_targets,
                max_clock_skew_ms: (intake.max_clock_skew_secs.min(86_400) * 1000) as i64,
                limits: crate::engine::Limits {
                    zones_per_site: intake.max_zones_per_site,
                    racks_per_site: intake.max_racks_per_site,
                    series_per_node: intake.max_series_per_node,
                    readings_per_node_per_sec: intake.max_readings_per_node_per_sec,
                },
            },
            alerts,
            racks,
            summary_interval: summary
                .enabled
                .then(|| std::time::Duration::from_secs(summary.interval_secs.max(1))),
            influx,
            history,
            state,
            fleet,
            site_zones,
        };
        cfg.resolve_paths();
        p.into_result(cfg)
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
        let a = c.alerts.unwrap();
        assert_eq!(a.rules.len(), 11, "the shipped default rules");
        assert!(a
            .rules
            .iter()
            .any(|r| r.name == "node_offline" && r.for_ms == 120_000));
    }

    #[test]
    fn alert_rules_overrides_racks_and_their_problems() {
        let ok = "[alerts]\n[[alerts.rules]]\nname = \"hot\"\nsubject = \"inlet_temperature\"\nop = \">\"\nthreshold = 27\n[[alerts.overrides]]\nsite = \"hub\"\nrule = \"hot\"\nthreshold = 25\n[[racks]]\nsite = \"dc\"\nrack = \"r1\"\nbudget_kw = 8\nfeed_kw = 5\n";
        let c = CollectorConfig::from_loader(&Loader::from_toml(ok).unwrap()).unwrap();
        let a = c.alerts.unwrap();
        assert_eq!(a.rules.len(), 1);
        assert_eq!(a.rules[0].limits("hub"), (25.0, 25.0));
        assert_eq!(c.racks[0].budget_w, 8000.0);
        assert_eq!(c.racks[0].derating, 0.8);
        let bad = "[[alerts.rules]]\nname = \"a b\"\nsubject = \"site_pue\"\nwindow = \"2h\"\nop = \">\"\nthreshold = 1\nseverity = \"page\"\n[[alerts.overrides]]\nsite = \"x\"\nrule = \"nope\"\nthreshold = 1\n[[racks]]\nsite = \"dc\"\nrack = \"r1\"\nbudget_kw = 0\n";
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|x| x.path.as_str()).collect();
        for want in [
            "alerts.rules[0].name",
            "alerts.rules[0].window",
            "alerts.rules[0].severity",
            "alerts.overrides[0].rule",
            "racks[0].budget_kw",
        ] {
            assert!(paths.contains(&want), "{want} missing: {err}");
        }
    }

    #[test]
    fn sites_take_an_iana_zone_or_a_fixed_offset_not_both() {
        let cfg = |t: &str| CollectorConfig::from_loader(&Loader::from_toml(t).unwrap());
        let c = cfg("[[sites]]\nsite = \"be\"\ntime_zone = \"Europe/Berlin\"\n[[sites]]\nsite = \"sh\"\nutc_offset = \"+08:00\"\n[[sites]]\nsite = \"u\"\n")
            .unwrap();
        let name = |s: &str| c.site_zones.get(s).map(crate::zone::SiteZone::name);
        assert_eq!(name("be").as_deref(), Some("Europe/Berlin"));
        assert_eq!(name("sh").as_deref(), Some("+08:00"));
        assert_eq!(name("u").as_deref(), Some("+00:00"));
        let err = cfg("[[sites]]\nsite = \"a\"\ntime_zone = \"Europe/Atlantis\"\n[[sites]]\nsite = \"b\"\ntime_zone = \"UTC\"\nutc_offset = \"+01:00\"\n")
            .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["sites[0].time_zone", "sites[1].time_zone"],
            "{err}"
        );
        assert!(err.to_string().contains("not an IANA time zone"), "{err}");
    }

    #[test]
    fn default_rules_that_would_page_on_a_flap_keep_firing_a_while() {
        let c = CollectorConfig::from_loader(&Loader::from_toml("").unwrap()).unwrap();
        let rules = c.alerts.map(|a| a.rules).unwrap_or_default();
        for name in [
            "rack_power_warning",
            "rack_power_critical",
            "rack_failover_headroom",
            "node_offline",
            "inlet_temperature_high",
            "inlet_temperature_low",
        ] {
            let r = rules
                .iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("default rule {name}"));
            assert!(r.keep_firing_for_ms >= 60_000, "{name}: {r:?}");
        }
        assert!(
            rules.iter().all(|r| r.require_full_window),
            "window rules wait for a full window by default"
        );
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

    #[test]
    fn per_node_series_default_to_problems_and_take_three_values() {
        let cfg = |t: &str| CollectorConfig::from_loader(&Loader::from_toml(t).unwrap());
        let c = cfg("").unwrap();
        assert_eq!(c.http_node_metrics, crate::engine::NodeSeries::Problems);
        let c = cfg("[http]\nnode_metrics = \"all\"\n").unwrap();
        assert_eq!(c.http_node_metrics, crate::engine::NodeSeries::All);
        let err = cfg("[http]\nnode_metrics = \"some\"\n").unwrap_err();
        assert_eq!(err.0[0].path, "http.node_metrics", "{err}");
        assert!(err.to_string().contains("off, problems, all"), "{err}");
    }

    #[test]
    fn site_categories_are_1_to_3() {
        let ok = "[[sites]]\nsite = \"dc1\"\ncategory = 2\n[[sites]]\nsite = \"dc2\"\n";
        let c = CollectorConfig::from_loader(&Loader::from_toml(ok).unwrap()).unwrap();
        assert_eq!(c.engine.level_rule("dc1").category, Some(2));
        assert_eq!(c.engine.level_rule("dc2").category, None);
        let bad = "[[sites]]\nsite = \"dc1\"\ncategory = 4\n";
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        assert_eq!(err.0[0].path, "sites[0].category", "{err}");
    }

    #[test]
    fn site_inventories_name_measurement_points() {
        let ok =
            "[[sites]]\nsite = \"dc1\"\nexpected_meters = { facility_input = 2, it_input = 500 }\n";
        let c = CollectorConfig::from_loader(&Loader::from_toml(ok).unwrap()).unwrap();
        let inv = &c.engine.site_expected["dc1"];
        assert_eq!((inv[&Point::FacilityInput], inv[&Point::ItInput]), (2, 500));
        let bad = "[[sites]]\nsite = \"dc1\"\nexpected_meters = { it_inptu = 5 }\n";
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        assert_eq!(err.0[0].path, "sites[0].expected_meters.it_inptu", "{err}");
        assert!(err.to_string().contains("it_input"), "{err}");
    }

    #[test]
    fn sites_take_emission_factors_and_contracts_in_their_local_time() {
        let ok = r#"
[[sites]]
site = "sh"
utc_offset = "+08:00"
onsite_kg_per_kwh = 0.02
emission_factors = [
  { from = "2026-01-01", to = "2027-01-01", kg_per_kwh = 0.5366, source = "national grid average, 2022" },
  { from = "2026-01-01", to = "2027-01-01", kg_per_kwh = 0.58, basis = "market", source = "residual mix 2026" },
]
renewable_contracts = [
  { from = "2026-03-01", to = "2026-04-01", kwh = 120000, evidence = "GEC-2026-000123", kind = "green_certificate" },
]
"#;
        let c = CollectorConfig::from_loader(&Loader::from_toml(ok).unwrap()).unwrap();
        let k = &c.engine.site_kpis["sh"];
        // Local midnight at +08:00 is 16:00 UTC the day before.
        let jan1 = 1_767_225_600_000 - 8 * 3_600_000;
        assert_eq!(k.factors[0].from_ms, jan1);
        assert_eq!(k.factors[0].basis, crate::engine::kpi::Basis::Location);
        assert_eq!(k.factors[1].basis, crate::engine::kpi::Basis::Market);
        assert_eq!(
            (k.contracts[0].kwh, k.contracts[0].evidence.as_str()),
            (120_000.0, "GEC-2026-000123")
        );
        assert_eq!(k.onsite_kg_per_kwh, 0.02);
        let bad = r#"
[[sites]]
site = "dc1"
emission_factors = [
  { from = "2026-01-01", to = "2027-01-01", kg_per_kwh = 536.6, source = "g/kWh by mistake" },
  { from = "2026-06-01", to = "2026-07-01", kg_per_kwh = 0.5, source = "" },
  { from = "2027-01-01", to = "2026-01-01", kg_per_kwh = 0.5, basis = "average", source = "x" },
]
renewable_contracts = [
  { from = "March", to = "2026-04-01", kwh = -5, evidence = "" },
  { from = "2026-03-01", to = "2026-04-01", kwh = 5, evidence = "GEC-9", kind = "" },
  { from = "2026-03-15", to = "2026-05-01", kwh = 5, evidence = "GEC-9" },
  { from = "2026-05-01", to = "2026-06-01", kwh = 5, evidence = "GEC-9" },
]
"#;
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "sites[0].emission_factors[0].kg_per_kwh",
            "sites[0].emission_factors[1].source",
            "sites[0].emission_factors[1]",
            "sites[0].emission_factors[2]",
            "sites[0].emission_factors[2].basis",
            "sites[0].renewable_contracts[0]",
            "sites[0].renewable_contracts[0].kwh",
            "sites[0].renewable_contracts[0].evidence",
            "sites[0].renewable_contracts[1].kind",
            // The same certificate over overlapping months would count twice.
            "sites[0].renewable_contracts[2].evidence",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}: {err}");
        }
        // One contract's next delivery period under the same id is fine.
        assert!(
            !paths.contains(&"sites[0].renewable_contracts[3].evidence"),
            "{err}"
        );
        assert!(
            err.to_string().contains("overlaps emission_factors[0]"),
            "{err}"
        );
    }

    #[test]
    fn rules_on_figures_and_targets_name_their_figure() {
        let rule = |subject: &str, kpi: &str| {
            format!("[[alerts.rules]]\nname = \"r\"\nsubject = \"{subject}\"\nkpi = \"{kpi}\"\nwindow = \"7d\"\nop = \">\"\nthreshold = 0\n")
        };
        for (subject, kpi) in [("site_target", "occupancy"), ("site_kpi", "cue_market")] {
            let c = CollectorConfig::from_loader(&Loader::from_toml(&rule(subject, kpi)).unwrap())
                .unwrap();
            let r = &c.alerts.expect("alerts").rules[0];
            assert_eq!(
                (r.subject.name(), r.subject.window()),
                (subject, Some("7d"))
            );
        }
        for (subject, kpi, known) in [
            ("site_target", "cue", "it_utilization"),
            ("site_kpi", "pue", "ere"),
        ] {
            let err =
                CollectorConfig::from_loader(&Loader::from_toml(&rule(subject, kpi)).unwrap())
                    .unwrap_err();
            assert_eq!(err.0[0].path, "alerts.rules[0].kpi", "{err}");
            assert!(err.to_string().contains(known), "{err}");
        }
    }

    #[test]
    fn site_targets_take_a_preset_and_the_sites_own_figures_over_it() {
        let ok = "[[sites]]\nsite = \"a\"\ntargets = { preset = \"hub_node\", pue = 1.2, wue = 1.6, source = \"province plan\" }\n";
        let c = CollectorConfig::from_loader(&Loader::from_toml(ok).unwrap()).unwrap();
        let t = &c.engine.site_targets["a"];
        let get = |k: &str| t.iter().find(|t| t.kpi == k).expect(k);
        assert_eq!(
            (get("pue").target, get("pue").source.as_str()),
            (1.2, "province plan")
        );
        assert_eq!(get("occupancy").target, 0.65, "from the preset");
        assert!(
            !get("occupancy").confirmed,
            "the preset's occupancy is unconfirmed"
        );
        assert_eq!(
            get("wue").direction,
            crate::engine::targets::Direction::AtMost
        );
        assert_eq!(t.len(), 3);
        let bad = "[[sites]]\nsite = \"a\"\ntargets = { preset = \"hub\", pue = 0.9, ref = 1.5 }\n";
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sites[0].targets.preset",
                "sites[0].targets.pue",
                "sites[0].targets.ref"
            ],
            "{err}"
        );
        assert!(err.to_string().contains("hub_node"), "{err}");
    }

    #[test]
    fn sites_take_their_designed_and_installed_racks() {
        let ok = "[[sites]]\nsite = \"a\"\nracks_designed = 1200\nracks_installed = 1000\ndesigned_it_kw = 7200\ninstalled_it_kw = 6000\nrack_in_use_floor_w = 150\n\
                  [[racks]]\nsite = \"b\"\nrack = \"r1\"\nbudget_kw = 6.0\n[[racks]]\nsite = \"b\"\nrack = \"r2\"\nbudget_kw = 4.0\n";
        let c = CollectorConfig::from_loader(&Loader::from_toml(ok).unwrap()).unwrap();
        let r = c.engine.site_racks["a"];
        assert_eq!(
            (r.designed, r.installed, r.in_use_floor_w),
            (Some(1200), Some(1000), 150.0)
        );
        assert_eq!(
            (r.designed_w, r.installed_w),
            (Some(7_200_000.0), Some(6_000_000.0))
        );
        // The rating for IT load utilization: the installed capacity, else the budgets.
        assert_eq!(c.engine.site_kpis["a"].rated_it_w, Some(6_000_000.0));
        assert_eq!(c.engine.site_kpis["b"].rated_it_w, Some(10_000.0));
        let bad = "[[sites]]\nsite = \"a\"\nracks_designed = 10\nracks_installed = 12\ninstalled_it_kw = -1\n";
        let err = CollectorConfig::from_loader(&Loader::from_toml(bad).unwrap()).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["sites[0].installed_it_kw", "sites[0].racks_installed"],
            "{err}"
        );
    }
}
