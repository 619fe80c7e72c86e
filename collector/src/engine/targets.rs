//! Per-site targets for the efficiency figures (PUE, WUE, REF, rack occupancy, IT load
//! utilization), with presets for the published ones, and where a site stands against
//! each. Still pure.

use serde::Serialize;

/// Which way a target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The figure must not be above the target (PUE, WUE).
    AtMost,
    /// The figure must not be below it (REF, occupancy, IT load utilization).
    AtLeast,
}

/// The figures a target can be set for, with the way each holds.
pub const FIGURES: [(&str, Direction); 5] = [
    ("pue", Direction::AtMost),
    ("wue", Direction::AtMost),
    ("ref", Direction::AtLeast),
    ("occupancy", Direction::AtLeast),
    ("it_utilization", Direction::AtLeast),
];

/// The direction of `kpi`'s targets.
pub fn direction(kpi: &str) -> Option<Direction> {
    FIGURES.iter().find(|(k, _)| *k == kpi).map(|(_, d)| *d)
}

/// One target of a site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `pue`, `wue`, `ref`, `occupancy` or `it_utilization`.
    pub kpi: &'static str,
    /// The limit.
    pub target: f64,
    /// At most or at least.
    pub direction: Direction,
    /// Where the figure comes from: a preset's document, or the site's configuration.
    pub source: String,
    /// False where dcwatt could not confirm the threshold in the primary text.
    pub confirmed: bool,
}

/// A published set of targets, by its `preset` name.
pub struct Preset {
    /// Name in `[[sites]] targets.preset`.
    pub name: &'static str,
    /// (figure, target) pairs.
    pub targets: &'static [(&'static str, f64)],
    /// The document.
    pub source: &'static str,
    /// Whether the thresholds were read in the primary text.
    pub confirmed: bool,
}

/// The presets (sources in docs/pue.md, "Targets").
pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "national_2025",
        targets: &[("pue", 1.5), ("occupancy", 0.6)],
        source: "NDRC, MIIT, NEA, NDA 数据中心绿色低碳发展专项行动计划 (2024): national average PUE below 1.5 and rack occupancy at least 60 % by end-2025",
        confirmed: true,
    },
    Preset {
        name: "hub_node",
        targets: &[("pue", 1.25), ("occupancy", 0.65)],
        source: "NDRC, CAC, MIIT, NEA 实施方案 (2021): national hub nodes PUE below 1.25; hub cluster occupancy at least 65 % (hub approvals, secondary source)",
        confirmed: false,
    },
    Preset {
        name: "green_dc_2025",
        targets: &[("pue", 1.3)],
        source: "national green data centre recommendation (2025): PUE at most 1.30 (secondary source)",
        confirmed: false,
    },
    Preset {
        name: "gb40879_grade1",
        targets: &[("pue", 1.2)],
        source: "GB 40879-2021 grade 1 (1.20 as widely reported; the grade table was not read in the primary text)",
        confirmed: false,
    },
    Preset {
        name: "gb40879_grade2",
        targets: &[("pue", 1.3)],
        source: "GB 40879-2021 grade 2 (1.30 as widely reported; the grade table was not read in the primary text)",
        confirmed: false,
    },
    Preset {
        name: "gb40879_grade3",
        targets: &[("pue", 1.5)],
        source: "GB 40879-2021 grade 3, the limit value (1.50 as widely reported; the grade table was not read in the primary text)",
        confirmed: false,
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Where a site stands against one target now, on the figure's value over the longest
/// window that has it (occupancy: now).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetView {
    /// The target.
    #[serde(flatten)]
    pub target: Target,
    /// The window the value is over: the longest that has it (`30d` once there are 30
    /// days of data); `now` for occupancy.
    pub window: &'static str,
    /// The figure; null while unknown.
    pub value: Option<f64>,
    /// `met`, `missed` or `no_data`.
    pub status: &'static str,
    /// How far the value is on the wrong side of the target (value − target for an
    /// at-most target, target − value for an at-least one): positive when missed.
    pub gap: Option<f64>,
}

impl Target {
    /// value − target (at most) or target − value (at least): positive when missed.
    pub fn gap(&self, value: f64) -> f64 {
        match self.direction {
            Direction::AtMost => value - self.target,
            Direction::AtLeast => self.target - value,
        }
    }

    /// The view of this target for `value` over `window`.
    pub fn view(&self, window: &'static str, value: Option<f64>) -> TargetView {
        let gap = value.map(|v| self.gap(v));
        TargetView {
            target: self.clone(),
            window,
            value,
            status: match gap {
                None => "no_data",
                Some(g) if g > 0.0 => "missed",
                Some(_) => "met",
            },
            gap,
        }
    }
}

/// The figure `kpi` of one window of a site view.
pub fn window_figure(w: &super::WindowView, kpi: &str) -> Option<f64> {
    match kpi {
        "pue" => w.value,
        other => w.kpis.get(other).and_then(|f| f.value),
    }
}

/// Where the site stands against each of its targets: on the longest rolling window that
/// has the figure (30 days once the site has that much data), occupancy now.
pub(super) fn views(targets: &[Target], v: &super::SiteView) -> Vec<TargetView> {
    targets
        .iter()
        .map(|t| match t.kpi {
            "occupancy" => t.view("now", v.capacity.occupancy),
            kpi => {
                let longest = v
                    .pue
                    .0
                    .iter()
                    .rev()
                    .find_map(|(name, w)| Some((*name, window_figure(w, kpi)?)));
                match longest {
                    Some((name, value)) => t.view(name, Some(value)),
                    None => t.view("30d", None),
                }
            }
        })
        .collect()
}

/// How the annual projection is made (stated with every answer).
pub const METHOD: &str = "annual = (year to date + the last 30 days' rate for the rest of the year), as a ratio of sums: (N_ytd + N_30d × r) / (D_ytd + D_30d × r), r = the time left in the local year / 30 days, N and D what the figure divides (PUE: facility and IT energy); at risk when the projection meets the target by less than 2 % of it or the last 30 days miss it";

/// What a figure of a period divides, kWh: the IT energy (PUE, WUE), the facility energy
/// (REF), the rated IT energy (IT load utilization), measured plus the estimate for
/// uncovered meter-time; and its numerator (the value times that). None without a value.
pub fn sums(v: &super::WindowView, kpi: &str) -> Option<(f64, f64)> {
    let value = window_figure(v, kpi)?;
    let den = match super::kpi::divides(kpi) {
        super::kpi::Divides::Facility => v.facility_kwh + v.facility_fill_kwh,
        super::kpi::Divides::RatedIt => v.kpis.rated_it_kwh?,
        super::kpi::Divides::It => v.it_kwh + v.it_fill_kwh,
    };
    (den > 0.0).then_some((value * den, den))
}

/// A target's annual projection from the year so far and the last 30 days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    /// The figure the year's trend implies; null without both periods' values.
    pub projected_annual: Option<f64>,
    /// `on_track`, `at_risk`, `will_exceed` (an at-most target: PUE, WUE),
    /// `will_fall_short` (an at-least target), or `no_data`.
    pub status: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// Projects `t` over the year from the year to date (`ytd`) and the last 30 days
/// (`last_30d`), with `remaining_ms` of the local year left.
pub fn project(
    t: &Target,
    ytd: &super::WindowView,
    last_30d: &super::WindowView,
    remaining_ms: i64,
) -> Projection {
    const MONTH_MS: f64 = 30.0 * 86_400_000.0;
    let (Some((n_y, d_y)), Some((n_m, d_m))) = (sums(ytd, t.kpi), sums(last_30d, t.kpi)) else {
        return Projection {
            projected_annual: None,
            status: "no_data",
            reason: format!(
                "no {} for the year to date or the last 30 days in the history",
                t.kpi
            ),
        };
    };
    let r = remaining_ms.max(0) as f64 / MONTH_MS;
    let annual = (n_y + n_m * r) / (d_y + d_m * r);
    let recent = n_m / d_m;
    let (status, reason) = if t.gap(annual) > 0.0 {
        let status = match t.direction {
            Direction::AtMost => "will_exceed",
            Direction::AtLeast => "will_fall_short",
        };
        (
            status,
            format!(
                "the year's trend implies {annual:.3} against a target of {}",
                t.target
            ),
        )
    } else if t.gap(recent) > 0.0 {
        (
            "at_risk",
            format!("the year so far meets the target but the last 30 days ({recent:.3}) do not"),
        )
    } else if t.gap(annual) > -0.02 * t.target {
        (
            "at_risk",
            format!(
                "the projection {annual:.3} meets the target {} by less than 2 %",
                t.target
            ),
        )
    } else {
        (
            "on_track",
            format!(
                "the year's trend implies {annual:.3} against a target of {}",
                t.target
            ),
        )
    };
    Projection {
        projected_annual: Some(annual),
        status,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A period of PUE `facility / it` (no fills).
    fn period(facility_kwh: f64, it_kwh: f64) -> super::super::WindowView {
        let totals = std::collections::BTreeMap::from([
            (
                dcwatt_common::protocol::Point::FacilityInput,
                super::super::PeriodTotals {
                    energy_j: facility_kwh * 3.6e6,
                    covered_ms: 1.0,
                    expected_ms: 1.0,
                    ..Default::default()
                },
            ),
            (
                dcwatt_common::protocol::Point::ItInput,
                super::super::PeriodTotals {
                    energy_j: it_kwh * 3.6e6,
                    covered_ms: 1.0,
                    expected_ms: 1.0,
                    ..Default::default()
                },
            ),
        ]);
        let rule = super::super::LevelRule {
            min_coverage: 0.95,
            category: None,
        };
        super::super::period_view(&totals, rule, 0, 1)
    }

    #[test]
    fn the_annual_projection_is_a_ratio_of_sums_and_says_where_it_leads() {
        let t = Target {
            kpi: "pue",
            target: 1.25,
            direction: Direction::AtMost,
            source: "test".into(),
            confirmed: true,
        };
        let month = 30 * 86_400_000;
        // Year so far 1.20 (1,200 / 1,000 MWh); the last 30 days 1.40 (140 / 100); 60 days
        // left: (1200 + 140 × 2) / (1000 + 100 × 2) = 1480 / 1200 = 1.2333: meets 1.25,
        // but the last 30 days do not.
        let p = project(
            &t,
            &period(1200.0, 1000.0),
            &period(140.0, 100.0),
            2 * month,
        );
        assert!(
            (p.projected_annual.unwrap() - 1480.0 / 1200.0).abs() < 1e-12,
            "{p:?}"
        );
        assert_eq!(p.status, "at_risk", "{p:?}");
        // 180 days left: (1200 + 140 × 6) / (1000 + 600) = 2040 / 1600 = 1.275: will exceed.
        let p = project(
            &t,
            &period(1200.0, 1000.0),
            &period(140.0, 100.0),
            6 * month,
        );
        assert!((p.projected_annual.unwrap() - 1.275).abs() < 1e-12, "{p:?}");
        assert_eq!(p.status, "will_exceed");
        // Steady at 1.15: on track.
        let p = project(
            &t,
            &period(1150.0, 1000.0),
            &period(115.0, 100.0),
            6 * month,
        );
        assert_eq!(p.status, "on_track", "{p:?}");
        // Steady at 1.24: within 2 % of the target, at risk.
        let p = project(
            &t,
            &period(1240.0, 1000.0),
            &period(124.0, 100.0),
            6 * month,
        );
        assert_eq!(p.status, "at_risk", "{p:?}");
        // No year to date: no projection.
        let p = project(&t, &period(0.0, 0.0), &period(124.0, 100.0), month);
        assert_eq!((p.projected_annual, p.status), (None, "no_data"));
    }

    #[test]
    fn a_target_is_met_missed_or_unknown_in_its_own_direction() {
        let pue = Target {
            kpi: "pue",
            target: 1.25,
            direction: Direction::AtMost,
            source: "test".into(),
            confirmed: true,
        };
        assert_eq!(pue.view("30d", Some(1.2)).status, "met");
        let over = pue.view("30d", Some(1.3));
        assert_eq!(over.status, "missed");
        assert!((over.gap.unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(pue.view("30d", None).status, "no_data");
        let occupancy = Target {
            kpi: "occupancy",
            direction: Direction::AtLeast,
            target: 0.65,
            ..pue
        };
        assert_eq!(occupancy.view("now", Some(0.7)).status, "met");
        assert_eq!(occupancy.view("now", Some(0.6)).status, "missed");
        for p in PRESETS {
            for (kpi, _) in p.targets {
                assert!(direction(kpi).is_some(), "{}: {kpi}", p.name);
            }
        }
    }
}
