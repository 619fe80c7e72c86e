//! Retiring a decommissioned node: a host taken out of service stops lowering coverage
//! and stops alerting once an operator retires it through the API, which needs the
//! bearer token. Real agents on the embedded broker.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::webdriver::{http_request, http_request_with};
use dcwatt_e2e::*;
use std::time::Duration;

const TOKEN: &str = "retire-token-for-the-test-0123456789";
const SITE: &str = "retire";

fn watts(w: f64) -> Profile {
    Profile {
        base_w: w,
        amplitude_w: 0.0,
        period_secs: 60.0,
    }
}

fn get(port: u16, path: &str) -> Option<serde_json::Value> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http_request_with(port, "GET", path, &[("Authorization", &auth)])?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn post(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_request_with(port, "POST", path, &headers).expect("an answer")
}

#[test]
fn a_retired_host_stops_counting_as_missing_and_needs_the_token() {
    let dir = TempDir::new("retire");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[
            ("DCWATT__HTTP__TOKEN", TOKEN.to_owned()),
            ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into()),
        ],
    );
    let toml = |node: &str, role: &str, w: f64, point: &str| {
        agent_toml(SITE, node, role, c.mqtt, &watts(w), point)
    };
    let _meter = start_agent(&dir, "m", &toml("m", "meter", 1_500.0, "facility_input"));
    let _h1 = start_agent(&dir, "h1", &toml("h1", "host", 500.0, "it_input"));
    let mut h2 = start_agent(&dir, "h2", &toml("h2", "host", 500.0, "it_input"));
    let site = format!("/api/v1/sites/{SITE}");
    wait_for("three nodes reporting", Duration::from_secs(60), || {
        let v = get(c.http, &site)?;
        (v["nodes"]["online"] == 3 && v["power"]["coverage_it"] == 1.0).then_some(())
    });

    // h2 is switched off for good: its input meter goes missing.
    h2.kill();
    let v = wait_for("h2 missing", Duration::from_secs(60), || {
        let v = get(c.http, &site)?;
        (v["power"]["coverage_it"] == 0.5).then_some(v)
    });
    assert_eq!(v["power"]["quality"], "partial", "{:#}", v["power"]);

    let retire = format!("{site}/nodes/h2/retire");
    assert_eq!(post(c.http, &retire, None).0, 401, "no token");
    assert_eq!(post(c.http, &retire, Some("wrong")).0, 401, "wrong token");
    let (status, body) = post(c.http, &format!("{site}/nodes/nobody/retire"), Some(TOKEN));
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(c.http, &retire, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["state"], "retired");

    let v = get(c.http, &site).expect("site");
    assert_eq!(v["power"]["coverage_it"], 1.0, "{:#}", v["power"]);
    assert_eq!(v["power"]["quality"], "measured", "{:#}", v["power"]);
    assert_eq!(
        (&v["nodes"]["total"], &v["nodes"]["retired"]),
        (&serde_json::json!(2), &serde_json::json!(1)),
        "{:#}",
        v["nodes"]
    );
    let nodes = get(c.http, &format!("{site}/nodes")).expect("nodes");
    let h2 = nodes["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node"] == "h2"))
        .expect("h2 listed");
    assert_eq!(h2["state"], "retired");
    let metrics = http_request_with(
        c.http,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    )
    .expect("metrics")
    .1;
    assert_eq!(
        metric(
            &metrics,
            &format!("dcwatt_site_nodes{{site=\"{SITE}\",state=\"retired\"}}")
        ),
        Some(1.0)
    );
    assert!(c.proc.log().contains("node retired"));
}

#[test]
fn without_a_token_configured_nobody_may_retire_a_node() {
    let dir = TempDir::new("retire-open");
    let c = Collector::start(&dir, BrokerKind::Embedded, &[]);
    let (status, body) = post(c.http, "/api/v1/sites/any/nodes/h1/retire", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("http.token"), "{body}");
    // Nor enter or withdraw a renewable contract: they change the figures reported.
    let contract = r#"{"from": "2026-03-01", "to": "2026-04-01", "kwh": 1, "evidence": "GEC-1"}"#;
    let (status, body) = http_request(
        c.http,
        "POST",
        "/api/v1/sites/any/contracts",
        Some(contract),
    )
    .expect("an answer");
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        http_request(c.http, "DELETE", "/api/v1/sites/any/contracts/1", None).expect("an answer");
    assert_eq!(status, 403, "{body}");
}
