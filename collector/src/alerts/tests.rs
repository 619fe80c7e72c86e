//! Alert rules and state machine, by table.

use super::*;
use crate::engine::{MetricSample, NodeView, RackPower, SiteView};
use std::sync::Arc;

fn rule(op: Op, threshold: f64, clear: Option<f64>, for_ms: i64, keep_ms: i64) -> Rule {
    Rule {
        name: "r".into(),
        subject: Subject::SitePue("1h".into()),
        op,
        threshold,
        clear,
        for_ms,
        keep_firing_for_ms: keep_ms,
        severity: "warning".into(),
        min_coverage: 0.95,
        require_full_window: true,
        labels: BTreeMap::new(),
        summary: "PUE {window} of {site} is {value} (target {threshold})".into(),
        sites: Vec::new(),
        overrides: BTreeMap::new(),
    }
}

fn obs(v: Option<f64>, suppressed: Option<&str>) -> Observation {
    Observation {
        key: AlertKey {
            rule: "r".into(),
            site: "dc".into(),
            target: String::new(),
        },
        value: v,
        suppressed: suppressed.map(str::to_owned),
        partial: None,
    }
}

/// Runs a sequence of (t, value) and returns the phase after each step and the changes.
fn run(r: &Rule, seq: &[(i64, Option<f64>, Option<&str>)]) -> (Vec<Phase>, Vec<(i64, Change)>) {
    let mut s = AlertState::default();
    let mut phases = Vec::new();
    let mut changes = Vec::new();
    for &(t, v, sup) in seq {
        let (next, c) = step(r, "dc", &s, &obs(v, sup), t);
        if let Some(c) = c {
            changes.push((t, c));
        }
        phases.push(next.phase);
        s = next;
    }
    (phases, changes)
}

use Phase::{Firing as F, Inactive as I, Pending as P};

#[test]
fn for_duration_before_firing() {
    let r = rule(Op::Gt, 1.5, None, 60_000, 0);
    let (phases, changes) = run(
        &r,
        &[
            (0, Some(1.6), None),
            (30_000, Some(1.7), None),
            (60_000, Some(1.6), None),
            (70_000, Some(1.4), None),
        ],
    );
    assert_eq!(phases, vec![P, P, F, I]);
    assert_eq!(
        changes,
        vec![(60_000, Change::Fired), (70_000, Change::Resolved)]
    );
}

#[test]
fn a_dip_while_pending_restarts_the_wait() {
    let r = rule(Op::Gt, 1.5, None, 60_000, 0);
    let (phases, changes) = run(
        &r,
        &[
            (0, Some(1.6), None),
            (40_000, Some(1.4), None),
            (50_000, Some(1.6), None),
            (100_000, Some(1.6), None),
            (110_000, Some(1.6), None),
        ],
    );
    assert_eq!(phases, vec![P, I, P, P, F]);
    assert_eq!(changes, vec![(110_000, Change::Fired)]);
}

#[test]
fn hysteresis_stops_flapping_around_the_threshold() {
    // Fires above 1.5, clears only below 1.45.
    let r = rule(Op::Gt, 1.5, Some(1.45), 0, 0);
    let seq: Vec<(i64, Option<f64>, Option<&str>)> =
        [1.51, 1.49, 1.51, 1.48, 1.46, 1.44, 1.49, 1.51]
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * 1000, Some(*v), None))
            .collect();
    let (phases, changes) = run(&r, &seq);
    assert_eq!(phases, vec![F, F, F, F, F, I, I, F]);
    assert_eq!(
        changes,
        vec![
            (0, Change::Fired),
            (5_000, Change::Resolved),
            (7_000, Change::Fired)
        ]
    );
    // Without hysteresis the same series flaps every step.
    let (_, flappy) = run(&rule(Op::Gt, 1.5, None, 0, 0), &seq);
    assert_eq!(flappy.len(), 5);
}

#[test]
fn keep_firing_for_holds_through_short_recoveries() {
    let r = rule(Op::Gt, 1.5, None, 0, 30_000);
    // The last bad value is at 20 s: it stays firing until 30 s after that.
    let (phases, changes) = run(
        &r,
        &[
            (0, Some(1.6), None),
            (10_000, Some(1.4), None),
            (20_000, Some(1.6), None),
            (30_000, Some(1.4), None),
            (49_000, Some(1.4), None),
            (50_000, Some(1.4), None),
        ],
    );
    assert_eq!(phases, vec![F, F, F, F, F, I]);
    assert_eq!(
        changes,
        vec![(0, Change::Fired), (50_000, Change::Resolved)]
    );
}

#[test]
fn suppression_by_quality_holds_state_and_never_fires() {
    let r = rule(Op::Gt, 1.5, None, 0, 0);
    let (phases, changes) = run(
        &r,
        &[
            (0, Some(9.0), Some("coverage below")),
            (1_000, None, Some("no value")),
        ],
    );
    assert_eq!(phases, vec![I, I]);
    assert!(changes.is_empty(), "a bad ratio never fires");
    // Firing, then the data goes bad: neither resolved nor re-fired.
    let (phases, changes) = run(
        &r,
        &[
            (0, Some(1.6), None),
            (1_000, Some(1.0), Some("coverage below")),
            (2_000, Some(1.4), None),
        ],
    );
    assert_eq!(phases, vec![F, F, I]);
    assert_eq!(changes, vec![(0, Change::Fired), (2_000, Change::Resolved)]);
    // Pending keeps waiting through missing data: the condition held before and after.
    let r = rule(Op::Gt, 1.5, None, 10_000, 0);
    let (phases, _) = run(
        &r,
        &[
            (0, Some(1.6), None),
            (5_000, None, Some("x")),
            (11_000, Some(1.6), None),
        ],
    );
    assert_eq!(phases, vec![P, P, F]);
}

#[test]
fn missing_data_never_resolves_and_says_since_when() {
    // A stalled collector: the rack's meters all look silent for 25 s.
    let r = rule(Op::Gt, 0.9, None, 0, 0);
    let mut s = AlertState::default();
    let (next, c) = step(&r, "dc", &s, &obs(Some(0.95), None), 0);
    assert_eq!((next.phase, c), (F, Some(Change::Fired)));
    s = next;
    for t in [5_000, 10_000, 25_000] {
        let (next, c) = step(
            &r,
            "dc",
            &s,
            &obs(None, Some("no data: none of the rack's 4 meters reports")),
            t,
        );
        assert_eq!((next.phase, c), (F, None), "still firing at {t}");
        assert_eq!(next.no_data_since_ms, Some(5_000), "since the first gap");
        s = next;
    }
    let (next, c) = step(&r, "dc", &s, &obs(Some(0.96), None), 26_000);
    assert_eq!((next.phase, c, next.no_data_since_ms), (F, None, None));
    let (next, c) = step(&r, "dc", &next, &obs(Some(0.5), None), 27_000);
    assert_eq!(
        (next.phase, c),
        (I, Some(Change::Resolved)),
        "data that clears it does"
    );
}

#[test]
fn a_partial_value_acts_only_where_its_bound_decides() {
    let bound = |v: f64, b: Bound| Observation {
        partial: Some((b, "2 of the rack's 4 meters report".into())),
        ..obs(Some(v), None)
    };
    let r = rule(Op::Gt, 0.9, None, 0, 0);
    // At least 0.95 of the budget: over 0.9 whatever the silent meters draw.
    let (s, c) = step(
        &r,
        "dc",
        &AlertState::default(),
        &bound(0.95, Bound::AtLeast),
        0,
    );
    assert_eq!((s.phase, c), (F, Some(Change::Fired)));
    // At least 0.5: could be anything above, so no data — and it keeps firing.
    let (s, c) = step(&r, "dc", &s, &bound(0.5, Bound::AtLeast), 1_000);
    assert_eq!((s.phase, c), (F, None));
    assert_eq!(
        s.suppressed.as_deref(),
        Some("no data: 2 of the rack's 4 meters report, which does not decide the rule")
    );
    // Nor does it start one.
    let (s, c) = step(
        &r,
        "dc",
        &AlertState::default(),
        &bound(0.5, Bound::AtLeast),
        0,
    );
    assert_eq!((s.phase, c, s.no_data_since_ms), (I, None, Some(0)));
    // Headroom below 0: at most -100 W decides it; at most +100 W does not.
    let h = rule(Op::Lt, 0.0, None, 0, 0);
    let (s, c) = step(
        &h,
        "dc",
        &AlertState::default(),
        &bound(-100.0, Bound::AtMost),
        0,
    );
    assert_eq!((s.phase, c), (F, Some(Change::Fired)));
    let (s, _) = step(
        &h,
        "dc",
        &AlertState::default(),
        &bound(100.0, Bound::AtMost),
        0,
    );
    assert_eq!(s.phase, I);
    assert!(s.no_data_since_ms.is_some());
    // A lower bound at or above the clear level decides a `<` rule the other way: at
    // least 2.0 is not under 1.5.
    let low = rule(Op::Lt, 1.5, None, 0, 0);
    let (s, _) = step(&low, "dc", &AlertState::default(), &obs(Some(1.0), None), 0);
    let (s, c) = step(&low, "dc", &s, &bound(2.0, Bound::AtLeast), 1_000);
    assert_eq!((s.phase, c), (I, Some(Change::Resolved)));
}

#[test]
fn operators_and_overrides() {
    for (op, v, t, holds) in [
        (Op::Gt, 2.0, 1.0, true),
        (Op::Gt, 1.0, 1.0, false),
        (Op::Ge, 1.0, 1.0, true),
        (Op::Lt, 17.0, 18.0, true),
        (Op::Le, 18.0, 18.0, true),
        (Op::Eq, 5.0, 5.0, true),
        (Op::Ne, 3.0, 3.0, false),
        (Op::Ne, 5.0, 3.0, true),
    ] {
        assert_eq!(op.holds(v, t), holds, "{op:?} {v} {t}");
    }
    let mut r = rule(Op::Gt, 1.5, Some(1.45), 0, 0);
    r.overrides.insert("hub".into(), (1.25, None));
    assert_eq!(r.limits("dc"), (1.5, 1.45));
    assert_eq!(r.limits("hub"), (1.25, 1.25));
    assert_eq!(
        render(
            &r,
            &AlertKey {
                rule: "r".into(),
                site: "hub".into(),
                target: String::new()
            },
            Some(1.3)
        ),
        "PUE 1h of hub is 1.300 (target 1.25)"
    );
}

fn site_view(value: Option<f64>, quality: &'static str, coverage: f64) -> SiteView {
    let w = crate::engine::WindowView {
        label: "PUE₃, 1h".into(),
        value,
        category: Some(3),
        coverage_it: coverage,
        coverage_facility: 1.0,
        quality,
        reason: None,
        dcie: None,
        from_ms: None,
        to_ms: None,
        span_share: Some(1.0),
        facility_kwh: 0.0,
        it_kwh: 0.0,
        facility_fill_kwh: 0.0,
        it_fill_kwh: 0.0,
        kpis: Default::default(),
    };
    SiteView {
        site: "dc".into(),
        ts_ms: 0,
        stale: false,
        power: crate::engine::PowerView {
            label: "instantaneous power ratio (not PUE)",
            facility_w: Some(1.0),
            it_w: Some(1.0),
            ratio: value,
            category: Some(3),
            coverage_it: coverage,
            coverage_facility: 1.0,
            quality,
            reason: None,
        },
        pue: crate::engine::Windows(vec![("1h", w)]),
        nodes: Default::default(),
        missing_batches: 0,
        capacity: Default::default(),
        zones: Vec::new(),
        targets: Vec::new(),
    }
}

fn node(
    name: &str,
    state: &'static str,
    role: Option<&'static str>,
    last_reading_ms: Option<i64>,
) -> NodeView {
    NodeView {
        node: name.into(),
        state,
        role,
        rack: None,
        zone: None,
        agent: None,
        interval_ms: 10_000,
        last_seen_ms: last_reading_ms,
        last_reading_ms,
        seq: None,
        missing_batches: 0,
        duplicate_batches: 0,
        restarts: 0,
        frozen_meters: Vec::new(),
        clock_offset_ms: None,
        refused: Default::default(),
        live_power_w: Default::default(),
    }
}

fn sample(node: &str, metric: &str, component: &str, value: f64) -> MetricSample {
    MetricSample {
        node: node.into(),
        metric: metric.into(),
        component: component.into(),
        ts_ms: 0,
        value,
    }
}

#[test]
fn every_subject_observes_what_it_should() {
    let mut input = SiteSnapshot {
        view: site_view(Some(1.6), "partial", 0.9),
        racks: Vec::new(),
        nodes: Vec::new(),
        metrics: Vec::new(),
    };
    for (name, w) in input.view.pue.0.iter_mut() {
        if *name == "1h" {
            w.coverage_facility = 0.8;
        }
    }
    input.nodes.extend([
        node("h1", "online", Some("host"), Some(0)),
        node("h2", "offline", Some("host"), Some(0)),
        node("m1", "online", Some("meter"), Some(40_000)),
        node("h9", "retired", Some("host"), Some(0)),
        node("m9", "retired", Some("meter"), Some(0)),
    ]);
    input.metrics.extend([
        Arc::from([
            sample("h1", "temp_c", "inlet", 29.5),
            sample("h1", "temp_c", "cpu", 80.0),
        ]),
        Arc::from([sample("ups1", "ups_output_source", "system", 5.0)]),
    ]);
    input.racks.extend([
        RackView {
            budget_w: Some(8000.0),
            utilization: Some(0.875),
            feed_w: Some(6500.0),
            failover_headroom_w: Some(-500.0),
            ..RackView::new("r1", RackPower::measured(7000.0))
        },
        RackView::new("r2", RackPower::measured(100.0)),
    ]);
    let mk = |name: &str, subject: Subject, op: Op, t: f64| Rule {
        name: name.into(),
        subject,
        ..rule(op, t, None, 0, 0)
    };
    let rules = vec![
        mk("pue", Subject::SitePue("1h".into()), Op::Gt, 1.5),
        mk("ratio", Subject::PowerRatio, Op::Gt, 1.5),
        mk("cov", Subject::Coverage("1h".into()), Op::Lt, 0.95),
        mk("complete", Subject::Completeness("1h".into()), Op::Lt, 0.9),
        mk("offline", Subject::NodeOffline, Op::Gt, 0.5),
        mk("stale", Subject::StaleMeter, Op::Gt, 30.0),
        mk(
            "inlet",
            Subject::NodeMetric {
                metric: "temp_c".into(),
                component: "inlet".into(),
            },
            Op::Gt,
            27.0,
        ),
        mk(
            "ups",
            Subject::NodeMetric {
                metric: "ups_output_source".into(),
                component: String::new(),
            },
            Op::Ne,
            3.0,
        ),
        mk("rack", Subject::RackUtilization, Op::Gt, 0.8),
        mk("headroom", Subject::RackFailoverHeadroom, Op::Lt, 0.0),
    ];
    let obs = observe(&rules, std::slice::from_ref(&input), 100_000);
    let get = |rule: &str, target: &str| {
        obs.iter()
            .find(|o| o.key.rule == rule && o.key.target == target)
            .unwrap_or_else(|| panic!("{rule}/{target} not observed: {obs:#?}"))
    };
    assert!(
        get("pue", "")
            .suppressed
            .as_deref()
            .unwrap()
            .contains("coverage"),
        "efficiency suppressed by coverage"
    );
    assert!(get("ratio", "").suppressed.is_some());
    assert_eq!(get("cov", "").value, Some(0.9));
    assert!(get("cov", "").suppressed.is_none());
    // Completeness is the lesser side: the facility's 0.8 here, below the IT's 0.9.
    assert_eq!(get("complete", "").value, Some(0.8));
    assert_eq!(
        (get("offline", "h1").value, get("offline", "h2").value),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(get("stale", "m1").value, Some(60.0));
    assert!(
        !obs.iter()
            .any(|o| o.key.target == "h9" || o.key.target == "m9"),
        "retired nodes raise nothing"
    );
    assert!(
        !obs.iter()
            .any(|o| o.key.rule == "stale" && o.key.target == "h1"),
        "stale_meter is for meters"
    );
    assert_eq!(get("inlet", "h1.inlet").value, Some(29.5));
    assert!(!obs
        .iter()
        .any(|o| o.key.rule == "inlet" && o.key.target == "h1.cpu"));
    assert_eq!(get("ups", "ups1").value, Some(5.0));
    assert_eq!(get("rack", "r1").value, Some(0.875));
    assert!(
        !obs.iter().any(|o| o.key.target == "r2"),
        "a rack without a budget has no utilization"
    );
    assert_eq!(get("headroom", "r1").value, Some(-500.0));

    let mut states = BTreeMap::new();
    let t = evaluate(&rules, &mut states, &obs, 100_000);
    let fired: Vec<&str> = t.iter().map(|x| x.alert.as_str()).collect();
    assert_eq!(
        fired,
        vec![
            "cov",
            "complete",
            "offline.h2",
            "stale.m1",
            "inlet.h1.inlet",
            "ups.ups1",
            "rack.r1",
            "headroom.r1"
        ]
    );
    assert!(t
        .iter()
        .all(|x| x.change == Change::Fired && x.labels["alertname"] == x.key.rule));
    assert!(
        states
            .get(&AlertKey {
                rule: "pue".into(),
                site: "dc".into(),
                target: String::new()
            })
            .unwrap()
            .suppressed
            .is_some(),
        "the suppression reason stays visible"
    );
}

#[test]
fn alerts_of_targets_no_longer_observed_are_resolved_and_dropped() {
    let r = rule(Op::Gt, 1.5, None, 0, 0);
    let mut states = BTreeMap::new();
    // 10,000 nodes' alerts fire once (made-up nodes, later refused or gone).
    let node = |i: u32| Observation {
        key: AlertKey {
            rule: "r".into(),
            site: "dc".into(),
            target: format!("n{i}"),
        },
        value: Some(2.0),
        suppressed: None,
        partial: None,
    };
    let fired: Vec<Observation> = (0..10_000).map(node).collect();
    let t = evaluate(std::slice::from_ref(&r), &mut states, &fired, 1_000);
    assert_eq!((t.len(), states.len()), (10_000, 10_000));
    // Only n0 is still observed; an hour later the rest are resolved and dropped.
    let later = 1_000 + UNOBSERVED_MS + 1;
    evaluate(
        std::slice::from_ref(&r),
        &mut states,
        &fired[..1],
        later - 10,
    );
    let t = evaluate(std::slice::from_ref(&r), &mut states, &fired[..1], later);
    assert_eq!(states.len(), 1, "bounded by what is observed");
    assert_eq!(t.len(), 9_999);
    assert!(t.iter().all(|x| x.change == Change::Resolved));
    assert!(
        t[0].summary.contains("no longer observed"),
        "{}",
        t[0].summary
    );
}

#[test]
fn window_rules_wait_for_a_full_window_unless_told_otherwise() {
    let mut site = site_view(Some(1.8), "partial", 1.0);
    for (_, w) in site.pue.0.iter_mut() {
        w.span_share = Some(1.0 / 60.0);
    }
    let input = [SiteSnapshot {
        view: site,
        racks: Vec::new(),
        nodes: Vec::new(),
        metrics: Vec::new(),
    }];
    let mut r = Rule {
        subject: Subject::SitePue("1h".into()),
        ..rule(Op::Gt, 1.5, None, 0, 0)
    };
    let o = observe(std::slice::from_ref(&r), &input, 0);
    assert_eq!(
        o[0].suppressed.as_deref(),
        Some("waiting for a full 1h window: its data spans 1.7% of it so far")
    );
    r.require_full_window = false;
    let o = observe(std::slice::from_ref(&r), &input, 0);
    assert_eq!((o[0].value, o[0].suppressed.as_deref()), (Some(1.8), None));
}

#[test]
fn a_figure_beyond_pue_is_an_alert_input_and_only_when_it_is_trustworthy() {
    let mut site = site_view(Some(1.4), "measured", 1.0);
    let r = Rule {
        subject: Subject::SiteKpi {
            kpi: "wue".into(),
            window: "1h".into(),
        },
        ..rule(Op::Gt, 1.8, None, 0, 0)
    };
    let wue = |value: Option<f64>, quality: &'static str, coverage: f64| crate::engine::kpi::Kpi {
        value,
        quality,
        coverage,
        reason: None,
    };
    let seen = |site: &SiteView| {
        let input = [SiteSnapshot {
            view: site.clone(),
            racks: Vec::new(),
            nodes: Vec::new(),
            metrics: Vec::new(),
        }];
        let o = observe(std::slice::from_ref(&r), &input, 0);
        (o[0].value, o[0].suppressed.clone())
    };
    site.pue.0[0].1.kpis.wue = wue(Some(2.1), "measured", 1.0);
    assert_eq!(seen(&site), (Some(2.1), None));
    // Without its meters: no value, and the rule says why it does not judge.
    site.pue.0[0].1.kpis.wue = wue(None, "no_data", 0.0);
    let (v, why) = seen(&site);
    assert_eq!(v, None);
    assert!(why.is_some_and(|w| w.contains("no data")));
    // A partial figure below the rule's minimum coverage is held back too.
    site.pue.0[0].1.kpis.wue = wue(Some(2.1), "partial", 0.5);
    assert!(seen(&site).1.is_some_and(|w| w.contains("coverage")));
    assert_eq!(r.subject.name(), "site_kpi");
}
