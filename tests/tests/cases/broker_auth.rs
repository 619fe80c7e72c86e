//! The embedded broker with password authentication: an agent with its credentials gets
//! in, one with a wrong password or none does not, and the collector's own publishers
//! (site summaries) still reach the broker through their internal login.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use std::time::Duration;

const SITE: &str = "auth";

#[test]
fn only_agents_with_credentials_get_in() {
    let dir = TempDir::new("broker-auth");
    let users = dir.write(
        "users",
        "# dcwatt broker users\nmeter-1:s3cret-m\nhost-1:s3cret-h\n",
    );
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[
            ("DCWATT__BROKER__USERS_FILE", users.display().to_string()),
            ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into()),
            ("DCWATT__SUMMARY__INTERVAL_SECS", "1".into()),
        ],
    );
    let with_login = |node: &str, role: &str, point: &str, user: Option<(&str, &str)>| {
        let p = Profile {
            base_w: if role == "meter" { 900.0 } else { 600.0 },
            amplitude_w: 0.0,
            period_secs: 60.0,
        };
        let mut toml = agent_toml(SITE, node, role, c.mqtt, &p, point);
        if let Some((u, pw)) = user {
            let file = dir.write(&format!("{node}-pw"), pw);
            toml = toml.replace(
                "[mqtt]\n",
                &format!(
                    "[mqtt]\nusername = \"{u}\"\npassword_file = \"{}\"\n",
                    file.display()
                ),
            );
        }
        start_agent(&dir, node, &toml)
    };
    let _m = with_login(
        "meter-1",
        "meter",
        "facility_input",
        Some(("meter-1", "s3cret-m")),
    );
    let _h = with_login("host-1", "host", "it_input", Some(("host-1", "s3cret-h")));
    let _wrong = with_login("host-2", "host", "it_input", Some(("host-1", "guess")));
    let _anonymous = with_login("host-3", "host", "it_input", None);

    let v = wait_for(
        "the authenticated agents' data",
        Duration::from_secs(30),
        || {
            let v = c.site(SITE)?;
            (v["power"]["it_w"].as_f64()? == 600.0 && v["power"]["facility_w"].as_f64()? == 900.0)
                .then_some(v)
        },
    );
    assert_eq!(v["power"]["ratio"], 1.5);
    std::thread::sleep(Duration::from_secs(3));
    let nodes = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes")).unwrap();
    let mut names: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        vec!["host-1", "meter-1"],
        "nothing from the refused agents"
    );
    let refused = std::fs::read_to_string(dir.0.join("host-2.log")).unwrap_or_default();
    assert!(refused.contains("broker connection failed"), "{refused}");
    assert_eq!(c.site(SITE).unwrap()["power"]["it_w"], 600.0);
    // The collector's own publishers logged in with the internal user.
    let log = c.proc.log();
    let refused_line = log
        .lines()
        .find(|l| l.contains("embedded broker refused a login"))
        .unwrap_or_else(|| panic!("the refused login is not logged:\n{log}"));
    for want in ["dcwatt-agent-", "host-2", "user=host-1", "wrong password"] {
        assert!(refused_line.contains(want), "{want} not in: {refused_line}");
    }
    let repeats = log
        .lines()
        .filter(|l| l.contains("embedded broker refused a login"))
        .count();
    assert!(
        repeats <= 2,
        "refusals are rate-limited, not one line per retry:\n{log}"
    );
    assert!(!log.contains("MQTT connection failed"), "{log}");
}
