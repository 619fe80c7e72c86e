//! dcwatt as a Prometheus citizen: a real Prometheus scrapes a collector and an agent and
//! answers what dcwatt's own API says; the rule files in configs/prometheus/ load there,
//! pass promtool's checks and unit tests, and say what dcwatt's default alert rules say.

use dcwatt_e2e::*;
use std::process::Command;
use std::time::Duration;

const SITE: &str = "prom";

#[test]
fn a_real_prometheus_scrapes_dcwatt_and_agrees_with_its_api() {
    if find_program("prometheus").is_none() {
        return skip_or_fail(
            "Prometheus end to end",
            "prometheus (Debian's prometheus) is not installed",
        );
    }
    let dir = TempDir::new("prometheus");
    // r1: 1 kW × 0.8 derated = 800 W of budget, A/B feeds of 0.6 kW × 0.8 = 480 W.
    let cfg = dir.write(
        "collector.toml",
        &format!(
            "[http]\nnode_metrics = \"all\"\n\
             [[racks]]\nsite = \"{SITE}\"\nrack = \"r1\"\nbudget_kw = 1.0\nfeed_kw = 0.6\n"
        ),
    );
    let c = Collector::start_with_config(&dir, BrokerKind::Embedded, &cfg, None, &[]);
    let agent_port = free_port();
    let agent = |node: &str, role: &str, rack: &str, point: &str, w: f64, http: &str| {
        format!(
            "site = \"{SITE}\"\nnode = \"{node}\"\nrole = \"{role}\"\n{rack}interval_secs = 1\n\
             [mqtt]\nport = {}\n{http}[[sources]]\ntype = \"sim\"\npoint = \"{point}\"\nbase_w = {w:?}\n",
            c.mqtt
        )
    };
    let http = format!("[http]\nlisten = \"127.0.0.1:{agent_port}\"\n");
    let _agents = [
        start_agent(
            &dir,
            "meter",
            &agent("meter", "meter", "", "facility_input", 1450.0, ""),
        ),
        start_agent(
            &dir,
            "h1",
            &agent(
                "h1",
                "host",
                "rack = \"r1\"\nzone = \"hall-1\"\n",
                "it_input",
                600.0,
                &http,
            ),
        ),
        // hall-1's own cooling: a zone with its overhead metered (partial PUE).
        start_agent(
            &dir,
            "crah1",
            &agent(
                "crah1",
                "meter",
                "zone = \"hall-1\"\n",
                "cooling",
                150.0,
                "",
            ),
        ),
        start_agent(
            &dir,
            "h2",
            &agent("h2", "host", "rack = \"r2\"\n", "it_input", 400.0, ""),
        ),
    ];
    let rules = rules_dir();
    let prom = Prometheus::start(
        &dir,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n\
             \x20 - job_name: dcwatt-collector\n    honor_labels: true\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n\
             \x20 - job_name: dcwatt-agent\n    static_configs:\n      - targets: [\"127.0.0.1:{agent_port}\"]\n",
            rules.join("dcwatt-rules.yml").display(),
            rules.join("dcwatt-alerts.yml").display(),
            c.http
        ),
    )
    .expect("prometheus is installed");

    // Both targets are up, and the agent's own view of its broker connection arrives.
    for job in ["dcwatt-collector", "dcwatt-agent"] {
        wait_for(&format!("{job} up"), Duration::from_secs(30), || {
            (prom.value(&format!("up{{job=\"{job}\"}}"))? == 1.0).then_some(())
        });
    }
    assert_eq!(
        wait_for("the agent's broker state", Duration::from_secs(10), || prom
            .value("dcwatt_agent_broker_connected")),
        1.0
    );
    // Its spool holds nothing once the broker has acknowledged each batch: the gauge is
    // read after the acknowledgements, not one batch behind them.
    wait_for(
        "an empty spool on the agent's /metrics",
        Duration::from_secs(10),
        || {
            let (_, text) = http_get(agent_port, "/metrics")?;
            (metric(&text, "dcwatt_agent_spool_batches")? == 0.0
                && metric(&text, "dcwatt_agent_batches_acknowledged_total")? >= 2.0)
                .then_some(())
        },
    );

    // The site's 1 min PUE and rack r1's power as Prometheus stored them, and as dcwatt's
    // API says them at the same moment (constant loads: the values hold still once the
    // window has data; the API is read before and after the query, and must agree).
    let api_pue = || -> Option<f64> { c.site(SITE)?["pue"]["1m"]["value"].as_f64() };
    let (pue, from_api) = wait_for("PUE in Prometheus", Duration::from_secs(40), || {
        let before = api_pue()?;
        let stored = prom.value(&format!("dcwatt_site_pue{{site=\"{SITE}\",window=\"1m\"}}"))?;
        let after = api_pue()?;
        (before == after && stored == after).then_some((stored, after))
    });
    assert_eq!(pue, from_api);
    assert!(
        (pue - 1450.0 / 1000.0).abs() < 1e-6,
        "1,450 W / (600 + 400) W: {pue}"
    );
    // The recording rule's expression over this one site is the site's PUE.
    let region = prom
        .value(
            "sum by (window, category) (dcwatt_site_energy_joules{side=\"facility\",window=\"1m\"}) \
             / sum by (window, category) (dcwatt_site_energy_joules{side=\"it\",window=\"1m\"})",
        )
        .expect("the energy-weighted PUE");
    assert!((region - pue).abs() < 1e-9, "{region} vs {pue}");

    let racks = get_json(c.http, &format!("/api/v1/sites/{SITE}/racks")).expect("racks");
    let r1 = racks["racks"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["rack"] == "r1"))
        .cloned()
        .expect("r1");
    let stored = |q: &str| prom.value(&format!("{q}{{site=\"{SITE}\",rack=\"r1\"}}"));
    assert_eq!(stored("dcwatt_rack_power_watts"), r1["power_w"].as_f64());
    assert_eq!(stored("dcwatt_rack_power_watts"), Some(600.0));
    assert_eq!(stored("dcwatt_rack_power_utilization_ratio"), Some(0.75));
    assert_eq!(stored("dcwatt_rack_failover_headroom_watts"), Some(-120.0));
    assert_eq!(
        prom.value(&format!("dcwatt_node_up{{site=\"{SITE}\",node=\"h2\"}}")),
        Some(1.0)
    );
    // The site's PUE target as dcwatt's alert rules hold it (the default rule's 1.5).
    assert_eq!(
        prom.value(&format!(
            "dcwatt_alert_threshold{{site=\"{SITE}\",rule=\"pue_1h_above_target\"}}"
        )),
        Some(1.5)
    );
    // hall-1: (600 W of IT + 150 W of its own cooling) / 600 W.
    let ppue = wait_for("hall-1's partial PUE", Duration::from_secs(10), || {
        prom.value(&format!(
            "dcwatt_zone_ppue{{site=\"{SITE}\",zone=\"hall-1\",window=\"1m\"}}"
        ))
    });
    assert!((ppue - 750.0 / 600.0).abs() < 1e-6, "{ppue}");

    // The rule files load in the real server: every group and rule, none broken.
    let rules = get_json(prom.port, "/api/v1/rules").expect("rules");
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = |name: &str| {
        groups
            .iter()
            .find(|g| g["name"] == name)
            .and_then(|g| g["rules"].as_array().map(Vec::len))
    };
    assert_eq!(count("dcwatt-recording"), Some(7), "{rules}");
    assert_eq!(count("dcwatt-alerts"), Some(12), "{rules}");
    let broken: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r["health"] == "err")
        .collect();
    assert!(broken.is_empty(), "{broken:?}");

    dashboard_queries_name_only_what_dcwatt_writes(&prom);
}

/// Every query of the Prometheus dashboard (panels and variables) names only metrics and
/// labels that this Prometheus holds from dcwatt, and runs; most return data here.
fn dashboard_queries_name_only_what_dcwatt_writes(prom: &Prometheus) {
    let names: Vec<String> = prom
        .query("count by (__name__) ({__name__=~\"dcwatt_.+|up|process_.+\"})")
        .expect("names")
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_owned))
        .collect();
    let labels: Vec<String> = get_json(prom.port, "/api/v1/labels")
        .and_then(|v| v["data"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    let path = repo_root().join("configs/grafana/dcwatt-prometheus.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            exprs.push((title, t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(metric, label): the metric, and the label on it.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .expect("label_values");
            let (metric, label) = inner.split_once(", ").expect("metric, label");
            exprs.push((
                format!("variable {}", v["name"]),
                format!("{metric}{{{label}!=\"\"}}"),
            ));
        }
    }
    assert!(exprs.len() >= 25, "{}", exprs.len());
    // Rates want a few scrapes.
    wait_for("5 scrapes of the agent", Duration::from_secs(20), || {
        (prom.value("count_over_time(up{job=\"dcwatt-agent\"}[1m])")? >= 5.0).then_some(())
    });
    let mut empty = Vec::new();
    for (title, expr) in &exprs {
        let expr = expr
            .replace("$site", SITE)
            .replace("$__rate_interval", "1m");
        for name in identifiers(&expr).filter(|t| t.starts_with("dcwatt_")) {
            assert!(
                names.iter().any(|n| n == name),
                "panel {title:?}: {name} is not a series dcwatt wrote ({names:?})"
            );
        }
        for label in used_labels(&expr) {
            assert!(
                labels.contains(&label),
                "panel {title:?}: label {label} is not one dcwatt writes ({labels:?})"
            );
        }
        let result = prom
            .query(&expr)
            .unwrap_or_else(|| panic!("panel {title:?}: {expr} does not run"));
        if result.is_empty() {
            empty.push(title.clone());
        }
    }
    // Empty here, and only these: what shows a problem this site does not have, and the
    // windows of an hour and more, whose PUE waits for a closed minute of data. A rate of a
    // counter that stayed 0 still returns its series.
    let expected_empty = [
        "Nodes not reporting",
        "Agents: spool bytes and broker disconnections",
        "Region PUE 24h (energy-weighted)",
        "Sites: PUE 24h",
        "PUE",
        "Zone partial PUE",
    ];
    empty.retain(|t| !expected_empty.contains(&t.as_str()));
    assert!(empty.is_empty(), "no data for {empty:?}");
}

/// The identifiers of a PromQL expression (metric and label names, functions, keywords).
fn identifiers(expr: &str) -> impl Iterator<Item = &str> {
    let mut in_string = false;
    expr.split(move |c: char| {
        if c == '"' {
            in_string = !in_string;
        }
        in_string || !(c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
    .filter(|t| !t.is_empty())
}

/// Label names in the selectors' matchers and in `by (…)` / `on (…)` clauses.
fn used_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['{', '(']) {
        let open = rest.as_bytes()[i];
        let before = rest[..i].trim_end();
        let close = if open == b'{' { '}' } else { ')' };
        let Some(j) = rest[i..].find(close) else {
            break;
        };
        let inside = &rest[i + 1..i + j];
        if open == b'{' {
            for m in inside.split(',') {
                if let Some(k) = m.find(['=', '!']) {
                    out.push(m[..k].trim().to_owned());
                }
            }
        } else if before.ends_with(" by") || before.ends_with(" on") || before == "by" {
            out.extend(inside.split(',').map(|l| l.trim().to_owned()));
        }
        rest = &rest[i + 1..];
    }
    out.retain(|l| !l.is_empty() && l != "__name__");
    out
}

fn rules_dir() -> std::path::PathBuf {
    repo_root().join("configs/prometheus")
}

#[test]
fn the_rule_files_pass_promtool_check_and_their_unit_tests() {
    let Some(tool) = super::promtool::promtool_for("promtool test rules") else {
        return;
    };
    let dir = rules_dir();
    let run = |args: &[&str]| {
        let out = Command::new(&tool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{said}");
        said
    };
    let said = run(&["check", "rules", "dcwatt-rules.yml", "dcwatt-alerts.yml"]);
    assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
    assert!(said.contains("SUCCESS: 12 rules found"), "{said}");
    let said = run(&[
        "test",
        "rules",
        "dcwatt-rules.test.yml",
        "dcwatt-alerts.test.yml",
    ]);
    assert_eq!(said.matches("SUCCESS").count(), 2, "{said}");
    run(&["check", "config", "prometheus.yml"]);
}

/// One `- alert:` block of the YAML: its name and its lines.
fn alert_blocks(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in yaml.lines() {
        if let Some(name) = l.trim().strip_prefix("- alert: ") {
            out.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            if l.trim_start().starts_with("- record: ") {
                continue;
            }
            text.push_str(l);
            text.push('\n');
        }
    }
    out
}

fn duration(secs: u64) -> String {
    if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[test]
fn the_prometheus_alerts_say_what_the_default_rules_say() {
    let toml = std::fs::read_to_string(repo_root().join("configs/alert-rules.toml"))
        .expect("alert-rules.toml");
    let loader = dcwatt_common::settings::Loader::from_toml(&toml).expect("valid TOML");
    let alerts: serde_json::Value =
        serde_json::from_str(&loader.sections()["alerts"]).expect("alerts as JSON");
    let rules = alerts["rules"].as_array().expect("rules");
    let yaml = std::fs::read_to_string(rules_dir().join("dcwatt-alerts.yml")).expect("yml");
    let blocks = alert_blocks(&yaml);
    assert!(rules.len() >= 8, "{rules:?}");
    for r in rules {
        let name = r["name"].as_str().expect("name");
        let (_, block) = blocks
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("dcwatt-alerts.yml has no alert {name}"));
        let num = |k: &str| r[k].as_f64().or_else(|| r[k].as_i64().map(|v| v as f64));
        let op = r["op"].as_str().expect("op");
        let threshold = num("threshold").expect("threshold");
        assert!(
            block.contains(&format!("{op} {threshold}")),
            "{name}: `{op} {threshold}` not in\n{block}"
        );
        if let Some(clear) = num("clear") {
            assert!(
                block.contains(&format!("{op} {clear}")) && block.contains("ALERTS{"),
                "{name}: the hysteresis to {clear} is missing in\n{block}"
            );
        }
        match r["for_secs"].as_u64() {
            Some(s) if s > 0 => assert!(
                block.contains(&format!("for: {}\n", duration(s))),
                "{name}: for {s} s"
            ),
            _ => assert!(!block.contains("for: "), "{name}: fires at once"),
        }
        if let Some(s) = r["keep_firing_for_secs"].as_u64() {
            assert!(
                block.contains(&format!("keep_firing_for: {}\n", duration(s))),
                "{name}: keep firing {s} s"
            );
        }
        let severity = r["severity"].as_str().expect("severity");
        assert!(
            block.contains(&format!("severity: {severity}\n")),
            "{name}: {severity}"
        );
        if let Some(c) = num("min_coverage") {
            assert!(
                block.contains(&format!("_coverage{{window=\"1h\"}}) >= {c})")),
                "{name}"
            );
        }
        let anchor = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook: \"docs/runbooks.md#"))
            .map(|a| a.trim_end_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{name} has no runbook"));
        let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md"))
            .expect("docs/runbooks.md");
        assert!(
            runbooks.contains(&format!("<a id=\"{anchor}\"></a>")),
            "docs/runbooks.md has no section {anchor}"
        );
    }
}
