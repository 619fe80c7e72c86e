//! History store tests on a real SQLite file in a temporary directory.

use super::store::*;
use crate::engine::Batch;
use crate::engine::MinuteEnergy;
use dcwatt_common::protocol::{Point, Reading};

const DAY: i64 = 86_400_000;
const MIN: i64 = 60_000;
/// 2025-01-01T00:00:00Z.
const Y0: i64 = 1_735_689_600_000;
const RULE: crate::engine::LevelRule = crate::engine::LevelRule {
    min_coverage: 0.95,
    category: None,
};

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("dcwatt-history-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
    fn db(&self) -> std::path::PathBuf {
        self.0.join("h.sqlite")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn row(series: &'static str, key: &str, ts: i64, value: f64) -> DerivedRow {
    DerivedRow {
        site: "dc1".into(),
        series,
        key: key.into(),
        ts_ms: ts,
        value: Some(value),
        category: Some(3),
        coverage: Some(1.0),
        quality: Some("measured"),
    }
}

#[test]
fn retention_prunes_old_rows_and_keeps_recent_ones() {
    let d = Dir::new("prune");
    let mut s = Store::open(&d.db()).expect("open");
    let now = Y0 + 500 * DAY;
    s.begin().expect("begin");
    s.put_derived(&[
        row("pue", "1h", now - 401 * DAY, 1.4),
        row("pue", "1h", now - 399 * DAY, 1.3),
    ])
    .expect("derived");
    let minute = |ts| MinuteEnergy {
        ts_ms: ts,
        point: Point::FacilityInput,
        energy_j: 1.0,
        covered_ms: 60_000.0,
        expected_ms: 60_000.0,
        estimated_j: 0.0,
        filled_j: 0.0,
    };
    s.put_minutes("dc1", &[minute(now - 401 * DAY), minute(now - DAY)])
        .expect("minutes");
    let b = Batch {
        site: "dc1".into(),
        node: "h1".into(),
        rack: None,
        zone: None,
        readings: vec![
            Reading::gauge("power_w", 100.0, now - 8 * DAY),
            Reading::gauge("power_w", 200.0, now - 6 * DAY),
        ],
    };
    assert_eq!(s.put_raw(&b).expect("raw"), 2);
    s.commit().expect("commit");
    let deleted = s.prune(now - 400 * DAY, now - 7 * DAY).expect("prune");
    assert_eq!(deleted, 3);
    let pue = s
        .series("dc1", "pue", "1h", 0, now, &every(0, DAY))
        .expect("series");
    assert_eq!(pue.value, vec![Some(1.3)]);
    assert_eq!(
        s.raw("dc1", "h1", "power_w", 0, now).expect("raw"),
        vec![(now - 6 * DAY, 200.0)]
    );
    let (_, minutes) = s.energy("dc1", 0, now, RULE).expect("energy");
    assert_eq!(minutes, 1);
}

#[test]
fn a_year_of_minutes_answers_by_day_and_by_month() {
    let d = Dir::new("year");
    let mut s = Store::open(&d.db()).expect("open");
    let minutes = 365 * 1440;
    // Facility 1300 W, IT 1000 W; derived facility power rises by 1 W per day.
    s.begin().expect("begin");
    let mut batch = Vec::with_capacity(1440);
    let mut rows = Vec::with_capacity(1440);
    for i in 0..minutes {
        let ts = Y0 + i * MIN;
        for (point, w) in [(Point::FacilityInput, 1300.0), (Point::ItInput, 1000.0)] {
            batch.push(MinuteEnergy {
                ts_ms: ts,
                point,
                energy_j: w * 60.0,
                covered_ms: 60_000.0,
                expected_ms: 60_000.0,
                estimated_j: 0.0,
                filled_j: 0.0,
            });
        }
        rows.push(row("facility_w", "", ts, 1300.0 + (i / 1440) as f64));
        if batch.len() >= 2880 {
            s.put_minutes("dc1", &batch).expect("minutes");
            s.put_derived(&rows).expect("rows");
            batch.clear();
            rows.clear();
        }
    }
    s.commit().expect("commit");
    drop(s);
    // Reopened read-only, as the API does: the data survived closing.
    let r = Store::open_read(&d.db()).expect("open read");
    let year_end = Y0 + minutes * MIN;
    let daily = r
        .series("dc1", "facility_w", "", Y0, year_end, &every(Y0, DAY))
        .expect("daily");
    assert_eq!(daily.time.len(), 365);
    assert_eq!(daily.time[10], Y0 + 10 * DAY);
    assert_eq!(daily.value[10], Some(1310.0));
    assert_eq!(daily.value[364], Some(1664.0));
    // January's report: 31 days of energy, PUE 1.3 exactly.
    let jan_end = Y0 + 31 * DAY;
    let (v, n) = r.energy("dc1", Y0, jan_end, RULE).expect("energy");
    assert_eq!(n, 31 * 1440);
    assert!((v.facility_kwh - 1.3 * 24.0 * 31.0).abs() < 1e-6, "{v:?}");
    assert!((v.it_kwh - 24.0 * 31.0).abs() < 1e-6);
    assert!((v.value.expect("pue") - 1.3).abs() < 1e-12);
    assert_eq!((v.category, v.quality), (Some(3), "measured"));
    // Weekly PUE over the year, from energy sums.
    let weeks = r
        .energy_steps("dc1", Y0, year_end, &every(Y0, 7 * DAY))
        .expect("weeks");
    assert_eq!(weeks.len(), 53);
}

#[test]
fn a_pue_step_takes_the_last_window_value_not_an_average_of_ratios() {
    let d = Dir::new("ratio");
    let mut s = Store::open(&d.db()).expect("open");
    s.begin().expect("begin");
    s.put_derived(&[
        row("pue", "24h", Y0, 1.1),
        row("pue", "24h", Y0 + MIN, 2.0),
        row("pue", "24h", Y0 + 2 * MIN, 1.4),
    ])
    .expect("rows");
    s.commit().expect("commit");
    let r = s
        .series("dc1", "pue", "24h", Y0, Y0 + 3 * MIN, &every(Y0, 3 * MIN))
        .expect("q");
    assert_eq!(r.value, vec![Some(1.4)]);
    assert_eq!(r.category, vec![Some(3)]);
    assert_eq!(r.quality, vec![Some("measured".to_owned())]);
}

/// `cfg` with a live carbon-intensity series.
fn cfg_with_live(
    cfg: &crate::engine::kpi::SiteKpiConfig,
    live: Vec<crate::engine::kpi::EmissionFactor>,
) -> crate::engine::kpi::SiteKpiConfig {
    let mut cfg = cfg.clone();
    cfg.live = live.into();
    cfg
}

/// A month's CUE from the history with the grid factor changing on the 11th, and its WUE
/// and REF from the same minutes.
#[test]
fn a_periods_cue_takes_each_factor_for_its_own_minutes() {
    use crate::engine::kpi::{Basis, EmissionFactor, RenewableContract, SiteKpiConfig};
    let d = Dir::new("cue");
    let mut s = Store::open(&d.db()).expect("open");
    s.begin().expect("begin");
    let days = 30;
    let mut batch = Vec::new();
    for i in 0..days * 1440 {
        let ts = Y0 + i * MIN;
        // Facility 1300 W (of which PV 100 W), IT 1000 W, water 0.5 L a minute.
        for (point, per_minute) in [
            (Point::FacilityInput, 1300.0 * 60.0),
            (Point::ItInput, 1000.0 * 60.0),
            (Point::RenewableOnsite, 100.0 * 60.0),
            (Point::WaterInput, 0.5),
        ] {
            batch.push(MinuteEnergy {
                ts_ms: ts,
                point,
                energy_j: per_minute,
                covered_ms: 60_000.0,
                expected_ms: 60_000.0,
                estimated_j: 0.0,
                filled_j: 0.0,
            });
        }
    }
    s.put_minutes("dc1", &batch).expect("minutes");
    s.commit().expect("commit");
    let change = Y0 + 10 * DAY;
    let factor = |from_ms, to_ms, kg_per_kwh| EmissionFactor {
        from_ms,
        to_ms,
        kg_per_kwh,
        basis: Basis::Location,
        source: "test".into(),
    };
    let cfg = SiteKpiConfig {
        factors: vec![factor(Y0, change, 0.6), factor(change, Y0 + 365 * DAY, 0.5)],
        // 72 kWh over the 30 days.
        contracts: vec![RenewableContract {
            from_ms: Y0,
            to_ms: Y0 + 30 * DAY,
            kwh: 72.0,
            evidence: "GEC-7".into(),
            kind: "green_certificate".into(),
            entered_ms: None,
        }],
        ..SiteKpiConfig::default()
    };
    let (v, _) = s
        .energy_kpis("dc1", Y0, Y0 + days * DAY, RULE, &cfg)
        .expect("energy");
    let k = &v.kpis;
    // Grid 1.2 kW: 10 days at 0.6, 20 days at 0.5; IT 24 kWh a day.
    let co2 = 1.2 * 24.0 * (10.0 * 0.6 + 20.0 * 0.5);
    assert!((k.co2_kg.expect("co2") - co2).abs() < 1e-6, "{k:?}");
    let cue = k.cue.value.expect("cue");
    assert!((cue - co2 / (24.0 * 30.0)).abs() < 1e-12, "{cue}");
    // A live series over day 2 (0.9) wins over the configured 0.6 there, by the minute.
    let live = cfg_with_live(&cfg, vec![factor(Y0 + DAY, Y0 + 2 * DAY, 0.9)]);
    let (v, _) = s
        .energy_kpis("dc1", Y0, Y0 + days * DAY, RULE, &live)
        .expect("energy");
    let co2 = 1.2 * 24.0 * (9.0 * 0.6 + 0.9 + 20.0 * 0.5);
    assert!(
        (v.kpis.co2_kg.expect("co2") - co2).abs() < 1e-6,
        "{:?}",
        v.kpis
    );
    // WUE: 720 L a day over 24 kWh = 30 L/kWh. REF: (72 + 72) kWh / 936 kWh.
    assert!((k.wue.value.expect("wue") - 30.0).abs() < 1e-9, "{k:?}");
    let facility = 1.3 * 24.0 * 30.0;
    assert!(
        (k.ref_.value.expect("ref") - 144.0 / facility).abs() < 1e-12,
        "{k:?}"
    );
    // The same minutes without the factors: no CUE, and it says which part lacks one.
    let (v, _) = s.energy("dc1", Y0, Y0 + days * DAY, RULE).expect("energy");
    assert_eq!(v.kpis.cue.value, None);
    assert!(v
        .kpis
        .cue
        .reason
        .unwrap_or_default()
        .contains("emission factor"));
}
