//! Collector configuration: a raw serde layer converted into a validated
//! [`CollectorConfig`] that reports every problem at once, with its dotted path.
//! With no file at all the defaults run a complete single-site collector: HTTP on
//! 127.0.0.1:8080 and the embedded broker on 127.0.0.1:1883, accepting any site.

use crate::engine::EngineConfig;
use dcwatt_common::mqtt::{MqttRaw, MqttSettings};
use dcwatt_common::protocol::{validate_id, Point};
use dcwatt_common::settings::{Loader, Problems};
use serde::Deserialize;
use std::net::SocketAddr;

/// The commented default configuration, printed by `print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../configs/collector.toml");

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
#[serde(deny_unknown_fields)]
struct SiteRaw {
    site: String,
    #[serde(default = "utc")]
    utc_offset: String,
    /// The PUE category the site reports at (1, 2 or 3); chosen from coverage when unset.
    #[serde(default)]
    category: Option<u8>,
    /// Meters the site has per measurement point, e.g. `{ facility_input = 2,
    /// it_input = 500 }`: coverage counts those that never reported as missing.
    #[serde(default)]
    expected_meters: std::collections::BTreeMap<String, u32>,
}

fn utc() -> String {
    "+00:00".to_owned()
}

/// Parses a UTC offset: `Z`, `+08:00`, `-05:30`, `+0800`. Returns seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s == "Z" || s == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FleetRaw {
    enabled: bool,
    stale_after_secs: u64,
}

impl Default for FleetRaw {
    fn default() -> Self {
        FleetRaw {
            enabled: false,
            stale_after_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StateRaw {
    enabled: bool,
    path: std::path::PathBuf,
    interval_secs: u64,
}

impl Default for StateRaw {
    fn default() -> Self {
        StateRaw {
            enabled: true,
            path: "dcwatt-state.sqlite".into(),
            interval_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct InfluxRaw {
    enabled: bool,
    url: String,
    org: String,
    bucket: String,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
    ca_file: Option<std::path::PathBuf>,
    gzip: bool,
    raw: bool,
    batch_lines: usize,
    flush_interval_ms: u64,
    timeout_secs: u64,
    buffer_mib: usize,
    derived_interval_secs: u64,
    queue_batches: usize,
    spool_dir: std::path::PathBuf,
}

impl Default for InfluxRaw {
    fn default() -> Self {
        InfluxRaw {
            enabled: false,
            url: "http://127.0.0.1:8086".to_owned(),
            org: "dcwatt".to_owned(),
            bucket: "dcwatt".to_owned(),
            token: None,
            token_file: None,
            ca_file: None,
            gzip: true,
            raw: true,
            batch_lines: 5_000,
            flush_interval_ms: 1_000,
            timeout_secs: 10,
            buffer_mib: 1024,
            derived_interval_secs: 10,
            queue_batches: 16_384,
            spool_dir: "dcwatt-influx-spool".into(),
        }
    }
}

fn influx_config(r: InfluxRaw, p: &mut Problems) -> Option<crate::sink::influx::InfluxConfig> {
    if !r.enabled {
        return None;
    }
    match reqwest::Url::parse(&r.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => p.push(
            "influx.url",
            format!("{:?} must be an http:// or https:// URL", r.url),
        ),
        Err(e) => p.push("influx.url", format!("{:?} is not a URL ({e})", r.url)),
    }
    if r.bucket.is_empty() {
        p.push("influx.bucket", "must not be empty");
    }
    let token = dcwatt_common::settings::secret_setting(
        r.token.as_deref(),
        r.token_file.as_deref(),
        "influx",
        "token",
        p,
    );
    if let Some(f) = &r.ca_file {
        if !f.is_file() {
            p.push(
                "influx.ca_file",
                format!("{} is not a readable file", f.display()),
            );
        }
    }
    if !(1..=1_000_000).contains(&r.batch_lines) {
        p.push("influx.batch_lines", "must be 1..=1000000");
    }
    if !(10..=60_000).contains(&r.flush_interval_ms) {
        p.push("influx.flush_interval_ms", "must be 10..=60000");
    }
    if !(1..=300).contains(&r.timeout_secs) {
        p.push("influx.timeout_secs", "must be 1..=300");
    }
    if !(1..=65_536).contains(&r.buffer_mib) {
        p.push("influx.buffer_mib", "must be 1..=65536");
    }
    if !(1..=3600).contains(&r.derived_interval_secs) {
        p.push("influx.derived_interval_secs", "must be 1..=3600");
    }
    if r.queue_batches == 0 {
        p.push("influx.queue_batches", "must be at least 1");
    }
    Some(crate::sink::influx::InfluxConfig {
        url: r.url,
        org: r.org,
        bucket: r.bucket,
        token,
        ca_file: r.ca_file,
        gzip: r.gzip,
        batch_lines: r.batch_lines,
        flush_interval: std::time::Duration::from_millis(r.flush_interval_ms),
        timeout: std::time::Duration::from_secs(r.timeout_secs),
        buffer_bytes: r.buffer_mib << 20,
        derived_interval: std::time::Duration::from_secs(r.derived_interval_secs),
        raw: r.raw,
        queue_batches: r.queue_batches,
        spool_dir: (!r.spool_dir.as_os_str().is_empty()).then_some(r.spool_dir),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HistoryRaw {
    enabled: bool,
    path: std::path::PathBuf,
    retention_days: u64,
    raw_retention_days: f64,
    interval_secs: u64,
    prune_interval_secs: u64,
    queue_batches: usize,
}

impl Default for HistoryRaw {
    fn default() -> Self {
        HistoryRaw {
            enabled: true,
            path: "dcwatt-history.sqlite".into(),
            retention_days: 400,
            raw_retention_days: 7.0,
            interval_secs: 60,
            prune_interval_secs: 3600,
            queue_batches: 16_384,
        }
    }
}

fn history_config(r: HistoryRaw, p: &mut Problems) -> Option<crate::history::HistoryConfig> {
    if !r.enabled {
        return None;
    }
    if !(1..=36_500).contains(&r.retention_days) {
        p.push("history.retention_days", "must be 1..=36500");
    }
    if !r.raw_retention_days.is_finite() || !(0.0..=3650.0).contains(&r.raw_retention_days) {
        p.push(
            "history.raw_retention_days",
            "must be 0..=3650 (0 keeps no raw readings)",
        );
    }
    if !(1..=3600).contains(&r.interval_secs) {
        p.push("history.interval_secs", "must be 1..=3600");
    }
    if !(1..=86_400).contains(&r.prune_interval_secs) {
        p.push("history.prune_interval_secs", "must be 1..=86400");
    }
    if r.queue_batches == 0 {
        p.push("history.queue_batches", "must be at least 1");
    }
    if r.path.as_os_str().is_empty() {
        p.push("history.path", "must not be empty");
    }
    let days = |d: f64| std::time::Duration::from_secs_f64(d.clamp(0.0, 36_500.0) * 86_400.0);
    Some(crate::history::HistoryConfig {
        path: r.path,
        derived_retention: days(r.retention_days as f64),
        raw_retention: days(r.raw_retention_days),
        interval: std::time::Duration::from_secs(r.interval_secs.max(1)),
        prune_interval: std::time::Duration::from_secs(r.prune_interval_secs.max(1)),
        queue_batches: r.queue_batches,
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SummaryRaw {
    enabled: bool,
    interval_secs: u64,
}

impl Default for SummaryRaw {
    fn default() -> Self {
        SummaryRaw {
            enabled: true,
            interval_secs: 10,
        }
    }
}

/// The default alert rules, used when the configuration has none.
pub const DEFAULT_RULES: &str = include_str!("../../configs/alert-rules.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpRaw {
    listen: String,
    token_file: Option<std::path::PathBuf>,
    token: Option<String>,
}

impl Default for HttpRaw {
    fn default() -> Self {
        HttpRaw {
            listen: "127.0.0.1:8080".to_owned(),
            token_file: None,
            token: None,
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
    users_file: Option<std::path::PathBuf>,
    tls: Option<BrokerTlsRaw>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrokerTlsRaw {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
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
fn read_users(
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IntakeRaw {
    sites: Vec<String>,
    max_host_power_w: f64,
    max_future_skew_secs: u64,
    queue_messages: usize,
    max_readings_per_batch: usize,
    max_nodes: usize,
}

impl Default for IntakeRaw {
    fn default() -> Self {
        IntakeRaw {
            sites: Vec::new(),
            max_host_power_w: 20_000.0,
            max_future_skew_secs: 300,
            queue_messages: 8_192,
            max_readings_per_batch: 10_000,
            max_nodes: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EngineRaw {
    min_coverage: f64,
    gap_factor: f64,
    default_interval_secs: u64,
    frozen_gauge_readings: u32,
}

impl Default for EngineRaw {
    fn default() -> Self {
        EngineRaw {
            min_coverage: 0.95,
            gap_factor: 3.0,
            default_interval_secs: 10,
            frozen_gauge_readings: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AlertsRaw {
    enabled: bool,
    evaluate_interval_secs: u64,
    repeat_interval_secs: u64,
    state_file: std::path::PathBuf,
    mqtt: bool,
    webhook: Option<WebhookRaw>,
    alertmanager: Option<AlertmanagerRaw>,
    rules: Option<Vec<RuleRaw>>,
    overrides: Vec<OverrideRaw>,
}

impl Default for AlertsRaw {
    fn default() -> Self {
        AlertsRaw {
            enabled: true,
            evaluate_interval_secs: 10,
            repeat_interval_secs: 3600,
            state_file: "dcwatt-alerts.json".into(),
            mqtt: true,
            webhook: None,
            alertmanager: None,
            rules: None,
            overrides: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRaw {
    url: String,
    secret_file: Option<std::path::PathBuf>,
    #[serde(default = "five")]
    timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertmanagerRaw {
    url: String,
    #[serde(default = "five")]
    timeout_secs: u64,
    #[serde(default = "sixty")]
    resend_interval_secs: u64,
}

fn five() -> u64 {
    5
}

fn sixty() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleRaw {
    name: String,
    subject: String,
    window: Option<String>,
    metric: Option<String>,
    component: Option<String>,
    op: crate::alerts::Op,
    threshold: f64,
    clear: Option<f64>,
    #[serde(default)]
    for_secs: u64,
    #[serde(default)]
    keep_firing_for_secs: u64,
    #[serde(default = "warning")]
    severity: String,
    #[serde(default = "min_cov")]
    min_coverage: f64,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    summary: Option<String>,
    #[serde(default)]
    sites: Vec<String>,
}

fn warning() -> String {
    "warning".to_owned()
}

fn min_cov() -> f64 {
    0.95
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideRaw {
    site: String,
    rule: String,
    threshold: f64,
    clear: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RackRaw {
    site: String,
    rack: String,
    budget_kw: f64,
    #[serde(default = "derating")]
    derating: f64,
    feed_kw: Option<f64>,
    u_total: Option<u32>,
    u_used: Option<u32>,
}

fn derating() -> f64 {
    0.8
}

fn rule_from_raw(r: RuleRaw, path: &str, p: &mut Problems) -> Option<crate::alerts::Rule> {
    use crate::alerts::Subject;
    let before = p.0.len();
    if validate_id(&r.name).is_err() {
        p.push(
            format!("{path}.name"),
            "must match [A-Za-z0-9_.-]{1,64} (it is part of the alert's MQTT topic)",
        );
    }
    let window = |p: &mut Problems| match r.window.as_deref() {
        Some(w) if crate::engine::WINDOWS.iter().any(|(n, _)| *n == w) => Some(w.to_owned()),
        other => {
            p.push(
                format!("{path}.window"),
                format!("{other:?} is not one of 1m, 15m, 1h, 24h, 7d, 30d"),
            );
            None
        }
    };
    let subject = match r.subject.as_str() {
        "site_pue" => window(p).map(Subject::SitePue),
        "coverage" => window(p).map(Subject::Coverage),
        "power_ratio" => Some(Subject::PowerRatio),
        "node_offline" => Some(Subject::NodeOffline),
        "stale_meter" => Some(Subject::StaleMeter),
        "inlet_temperature" => Some(Subject::NodeMetric {
            metric: "temp_c".into(),
            component: "inlet".into(),
        }),
        "ups_on_battery" => Some(Subject::NodeMetric {
            metric: "ups_output_source".into(),
            component: String::new(),
        }),
        "node_metric" => match &r.metric {
            Some(m) => Some(Subject::NodeMetric {
                metric: m.clone(),
                component: r.component.clone().unwrap_or_default(),
            }),
            None => {
                p.push(format!("{path}.metric"), "node_metric needs a metric");
                None
            }
        },
        "rack_power_utilization" => Some(Subject::RackUtilization),
        "rack_failover_headroom" => Some(Subject::RackFailoverHeadroom),
        other => {
            p.push(
                format!("{path}.subject"),
                format!("unknown subject {other:?}"),
            );
            None
        }
    };
    if !r.threshold.is_finite() || r.clear.is_some_and(|c| !c.is_finite()) {
        p.push(format!("{path}.threshold"), "must be a finite number");
    }
    if !matches!(r.severity.as_str(), "info" | "warning" | "critical") {
        p.push(
            format!("{path}.severity"),
            "must be info, warning or critical",
        );
    }
    if !(0.0..=1.0).contains(&r.min_coverage) {
        p.push(format!("{path}.min_coverage"), "must be between 0 and 1");
    }
    if p.0.len() > before {
        return None;
    }
    let summary = r.summary.unwrap_or_else(|| {
        format!(
            "{} on {{site}} {{target}}: {{value}} (threshold {{threshold}})",
            r.name
        )
    });
    Some(crate::alerts::Rule {
        name: r.name,
        subject: subject?,
        op: r.op,
        threshold: r.threshold,
        clear: r.clear,
        for_ms: (r.for_secs.min(86_400 * 30) * 1000) as i64,
        keep_firing_for_ms: (r.keep_firing_for_secs.min(86_400 * 30) * 1000) as i64,
        severity: r.severity,
        min_coverage: r.min_coverage,
        labels: r.labels,
        summary,
        sites: r.sites,
        overrides: Default::default(),
    })
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
    /// Largest number of readings one batch may carry.
    pub max_readings_per_batch: usize,
    /// Most nodes known over all sites; messages from further new nodes are refused.
    pub max_nodes: usize,
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
    pub racks: Vec<crate::alerts::notify::RackBudget>,
    /// How often retained site summaries are published, when they are.
    pub summary_interval: Option<std::time::Duration>,
    /// The InfluxDB sink, when enabled.
    pub influx: Option<crate::sink::influx::InfluxConfig>,
    /// The embedded history, when enabled.
    pub history: Option<crate::history::HistoryConfig>,
    /// Where the engine is saved, when it is.
    pub state: Option<crate::state::StateConfig>,
    /// Fleet mode: site summaries in, the region out.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Each site's offset from UTC in seconds (for calendar periods); UTC when absent.
    pub site_offsets: std::collections::BTreeMap<String, i32>,
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
        let mut site_offsets = std::collections::BTreeMap::new();
        let mut site_categories = std::collections::BTreeMap::new();
        let mut site_expected = std::collections::BTreeMap::new();
        for (i, sr) in sites.iter().enumerate() {
            let mut expected = std::collections::BTreeMap::new();
            for (name, &n) in &sr.expected_meters {
                match Point::ALL.into_iter().find(|p| p.as_str() == name) {
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
            match parse_utc_offset(&sr.utc_offset) {
                Some(o) => {
                    site_offsets.insert(sr.site.clone(), o);
                }
                None => p.push(
                    format!("sites[{i}].utc_offset"),
                    format!("{:?} is not an offset like +08:00", sr.utc_offset),
                ),
            }
        }
        let fleet: FleetRaw = l.get_or_default("fleet", &mut p);
        if !(1..=86_400).contains(&fleet.stale_after_secs) {
            p.push("fleet.stale_after_secs", "must be 1..=86400");
        }
        let fleet = fleet.enabled.then(|| crate::fleet::FleetConfig {
            stale_after_ms: (fleet.stale_after_secs * 1000) as i64,
        });
        let state: StateRaw = l.get_or_default("state", &mut p);
        if !(1..=3600).contains(&state.interval_secs) {
            p.push("state.interval_secs", "must be 1..=3600");
        }
        if state.enabled && state.path.as_os_str().is_empty() {
            p.push("state.path", "must not be empty");
        }
        let state = state.enabled.then(|| crate::state::StateConfig {
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
        if intake.max_nodes == 0 {
            p.push("intake.max_nodes", "must be at least 1");
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
        let racks: Vec<crate::alerts::notify::RackBudget> = racks
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
                crate::alerts::notify::RackBudget {
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
        let mut cfg = CollectorConfig {
            state_dir,
            log,
            http_listen,
            http_token,
            broker: broker_cfg,
            mqtt: mqtt_cfg,
            intake: IntakeConfig {
                sites: intake.sites,
                max_host_power_w: intake.max_host_power_w,
                max_future_skew_ms: (intake.max_future_skew_secs.min(86_400 * 365) * 1000) as i64,
                queue_messages: intake.queue_messages,
                max_readings_per_batch: intake.max_readings_per_batch,
                max_nodes: intake.max_nodes,
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
            site_offsets,
        };
        cfg.resolve_paths();
        p.into_result(cfg)
    }
}

fn alerts_config(a: AlertsRaw, p: &mut Problems) -> Option<crate::alerts::notify::AlertsConfig> {
    use crate::alerts::notify::{AlertmanagerConfig, AlertsConfig, WebhookConfig};
    use std::time::Duration;
    let raw_rules = match a.rules {
        Some(r) => r,
        None => Loader::from_toml(DEFAULT_RULES)
            .ok()
            .and_then(|l| l.get_opt::<Vec<RuleRaw>>("alerts.rules", p))
            .unwrap_or_default(),
    };
    let mut rules: Vec<crate::alerts::Rule> = raw_rules
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| rule_from_raw(r, &format!("alerts.rules[{i}]"), p))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for r in &rules {
        if !names.insert(r.name.clone()) {
            p.push("alerts.rules", format!("rule name {:?} used twice", r.name));
        }
    }
    for (i, o) in a.overrides.iter().enumerate() {
        match rules.iter_mut().find(|r| r.name == o.rule) {
            Some(r) => {
                r.overrides.insert(o.site.clone(), (o.threshold, o.clear));
            }
            None => p.push(
                format!("alerts.overrides[{i}].rule"),
                format!("no rule named {:?}", o.rule),
            ),
        }
    }
    if !(1..=3600).contains(&a.evaluate_interval_secs) {
        p.push("alerts.evaluate_interval_secs", "must be 1..=3600");
    }
    let webhook = a.webhook.map(|w| {
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
            p.push("alerts.webhook.url", "must be an http:// or https:// URL");
        }
        let secret = match &w.secret_file {
            Some(f) => match dcwatt_common::secret::Secret::from_file(f) {
                Ok(s) => Some(s),
                Err(e) => {
                    p.push(
                        "alerts.webhook.secret_file",
                        format!("cannot read {}: {e}", f.display()),
                    );
                    None
                }
            },
            None => std::env::var("DCWATT_WEBHOOK_SECRET")
                .ok()
                .map(dcwatt_common::secret::Secret::new),
        };
        WebhookConfig {
            url: w.url,
            secret,
            timeout: Duration::from_secs(w.timeout_secs.clamp(1, 120)),
        }
    });
    let alertmanager = a.alertmanager.map(|m| {
        if !(m.url.starts_with("http://") || m.url.starts_with("https://")) {
            p.push(
                "alerts.alertmanager.url",
                "must be an http:// or https:// URL",
            );
        }
        AlertmanagerConfig {
            url: m.url,
            timeout: Duration::from_secs(m.timeout_secs.clamp(1, 120)),
            resend: Duration::from_secs(m.resend_interval_secs.clamp(1, 240)),
        }
    });
    a.enabled.then(|| AlertsConfig {
        rules,
        interval: Duration::from_secs(a.evaluate_interval_secs.max(1)),
        repeat: Duration::from_secs(a.repeat_interval_secs.max(1)),
        state_file: a.state_file,
        mqtt: a.mqtt,
        webhook,
        alertmanager,
    })
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
        assert_eq!(a.rules.len(), 8, "the shipped default rules");
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
}
