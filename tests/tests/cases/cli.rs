//! The binaries' command lines: config errors, --once, probe, shipped configs.

use dcwatt_e2e::*;
use std::process::Command;

#[test]
fn bad_config_is_reported_whole_and_exits_64_before_binding() {
    let dir = TempDir::new("cli-bad");
    let port = free_port();
    let cfg = dir.write(
        "bad.toml",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[engine]\nmin_coverage = 2.0\n[intake]\nmax_host_power_w = -5\nunknown = 1\n"),
    );
    let out = Command::new(bin("dcwatt-collector"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in ["engine.min_coverage", "intake"] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port was left bound"
    );

    let out = Command::new(bin("dcwatt-agent"))
        .env("DCWATT__INTERVAL_SECS", "0")
        .env("DCWATT__SITE", "no spaces allowed")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interval_secs") && err.contains("site"),
        "{err}"
    );
}

#[test]
fn agent_once_prints_a_valid_batch_without_a_broker() {
    let dir = TempDir::new("cli-once");
    let cfg = dir.write(
        "a.toml",
        "site = \"s1\"\nnode = \"n1\"\n[mqtt]\nport = 1\n[[sources]]\ntype = \"sysinfo\"\n[[sources]]\ntype = \"sim\"\npoint = \"it_input\"\nbase_w = 200.0\n",
    );
    let out = Command::new(bin("dcwatt-agent"))
        .arg("--config")
        .arg(&cfg)
        .arg("--once")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: dcwatt_common::protocol::ReadingsMessage =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (batch.v, batch.site.as_str(), batch.node.as_str(), batch.seq),
        (1, "s1", "n1", 1)
    );
    let metrics: Vec<&str> = batch.readings.iter().map(|r| r.metric.as_str()).collect();
    for m in ["cpu_util", "mem_used_bytes", "power_w", "energy_j"] {
        assert!(metrics.contains(&m), "{m} missing: {metrics:?}");
    }
}

#[test]
fn probe_lists_sources() {
    let out = Command::new(bin("dcwatt-agent"))
        .arg("probe")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("sysinfo") && l.contains("available")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("sim")), "{text}");
}

#[test]
fn every_shipped_config_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let exe = if name.contains("collector") || name.contains("alert") {
                "dcwatt-collector"
            } else {
                "dcwatt-agent"
            };
            // The examples name secrets under /etc/dcwatt: check-config must name each one
            // that is missing, and pass once they exist (here under a scratch directory).
            let text = std::fs::read_to_string(&p).unwrap();
            let named: Vec<String> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once("= \"/etc/dcwatt/"))
                .map(|(_, rest)| rest.trim_end_matches('"').to_owned())
                .collect();
            let check = |file: &std::path::Path| {
                let mut cmd = Command::new(bin(exe));
                cmd.arg("--config").arg(file).arg("check-config");
                if exe == "dcwatt-agent" {
                    // The shipped agent.toml leaves the site for the operator to set.
                    cmd.env("DCWATT__SITE", "shipped-check");
                }
                cmd.output().unwrap()
            };
            if !named.is_empty() {
                let out = check(&p);
                assert_eq!(out.status.code(), Some(64), "{}", p.display());
                let err = String::from_utf8_lossy(&out.stderr);
                for f in &named {
                    assert!(
                        err.contains(f.as_str()),
                        "{}: {f} not named in\n{err}",
                        p.display()
                    );
                }
            }
            let secrets = TempDir::new("cli-secrets");
            for f in &named {
                secrets.write(f, "secret\n");
            }
            let moved = text.replace("\"/etc/dcwatt/", &format!("\"{}/", secrets.0.display()));
            let copy = secrets.write(&name, &moved);
            let out = check(&copy);
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "no configs found");
}

#[test]
fn probe_tells_the_truth_about_this_host() {
    let out = Command::new(bin("dcwatt-agent"))
        .args(["probe", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe exits 0 when it could run at all"
    );
    let probes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let get = |s: &str| {
        probes
            .iter()
            .find(|p| p["source"] == s)
            .unwrap_or_else(|| panic!("{s} not probed: {probes:#?}"))
    };
    for p in &probes {
        assert!(
            !p["detail"].as_str().unwrap_or("").is_empty(),
            "every source says why: {p}"
        );
    }
    assert_eq!(get("sysinfo")["available"], true);
    if !std::path::Path::new("/sys/class/powercap").exists() {
        let rapl = get("rapl");
        assert_eq!(rapl["available"], false);
        assert!(
            rapl["detail"].as_str().unwrap().contains("powercap"),
            "{rapl}"
        );
    }
    if !std::path::Path::new("/dev/ipmi0").exists() {
        let ipmi = get("ipmi");
        assert_eq!(ipmi["available"], false);
        assert!(
            ipmi["detail"].as_str().unwrap().contains("/dev/ipmi0"),
            "{ipmi}"
        );
    }
    let nvml = get("nvml");
    if nvml["available"] == false {
        let why = nvml["detail"].as_str().unwrap();
        assert!(why.contains("NVIDIA") || why.contains("NVML"), "{why}");
    }
    assert_eq!(get("redfish")["available"], false, "not configured");
}
