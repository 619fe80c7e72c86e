//! The web dashboard in a real browser (headless Chromium over WebDriver) against a
//! collector fed over MQTT: fleet and site pages load without console errors, show the
//! API's numbers, one cell per rack, switch language, warn about a stale site, and load
//! nothing from anywhere but the collector. Screenshots are kept as test artifacts.

use dcwatt_common::protocol::{
    Point, Reading, ReadingsMessage, Role, State, StatusMessage, VERSION,
};
use dcwatt_e2e::webdriver::Browser;
use dcwatt_e2e::*;
use std::time::Duration;

const LIVE: &str = "dash";
const STALE: &str = "dash-stale";

fn birth(site: &str, node: &str, role: Role, rack: Option<&str>) -> (String, Vec<u8>) {
    let mut s = StatusMessage::offline(site, node, dcwatt_common::now_ms());
    s.state = State::Online;
    s.role = Some(role);
    s.rack = rack.map(str::to_owned);
    s.interval_ms = Some(1000);
    (
        dcwatt_common::protocol::status_topic(site, node),
        serde_json::to_vec(&s).expect("json"),
    )
}

/// Meter at 9 kW; six hosts of 1.2 kW in racks r1..r3; a heat meter at the boundary
/// reading 900 W reused, and a water meter counting 1 L a second.
fn batch(site: &str, seq: u64, ts: i64) -> Vec<(String, Vec<u8>)> {
    let mut nodes = vec![
        ("meter".to_owned(), 9_000.0, Point::FacilityInput),
        ("heat".to_owned(), 900.0, Point::EnergyReused),
    ];
    nodes.extend((1..=6).map(|i| (format!("h{i}"), 1_200.0, Point::ItInput)));
    nodes.push(("water".to_owned(), ts as f64 / 1e6, Point::WaterInput));
    nodes
        .into_iter()
        .map(|(node, w, point)| {
            let reading = if point == Point::WaterInput {
                Reading::counter("water_m3", w, ts).at(point)
            } else {
                Reading::gauge("power_w", w, ts).at(point)
            };
            let m = ReadingsMessage {
                v: VERSION,
                site: site.into(),
                node: node.clone(),
                seq,
                sent_ms: ts,
                readings: vec![reading],
            };
            (
                dcwatt_common::protocol::readings_topic(site, &node),
                serde_json::to_vec(&m).expect("json"),
            )
        })
        .collect()
}

/// Births and one batch a second over `[from, to]`; returns them and the next `seq`.
fn feed(site: &str, from: i64, to: i64) -> (Vec<(String, Vec<u8>)>, u64) {
    let mut msgs = vec![
        birth(site, "meter", Role::Meter, None),
        birth(site, "heat", Role::Meter, None),
        birth(site, "water", Role::Meter, None),
    ];
    for i in 1..=6 {
        let rack = format!("r{}", (i + 1) / 2);
        msgs.push(birth(site, &format!("h{i}"), Role::Host, Some(&rack)));
    }
    let mut seq = 0;
    let mut ts = from;
    while ts <= to {
        msgs.extend(batch(site, seq, ts));
        seq += 1;
        ts += 1000;
    }
    (msgs, seq)
}

fn shots_dir() -> std::path::PathBuf {
    std::env::var_os("DCWATT_SCREENSHOT_DIR")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/dashboard-screenshots"
            ))
        })
}

fn severe(b: &Browser) -> Vec<String> {
    b.console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE")
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn the_dashboard_shows_the_api_numbers_in_a_real_browser() {
    let dir = TempDir::new("dashboard");
    let Some(browser) = Browser::start(&dir) else {
        return skip_or_fail(
            "dashboard",
            "chromium and chromium-driver are not installed",
        );
    };
    let config = dir.write(
        "collector.toml",
        &format!(
            "[[racks]]\nsite = \"{LIVE}\"\nrack = \"r1\"\nbudget_kw = 3.0\nderating = 1.0\nfeed_kw = 2.0\nu_total = 42\nu_used = 20\n\
             [[racks]]\nsite = \"{LIVE}\"\nrack = \"r2\"\nbudget_kw = 6.0\n\
             [[racks]]\nsite = \"{LIVE}\"\nrack = \"r9\"\nbudget_kw = 10.0\n\
             [[sites]]\nsite = \"{LIVE}\"\ntime_zone = \"Pacific/Auckland\"\nracks_designed = 5\nracks_installed = 4\n\
             targets = {{ preset = \"gb40879_grade1\", occupancy = 0.7 }}\n"
        ),
    );
    let c = Collector::start_with_config(
        &dir,
        BrokerKind::Embedded,
        &config,
        None,
        &[
            // Meters count as reporting for 300 intervals: the numbers stay put while the
            // browser looks at them.
            ("DCWATT__ENGINE__GAP_FACTOR", "300".into()),
            ("DCWATT__HISTORY__INTERVAL_SECS", "1".into()),
        ],
    );
    let now = dcwatt_common::now_ms();
    let (mut msgs, next) = feed(LIVE, now - 300_000, now);
    msgs.extend(feed(STALE, now - 1_200_000, now - 900_000).0);
    publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(60));
    // A few live batches so the windows settle.
    for k in 0..4u64 {
        let live = batch(LIVE, next + k, dcwatt_common::now_ms());
        publish_all(c.mqtt, live.into_iter(), Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(800));
    }
    let api = wait_for("the live site's PUE", Duration::from_secs(30), || {
        let s = c.site(LIVE)?;
        // Every batch arrived, in sequence.
        assert_eq!(s["missing_batches"], 0, "{s}");
        s["pue"]["1h"]["value"].as_f64().map(|_| s)
    });
    wait_for("history for the charts", Duration::from_secs(30), || {
        let h = get_json(
            c.http,
            &format!("/api/v1/sites/{LIVE}/history?series=pue&window=step&from=-24h&step=15m"),
        )?;
        (!h["value"].as_array()?.is_empty()).then_some(())
    });
    // A figure beyond PUE per step, from the history's minutes: WUE 500 L/kWh.
    let h = get_json(
        c.http,
        &format!("/api/v1/sites/{LIVE}/history?series=wue&from=-24h&step=15m"),
    )
    .expect("wue history");
    let values: Vec<f64> = h["value"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    assert!(!values.is_empty(), "{h}");
    assert!(values.iter().all(|v| (v - 500.0).abs() < 1e-6), "{h}");
    assert_eq!(h["series"], "wue", "{h}");
    // The site's targets: PUE 9 / 7.2 = 1.25 against GB 40879 grade 1's 1.20 (marked
    // unconfirmed), from the history's year to date; occupancy 3 of 4 against 70 %.
    let t = get_json(c.http, &format!("/api/v1/sites/{LIVE}/targets")).expect("targets");
    let pue = &t["targets"][0];
    assert_eq!(
        (pue["kpi"].as_str(), pue["target"].as_f64()),
        (Some("pue"), Some(1.2)),
        "{t}"
    );
    assert_eq!(pue["confirmed"], false, "{t}");
    let ytd = pue["year_to_date"]["value"].as_f64().expect("ytd");
    assert!((ytd - 1.25).abs() < 1e-9, "{t}");
    let annual = pue["projected_annual"].as_f64().expect("projection");
    assert!((annual - 1.25).abs() < 1e-9, "{t}");
    assert_eq!(pue["status"], "will_exceed", "{t}");
    let occ = &t["targets"][1];
    assert_eq!(
        (occ["kpi"].as_str(), occ["now"].as_f64()),
        (Some("occupancy"), Some(0.75)),
        "{t}"
    );
    assert_eq!(occ["status"], "met", "{t}");
    let live = c.site(LIVE).expect("site");
    // Five minutes of data: the longest window with a PUE is 24 h (7 d and 30 d are
    // hourly buckets, none closed yet).
    assert_eq!(live["targets"][0]["window"], "24h", "{live}");
    assert_eq!(live["targets"][0]["status"], "missed", "{live}");
    // The site view carries the year's projection beside the live status.
    let projection = &live["targets"][0]["projection"];
    assert_eq!(projection["status"], "will_exceed", "{live}");
    assert!((projection["projected_annual"].as_f64().expect("annual") - 1.25).abs() < 1e-9);
    assert!(projection["method"]
        .as_str()
        .is_some_and(|m| m.contains("ratio of sums")));
    let base = format!("http://127.0.0.1:{}", c.http);
    let shots = shots_dir();

    // Fleet page: one line per site, the API's PUE, the stale site flagged.
    browser.goto(&format!("{base}/"));
    browser.wait_js(
        "two site rows",
        "return document.querySelectorAll('#fleet tr.site-row').length === 2",
    );
    let api = c.site(LIVE).unwrap_or(api);
    let pue_1h = api["pue"]["1h"]["value"].as_f64().expect("pue 1h");
    let shown = browser.js(&format!(
        "return document.querySelector('#site-{LIVE} [data-field=\"pue-1h\"] .pv').textContent"
    ));
    assert_eq!(
        shown,
        format!("{pue_1h:.3}"),
        "fleet page PUE 1h vs API {api}"
    );
    assert_eq!(
        browser.js(&format!(
            "return !!document.querySelector('#site-{STALE} .stale-warning')"
        )),
        true,
        "the stale site is flagged"
    );
    assert_eq!(
        browser.js(&format!(
            "return !!document.querySelector('#site-{LIVE} .stale-warning')"
        )),
        false
    );
    browser.screenshot(&shots.join("fleet.png"));
    assert_eq!(
        severe(&browser),
        Vec::<String>::new(),
        "console errors on the fleet page"
    );

    // Site page: windows, one cell per rack, rack details, charts, report.
    browser.goto(&format!("{base}/#/site/{LIVE}"));
    let racks = get_json(c.http, &format!("/api/v1/sites/{LIVE}/racks")).expect("racks");
    let n_racks = racks["racks"].as_array().expect("racks").len();
    assert_eq!(
        n_racks, 4,
        "r1, r2, r3 from births and r9 from its budget: {racks}"
    );
    browser.wait_js(
        "the rack grid",
        &format!("return document.querySelectorAll('#racks .rack').length === {n_racks}"),
    );
    let window_1h =
        browser.js("return document.querySelector('[data-window=\"1h\"] .v').textContent");
    assert_eq!(window_1h, format!("{pue_1h:.3}"));
    let label = browser.js("return document.querySelector('[data-window=\"1h\"] .l').textContent");
    assert_eq!(label, api["pue"]["1h"]["label"]);
    // The figures beyond PUE beside it: WUE = 1 L/s / 7.2 kW = 3600 L / 7.2 kWh = 500 L/kWh,
    // ERF = 900 W / 9 kW = 10 %, ERE = 0.9 × 1.25; no CUE or REF without factors or PV.
    let kpis = &api["pue"]["1h"]["kpis"];
    let wue = kpis["wue"]["value"].as_f64().expect("wue");
    assert!((wue - 500.0).abs() < 1e-6, "{kpis}");
    let erf = kpis["erf"]["value"].as_f64().expect("erf");
    assert!((erf - 0.1).abs() < 1e-9, "{kpis}");
    assert_eq!(kpis["cue"]["quality"], "no_data", "{kpis}");
    let badge = |k: &str| {
        browser.js(&format!(
            "var e = document.querySelector('[data-window=\"1h\"] [data-kpi=\"{k}\"]'); return e ? e.textContent : null"
        ))
    };
    assert_eq!(badge("wue"), format!("WUE {wue:.2} L/kWh"));
    assert_eq!(badge("erf"), "ERF 10%");
    assert_eq!(
        badge("cue"),
        serde_json::Value::Null,
        "no CUE without a factor"
    );
    // Occupancy: r1..r3 have reporting hosts, 3 of the 4 installed racks; 4 of 5 designed.
    assert_eq!(api["capacity"]["occupancy"], 0.75, "{}", api["capacity"]);
    assert_eq!(
        browser.js("return document.getElementById('kpi-occupancy').textContent"),
        "75% · 80%"
    );
    // The targets card: PUE against 1.20 with the history's projection, occupancy met.
    browser.wait_js(
        "the PUE target's projection",
        "var r = document.querySelector('#targets tr[data-kpi=\"pue\"]'); return !!r && r.getAttribute('data-status') === 'will_exceed'",
    );
    assert_eq!(
        browser.js("return document.querySelector('#targets tr[data-kpi=\"occupancy\"]').getAttribute('data-status')"),
        "met"
    );
    // The report opens on the site's last seven days in its own zone: Auckland's date,
    // which is a day ahead of the browser's (UTC) from 11:00 or 12:00 UTC on.
    let cal = get_json(c.http, &format!("/api/v1/sites/{LIVE}/calendar")).expect("calendar");
    let offset_min = {
        let o = cal["utc_offset"].as_str().expect("utc_offset");
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let h: i64 = o[1..3].parse().expect("hours");
        let m: i64 = o[4..6].parse().expect("minutes");
        sign * (h * 60 + m)
    };
    let midnight = cal["today"]["from_ms"].as_i64().expect("today from_ms");
    let local_day = (midnight + offset_min * 60_000).div_euclid(86_400_000);
    let site = get_json(c.http, &format!("/api/v1/sites/{LIVE}")).expect("site");
    assert_eq!(site["time_zone"], "Pacific/Auckland", "{site}");
    assert_eq!(site["local_date"], civil_date(local_day), "{cal}");
    let field = |id: &str| browser.js(&format!("return document.querySelector('#{id}').value"));
    browser.wait_js(
        "the report's dates",
        &format!(
            "return document.querySelector('#report-to').value === '{}'",
            civil_date(local_day + 1)
        ),
    );
    assert_eq!(field("report-from"), civil_date(local_day - 7));
    // A 24 h window over minutes of data shows how much of it there is.
    let api_span = api["pue"]["24h"]["span_share"]
        .as_f64()
        .expect("24h span_share");
    assert!(api_span > 0.0 && api_span < 1.0, "{:#}", api["pue"]["24h"]);
    let shown = browser.js(
        "var e = document.querySelector('[data-window=\"24h\"] .badge.span'); return e && Number(e.getAttribute('data-span'))",
    );
    let shown = shown.as_f64().expect("a span badge on the 24h window");
    assert!(
        (shown - api_span).abs() < 0.01,
        "the 24h window's span: {shown} shown, {api_span} in the API"
    );
    browser.click("#racks .rack[data-rack=\"r1\"]");
    let detail = browser.js("return document.querySelector('#rack-detail').textContent");
    let detail = detail.as_str().expect("detail text");
    assert!(
        detail.contains("r1") && detail.contains("20 / 42 U"),
        "{detail}"
    );
    browser.wait_js(
        "the PUE trend chart",
        "return document.querySelectorAll('#chart-pue .u-over').length === 1 && document.querySelectorAll('#chart-power .u-over').length === 1",
    );
    browser.click("#report button[type=submit]");
    let report_pue = browser.wait_js(
        "the energy report",
        "var e = document.querySelector('#report-pue'); return e && e.textContent",
    );
    let csv_href = browser.js("return document.querySelector('#report-csv').getAttribute('href')");
    let csv_href = csv_href.as_str().expect("csv link");
    let (status, csv) = http_get(c.http, csv_href).expect("csv answer");
    assert_eq!(status, 200, "{csv}");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let row: Vec<&str> = lines.next().expect("row").split(',').collect();
    let col = header.iter().position(|h| *h == "pue").expect("pue column");
    let csv_pue: f64 = row[col].parse().expect("a PUE in the CSV");
    assert_eq!(
        report_pue,
        format!("{csv_pue:.3}"),
        "report on the page vs CSV"
    );
    // The report's days are the site's (Auckland, +12:00 or +13:00), not the browser's.
    let zone = browser.js("return document.querySelector('#report-zone').textContent");
    assert!(
        zone.as_str()
            .is_some_and(|z| z.contains("Pacific/Auckland")),
        "{zone}"
    );
    let json_href = csv_href.replace("&format=csv", "");
    let e = get_json(c.http, &json_href).expect("the report as JSON");
    let from = e["from_ms"].as_i64().expect("from_ms");
    let (h, day) = (3_600_000i64, 86_400_000i64);
    assert!(
        [12, 13].iter().any(|o| (from + o * h).rem_euclid(day) == 0),
        "the report starts at midnight in Auckland: {e}"
    );
    browser.js("window.scrollTo(0, 0); return true");
    browser.screenshot(&shots.join("site.png"));
    assert_eq!(
        severe(&browser),
        Vec::<String>::new(),
        "console errors on the site page"
    );
    // A report that cannot be made says why (here: the end before the start).
    browser.js("document.querySelector('#report-from').value = '2026-02-02'; document.querySelector('#report-to').value = '2026-02-01'; return true");
    browser.click("#report button[type=submit]");
    let why = browser.wait_js(
        "the report's failure",
        "var e = document.querySelector('#report-error'); return e && e.textContent",
    );
    assert!(
        why.as_str()
            .is_some_and(|w| w.contains("400") && w.contains("from must be before to")),
        "{why}"
    );
    // The browser logs the refused request (400), as it should: not a page error.
    let _ = browser.console();

    // Language switch.
    browser.click("#lang");
    browser.wait_js(
        "Chinese labels",
        "return document.documentElement.lang === 'zh-CN' && document.body.textContent.indexOf('电能利用效率') >= 0 && document.body.textContent.indexOf('标准机架') >= 0",
    );
    browser.js("window.scrollTo(0, 0); return true");
    browser.screenshot(&shots.join("site-zh.png"));
    browser.click("#lang");
    browser.wait_js(
        "English labels",
        "return document.documentElement.lang === 'en' && document.body.textContent.indexOf('Standard racks') >= 0",
    );

    // A stale site says so.
    browser.goto(&format!("{base}/#/site/{STALE}"));
    browser.wait_js(
        "the stale banner",
        "return !!document.querySelector('#stale-banner')",
    );
    browser.screenshot(&shots.join("stale.png"));

    // Nothing but the collector was asked for anything.
    let foreign = browser.js(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })\
         .concat([location.href]).filter(function (n) { return n.indexOf(location.origin + '/') !== 0; })",
    );
    assert_eq!(foreign, serde_json::json!([]), "requests to other origins");
    let loaded = browser.js("return performance.getEntriesByType('resource').length");
    assert!(
        loaded.as_u64().unwrap_or(0) >= 4,
        "assets were loaded: {loaded}"
    );
    assert_eq!(severe(&browser), Vec::<String>::new(), "console errors");
    let (_, index) = http_get(c.http, "/").expect("index");
    assert!(
        !index.contains("http://") && !index.contains("https://"),
        "absolute URLs in the page"
    );
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
fn civil_date(days: i64) -> String {
    let (y, m, d) = dcwatt_common::civil_date(days);
    format!("{y:04}-{m:02}-{d:02}")
}
