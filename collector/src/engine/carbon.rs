//! A live carbon-intensity series per site, published over MQTT on
//! `dcwatt/v1/{site}/carbon` (docs/protocol.md): grid emission factors over short
//! periods (an hour, a quarter hour) from a grid operator or a carbon-intensity service.
//! They take precedence over the configured factors where they cover a part of a window
//! or period. Still pure.

use super::kpi::{Basis, EmissionFactor};
use serde::{Deserialize, Serialize};

/// Intervals kept per site: 13 months of hourly factors for both bases. The oldest go
/// first, counted.
pub const MAX_INTERVALS: usize = 20_000;
/// Intervals one message may carry.
pub const MAX_PER_MESSAGE: usize = 1_000;
/// The longest interval one live factor may cover (a live series is not a yearly factor:
/// those belong in the configuration).
pub(super) const MAX_INTERVAL_MS: i64 = 31 * 86_400_000;

/// The topic of a site's carbon-intensity series.
pub fn topic(site: &str) -> String {
    format!("{}/{site}/carbon", dcwatt_common::protocol::TOPIC_ROOT)
}

/// A carbon-intensity message, as published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonMessage {
    /// Protocol version: 1.
    pub v: u32,
    /// The site, as in the topic.
    pub site: String,
    /// `location` (default) or `market`.
    #[serde(default)]
    pub basis: Option<String>,
    /// Where the factors come from (the service or grid operator).
    pub source: String,
    /// The factors.
    pub intervals: Vec<CarbonInterval>,
}

/// One factor over `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonInterval {
    /// Start, ms since the epoch.
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
    /// kg CO₂eq per kWh taken from the grid.
    pub kg_per_kwh: f64,
}

/// One site's live series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveCarbon {
    /// The factors, by start (then basis), none overlapping another of its basis; shared
    /// as they are with the views and snapshots (a copy of the series is cheap).
    pub factors: std::sync::Arc<[EmissionFactor]>,
    /// Intervals dropped because the series was full (the oldest first).
    pub dropped: u64,
}

impl CarbonMessage {
    /// Checks the message against its topic's site; the factors it carries.
    ///
    /// # Errors
    /// What is wrong, in words: the site, the version, the basis, an interval.
    pub fn factors(&self, topic_site: &str) -> Result<Vec<EmissionFactor>, String> {
        if self.v != 1 {
            return Err(format!("protocol version {} is not 1", self.v));
        }
        if self.site != topic_site {
            return Err(format!("payload names site {:?}", self.site));
        }
        let basis = match self.basis.as_deref() {
            None => Basis::Location,
            Some(b) => {
                Basis::parse(b).ok_or_else(|| format!("basis {b:?} is not location or market"))?
            }
        };
        if self.source.trim().is_empty() || self.source.len() > 200 {
            return Err("source must name the series (1 to 200 bytes)".to_owned());
        }
        if self.intervals.is_empty() || self.intervals.len() > MAX_PER_MESSAGE {
            return Err(format!(
                "{} intervals: a message carries 1 to {MAX_PER_MESSAGE}",
                self.intervals.len()
            ));
        }
        self.intervals
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let len = c.to_ms - c.from_ms;
                if len <= 0 || len > MAX_INTERVAL_MS {
                    return Err(format!(
                        "intervals[{i}]: to_ms must be after from_ms, by at most 31 days"
                    ));
                }
                if !(c.kg_per_kwh.is_finite() && (0.0..=3.0).contains(&c.kg_per_kwh)) {
                    return Err(format!(
                        "intervals[{i}]: kg_per_kwh {} must be 0..=3",
                        c.kg_per_kwh
                    ));
                }
                Ok(EmissionFactor {
                    from_ms: c.from_ms,
                    to_ms: c.to_ms,
                    kg_per_kwh: c.kg_per_kwh,
                    basis,
                    source: self.source.clone(),
                })
            })
            .collect()
    }
}

impl LiveCarbon {
    /// Adds factors: each replaces the ones of its basis it overlaps (the newest
    /// publication wins). Beyond [`MAX_INTERVALS`] the oldest are dropped and counted.
    pub fn add(&mut self, new: Vec<EmissionFactor>) {
        let mut factors = self.factors.to_vec();
        for f in new {
            factors.retain(|o| o.basis != f.basis || o.to_ms <= f.from_ms || f.to_ms <= o.from_ms);
            let at = factors
                .partition_point(|o| (o.from_ms, o.basis as u8) < (f.from_ms, f.basis as u8));
            factors.insert(at, f);
        }
        if factors.len() > MAX_INTERVALS {
            let extra = factors.len() - MAX_INTERVALS;
            factors.drain(..extra);
            self.dropped += extra as u64;
        }
        self.factors = factors.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: &str) -> CarbonMessage {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn a_message_is_checked_and_the_newest_factor_wins_where_they_overlap() {
        let m = msg(r#"{"v":1,"site":"dc","source":"grid operator","intervals":[
                {"from_ms":0,"to_ms":3600000,"kg_per_kwh":0.5},
                {"from_ms":3600000,"to_ms":7200000,"kg_per_kwh":0.4}]}"#);
        let f = m.factors("dc").expect("valid");
        assert_eq!((f[0].basis, f[1].kg_per_kwh), (Basis::Location, 0.4));
        assert!(m.factors("other").unwrap_err().contains("site"));
        let mut live = LiveCarbon::default();
        live.add(f);
        // A correction for the second hour replaces it; the first stays.
        let fix = msg(r#"{"v":1,"site":"dc","source":"grid operator","intervals":[
                {"from_ms":3600000,"to_ms":7200000,"kg_per_kwh":0.45}]}"#);
        live.add(fix.factors("dc").expect("valid"));
        let kg: Vec<f64> = live.factors.iter().map(|f| f.kg_per_kwh).collect();
        assert_eq!(kg, [0.5, 0.45]);
        for (bad, why) in [
            (
                r#"{"v":2,"site":"dc","source":"s","intervals":[{"from_ms":0,"to_ms":1,"kg_per_kwh":0.5}]}"#,
                "version",
            ),
            (
                r#"{"v":1,"site":"dc","source":"s","basis":"average","intervals":[{"from_ms":0,"to_ms":1,"kg_per_kwh":0.5}]}"#,
                "basis",
            ),
            (
                r#"{"v":1,"site":"dc","source":"s","intervals":[{"from_ms":5,"to_ms":1,"kg_per_kwh":0.5}]}"#,
                "intervals[0]",
            ),
            (
                r#"{"v":1,"site":"dc","source":"s","intervals":[{"from_ms":0,"to_ms":1,"kg_per_kwh":512}]}"#,
                "kg_per_kwh",
            ),
            (
                r#"{"v":1,"site":"dc","source":"","intervals":[{"from_ms":0,"to_ms":1,"kg_per_kwh":0.5}]}"#,
                "source",
            ),
            (
                r#"{"v":1,"site":"dc","source":"s","intervals":[]}"#,
                "intervals",
            ),
        ] {
            let err = msg(bad).factors("dc").unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_series_is_bounded_and_counts_what_it_drops() {
        let mut live = LiveCarbon::default();
        let hour = 3_600_000;
        let n = MAX_INTERVALS as i64 + 10;
        live.add(
            (0..n)
                .map(|i| EmissionFactor {
                    from_ms: i * hour,
                    to_ms: (i + 1) * hour,
                    kg_per_kwh: 0.5,
                    basis: Basis::Location,
                    source: "s".into(),
                })
                .collect(),
        );
        assert_eq!((live.factors.len(), live.dropped), (MAX_INTERVALS, 10));
        assert_eq!(live.factors[0].from_ms, 10 * hour, "the oldest went first");
    }
}
