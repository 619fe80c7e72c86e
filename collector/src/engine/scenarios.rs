//! Table-driven scenarios: small sites whose meters follow exact power profiles, each
//! with the PUE, quality, coverage and flags an energy engineer computes by hand.
//!
//! Every scenario runs 0..=90 s with samples each second (births say 1 s, so the gap bound
//! is 3 s) and is read at 90 s, when the 1-minute window is exactly [30 s, 90 s).

use super::*;
use crate::engine::racks::{rack_views, RackBudget};
use dcwatt_common::protocol::Reading;

const T0: i64 = 1_800_000_000_000;
const END_S: i64 = 90;

/// An exact power profile, W at second `t`.
#[derive(Debug, Clone, Copy)]
enum Profile {
    Const(f64),
    /// `w0` before `at` seconds, `w1` from then on.
    Step(f64, f64, f64),
    /// `w0 + slope × t`.
    Ramp(f64, f64),
}

impl Profile {
    fn watts(self, t: f64) -> f64 {
        match self {
            Profile::Const(w) => w,
            Profile::Step(w0, w1, at) => {
                if t < at {
                    w0
                } else {
                    w1
                }
            }
            Profile::Ramp(w0, k) => w0 + k * t,
        }
    }

    /// Exact energy over [0, t], J.
    fn energy(self, t: f64) -> f64 {
        match self {
            Profile::Const(w) => w * t,
            Profile::Step(w0, w1, at) => w0 * t.min(at) + w1 * (t - at).max(0.0),
            Profile::Ramp(w0, k) => w0 * t + k * t * t / 2.0,
        }
    }
}

/// How a meter reports.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Report {
    Counter,
    Gauge,
    /// A gauge and a counter of the same meter.
    Both,
    /// A gauge that is the mean over the second before it.
    Averaged,
}

/// One meter of a scenario.
#[derive(Debug, Clone, Copy)]
struct Feed {
    node: &'static str,
    point: Point,
    profile: Profile,
    report: Report,
    /// Samples off the whole second by up to ±200 ms (never on multiples of 10 s).
    jitter: bool,
    /// No samples over [from, to) seconds.
    silent: Option<(i64, i64)>,
    /// The counter wraps at this value (its range is published with it).
    wraps_at: Option<f64>,
    /// Counter value at 0 s.
    offset: f64,
    /// The counter restarts from zero at this second (a driver reload).
    reset_at: Option<i64>,
    /// The counter stops moving from this second on (a stale register).
    frozen_from: Option<i64>,
    zone: Option<&'static str>,
    rack: Option<&'static str>,
}

fn feed(node: &'static str, point: Point, profile: Profile, report: Report) -> Feed {
    Feed {
        node,
        point,
        profile,
        report,
        jitter: false,
        silent: None,
        wraps_at: None,
        offset: 0.0,
        reset_at: None,
        frozen_from: None,
        zone: None,
        rack: None,
    }
}

fn watts(node: &'static str, point: Point, w: f64) -> Feed {
    feed(node, point, Profile::Const(w), Report::Counter)
}

impl Feed {
    fn time_ms(&self, s: i64) -> i64 {
        let jitter = if self.jitter && s % 10 != 0 {
            (s * 7_919) % 401 - 200
        } else {
            0
        };
        T0 + s * 1000 + jitter
    }

    fn readings(&self, s: i64) -> Vec<Reading> {
        if self.silent.is_some_and(|(a, b)| (a..b).contains(&s)) {
            return Vec::new();
        }
        let ts = self.time_ms(s);
        let t = (ts - T0) as f64 / 1000.0;
        let mut counter = self.offset + self.profile.energy(t);
        if let Some(at) = self.reset_at.filter(|&at| s >= at) {
            counter = self.profile.energy(t) - self.profile.energy(at as f64);
        }
        if let Some(from) = self.frozen_from.filter(|&f| s >= f) {
            counter = self.offset + self.profile.energy(from as f64);
        }
        if let Some(w) = self.wraps_at {
            counter = counter.rem_euclid(w);
        }
        let mut out = Vec::new();
        if matches!(self.report, Report::Gauge | Report::Both) {
            out.push(Reading::gauge("power_w", self.profile.watts(t), ts));
        }
        if self.report == Report::Averaged {
            let mean = self.profile.energy(t) - self.profile.energy(t - 1.0);
            out.push(Reading::gauge("power_w", mean, ts).averaged_over(1000));
        }
        if matches!(self.report, Report::Counter | Report::Both) {
            let mut r = Reading::counter("energy_j", counter, ts);
            r.wraps_at = self.wraps_at;
            out.push(r);
        }
        for r in &mut out {
            r.point = Some(self.point);
            r.zone = self.zone.map(str::to_owned);
        }
        out
    }
}

/// What the 1-minute window and the flags must say.
#[derive(Debug, Clone, Copy)]
struct Expect {
    pue: Option<f64>,
    quality: &'static str,
    category: Option<u8>,
    coverage_it: f64,
    /// IT energy estimated for the uncovered meter-time, J.
    it_fill_j: f64,
    resets: u64,
    wraps: u64,
    frozen: u64,
    /// (zone, pPUE) over the same minute.
    ppue: Option<(&'static str, f64)>,
    /// (rack, power W, failover headroom W) for racks on A/B feeds.
    rack: Option<(&'static str, f64, f64)>,
}

const MEASURED: Expect = Expect {
    pue: None,
    quality: "measured",
    category: Some(3),
    coverage_it: 1.0,
    it_fill_j: 0.0,
    resets: 0,
    wraps: 0,
    frozen: 0,
    ppue: None,
    rack: None,
};

struct Scenario {
    name: &'static str,
    feeds: Vec<Feed>,
    /// `[[sites]] category` for the site.
    category: Option<u8>,
    /// A/B rack budgets: (rack, budget kW, derating, one feed kW).
    budgets: Vec<(&'static str, f64, f64, f64)>,
    expect: Expect,
}

fn scenario(name: &'static str, feeds: Vec<Feed>, expect: Expect) -> Scenario {
    Scenario {
        name,
        feeds,
        category: None,
        budgets: Vec::new(),
        expect,
    }
}

fn scenarios() -> Vec<Scenario> {
    use Point::{Cooling, FacilityInput as Fac, ItInput as It, PduOutput, UpsOutput};
    let three_levels = || {
        vec![
            watts("main", Fac, 2_000.0),
            watts("ups", UpsOutput, 1_600.0),
            watts("pdu", PduOutput, 1_500.0),
            watts("h1", It, 700.0),
            watts("h2", It, 700.0),
        ]
    };
    vec![
        scenario(
            "constant loads",
            vec![
                watts("main", Fac, 3_000.0),
                watts("h1", It, 1_200.0),
                watts("h2", It, 800.0),
            ],
            Expect {
                pue: Some(3_000.0 / 2_000.0),
                ..MEASURED
            },
        ),
        // Sampled each second, a step at 60 s is seen by the trapezoid as a ramp over
        // [59, 60): half a second of the difference moves into the step's second.
        scenario(
            "step change",
            vec![
                feed(
                    "main",
                    Fac,
                    Profile::Step(1_500.0, 2_500.0, 60.0),
                    Report::Gauge,
                ),
                feed(
                    "h1",
                    It,
                    Profile::Step(1_000.0, 2_000.0, 60.0),
                    Report::Gauge,
                ),
            ],
            Expect {
                pue: Some(
                    (29.0 * 1_500.0 + 2_000.0 + 30.0 * 2_500.0)
                        / (29.0 * 1_000.0 + 1_500.0 + 30.0 * 2_000.0),
                ),
                ..MEASURED
            },
        ),
        // Ramps are integrated exactly by the trapezoid wherever the samples fall:
        // ∫₃₀⁹⁰ (1000 + 10t) dt = 96 000 J of IT, plus 500 W × 60 s of overhead.
        scenario(
            "jittered sampling",
            vec![
                Feed {
                    jitter: true,
                    ..feed("main", Fac, Profile::Ramp(1_500.0, 10.0), Report::Gauge)
                },
                Feed {
                    jitter: true,
                    ..feed("h1", It, Profile::Ramp(1_000.0, 10.0), Report::Gauge)
                },
            ],
            Expect {
                pue: Some(126_000.0 / 96_000.0),
                ..MEASURED
            },
        ),
        // Silent from 39 s to 80 s: 41 s > the 3 s bound, so [39, 80) holds no measured IT
        // energy; the window keeps [30, 39) and [80, 90): 19 of 60 s. The counter's
        // increase over the gap (41 kJ) is the estimate for it, so the value is right and
        // marked partial.
        scenario(
            "gap longer than the bound",
            vec![
                watts("main", Fac, 1_500.0),
                Feed {
                    silent: Some((40, 80)),
                    ..watts("h1", It, 1_000.0)
                },
            ],
            Expect {
                pue: Some(1.5),
                quality: "partial",
                coverage_it: 19.0 / 60.0,
                it_fill_j: 41_000.0,
                ..MEASURED
            },
        ),
        // RAPL's package counter range (262 143.328 850 J): from 200 kJ at 1 kW it wraps
        // at 62.1 s; unwrapped, nothing is lost.
        scenario(
            "RAPL-style wrap",
            vec![
                watts("main", Fac, 1_500.0),
                Feed {
                    wraps_at: Some(262_143.328_85),
                    offset: 200_000.0,
                    ..watts("h1", It, 1_000.0)
                },
            ],
            Expect {
                pue: Some(1.5),
                wraps: 1,
                ..MEASURED
            },
        ),
        // A driver reload at 50 s restarts the counter from zero: [49, 50) is lost (the
        // delta across a reset is unknown), flagged, and coverage shows the lost second;
        // the meter's previous power held over it is the estimate (1 kJ).
        scenario(
            "NVML-style reset",
            vec![
                watts("main", Fac, 1_500.0),
                Feed {
                    offset: 7.3e6,
                    reset_at: Some(50),
                    ..watts("h1", It, 1_000.0)
                },
            ],
            Expect {
                pue: Some(1.5),
                quality: "partial",
                coverage_it: 59.0 / 60.0,
                it_fill_j: 1_000.0,
                resets: 1,
                ..MEASURED
            },
        ),
        // The register sticks at 40 s while the gauge shows 1 kW: after three still
        // samples the counter is taken for frozen, its zeros are taken back and the
        // gauge's energy counts instead, from 40 s on.
        scenario(
            "frozen meter",
            vec![
                watts("main", Fac, 1_500.0),
                Feed {
                    frozen_from: Some(40),
                    report: Report::Both,
                    ..watts("h1", It, 1_000.0)
                },
            ],
            Expect {
                pue: Some(1.5),
                frozen: 1,
                ..MEASURED
            },
        ),
        scenario(
            "mixed counter and gauge meters",
            vec![
                feed("main", Fac, Profile::Const(3_450.0), Report::Gauge),
                watts("h1", It, 1_000.0),
                feed("h2", It, Profile::Const(800.0), Report::Gauge),
                feed("h3", It, Profile::Const(500.0), Report::Both),
            ],
            Expect {
                pue: Some(3_450.0 / 2_300.0),
                ..MEASURED
            },
        ),
        // A BMC's mean over the last second counts over that second exactly, even on a
        // ramp: 96 000 J of IT against 2 500 W × 60 s.
        scenario(
            "averaged readings",
            vec![
                watts("main", Fac, 2_500.0),
                feed("h1", It, Profile::Ramp(1_000.0, 10.0), Report::Averaged),
            ],
            Expect {
                pue: Some(150_000.0 / 96_000.0),
                ..MEASURED
            },
        ),
        // UPS, PDU and host meters all report: category 3 (IT input) is used.
        scenario(
            "UPS, PDU and host meters: category 3",
            three_levels(),
            Expect {
                pue: Some(2_000.0 / 1_400.0),
                ..MEASURED
            },
        ),
        Scenario {
            category: Some(2),
            ..scenario(
                "UPS, PDU and host meters: category 2 set for the site",
                three_levels(),
                Expect {
                    pue: Some(2_000.0 / 1_500.0),
                    category: Some(2),
                    ..MEASURED
                },
            )
        },
        Scenario {
            category: Some(1),
            ..scenario(
                "UPS, PDU and host meters: category 1 set for the site",
                three_levels(),
                Expect {
                    pue: Some(2_000.0 / 1_600.0),
                    category: Some(1),
                    ..MEASURED
                },
            )
        },
        // Hall 1 has its own cooling meter: pPUE = (1 000 + 250) / 1 000; the site's PUE
        // counts all of the facility's 2 000 W over both halls' 1 500 W.
        scenario(
            "a zone with pPUE",
            vec![
                watts("main", Fac, 2_000.0),
                Feed {
                    zone: Some("hall1"),
                    ..watts("h1", It, 1_000.0)
                },
                Feed {
                    zone: Some("hall2"),
                    ..watts("h2", It, 500.0)
                },
                Feed {
                    zone: Some("hall1"),
                    ..watts("crah1", Cooling, 250.0)
                },
            ],
            Expect {
                pue: Some(2_000.0 / 1_500.0),
                ppue: Some(("hall1", 1.25)),
                ..MEASURED
            },
        ),
        // 10 kW rack derated to 8 kW on two 7 kW feeds: one feed carries 0.8 × 7 = 5.6 kW,
        // and the rack draws 5.5 kW: 100 W from the failover limit.
        Scenario {
            budgets: vec![("r1", 10.0, 0.8, 7.0)],
            ..scenario(
                "a rack on A/B feeds near its failover limit",
                vec![
                    watts("main", Fac, 7_000.0),
                    Feed {
                        rack: Some("r1"),
                        ..watts("h1", It, 2_750.0)
                    },
                    Feed {
                        rack: Some("r1"),
                        report: Report::Both,
                        ..watts("h2", It, 2_750.0)
                    },
                ],
                Expect {
                    pue: Some(7_000.0 / 5_500.0),
                    rack: Some(("r1", 5_500.0, 100.0)),
                    ..MEASURED
                },
            )
        },
        scenario(
            "facility below IT",
            vec![watts("main", Fac, 900.0), watts("h1", It, 1_000.0)],
            Expect {
                pue: None,
                quality: "invalid",
                ..MEASURED
            },
        ),
    ]
}

fn run(
    sc: &Scenario,
) -> (
    SiteView,
    ApplyStats,
    BTreeMap<String, crate::engine::RackPower>,
) {
    let mut cfg = EngineConfig::default();
    if let Some(c) = sc.category {
        cfg.site_categories.insert("dc".into(), c);
    }
    let mut e = Engine::new(cfg);
    for f in &sc.feeds {
        let rack = f
            .rack
            .map_or(String::new(), |r| format!(r#","rack":"{r}""#));
        let birth: StatusMessage = serde_json::from_str(&format!(
            r#"{{"v":1,"site":"dc","node":"{}","state":"online","ts_ms":1,"interval_ms":1000{rack}}}"#,
            f.node
        ))
        .expect("birth");
        e.apply_status(&birth, T0);
    }
    let mut stats = ApplyStats::default();
    for s in 0..=END_S {
        for f in &sc.feeds {
            let r = f.readings(s);
            if r.is_empty() {
                continue;
            }
            let st = e.apply_readings("dc", f.node, &r, f.time_ms(s) + 20);
            stats.counter_resets += st.counter_resets;
            stats.counter_wraps += st.counter_wraps;
            stats.frozen_counters += st.frozen_counters;
        }
    }
    let now = T0 + END_S * 1000 + 100;
    let view = e.site_view("dc", now).expect("site");
    (view, stats, e.rack_power("dc", now))
}

#[test]
fn scenarios_match_their_hand_computed_values() {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    for sc in scenarios() {
        let (view, stats, racks) = run(&sc);
        let x = &sc.expect;
        let w = view.pue.get("1m").expect("1m window");
        let name = sc.name;
        assert_eq!(
            (w.from_ms, w.to_ms),
            (Some(T0 + 30_000), Some(T0 + 90_000)),
            "{name}: window"
        );
        match (w.value, x.pue) {
            (Some(got), Some(want)) => assert!(close(got, want), "{name}: {got} ≠ {want}"),
            (got, want) => assert_eq!(got, want, "{name}: {w:?}"),
        }
        assert_eq!(w.quality, x.quality, "{name}: {w:?}");
        assert_eq!(w.category, x.category, "{name}: {w:?}");
        assert!(
            (w.coverage_it - x.coverage_it).abs() < 1e-6,
            "{name}: coverage {} ≠ {}",
            w.coverage_it,
            x.coverage_it
        );
        assert_eq!(
            (
                stats.counter_resets,
                stats.counter_wraps,
                stats.frozen_counters
            ),
            (x.resets, x.wraps, x.frozen),
            "{name}: resets, wraps, frozen"
        );
        assert!(
            (w.it_fill_kwh * 3.6e6 - x.it_fill_j).abs() < 1e-6,
            "{name}: IT fill {} J ≠ {} J",
            w.it_fill_kwh * 3.6e6,
            x.it_fill_j
        );
        assert_eq!(w.facility_fill_kwh, 0.0, "{name}: facility fill");
        if let Some(v) = x.pue.filter(|_| x.quality == "measured") {
            assert!(close(w.dcie.expect("DCiE"), 1.0 / v), "{name}: DCiE");
        }
        match x.ppue {
            Some((zone, want)) => {
                let z = view
                    .zones
                    .iter()
                    .find(|z| z.zone == zone)
                    .expect("zone view");
                let got = z.ppue["1m"].value.expect("pPUE");
                assert!(close(got, want), "{name}: pPUE {got} ≠ {want}");
                assert_eq!(view.zones.len(), 1, "{name}: only zones with own overhead");
            }
            None => assert!(view.zones.is_empty(), "{name}: {:?}", view.zones),
        }
        if let Some((rack, power, headroom)) = x.rack {
            let budgets: Vec<RackBudget> = sc
                .budgets
                .iter()
                .map(|&(r, kw, derating, feed_kw)| RackBudget {
                    site: "dc".into(),
                    rack: r.into(),
                    budget_w: kw * 1000.0,
                    derating,
                    feed_w: Some(feed_kw * 1000.0),
                    u_total: None,
                    u_used: None,
                })
                .collect();
            let v = rack_views("dc", &racks, &budgets);
            let r = v.iter().find(|v| v.rack == rack).expect("rack view");
            let got = r.power_w.expect("rack power");
            assert!(close(got, power), "{name}: rack power {got}");
            let got = r.failover_headroom_w.expect("headroom");
            assert!(close(got, headroom), "{name}: headroom {got} ≠ {headroom}");
        }
    }
}
