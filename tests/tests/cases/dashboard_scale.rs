//! The dashboard at the scale of a real site: 5,000 hosts in 250 racks from the load
//! generator, in a real browser. An idle poll (nothing changed) stays within 50 KB — the
//! node list is paged and every API answer revalidates with its ETag — the agents come
//! problems first with a filter and a search, the rack grid sorts by utilization, and
//! pending alerts look different from firing ones, which alone the fleet page counts.

use dcwatt_e2e::webdriver::Browser;
use dcwatt_e2e::wire::birth;
use dcwatt_e2e::*;
use serde_json::json;
use std::time::Duration;

const SITE: &str = "big";
const HOSTS: usize = 5_000;
const OFFLINE: [&str; 3] = ["h000007", "h000123", "h004999"];

#[test]
fn a_5000_host_site_polls_within_the_byte_budget_problems_first() {
    let dir = TempDir::new("dashboard-scale");
    let Some(browser) = Browser::start(&dir) else {
        return skip_or_fail(
            "dashboard at scale",
            "chromium and chromium-driver are not installed",
        );
    };
    // The load generator's racks: r0000 holds hosts 0–19 at 150–169 W (3,190 W), r0001
    // hosts 20–39 (3,590 W), r0002 hosts 40–59 (3,990 W). Against 4, 4 and 10 kW: 79.75 %,
    // 89.75 %, 39.9 %. "hot" (> 85 %) fires at once on r0001; "warm" (> 70 %) waits a day
    // on r0000 and r0001: pending.
    let config = dir.write(
        "collector.toml",
        r#"
[alerts]
evaluate_interval_secs = 1

[[racks]]
site = "big"
rack = "r0000"
budget_kw = 4.0
derating = 1.0

[[racks]]
site = "big"
rack = "r0001"
budget_kw = 4.0
derating = 1.0

[[racks]]
site = "big"
rack = "r0002"
budget_kw = 10.0
derating = 1.0

[[alerts.rules]]
name = "hot"
subject = "rack_power_utilization"
op = ">"
threshold = 0.85
severity = "critical"

[[alerts.rules]]
name = "warm"
subject = "rack_power_utilization"
op = ">"
threshold = 0.7
for_secs = 86400
severity = "warning"
"#,
    );
    let c = Collector::start_with_config(
        &dir,
        BrokerKind::Embedded,
        &config,
        None,
        // Meters count as reporting for 300 intervals: nothing changes while the browser
        // looks, so a poll is an idle one.
        &[("DCWATT__ENGINE__GAP_FACTOR", "300".into())],
    );
    let out = std::process::Command::new(bin("dcwatt-loadgen"))
        .args(["--port", &c.mqtt.to_string(), "--site", SITE])
        .args(["--hosts", &HOSTS.to_string(), "--readings", "3"])
        .args(["--batches", &(2 * (HOSTS + 1)).to_string()])
        .output()
        .expect("dcwatt-loadgen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    publish_all(
        c.mqtt,
        OFFLINE
            .iter()
            .map(|n| birth(SITE, n, json!({"state": "offline"})))
            .collect::<Vec<_>>()
            .into_iter(),
        Duration::from_secs(10),
    );
    let all = wait_for("5,000 hosts and 3 offline", Duration::from_secs(60), || {
        let n = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes?limit=1"))?;
        (n["total"] == HOSTS + 1 && n["counts"]["offline"] == OFFLINE.len()).then_some(n)
    });
    eprintln!("node counts: {}", all["counts"]);
    let (_, full) = http_get(c.http, &format!("/api/v1/sites/{SITE}/nodes")).expect("nodes");
    // Pages by cursor, problems first: the offline hosts, then the rest by id ("facility"
    // sorts before "h000000").
    let page = |q: &str| {
        get_json(
            c.http,
            &format!("/api/v1/sites/{SITE}/nodes?sort=problems&limit=2{q}"),
        )
        .expect("a page")
    };
    let ids = |p: &serde_json::Value| -> Vec<String> {
        p["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["node"].as_str().map(str::to_owned))
            .collect()
    };
    let p1 = page("");
    assert_eq!(ids(&p1), ["h000007", "h000123"]);
    let cursor = p1["next_cursor"].as_str().expect("a next page").to_owned();
    let p2 = page(&format!("&cursor={cursor}"));
    assert_eq!(ids(&p2), ["h004999", "facility"]);
    let r1 = get_json(
        c.http,
        &format!("/api/v1/sites/{SITE}/nodes?rack=r0001&state=online"),
    )
    .expect("a rack's nodes");
    assert_eq!(r1["total"], 20, "hosts 20–39");
    let (status, _) =
        http_get(c.http, &format!("/api/v1/sites/{SITE}/nodes?state=asleep")).expect("an answer");
    assert_eq!(status, 400);
    // The same answer again is 304 to its ETag.
    let etag = etag_of(c.http, &format!("/api/v1/sites/{SITE}/racks"), None);
    let (status, tag) = etag.expect("an ETag on the racks");
    assert_eq!(status, 200);
    let again = etag_of(c.http, &format!("/api/v1/sites/{SITE}/racks"), Some(&tag));
    assert_eq!(again.map(|x| x.0), Some(304), "unchanged racks: 304");
    let alerts = wait_for("hot fired, warm pending", Duration::from_secs(30), || {
        let a = get_json(c.http, "/api/v1/alerts")?;
        let list = a["alerts"].as_array()?.clone();
        let state = |id: &str| {
            list.iter()
                .find(|x| x["alert"] == id)
                .map(|x| x["state"].clone())
        };
        (state("hot.r0001") == Some(json!("firing"))
            && state("warm.r0000") == Some(json!("pending"))
            && state("warm.r0001") == Some(json!("pending")))
        .then_some(list)
    });
    assert_eq!(alerts.len(), 3, "{alerts:#?}");

    let base = format!("http://127.0.0.1:{}", c.http);
    browser.goto(&format!("{base}/#/site/{SITE}"));
    browser.wait_js(
        "250 racks and a page of agents",
        "return document.querySelectorAll('#racks .rack').length === 250 && document.querySelectorAll('#agents-table tbody tr').length === 50",
    );
    // Problems first: the three offline hosts head the list.
    let first: Vec<String> = (1..=3)
        .map(|i| {
            let v = browser.js(&format!(
                "return document.querySelector('#agents-table tbody tr:nth-child({i})').getAttribute('data-node')"
            ));
            v.as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(first, OFFLINE, "offline nodes first");

    // An idle poll: everything but what changes by the second answers 304.
    browser.js("performance.clearResourceTimings(); window.__t0 = performance.now(); return true");
    std::thread::sleep(Duration::from_millis(11_000));
    let polled = browser.js(
        "var e = performance.getEntriesByType('resource').filter(function (x) { return x.name.indexOf('/api/') >= 0 || x.name.indexOf('/healthz') >= 0; });\
         var polls = e.filter(function (x) { return /\\/api\\/v1\\/sites\\/big$/.test(x.name); }).length;\
         return { bytes: e.reduce(function (s, x) { return s + x.transferSize; }, 0), requests: e.length, polls: polls };",
    );
    let polls = polled["polls"].as_f64().unwrap_or(0.0);
    let bytes = polled["bytes"].as_f64().unwrap_or(f64::MAX);
    assert!(polls >= 1.0, "the page polled: {polled}");
    let per_poll = bytes / polls;
    eprintln!(
        "idle poll of a {HOSTS}-host site: {per_poll:.0} bytes ({polled}); the whole node list is {} bytes",
        full.len()
    );
    assert!(
        per_poll <= 50_000.0,
        "an idle poll moves {per_poll:.0} bytes: over the 50 KB budget ({polled})"
    );
    assert!(full.len() > 1_000_000, "the budget is worth having");

    // Filter and search.
    browser.js("var s = document.querySelector('#agents-state'); s.value = 'offline'; s.dispatchEvent(new Event('change')); return true");
    browser.wait_js(
        "only the offline hosts",
        "var r = document.querySelectorAll('#agents-table tbody tr'); return r.length === 3 && Array.prototype.every.call(r, function (x) { return x.querySelector('.node-state.offline'); })",
    );
    browser.js("var s = document.querySelector('#agents-state'); s.value = ''; var q = document.querySelector('#agents-q'); q.value = 'h004321'; q.dispatchEvent(new Event('input')); return true");
    browser.wait_js(
        "the one host searched for",
        "var r = document.querySelectorAll('#agents-table tbody tr'); return r.length === 1 && r[0].getAttribute('data-node') === 'h004321'",
    );

    // The rack grid by utilization: r0001, r0000, r0002, then the racks without a budget.
    browser.js("var s = document.querySelector('#rack-sort'); s.value = 'util'; s.dispatchEvent(new Event('change')); return true");
    let order = browser.wait_js(
        "racks by utilization",
        "var r = document.querySelectorAll('#racks .rack'); return r.length === 250 && [0, 1, 2].map(function (i) { return r[i].getAttribute('data-rack'); }).join(',')",
    );
    assert_eq!(order, "r0001,r0000,r0002");
    assert_eq!(
        browser.js("return document.querySelectorAll('#rack-legend .rack-key').length"),
        6,
        "a colour legend"
    );

    // Pending and firing alerts, each in its state and the rule's unit.
    let rows = browser.wait_js(
        "the alerts table",
        "var r = document.querySelectorAll('#alerts-table tbody tr'); return r.length === 3 && Array.prototype.map.call(r, function (x) { return x.className + ' ' + x.getAttribute('data-alert') + ' ' + x.querySelector('.alert-value').textContent; }).join('|')",
    );
    let rows: Vec<String> = rows
        .as_str()
        .unwrap_or_default()
        .split('|')
        .map(str::to_owned)
        .collect();
    let states: Vec<&str> = rows
        .iter()
        .map(|r| r.rsplit_once(' ').map_or("", |x| x.0))
        .collect();
    assert_eq!(
        states,
        vec![
            "alert-firing hot.r0001",
            "alert-pending warm.r0000",
            "alert-pending warm.r0001"
        ],
        "firing first, pending apart: {rows:?}"
    );
    // 3,590 / 4,000 W and 3,190 / 4,000 W, as percentages like the rack tiles.
    let values: Vec<&str> = rows
        .iter()
        .map(|r| r.rsplit_once(' ').map_or("", |x| x.1))
        .collect();
    assert_eq!(values[0], "89.8%", "{rows:?}");
    assert!(
        values[1].starts_with("79.") && values[1].ends_with('%'),
        "{rows:?}"
    );
    // The fleet counts firing alerts only.
    browser.goto(&format!("{base}/#/"));
    let count = browser.wait_js(
        "the fleet's alert count",
        "var t = document.querySelector('#fleet'); if (!t) return null; var h = Array.prototype.map.call(t.querySelectorAll('thead th'), function (x) { return x.textContent; }); var i = h.indexOf('Active alerts'); var row = t.querySelector('tbody tr'); return row && i >= 0 && row.children[i].textContent",
    );
    assert_eq!(count, "1", "one firing, two pending");
}

/// (status, ETag) of a GET, sending `If-None-Match` when given.
fn etag_of(port: u16, path: &str, if_none_match: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let cond = if_none_match.map_or(String::new(), |t| format!("If-None-Match: {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{cond}\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let tag = text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        l.to_ascii_lowercase()
            .starts_with("etag:")
            .then(|| l[5..].trim().to_owned())
    })?;
    Some((status, tag))
}
