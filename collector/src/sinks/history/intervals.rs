//! Interval energy for the online energy monitoring of key energy-using units
//! (docs/reports.md): each measurement point's energy (or water) in 15-minute intervals
//! aligned to the site's local quarter hours, each with its completeness, and the daily
//! and monthly totals summed from those same intervals, so that they reconcile exactly.

use super::store::{Store, StoreError};
use crate::engine::PeriodTotals;
use crate::zone::SiteZone;
use dcwatt_common::protocol::Point;
use serde::Serialize;

/// The steps an interval report may use: the specification's 15 minutes, or the 30 minutes
/// and one hour it allows where 15 are hard.
pub const STEPS_MS: [i64; 3] = [900_000, 1_800_000, 3_600_000];
/// Intervals one report may hold per point (31 days of 15-minute intervals).
pub const MAX_INTERVALS: i64 = 31 * 96;
/// Below this completeness an interval, a day or a month does not meet the
/// specification's 90 %.
pub const COMPLETE: f64 = 0.9;

const KWH_J: f64 = 3.6e6;

/// One interval, day or month of one point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amount {
    /// Start, ms since the epoch.
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
    /// Measured energy, kWh (water: L); for a day or month, the sum of its intervals.
    pub value: f64,
    /// The estimate for uncovered meter-time, not in `value`.
    pub fill: f64,
    /// The part of `value` that meters reported as estimated (an estimate source).
    pub estimated: f64,
    /// Meter-time covered over the meter-time the interval's meters owed over its whole
    /// length, 0..1 (0 for an interval with no minute recorded); for a day or month the
    /// mean of its intervals'.
    pub completeness: f64,
    /// The intervals it holds (1 for an interval).
    pub intervals: u32,
    /// Of those, the ones below 90 % complete.
    pub incomplete: u32,
}

/// One point's intervals and their totals.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The measurement point.
    pub point: &'static str,
    /// `electricity`, `water` or `heat`.
    pub energy_type: &'static str,
    /// `kWh` or `L`.
    pub unit: &'static str,
    /// Every interval of the report, in order (none left out: one without data has value
    /// 0 and completeness 0).
    pub intervals: Vec<Amount>,
    /// Local days, each the sum of its intervals in the report.
    pub days: Vec<Amount>,
    /// Local months, each the sum of its days in the report.
    pub months: Vec<Amount>,
    /// The whole report: the sum of its months.
    pub total: Amount,
}

/// A site's interval report over `[from, to)`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Start, aligned down to a step boundary in the site's zone.
    pub from_ms: i64,
    /// End, aligned up to one.
    pub to_ms: i64,
    /// The step, s.
    pub step_s: i64,
    /// Every point with minutes in the history, in the protocol's order.
    pub series: Vec<Series>,
}

impl Amount {
    fn empty(from_ms: i64, to_ms: i64) -> Self {
        Amount {
            from_ms,
            to_ms,
            value: 0.0,
            fill: 0.0,
            estimated: 0.0,
            completeness: 0.0,
            intervals: 0,
            incomplete: 0,
        }
    }

    fn interval(from_ms: i64, to_ms: i64, t: Option<&PeriodTotals>, per_unit: f64) -> Self {
        let mut a = Amount::empty(from_ms, to_ms);
        a.intervals = 1;
        if let Some(t) = t {
            a.value = t.energy_j / per_unit;
            a.fill = t.filled_j / per_unit;
            a.estimated = t.estimated_j / per_unit;
            // The meter-time expected over the whole interval: a minute the history has
            // no row for (the collector was down) is expected too, at the meters the
            // recorded minutes expected.
            let per_minute = t.expected_ms / f64::from(t.minutes.max(1));
            let expected = per_minute * (to_ms - from_ms) as f64 / 60_000.0;
            a.completeness = if expected > 0.0 {
                (t.covered_ms / expected).clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        a.incomplete = u32::from(a.completeness < COMPLETE);
        a
    }

    /// Adds a part (an interval to its day, a day to its month), in order.
    fn add(&mut self, part: &Amount) {
        let n = f64::from(self.intervals);
        let m = f64::from(part.intervals);
        self.value += part.value;
        self.fill += part.fill;
        self.estimated += part.estimated;
        if n + m > 0.0 {
            self.completeness = (self.completeness * n + part.completeness * m) / (n + m);
        }
        self.intervals += part.intervals;
        self.incomplete += part.incomplete;
    }
}

/// What a point measures, and the unit of its values.
fn kind_of(point: Point) -> (&'static str, &'static str, f64) {
    match point {
        Point::WaterInput => ("water", "L", 1.0),
        Point::EnergyReused => ("heat", "kWh", KWH_J),
        _ => ("electricity", "kWh", KWH_J),
    }
}

/// The start of the step `ts` falls in, aligned in the site's local time.
fn align(ts: i64, step: i64, zone: &SiteZone) -> i64 {
    let offset = i64::from(zone.offset_s_at(ts)) * 1000;
    ts - (ts + offset).rem_euclid(step)
}

/// Sums `parts` (in order) into the periods that `bounds` (ascending starts, then the
/// end of the last) cut them into.
fn roll_up(parts: &[Amount], bounds: &[i64]) -> Vec<Amount> {
    let mut out: Vec<Amount> = Vec::new();
    for p in parts {
        let (start, next) = crate::zone::step_of(bounds, p.from_ms).unwrap_or((p.from_ms, None));
        match out.last_mut() {
            Some(last) if last.from_ms == start => last.add(p),
            _ => {
                let mut a = Amount::empty(start, next.unwrap_or(p.to_ms));
                a.add(p);
                out.push(a);
            }
        }
    }
    for a in &mut out {
        a.to_ms = a.to_ms.min(parts.last().map_or(a.to_ms, |p| p.to_ms));
        a.from_ms = a
            .from_ms
            .max(parts.first().map_or(a.from_ms, |p| p.from_ms));
    }
    out
}

/// The starts of the local months over `[from, to)` and the end of the last.
fn month_starts(zone: &SiteZone, from: i64, to: i64) -> Vec<i64> {
    use chrono::Datelike;
    let Some(mut d) = zone.local(from).and_then(|l| l.date().with_day(1)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(start) = zone.midnight(d) {
        out.push(start);
        match d.checked_add_months(chrono::Months::new(1)) {
            Some(next) if start < to => d = next,
            _ => break,
        }
    }
    out
}

/// Checks a report's request: the step is one the specification allows and the span is
/// not too long.
///
/// # Errors
/// What is wrong, in words.
pub fn check(from: i64, to: i64, step: i64) -> Result<(), String> {
    if !STEPS_MS.contains(&step) {
        return Err("step must be 15m (the specification's), 30m or 1h".to_owned());
    }
    if (to - from) / step > MAX_INTERVALS {
        return Err(format!(
            "at most {MAX_INTERVALS} intervals a request (31 days of 15 minutes): ask month by month"
        ));
    }
    Ok(())
}

impl Store {
    /// The interval report of `site` over `[from, to)` in steps of `step` ms.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn intervals(
        &self,
        site: &str,
        from: i64,
        to: i64,
        step: i64,
        zone: &SiteZone,
    ) -> Result<Report, StoreError> {
        let from = align(from, step, zone);
        let last = align(to - 1, step, zone);
        let to = last + step;
        let bucket = |ts: i64| align(ts, step, zone);
        let steps = self.energy_steps(site, from, to, &bucket)?;
        let points: std::collections::BTreeSet<Point> =
            steps.values().flat_map(|m| m.keys().copied()).collect();
        let days = crate::zone::local_day_starts(zone, from, to, 1);
        let months = month_starts(zone, from, to);
        let series = points
            .into_iter()
            .map(|point| {
                let (energy_type, unit, per_unit) = kind_of(point);
                let intervals: Vec<Amount> = (0..)
                    .map(|i| from + i * step)
                    .take_while(|&t| t < to)
                    .map(|t| {
                        Amount::interval(
                            t,
                            t + step,
                            steps.get(&t).and_then(|m| m.get(&point)),
                            per_unit,
                        )
                    })
                    .collect();
                let by_day = roll_up(&intervals, &days);
                let by_month = roll_up(&by_day, &months);
                let mut total = Amount::empty(from, to);
                for m in &by_month {
                    total.add(m);
                }
                Series {
                    point: point.as_str(),
                    energy_type,
                    unit,
                    intervals,
                    days: by_day,
                    months: by_month,
                    total,
                }
            })
            .collect();
        Ok(Report {
            from_ms: from,
            to_ms: to,
            step_s: step / 1000,
            series,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MinuteEnergy;

    const MIN: i64 = 60_000;
    /// 2026-10-31T16:00:00Z: midnight of 1 November in +08:00.
    const NOV1: i64 = 1_793_462_400_000;

    fn minute(ts_ms: i64, point: Point, energy_j: f64, covered: f64) -> MinuteEnergy {
        MinuteEnergy {
            ts_ms,
            point,
            energy_j,
            covered_ms: covered * 60_000.0,
            expected_ms: 60_000.0,
            estimated_j: 0.0,
            filled_j: 0.0,
        }
    }

    fn store(name: &str) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("dcwatt-intervals-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let s = Store::open(&dir.join("h.sqlite")).expect("open");
        (s, dir)
    }

    /// Two days around the end of October in +08:00: 1.2 kW at the incomer every minute
    /// but for one quarter hour that is half covered (its meter silent for 7.5 minutes of
    /// each minute: covered 0.5) and one with no minute at all; 30 L of water a minute.
    #[test]
    fn quarter_hours_roll_up_to_days_and_months_exactly() {
        let (mut s, dir) = store("rollup");
        let zone = SiteZone::fixed(8 * 3600).expect("zone");
        let (from, to) = (NOV1 - 86_400_000, NOV1 + 86_400_000);
        let half = NOV1 + 10 * 900_000; // 02:30 local on 1 November
        let gap = NOV1 + 20 * 900_000; // 05:00
        let down = NOV1 + 30 * 900_000; // 07:30: the collector down after 5 minutes
        let mut batch = Vec::new();
        for ts in (from..to).step_by(MIN as usize) {
            if (gap..gap + 900_000).contains(&ts) || (down + 5 * MIN..down + 900_000).contains(&ts)
            {
                continue;
            }
            let covered = if (half..half + 900_000).contains(&ts) {
                0.5
            } else {
                1.0
            };
            batch.push(minute(
                ts,
                Point::FacilityInput,
                1_200.0 * 60.0 * covered,
                covered,
            ));
            batch.push(minute(ts, Point::WaterInput, 30.0, 1.0));
        }
        s.begin().expect("begin");
        s.put_minutes("dc", &batch).expect("put");
        s.commit().expect("commit");
        // From 23:07 local on 30 October: aligned down to 23:00.
        let r = s
            .intervals("dc", from + 7 * MIN, to, 900_000, &zone)
            .expect("report");
        assert_eq!((r.from_ms, r.to_ms, r.step_s), (from, to, 900));
        let fac = r
            .series
            .iter()
            .find(|x| x.point == "facility_input")
            .expect("incomer");
        assert_eq!((fac.energy_type, fac.unit), ("electricity", "kWh"));
        assert_eq!(fac.intervals.len(), 192);
        // A full quarter hour at 1.2 kW is 0.3 kWh.
        assert!((fac.intervals[0].value - 0.3).abs() < 1e-12);
        assert_eq!(fac.intervals[0].completeness, 1.0);
        let i = |t: i64| &fac.intervals[((t - from) / 900_000) as usize];
        assert_eq!((i(half).completeness, i(half).incomplete), (0.5, 1));
        assert!((i(half).value - 0.15).abs() < 1e-12);
        // The missing quarter hour is there, with nothing in it and said so.
        assert_eq!(
            (i(gap).value, i(gap).completeness, i(gap).incomplete),
            (0.0, 0.0, 1)
        );
        // Five minutes of fifteen recorded: a third complete, not whole.
        assert!((i(down).completeness - 1.0 / 3.0).abs() < 1e-12);
        assert!((i(down).value - 0.1).abs() < 1e-12);
        // Days are local: 31 October and 1 November, each the sum of its 96 intervals.
        assert_eq!(fac.days.len(), 2);
        assert_eq!((fac.days[0].from_ms, fac.days[1].from_ms), (from, NOV1));
        for d in &fac.days {
            let parts: Vec<&Amount> = fac
                .intervals
                .iter()
                .filter(|a| a.from_ms >= d.from_ms && a.from_ms < d.to_ms)
                .collect();
            assert_eq!(parts.len(), 96);
            let sum = parts.iter().fold(0.0, |s, a| s + a.value);
            assert_eq!(d.value, sum, "exactly the sum of its intervals");
        }
        assert!((fac.days[0].value - 28.8).abs() < 1e-9);
        // 1 November: 28.8 kWh less half a quarter hour, a whole one and two thirds of one.
        assert!((fac.days[1].value - (28.8 - 0.15 - 0.3 - 0.2)).abs() < 1e-9);
        assert_eq!(fac.days[1].incomplete, 3);
        let want = (93.0 + 0.5 + 1.0 / 3.0) / 96.0;
        assert!((fac.days[1].completeness - want).abs() < 1e-12);
        // Months: October's one day and November's one, each the sum of its days.
        assert_eq!(fac.months.len(), 2);
        assert_eq!(fac.months[0].value, fac.days[0].value);
        assert_eq!(fac.months[1].value, fac.days[1].value);
        assert_eq!(fac.total.value, fac.months[0].value + fac.months[1].value);
        assert_eq!(fac.total.intervals, 192);
        // Water in litres: 450 L a quarter hour; none in the missing one either.
        let water = r
            .series
            .iter()
            .find(|x| x.point == "water_input")
            .expect("water");
        assert_eq!((water.energy_type, water.unit), ("water", "L"));
        assert_eq!(water.intervals[0].value, 450.0);
        assert_eq!(water.total.value, 30.0 * (2.0 * 1440.0 - 25.0));
        assert!(check(from, to, 600_000).is_err());
        assert!(check(from, from + 32 * 86_400_000, 900_000).is_err());
        assert!(check(from, from + 31 * 86_400_000, 900_000).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
