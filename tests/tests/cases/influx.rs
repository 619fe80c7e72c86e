//! The InfluxDB sink against a real server of the v2 write API (VictoriaMetrics): every
//! reading written is read back with its exact value, tags and timestamp; derived values
//! arrive too; and a 20 s database outage in the middle of a stream loses nothing while
//! the intake keeps computing.

use dcwatt_common::protocol::{
    Point, Reading, ReadingsMessage, Role, State, StatusMessage, VERSION,
};
use dcwatt_e2e::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// (node, metric, component, ts) → value
type Sent = BTreeMap<(String, String, String, i64), f64>;

fn birth(site: &str, node: &str, role: Role, rack: &str) -> (String, Vec<u8>) {
    let mut m = StatusMessage::offline(site, node, dcwatt_common::now_ms());
    m.state = State::Online;
    m.role = Some(role);
    m.rack = Some(rack.to_owned());
    m.zone = Some("hall-1".to_owned());
    m.interval_ms = Some(1000);
    (
        dcwatt_common::protocol::status_topic(site, node),
        serde_json::to_vec(&m).expect("json"),
    )
}

/// One batch per node at `ts`, recorded in `sent`.
fn batches(site: &str, seq: u64, ts: i64, sent: &mut Sent) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, node) in ["h1", "h2", "meter"].iter().enumerate() {
        let t = ts + i as i64; // distinct milliseconds per node
        let readings = if *node == "meter" {
            // The facility incomer and a heat meter at the boundary (for ERF).
            let mut heat = Reading::gauge("power_w", 260.0, t)
                .at(Point::EnergyReused)
                .from_source("modbus");
            heat.component = "heat-export".into();
            vec![
                Reading::gauge("power_w", 1300.0 + seq as f64 * 0.5, t)
                    .at(Point::FacilityInput)
                    .from_source("modbus"),
                heat,
            ]
        } else {
            let mut temp = Reading::gauge("temp_c", 21.25 + i as f64, t).from_source("ipmi_dcmi");
            temp.component = "inlet".into();
            vec![
                Reading::gauge("power_w", 500.0 + seq as f64 * 0.25, t)
                    .at(Point::ItInput)
                    .from_source("ipmi_dcmi"),
                temp,
                Reading::gauge("cpu_util", 0.125 * (seq % 8) as f64, t).from_source("sysinfo"),
            ]
        };
        for r in &readings {
            sent.insert(
                (
                    node.to_string(),
                    r.metric.to_string(),
                    r.component.to_string(),
                    r.ts_ms,
                ),
                r.value,
            );
        }
        let msg = ReadingsMessage {
            v: VERSION,
            site: site.to_owned(),
            node: node.to_string(),
            seq,
            sent_ms: t,
            readings,
        };
        out.push((
            dcwatt_common::protocol::readings_topic(site, node),
            serde_json::to_vec(&msg).expect("json"),
        ));
    }
    out
}

/// Everything VictoriaMetrics holds of `dcwatt_reading_value` for a site, keyed like
/// `Sent`, with the labels of each series.
fn read_back(vm: &VictoriaMetrics, site: &str) -> (Sent, Vec<serde_json::Value>) {
    let mut got = Sent::new();
    let series = vm.export(&format!(
        "{{__name__=\"dcwatt_reading_value\",site=\"{site}\"}}"
    ));
    for s in &series {
        let m = &s["metric"];
        let node = m["node"].as_str().unwrap_or_default().to_owned();
        let metric = m["metric"].as_str().unwrap_or_default().to_owned();
        let component = m["component"].as_str().unwrap_or_default().to_owned();
        let ts = s["timestamps"].as_array().cloned().unwrap_or_default();
        let vs = s["values"].as_array().cloned().unwrap_or_default();
        for (t, v) in ts.iter().zip(vs.iter()) {
            if let (Some(t), Some(v)) = (t.as_i64(), v.as_f64()) {
                let dup = got.insert((node.clone(), metric.clone(), component.clone(), t), v);
                assert!(dup.is_none(), "{node} {metric} at {t} stored twice");
            }
        }
    }
    (
        got,
        series.into_iter().map(|s| s["metric"].clone()).collect(),
    )
}

fn influx_env(vm_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("DCWATT__INFLUX__ENABLED", "true".into()),
        ("DCWATT__INFLUX__URL", format!("http://127.0.0.1:{vm_port}")),
        ("DCWATT__INFLUX__FLUSH_INTERVAL_MS", "200".into()),
        ("DCWATT__INFLUX__DERIVED_INTERVAL_SECS", "1".into()),
        ("DCWATT__INFLUX__TOKEN", "s3cret-token".into()),
        ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into()),
    ]
}

#[test]
fn every_reading_reaches_influxdb_with_its_tags_value_and_time() {
    let dir = TempDir::new("influx-exact");
    let Some(vm) = VictoriaMetrics::start(&dir) else {
        return skip_or_fail("influx", "victoria-metrics is not installed");
    };
    const SITE: &str = "influx-exact";
    let config = dir.write(
        "collector.toml",
        &format!("[[racks]]\nsite = \"{SITE}\"\nrack = \"r1\"\nbudget_kw = 2.0\n"),
    );
    let c = Collector::start_with_config(
        &dir,
        BrokerKind::Embedded,
        &config,
        None,
        &influx_env(vm.port),
    );
    let mut msgs = vec![
        birth(SITE, "h1", Role::Host, "r1"),
        birth(SITE, "h2", Role::Host, "r2"),
        birth(SITE, "meter", Role::Meter, "mains"),
    ];
    let mut sent = Sent::new();
    let start = dcwatt_common::now_ms() - 120_000;
    for seq in 0..100u64 {
        msgs.extend(batches(SITE, seq, start + seq as i64 * 1000, &mut sent));
    }
    publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(60));
    // Then live batches for a few seconds, as agents do: the site's windows settle.
    for seq in 100..108u64 {
        let live = batches(SITE, seq, dcwatt_common::now_ms(), &mut sent);
        publish_all(c.mqtt, live.into_iter(), Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
    }
    let expected = sent.len();
    let (got, labels) = wait_for(
        "every reading in VictoriaMetrics",
        Duration::from_secs(60),
        || {
            let (got, labels) = read_back(&vm, SITE);
            (got.len() >= expected).then_some((got, labels))
        },
    );
    assert_eq!(got, sent, "values or timestamps differ");
    // Tags: the node's rack and zone from its birth, the point, the source.
    let h1_power = labels
        .iter()
        .find(|m| m["node"] == "h1" && m["metric"] == "power_w")
        .expect("h1 power series");
    assert_eq!(h1_power["rack"], "r1");
    assert_eq!(h1_power["zone"], "hall-1");
    assert_eq!(h1_power["point"], "it_input");
    assert_eq!(h1_power["source"], "ipmi_dcmi");
    assert_eq!(h1_power["component"], "system");
    let temp = labels
        .iter()
        .find(|m| m["node"] == "h2" && m["metric"] == "temp_c")
        .expect("h2 temperature series");
    assert_eq!(temp["component"], "inlet");
    assert!(temp.get("point").is_none(), "no point tag: {temp}");

    // Derived values: the site's PUE per window with its category, and facility power.
    // The derived PUE written each second is the API's: once the stream stops, the API's
    // value is among those written (within a few seconds).
    wait_for(
        "the API's PUE in VictoriaMetrics",
        Duration::from_secs(30),
        || {
            let live = c.site(SITE)?["pue"]["1m"]["value"].as_f64()?;
            let s = vm.export(&format!(
                "{{__name__=\"dcwatt_pue_value\",site=\"{SITE}\",window=\"1m\"}}"
            ));
            let pue = s.into_iter().next()?;
            assert_eq!(pue["metric"]["category"], "3");
            pue["values"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_f64())
                .any(|v| (v - live).abs() < 1e-9)
                .then_some(())
        },
    );
    // The figures beyond PUE: the API's ERF of the 1m window is among those written.
    wait_for(
        "the API's ERF in VictoriaMetrics",
        Duration::from_secs(30),
        || {
            let live = c.site(SITE)?["pue"]["1m"]["kpis"]["erf"]["value"].as_f64()?;
            let s = vm.export(&format!(
                "{{__name__=\"dcwatt_kpi_erf\",site=\"{SITE}\",window=\"1m\"}}"
            ));
            s.into_iter().next()?["values"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_f64())
                .any(|v| (v - live).abs() < 1e-9)
                .then_some(())
        },
    );
    let m = c.metrics();
    assert_eq!(
        metric(&m, "dcwatt_influx_lines_rejected_total"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "dcwatt_influx_lines_dropped_total"), Some(0.0));
    assert_eq!(
        metric(&m, "dcwatt_sink_queue_dropped_total{sink=\"influx\"}"),
        Some(0.0)
    );
    // Every measurement, field and tag the shipped Grafana dashboards query is written.
    let series = vm.export(&format!("{{__name__=~\"dcwatt_.*\",site=\"{SITE}\"}}"));
    for file in ["dcwatt-influxdb.json", "dcwatt-influxql.json"] {
        let checked = assert_dashboard_names(file, &series);
        assert!(checked >= 10, "{file}: {checked}");
    }
    // The token never shows up in the collector's log.
    assert!(!c.proc.log().contains("s3cret-token"));
}

/// What one InfluxDB dashboard query names: (measurement, fields, tags).
fn query_names(query: &str) -> (String, Vec<String>, Vec<String>) {
    let after = |marker: &str, end: char| -> Vec<String> {
        query
            .split(marker)
            .skip(1)
            .filter_map(|rest| rest.split(end).next().map(str::to_owned))
            .collect()
    };
    if query.contains("r._measurement") {
        // Flux: r._measurement == "m", r._field == "f", r.tag == "…", group(columns: [...]).
        let measurement = after("r._measurement == \"", '"');
        let fields = after("r._field == \"", '"');
        let mut tags: Vec<String> = after("r.", ' ')
            .into_iter()
            .filter(|t| !t.starts_with('_'))
            .collect();
        for cols in after("group(columns: [", ']') {
            tags.extend(
                cols.split(',')
                    .map(|c| c.trim().trim_matches('"').to_owned()),
            );
        }
        tags.retain(|t| t != "_field" && !t.is_empty());
        (measurement.concat(), fields, tags)
    } else {
        // InfluxQL: FROM "m", last("f"), WHERE "tag" = '…', GROUP BY …, "tag".
        let measurement = after("FROM \"", '"');
        let fields = after("last(\"", '"');
        let mut tags = after("WHERE \"", '"');
        tags.extend(after("AND \"", '"'));
        for rest in query.split("GROUP BY ").skip(1) {
            let clause = rest.split(" fill(").next().unwrap_or(rest);
            tags.extend(
                clause
                    .split(',')
                    .map(|t| t.trim().trim_matches('"').to_owned())
                    .filter(|t| !t.starts_with("time(")),
            );
        }
        tags.retain(|t| !t.is_empty() && !t.starts_with("time("));
        (measurement.concat(), fields, tags)
    }
}

/// Asserts that every query of `file` (panels and variables) names a measurement, fields
/// and tags among `series` (VictoriaMetrics' export of what the sink wrote: one
/// `measurement_field` name per series, the tags as labels). Returns the fields checked.
fn assert_dashboard_names(file: &str, series: &[serde_json::Value]) -> usize {
    let path = repo_root().join("configs/grafana").join(file);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("dashboard JSON");
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let q = t["query"].as_str().expect("query").to_owned();
            queries.push((panel["title"].as_str().unwrap_or("").to_owned(), q));
        }
    }
    let mut checked = 0;
    for (title, query) in &queries {
        let (measurement, fields, tags) = query_names(query);
        assert!(
            !measurement.is_empty() && !fields.is_empty(),
            "{file} {title:?}: {query}"
        );
        for field in fields {
            let name = format!("{measurement}_{field}");
            let Some(s) = series
                .iter()
                .find(|s| s["metric"]["__name__"] == name.as_str())
            else {
                panic!("{file} {title:?}: {name} is not written");
            };
            for tag in &tags {
                assert!(
                    series.iter().any(|x| {
                        x["metric"]["__name__"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(&measurement))
                            && x["metric"].get(tag.as_str()).is_some()
                    }),
                    "{file} {title:?}: tag {tag} is not on {measurement} ({})",
                    s["metric"]
                );
            }
            checked += 1;
        }
    }
    // The site variable lists the site tag of dcwatt_site.
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let site = vars
        .iter()
        .find(|v| v["name"] == "site")
        .expect("site variable");
    let q = site["query"].as_str().expect("site query");
    assert!(q.contains("dcwatt_site") && q.contains("site"), "{q}");
    assert!(
        series.iter().any(|s| s["metric"]["__name__"]
            .as_str()
            .is_some_and(|n| n.starts_with("dcwatt_site_"))),
        "dcwatt_site is written"
    );
    checked
}

/// Publishes one batch per node every 500 ms for `secs`.
fn send_for(port: u16, site: &str, secs: u64, seq: &mut u64, sent: &mut Sent) {
    for _ in 0..secs * 2 {
        let msgs = batches(site, *seq, dcwatt_common::now_ms(), sent);
        *seq += 1;
        publish_all(port, msgs.into_iter(), Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// InfluxDB (VictoriaMetrics) goes away for 30 s while agents publish; in the middle the
/// collector is restarted. The intake keeps accepting throughout, the lines wait in the
/// on-disk spool across the restart, and once the database is back every reading is there,
/// exactly once.
#[test]
fn a_30s_influxdb_outage_and_a_collector_restart_lose_nothing() {
    let dir = TempDir::new("influx-outage");
    let Some(mut vm) = VictoriaMetrics::start(&dir) else {
        return skip_or_fail("influx outage", "victoria-metrics is not installed");
    };
    let vm_port = vm.port;
    let mqtt = free_port();
    let config = dir.write("collector.toml", "");
    let start = || {
        Collector::start_with_config(
            &dir,
            BrokerKind::Embedded,
            &config,
            Some(mqtt),
            &influx_env(vm_port),
        )
    };
    let mut c = start();
    const SITE: &str = "influx-outage";
    publish_all(
        mqtt,
        vec![
            birth(SITE, "h1", Role::Host, "r1"),
            birth(SITE, "h2", Role::Host, "r2"),
            birth(SITE, "meter", Role::Meter, "mains"),
        ]
        .into_iter(),
        Duration::from_secs(10),
    );
    let mut sent = Sent::new();
    let mut seq = 0u64;
    send_for(mqtt, SITE, 5, &mut seq, &mut sent);
    let accepted = |c: &Collector| metric(&c.metrics(), "dcwatt_readings_accepted_total");
    let outage = std::time::Instant::now();
    let _ = vm.proc.terminate(Duration::from_secs(10));
    let before = accepted(&c).expect("accepted counter");
    send_for(mqtt, SITE, 10, &mut seq, &mut sent);
    // 20 batches of 7 readings each, all accepted while the database was down.
    wait_for(
        "the intake to accept the outage's readings",
        Duration::from_secs(10),
        || (accepted(&c)? - before >= 140.0).then_some(()),
    );
    let m = c.metrics();
    assert!(
        metric(&m, "dcwatt_influx_retries_total").unwrap_or(0.0) > 0.0,
        "{m}"
    );
    assert!(metric(&m, "dcwatt_influx_buffered_lines").unwrap_or(0.0) > 0.0);
    assert_eq!(metric(&m, "dcwatt_influx_up"), Some(0.0));
    // PUE is still computed from the live stream.
    assert!(c.site(SITE).expect("site")["pue"]["1m"]["value"]
        .as_f64()
        .is_some());
    // A clean restart in the middle of the outage: the buffered lines stay on disk.
    let exit = c.proc.terminate(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "a clean stop within 20 s: {exit:?}\n{}",
        c.proc.log()
    );
    assert!(
        c.proc.log().contains("kept in the spool"),
        "{}",
        c.proc.log()
    );
    c = start();
    while outage.elapsed() < Duration::from_secs(30) {
        send_for(mqtt, SITE, 1, &mut seq, &mut sent);
    }
    vm = VictoriaMetrics::start_on(&dir, vm_port).expect("victoria-metrics restarts");
    send_for(mqtt, SITE, 3, &mut seq, &mut sent);
    wait_for("the buffer to drain", Duration::from_secs(60), || {
        let m = c.metrics();
        (metric(&m, "dcwatt_influx_buffered_lines") == Some(0.0)
            && metric(&m, "dcwatt_influx_up") == Some(1.0))
        .then_some(())
    });
    let expected = sent.len();
    let (got, _) = wait_for(
        "every reading in VictoriaMetrics",
        Duration::from_secs(30),
        || {
            let (got, labels) = read_back(&vm, SITE);
            (got.len() >= expected).then_some((got, labels))
        },
    );
    assert_eq!(got.len(), expected);
    assert_eq!(got, sent);
    let m = c.metrics();
    assert_eq!(
        metric(&m, "dcwatt_influx_lines_dropped_total"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "dcwatt_influx_lines_rejected_total"), Some(0.0));
}
