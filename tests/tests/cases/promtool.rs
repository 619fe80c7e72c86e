//! The collector's and the agent's `/metrics` as Prometheus' own linter sees them:
//! `promtool check metrics` passes on both, every family is in docs/api.md, and the
//! deprecated names that `http.deprecated_metric_names` brings back for one release are
//! all it would report.

use dcwatt_e2e::wire::{birth, readings};
use dcwatt_e2e::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const DEPRECATED: [&str; 5] = [
    "dcwatt_counter_jumps_rejected_total",
    "dcwatt_counter_resets_total",
    "dcwatt_counter_wraps_total",
    "dcwatt_history_minutes_written_total",
    "dcwatt_state_last_save_timestamp_ms",
];

/// promtool (Debian's `prometheus`), or `None` after saying loudly that `test` is skipped
/// (a failure when services are required).
pub(crate) fn promtool_for(test: &str) -> Option<std::path::PathBuf> {
    let tool = find_program("promtool");
    if tool.is_none() {
        skip_or_fail(test, "promtool (Debian's prometheus) is not installed");
    }
    tool
}

/// What `promtool check metrics` says of `text`: (exit code, its complaints).
fn promtool(promtool: &std::path::Path, text: &str) -> (i32, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .expect("metrics to promtool");
    }
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), said)
}

/// Every family of `text` has its row in docs/api.md.
pub fn assert_documented(text: &str, whose: &str) {
    let docs = std::fs::read_to_string(repo_root().join("docs/api.md")).expect("docs/api.md");
    for l in text.lines() {
        if let Some(name) = l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()) {
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/api.md does not list {name} from {whose}'s /metrics"
            );
        }
    }
}

/// A collector with a site reporting (a meter and two hosts, PUE 1.5), its /metrics text.
fn scrape(dir: &TempDir, env: &[(&str, String)]) -> String {
    let c = Collector::start(dir, BrokerKind::Embedded, env);
    let now = dcwatt_common::now_ms();
    let mut msgs = Vec::new();
    for (node, role) in [("meter", "meter"), ("h1", "host"), ("h2", "host")] {
        msgs.push(birth(
            "lint",
            node,
            json!({"role": role, "interval_ms": 1000}),
        ));
    }
    for s in 1..=3u64 {
        let ts = now + s as i64 * 1000;
        for (node, w, point) in [
            ("meter", 1500.0, "facility_input"),
            ("h1", 600.0, "it_input"),
            ("h2", 400.0, "it_input"),
        ] {
            let r = json!([{"metric": "power_w", "value": w, "ts_ms": ts, "point": point}]);
            msgs.push(readings("lint", node, s, r));
        }
    }
    publish_all(c.mqtt, msgs.into_iter(), Duration::from_secs(10));
    wait_for("the site on /metrics", Duration::from_secs(20), || {
        let t = c.metrics();
        t.contains("dcwatt_site_power_watts{site=\"lint\"")
            .then_some(t)
    })
}

#[test]
fn the_collector_metrics_pass_promtool() {
    let Some(tool) = promtool_for("promtool check metrics") else {
        return;
    };
    let dir = TempDir::new("promtool");
    // Every family there is: per-node series for every node too.
    let text = scrape(&dir, &[("DCWATT__HTTP__NODE_METRICS", "all".into())]);
    let (code, said) = promtool(&tool, &text);
    assert_eq!((code, said.trim()), (0, ""), "promtool on /metrics");
    assert_documented(&text, "the collector");
    assert!(
        text.contains("dcwatt_node_up{site=\"lint\",node=\"h1\"} 1"),
        "per-node series with node_metrics = all"
    );
    for family in [
        "dcwatt_build_info{program=\"dcwatt-collector\"",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "dcwatt_energy_meter_resets_total 0",
        "dcwatt_state_last_save_timestamp_seconds ",
    ] {
        assert!(text.contains(family), "{family} on /metrics");
    }
    assert!(
        DEPRECATED.iter().all(|d| !text.contains(d)),
        "no deprecated name by default"
    );

    // For one release the old names can come back, and they are all promtool minds.
    let dir = TempDir::new("promtool-deprecated");
    let text = scrape(
        &dir,
        &[("DCWATT__HTTP__DEPRECATED_METRIC_NAMES", "true".into())],
    );
    let (code, said) = promtool(&tool, &text);
    assert_ne!(code, 0, "{said}");
    let mut named: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    named.sort_unstable();
    assert_eq!(named, DEPRECATED, "{said}");
    assert!(
        text.contains("dcwatt_energy_meter_resets_total 0"),
        "the new names stay"
    );
}

#[test]
fn the_agent_metrics_pass_promtool_and_count_what_the_agent_does() {
    let Some(tool) = promtool_for("promtool check metrics (agent)") else {
        return;
    };
    let dir = TempDir::new("promtool-agent");
    let c = Collector::start(&dir, BrokerKind::Embedded, &[]);
    let port = free_port();
    let toml = format!(
        "site = \"lint\"\nnode = \"h1\"\ninterval_secs = 1\n[mqtt]\nport = {}\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [[sources]]\ntype = \"sim\"\npoint = \"it_input\"\nbase_w = 500.0\n",
        c.mqtt
    );
    let _agent = start_agent(&dir, "h1", &toml);
    let text = wait_for(
        "the agent's /metrics after 3 batches",
        Duration::from_secs(20),
        || {
            let (status, body) = http_get(port, "/metrics")?;
            (status == 200 && metric(&body, "dcwatt_agent_batches_published_total")? >= 3.0)
                .then_some(body)
        },
    );
    let (code, said) = promtool(&tool, &text);
    assert_eq!(
        (code, said.trim()),
        (0, ""),
        "promtool on the agent's /metrics"
    );
    assert_documented(&text, "the agent");
    assert_eq!(metric(&text, "dcwatt_agent_broker_connected"), Some(1.0));
    let reads = metric(
        &text,
        "dcwatt_agent_source_reads_total{source=\"sim\",index=\"0\"}",
    )
    .expect("the sim source's reads");
    assert!(reads >= 3.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "dcwatt_agent_source_read_errors_total{source=\"sim\",index=\"0\"}"
        ),
        Some(0.0)
    );
    assert!(
        text.contains("dcwatt_build_info{program=\"dcwatt-agent\""),
        "{text}"
    );
    // The collector saw what the agent says it published.
    let site = c.site("lint").expect("site");
    assert!(site["nodes"]["online"].as_u64() == Some(1), "{site}");
}
