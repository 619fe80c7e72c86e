//! A deterministic site simulation checked against its exact integrals.
//!
//! 500 hosts and two facility feeds report every 10 s for 3 simulated days, with ±1 s
//! jitter, 2 % of batches lost in bursts of 1 to 5, 32-bit counter wraps on most hosts,
//! gauges on the rest, and one operator reset of a facility meter. Every power profile
//! has a closed-form integral, so the truth of any window is exact. At checkpoints
//! through the three days every rolling window must be within 0.1 % of the true PUE, and
//! its IT and facility coverage must equal the share of meter-time the lost batches
//! left uncovered (computed here from what was actually delivered). A water meter (a
//! cubic-metre totaliser), a heat meter at the boundary (reused heat) and an on-site PV
//! meter run beside them, losing batches like the rest: every window's WUE, ERF and REF
//! must be within 0.1 % of their exact integrals too, and so must CUE, whose grid factor
//! changes half-way.
//!
//! Nothing is faked but time: the engine is the collector's own, fed its real readings.

use dcwatt_collector::engine::kpi::{Basis, EmissionFactor, SiteKpiConfig};
use dcwatt_collector::engine::{ApplyStats, Engine, EngineConfig};
use dcwatt_common::protocol::{Point, Reading, StatusMessage};
use std::f64::consts::TAU;

/// Midnight UTC, 2027-01-01.
const T0: i64 = 1_798_761_600_000;
const STEP_MS: i64 = 10_000;
const DAYS: i64 = 3;
const HOSTS: usize = 500;
/// Counters of most hosts wrap like a 32-bit millijoule register.
const WRAP_J: f64 = 4_294_967.296;
/// Gap bound: 3 × the 10 s interval the births announce.
const MAX_GAP_MS: i64 = 3 * STEP_MS;
const DAY_S: f64 = 86_400.0;

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A daily sine around a base: `base + amp × sin(2π (t / day + phase))`, t in seconds from
/// T0. Its integral is closed-form.
#[derive(Clone, Copy)]
struct Profile {
    base: f64,
    amp: f64,
    phase: f64,
}

impl Profile {
    fn watts(&self, t: f64) -> f64 {
        self.base + self.amp * (TAU * (t / DAY_S + self.phase)).sin()
    }

    /// Energy over [0, t], J.
    fn energy(&self, t: f64) -> f64 {
        let k = DAY_S / TAU;
        self.base * t
            - self.amp * k * ((TAU * (t / DAY_S + self.phase)).cos() - (TAU * self.phase).cos())
    }
}

/// How a meter reports.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// `energy_j` counter wrapping at `WRAP_J`.
    WrappingCounter,
    /// `power_w` gauge.
    Gauge,
    /// `energy_j` counter that never wraps; reset by an operator at `reset_at` (seconds).
    Counter { reset_at: Option<f64> },
    /// `water_m3` totaliser: the profile is in L/s, its integral in litres.
    Water,
}

struct Meter {
    node: String,
    point: Point,
    kind: Kind,
    /// The meter's power is `share × (facility profile)` for facility feeds, else its own.
    profile: Profile,
    /// Facility feeds: fraction of the site's facility power.
    share: Option<f64>,
    /// Offset of the counter at T0.
    offset: f64,
    /// Delivered sample times, ms.
    delivered: Vec<i64>,
    /// Batches lost.
    lost: u64,
    /// Wraps in what was delivered.
    wraps: u64,
    /// Batches still to lose in the current burst.
    burst_left: u32,
    last_value: Option<f64>,
}

/// The site: facility power = 1.25 × IT power + 40 kW (cooling base, lighting, losses).
struct Site {
    meters: Vec<Meter>,
    hosts: Hosts,
}

/// The hosts' power profiles: the truth everything is checked against.
struct Hosts(Vec<Profile>);

impl Hosts {
    fn it_energy(&self, t: f64) -> f64 {
        self.0.iter().map(|p| p.energy(t)).sum()
    }

    fn facility_energy(&self, t: f64) -> f64 {
        1.25 * self.it_energy(t) + 40_000.0 * t
    }

    fn meter_energy(&self, m: &Meter, t: f64) -> f64 {
        match m.share {
            Some(share) => share * self.facility_energy(t),
            None => m.profile.energy(t),
        }
    }

    fn meter_watts(&self, m: &Meter, t: f64) -> f64 {
        match m.share {
            Some(share) => {
                share * (1.25 * self.0.iter().map(|p| p.watts(t)).sum::<f64>() + 40_000.0)
            }
            None => m.profile.watts(t),
        }
    }
}

fn build(rng: &mut Rng) -> Site {
    let mut meters = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let profile = Profile {
            base: 300.0 + 400.0 * rng.unit(),
            amp: 50.0 + 100.0 * rng.unit(),
            phase: rng.unit(),
        };
        hosts.push(profile);
        meters.push(Meter {
            node: format!("h{i:03}"),
            point: Point::ItInput,
            kind: if i % 5 == 4 {
                Kind::Gauge
            } else {
                Kind::WrappingCounter
            },
            profile,
            share: None,
            offset: WRAP_J * rng.unit(),
            delivered: Vec::new(),
            lost: 0,
            wraps: 0,
            burst_left: 0,
            last_value: None,
        });
    }
    for (name, share, reset_at) in [("feed-a", 0.6, Some(1.6 * DAY_S)), ("feed-b", 0.4, None)] {
        meters.push(Meter {
            node: name.to_owned(),
            point: Point::FacilityInput,
            kind: Kind::Counter { reset_at },
            profile: hosts[0],
            share: Some(share),
            offset: 3.6e9 * rng.unit(),
            delivered: Vec::new(),
            lost: 0,
            wraps: 0,
            burst_left: 0,
            last_value: None,
        });
    }
    // Water 2 ± 0.5 L/s, reused heat 30 ± 10 kW (thermal), PV 25 ± 20 kW (a daily sine:
    // never negative), all on their own profiles.
    for (name, point, kind, base, amp) in [
        ("water", Point::WaterInput, Kind::Water, 2.0, 0.5),
        ("heat", Point::EnergyReused, Kind::Gauge, 30_000.0, 10_000.0),
        (
            "pv",
            Point::RenewableOnsite,
            Kind::Counter { reset_at: None },
            25_000.0,
            20_000.0,
        ),
    ] {
        meters.push(Meter {
            node: name.to_owned(),
            point,
            kind,
            profile: Profile {
                base,
                amp,
                phase: rng.unit(),
            },
            share: None,
            offset: 1_000.0 * rng.unit(),
            delivered: Vec::new(),
            lost: 0,
            wraps: 0,
            burst_left: 0,
            last_value: None,
        });
    }
    Site {
        meters,
        hosts: Hosts(hosts),
    }
}

/// The reading a meter takes at `ts`.
fn reading(site: &Hosts, m: &Meter, ts: i64) -> Reading {
    let t = (ts - T0) as f64 / 1000.0;
    match m.kind {
        Kind::Gauge => Reading::gauge("power_w", site.meter_watts(m, t), ts),
        Kind::WrappingCounter => {
            let v = (m.offset + site.meter_energy(m, t)).rem_euclid(WRAP_J);
            Reading::counter("energy_j", v, ts).wrapping_at(WRAP_J)
        }
        Kind::Counter { reset_at } => {
            let v = match reset_at {
                Some(r) if t >= r => site.meter_energy(m, t) - site.meter_energy(m, r),
                _ => m.offset + site.meter_energy(m, t),
            };
            Reading::counter("energy_j", v, ts)
        }
        Kind::Water => Reading::counter(
            "water_m3",
            (m.offset + site.meter_energy(m, t)) / 1000.0,
            ts,
        ),
    }
    .at(m.point)
}

/// Meter-time in `[from, to)` that the delivered samples leave uncovered, and the
/// meter-time expected (from the first sample on), in ms.
fn uncovered(m: &Meter, from: i64, to: i64) -> (i64, i64) {
    let Some(&first) = m.delivered.first() else {
        return (0, 0);
    };
    let expected = (to - from.max(first)).max(0);
    let overlap = |a: i64, b: i64| (b.min(to) - a.max(from)).max(0);
    let mut gaps = 0;
    for w in m.delivered.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b <= from || a >= to {
            continue;
        }
        let reset = matches!(m.kind, Kind::Counter { reset_at: Some(r) }
            if (a - T0) as f64 / 1000.0 < r && (b - T0) as f64 / 1000.0 >= r);
        if b - a > MAX_GAP_MS || reset {
            gaps += overlap(a, b);
        }
    }
    // A meter silent at the end: from its last sample on.
    if let Some(&last) = m.delivered.last() {
        gaps += overlap(last, to);
    }
    (gaps, expected)
}

#[test]
fn three_days_of_500_hosts_match_the_exact_integrals() {
    let mut rng = Rng(0x00DC_0A77);
    let mut site = build(&mut rng);
    let mut cfg = EngineConfig::default();
    cfg.site_kpis.insert("sim".into(), kpi_config());
    let mut e = Engine::new(cfg);
    for m in &site.meters {
        let birth: StatusMessage = serde_json::from_str(&format!(
            r#"{{"v":1,"site":"sim","node":"{}","state":"online","ts_ms":{T0},"role":"{}","interval_ms":10000}}"#,
            m.node,
            if m.point == Point::ItInput { "host" } else { "meter" }
        ))
        .expect("birth");
        e.apply_status(&birth, T0);
    }
    let steps = DAYS * 86_400_000 / STEP_MS;
    // Checkpoints: every 6 h, and the end.
    let checkpoints: Vec<i64> = (1..=DAYS * 4).map(|q| q * 21_600_000 / STEP_MS).collect();
    // Bursts of lost batches: 1 to 5 long (mean 3), started at 2 % / 3 of the steps.
    let mut stats = ApplyStats::default();
    let mut now = T0;
    let mut checked = 0;
    for k in 0..=steps {
        for m in &mut site.meters {
            if m.burst_left == 0 && k > 0 && k < steps && rng.unit() < 0.02 / 3.0 {
                m.burst_left = 1 + (rng.next() % 5) as u32;
            }
            let jitter = (rng.unit() * 2_000.0) as i64 - 1_000;
            if m.burst_left > 0 {
                m.burst_left -= 1;
                m.lost += 1;
                continue;
            }
            let ts = T0 + k * STEP_MS + if k == 0 { 0 } else { jitter };
            let r = reading(&site.hosts, m, ts);
            if m.last_value.is_some_and(|p| r.value < p) && m.kind == Kind::WrappingCounter {
                m.wraps += 1;
            }
            m.last_value = Some(r.value);
            m.delivered.push(ts);
            now = now.max(ts);
            let st = e.apply_readings("sim", &m.node, &[r], now);
            stats.counter_resets += st.counter_resets;
            stats.counter_wraps += st.counter_wraps;
            stats.implausible_jumps += st.implausible_jumps;
            stats.out_of_order += st.out_of_order;
            stats.too_old += st.too_old;
        }
        if checkpoints.contains(&k) {
            checked += check(&site, &e, now + 500);
        }
    }
    // From the first checkpoint (6 h) on, every window has a value, and all were checked.
    assert_eq!(checked, 6 * checkpoints.len(), "windows checked");
    let lost: u64 = site.meters.iter().map(|m| m.lost).sum();
    let sent = site.meters.len() as u64 * (steps as u64 + 1);
    let share = lost as f64 / sent as f64;
    assert!((0.015..0.025).contains(&share), "lost {share}");
    let wraps: u64 = site.meters.iter().map(|m| m.wraps).sum();
    assert!(wraps > 1_000, "the counters wrapped: {wraps}");
    assert_eq!(stats.counter_wraps, wraps, "every wrap unwrapped");
    assert_eq!(
        stats.counter_resets, 1,
        "the operator's reset, and nothing else"
    );
    assert_eq!(
        (stats.implausible_jumps, stats.out_of_order, stats.too_old),
        (0, 0, 0)
    );
}

/// The grid factor changes at 36 h: 0.55 kg/kWh before, 0.50 after.
const FACTOR_CHANGE_S: f64 = 1.5 * DAY_S;

fn kpi_config() -> SiteKpiConfig {
    let at = |s: f64| T0 + (s * 1000.0) as i64;
    let factor = |from, to, kg| EmissionFactor {
        from_ms: from,
        to_ms: to,
        kg_per_kwh: kg,
        basis: Basis::Location,
        source: "simulated grid".into(),
    };
    SiteKpiConfig {
        factors: vec![
            factor(at(-DAY_S * 40.0), at(FACTOR_CHANGE_S), 0.55),
            factor(at(FACTOR_CHANGE_S), at(DAY_S * 40.0), 0.50),
        ],
        ..SiteKpiConfig::default()
    }
}

/// Checks every window of the site view at `now`; returns how many had a value.
fn check(site: &Site, e: &Engine, now: i64) -> usize {
    let v = e.site_view("sim", now).expect("site view");
    let mut n = 0;
    let mut worst = (0.0f64, "");
    let mut lowest = 1.0f64;
    for (name, w) in &v.pue.0 {
        let (Some(value), Some(from), Some(to)) = (w.value, w.from_ms, w.to_ms) else {
            continue;
        };
        n += 1;
        let (a, b) = ((from - T0) as f64 / 1000.0, (to - T0) as f64 / 1000.0);
        let h = &site.hosts;
        let truth =
            (h.facility_energy(b) - h.facility_energy(a)) / (h.it_energy(b) - h.it_energy(a));
        let err = (value - truth).abs() / truth;
        if err > worst.0 {
            worst = (err, name);
        }
        lowest = lowest.min(w.coverage_it);
        // The figures beyond PUE against their own integrals over the same interval.
        let own = |node: &str| {
            let m = site.meters.iter().find(|m| m.node == node).expect("meter");
            h.meter_energy(m, b) - h.meter_energy(m, a)
        };
        let (it_kwh, facility) = (
            (h.it_energy(b) - h.it_energy(a)) / 3.6e6,
            h.facility_energy(b) - h.facility_energy(a),
        );
        // CUE: the grid's share of facility energy (less PV) at the factor of its time.
        let grid = |a: f64, b: f64| {
            let pv = site.meters.iter().find(|m| m.node == "pv").expect("pv");
            (h.facility_energy(b) - h.facility_energy(a))
                - (h.meter_energy(pv, b) - h.meter_energy(pv, a))
        };
        let cut = FACTOR_CHANGE_S.clamp(a, b);
        let co2 = (grid(a, cut) * 0.55 + grid(cut, b) * 0.50) / 3.6e6;
        for (kpi, got, want) in [
            ("CUE", w.kpis.cue.value, co2 / it_kwh),
            ("WUE", w.kpis.wue.value, own("water") / it_kwh),
            ("ERF", w.kpis.erf.value, own("heat") / facility),
            ("REF", w.kpis.ref_.value, own("pv") / facility),
        ] {
            let got = got.unwrap_or_else(|| panic!("{name}: no {kpi}: {:?}", w.kpis));
            let err = (got - want).abs() / want;
            assert!(
                err < 1e-3,
                "{name} at {:.2} h: {kpi} {got} vs truth {want} ({:.4} %)",
                (now - T0) as f64 / 3.6e6,
                err * 100.0
            );
            if err > worst.0 {
                worst = (err, name);
            }
        }
        assert!(
            err < 1e-3,
            "{name} at {:.2} h: PUE {value} vs truth {truth} ({:.4} %): {w:?}",
            (now - T0) as f64 / 3.6e6,
            err * 100.0
        );
        assert_eq!(w.category, Some(3));
        for (point, got) in [
            (Point::ItInput, w.coverage_it),
            (Point::FacilityInput, w.coverage_facility),
        ] {
            let (gaps, expected) = site
                .meters
                .iter()
                .filter(|m| m.point == point)
                .map(|m| uncovered(m, from, to))
                .fold((0, 0), |(g, x), (a, b)| (g + a, x + b));
            let want = 1.0 - gaps as f64 / expected as f64;
            assert!(
                (got - want).abs() < 2e-6,
                "{name} {point:?} coverage {got} vs {want} at {:.2} h",
                (now - T0) as f64 / 3.6e6
            );
            if want < 1.0 {
                assert_eq!(w.quality, "partial", "{name}: {w:?}");
            }
        }
    }
    eprintln!(
        "{:5.1} h: {n} windows, worst error {:.5} % ({}), lowest IT coverage {lowest:.6}",
        (now - T0) as f64 / 3.6e6,
        worst.0 * 100.0,
        worst.1
    );
    n
}
