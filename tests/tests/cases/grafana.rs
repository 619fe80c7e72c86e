//! The Grafana dashboards in configs/grafana/ as Grafana provisions them from files: each
//! picks its data source through a variable (a `${DS_…}` import input does not resolve
//! from a file), and PUE panels colour at the targets. What their queries name is checked
//! against what dcwatt writes in prometheus.rs (a real Prometheus) and influx.rs (the
//! InfluxDB sink's lines). Grafana itself does not run here.

use dcwatt_e2e::*;
use serde_json::Value;

const DASHBOARDS: [(&str, &str); 3] = [
    ("dcwatt-prometheus.json", "prometheus"),
    ("dcwatt-influxdb.json", "influxdb"),
    ("dcwatt-influxql.json", "influxdb"),
];

fn load(file: &str) -> (String, Value) {
    let text = std::fs::read_to_string(repo_root().join("configs/grafana").join(file))
        .expect("dashboard file");
    let v = serde_json::from_str(&text).expect("dashboard JSON");
    (text, v)
}

#[test]
fn dashboards_resolve_their_data_source_when_provisioned_from_files() {
    let mut uids = Vec::new();
    for (file, kind) in DASHBOARDS {
        let (text, d) = load(file);
        assert!(
            d.get("__inputs").is_none(),
            "{file}: import inputs do not resolve"
        );
        assert!(!text.contains("${DS_"), "{file}");
        let vars = d["templating"]["list"].as_array().expect("variables");
        let mut names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "{file}: a variable defined twice");
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], kind, "{file}");
        let mut targets = 0;
        for p in d["panels"].as_array().expect("panels") {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file} {}",
                p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{file} {}",
                    p["title"]
                );
                assert_eq!(t["datasource"]["type"], kind, "{file}");
                targets += 1;
            }
            // PUE panels colour at the hub target (1.25) and the national one (1.5).
            let title = p["title"].as_str().unwrap_or("");
            if title.contains("PUE") && !title.contains("ratio") {
                let steps: Vec<f64> = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{file} {title:?}: no thresholds"))
                    .iter()
                    .filter_map(|s| s["value"].as_f64())
                    .collect();
                assert_eq!(steps, [1.25, 1.5], "{file} {title:?}");
            }
        }
        assert!(targets >= 9, "{file}: {targets}");
        let site = vars
            .iter()
            .find(|v| v["name"] == "site")
            .expect("site variable");
        assert_eq!(site["datasource"]["uid"], "${datasource}", "{file}");
        uids.push(d["uid"].as_str().expect("uid").to_owned());
    }
    uids.sort();
    uids.dedup();
    assert_eq!(
        uids.len(),
        DASHBOARDS.len(),
        "each dashboard has its own uid"
    );

    // The provisioning example names one data source per dashboard kind and query language.
    let ds = std::fs::read_to_string(
        repo_root().join("configs/grafana/provisioning/datasources/dcwatt.yaml"),
    )
    .expect("datasources");
    for needle in [
        "type: prometheus",
        "version: Flux",
        "version: InfluxQL",
        "apiVersion: 1",
    ] {
        assert!(ds.contains(needle), "{needle}");
    }
    let boards = std::fs::read_to_string(
        repo_root().join("configs/grafana/provisioning/dashboards/dcwatt.yaml"),
    )
    .expect("dashboards");
    assert!(
        boards.contains("type: file") && boards.contains("path: "),
        "{boards}"
    );
}
