//! China's online energy monitoring asks the user's side to keep at least six months of
//! its interval data: the history's default retention (400 days) does, checked here on a
//! real SQLite file by pruning at the default age and reading a 200-day-old quarter hour
//! back as an interval report.

use dcwatt_collector::config::CollectorConfig;
use dcwatt_collector::engine::MinuteEnergy;
use dcwatt_collector::sinks::history::store::Store;
use dcwatt_collector::zone::SiteZone;
use dcwatt_common::protocol::Point;

const DAY: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z.
const NOW: i64 = 1_793_491_200_000;

#[test]
fn six_months_of_intervals_stay_with_the_default_retention() {
    let dir = std::env::temp_dir().join(format!("dcwatt-retention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut s = Store::open(&dir.join("h.sqlite")).expect("open");
    // A quarter hour 200 days ago (UTC, the default zone), 100 W of IT.
    let old = (NOW - 200 * DAY) / 900_000 * 900_000;
    let minutes: Vec<MinuteEnergy> = (0..15)
        .map(|m| MinuteEnergy {
            ts_ms: old + m * 60_000,
            point: Point::ItInput,
            energy_j: 6_000.0,
            covered_ms: 60_000.0,
            expected_ms: 60_000.0,
            estimated_j: 0.0,
            filled_j: 0.0,
        })
        .collect();
    s.begin().expect("begin");
    s.put_minutes("dc", &minutes).expect("put");
    s.commit().expect("commit");
    let loader = dcwatt_common::settings::Loader::from_toml("").expect("defaults");
    let defaults = CollectorConfig::from_loader(&loader).expect("valid");
    let keep = defaults
        .history
        .expect("history on by default")
        .derived_retention;
    assert!(keep.as_secs() >= 183 * 86_400, "{keep:?}");
    let pruned = s.prune(NOW - keep.as_millis() as i64, NOW).expect("prune");
    assert_eq!(pruned, 0);
    let zone = SiteZone::default();
    let r = s
        .intervals("dc", old, old + 900_000, 900_000, &zone)
        .expect("report");
    let it = &r.series[0].intervals[0];
    assert_eq!((it.from_ms, it.completeness), (old, 1.0));
    assert_eq!(it.value, 15.0 * 6_000.0 / 3.6e6);
    // Pruning at 180 days would have lost it: the check is not vacuous.
    s.prune(NOW - 180 * DAY, NOW).expect("prune");
    let r = s
        .intervals("dc", old, old + 900_000, 900_000, &zone)
        .expect("report");
    assert!(r.series.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}
