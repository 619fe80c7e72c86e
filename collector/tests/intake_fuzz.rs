//! Property-driven fuzzing of the intake as a whole: any topic with any payload, or a
//! mutated valid batch, is counted exactly once and either applied or refused with a
//! reason; nothing panics; and hostile messages in between do not change a site's PUE.

use dcwatt_collector::config::IntakeConfig;
use dcwatt_collector::engine::{Engine, EngineConfig};
use dcwatt_collector::intake::{Intake, IntakeStats};
use dcwatt_common::protocol::{Point, Reading, ReadingsMessage};
use proptest::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const T0: i64 = 1_800_000_000_000;

fn intake() -> (Intake, Arc<IntakeStats>, Arc<Mutex<Engine>>) {
    let engine = Arc::new(Mutex::new(Engine::new(EngineConfig {
        default_interval_ms: 1000,
        ..EngineConfig::default()
    })));
    let stats = Arc::new(IntakeStats::default());
    let cfg = IntakeConfig {
        sites: Vec::new(),
        max_host_power_w: 20_000.0,
        max_future_skew_ms: 300_000,
        queue_messages: 16,
        max_readings_per_batch: 10_000,
        max_nodes: 1_000,
        max_sites: 1_000,
        max_clock_skew_ms: 5_000,
    };
    (Intake::new(stats.clone(), cfg), stats, engine)
}

fn batch(node: &str, seq: u64, t: i64, w: f64, point: Point) -> Vec<u8> {
    serde_json::to_vec(&ReadingsMessage {
        v: 1,
        site: "good".into(),
        node: node.into(),
        seq,
        sent_ms: t,
        readings: vec![Reading::gauge("power_w", w, t).at(point)],
    })
    .expect("json")
}

fn counted(s: &IntakeStats) -> u64 {
    s.readings_messages.load(Ordering::Relaxed)
        + s.status_messages.load(Ordering::Relaxed)
        + s.carbon_messages.load(Ordering::Relaxed)
}

fn refused(s: &IntakeStats, reason: &str) -> u64 {
    s.messages_rejected()
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    fn any_message_is_counted_once_and_never_panics(
        topic in prop_oneof![
            "dcwatt/v1/[a-z]{1,3}/[a-z]{1,3}/(readings|status)",
            "dcwatt/v1/[a-z]{1,3}/carbon",
            ".{0,80}",
        ],
        payload in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            (any::<u64>(), -1e7f64..1e7, any::<bool>()).prop_map(|(seq, w, fac)| {
                batch("a", seq, T0, w, if fac { Point::FacilityInput } else { Point::ItInput })
            }),
        ],
    ) {
        let (mut intake, stats, engine) = intake();
        let mut e = engine.lock().expect("engine");
        intake.handle(&mut e, &topic, &payload, T0 + 1000);
        prop_assert_eq!(counted(&stats), 1);
    }
}

/// A carbon-intensity series over `dcwatt/v1/{site}/carbon` reaches the site's CO₂; a
/// bad one is refused as `invalid_carbon` and changes nothing.
#[test]
fn a_carbon_series_reaches_the_site_and_a_bad_one_is_counted() {
    let (mut intake, stats, engine) = intake();
    let mut e = engine.lock().expect("engine");
    let carbon = |body: &str| body.replace('\'', "\"");
    // 0.8 kg/kWh over [T0 + 60 s, T0 + 120 s): the whole 1m window below.
    let good = carbon(&format!(
        "{{'v':1,'site':'good','source':'grid operator','intervals':\
         [{{'from_ms':{},'to_ms':{},'kg_per_kwh':0.8}}]}}",
        T0 + 60_000,
        T0 + 120_000
    ));
    let bad = [
        // The payload names another site.
        good.replace("\"site\":\"good\"", "\"site\":\"other\""),
        good.replace("0.8", "5"),
        good.replace("\"v\":1", "\"v\":2"),
        good.replace("\"source\":\"grid operator\"", "\"source\":\"\""),
        good.replace("\"source\"", "\"basis\":\"average\",\"source\""),
        good.replace("\"intervals\"", "\"extra\":1,\"intervals\""),
        "{not json".to_owned(),
    ];
    for b in &bad {
        intake.handle(&mut e, "dcwatt/v1/good/carbon", b.as_bytes(), T0);
    }
    assert_eq!(refused(&stats, "invalid_carbon"), bad.len() as u64);
    assert!(
        e.live_carbon("good").is_empty(),
        "nothing from a refused series"
    );
    intake.handle(&mut e, "dcwatt/v1/good/carbon", good.as_bytes(), T0);
    // A retained series being cleared is counted, not refused, and keeps the series.
    intake.handle(&mut e, "dcwatt/v1/good/carbon", b"", T0);
    assert_eq!(refused(&stats, "invalid_carbon"), bad.len() as u64);
    assert_eq!(counted(&stats), bad.len() as u64 + 2);
    assert_eq!(e.live_carbon("good").len(), 1);
    for s in 0..=120i64 {
        let t = T0 + s * 1000;
        let m = batch("meter", s as u64, t, 1800.0, Point::FacilityInput);
        intake.handle(&mut e, "dcwatt/v1/good/meter/readings", &m, t + 10);
        let h = batch("h1", s as u64, t, 1000.0, Point::ItInput);
        intake.handle(&mut e, "dcwatt/v1/good/h1/readings", &h, t + 10);
    }
    let v = e.site_view("good", T0 + 120_100).expect("site");
    let k = &v.pue.get("1m").expect("1m").kpis;
    // 1,800 W for 60 s = 0.03 kWh at 0.8 kg/kWh; 1,000 W of IT = 1/60 kWh.
    let co2 = k.co2_kg.expect("co2 from the live series");
    assert!((co2 - 0.024).abs() < 1e-12, "{co2}");
    let cue = k.cue.value.expect("cue");
    assert!((cue - 0.024 * 60.0).abs() < 1e-9, "{cue}");
}

#[test]
fn hostile_messages_in_between_leave_the_pue_exact() {
    let (mut intake, stats, engine) = intake();
    let mut state = 7u64;
    let mut rnd = move || dcwatt_common::backoff::splitmix64(&mut state);
    let mut hostile = 0u64;
    for s in 0..=120i64 {
        let t = T0 + s * 1000;
        let mut e = engine.lock().expect("engine");
        intake.handle(
            &mut e,
            "dcwatt/v1/good/meter/readings",
            &batch("meter", s as u64, t, 1300.0, Point::FacilityInput),
            t + 10,
        );
        intake.handle(
            &mut e,
            "dcwatt/v1/good/h1/readings",
            &batch("h1", s as u64, t, 1000.0, Point::ItInput),
            t + 10,
        );
        for _ in 0..50 {
            let mut p = batch(
                "h1",
                rnd() % 1000,
                t,
                (rnd() % 20_000) as f64,
                Point::ItInput,
            );
            // Mutate, then aim it at a node it does not name, or at nothing valid.
            for _ in 0..(1 + rnd() % 4) {
                let i = (rnd() as usize) % p.len();
                p[i] = (rnd() & 0xff) as u8;
            }
            let topic = match rnd() % 3 {
                0 => "dcwatt/v1/good/someone-else/readings".to_owned(),
                1 => format!("dcwatt/v1/good/h1/{}", rnd() % 7),
                _ => format!("dcwatt/v{}/good/meter/readings", rnd() % 3 + 2),
            };
            intake.handle(&mut e, &topic, &p, t + 20);
            hostile += 1;
        }
    }
    assert_eq!(counted(&stats), 2 * 121 + hostile);
    let e = engine.lock().expect("engine");
    let v = e.site_view("good", T0 + 120_100).expect("site");
    let w = v.pue.get("1m").expect("1m");
    assert_eq!(w.value, Some(1.3), "{w:?}");
    assert_eq!(w.quality, "measured");
    let nodes: Vec<String> = e
        .nodes("good", T0 + 120_100)
        .expect("nodes")
        .into_iter()
        .map(|n| n.node)
        .collect();
    assert_eq!(
        nodes,
        vec!["meter".to_owned(), "h1".to_owned()],
        "no node created by hostile input"
    );
}

#[test]
fn new_nodes_beyond_the_limit_are_refused_and_counted() {
    let (mut intake, stats, engine) = intake();
    let mut e = engine.lock().expect("engine");
    for n in 0..1_010u64 {
        let node = format!("n{n}");
        let payload = batch(&node, 1, T0, 100.0, Point::ItInput);
        intake.handle(
            &mut e,
            &format!("dcwatt/v1/good/{node}/readings"),
            &payload,
            T0 + 10,
        );
    }
    assert_eq!(e.node_count(), 1_000);
    let refused = stats
        .messages_rejected()
        .into_iter()
        .find(|(r, _)| *r == "too_many_nodes")
        .map(|(_, n)| n);
    assert_eq!(refused, Some(10));
    // Known nodes still get through.
    let payload = batch("n5", 2, T0 + 1000, 100.0, Point::ItInput);
    intake.handle(&mut e, "dcwatt/v1/good/n5/readings", &payload, T0 + 1010);
    assert_eq!(stats.readings_accepted.load(Ordering::Relaxed), 1_001);
}
