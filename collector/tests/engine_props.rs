//! Property tests of the engine over random sites and sampling: PUE is never below 1 when
//! facility power is at least IT power at every instant, a counter's energy is conserved
//! whatever the sampling, and the order samples arrive in within the reorder window does
//! not change any result.

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
        let minutes = e.closed_minutes("s", Default::default(), T0 + 300_000).0;
        let total: f64 = minutes.iter().map(|m| m.energy_j).sum();
        let exact = counter - first;
        prop_assert!((total - exact).abs() <= 1e-9 * exact.max(1.0), "{} vs {}", total, exact);
        prop_assert_eq!(minutes.len(), 5);
        for m in &minutes {
            prop_assert!((m.covered_ms - 60_000.0).abs() < 1e-6, "{:?}", m);
        }
    }

    /// A site (gauge and counter hosts, an averaging cooling meter, a facility counter)
    /// delivered once in order and once with each node's batches shuffled within runs of
    /// up to 8 (what a reconnect's redelivery or a spool replay does): every exported
    /// minute and every short window come out the same.
    #[test]
    fn order_of_arrival_within_the_reorder_window_does_not_change_results(
        steps in proptest::collection::vec(
            (500i64..1_500, proptest::collection::vec(50.0f64..900.0, 4), 0.0f64..400.0),
            1_300..1_400,
        ),
        blocks in proptest::collection::vec(1usize..=8, 64),
        seed in any::<u64>(),
    ) {
        // Per node, its batches in time order: (node, readings).
        let nodes = ["h0", "h1", "hc", "cool", "m"];
        let mut batches: Vec<Vec<(i64, Vec<Reading>)>> = vec![Vec::new(); nodes.len()];
        let (mut t, mut hc_j, mut m_j) = (T0, 0.0f64, 0.0f64);
        for (dt, w, overhead) in &steps {
            t += dt;
            let secs = *dt as f64 / 1000.0;
            hc_j += w[2] * secs;
            let cooling = w[3] / 4.0;
            m_j += (w[0] + w[1] + w[2] + cooling + overhead) * secs;
            batches[0].push((t, vec![Reading::gauge("power_w", w[0], t).at(Point::ItInput)]));
            batches[1].push((t, vec![Reading::gauge("power_w", w[1], t).at(Point::ItInput)]));
            batches[2].push((t, vec![Reading::counter("energy_j", hc_j, t).at(Point::ItInput)]));
            batches[3].push((t, vec![Reading::gauge("power_w", cooling, t)
                .at(Point::Cooling)
                .averaged_over(u64::try_from(*dt).unwrap_or(1))]));
            batches[4].push((t, vec![Reading::counter("energy_j", m_j, t).at(Point::FacilityInput)]));
        }
        let end = t + 5_000;
        let run = |order: &[Vec<(i64, Vec<Reading>)>]| {
            let mut e = engine();
            for n in nodes {
                let birth: dcwatt_common::protocol::StatusMessage = serde_json::from_str(&format!(
                    r#"{{"v":1,"site":"s","node":"{n}","state":"online","ts_ms":1,"interval_ms":1000}}"#
                ))
                .expect("birth");
                e.apply_status(&birth, T0);
            }
            let mut now = T0;
            let longest = order.iter().map(Vec::len).max().unwrap_or(0);
            let mut stats = dcwatt_collector::engine::ApplyStats::default();
            for k in 0..longest {
                for (i, node) in order.iter().enumerate() {
                    if let Some((ts, readings)) = node.get(k) {
                        now = now.max(*ts);
                        let st = e.apply_readings("s", nodes[i], readings, now);
                        stats.out_of_order += st.out_of_order;
                        stats.reordered += st.reordered;
                    }
                }
            }
            let minutes = e.closed_minutes("s", Default::default(), end).0;
            let view = e.site_view("s", end).expect("site");
            (minutes, view, stats)
        };
        let (in_order, view_a, stats_a) = run(&batches);
        prop_assert_eq!(stats_a.reordered, 0);
        // Shuffle each node's batches within consecutive runs of 1..=8.
        let mut rng = seed;
        let mut next = move || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize
        };
        let mut shuffled = batches.clone();
        for (n, node) in shuffled.iter_mut().enumerate() {
            let mut i = 0;
            let mut b = n;
            while i < node.len() {
                let len = blocks[b % blocks.len()].min(node.len() - i);
                b += 1;
                for j in (1..len).rev() {
                    node.swap(i + j, i + next() % (j + 1));
                }
                i += len;
            }
        }
        let (out_of_order, view_b, stats_b) = run(&shuffled);
        prop_assert_eq!(stats_b.out_of_order, 0, "every late sample was within the window");
        prop_assert_eq!(in_order.len(), out_of_order.len());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
        for (a, b) in in_order.iter().zip(&out_of_order) {
            prop_assert_eq!((a.ts_ms, a.point), (b.ts_ms, b.point));
            prop_assert!(close(a.energy_j, b.energy_j), "{:?} vs {:?}", a, b);
            prop_assert!(close(a.covered_ms, b.covered_ms), "{:?} vs {:?}", a, b);
            prop_assert!(close(a.expected_ms, b.expected_ms), "{:?} vs {:?}", a, b);
        }
        for name in ["1m", "15m"] {
            let (a, b) = (view_a.pue.get(name).expect("window"), view_b.pue.get(name).expect("window"));
            let (va, vb) = (a.value.expect("a value"), b.value.expect("a value"));
            prop_assert!(close(va, vb), "{}: {} vs {}", name, va, vb);
            prop_assert!(close(a.coverage_it, b.coverage_it) && close(a.coverage_facility, b.coverage_facility));
            prop_assert_eq!(a.quality, b.quality);
        }
    }
}
