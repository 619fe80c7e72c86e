//! The embedded history: closed minutes of energy give an exact energy report and PUE for
//! any period, derived series are served for charts, and both survive a restart.

use dcwatt_common::protocol::{
    Point, Reading, ReadingsMessage, Role, State, StatusMessage, VERSION,
};
use dcwatt_e2e::*;
use std::time::Duration;

const SITE: &str = "hist";
const MIN: i64 = 60_000;

fn msg(topic: String, payload: serde_json::Result<Vec<u8>>) -> (String, Vec<u8>) {
    (topic, payload.expect("json"))
}

/// Facility 1300 W; two hosts at 500 W each; one batch per node at `ts`.
fn batches(seq: u64, ts: i64) -> Vec<(String, Vec<u8>)> {
    [
        ("meter", 1300.0, Point::FacilityInput),
        ("h1", 500.0, Point::ItInput),
        ("h2", 500.0, Point::ItInput),
    ]
    .into_iter()
    .map(|(node, w, point)| {
        let m = ReadingsMessage {
            v: VERSION,
            site: SITE.into(),
            node: node.into(),
            seq,
            sent_ms: ts,
            readings: vec![Reading::gauge("power_w", w, ts).at(point)],
        };
        msg(
            dcwatt_common::protocol::readings_topic(SITE, node),
            serde_json::to_vec(&m),
        )
    })
    .collect()
}

fn births() -> Vec<(String, Vec<u8>)> {
    [
        ("meter", Role::Meter),
        ("h1", Role::Host),
        ("h2", Role::Host),
    ]
    .into_iter()
    .map(|(node, role)| {
        let mut s = StatusMessage::offline(SITE, node, dcwatt_common::now_ms());
        s.state = State::Online;
        s.role = Some(role);
        s.interval_ms = Some(1000);
        msg(
            dcwatt_common::protocol::status_topic(SITE, node),
            serde_json::to_vec(&s),
        )
    })
    .collect()
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("DCWATT__HISTORY__INTERVAL_SECS", "1".into()),
        ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into()),
    ]
}

#[test]
fn energy_reports_and_trends_come_from_the_history_and_survive_a_restart() {
    let dir = TempDir::new("history");
    let config = dir.write(
        "collector.toml",
        &format!("[[sites]]\nsite = \"{SITE}\"\nutc_offset = \"+08:00\"\n"),
    );
    let start = || Collector::start_with_config(&dir, BrokerKind::Embedded, &config, None, &env());
    let mut c = start();
    let now = dcwatt_common::now_ms();
    let m0 = now.div_euclid(MIN) * MIN - 5 * MIN;
    let mut msgs = births();
    let mut seq = 0u64;
    let mut ts = m0;
    while ts <= now {
        msgs.extend(batches(seq, ts));
        seq += 1;
        ts += 1000;
    }
    publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(60));
    for _ in 0..6 {
        let live = batches(seq, dcwatt_common::now_ms());
        seq += 1;
        publish_all(c.mqtt, live.into_iter(), Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Four whole minutes: exactly 4 × 60 s of 1300 W and of 1000 W.
    let report = format!("/api/v1/sites/{SITE}/energy?from={m0}&to={}", m0 + 4 * MIN);
    let e = wait_for(
        "four minutes in the history",
        Duration::from_secs(30),
        || get_json(c.http, &report).filter(|e| e["minutes"] == 4),
    );
    let kwh = |w: f64| w * 240.0 / 3.6e6;
    let close = |a: &serde_json::Value, b: f64| (a.as_f64().expect("number") - b).abs() < 1e-12;
    assert!(close(&e["facility_kwh"], kwh(1300.0)), "{e}");
    assert!(close(&e["it_kwh"], kwh(1000.0)), "{e}");
    assert!(close(&e["pue"], 1.3), "{e}");
    assert_eq!(e["category"], 3);
    assert_eq!(e["quality"], "measured");
    assert_eq!(e["label"], "PUE₃, period");
    // PUE per minute from the energy, and the live facility power, for charts.
    let per_minute = get_json(
        c.http,
        &format!(
            "/api/v1/sites/{SITE}/history?series=pue&window=step&step=1m&from={m0}&to={}",
            m0 + 4 * MIN
        ),
    )
    .expect("pue per minute");
    let values: Vec<f64> = per_minute["value"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert_eq!(values.len(), 4, "{per_minute}");
    assert!(
        values.iter().all(|v| (v - 1.3).abs() < 1e-12),
        "{per_minute}"
    );
    let facility = wait_for(
        "facility power in the history",
        Duration::from_secs(10),
        || {
            let h = get_json(
                c.http,
                &format!("/api/v1/sites/{SITE}/history?series=facility_w&from=-10m"),
            )?;
            (!h["value"].as_array()?.is_empty()).then_some(h)
        },
    );
    assert_eq!(facility["value"][0], 1300.0, "{facility}");
    assert_eq!(
        facility["time"].as_array().map(|a| a.len()),
        facility["value"].as_array().map(|a| a.len())
    );
    let pue_1h = get_json(
        c.http,
        &format!("/api/v1/sites/{SITE}/history?series=pue&window=1h&from=-10m"),
    )
    .expect("pue 1h");
    assert_eq!(pue_1h["window"], "1h");
    assert!(
        !pue_1h["category"]
            .as_array()
            .expect("categories")
            .is_empty(),
        "{pue_1h}"
    );
    // Calendar periods in the site's time zone: today, this month, this year.
    let cal = get_json(c.http, &format!("/api/v1/sites/{SITE}/calendar")).expect("calendar");
    assert_eq!(cal["utc_offset"], "+08:00", "{cal}");
    let mut last_minutes = 0;
    for period in ["today", "month", "year_to_date", "trailing_12_months"] {
        let p = &cal[period];
        let minutes = p["minutes"].as_u64().expect("minutes");
        assert!(
            minutes >= last_minutes,
            "{period} holds at least the shorter periods: {cal}"
        );
        last_minutes = minutes;
        if minutes > 0 {
            assert!(close(&p["pue"], 1.3), "{period}: {p}");
            assert_eq!(p["label"], format!("PUE₃, {period}"));
        }
        let from = p["from_ms"].as_i64().expect("from");
        if period != "trailing_12_months" {
            // Local midnights in UTC+8 are 16:00 UTC.
            assert_eq!(
                (from + 8 * 3_600_000).rem_euclid(86_400_000),
                0,
                "{period}: {from}"
            );
        }
    }
    assert!(last_minutes >= 4, "{cal}");
    assert!(
        cal["trailing_12_months"]["history_share"]
            .as_f64()
            .expect("share")
            < 0.01
    );
    // Bad requests say what is wrong.
    let (status, body) =
        http_get(c.http, &format!("/api/v1/sites/{SITE}/history?series=nope")).expect("answer");
    assert_eq!(status, 400);
    assert!(body.contains("pue"), "{body}");
    let (status, _) = http_get(
        c.http,
        &format!("/api/v1/sites/{SITE}/energy?from=tomorrow"),
    )
    .expect("answer");
    assert_eq!(status, 400);
    assert_eq!(
        http_get(c.http, "/api/v1/sites/nowhere/energy").map(|x| x.0),
        Some(404)
    );
    let m = c.metrics();
    assert!(
        metric(&m, "dcwatt_history_energy_rows_written_total").unwrap_or(0.0) >= 8.0,
        "{m}"
    );
    assert!(
        metric(&m, "dcwatt_history_raw_written_total").unwrap_or(0.0) >= (seq * 3) as f64 * 0.9
    );
    assert_eq!(metric(&m, "dcwatt_history_write_errors_total"), Some(0.0));

    // A restart keeps all of it.
    let _ = c.proc.terminate(Duration::from_secs(10));
    c = start();
    let after = get_json(c.http, &report).expect("the report after a restart");
    assert_eq!(after["facility_kwh"], e["facility_kwh"]);
    assert_eq!(after["it_kwh"], e["it_kwh"]);
    assert_eq!(after["minutes"], 4);
    let trend = get_json(
        c.http,
        &format!("/api/v1/sites/{SITE}/history?series=facility_w&from=-10m"),
    )
    .expect("trend");
    assert!(!trend["value"].as_array().expect("values").is_empty());
}

/// The demo's past (`dcwatt-backfill`) is history the real collector serves: energy
/// reports and trends from the first minute, with exact energies. Over whole days the
/// model's daily cosines sum to zero minute by minute, so the energies are its means:
/// IT = Σ host base power (40 hosts of 280 + ((h+1)·37 mod 160) W, 10 GPU servers of
/// 900 W) × 48 h; facility = IT × 1.02 / 0.97 (UPS losses) + 8.5 kW × (0.85 + 0.3 × ½)
/// of cooling + 400 W of lighting, × 48 h.
/// Writes a simulated site's past into the history under `state` with `dcwatt-backfill`.
fn backfill(state: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(bin("dcwatt-backfill"))
        .arg("--db")
        .arg(state.join("dcwatt-history.sqlite"))
        .args(args)
        .output()
        .expect("dcwatt-backfill runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_demo_history_backfill_is_served_with_exact_energy() {
    let dir = TempDir::new("backfill");
    let state = dir.0.join("state");
    backfill(&state, &["--site", "demo", "--days", "2", "--hosts", "50"]);
    let it_w: f64 = (0..40u32)
        .map(|h| f64::from(280 + ((h + 1) * 37) % 160))
        .sum::<f64>()
        + 10.0 * 900.0;
    let it_kwh = it_w * 48.0 / 1000.0;
    let facility_kwh = (it_w * 1.02 / 0.97 + 8500.0 + 400.0) * 48.0 / 1000.0;

    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__STATE_DIR", state.display().to_string())],
    );
    let now = dcwatt_common::now_ms();
    let e = get_json(
        c.http,
        &format!(
            "/api/v1/sites/demo/energy?from={}&to={}",
            now - 3 * 86_400_000,
            now + 3_600_000
        ),
    )
    .expect("energy report");
    assert_eq!(e["minutes"], 2880, "{e}");
    assert_eq!(e["category"], 3, "{e}");
    assert_eq!(e["quality"], "measured", "{e}");
    let got_it = e["it_kwh"].as_f64().unwrap();
    let got_fac = e["facility_kwh"].as_f64().unwrap();
    assert!(
        (got_it - it_kwh).abs() < 1e-6 * it_kwh,
        "IT {got_it} vs {it_kwh} kWh"
    );
    assert!(
        (got_fac - facility_kwh).abs() < 1e-6 * facility_kwh,
        "facility {got_fac} vs {facility_kwh} kWh"
    );
    let trend = get_json(
        c.http,
        "/api/v1/sites/demo/history?series=pue&window=24h&from=-48h",
    )
    .expect("trend");
    let points = trend["value"]
        .as_array()
        .map_or(0, |v| v.iter().filter(|x| x.is_f64()).count());
    assert!(points > 100, "a day of 24h-window PUE points: {trend}");

    // The same minutes as quarter hours, days and months: the totals are the energy
    // report's, and each level is exactly the sum of the one below.
    let span = format!("from={}&to={}", now - 3 * 86_400_000, now + 3_600_000);
    let r =
        get_json(c.http, &format!("/api/v1/sites/demo/intervals?{span}")).expect("interval report");
    assert_eq!(r["step_s"], 900, "{r}");
    let series = r["series"].as_array().expect("series");
    let fac = series
        .iter()
        .find(|x| x["point"] == "facility_input")
        .expect("facility");
    let f = |v: &serde_json::Value| v.as_f64().expect("number");
    let sum = |xs: &serde_json::Value| {
        xs.as_array()
            .expect("list")
            .iter()
            .fold(0.0, |s, x| s + f(&x["value"]))
    };
    let total = f(&fac["total"]["value"]);
    assert!(
        (total - facility_kwh).abs() < 1e-6 * facility_kwh,
        "{total} vs {facility_kwh}"
    );
    assert_eq!(total, sum(&fac["months"]), "months add up exactly");
    let intervals = fac["intervals"].as_array().expect("intervals");
    // Every quarter hour wholly inside the backfilled two days is complete.
    let full = intervals
        .iter()
        .filter(|x| f(&x["completeness"]) == 1.0)
        .count();
    assert!((190..=192).contains(&full), "{full} complete quarter hours");
    for d in fac["days"].as_array().expect("days") {
        let (a, b) = (d["from_ms"].as_i64().unwrap(), d["to_ms"].as_i64().unwrap());
        let parts = intervals
            .iter()
            .filter(|x| (a..b).contains(&x["from_ms"].as_i64().unwrap()));
        let s = parts.fold(0.0, |s, x| s + f(&x["value"]));
        assert_eq!(f(&d["value"]), s, "a day is the sum of its intervals: {d}");
    }
    let (status, csv) = http_get(
        c.http,
        &format!("/api/v1/sites/demo/intervals?{span}&format=csv"),
    )
    .expect("csv");
    assert_eq!(status, 200);
    let rows = csv
        .lines()
        .filter(|l| l.starts_with("demo,facility_input,electricity,kWh,"))
        .count();
    let days = fac["days"].as_array().map_or(0, Vec::len);
    let months = fac["months"].as_array().map_or(0, Vec::len);
    assert_eq!(rows, intervals.len() + days + months + 1, "{csv:.400}");
    let (status, _) = http_get(c.http, "/api/v1/sites/demo/intervals?step=10m").expect("answer");
    assert_eq!(status, 400, "a step the specification does not allow");

    // The EU annual report for this year: its energies are the energy report's over the
    // same local year, and what dcwatt does not measure is left to the operator.
    let year = dcwatt_common::civil_date(now.div_euclid(86_400_000)).0;
    let eu = get_json(
        c.http,
        &format!("/api/v1/sites/demo/reports/eu-annual?year={year}"),
    )
    .expect("EU report");
    let (a, b) = (
        eu["from_ms"].as_i64().unwrap(),
        eu["to_ms"].as_i64().unwrap(),
    );
    let e = get_json(
        c.http,
        &format!("/api/v1/sites/demo/energy?from={a}&to={b}"),
    )
    .expect("energy over the year");
    let field = |id: &str| {
        eu["fields"]
            .as_array()
            .and_then(|fs| fs.iter().find(|x| x["field"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {eu}"))
    };
    let e_dc = f(&e["facility_kwh"]) + f(&e["facility_fill_kwh"]);
    assert_eq!(f(&field("total_energy_kwh")["value"]), e_dc, "{eu}");
    assert_eq!(field("pue")["value"], e["pue"], "{eu}");
    assert_eq!(
        field("water_input_m3")["quality"],
        "no_data",
        "no water meter: {eu}"
    );
    assert!(eu["to_be_completed_by_the_operator"]
        .as_array()
        .is_some_and(|x| x.len() >= 5));
    let (status, csv) = http_get(
        c.http,
        &format!("/api/v1/sites/demo/reports/eu-annual?year={year}&format=csv"),
    )
    .expect("csv");
    assert_eq!(status, 200);
    assert!(csv.starts_with("site,year,field,name,value,unit,source,coverage,quality,note\n"));
    assert!(csv.contains(",total_energy_kwh,"), "{csv}");
    assert!(csv.contains("to_be_completed_by_the_operator"), "{csv}");
    let (status, _) =
        http_get(c.http, "/api/v1/sites/demo/reports/eu-annual?year=1999").expect("answer");
    assert_eq!(status, 400);
}

/// A site in Berlin: the clocks go forward at 02:00 on 29 March 2026 and back at 03:00 on
/// 25 October 2026. Its local days of those dates are 23 and 25 hours long, March is an
/// hour short, and daily steps follow; with a fixed offset each would be 24 hours and an
/// hour off for seven months. The history is the backfill's, written for those weeks.
#[test]
fn a_site_in_a_daylight_saving_zone_gets_its_local_days_and_months() {
    let dir = TempDir::new("dst");
    let state = dir.0.join("state");
    // 27 Feb 00:00Z for 35 days, and 23 Oct 00:00Z for 5 days.
    for (end_ms, days) in [("1775174400000", "35"), ("1793145600000", "5")] {
        backfill(
            &state,
            &[
                "--site", "berlin", "--hosts", "10", "--days", days, "--end-ms", end_ms,
            ],
        );
    }
    let cfg = dir.write(
        "collector.toml",
        "[[sites]]\nsite = \"berlin\"\ntime_zone = \"Europe/Berlin\"\n",
    );
    let c = Collector::start_with_config(
        &dir,
        BrokerKind::Embedded,
        &cfg,
        None,
        &[("DCWATT__STATE_DIR", state.display().to_string())],
    );
    let energy = |from: &str, to: &str| {
        get_json(
            c.http,
            &format!("/api/v1/sites/berlin/energy?from={from}&to={to}"),
        )
        .unwrap_or_else(|| panic!("energy {from}..{to}"))
    };
    let h = 3_600_000i64;
    for (what, from, to, from_ms, to_ms) in [
        // 2026-03-28T23:00Z .. 2026-03-29T22:00Z
        (
            "spring forward",
            "2026-03-29",
            "2026-03-30",
            1_774_738_800_000i64,
            1_774_821_600_000i64,
        ),
        // 2026-10-24T22:00Z .. 2026-10-25T23:00Z
        (
            "fall back",
            "2026-10-25",
            "2026-10-26",
            1_792_879_200_000,
            1_792_969_200_000,
        ),
        // 2026-02-28T23:00Z .. 2026-03-31T22:00Z
        (
            "March",
            "2026-03-01",
            "2026-04-01",
            1_772_319_600_000,
            1_774_994_400_000,
        ),
    ] {
        let e = energy(from, to);
        assert_eq!(
            (e["from_ms"].as_i64(), e["to_ms"].as_i64()),
            (Some(from_ms), Some(to_ms)),
            "{what}: local midnights in Berlin: {e}"
        );
        assert_eq!(e["time_zone"], "Europe/Berlin", "{e}");
        assert_eq!(
            e["minutes"].as_i64(),
            Some((to_ms - from_ms) / 60_000),
            "{what}: every minute of the local period, no more: {e}"
        );
        // The same energy as the period given by its instants.
        let same = energy(&from_ms.to_string(), &to_ms.to_string());
        assert_eq!(e["it_kwh"], same["it_kwh"], "{what}");
        assert_eq!(e["facility_kwh"], same["facility_kwh"], "{what}");
    }
    assert_eq!(
        energy("2026-03-29", "2026-03-30")["minutes"],
        23 * 60,
        "29 March is 23 hours"
    );
    assert_eq!(energy("2026-10-25", "2026-10-26")["minutes"], 25 * 60);
    assert_eq!(
        energy("2026-03-01", "2026-04-01")["minutes"],
        (31 * 24 - 1) * 60,
        "March is an hour short"
    );
    // A local time in the repeated hour is its first occurrence (02:30 CEST = 00:30Z).
    let e = energy("2026-10-25T02:30", "2026-10-25T04:00");
    assert_eq!(
        e["from_ms"].as_i64(),
        Some(1_792_879_200_000 + 150 * 60_000)
    );
    assert_eq!(
        e["minutes"], 150,
        "02:30 CEST to 04:00 CET is 2.5 hours: {e}"
    );

    // Daily steps from local midnight: 24, 25 and 24 hours.
    let steps = get_json(
        c.http,
        "/api/v1/sites/berlin/history?series=pue&window=step&step=1d&from=2026-10-24&to=2026-10-27",
    )
    .expect("daily steps");
    let times: Vec<i64> = steps["time"]
        .as_array()
        .expect("times")
        .iter()
        .filter_map(serde_json::Value::as_i64)
        .collect();
    assert_eq!(
        times,
        vec![1_792_792_800_000, 1_792_879_200_000, 1_792_969_200_000],
        "{steps}"
    );
    assert_eq!(times[2] - times[1], 25 * h);

    // The calendar names the zone and the offset in force, and today starts at local
    // midnight.
    let cal = get_json(c.http, "/api/v1/sites/berlin/calendar").expect("calendar");
    assert_eq!(cal["time_zone"], "Europe/Berlin", "{cal}");
    let offset_h = match cal["utc_offset"].as_str() {
        Some("+01:00") => 1,
        Some("+02:00") => 2,
        other => panic!("Berlin is at +01:00 or +02:00, not {other:?}"),
    };
    let today = cal["today"]["from_ms"].as_i64().expect("today");
    assert_eq!(
        (today + offset_h * h).rem_euclid(24 * h),
        0,
        "local midnight: {cal}"
    );
}
