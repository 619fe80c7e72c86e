//! The ipmi source with the real ipmitool against a simulated BMC (pyghmi answering DCMI
//! Get Power Reading over RMCP+): the reading reaches the collector as the host's
//! whole-system power, follows the BMC, and a wrong password is refused by the BMC.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use std::process::Command;
use std::time::Duration;

const SITE: &str = "bmc";

fn ipmi_agent(dir: &TempDir, node: &str, mqtt: u16, bmc: u16, password: &str) -> Proc {
    let pw = dir.write(&format!("{node}-pw"), &format!("{password}\n"));
    start_agent(
        dir,
        node,
        &format!(
            "site = \"{SITE}\"\nnode = \"{node}\"\ninterval_secs = 1\n[mqtt]\nport = {mqtt}\n\
             [[sources]]\ntype = \"ipmi\"\nhost = \"127.0.0.1\"\nport = {bmc}\nusername = \"admin\"\n\
             password_file = \"{}\"\ncipher_suite = 3\ntimeout_secs = 5\n",
            pw.display()
        ),
    )
}

#[test]
fn ipmitool_against_a_simulated_bmc_feeds_it_power() {
    let dir = TempDir::new("ipmi");
    if find_program("ipmitool").is_none() {
        return skip_or_fail("ipmi end to end", "ipmitool is not installed");
    }
    let Some(py) = python_with("pyghmi") else {
        return skip_or_fail("ipmi end to end", "pyghmi is not installed in .venv");
    };
    let bmc_port = free_udp_port();
    let state = dir.write("watts", "350");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/dcmi_bmc.py");
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .arg(bmc_port.to_string())
        .arg("350")
        .arg(&state);
    let bmc = Proc::spawn("bmc", cmd, dir.0.join("bmc.log"));
    wait_for("the BMC simulator", Duration::from_secs(15), || {
        bmc.log().contains("ready").then_some(())
    });

    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let fac = Profile {
        base_w: 600.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let _meter = start_agent(
        &dir,
        "meter",
        &agent_toml(SITE, "meter", "meter", c.mqtt, &fac, "facility_input"),
    );
    let _host = ipmi_agent(&dir, "server-1", c.mqtt, bmc_port, "password");
    let _intruder = ipmi_agent(&dir, "server-2", c.mqtt, bmc_port, "wrong");

    let it = |want: f64| {
        wait_for(
            &format!("IT power {want} W"),
            Duration::from_secs(30),
            || {
                let v = c.site(SITE)?;
                // Both sides present: the BMC's reading and the facility meter's.
                let both = v["power"]["ratio"].is_number();
                (v["power"]["it_w"].as_f64()? == want && both).then_some(v)
            },
        )
    };
    let v = it(350.0);
    assert_eq!(v["power"]["category"], 3);
    assert!((v["power"]["ratio"].as_f64().unwrap() - 600.0 / 350.0).abs() < 1e-9);
    std::fs::write(&state, "420").unwrap();
    it(420.0);

    // The agent with the wrong password gets nothing from the BMC and says why.
    let log = std::fs::read_to_string(dir.0.join("server-2.log")).unwrap_or_default();
    assert!(log.contains("RMCP+") || log.contains("session"), "{log}");
    let nodes = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes")).unwrap();
    let readings_from_2 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "server-2")
        .and_then(|n| n["last_reading_ms"].as_i64());
    assert_eq!(
        readings_from_2, None,
        "no reading from a BMC that refused the session"
    );
}
