//! Fleet mode: two sites, each with its own collector and Mosquitto, bridged to a region
//! broker; a fleet collector there reports the region's energy-weighted PUE and totals.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use std::time::Duration;

fn constant(w: f64) -> Profile {
    Profile {
        base_w: w,
        amplitude_w: 0.0,
        period_secs: 60.0,
    }
}

#[test]
fn a_fleet_collector_reports_the_energy_weighted_region() {
    let dir = TempDir::new("fleet");
    let region_port = free_port();
    let Some(_region) = Mosquitto::start_named(&dir, "region", region_port, "") else {
        return skip_or_fail("fleet", "mosquitto is not installed");
    };
    // Each site broker forwards its summaries to the region.
    let bridge = |name: &str| {
        format!(
            "connection {name}-to-region\naddress 127.0.0.1:{region_port}\ntopic dcwatt/v1/+/summary out 1\ncleansession false\n"
        )
    };
    let (pa, pb) = (free_port(), free_port());
    let _a = Mosquitto::start_named(&dir, "site-a", pa, &bridge("a")).expect("broker a");
    let _b = Mosquitto::start_named(&dir, "site-b", pb, &bridge("b")).expect("broker b");
    let env = [
        ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".to_owned()),
        ("DCWATT__SUMMARY__INTERVAL_SECS", "1".to_owned()),
    ];
    let ca = Collector::start(
        &dir,
        BrokerKind::External(pa),
        &[
            env[0].clone(),
            env[1].clone(),
            ("DCWATT__MQTT__CLIENT_ID", "site-a".into()),
            ("DCWATT__STATE__PATH", "a.sqlite".into()),
            ("DCWATT__HISTORY__PATH", "ha.sqlite".into()),
        ],
    );
    let cb = Collector::start(
        &dir,
        BrokerKind::External(pb),
        &[
            env[0].clone(),
            env[1].clone(),
            ("DCWATT__MQTT__CLIENT_ID", "site-b".into()),
            ("DCWATT__STATE__PATH", "b.sqlite".into()),
            ("DCWATT__HISTORY__PATH", "hb.sqlite".into()),
        ],
    );
    let fleet = Collector::start(
        &dir,
        BrokerKind::External(region_port),
        &[
            ("DCWATT__FLEET__ENABLED", "true".into()),
            ("DCWATT__FLEET__STALE_AFTER_SECS", "5".into()),
            ("DCWATT__MQTT__CLIENT_ID", "fleet".into()),
            ("DCWATT__STATE__PATH", "f.sqlite".into()),
            ("DCWATT__HISTORY__PATH", "hf.sqlite".into()),
        ],
    );
    // Site A: big and efficient (PUE 1.2 on 10 kW IT); site B: small and poor (PUE 2.0 on
    // 1 kW). Energy-weighted: 14/11 = 1.2727; an average of ratios would say 1.6.
    let mut agents = Vec::new();
    // Heat reused at the boundary: 2.4 kW at A (ERF 0.2), 200 W at B (0.1); the region's
    // ERF is Σ reused / Σ facility = 2.6 / 14, not the mean 0.15.
    for (site, port, fac, hosts, reused) in [
        ("a", pa, 12_000.0, [5_000.0, 5_000.0], 2_400.0),
        ("b", pb, 2_000.0, [500.0, 500.0], 200.0),
    ] {
        agents.push(start_agent(
            &dir,
            &format!("{site}-heat"),
            &agent_toml(
                site,
                "heat",
                "meter",
                port,
                &constant(reused),
                "energy_reused",
            ),
        ));
        agents.push(start_agent(
            &dir,
            &format!("{site}-meter"),
            &agent_toml(
                site,
                "meter",
                "meter",
                port,
                &constant(fac),
                "facility_input",
            ),
        ));
        for (i, w) in hosts.iter().enumerate() {
            let node = format!("h{i}");
            agents.push(start_agent(
                &dir,
                &format!("{site}-{node}"),
                &agent_toml(site, &node, "host", port, &constant(*w), "it_input"),
            ));
        }
    }
    let view = wait_for(
        "both sites in the fleet view",
        Duration::from_secs(90),
        || {
            let v = get_json(fleet.http, "/api/v1/fleet")?;
            // Both sites' 1m windows must hold at least ten seconds of data (10 kW and 1 kW
            // of IT): just after start-up a window of one second would weigh the sites by
            // their start times, not by their loads.
            let it = |site: &str| {
                v["by_site"]
                    .as_array()?
                    .iter()
                    .find(|s| s["site"] == site)?["pue"]["1m"]["it_kwh"]
                    .as_f64()
            };
            let ten_secs = |site, kw: f64| it(site).is_some_and(|kwh| kwh >= kw * 10.0 / 3600.0);
            (v["pue"]["1m"]["sites"] == 2 && ten_secs("a", 10.0) && ten_secs("b", 1.0)).then_some(v)
        },
    );
    let w = &view["pue"]["1m"];
    let value = w["value"].as_f64().expect("fleet PUE");
    // Each site's IT energy in its own 1m window: just after start-up the two windows can
    // differ by a second, so the weights come from what each site measured. With equal
    // windows this is 14/11.
    let it_kwh = |site: &str| -> f64 {
        view["by_site"]
            .as_array()
            .expect("sites")
            .iter()
            .find(|s| s["site"] == site)
            .and_then(|s| s["pue"]["1m"]["it_kwh"].as_f64())
            .expect("site IT energy")
    };
    let (it_a, it_b) = (it_kwh("a"), it_kwh("b"));
    let weighted = (1.2 * it_a + 2.0 * it_b) / (it_a + it_b);
    assert!(
        (value - weighted).abs() < 1e-3,
        "energy-weighted {weighted}: {w}"
    );
    assert!(
        it_a > 5.0 * it_b && (value - 1.6).abs() > 0.2,
        "not an average of ratios: {w}"
    );
    // Exactly Σ facility / Σ IT of the summaries it holds.
    let sum = |key: &str| -> f64 {
        view["by_site"]
            .as_array()
            .expect("sites")
            .iter()
            .map(|s| s["pue"]["1m"][key].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert!((value - sum("facility_kwh") / sum("it_kwh")).abs() < 1e-12);
    assert_eq!(w["categories"], serde_json::json!([3]));
    // The region's ERF: exactly Σ (ERF × facility energy) / Σ facility energy of the
    // summaries, and 2.6 / 14 up to the sites' window edges.
    let erf = &w["kpis"]["erf"];
    let erf_value = erf["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("fleet ERF: {w}"));
    let reused: f64 = ["a", "b"]
        .iter()
        .map(|site| {
            let s = view["by_site"]
                .as_array()
                .expect("sites")
                .iter()
                .find(|s| s["site"] == *site)
                .expect("site");
            let p = &s["pue"]["1m"];
            let fac = p["facility_kwh"].as_f64().unwrap_or(0.0)
                + p["facility_fill_kwh"].as_f64().unwrap_or(0.0);
            p["kpis"]["erf"]["value"].as_f64().expect("site ERF") * fac
        })
        .sum();
    assert!(
        (erf_value - reused / erf["denominator_kwh"].as_f64().expect("den")).abs() < 1e-12,
        "{w}"
    );
    // The heat meters start a moment after the incomers, so the first seconds of each
    // site's window lack reused heat: 2.6 / 14 within 1 %, and far from the mean.
    assert!(
        (erf_value - 2.6 / 14.0).abs() < 0.01 * 2.6 / 14.0 + 1e-3
            && (erf_value - 0.15).abs() > 0.02,
        "{w}"
    );
    assert_eq!(erf["sites"], 2, "{w}");
    assert_eq!(view["sites"], 2);
    assert_eq!(view["stale_sites"], serde_json::json!([]));
    assert!(
        (view["facility_w"].as_f64().unwrap_or(0.0) - 14_000.0).abs() < 1.0,
        "{view}"
    );
    // Each site's own collector agrees with what the fleet shows for it.
    for (c, site, pue) in [(&ca, "a", 1.2), (&cb, "b", 2.0)] {
        let own = c.site(site).expect("site view")["pue"]["1m"]["value"]
            .as_f64()
            .expect("value");
        assert!((own - pue).abs() < 1e-6, "{site}: {own}");
    }
    // The fleet collector's dashboard shows the region, with the API's number.
    if let Some(browser) = dcwatt_e2e::webdriver::Browser::start(&dir) {
        browser.goto(&format!("http://127.0.0.1:{}/", fleet.http));
        let shown = browser.wait_js(
            "the region card",
            "var e = document.querySelector('#region .kpi .v'); return e && e.textContent",
        );
        let api = get_json(fleet.http, "/api/v1/fleet").expect("fleet");
        // The 1h window needs a whole minute; until then both say there is no value.
        let expected = api["pue"]["1h"]["value"]
            .as_f64()
            .map_or("—".to_owned(), |v| format!("{v:.3}"));
        assert!(
            shown.as_str().is_some_and(|t| t.starts_with(&expected)),
            "{shown} vs {expected}"
        );
        let errors: Vec<_> = browser
            .console()
            .into_iter()
            .filter(|(l, _)| l == "SEVERE")
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    } else {
        skip_or_fail(
            "fleet dashboard",
            "chromium and chromium-driver are not installed",
        );
    }
    // A site collector that stops: its summary ages, the site goes stale and leaves the
    // fleet PUE.
    drop(cb);
    let stale = wait_for("site b stale", Duration::from_secs(30), || {
        let v = get_json(fleet.http, "/api/v1/fleet")?;
        (v["stale_sites"] == serde_json::json!(["b"])).then_some(v)
    });
    assert!(
        (stale["pue"]["1m"]["value"].as_f64().expect("value") - 1.2).abs() < 1e-6,
        "{stale}"
    );
    assert_eq!(
        http_get(ca.http, "/api/v1/fleet").map(|r| r.0),
        Some(404),
        "a site collector is not a fleet collector"
    );
    drop(agents);
}
