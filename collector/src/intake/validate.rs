//! Per-reading checks: what the engine may never see. Each failure has a reason label that
//! `/metrics` counts.

use dcwatt_common::protocol::{validate_id, Kind, Point, Reading, Role};

/// Limits for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest plausible power of one host, W.
    pub max_host_power_w: f64,
    /// How far in the future a timestamp may be, ms.
    pub max_future_skew_ms: i64,
    /// How old a reading may be, ms (older than the engine's buckets is useless).
    pub max_age_ms: i64,
}

/// Every reason a reading can be refused, for metrics that list zeros too.
pub const REASONS: [&str; 15] = [
    "non_finite",
    "invalid_location",
    "invalid_metric",
    "invalid_component",
    "kind_mismatch",
    "negative_power",
    "negative_energy",
    "power_above_host_max",
    "ratio_out_of_range",
    "future_timestamp",
    "stale_timestamp",
    "negative_value",
    "invalid_source",
    "invalid_average",
    "invalid_wrap",
];

/// Longest averaging window a reading may claim (`avg_ms`): one day.
pub const MAX_AVG_MS: u64 = 86_400_000;

fn valid_metric(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 64
        && m.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks one reading. `role` is the node's role from its birth, if known.
///
/// # Errors
/// The reason label.
pub fn check(
    r: &Reading,
    role: Option<Role>,
    now_ms: i64,
    lim: &Limits,
) -> Result<(), &'static str> {
    if !r.value.is_finite() {
        return Err("non_finite");
    }
    if !valid_metric(&r.metric) {
        return Err("invalid_metric");
    }
    if validate_id(&r.component).is_err() {
        return Err("invalid_component");
    }
    // An average is a mean power over a window: only a power gauge can be one, over a
    // window of at least a millisecond and at most a day.
    if let Some(w) = r.avg_ms {
        if r.metric != "power_w" || r.kind != Kind::Gauge || !(1..=MAX_AVG_MS).contains(&w) {
            return Err("invalid_average");
        }
    }
    // A wrap range belongs to an energy counter, and the counter is below it.
    if let Some(w) = r.wraps_at {
        if r.metric != "energy_j"
            || r.kind != Kind::Counter
            || !w.is_finite()
            || w <= 0.0
            || r.value >= w
        {
            return Err("invalid_wrap");
        }
    }
    // The source becomes a tag downstream (InfluxDB): an identifier, never free text.
    if r.source
        .as_ref()
        .is_some_and(|src| validate_id(src).is_err())
    {
        return Err("invalid_source");
    }
    if [&r.rack, &r.zone]
        .into_iter()
        .flatten()
        .any(|id| validate_id(id).is_err())
    {
        return Err("invalid_location");
    }
    if r.ts_ms > now_ms + lim.max_future_skew_ms {
        return Err("future_timestamp");
    }
    if r.ts_ms < now_ms - lim.max_age_ms {
        return Err("stale_timestamp");
    }
    match r.metric.as_str() {
        "power_w" => {
            if r.kind != Kind::Gauge {
                return Err("kind_mismatch");
            }
            if r.value < 0.0 {
                return Err("negative_power");
            }
            // One host's input: an it_input meter measures one server by definition.
            let one_host = role == Some(Role::Host) || r.point == Some(Point::ItInput);
            if one_host && r.value > lim.max_host_power_w {
                return Err("power_above_host_max");
            }
        }
        "energy_j" => {
            if r.kind != Kind::Counter {
                return Err("kind_mismatch");
            }
            if r.value < 0.0 {
                return Err("negative_energy");
            }
        }
        m if m.ends_with("_util") && !(0.0..=1.0).contains(&r.value) => {
            return Err("ratio_out_of_range");
        }
        m if (m.ends_with("_bytes") || m.ends_with("_w") || m.ends_with("_j")) && r.value < 0.0 => {
            return Err("negative_value");
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const LIM: Limits = Limits {
        max_host_power_w: 20_000.0,
        max_future_skew_ms: 300_000,
        max_age_ms: 86_400_000,
    };

    #[test]
    fn table() {
        let p = |v: f64| Reading::gauge("power_w", v, NOW).at(Point::ItInput);
        let cases: Vec<(Reading, Option<Role>, Result<(), &str>)> = vec![
            (p(350.0), None, Ok(())),
            (p(f64::NAN), None, Err("non_finite")),
            (p(f64::INFINITY), None, Err("non_finite")),
            (p(-1.0), None, Err("negative_power")),
            (p(1.0).from_source("ipmi_dcmi"), None, Ok(())),
            (
                p(1.0).from_source("free text, x=1"),
                None,
                Err("invalid_source"),
            ),
            (p(25_000.0), None, Err("power_above_host_max")),
            (
                Reading::gauge("power_w", 25_000.0, NOW).at(Point::FacilityInput),
                Some(Role::Meter),
                Ok(()),
            ),
            (
                Reading::gauge("power_w", 25_000.0, NOW).at(Point::Cooling),
                Some(Role::Host),
                Err("power_above_host_max"),
            ),
            (
                Reading::gauge("power_w", 1.0, NOW + 301_000),
                None,
                Err("future_timestamp"),
            ),
            (
                Reading::gauge("power_w", 1.0, NOW - 86_400_001),
                None,
                Err("stale_timestamp"),
            ),
            (
                Reading::counter("power_w", 1.0, NOW),
                None,
                Err("kind_mismatch"),
            ),
            (
                Reading::gauge("energy_j", 1.0, NOW),
                None,
                Err("kind_mismatch"),
            ),
            (
                Reading::counter("energy_j", -5.0, NOW),
                None,
                Err("negative_energy"),
            ),
            (
                Reading::gauge("cpu_util", 1.2, NOW),
                None,
                Err("ratio_out_of_range"),
            ),
            (
                Reading::gauge("mem_used_bytes", -1.0, NOW),
                None,
                Err("negative_value"),
            ),
            (
                Reading::gauge("Power W", 1.0, NOW),
                None,
                Err("invalid_metric"),
            ),
            (Reading::gauge("temp_c", -10.0, NOW), None, Ok(())),
            (p(300.0).averaged_over(60_000), None, Ok(())),
            (p(300.0).averaged_over(0), None, Err("invalid_average")),
            (
                Reading::counter("energy_j", 10.0, NOW).wrapping_at(100.0),
                None,
                Ok(()),
            ),
            (
                Reading::counter("energy_j", 100.0, NOW).wrapping_at(100.0),
                None,
                Err("invalid_wrap"),
            ),
            (
                Reading::counter("energy_j", 1.0, NOW).wrapping_at(f64::INFINITY),
                None,
                Err("invalid_wrap"),
            ),
            (p(300.0).wrapping_at(1000.0), None, Err("invalid_wrap")),
            (
                p(300.0).averaged_over(MAX_AVG_MS + 1),
                None,
                Err("invalid_average"),
            ),
            (
                Reading::gauge("temp_c", 30.0, NOW).averaged_over(60_000),
                None,
                Err("invalid_average"),
            ),
        ];
        for (r, role, want) in cases {
            assert_eq!(check(&r, role, NOW, &LIM), want, "{r:?}");
        }
        let mut bad = p(1.0);
        bad.component = "a/b".into();
        assert_eq!(check(&bad, None, NOW, &LIM), Err("invalid_component"));
        for reason in [
            "non_finite",
            "future_timestamp",
            "power_above_host_max",
            "invalid_average",
        ] {
            assert!(REASONS.contains(&reason));
        }
    }
}
