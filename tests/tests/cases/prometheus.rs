//! dcwatt as a Prometheus citizen: the rule files in configs/prometheus/ pass promtool's
//! checks and unit tests and say what dcwatt's default alert rules say.

use dcwatt_e2e::*;
use std::process::Command;

fn rules_dir() -> std::path::PathBuf {
    repo_root().join("configs/prometheus")
}

#[test]
fn the_rule_files_pass_promtool_check_and_their_unit_tests() {
    let Some(tool) = find_program("promtool") else {
        return skip_or_fail(
            "promtool test rules",
            "promtool (Debian's prometheus) is not installed",
        );
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
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
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
