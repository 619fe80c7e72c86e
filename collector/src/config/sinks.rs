//! `[influx]`, `[history]`, `[state]`, `[summary]` and `[fleet]`: the sinks' sections.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FleetRaw {
    pub(super) enabled: bool,
    pub(super) stale_after_secs: u64,
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
pub(super) struct StateRaw {
    pub(super) enabled: bool,
    pub(super) path: std::path::PathBuf,
    pub(super) interval_secs: u64,
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
pub(super) struct InfluxRaw {
    pub(super) enabled: bool,
    pub(super) url: String,
    pub(super) org: String,
    pub(super) bucket: String,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<std::path::PathBuf>,
    pub(super) ca_file: Option<std::path::PathBuf>,
    pub(super) gzip: bool,
    pub(super) gzip_level: u32,
    pub(super) raw: bool,
    pub(super) batch_lines: usize,
    pub(super) flush_interval_ms: u64,
    pub(super) timeout_secs: u64,
    pub(super) buffer_mib: usize,
    pub(super) derived_interval_secs: u64,
    pub(super) queue_batches: usize,
    pub(super) spool_dir: std::path::PathBuf,
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
            gzip_level: 1,
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

pub(super) fn influx_config(
    r: InfluxRaw,
    p: &mut Problems,
) -> Option<crate::sinks::influx::InfluxConfig> {
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
    if !(1..=9).contains(&r.gzip_level) {
        p.push("influx.gzip_level", "must be 1 (fastest) to 9 (smallest)");
    }
    Some(crate::sinks::influx::InfluxConfig {
        url: r.url,
        org: r.org,
        bucket: r.bucket,
        token,
        ca_file: r.ca_file,
        gzip: r.gzip,
        gzip_level: r.gzip_level,
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
pub(super) struct HistoryRaw {
    pub(super) enabled: bool,
    pub(super) path: std::path::PathBuf,
    pub(super) retention_days: u64,
    pub(super) raw_retention_days: f64,
    pub(super) interval_secs: u64,
    pub(super) prune_interval_secs: u64,
    pub(super) queue_batches: usize,
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

pub(super) fn history_config(
    r: HistoryRaw,
    p: &mut Problems,
) -> Option<crate::sinks::history::HistoryConfig> {
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
    Some(crate::sinks::history::HistoryConfig {
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
pub(super) struct SummaryRaw {
    pub(super) enabled: bool,
    pub(super) interval_secs: u64,
}

impl Default for SummaryRaw {
    fn default() -> Self {
        SummaryRaw {
            enabled: true,
            interval_secs: 10,
        }
    }
}
