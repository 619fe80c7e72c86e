//! Renewable energy contracts entered over the API: an energy engineer records a green
//! certificate with its evidence id, it counts in the site's REF at once, a second copy
//! of the same certificate is refused, and it survives a restart of the collector. Real
//! agents on the embedded broker.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::webdriver::http_request_full;
use dcwatt_e2e::*;
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "contracts-token-for-the-test-0123456789";
const SITE: &str = "green";

fn call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let (status, text) = http_request_full(port, method, path, body, &headers).expect("an answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `2026-12-07` for a day `offset` days from today (UTC, the site's zone here).
fn date(offset: i64) -> String {
    let days = dcwatt_common::now_ms().div_euclid(86_400_000) + offset;
    let (y, m, d) = dcwatt_common::civil_date(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn a_contract_entered_over_the_api_counts_in_ref_once_and_survives_a_restart() {
    let dir = TempDir::new("contracts");
    let env = [
        ("DCWATT__HTTP__TOKEN", TOKEN.to_owned()),
        ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into()),
    ];
    let mut c = Collector::start(&dir, BrokerKind::Embedded, &env);
    let watts = |w: f64| Profile {
        base_w: w,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let toml = |node: &str, role: &str, w: f64, point: &str| {
        agent_toml(SITE, node, role, c.mqtt, &watts(w), point)
    };
    let _meter = start_agent(&dir, "m", &toml("m", "meter", 1_500.0, "facility_input"));
    let _host = start_agent(&dir, "h", &toml("h", "host", 1_000.0, "it_input"));
    let site = format!("/api/v1/sites/{SITE}");
    let contracts = format!("{site}/contracts");
    wait_for("the site reporting", Duration::from_secs(60), || {
        let (status, v) = call(c.http, "GET", &site, None, Some(TOKEN));
        (status == 200 && v["pue"]["1m"]["value"].is_number()).then_some(())
    });
    let (status, v) = call(c.http, "GET", &site, None, Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(v["pue"]["1m"]["kpis"]["ref"]["quality"], "no_data", "{v:#}");

    // 72 kWh over the three days around now: 1 kW, two thirds of the facility's 1.5 kW.
    let body = format!(
        r#"{{"from": "{}", "to": "{}", "kwh": 72, "evidence": "GEC-2026-000123", "kind": "green_certificate"}}"#,
        date(-1),
        date(2)
    );
    let (status, _) = call(c.http, "POST", &contracts, Some(&body), None);
    assert_eq!(status, 401, "no token");
    let bad = [
        body.replace("72", "-1"),
        body.replace("GEC-2026-000123", ""),
        body.replace(&date(2), "the day after tomorrow"),
        body.replace(&date(2), &date(-1)),
        body.replace("\"kind\"", "\"extra\": 1, \"kind\""),
        "{not json".to_owned(),
    ];
    for b in &bad {
        let (status, v) = call(c.http, "POST", &contracts, Some(b), Some(TOKEN));
        assert_eq!(status, 400, "{b}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let unknown = "/api/v1/sites/nowhere/contracts";
    assert_eq!(
        call(c.http, "POST", unknown, Some(&body), Some(TOKEN)).0,
        404
    );
    let (status, entered) = call(c.http, "POST", &contracts, Some(&body), Some(TOKEN));
    assert_eq!(status, 201, "{entered}");
    let id = entered["id"].as_u64().expect("id");
    // The same certificate again is refused: it would count twice.
    let (status, v) = call(c.http, "POST", &contracts, Some(&body), Some(TOKEN));
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("counts once")),
        "{v}"
    );

    // The window's REF is the contract prorated to it over the facility energy.
    let (_, v) = call(c.http, "GET", &site, None, Some(TOKEN));
    let w = &v["pue"]["1m"];
    let k = &w["kpis"];
    let hours = (w["to_ms"].as_i64().expect("to") - w["from_ms"].as_i64().expect("from")) as f64
        / 3_600_000.0;
    let contract_kwh = k["renewable_contract_kwh"].as_f64().expect("contract kWh");
    // 72 kWh over 72 h: 1 kWh an hour of the window.
    assert!(
        (contract_kwh - hours).abs() < 1e-6,
        "{contract_kwh} vs {hours}: {k:#}"
    );
    let facility = w["facility_kwh"].as_f64().expect("facility")
        + w["facility_fill_kwh"].as_f64().unwrap_or(0.0);
    let ref_ = k["ref"]["value"].as_f64().expect("REF");
    assert!((ref_ - contract_kwh / facility).abs() < 1e-4, "{k:#}");
    assert!((ref_ - 2.0 / 3.0).abs() < 0.05, "{k:#}");
    assert!(
        k["ref"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("contracts only")),
        "{k:#}"
    );

    // It survives a restart: the state file holds it.
    assert!(c.proc.terminate(Duration::from_secs(20)).is_some());
    c = Collector::start(&dir, BrokerKind::Embedded, &env);
    let (status, list) = call(c.http, "GET", &contracts, None, Some(TOKEN));
    assert_eq!(status, 200, "{list}");
    let list = list["contracts"].as_array().expect("contracts").clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (&list[0]["origin"], &list[0]["id"], &list[0]["evidence"]),
        (&"api".into(), &id.into(), &"GEC-2026-000123".into())
    );
    assert_eq!(list[0]["kwh"], 72.0);

    // Withdrawn, it is gone; withdrawing it again finds nothing.
    let one = format!("{contracts}/{id}");
    assert_eq!(call(c.http, "DELETE", &one, None, None).0, 401);
    assert_eq!(call(c.http, "DELETE", &one, None, Some(TOKEN)).0, 200);
    assert_eq!(call(c.http, "DELETE", &one, None, Some(TOKEN)).0, 404);
    let (_, list) = call(c.http, "GET", &contracts, None, Some(TOKEN));
    assert_eq!(
        list["contracts"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
}
