//! Per-reading checks: what the engine may never see. Each failure has a reason label that
//! `/metrics` counts.

use dcwatt_common::protocol::{
    is_meter_counter, validate_id, Kind, Point, Reading, Role, State, StatusMessage,
};

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
pub const REASONS: [&str; 22] = [
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
    "power_above_max",
    "value_out_of_range",
    "too_many_zones",
    "too_many_racks",
    "too_many_series",
    "too_fast",
    "metric_point_mismatch",
];

/// The most power any one meter can measure, W: a whole campus is below a gigawatt. A
/// reading above it is a glitch or an attack, and would overflow the energy sums.
pub const MAX_POWER_W: f64 = 1e9;

/// The largest magnitude any reading may have (a counter in joules of a gigawatt meter
/// runs 30 years before it reaches 1e18).
pub const MAX_VALUE: f64 = 1e18;

/// A birth's fields and their ranges (see docs/protocol.md).
pub mod birth {
    /// Shortest and longest batch interval an agent may announce, ms.
    pub const INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
    /// Longest agent version string, bytes.
    pub const MAX_AGENT_BYTES: usize = 128;
    /// Most sources a birth may list.
    pub const MAX_SOURCES: usize = 64;
    /// Most GPU models a birth may list.
    pub const MAX_GPU_MODELS: usize = 16;
    /// Longest GPU model name, bytes.
    pub const MAX_MODEL_BYTES: usize = 128;
    /// Most GPUs of one model in one node.
    pub const MAX_GPUS_PER_MODEL: u32 = 1_024;
    /// Highest FP16 TFLOPS one GPU may claim.
    pub const MAX_FP16_TFLOPS: f64 = 100_000.0;
}

/// Checks a status message's fields against their ranges: an online birth's interval,
/// agent string, sources and GPU inventory.
///
/// # Errors
/// What is wrong (the message is refused as `invalid_birth`).
pub fn check_birth(m: &StatusMessage) -> Result<(), String> {
    use birth::*;
    if m.state == State::Offline {
        return Ok(());
    }
    if let Some(i) = m.interval_ms {
        if !INTERVAL_MS.contains(&i) {
            return Err(format!(
                "interval_ms {i} outside {}..={}",
                INTERVAL_MS.start(),
                INTERVAL_MS.end()
            ));
        }
    }
    if let Some(a) = &m.agent {
        if a.len() > MAX_AGENT_BYTES || a.chars().any(char::is_control) {
            return Err(format!(
                "agent string of {} bytes (at most {MAX_AGENT_BYTES}, no control characters)",
                a.len()
            ));
        }
    }
    if m.sources.len() > MAX_SOURCES {
        return Err(format!(
            "{} sources (at most {MAX_SOURCES})",
            m.sources.len()
        ));
    }
    if let Some(s) = m
        .sources
        .iter()
        .find(|s| validate_id(&s.kind).is_err() || !INTERVAL_MS.contains(&s.interval_ms.max(100)))
    {
        return Err(format!("source {:?} every {} ms", s.kind, s.interval_ms));
    }
    if m.gpus.len() > MAX_GPU_MODELS {
        return Err(format!(
            "{} GPU models (at most {MAX_GPU_MODELS})",
            m.gpus.len()
        ));
    }
    for g in &m.gpus {
        if g.model.len() > MAX_MODEL_BYTES || g.model.chars().any(char::is_control) {
            return Err(format!("GPU model name of {} bytes", g.model.len()));
        }
        if g.count > MAX_GPUS_PER_MODEL {
            return Err(format!(
                "{} GPUs of one model (at most {MAX_GPUS_PER_MODEL})",
                g.count
            ));
        }
        if let Some(t) = g.fp16_tflops {
            if !(t.is_finite() && (0.0..=MAX_FP16_TFLOPS).contains(&t)) {
                return Err(format!("fp16_tflops {t} outside 0..={MAX_FP16_TFLOPS}"));
            }
        }
    }
    Ok(())
}

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
    if r.value.abs() > MAX_VALUE {
        return Err("value_out_of_range");
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
    // A wrap range belongs to an energy or water counter, and the counter is below it.
    if let Some(w) = r.wraps_at {
        if !is_meter_counter(&r.metric)
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
    // A water meter counts water, an electricity or heat meter energy: a reading that
    // puts one where the other belongs would turn cubic metres into kWh.
    if r.point.is_some_and(|p| p.mismatched(&r.metric)) {
        return Err("metric_point_mismatch");
    }
    match r.metric.as_str() {
        "water_m3" => {
            if r.kind != Kind::Counter {
                return Err("kind_mismatch");
            }
            if r.value < 0.0 {
                return Err("negative_value");
            }
        }
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
            if r.value > MAX_POWER_W {
                return Err("power_above_max");
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
        let mut cases: Vec<(Reading, Option<Role>, Result<(), &str>)> = vec![
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
        cases.extend([
            (
                Reading::gauge("power_w", 1e308, NOW).at(Point::FacilityInput),
                Some(Role::Meter),
                Err("value_out_of_range"),
            ),
            (
                Reading::gauge("power_w", 2e9, NOW).at(Point::FacilityInput),
                Some(Role::Meter),
                Err("power_above_max"),
            ),
            (
                Reading::gauge("power_w", 9e8, NOW).at(Point::FacilityInput),
                Some(Role::Meter),
                Ok(()),
            ),
            (
                Reading::counter("energy_j", 3e18, NOW),
                None,
                Err("value_out_of_range"),
            ),
            // Water meters count cubic metres at water_input, and nothing else does.
            (
                Reading::counter("water_m3", 1234.5, NOW).at(Point::WaterInput),
                Some(Role::Meter),
                Ok(()),
            ),
            (
                Reading::counter("water_m3", 10.0, NOW)
                    .at(Point::WaterInput)
                    .wrapping_at(100_000.0),
                Some(Role::Meter),
                Ok(()),
            ),
            (
                Reading::gauge("water_m3", 1.0, NOW).at(Point::WaterInput),
                Some(Role::Meter),
                Err("kind_mismatch"),
            ),
            (
                Reading::counter("water_m3", -1.0, NOW).at(Point::WaterInput),
                Some(Role::Meter),
                Err("negative_value"),
            ),
            (
                Reading::counter("water_m3", 1.0, NOW).at(Point::FacilityInput),
                Some(Role::Meter),
                Err("metric_point_mismatch"),
            ),
            (
                Reading::counter("energy_j", 1.0, NOW).at(Point::WaterInput),
                Some(Role::Meter),
                Err("metric_point_mismatch"),
            ),
            (
                Reading::gauge("power_w", 1.0, NOW).at(Point::WaterInput),
                Some(Role::Meter),
                Err("metric_point_mismatch"),
            ),
            (
                Reading::counter("energy_j", 5e9, NOW).at(Point::EnergyReused),
                Some(Role::Meter),
                Ok(()),
            ),
        ]);
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

    #[test]
    fn births_out_of_range_are_refused() {
        let ok: StatusMessage = serde_json::from_str(
            r#"{"v":1,"site":"s","node":"n","state":"online","ts_ms":1,"agent":"dcwatt-agent 0.3",
                "interval_ms":10000,"sources":[{"type":"rapl","interval_ms":1000}],
                "gpus":[{"model":"NVIDIA H200","count":8,"fp16_tflops":989.4}]}"#,
        )
        .expect("a birth");
        assert_eq!(check_birth(&ok), Ok(()));
        let bad = |f: &dyn Fn(&mut StatusMessage)| {
            let mut m = ok.clone();
            f(&mut m);
            check_birth(&m)
        };
        assert!(bad(&|m| m.interval_ms = Some(1_000_000_000_000_000_000)).is_err());
        assert!(bad(&|m| m.interval_ms = Some(0)).is_err());
        assert!(bad(&|m| m.agent = Some("x".repeat(970_000))).is_err());
        assert!(bad(&|m| m.agent = Some("a\nERROR forged".into())).is_err());
        assert!(bad(&|m| m.gpus = vec![m.gpus[0].clone(); 10_000]).is_err());
        assert!(bad(&|m| m.gpus[0].count = u32::MAX).is_err());
        assert!(bad(&|m| m.gpus[0].fp16_tflops = Some(-5.0)).is_err());
        assert!(bad(&|m| m.gpus[0].fp16_tflops = Some(f64::NAN)).is_err());
        assert!(bad(&|m| m.sources[0].kind = "a b".into()).is_err());
        // An offline will carries none of these.
        let mut off = ok.clone();
        off.state = State::Offline;
        off.interval_ms = Some(0);
        assert_eq!(check_birth(&off), Ok(()));
    }
}
