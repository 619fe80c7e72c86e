//! `[engine]`, `[[sites]]` and `[[racks]]`: the engine's settings.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SiteRaw {
    pub(super) site: String,
    /// A fixed offset (`+08:00`): no daylight saving. UTC when neither is set.
    #[serde(default)]
    pub(super) utc_offset: Option<String>,
    /// An IANA zone (`Europe/Berlin`): days and months follow daylight saving.
    #[serde(default)]
    pub(super) time_zone: Option<String>,
    /// The PUE category the site reports at (1, 2 or 3); chosen from coverage when unset.
    #[serde(default)]
    pub(super) category: Option<u8>,
    /// Meters the site has per measurement point, e.g. `{ facility_input = 2,
    /// it_input = 500 }`: coverage counts those that never reported as missing.
    #[serde(default)]
    pub(super) expected_meters: std::collections::BTreeMap<String, u32>,
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
pub(super) struct EngineRaw {
    pub(super) min_coverage: f64,
    pub(super) gap_factor: f64,
    pub(super) default_interval_secs: u64,
    pub(super) frozen_gauge_readings: u32,
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
#[serde(deny_unknown_fields)]
pub(super) struct RackRaw {
    pub(super) site: String,
    pub(super) rack: String,
    pub(super) budget_kw: f64,
    #[serde(default = "derating")]
    pub(super) derating: f64,
    pub(super) feed_kw: Option<f64>,
    pub(super) u_total: Option<u32>,
    pub(super) u_used: Option<u32>,
}

pub(super) fn derating() -> f64 {
    0.8
}
