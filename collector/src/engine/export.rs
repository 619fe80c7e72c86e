//! What the engine hands to the history: closed minutes of energy per measurement point,
//! with the meter-time they cover and the meter-time expected, so that the PUE of any
//! period (a month, a quarter) can be computed later from sums, exactly as the rolling
//! windows are. Still pure.

use super::kpi::SiteKpiConfig;
use super::view::{choose, judge, quality_label, round6, LevelStat, WindowView, IT_LEVELS};
use super::{Engine, LevelRule};
use dcwatt_common::protocol::Point;
use std::collections::BTreeMap;

const MINUTE_MS: i64 = 60_000;
/// The 1-minute ring (see `RINGS`).
const MINUTE_RING: usize = 1;

/// One minute of one measurement point's energy at one site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteEnergy {
    /// Start of the minute, ms since the epoch.
    pub ts_ms: i64,
    /// Measurement point.
    pub point: Point,
    /// Energy, J.
    pub energy_j: f64,
    /// Meter-milliseconds covered by data.
    pub covered_ms: f64,
    /// Meter-milliseconds expected (every meter of the point known by then).
    pub expected_ms: f64,
    /// Part of the energy from estimated readings, J.
    pub estimated_j: f64,
    /// Energy estimated for the uncovered meter-time (gaps, resets), J: not in
    /// `energy_j`.
    pub filled_j: f64,
}

/// Sums over a period for one measurement point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeriodTotals {
    /// Energy, J.
    pub energy_j: f64,
    /// Meter-milliseconds covered.
    pub covered_ms: f64,
    /// Meter-milliseconds expected.
    pub expected_ms: f64,
    /// Estimated part of the energy, J.
    pub estimated_j: f64,
    /// Energy estimated for the uncovered meter-time, J.
    pub filled_j: f64,
    /// Closed minutes summed.
    pub minutes: u32,
}

impl PeriodTotals {
    /// Adds one minute.
    pub fn add(&mut self, m: &MinuteEnergy) {
        self.merge(&PeriodTotals {
            energy_j: m.energy_j,
            covered_ms: m.covered_ms,
            expected_ms: m.expected_ms,
            estimated_j: m.estimated_j,
            filled_j: m.filled_j,
            minutes: 1,
        });
    }

    /// Adds another period's sums.
    pub fn merge(&mut self, o: &PeriodTotals) {
        self.energy_j += o.energy_j;
        self.covered_ms += o.covered_ms;
        self.expected_ms += o.expected_ms;
        self.estimated_j += o.estimated_j;
        self.filled_j += o.filled_j;
        self.minutes = self.minutes.saturating_add(o.minutes);
    }

    fn stat(&self) -> LevelStat {
        LevelStat {
            value: self.energy_j,
            fill: self.filled_j,
            coverage: if self.expected_ms > 0.0 {
                (self.covered_ms / self.expected_ms).min(1.0)
            } else {
                0.0
            },
            estimated: self.estimated_j > 0.0,
            known: self.expected_ms > 0.0,
        }
    }
}

/// The PUE of a period from its per-point sums, by the same rules as the rolling windows:
/// one IT level (the site's set category, else the highest meeting the minimum coverage),
/// `invalid` below 1.0, coverage and quality stated; and the figures beyond PUE without
/// emission factors or contracts (see [`period_kpi_view`]).
pub fn period_view(
    totals: &BTreeMap<Point, PeriodTotals>,
    rule: LevelRule,
    from_ms: i64,
    to_ms: i64,
) -> WindowView {
    let parts = BTreeMap::from([(from_ms, totals.clone())]);
    period_kpi_view(&parts, rule, &SiteKpiConfig::default(), from_ms, to_ms)
}

/// The PUE and every figure beyond it over a period, from its per-point sums split at the
/// starts of the site's emission factor periods (`parts`, keyed by each part's start, as
/// [`SiteKpiConfig::boundaries`] gives them; a period without factors is one part).
pub fn period_kpi_view(
    parts: &BTreeMap<i64, BTreeMap<Point, PeriodTotals>>,
    rule: LevelRule,
    cfg: &SiteKpiConfig,
    from_ms: i64,
    to_ms: i64,
) -> WindowView {
    let mut totals: BTreeMap<Point, PeriodTotals> = BTreeMap::new();
    for part in parts.values() {
        for (p, t) in part {
            totals.entry(*p).or_default().merge(t);
        }
    }
    let mut v = pue_view(&totals, rule, from_ms, to_ms);
    let stat = |p: Point| totals.get(&p).copied().unwrap_or_default().stat();
    let starts: Vec<i64> = parts.keys().copied().collect();
    let kpi_parts = super::kpi::parts(&starts, to_ms, |p, a, _| {
        parts
            .get(&a)
            .and_then(|part| part.get(&p))
            .map_or(0.0, |t| t.energy_j + t.filled_j)
    });
    let it = v.category.and_then(Point::for_category).map(&stat);
    v.kpis = super::kpi::compute(&super::kpi::Inputs {
        facility: &stat(Point::FacilityInput),
        it: it.as_ref(),
        pue: (v.value, v.quality),
        water: &stat(Point::WaterInput),
        onsite: &stat(Point::RenewableOnsite),
        reused: &stat(Point::EnergyReused),
        parts: &kpi_parts,
        cfg,
        from_ms,
        to_ms,
    });
    v
}

fn pue_view(
    totals: &BTreeMap<Point, PeriodTotals>,
    rule: LevelRule,
    from_ms: i64,
    to_ms: i64,
) -> WindowView {
    let stat = |p: Point| totals.get(&p).copied().unwrap_or_default().stat();
    let fac = stat(Point::FacilityInput);
    let its: Vec<(u8, LevelStat)> = IT_LEVELS
        .iter()
        .filter_map(|&c| Point::for_category(c).map(|p| (c, stat(p))))
        .collect();
    let mut v = WindowView {
        label: "PUE, period".to_owned(),
        value: None,
        category: None,
        coverage_it: 0.0,
        coverage_facility: round6(fac.coverage),
        quality: "no_data",
        reason: Some("no IT meter data in the period".to_owned()),
        dcie: None,
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        span_share: None,
        facility_kwh: fac.value / 3.6e6,
        it_kwh: 0.0,
        facility_fill_kwh: fac.fill / 3.6e6,
        it_fill_kwh: 0.0,
        kpis: super::kpi::Kpis::default(),
    };
    let Some(i) = choose(&its, rule) else {
        if rule.category.is_some() {
            v.reason = Some(super::view::no_it_meter(rule));
        }
        return v;
    };
    let (category, it) = &its[i];
    let (value, quality, reason) = judge(&fac, it);
    v.label = quality_label(*category, "period");
    v.value = value;
    v.category = Some(*category);
    v.coverage_it = round6(it.coverage);
    v.quality = quality;
    v.reason = reason;
    v.dcie = value.map(|x| 1.0 / x);
    v.it_kwh = it.value / 3.6e6;
    v.it_fill_kwh = it.fill / 3.6e6;
    v
}

/// How far a reader (the history) has taken a site's closed minutes. The reader keeps it:
/// the engine only records what changed and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteCursor {
    /// End of the minutes taken so far.
    pub exported_to_ms: Option<i64>,
    /// The site's revision when they were taken.
    pub revision: u64,
}

/// What the engine's owner hands the history on each of its intervals: the snapshot of
/// that instant, and the closed minutes that changed since the last one.
#[derive(Debug, Clone)]
pub struct Export {
    /// Every site's derived values.
    pub snapshot: std::sync::Arc<super::Snapshot>,
    /// Closed minutes per site.
    pub minutes: Vec<(String, Vec<MinuteEnergy>)>,
    /// The last one, at shutdown: to be written even if it must wait.
    pub last: bool,
}

/// Minutes of energy a site remembers having changed (beyond what the minute ring holds,
/// nothing could be exported anyway).
const TOUCHED_MINUTES: usize = super::RINGS[MINUTE_RING].1;

impl super::Site {
    /// Notes that energy from `from_ms` on was added.
    pub(super) fn touch(&mut self, from_ms: i64) {
        self.revision += 1;
        self.touched
            .insert(from_ms.div_euclid(MINUTE_MS) * MINUTE_MS, self.revision);
        while self.touched.len() > TOUCHED_MINUTES {
            self.touched.pop_first();
        }
    }
}

impl Engine {
    /// The closed minutes of a site that changed since `cursor`: every minute from the
    /// earliest energy added since then (late data replayed from an agent's spool
    /// included) up to the last minute before the watermark, and the cursor to keep once
    /// they are safely handed over. Meant to be written with "insert or replace": a minute
    /// exported twice carries its complete, newer totals.
    pub fn closed_minutes(
        &self,
        site_id: &str,
        cursor: MinuteCursor,
        now_ms: i64,
    ) -> (Vec<MinuteEnergy>, MinuteCursor) {
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        let Some(site) = self.sites.get(site_id) else {
            return (Vec::new(), cursor);
        };
        let Some(wm) = site.watermark(now_ms, gf, di) else {
            return (Vec::new(), cursor);
        };
        let to = wm.div_euclid(MINUTE_MS) * MINUTE_MS;
        let dirty = site
            .touched
            .iter()
            .find(|(_, rev)| **rev > cursor.revision)
            .map(|(m, _)| *m);
        let from = match (dirty, cursor.exported_to_ms) {
            (Some(d), Some(e)) => d.min(e),
            (Some(d), None) => d,
            (None, Some(e)) => e,
            (None, None) => return (Vec::new(), cursor),
        };
        // Never older than the minute ring holds.
        let held = super::RINGS[MINUTE_RING].1 as i64 - 1;
        let from = from.max(to - held * MINUTE_MS);
        if from >= to {
            return (Vec::new(), cursor);
        }
        let unseen = site.unseen(
            site.levels.keys().copied(),
            self.cfg.site_expected.get(site_id),
            None,
        );
        let mut out = Vec::new();
        for (point, level) in &site.levels {
            let ring = &level.rings[MINUTE_RING];
            let point = *point;
            let never = unseen.get(&point).map_or(&[][..], Vec::as_slice);
            let spans: Vec<(i64, i64)> = site.spans(move |k, _| k.point == point, never).collect();
            let mut m = from;
            while m < to {
                let t = ring.sum(m, m + MINUTE_MS);
                let expected = super::view::expected_ms(spans.iter().copied(), m, m + MINUTE_MS);
                if t.covered_ms > 0.0 || expected > 0.0 || t.filled_j > 0.0 {
                    out.push(MinuteEnergy {
                        ts_ms: m,
                        point,
                        energy_j: t.energy_j,
                        covered_ms: t.covered_ms,
                        expected_ms: expected,
                        estimated_j: t.estimated_j,
                        filled_j: t.filled_j,
                    });
                }
                m += MINUTE_MS;
            }
        }
        let next = MinuteCursor {
            exported_to_ms: Some(to),
            revision: site.revision,
        };
        (out, next)
    }
}
