//! Engine tests: hand-computed expectations, no network, no clock.

use super::*;
use dcwatt_common::protocol::Reading;
use std::sync::Arc;

const T0: i64 = 1_800_000_000_000;

/// A meter with a counter: feeds power and the exact energy so far.
struct Meter {
    node: &'static str,
    point: Point,
    watts: f64,
    energy: f64,
    last: Option<i64>,
    /// The zone its readings name (a facility agent reading a hall's CRAH).
    zone: Option<&'static str>,
}

impl Meter {
    fn new(node: &'static str, point: Point, watts: f64) -> Self {
        Meter {
            node,
            point,
            watts,
            energy: 0.0,
            last: None,
            zone: None,
        }
    }

    fn in_zone(self, zone: &'static str) -> Self {
        Meter {
            zone: Some(zone),
            ..self
        }
    }

    fn readings(&mut self, t: i64) -> Vec<Reading> {
        if let Some(l) = self.last {
            self.energy += self.watts * (t - l) as f64 / 1000.0;
        }
        self.last = Some(t);
        let mut out = vec![
            Reading::gauge("power_w", self.watts, t).at(self.point),
            Reading::counter("energy_j", self.energy, t).at(self.point),
        ];
        for r in &mut out {
            r.zone = self.zone.map(str::to_owned);
        }
        out
    }
}

fn run(e: &mut Engine, meters: &mut [Meter], from_s: i64, to_s: i64) {
    for s in from_s..=to_s {
        let t = T0 + s * 1000;
        for m in meters.iter_mut() {
            let r = m.readings(t);
            e.apply_readings("dc", m.node, &r, t + 50);
        }
    }
}

fn engine() -> Engine {
    Engine::new(EngineConfig {
        default_interval_ms: 1_000,
        ..EngineConfig::default()
    })
}

/// A node's birth at site "dc", reporting every second, with `fields` (JSON members
/// such as `"role":"host","zone":"hall1"`) added.
fn birth(node: &str, fields: &str) -> StatusMessage {
    serde_json::from_str(&format!(
        r#"{{"v":1,"site":"dc","node":"{node}","state":"online","ts_ms":1,"interval_ms":1000,{fields}}}"#
    ))
    .expect("birth")
}

fn site(n_hosts: usize, host_w: f64, facility_w: f64) -> Vec<Meter> {
    const NAMES: [&str; 8] = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"];
    let mut v = vec![Meter::new("meter", Point::FacilityInput, facility_w)];
    v.extend(
        NAMES
            .iter()
            .take(n_hosts)
            .map(|n| Meter::new(n, Point::ItInput, host_w)),
    );
    v
}

#[test]
fn exact_pue_on_clean_counters() {
    let mut e = engine();
    let mut m = site(4, 250.0, 1500.0);
    run(&mut e, &mut m, 0, 130);
    let v = e.site_view("dc", T0 + 130_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!(w.value, Some(1.5), "{w:?}");
    assert_eq!(w.category, Some(3));
    assert_eq!((w.coverage_it, w.coverage_facility), (1.0, 1.0));
    assert_eq!(w.quality, "measured");
    assert_eq!(w.label, "PUE₃, 1m");
    assert_eq!(w.to_ms.unwrap() - w.from_ms.unwrap(), 60_000);
    assert!((w.it_kwh - 1000.0 * 60.0 / 3.6e6).abs() < 1e-12);
    assert_eq!(w.dcie, Some(1.0 / 1.5));
    // 15m: the window reaches back to the start of the data only.
    let w15 = v.pue.get("15m").unwrap();
    assert_eq!(w15.value, Some(1.5));
    assert!(w15.to_ms.unwrap() - w15.from_ms.unwrap() <= 130_000);
    // ... and says so: a 15 min PUE after two minutes is not a 15 min PUE.
    let span = w15.to_ms.unwrap() - w15.from_ms.unwrap();
    assert_eq!(w15.span_share, Some(view::round6(span as f64 / 900_000.0)));
    assert_eq!(w15.quality, "partial");
    assert_eq!(w15.reason.as_deref(), Some("2 min of 15 min so far"));
    assert_eq!(w.span_share, Some(1.0));
    // Live ratio is labelled as such.
    assert_eq!(v.power.ratio, Some(1.5));
    assert_eq!(v.power.facility_w, Some(1500.0));
    assert_eq!(v.power.it_w, Some(1000.0));
    assert!(v.power.label.contains("not PUE"));
    assert!(!v.stale);
}

#[test]
fn windows_wait_for_the_site_to_settle() {
    let mut e = engine();
    let mut m = site(2, 100.0, 300.0);
    run(&mut e, &mut m, 0, 1);
    let v = e.site_view("dc", T0 + 1_100).unwrap();
    assert_eq!(v.pue.get("1m").unwrap().value, None);
    assert_eq!(v.pue.get("1m").unwrap().quality, "no_data");
    assert_eq!(v.pue.get("1h").unwrap().value, None);
}

#[test]
fn gauges_are_integrated_by_trapezoid() {
    let mut e = engine();
    // Facility constant 600 W; IT ramps linearly 200 → 400 W over 100 s (trapezoid is exact).
    for s in 0..=100 {
        let t = T0 + s * 1000;
        e.apply_readings(
            "dc",
            "f",
            &[Reading::gauge("power_w", 600.0, t).at(Point::FacilityInput)],
            t,
        );
        let w = 200.0 + 2.0 * s as f64;
        e.apply_readings(
            "dc",
            "h",
            &[Reading::gauge("power_w", w, t).at(Point::ItInput)],
            t,
        );
    }
    let v = e.site_view("dc", T0 + 100_000).unwrap();
    let w = v.pue.get("1m").unwrap();
    let (from, to) = (
        (w.from_ms.unwrap() - T0) as f64 / 1000.0,
        (w.to_ms.unwrap() - T0) as f64 / 1000.0,
    );
    let it = 200.0 * (to - from) + (to * to - from * from);
    let fac = 600.0 * (to - from);
    assert!((w.value.unwrap() - fac / it).abs() < 1e-9, "{w:?}");
}

#[test]
fn counter_is_preferred_over_gauge() {
    let mut e = engine();
    for s in 0..=90 {
        let t = T0 + s * 1000;
        e.apply_readings(
            "dc",
            "f",
            &[Reading::counter("energy_j", 300.0 * s as f64, t).at(Point::FacilityInput)],
            t,
        );
        // The gauge lies (1000 W); the counter says 200 W.
        e.apply_readings(
            "dc",
            "h",
            &[
                Reading::gauge("power_w", 1000.0, t).at(Point::ItInput),
                Reading::counter("energy_j", 200.0 * s as f64, t).at(Point::ItInput),
            ],
            t,
        );
    }
    let v = e.site_view("dc", T0 + 90_000).unwrap();
    assert_eq!(v.pue.get("1m").unwrap().value, Some(1.5));
}

#[test]
fn never_integrates_across_a_gap_and_coverage_shows_it() {
    let mut e = engine();
    let mut m = site(2, 500.0, 1500.0);
    run(&mut e, &mut m, 0, 100);
    // h1 goes silent for 20 s (gap bound is 3 s), then comes back.
    let mut h1 = m.pop().unwrap();
    run(&mut e, &mut m, 101, 120);
    h1.last = None; // its counter keeps going, but no segment spans the gap
    h1.energy += 500.0 * 20.0;
    m.push(h1);
    run(&mut e, &mut m, 121, 170);
    let v = e.site_view("dc", T0 + 170_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    // Window [110, 170): h1 missing for [100, 121) → 11 s of 60 s.
    assert_eq!(w.from_ms, Some(T0 + 110_000));
    let expected = (60.0 + 49.0) / 120.0;
    assert!((w.coverage_it - expected).abs() < 1e-6, "{w:?}");
    assert_eq!(w.quality, "partial");
    let it_j = 500.0 * 60.0 + 500.0 * 49.0;
    assert!((w.it_kwh * 3.6e6 - it_j).abs() < 1e-6, "{w:?}");
    // The counter's increase over the gap (10 kJ over [100, 121)) is its estimate; 11 of
    // its 21 s fall in the window. The gauge does not fill the same stretch again.
    let fill = 10_000.0 * 11.0 / 21.0;
    assert!((w.it_fill_kwh * 3.6e6 - fill).abs() < 1e-6, "{w:?}");
    assert!((w.value.unwrap() - 1500.0 * 60.0 / (it_j + fill)).abs() < 1e-9);
}

#[test]
fn counter_resets_are_flagged_not_turned_into_energy() {
    let mut e = engine();
    let mut total = ApplyStats::default();
    for s in 0..=90 {
        let t = T0 + s * 1000;
        e.apply_readings(
            "dc",
            "f",
            &[Reading::counter("energy_j", 400.0 * s as f64, t).at(Point::FacilityInput)],
            t,
        );
        // The host's counter resets to 0 at 50 s (driver reload).
        let v = if s < 50 {
            1e6 + 200.0 * s as f64
        } else {
            200.0 * (s - 50) as f64
        };
        let st = e.apply_readings(
            "dc",
            "h",
            &[Reading::counter("energy_j", v, t).at(Point::ItInput)],
            t,
        );
        total.counter_resets += st.counter_resets;
    }
    assert_eq!(total.counter_resets, 1);
    let v = e.site_view("dc", T0 + 90_000).unwrap();
    let w = v.pue.get("1m").unwrap();
    // The lost second [49, 50) lowers coverage but never the ratio's honesty.
    assert!(w.value.unwrap() > 1.99 && w.value.unwrap() < 2.05, "{w:?}");
    assert!(w.coverage_it < 1.0);
}

#[test]
fn implausible_counter_jump_is_refused() {
    let mut e = engine();
    let a = e.apply_readings(
        "dc",
        "h",
        &[Reading::counter("energy_j", 0.0, T0).at(Point::ItInput)],
        T0,
    );
    let b = e.apply_readings(
        "dc",
        "h",
        &[Reading::counter("energy_j", 1e12, T0 + 1000).at(Point::ItInput)],
        T0 + 1000,
    );
    assert_eq!(a.implausible_jumps + b.implausible_jumps, 1);
}

#[test]
fn pue_below_one_is_invalid_with_a_reason() {
    let mut e = engine();
    let mut m = site(2, 500.0, 800.0);
    run(&mut e, &mut m, 0, 80);
    let v = e.site_view("dc", T0 + 80_000).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!(w.value, None);
    assert_eq!(w.quality, "invalid");
    assert!(w.reason.as_deref().unwrap().contains("metering error"));
    assert_eq!(v.power.ratio, None);
    assert_eq!(v.power.quality, "invalid");
}

#[test]
fn highest_category_with_enough_coverage_wins() {
    let mut e = engine();
    let mut m = site(4, 250.0, 1500.0);
    m.push(Meter::new("ups", Point::UpsOutput, 1100.0));
    run(&mut e, &mut m, 0, 70);
    let v = e.site_view("dc", T0 + 70_000).unwrap();
    assert_eq!(v.pue.get("1m").unwrap().category, Some(3));
    // Three of four hosts stop: category 3 coverage falls, the UPS output still covers all.
    m.retain(|x| x.node == "meter" || x.node == "ups" || x.node == "h0");
    run(&mut e, &mut m, 71, 200);
    let v = e.site_view("dc", T0 + 200_000).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!(w.category, Some(1), "{w:?}");
    assert!((w.value.unwrap() - 1500.0 / 1100.0).abs() < 1e-9);
    assert_eq!(w.label, "PUE₁, 1m");
    assert_eq!(v.power.category, Some(1));
    assert_eq!(v.power.coverage_it, 1.0);
}

#[test]
fn averaged_readings_count_over_their_own_window() {
    // A PDU reports its 10 s mean power every 10 s; the IT meter is exact at 1000 W.
    let mut e = Engine::new(EngineConfig {
        default_interval_ms: 10_000,
        ..EngineConfig::default()
    });
    let mut it = Meter::new("h", Point::ItInput, 1000.0);
    for k in 1..=12 {
        let t = T0 + k * 10_000;
        let mean = 1000.0 + 100.0 * k as f64;
        let avg = Reading::gauge("power_w", mean, t)
            .at(Point::FacilityInput)
            .averaged_over(10_000);
        e.apply_readings("dc", "pdu", &[avg], t + 50);
        e.apply_readings("dc", "h", &it.readings(t), t + 50);
    }
    let v = e.site_view("dc", T0 + 120_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    // Window (60 s, 120 s]: the means of windows 7..=12, 1950 W on average. Trapezoids
    // between the samples would give 1900 W.
    assert!((w.value.unwrap() - 1.95).abs() < 1e-9, "{w:?}");
    assert_eq!(w.coverage_facility, 1.0);
    // A window reaching back over the previous sample's is clipped, not counted twice;
    // one leaving a stretch uncovered lowers coverage.
    let mut e = Engine::new(EngineConfig {
        default_interval_ms: 10_000,
        ..EngineConfig::default()
    });
    let t = T0 + 10_000;
    let r = |w: f64, t: i64, avg: u64| {
        [Reading::gauge("power_w", w, t)
            .at(Point::FacilityInput)
            .averaged_over(avg)]
    };
    e.apply_readings("dc", "pdu", &r(600.0, t, 10_000), t);
    e.apply_readings("dc", "pdu", &r(600.0, t + 10_000, 30_000), t + 10_000);
    e.apply_readings("dc", "pdu", &r(600.0, t + 20_000, 4_000), t + 20_000);
    let v = e.site_view("dc", T0 + 30_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    // (0, 10] + (10, 20] + (26, 30] seconds at 600 W; 24 s of the 30 s covered.
    assert!(
        (w.facility_kwh - 600.0 * 24.0 / 3.6e6).abs() < 1e-12,
        "{w:?}"
    );
    assert!((w.coverage_facility - 0.8).abs() < 1e-9, "{w:?}");
}

#[test]
fn a_category_set_for_the_site_is_used_whatever_the_coverage() {
    let mut cfg = EngineConfig {
        default_interval_ms: 1_000,
        ..EngineConfig::default()
    };
    cfg.site_categories.insert("dc".to_owned(), 1);
    let mut e = Engine::new(cfg);
    let mut m = site(4, 250.0, 1500.0);
    m.push(Meter::new("ups", Point::UpsOutput, 1100.0));
    run(&mut e, &mut m, 0, 70);
    let v = e.site_view("dc", T0 + 70_000).unwrap();
    // Category 3 is fully covered, but the site reports at category 1.
    let w = v.pue.get("1m").unwrap();
    assert_eq!((w.category, w.label.as_str()), (Some(1), "PUE₁, 1m"));
    assert!((w.value.unwrap() - 1500.0 / 1100.0).abs() < 1e-9, "{w:?}");
    assert_eq!(v.power.category, Some(1));
    // Set at category 2, where nothing is metered: no value, and the reason says why.
    let mut cfg = e.config().clone();
    cfg.site_categories.insert("dc".to_owned(), 2);
    e.set_config(cfg);
    let v = e.site_view("dc", T0 + 70_000).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!((w.value, w.category, w.quality), (None, None, "no_data"));
    assert_eq!(
        w.reason.as_deref(),
        Some("no IT meter at category 2 (set for the site by sites.category)")
    );
    assert_eq!(v.power.ratio, None);
    // Periods from the history follow the same rule.
    let totals = BTreeMap::from([
        (
            Point::FacilityInput,
            PeriodTotals {
                energy_j: 3.0e6,
                covered_ms: 60_000.0,
                expected_ms: 60_000.0,
                estimated_j: 0.0,
                filled_j: 0.0,
                minutes: 1,
            },
        ),
        (
            Point::ItInput,
            PeriodTotals {
                energy_j: 2.0e6,
                covered_ms: 60_000.0,
                expected_ms: 60_000.0,
                estimated_j: 0.0,
                filled_j: 0.0,
                minutes: 1,
            },
        ),
    ]);
    let auto = period_view(
        &totals,
        EngineConfig::default().level_rule("dc"),
        T0,
        T0 + 60_000,
    );
    assert_eq!((auto.value, auto.category), (Some(1.5), Some(3)));
    let fixed = period_view(&totals, e.config().level_rule("dc"), T0, T0 + 60_000);
    assert_eq!((fixed.value, fixed.category), (None, None));
}

#[test]
fn stopping_a_quarter_of_hosts_lowers_coverage_and_flags_quality() {
    let mut e = engine();
    let mut m = site(8, 100.0, 1200.0);
    run(&mut e, &mut m, 0, 100);
    m.truncate(7); // meter + 6 of 8 hosts keep reporting
    run(&mut e, &mut m, 101, 130);
    let v = e.site_view("dc", T0 + 130_050).unwrap();
    assert_eq!(v.power.coverage_it, 0.75);
    assert_eq!(v.power.quality, "partial");
    assert_eq!(v.power.category, Some(3));
    let w = v.pue.get("1m").unwrap();
    // Window [70, 130): the two stopped hosts cover [70, 100] of it.
    let expected = (6.0 * 60.0 + 2.0 * 30.0) / (8.0 * 60.0);
    assert!((w.coverage_it - expected).abs() < 1e-6, "{w:?}");
    assert_eq!(w.quality, "partial");
    assert_eq!(v.nodes.stale, 2);
    // The silent hosts' last power (100 W each) stands in for their last 30 s: the value
    // stays the site's 1 200 W over 800 W instead of jumping with the missing share.
    assert!(
        (w.it_fill_kwh * 3.6e6 - 2.0 * 100.0 * 30.0).abs() < 1e-6,
        "{w:?}"
    );
    assert!((w.value.unwrap() - 1.5).abs() < 1e-9, "{w:?}");
    assert!((v.power.ratio.unwrap() - 1.5).abs() < 1e-9, "{:?}", v.power);
    assert_eq!(v.power.it_w, Some(600.0), "measured power stays measured");
}

#[test]
fn estimated_readings_mark_the_value() {
    let mut e = engine();
    for s in 0..=70 {
        let t = T0 + s * 1000;
        e.apply_readings(
            "dc",
            "f",
            &[Reading::gauge("power_w", 300.0, t).at(Point::FacilityInput)],
            t,
        );
        let mut r = Reading::gauge("power_w", 200.0, t).at(Point::ItInput);
        r.quality = Quality::Estimated;
        e.apply_readings("dc", "h", &[r], t);
    }
    let v = e.site_view("dc", T0 + 70_000).unwrap();
    assert_eq!(v.pue.get("1m").unwrap().quality, "estimated");
    assert_eq!(v.power.quality, "estimated");
}

#[test]
fn sequence_numbers() {
    let mut e = engine();
    assert_eq!(e.check_seq("dc", "n", 5, T0), SeqCheck::InOrder);
    assert_eq!(e.check_seq("dc", "n", 6, T0), SeqCheck::InOrder);
    assert_eq!(e.check_seq("dc", "n", 6, T0), SeqCheck::Duplicate);
    assert_eq!(e.check_seq("dc", "n", 10, T0), SeqCheck::Gap(3));
    assert_eq!(
        e.check_seq("dc", "n", 8, T0),
        SeqCheck::Late,
        "replayed from a spool"
    );
    assert_eq!(e.check_seq("dc", "n", 8, T0), SeqCheck::Duplicate);
    assert_eq!(
        e.check_seq("dc", "n", 5, T0),
        SeqCheck::Duplicate,
        "an old redelivery inside the window"
    );
    assert_eq!(e.check_seq("dc", "n", 11, T0), SeqCheck::InOrder);
    let n = &e.nodes("dc", 0).unwrap()[0];
    assert_eq!(
        (n.missing_batches, n.duplicate_batches, n.restarts, n.seq),
        (2, 3, 0, Some(11))
    );
    // 19,988 batches go missing only over the time they take (10 s each by default).
    let later = T0 + 19_988 * 10_000 / 2;
    assert_eq!(e.check_seq("dc", "n", 20_000, later), SeqCheck::Gap(19_988));
    assert_eq!(
        e.check_seq("dc", "n", 1, later),
        SeqCheck::Restart,
        "far below the window: the agent started over"
    );
    assert_eq!(e.check_seq("dc", "n", 2, later), SeqCheck::InOrder);
}

#[test]
fn sequence_numbers_cannot_falsify_the_counts() {
    let mut e = engine();
    // The largest numbers never overflow.
    assert_eq!(e.check_seq("dc", "n", 0, T0), SeqCheck::InOrder);
    assert_eq!(e.check_seq("dc", "n", u64::MAX, T0), SeqCheck::Restart);
    assert_eq!(e.check_seq("dc", "n", u64::MAX, T0), SeqCheck::Duplicate);
    assert_eq!(e.check_seq("dc", "n", 0, T0), SeqCheck::Restart);
    assert_eq!(e.check_seq("dc", "n", u64::MAX - 5, T0), SeqCheck::Restart);
    // A jump that the time since the last batch cannot explain is a restart: one batch
    // numbered 100,000 a second later is not 99,899 lost ones.
    assert_eq!(e.check_seq("dc", "n", 100, T0 + 1_000), SeqCheck::Restart);
    assert_eq!(
        e.check_seq("dc", "n", 100_000, T0 + 2_000),
        SeqCheck::Restart
    );
    // A gap the time explains is counted: 30 batches over 5 minutes at 10 s.
    assert_eq!(
        e.check_seq("dc", "n", 100_031, T0 + 302_000),
        SeqCheck::Gap(30)
    );
    let n = &e.nodes("dc", 0).unwrap()[0];
    assert_eq!((n.missing_batches, n.restarts), (30, 5));
    // Holes are ranges: many gaps never cost more than a bounded list.
    let mut seq = 100_031;
    for k in 0..1_000u64 {
        seq += 3;
        let _ = e.check_seq("dc", "n", seq, T0 + 310_000 + k as i64 * 30_000);
    }
    let n = &e.sites["dc"].nodes[0];
    assert!(
        n.holes.len() <= HOLE_RANGES,
        "{} hole ranges",
        n.holes.len()
    );
    // A late batch inside a remembered range fills it, once.
    assert_eq!(
        e.check_seq("dc", "n", seq - 1, T0 + 40_000_000),
        SeqCheck::Late
    );
    assert_eq!(
        e.check_seq("dc", "n", seq - 1, T0 + 40_000_000),
        SeqCheck::Duplicate
    );
}

#[test]
fn status_sets_inventory_and_offline() {
    let mut e = engine();
    let birth: StatusMessage = serde_json::from_str(
        r#"{"v":1,"site":"dc","node":"h","state":"online","ts_ms":1,"role":"meter","rack":"r1","interval_ms":2000}"#,
    )
    .unwrap();
    e.apply_status(&birth, T0);
    assert_eq!(e.node_role("dc", "h"), Some(Role::Meter));
    let n = &e.nodes("dc", T0).unwrap()[0];
    assert_eq!(
        (n.state, n.rack.as_deref(), n.interval_ms),
        ("online", Some("r1"), 2000)
    );
    e.apply_status(&StatusMessage::offline("dc", "h", 1), T0 + 10);
    assert_eq!(e.nodes("dc", T0 + 20).unwrap()[0].state, "offline");
    // Silence without a last will reads as stale.
    e.apply_status(&birth, T0 + 30);
    assert_eq!(e.nodes("dc", T0 + 30 + 6_001).unwrap()[0].state, "stale");
}

#[test]
fn live_data_after_offline_brings_the_node_back() {
    let mut e = engine();
    e.apply_status(&StatusMessage::offline("dc", "h", 1), T0);
    e.apply_readings(
        "dc",
        "h",
        &[Reading::gauge("power_w", 1.0, T0 + 5).at(Point::ItInput)],
        T0 + 5,
    );
    assert_eq!(e.nodes("dc", T0 + 5).unwrap()[0].state, "online");
}

#[test]
fn rack_power_prefers_pdu_outputs_over_host_inputs() {
    let mut e = engine();
    for (node, rack) in [("h1", "r1"), ("h2", "r1"), ("h3", "r2")] {
        e.apply_status(&birth(node, &format!(r#""rack":"{rack}""#)), T0);
    }
    let host = |w: f64| Reading::gauge("power_w", w, T0).at(Point::ItInput);
    e.apply_readings("dc", "h1", &[host(300.0)], T0);
    e.apply_readings("dc", "h2", &[host(200.0)], T0);
    e.apply_readings("dc", "h3", &[host(400.0)], T0);
    let mut outlet = Reading::gauge("power_w", 450.0, T0).at(Point::PduOutput);
    outlet.rack = Some("r2".into());
    outlet.component = "pdu-2.A1".into();
    e.apply_readings("dc", "facility", &[outlet], T0);
    let racks = e.rack_power("dc", T0 + 100);
    let w = |r: &str| racks.get(r).map(|p| (p.w, p.reporting, p.meters));
    assert_eq!(w("r1"), Some((500.0, 2, 2)), "hosts' inputs");
    assert_eq!(
        w("r2"),
        Some((450.0, 1, 1)),
        "the PDU's outlets, not the host as well"
    );
    let later = e.rack_power("dc", T0 + 10_000);
    assert_eq!(
        later.get("r1").map(|p| (p.reporting, p.meters)),
        Some((0, 2)),
        "stale meters are known but not live power"
    );
    let fresh = Reading::gauge("power_w", 410.0, T0 + 9_000).at(Point::ItInput);
    e.apply_readings("dc", "h3", &[fresh], T0 + 9_000);
    let later = e.rack_power("dc", T0 + 10_000);
    assert_eq!(
        later.get("r2").map(|p| (p.w, p.reporting, p.meters)),
        Some((410.0, 1, 1)),
        "a silent PDU gives way to the host that reports"
    );
}

#[test]
fn week_and_month_windows_use_hour_buckets() {
    let mut e = engine();
    // Hosts report every 10 minutes for 3 days (gap bound 30 min): long windows only.
    let mut m = site(2, 500.0, 1500.0);
    let step = 600_000;
    for k in 0..=(3 * 144) {
        let t = T0 + k * step;
        for x in m.iter_mut() {
            let r = x.readings(t);
            e.apply_readings("dc", x.node, &r, t);
        }
    }
    let now = T0 + 3 * 86_400_000 + 1_000;
    let v = e.site_view("dc", now).unwrap();
    for name in ["24h", "7d", "30d"] {
        let w = v.pue.get(name).unwrap();
        assert_eq!(w.value, Some(1.5), "{name}: {w:?}");
        assert_eq!(w.coverage_it, 1.0, "{name}");
    }
    let w7 = v.pue.get("7d").unwrap();
    assert_eq!(w7.from_ms.unwrap() % 3_600_000, 0, "hour-aligned");
    assert!(
        w7.to_ms.unwrap() - w7.from_ms.unwrap() >= 2 * 86_400_000,
        "covers the data it has"
    );
    assert_eq!(v.pue.get("7d").unwrap().label, "PUE₃, 7d");
}

#[test]
fn a_frozen_counter_gives_way_to_the_gauge() {
    let mut e = engine();
    let mut frozen = 0;
    for k in 0..=90 {
        let t = T0 + k * 1000;
        e.apply_readings(
            "dc",
            "f",
            &[Reading::gauge("power_w", 600.0, t).at(Point::FacilityInput)],
            t,
        );
        // The host's energy register is stuck (a stale cache) while it draws 400 W.
        let st = e.apply_readings(
            "dc",
            "h",
            &[
                Reading::gauge("power_w", 400.0, t).at(Point::ItInput),
                Reading::counter("energy_j", 5.0e6, t).at(Point::ItInput),
            ],
            t,
        );
        frozen += st.frozen_counters;
    }
    assert_eq!(frozen, 1, "flagged once");
    let v = e.site_view("dc", T0 + 90_000).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!(
        w.value,
        Some(1.5),
        "energy from the gauge, not a zero from the stuck counter: {w:?}"
    );
    assert_eq!(w.coverage_it, 1.0);
}

#[test]
fn capacity_in_standard_racks_and_fp16() {
    let mut cfg = EngineConfig {
        default_interval_ms: 1_000,
        ..EngineConfig::default()
    };
    cfg.rack_budgets
        .insert(("dc".into(), "r1".into()), 10_000.0);
    cfg.rack_budgets.insert(("dc".into(), "r2".into()), 5_000.0);
    cfg.rack_budgets
        .insert(("other".into(), "r1".into()), 99_000.0);
    let mut e = Engine::new(cfg);
    let birth: StatusMessage = serde_json::from_str(
        r#"{"v":1,"site":"dc","node":"g1","state":"online","ts_ms":1,"rack":"r1","interval_ms":1000,
            "gpus":[{"model":"NVIDIA H200","count":8,"fp16_tflops":989.4},{"model":"Mystery","count":2}]}"#,
    )
    .unwrap();
    e.apply_status(&birth, T0);
    e.apply_readings(
        "dc",
        "g1",
        &[Reading::gauge("power_w", 6_000.0, T0).at(Point::ItInput)],
        T0,
    );
    let c = e.site_view("dc", T0 + 100).unwrap().capacity;
    assert_eq!((c.racks, c.racks_in_use), (2, 1));
    assert_eq!(c.standard_racks, 6.0, "15 kW of budgets / 2.5 kW");
    assert_eq!(c.standard_racks_in_use, 4.0, "r1 only");
    assert_eq!((c.gpus, c.gpus_without_fp16_figure), (10, 2));
    assert!((c.fp16_pflops - 8.0 * 0.9894).abs() < 1e-9);
    assert_eq!(c.fp16_pflops_in_use, None, "no GPU utilization yet");
    // Half the GPUs at 100 %, half idle: half the capacity in use.
    let utils: Vec<Reading> = (0..8)
        .map(|i| {
            let mut r = Reading::gauge("gpu_util", if i < 4 { 1.0 } else { 0.0 }, T0 + 500);
            r.component = format!("gpu{i}").into();
            r
        })
        .collect();
    e.apply_readings("dc", "g1", &utils, T0 + 500);
    let c = e.site_view("dc", T0 + 600).unwrap().capacity;
    assert!(
        (c.fp16_pflops_in_use.unwrap() - 4.0 * 0.9894).abs() < 1e-9,
        "{c:?}"
    );
    assert_eq!((c.storage_bytes, c.storage_used_bytes), (None, None));
    // Storage: the latest disk totals of the nodes, summed (an older value is replaced).
    for (node, total, used) in [("g1", 4e12, 1e12), ("g2", 2e12, 5e11), ("g1", 8e12, 2e12)] {
        let disks = [
            Reading::gauge("disk_total_bytes", total, T0 + 700),
            Reading::gauge("disk_used_bytes", used, T0 + 700),
        ];
        e.apply_readings("dc", node, &disks, T0 + 700);
    }
    let c = e.site_view("dc", T0 + 800).unwrap().capacity;
    assert_eq!(c.storage_bytes, Some(10_000_000_000_000));
    assert_eq!(c.storage_used_bytes, Some(2_500_000_000_000));
}

#[test]
fn exported_minutes_sum_to_the_energy_and_give_the_same_pue_as_a_window() {
    let mut e = engine();
    let mut cur = MinuteCursor::default();
    let mut m = site(4, 250.0, 1500.0);
    // T0 is a whole minute: 0..=330 s covers minutes 0..4 completely.
    assert_eq!(T0 % 60_000, 0);
    run(&mut e, &mut m, 0, 330);
    let now = T0 + 330_100;
    let minutes = take(&e, &mut cur, now);
    // Five closed minutes for two points (the watermark is at 330 s).
    let fac: Vec<&MinuteEnergy> = minutes
        .iter()
        .filter(|x| x.point == Point::FacilityInput)
        .collect();
    let it: Vec<&MinuteEnergy> = minutes
        .iter()
        .filter(|x| x.point == Point::ItInput)
        .collect();
    assert_eq!(fac.len(), 5, "{minutes:?}");
    assert_eq!(it.len(), 5);
    for (f, i) in fac.iter().zip(&it) {
        assert_eq!(f.ts_ms, i.ts_ms);
        assert!((f.energy_j - 1500.0 * 60.0).abs() < 1e-6, "{f:?}");
        assert!((i.energy_j - 1000.0 * 60.0).abs() < 1e-6, "{i:?}");
        assert_eq!(i.covered_ms, 4.0 * 60_000.0);
        assert_eq!(i.expected_ms, 4.0 * 60_000.0);
    }
    let mut totals = BTreeMap::new();
    for x in &minutes {
        totals
            .entry(x.point)
            .or_insert_with(PeriodTotals::default)
            .add(x);
    }
    let v = period_view(
        &totals,
        crate::engine::EngineConfig::default().level_rule("dc"),
        T0,
        T0 + 300_000,
    );
    assert_eq!(v.value, Some(1.5));
    assert_eq!(v.category, Some(3));
    assert_eq!(v.quality, "measured");
    assert_eq!(v.label, "PUE₃, period");
    assert!((v.facility_kwh - 1500.0 * 300.0 / 3.6e6).abs() < 1e-9);
    // Nothing new: nothing to export.
    assert!(take(&e, &mut cur, now).is_empty());
    // The next minute closes: only it is exported.
    run(&mut e, &mut m, 331, 400);
    let next = take(&e, &mut cur, T0 + 400_100);
    assert!(next.iter().all(|x| x.ts_ms == T0 + 300_000), "{next:?}");
    assert_eq!(next.len(), 2);
}

#[test]
fn late_energy_reexports_the_minutes_it_lands_in() {
    let mut e = engine();
    let mut cur = MinuteCursor::default();
    let mut m = site(2, 500.0, 1200.0);
    run(&mut e, &mut m, 0, 200);
    let first = take(&e, &mut cur, T0 + 200_100);
    assert_eq!(
        first.iter().filter(|x| x.point == Point::ItInput).count(),
        3
    );
    // A third host's batches from minute 1, replayed late from its spool.
    let mut late = Meter::new("h9", Point::ItInput, 100.0);
    for s in 60..=120 {
        let t = T0 + s * 1000;
        e.apply_readings("dc", "h9", &late.readings(t), T0 + 200_200);
    }
    let again = take(&e, &mut cur, T0 + 200_300);
    let minute1: Vec<&MinuteEnergy> = again
        .iter()
        .filter(|x| x.point == Point::ItInput && x.ts_ms == T0 + 60_000)
        .collect();
    assert_eq!(minute1.len(), 1, "{again:?}");
    assert!((minute1[0].energy_j - (1000.0 + 100.0) * 60.0).abs() < 1e-6);
}

#[test]
fn rack_load_is_the_mean_of_its_hosts_cpu_and_gpus() {
    let mut e = engine();
    for (node, rack) in [("a", "r1"), ("b", "r1"), ("c", "r2"), ("m", "r1")] {
        let role = if node == "m" { "meter" } else { "host" };
        let fields = format!(r#""role":"{role}","rack":"{rack}""#);
        e.apply_status(&birth(node, &fields), T0);
    }
    let gpu = |c: &str, v: f64| {
        let mut r = Reading::gauge("gpu_util", v, T0);
        r.component = c.into();
        r
    };
    let a = vec![
        Reading::gauge("cpu_util", 0.2, T0),
        gpu("gpu0", 0.5),
        gpu("gpu1", 1.0),
    ];
    e.apply_readings("dc", "a", &a, T0);
    e.apply_readings("dc", "b", &[Reading::gauge("cpu_util", 0.6, T0)], T0);
    let loads = e.rack_loads("dc", T0 + 500);
    let r1 = loads["r1"];
    assert_eq!(r1.hosts, 2, "the meter is not a host");
    assert!((r1.cpu_util().unwrap() - 0.4).abs() < 1e-12);
    assert!((r1.gpu_util().unwrap() - 0.75).abs() < 1e-12);
    assert_eq!((loads["r2"].hosts, loads["r2"].cpu_util()), (1, None));
    // Old readings do not count.
    assert_eq!(e.rack_loads("dc", T0 + 60_000)["r1"].cpu_util(), None);
}

#[test]
fn a_zone_with_its_own_cooling_meter_has_a_partial_pue() {
    let mut e = engine();
    for (node, zone) in [("h1", "hall1"), ("h2", "hall1"), ("h3", "hall2")] {
        let fields = format!(r#""role":"host","zone":"{zone}""#);
        e.apply_status(&birth(node, &fields), T0);
    }
    let mut meters = site(0, 0.0, 5_000.0);
    meters.extend(
        ["h1", "h2", "h3"]
            .iter()
            .map(|n| Meter::new(n, Point::ItInput, 1_000.0)),
    );
    // The facility agent reads hall 1's CRAH: its readings name the zone.
    meters.push(Meter::new("fac", Point::Cooling, 500.0).in_zone("hall1"));
    run(&mut e, &mut meters, 0, 130);
    let v = e.site_view("dc", T0 + 130_100).unwrap();
    assert_eq!(
        v.zones.len(),
        1,
        "hall2 has no overhead meter of its own: {:?}",
        v.zones
    );
    let z = &v.zones[0];
    assert_eq!(z.zone, "hall1");
    let w = &z.ppue["1m"];
    assert_eq!(w.value, Some(1.25), "{w:?}");
    assert_eq!(
        (w.label.as_str(), w.quality, w.category),
        ("pPUE₃, 1m", "measured", Some(3))
    );
    // The site's PUE is unchanged by the zone bookkeeping: 5 kW over 3 kW of IT.
    assert!((v.pue.get("1m").unwrap().value.unwrap() - 5.0 / 3.0).abs() < 1e-12);
}

#[test]
fn hosts_known_from_births_are_expected_even_before_they_report_power() {
    let mut e = engine();
    // Four hosts say who they are; only three of them have a power meter at their input.
    // A rack PDU measures all four at its outlets.
    for n in ["h0", "h1", "h2", "h3"] {
        e.apply_status(&birth(n, r#""role":"host""#), T0);
    }
    let mut meters = site(3, 500.0, 3_000.0);
    meters.push(Meter::new("pdu", Point::PduOutput, 2_000.0));
    run(&mut e, &mut meters, 0, 90);
    let v = e.site_view("dc", T0 + 90_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    // Category 3 would see 1 500 W of a 2 000 W load and call it complete: the fourth
    // host's birth says it is 3 of 4.
    assert_eq!(w.category, Some(2), "{w:?}");
    assert_eq!(w.value, Some(1.5));
    assert_eq!(w.quality, "measured");
    assert_eq!(v.power.category, Some(2));
    // Fixed at category 3, the missing host shows as missing.
    let mut cfg = e.config().clone();
    cfg.site_categories.insert("dc".into(), 3);
    e.set_config(cfg);
    let v = e.site_view("dc", T0 + 90_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!((w.category, w.quality), (Some(3), "partial"), "{w:?}");
    assert!((w.coverage_it - 0.75).abs() < 1e-9, "{w:?}");
    assert_eq!(v.power.coverage_it, 0.75);
}

#[test]
fn meters_named_in_the_site_inventory_are_expected_from_the_start() {
    let mut cfg = EngineConfig {
        default_interval_ms: 1_000,
        ..EngineConfig::default()
    };
    cfg.site_expected.insert(
        "dc".into(),
        BTreeMap::from([(Point::FacilityInput, 2), (Point::ItInput, 2)]),
    );
    let mut e = Engine::new(cfg);
    // One of the two utility feeds never reports.
    let mut meters = site(2, 500.0, 1_500.0);
    run(&mut e, &mut meters, 0, 90);
    let v = e.site_view("dc", T0 + 90_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert!((w.coverage_facility - 0.5).abs() < 1e-9, "{w:?}");
    assert_eq!(w.coverage_it, 1.0);
    assert_eq!(w.quality, "partial");
    assert_eq!(v.power.coverage_facility, 0.5);
    assert!(
        w.reason.as_deref().unwrap_or("").contains("facility 50.0%"),
        "{w:?}"
    );
    // The history's minutes carry the same expectation.
    let minutes = take(&e, &mut MinuteCursor::default(), T0 + 90_100);
    let fac: Vec<_> = minutes
        .iter()
        .filter(|m| m.point == Point::FacilityInput && m.ts_ms == T0)
        .collect();
    assert_eq!(fac.len(), 1);
    assert!(
        (fac[0].expected_ms - 2.0 * fac[0].covered_ms).abs() < 1e-6,
        "{fac:?}"
    );
}

#[test]
fn a_gauge_repeating_the_same_value_is_flagged_not_changed() {
    let mut cfg = EngineConfig {
        default_interval_ms: 1_000,
        frozen_gauge_readings: 5,
        ..EngineConfig::default()
    };
    cfg.min_coverage = 0.95;
    let mut e = Engine::new(cfg);
    let mut frozen = 0;
    for s in 0..=20 {
        let t = T0 + s * 1000;
        // A BMC cache stuck at 412 W from 10 s on; before that the reading moves.
        let w = if s < 10 { 400.0 + s as f64 } else { 412.0 };
        let st = e.apply_readings(
            "dc",
            "h",
            &[Reading::gauge("power_w", w, t).at(Point::ItInput)],
            t,
        );
        frozen += st.frozen_gauges;
        if s == 13 {
            let nodes = e.nodes("dc", t).unwrap();
            assert!(nodes[0].frozen_meters.is_empty(), "4 alike is not yet 5");
        }
    }
    assert_eq!(frozen, 1, "flagged once");
    let nodes = e.nodes("dc", T0 + 20_000).unwrap();
    assert_eq!(nodes[0].frozen_meters, vec!["it_input/system".to_owned()]);
    // It moves again: no longer flagged.
    e.apply_readings(
        "dc",
        "h",
        &[Reading::gauge("power_w", 415.0, T0 + 21_000).at(Point::ItInput)],
        T0 + 21_000,
    );
    assert!(e.nodes("dc", T0 + 21_000).unwrap()[0]
        .frozen_meters
        .is_empty());
}

#[test]
fn a_meter_saved_before_the_reorder_window_resumes_from_its_last_sample() {
    // A series as states saved by earlier versions hold it: the last counter and gauge
    // samples only.
    let old = r#"{"first_ms":1,"last_ms":5000,"counter":[5000,1234.5],"gauge":[5000,300.0,false],
        "counter_seen_ms":5000,"live":[5000,300.0],"rack":null,"frozen_run":0,"counter_frozen":false}"#;
    let mut s: Series = serde_json::from_str(old).unwrap();
    s.migrate();
    assert_eq!(
        (s.counters.len(), s.counters[0].ts, s.counters[0].value),
        (1, 5000, 1234.5)
    );
    assert_eq!((s.gauges.len(), s.gauges[0].value), (1, 300.0));
    // Saved again, the old fields are gone and the tails stay.
    let again: Series = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(again.counters.len(), 1);
    assert!(again.legacy_counter.is_none());
}

#[test]
fn a_zones_hosts_without_power_meters_lower_its_partial_pue_coverage() {
    let mut e = engine();
    for n in ["h1", "h2"] {
        e.apply_status(&birth(n, r#""role":"host","zone":"hall1""#), T0);
    }
    // Only h1 meters its input; hall 1's CRAH has its own meter.
    let mut meters = [
        Meter::new("meter", Point::FacilityInput, 3_000.0),
        Meter::new("h1", Point::ItInput, 1_000.0),
        Meter::new("fac", Point::Cooling, 250.0).in_zone("hall1"),
    ];
    run(&mut e, &mut meters, 0, 90);
    let v = e.site_view("dc", T0 + 90_100).unwrap();
    let w = &v.zones[0].ppue["1m"];
    assert!((w.coverage_it - 0.5).abs() < 1e-9, "{w:?}");
    assert_eq!(w.quality, "partial");
}

#[test]
fn a_retired_node_is_expected_only_until_it_was_retired() {
    let mut e = engine();
    let mut m = site(2, 500.0, 1_500.0);
    run(&mut e, &mut m, 0, 50);
    m.pop(); // h1 is switched off at 50 s…
    run(&mut e, &mut m, 51, 60);
    assert!(
        e.retire_node("dc", "h1", T0 + 60_000),
        "…and retired at 60 s"
    );
    assert!(!e.retire_node("dc", "nobody", T0 + 60_000));
    run(&mut e, &mut m, 61, 130);
    let v = e.site_view("dc", T0 + 130_100).unwrap();
    let w = v.pue.get("1m").unwrap();
    assert_eq!((w.coverage_it, w.quality), (1.0, "measured"), "{w:?}");
    assert_eq!(w.it_fill_kwh, 0.0, "no estimate past the retirement");
    // The 15m window still sees [50, 60): expected, not covered, estimated.
    let w = v.pue.get("15m").unwrap();
    let want = (130.0 + 50.0) / (130.0 + 60.0);
    assert!((w.coverage_it - want).abs() < 1e-6, "{w:?}");
    assert!((w.it_fill_kwh * 3.6e6 - 500.0 * 10.0).abs() < 1e-6, "{w:?}");
    assert_eq!((v.nodes.total, v.nodes.retired), (2, 1));
    assert_eq!(v.power.coverage_it, 1.0);
    // It comes back: reporting again undoes the retirement.
    let mut h1 = Meter::new("h1", Point::ItInput, 500.0);
    let t = T0 + 131_000;
    e.apply_readings("dc", "h1", &h1.readings(t), t);
    assert_eq!(e.site_view("dc", t).unwrap().nodes.retired, 0);
}

/// The history's way of taking minutes: the cursor moves on once they are taken.
fn take(e: &Engine, cur: &mut MinuteCursor, now_ms: i64) -> Vec<MinuteEnergy> {
    let (minutes, next) = e.closed_minutes("dc", *cur, now_ms);
    *cur = next;
    minutes
}

#[test]
fn a_node_sending_faster_than_its_rate_is_refused_beyond_it() {
    let mut cfg = EngineConfig::default();
    cfg.limits.readings_per_node_per_sec = 1_000.0;
    let mut e = Engine::new(cfg);
    let batch = |t: i64| -> Vec<Reading> {
        (0..1_500)
            .map(|i| {
                let mut r = Reading::gauge("temp_c", 20.0, t);
                r.component = format!("c{}", i % 100).into();
                r
            })
            .collect()
    };
    // A 2 s burst: the first batch fits, a second at once only in part.
    let mut b = batch(T0);
    assert_eq!(e.admit("dc", "n", &mut b, T0).fast, 0);
    assert_eq!(b.len(), 1_500);
    let mut b = batch(T0);
    assert_eq!(e.admit("dc", "n", &mut b, T0).fast, 1_000);
    assert_eq!(b.len(), 500);
    // A second later, a second's worth more.
    let mut b = batch(T0 + 1_000);
    assert_eq!(e.admit("dc", "n", &mut b, T0 + 1_000).fast, 500);
    // Another node has its own budget.
    let mut b = batch(T0);
    assert_eq!(e.admit("dc", "other", &mut b, T0).fast, 0);
    let n = &e.nodes("dc", T0).unwrap()[0];
    assert_eq!(n.refused.get("too_fast"), Some(&1_500));
}

#[test]
fn a_backlog_delivered_at_once_opens_the_windows_as_a_live_trickle_does() {
    // Three minutes of one site's data: once as it happened, once all in one second
    // (an import, the last spool replay) and then silence.
    let end = T0 + 180_000;
    let mut live = engine();
    run(&mut live, &mut site(2, 100.0, 300.0), 0, 180);
    let mut burst = engine();
    let mut meters = site(2, 100.0, 300.0);
    for s in 0..=180 {
        let t = T0 + s * 1000;
        for m in meters.iter_mut() {
            let r = m.readings(t);
            burst.apply_readings("dc", m.node, &r, end + 100);
        }
    }
    let b = burst.site_view("dc", end + 100).unwrap();
    assert_eq!(
        b.pue.get("1m").unwrap().quality,
        "no_data",
        "not settled by a batch's arrival alone"
    );
    // Silence: only the engine's tick.
    let later = end + 1_000;
    live.tick(later);
    burst.tick(later);
    let (a, b) = (
        live.site_view("dc", later).unwrap(),
        burst.site_view("dc", later).unwrap(),
    );
    for name in ["1m", "15m"] {
        let (x, y) = (a.pue.get(name).unwrap(), b.pue.get(name).unwrap());
        assert!(y.value.is_some(), "{name}: {y:?}");
        assert_eq!(
            (x.value, x.from_ms, x.to_ms, x.quality),
            (y.value, y.from_ms, y.to_ms, y.quality),
            "{name}"
        );
    }
}

#[test]
fn no_budgets_are_zero_standard_racks_never_minus_zero() {
    let mut e = engine();
    run(&mut e, &mut site(1, 100.0, 150.0), 0, 3);
    let v = e.site_view("dc", T0 + 3_100).unwrap();
    assert!(v.capacity.standard_racks.is_sign_positive());
    assert!(v.capacity.standard_racks_in_use.is_sign_positive());
    let json = serde_json::to_string(&v).unwrap();
    assert!(!json.contains("-0.0") && !json.contains(":-0,"), "{json}");
}

#[test]
fn a_site_whose_meters_are_all_silent_has_no_power_not_zero() {
    let mut e = engine();
    let mut m = site(2, 500.0, 1500.0);
    run(&mut e, &mut m, 0, 30);
    let live = e.site_view("dc", T0 + 30_100).expect("site");
    assert_eq!(
        (live.power.facility_w, live.power.it_w),
        (Some(1500.0), Some(1000.0))
    );
    // A minute later nothing reports (a stalled collector, a lost switch).
    let silent = e.site_view("dc", T0 + 90_000).expect("site");
    assert_eq!(
        (
            silent.power.facility_w,
            silent.power.it_w,
            silent.power.ratio
        ),
        (None, None, None),
        "{:?}",
        silent.power
    );
    assert_eq!(
        (silent.power.coverage_it, silent.power.coverage_facility),
        (0.0, 0.0)
    );
}

#[test]
fn node_metrics_are_shared_until_the_node_reports_new_values() {
    let mut e = engine();
    let temp = |node: &str, c: f64, t: i64| {
        let mut r = Reading::gauge("temp_c", c, t);
        r.component = "inlet".into();
        (node.to_owned(), r)
    };
    for (node, r) in [temp("h1", 24.0, T0), temp("h2", 30.0, T0)] {
        e.apply_readings("dc", &node, &[r], T0);
    }
    let first = e.node_metrics("dc");
    assert_eq!(first.len(), 2);
    let again = e.node_metrics("dc");
    // Nothing changed: the same lists, not copies.
    assert!(first.iter().zip(&again).all(|(a, b)| Arc::ptr_eq(a, b)));
    // h1 reports a new value: its list is new and says so; h2's is still shared.
    let (node, r) = temp("h1", 25.5, T0 + 1_000);
    e.apply_readings("dc", &node, &[r], T0 + 1_000);
    let after = e.node_metrics("dc");
    assert!(!Arc::ptr_eq(&first[0], &after[0]));
    assert_eq!(
        (
            after[0][0].node.as_str(),
            after[0][0].value,
            after[0][0].ts_ms
        ),
        ("h1", 25.5, T0 + 1_000)
    );
    assert!(Arc::ptr_eq(&first[1], &after[1]));
    // An older reading changes nothing, so the list stays shared.
    let (node, r) = temp("h2", 10.0, T0 - 5_000);
    e.apply_readings("dc", &node, &[r], T0 + 1_000);
    assert!(Arc::ptr_eq(&after[1], &e.node_metrics("dc")[1]));
    assert_eq!(e.node_metrics("dc")[1][0].value, 30.0);
}

/// A water meter (a `water_m3` counter at `water_input`), a heat meter and an on-site PV
/// meter beside a site's facility and IT meters: each is kept as its own point, in
/// litres and joules, and none of them changes the PUE.
#[test]
fn water_heat_and_renewable_meters_are_their_own_points() {
    let mut e = engine();
    let mut meters = [
        Meter::new("util", Point::FacilityInput, 1_500.0),
        Meter::new("h1", Point::ItInput, 1_000.0),
        Meter::new("heat", Point::EnergyReused, 300.0),
        Meter::new("pv", Point::RenewableOnsite, 200.0),
    ];
    // 0.002 m³ (2 L) a second, from a totaliser at 1234.5 m³.
    let water = |s: i64| {
        let t = T0 + s * 1000;
        vec![Reading::counter("water_m3", 1234.5 + 0.002 * s as f64, t).at(Point::WaterInput)]
    };
    for s in 0..=180 {
        let t = T0 + s * 1000;
        for m in meters.iter_mut() {
            let r = m.readings(t);
            e.apply_readings("dc", m.node, &r, t + 50);
        }
        e.apply_readings("dc", "water", &water(s), t + 50);
    }
    let now = T0 + 180_050;
    let v = e.site_view("dc", now).expect("site");
    let w = v.pue.get("1m").expect("1m");
    assert_eq!(w.quality, "measured", "{w:?}");
    assert!((w.value.expect("pue") - 1.5).abs() < 1e-9, "{w:?}");
    // Closed minutes carry every point: water in litres (2 L/s × 60 s = 120 L), heat and
    // PV in joules (300 W × 60 s, 200 W × 60 s).
    let (minutes, _) = e.closed_minutes("dc", MinuteCursor::default(), now);
    let minute = T0.div_euclid(60_000) * 60_000 + 120_000;
    let at = |p: Point| {
        minutes
            .iter()
            .find(|m| m.point == p && m.ts_ms == minute)
            .map(|m| (m.energy_j, m.covered_ms))
    };
    let (litres, covered) = at(Point::WaterInput).expect("water minute");
    assert!((litres - 120.0).abs() < 1e-6, "{litres}");
    assert_eq!(covered, 60_000.0);
    let (heat, _) = at(Point::EnergyReused).expect("heat minute");
    assert!((heat - 18_000.0).abs() < 1e-6, "{heat}");
    let (pv, _) = at(Point::RenewableOnsite).expect("pv minute");
    assert!((pv - 12_000.0).abs() < 1e-6, "{pv}");
    // A water meter's rate is not power: the node lists none.
    let nodes = e.nodes("dc", now).expect("dc");
    let wn = nodes
        .iter()
        .find(|n| n.node == "water")
        .expect("water node");
    assert!(wn.live_power_w.is_empty(), "{:?}", wn.live_power_w);
    let heat_node = nodes.iter().find(|n| n.node == "heat").expect("heat node");
    assert_eq!(heat_node.live_power_w.get("energy_reused"), Some(&300.0));
}

/// The figures beyond PUE from real meter streams, in a rolling window and over a period
/// of closed minutes, with the grid's emission factor changing inside both.
#[test]
fn the_figures_beyond_pue_follow_the_meters_and_the_factor_periods() {
    use super::kpi::{Basis, EmissionFactor, RenewableContract, SiteKpiConfig};
    let mut e = engine();
    // The factor changes 20 s before the end of the 1m window [T0+120 s, T0+180 s).
    let b = T0 + 160_000;
    let factor = |from_ms, to_ms, kg_per_kwh, basis| EmissionFactor {
        from_ms,
        to_ms,
        kg_per_kwh,
        basis,
        source: "test grid".into(),
    };
    let mut cfg = e.config().clone();
    cfg.site_kpis.insert(
        "dc".into(),
        SiteKpiConfig {
            factors: vec![
                factor(T0 - 3_600_000, b, 0.5, Basis::Location),
                factor(b, T0 + 3_600_000, 0.6, Basis::Location),
                factor(T0 - 3_600_000, T0 + 3_600_000, 0.8, Basis::Market),
            ],
            onsite_kg_per_kwh: 0.0,
            // 3.6 kWh over 10 h: 0.0001 kWh a second, 0.006 kWh in a minute.
            contracts: vec![RenewableContract {
                from_ms: T0,
                to_ms: T0 + 36_000_000,
                kwh: 3.6,
                evidence: "GEC-42".into(),
                kind: "green_certificate".into(),
                entered_ms: None,
            }],
            rated_it_w: None,
            live: Default::default(),
            entered: Default::default(),
        },
    );
    e.set_config(cfg);
    let mut meters = [
        Meter::new("util", Point::FacilityInput, 1_500.0),
        Meter::new("h1", Point::ItInput, 1_000.0),
        Meter::new("heat", Point::EnergyReused, 300.0),
        Meter::new("pv", Point::RenewableOnsite, 200.0),
    ];
    for s in 0..=180 {
        let t = T0 + s * 1000;
        for m in meters.iter_mut() {
            let r = m.readings(t);
            e.apply_readings("dc", m.node, &r, t + 50);
        }
        let water =
            [Reading::counter("water_m3", 10.0 + 0.002 * s as f64, t).at(Point::WaterInput)];
        e.apply_readings("dc", "water", &water, t + 50);
    }
    let now = T0 + 180_050;
    let v = e.site_view("dc", now).expect("site");
    let w = v.pue.get("1m").expect("1m");
    assert_eq!(
        (w.from_ms, w.to_ms),
        (Some(T0 + 120_000), Some(T0 + 180_000))
    );
    let k = &w.kpis;
    let close = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() <= 1e-9 * want);
    // WUE: 2 L/s over 60 s = 120 L, per 1 kW × 60 s = 1/60 kWh: 7,200 L/kWh.
    assert!(close(k.wue.value, 7_200.0), "{:?}", k.wue);
    // ERF 300/1500 = 0.2; ERE 0.8 × 1.5 = 1.2; REF (200 W × 60 s + 0.006 kWh) / 1.5 kW ×
    // 60 s = (1/300 + 0.006) kWh / 0.025 kWh.
    assert!(close(k.erf.value, 0.2), "{:?}", k.erf);
    assert!(close(k.ere.value, 1.2), "{:?}", k.ere);
    assert!(
        close(k.ref_.value, (1.0 / 300.0 + 0.006) / 0.025),
        "{:?}",
        k.ref_
    );
    // CUE: the grid's 1,300 W for 40 s at 0.5 and 20 s at 0.6, over 1/60 kWh of IT.
    let grid_kwh = |secs: f64| 1_300.0 * secs / 3.6e6;
    let co2 = grid_kwh(40.0) * 0.5 + grid_kwh(20.0) * 0.6;
    assert!(close(k.co2_kg, co2), "{:?} vs {co2}", k.co2_kg);
    assert!(close(k.cue.value, co2 * 60.0), "{:?}", k.cue);
    // Market-based: the grid energy less the 0.006 kWh of contract, at 0.8.
    let market = (grid_kwh(60.0) - 0.006) * 0.8;
    assert!(
        close(k.cue_market.value, market * 60.0),
        "{:?}",
        k.cue_market
    );
    // Every figure but IT load utilization, which needs a rating.
    assert_eq!(k.it_utilization.quality, "no_data");
    for (name, f) in k
        .figures()
        .into_iter()
        .filter(|(n, _)| *n != "it_utilization")
    {
        assert_eq!(f.quality, "measured", "{name}: {f:?}");
        assert_eq!(f.coverage, 1.0, "{name}: {f:?}");
    }
    // Over the same minute from the closed minutes, split where the factor changes (the
    // minutes are whole, so the boundary falls between them: move it to T0 + 120 s).
    let (minutes, _) = e.closed_minutes("dc", MinuteCursor::default(), now);
    let mut parts: BTreeMap<i64, BTreeMap<Point, PeriodTotals>> = BTreeMap::new();
    for m in minutes.iter().filter(|m| m.ts_ms >= T0 + 60_000) {
        let start = if m.ts_ms < T0 + 120_000 {
            T0 + 60_000
        } else {
            T0 + 120_000
        };
        parts
            .entry(start)
            .or_default()
            .entry(m.point)
            .or_default()
            .add(m);
    }
    let mut cfg = e.config().site_kpis["dc"].clone();
    cfg.factors[0].to_ms = T0 + 120_000;
    cfg.factors[1].from_ms = T0 + 120_000;
    assert_eq!(
        cfg.boundaries(T0 + 60_000, T0 + 180_000),
        vec![T0 + 60_000, T0 + 120_000]
    );
    let p = super::period_kpi_view(
        &parts,
        e.config().level_rule("dc"),
        &cfg,
        T0 + 60_000,
        T0 + 180_000,
    );
    let k = &p.kpis;
    assert!(close(k.wue.value, 7_200.0), "{:?}", k.wue);
    assert!(close(k.water_l, 240.0), "{:?}", k.water_l);
    assert!(close(k.erf.value, 0.2), "{:?}", k.erf);
    let co2 = grid_kwh(60.0) * 0.5 + grid_kwh(60.0) * 0.6;
    assert!(close(k.co2_kg, co2), "{:?} vs {co2}", k.co2_kg);
    assert!(close(k.cue.value, co2 * 30.0), "{:?}", k.cue);
    assert!(close(Some(k.renewable_contract_kwh), 0.012), "{k:?}");
}

/// A live carbon-intensity series wins over the configured factor where it covers a
/// part of the window, the configured one fills the rest, and a correction replaces what
/// it overlaps.
#[test]
fn a_live_carbon_series_wins_where_it_covers_and_the_configured_factor_fills_the_rest() {
    use super::kpi::{Basis, EmissionFactor, SiteKpiConfig};
    let mut e = engine();
    let factor = |from_ms, to_ms, kg_per_kwh| EmissionFactor {
        from_ms,
        to_ms,
        kg_per_kwh,
        basis: Basis::Location,
        source: "test".into(),
    };
    let mut cfg = e.config().clone();
    cfg.site_kpis.insert(
        "dc".into(),
        SiteKpiConfig {
            factors: vec![factor(T0 - 3_600_000, T0 + 3_600_000, 0.5)],
            ..SiteKpiConfig::default()
        },
    );
    e.set_config(cfg);
    // Live: 0.9 over the first 30 s of the 1m window [T0 + 120 s, T0 + 180 s).
    let live = vec![factor(T0 + 120_000, T0 + 150_000, 0.9)];
    e.apply_carbon("dc", live, 10).expect("room");
    let mut meters = [
        Meter::new("util", Point::FacilityInput, 1_500.0),
        Meter::new("h1", Point::ItInput, 1_000.0),
    ];
    for s in 0..=180 {
        let t = T0 + s * 1000;
        for m in meters.iter_mut() {
            let r = m.readings(t);
            e.apply_readings("dc", m.node, &r, t + 50);
        }
    }
    let now = T0 + 180_050;
    let cue = |e: &Engine| {
        let v = e.site_view("dc", now).expect("site");
        v.pue.get("1m").expect("1m").kpis.co2_kg
    };
    // 1,500 W for 30 s at 0.9 and 30 s at 0.5.
    let kwh = 1_500.0 * 30.0 / 3.6e6;
    let close = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() <= 1e-9 * want);
    assert!(close(cue(&e), kwh * 0.9 + kwh * 0.5), "{:?}", cue(&e));
    // A correction over the same 30 s replaces it.
    let fix = vec![factor(T0 + 120_000, T0 + 150_000, 0.7)];
    e.apply_carbon("dc", fix, 10).expect("room");
    assert!(close(cue(&e), kwh * 0.7 + kwh * 0.5), "{:?}", cue(&e));
    // The snapshot carries the series for the periods from the history.
    let snap = super::Snapshot::take(&e, &[], now);
    let series = &snap.carbon["dc"];
    assert_eq!((series.factors.len(), series.dropped), (1, 0));
    assert_eq!(series.factors[0].kg_per_kwh, 0.7);
    // A new site beyond the limit of sites with a series is refused.
    let other = vec![factor(T0, T0 + 1000, 0.1)];
    assert!(e.apply_carbon("other", other, 1).is_err());
}

/// A renewable contract entered over the API counts in REF like a configured one, a copy
/// of a configured certificate is refused, and a withdrawn one counts no more.
#[test]
fn a_contract_entered_over_the_api_counts_in_ref_and_only_once() {
    use super::kpi::{RenewableContract, SiteKpiConfig};
    use super::{Edit, Refusal};
    let contract = |evidence: &str, kwh: f64| RenewableContract {
        from_ms: T0,
        to_ms: T0 + 36_000_000,
        kwh,
        evidence: evidence.into(),
        kind: "green_certificate".into(),
        entered_ms: None,
    };
    let mut e = engine();
    let mut cfg = e.config().clone();
    cfg.site_kpis.insert(
        "dc".into(),
        SiteKpiConfig {
            contracts: vec![contract("GEC-1", 3.6)],
            ..SiteKpiConfig::default()
        },
    );
    e.set_config(cfg);
    let mut meters = [
        Meter::new("util", Point::FacilityInput, 1_500.0),
        Meter::new("h1", Point::ItInput, 1_000.0),
    ];
    for s in 0..=60 {
        let t = T0 + s * 1000;
        for m in meters.iter_mut() {
            let r = m.readings(t);
            e.apply_readings("dc", m.node, &r, t + 50);
        }
    }
    let now = T0 + 60_050;
    let contract_kwh = |e: &Engine| {
        let v = e.site_view("dc", now).expect("site");
        v.pue.get("1m").expect("1m").kpis.renewable_contract_kwh
    };
    // 3.6 kWh over 10 h is 0.006 kWh in the minute.
    assert!((contract_kwh(&e) - 0.006).abs() < 1e-12);
    let enter = |e: &mut Engine, c: RenewableContract| {
        e.edit(Edit::Contract {
            site: "dc".into(),
            contract: c,
            now_ms: now,
        })
    };
    let refused = enter(&mut e, contract("GEC-1", 3.6));
    assert!(matches!(refused, Err(Refusal::Conflict(ref w)) if w.contains("configuration")));
    let unknown = e.edit(Edit::Contract {
        site: "elsewhere".into(),
        contract: contract("GEC-2", 1.0),
        now_ms: now,
    });
    assert!(matches!(unknown, Err(Refusal::NotFound(_))));
    let id = enter(&mut e, contract("PPA-7", 7.2)).expect("entered");
    // Another 0.012 kWh in the minute.
    assert!((contract_kwh(&e) - 0.018).abs() < 1e-12);
    let snap = super::Snapshot::take(&e, &[], now);
    assert_eq!(snap.contracts["dc"].len(), 1);
    assert_eq!(snap.contracts["dc"][0].contract.entered_ms, Some(now));
    let gone = e.edit(Edit::Withdraw {
        site: "dc".into(),
        id: id.expect("an id"),
    });
    assert_eq!(gone, Ok(id));
    assert!((contract_kwh(&e) - 0.006).abs() < 1e-12);
}

/// Rack occupancy (上架率) and IT load utilization by hand: five racks designed, four
/// installed (12.5 kW: five standard racks), three known.
#[test]
fn occupancy_counts_racks_with_load_above_the_floor_or_a_reporting_host() {
    let mut e = engine();
    let mut cfg = e.config().clone();
    cfg.site_racks.insert(
        "dc".into(),
        SiteRacks {
            designed: Some(5),
            installed: Some(4),
            designed_w: Some(15_000.0),
            installed_w: Some(12_500.0),
            in_use_floor_w: 50.0,
        },
    );
    for (rack, w) in [("r1", 2_500.0), ("r2", 2_500.0), ("r3", 5_000.0)] {
        cfg.rack_budgets.insert(("dc".into(), rack.into()), w);
    }
    cfg.site_kpis.entry("dc".into()).or_default().rated_it_w = Some(12_500.0);
    e.set_config(cfg);
    // h1 in r1 draws 1 kW; h2 in r2 only 20 W (below the floor, but a host that reports:
    // in use); r3 has only a PDU outlet meter drawing 30 W (below the floor, no host: not
    // in use).
    e.apply_status(&birth("h1", r#""role":"host","rack":"r1""#), T0);
    e.apply_status(&birth("h2", r#""role":"host","rack":"r2""#), T0);
    e.apply_status(&birth("pdu3", r#""role":"meter","rack":"r3""#), T0);
    let mut meters = [
        Meter::new("meter", Point::FacilityInput, 2_000.0),
        Meter::new("h1", Point::ItInput, 1_000.0),
        Meter::new("h2", Point::ItInput, 20.0),
        Meter::new("pdu3", Point::PduOutput, 30.0),
    ];
    run(&mut e, &mut meters, 0, 120);
    let v = e.site_view("dc", T0 + 120_050).expect("site");
    let c = &v.capacity;
    assert_eq!((c.racks, c.racks_in_use), (3, 2), "{c:?}");
    assert_eq!((c.racks_designed, c.racks_installed), (Some(5), Some(4)));
    assert_eq!(c.occupancy, Some(0.5));
    assert_eq!(c.installed_share, Some(0.8));
    assert_eq!(c.standard_racks_designed, Some(6.0));
    assert_eq!(c.standard_racks_installed, Some(5.0));
    // In use: r1 and r2, 2.5 kW each: two standard racks of five.
    assert_eq!(c.occupancy_standard, Some(0.4));
    // IT load utilization: 1,020 W of IT input over a 12.5 kW rating.
    let w = v.pue.get("1m").expect("1m");
    assert_eq!(w.category, Some(3));
    let u = w.kpis.it_utilization.value.expect("utilization");
    assert!(
        (u - 1_020.0 / 12_500.0).abs() < 1e-12,
        "{:?}",
        w.kpis.it_utilization
    );
    let rated = w.kpis.rated_it_kwh.expect("rated");
    assert!((rated - 12.5 / 60.0).abs() < 1e-12, "{rated}");
}
