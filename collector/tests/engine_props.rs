//! Property tests of the engine over random sites and sampling: PUE is never below 1 when
//! facility power is at least IT power at every instant, and a counter's energy is
//! conserved whatever the sampling.

use dcwatt_collector::engine::{Engine, EngineConfig};
use dcwatt_common::protocol::{Point, Reading};
use proptest::prelude::*;

/// A whole minute, so that minutes are closed at known instants.
const T0: i64 = 1_800_000_000_000; // a whole minute

fn engine() -> Engine {
    Engine::new(EngineConfig {
        default_interval_ms: 1000,
        ..EngineConfig::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Hosts with random power, a facility meter at their sum plus a non-negative
    /// overhead, all sampled together on a jittered schedule: every window's PUE is ≥ 1
    /// and never `invalid`.
    #[test]
    fn pue_is_at_least_one_when_facility_covers_it(
        hosts in 1usize..5,
        steps in proptest::collection::vec(
            (200i64..1_500, proptest::collection::vec(0.0f64..2_000.0, 5), 0.0f64..3_000.0),
            80..160,
        ),
    ) {
        let mut e = engine();
        let mut t = T0;
        for (dt, watts, overhead) in &steps {
            t += dt;
            let mut it = 0.0;
            for (h, w) in watts.iter().take(hosts).enumerate() {
                it += w;
                e.apply_readings("s", &format!("h{h}"), &[Reading::gauge("power_w", *w, t).at(Point::ItInput)], t);
            }
            e.apply_readings("s", "m", &[Reading::gauge("power_w", it + overhead, t).at(Point::FacilityInput)], t);
        }
        let v = e.site_view("s", t).expect("site");
        for (name, w) in &v.pue.0 {
            prop_assert_ne!(w.quality, "invalid", "{}: {:?}", name, w);
            if let Some(p) = w.value {
                prop_assert!(p >= 1.0 - 1e-12, "{}: {}", name, p);
            }
        }
        if let Some(r) = v.power.ratio {
            prop_assert!(r >= 1.0 - 1e-12);
        }
    }

    /// A meter with an energy counter sampled at random instants (gaps within the bound):
    /// the closed minutes hold exactly the counter's increase, however it was sampled.
    #[test]
    fn a_counters_energy_is_conserved_under_any_sampling(
        gaps in proptest::collection::vec(1i64..2_900, 10..200),
        increments in proptest::collection::vec(0.0f64..5_000.0, 400),
    ) {
        let mut e = engine();
        // The agent's birth says it reports every second: gaps up to 3 s are integrated.
        let birth: dcwatt_common::protocol::StatusMessage = serde_json::from_str(
            r#"{"v":1,"site":"s","node":"m","state":"online","ts_ms":1,"role":"meter","interval_ms":1000}"#,
        )
        .expect("birth");
        e.apply_status(&birth, T0);
        // Sample times from T0 to exactly T0 + 5 min, at random spacings.
        let mut times = vec![T0];
        let mut t = T0;
        for g in gaps.iter().cycle() {
            t += g;
            if t >= T0 + 300_000 {
                break;
            }
            times.push(t);
        }
        times.push(T0 + 300_000);
        let mut counter = 1_000_000.0;
        let first = counter;
        for (i, &t) in times.iter().enumerate() {
            if i > 0 {
                counter += increments[i % increments.len()] * (t - times[i - 1]) as f64 / 1000.0;
            }
            e.apply_readings("s", "m", &[Reading::counter("energy_j", counter, t).at(Point::FacilityInput)], t);
        }
        let minutes = e.export_minutes("s", T0 + 300_000);
        let total: f64 = minutes.iter().map(|m| m.energy_j).sum();
        let exact = counter - first;
        prop_assert!((total - exact).abs() <= 1e-9 * exact.max(1.0), "{} vs {}", total, exact);
        prop_assert_eq!(minutes.len(), 5);
        for m in &minutes {
            prop_assert!((m.covered_ms - 60_000.0).abs() < 1e-6, "{:?}", m);
        }
    }
}
