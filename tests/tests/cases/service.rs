//! The binaries as system services: the systemd notify protocol (READY, WATCHDOG,
//! RELOADING, STOPPING) spoken to a real datagram socket the way systemd listens, SIGHUP
//! reloads, one state directory, default config paths, and logs for journald and log
//! shippers. systemd itself is not PID 1 here; the socket is the whole of its side of
//! `Type=notify`.

use dcwatt_e2e::*;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// The service manager's end of `NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    fn bind(dir: &TempDir) -> (Notify, std::path::PathBuf) {
        let path = dir.0.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        (
            Notify {
                sock,
                seen: Vec::new(),
            },
            path,
        )
    }

    /// Starts `cmd` as systemd would for `Type=notify` with `WatchdogSec=1`, and waits
    /// for its READY=1.
    fn start_ready(
        &mut self,
        sock: &std::path::Path,
        name: &str,
        mut cmd: Command,
        log: std::path::PathBuf,
    ) -> Proc {
        cmd.env("NOTIFY_SOCKET", sock)
            .env("WATCHDOG_USEC", "1000000");
        let proc = Proc::spawn(name, cmd, log);
        assert!(
            self.expect("READY=1", Duration::from_secs(20)),
            "{name}: no READY=1: {:?}\n{}",
            self.seen,
            proc.log()
        );
        proc
    }

    /// Waits for a datagram with the line `line`, keeping all lines seen.
    fn expect(&mut self, line: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let hit = msg.lines().any(|l| l == line);
                self.seen.extend(msg.lines().map(str::to_owned));
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

/// Runs `check-config` of `exe` on `cfg`, which must be refused (exit 64); its stderr.
fn refused(exe: &str, cfg: &std::path::Path) -> String {
    let out = Command::new(bin(exe))
        .arg("--config")
        .arg(cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{exe} accepted {}",
        cfg.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn collector_toml(http: u16, mqtt: u16, budget_kw: f64, max_nodes: u32) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[broker]\nlisten = \"127.0.0.1:{mqtt}\"\n\
         [intake]\nmax_nodes = {max_nodes}\n[state]\ninterval_secs = 1\n\
         [[racks]]\nsite = \"svc\"\nrack = \"r1\"\nbudget_kw = {budget_kw}\n"
    )
}

#[test]
fn collector_speaks_sd_notify_reloads_on_sighup_and_keeps_state_in_its_state_dir() {
    let dir = TempDir::new("svc-collector");
    let (http, mqtt) = (free_port(), free_port());
    let cfg = dir.write("collector.toml", &collector_toml(http, mqtt, 5.0, 1000));
    let cwd = dir.0.join("cwd");
    let state = dir.0.join("state/collector");
    std::fs::create_dir_all(&cwd).unwrap();
    let (mut notify, sock) = Notify::bind(&dir);
    let mut cmd = Command::new(bin("dcwatt-collector"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .current_dir(&cwd);
    let mut proc = notify.start_ready(&sock, "collector", cmd, dir.0.join("collector.log"));
    // READY means serving: the API answers at once.
    assert!(
        get_json(http, "/healthz").is_some(),
        "READY before HTTP serves"
    );
    for _ in 0..2 {
        assert!(
            notify.expect("WATCHDOG=1", Duration::from_secs(3)),
            "watchdog not pinged at half of WATCHDOG_USEC: {:?}",
            notify.seen
        );
    }

    let agent = dir.write(
        "agent.toml",
        &format!(
            "site = \"svc\"\nnode = \"h1\"\nrack = \"r1\"\ninterval_secs = 1\n[mqtt]\nport = {mqtt}\n\
             [[sources]]\ntype = \"sim\"\npoint = \"it_input\"\nbase_w = 1000.0\n"
        ),
    );
    let mut acmd = Command::new(bin("dcwatt-agent"));
    acmd.arg("--config")
        .arg(&agent)
        .arg("--state-dir")
        .arg(dir.0.join("state/agent"))
        .current_dir(&cwd);
    let _agent = Proc::spawn("agent", acmd, dir.0.join("agent.log"));
    let budget = |port: u16| -> Option<f64> {
        let v = get_json(port, "/api/v1/sites/svc/racks")?;
        v["racks"].as_array()?.iter().find(|r| r["rack"] == "r1")?["budget_w"].as_f64()
    };
    // budget_w is the derated budget: 5 kW × the default derating 0.8.
    assert_eq!(
        wait_for("rack r1", Duration::from_secs(20), || budget(http)),
        4000.0
    );

    // A new rack budget applies live; a changed intake section needs a restart and says so.
    std::fs::write(&cfg, collector_toml(http, mqtt, 7.5, 2000)).unwrap();
    kill(proc.pid(), "HUP");
    assert!(
        notify.expect("RELOADING=1", Duration::from_secs(5)),
        "{:?}",
        notify.seen
    );
    assert!(
        notify.expect("READY=1", Duration::from_secs(5)),
        "{:?}",
        notify.seen
    );
    // READY=1 comes once the new configuration is applied, not before.
    assert_eq!(budget(http), Some(6000.0), "7.5 kW × 0.8");
    assert!(
        proc.running(),
        "SIGHUP killed the collector:\n{}",
        proc.log()
    );
    let log = wait_for("reload logged", Duration::from_secs(5), || {
        let l = proc.log();
        l.contains("restart the collector to apply").then_some(l)
    });
    assert!(log.contains("configuration reloaded"), "{log}");
    let restart_line = log
        .lines()
        .find(|l| l.contains("restart the collector to apply"))
        .unwrap_or_default();
    assert!(restart_line.contains("intake"), "{restart_line}");
    assert!(!restart_line.contains("racks"), "{restart_line}");

    // A configuration with a problem is refused whole; the running one stays.
    std::fs::write(&cfg, collector_toml(http, mqtt, -1.0, 2000)).unwrap();
    kill(proc.pid(), "HUP");
    wait_for("refusal logged", Duration::from_secs(5), || {
        proc.log()
            .contains("configuration not reloaded")
            .then_some(())
    });
    assert_eq!(budget(http), Some(6000.0));

    // SIGTERM: STOPPING=1, a final state save, exit 0.
    let status = proc.terminate(Duration::from_secs(20)).expect("stopped");
    assert!(status.success(), "{status:?}\n{}", proc.log());
    assert!(
        notify.expect("STOPPING=1", Duration::from_secs(2)),
        "{:?}",
        notify.seen
    );
    for f in ["dcwatt-state.sqlite", "dcwatt-history.sqlite"] {
        assert!(state.join(f).exists(), "{f} not in the state dir");
    }
    assert!(
        dir.0.join("state/agent/dcwatt-spool/svc/h1").is_dir(),
        "agent spool not in its state dir"
    );
    let in_cwd: Vec<_> = std::fs::read_dir(&cwd).unwrap().flatten().collect();
    assert!(
        in_cwd.is_empty(),
        "written to the working directory: {in_cwd:?}"
    );
}

#[test]
fn agent_is_ready_after_its_first_batch_and_survives_sighup() {
    let dir = TempDir::new("svc-agent");
    let (mut notify, sock) = Notify::bind(&dir);
    let cfg = dir.write(
        "agent.toml",
        "site = \"s\"\nnode = \"n\"\ninterval_secs = 1\n[mqtt]\nport = 1\n[[sources]]\ntype = \"sysinfo\"\n",
    );
    let mut cmd = Command::new(bin("dcwatt-agent"));
    cmd.arg("--config").arg(&cfg).current_dir(&dir.0);
    let mut proc = notify.start_ready(&sock, "agent", cmd, dir.0.join("agent.log"));
    assert!(
        notify.expect("WATCHDOG=1", Duration::from_secs(3)),
        "{:?}",
        notify.seen
    );
    std::fs::write(
        &cfg,
        "site = \"s\"\nnode = \"n\"\ninterval_secs = 1\n[log]\nlevel = \"debug\"\n[mqtt]\nport = 1\n[[sources]]\ntype = \"sysinfo\"\n",
    )
    .unwrap();
    kill(proc.pid(), "HUP");
    wait_for("reload logged", Duration::from_secs(5), || {
        proc.log().contains("log level applied").then_some(())
    });
    assert!(proc.running(), "SIGHUP killed the agent:\n{}", proc.log());
    let status = proc.terminate(Duration::from_secs(10)).expect("stopped");
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_agent_without_a_site_refuses_to_start() {
    let dir = TempDir::new("svc-nosite");
    let cfg = dir.write("a.toml", "node = \"n\"\n[[sources]]\ntype = \"sysinfo\"\n");
    for args in [vec!["check-config"], vec![]] {
        let out = Command::new(bin("dcwatt-agent"))
            .arg("--config")
            .arg(&cfg)
            .args(&args)
            .current_dir(&dir.0)
            .env_remove("DCWATT__SITE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("site: not set") && err.contains("DCWATT__SITE"),
            "{err}"
        );
    }
}

#[test]
fn a_state_dir_that_cannot_be_written_is_a_configuration_error() {
    let dir = TempDir::new("svc-statedir");
    let file = dir.write("not-a-dir", "x");
    // /proc refuses new entries even to root, so this holds whoever runs the tests.
    for bad in [file.clone(), std::path::PathBuf::from("/proc/dcwatt-state")] {
        for exe in ["dcwatt-collector", "dcwatt-agent"] {
            let out = Command::new(bin(exe))
                .arg("--state-dir")
                .arg(&bad)
                .arg("check-config")
                .current_dir(&dir.0)
                .env("DCWATT__SITE", "s")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(64), "{exe} {bad:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("state_dir:") && err.contains(&bad.display().to_string()),
                "{exe}: {err}"
            );
        }
    }
    // Missing but creatable: check-config accepts it and creates nothing; a start creates it.
    let fresh = dir.0.join("a/b/c");
    let out = Command::new(bin("dcwatt-collector"))
        .arg("--state-dir")
        .arg(&fresh)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fresh.exists(), "check-config created the state dir");
}

#[test]
fn check_config_names_every_missing_file_and_every_bad_key() {
    let dir = TempDir::new("svc-check");
    let cfg = dir.write(
        "c.toml",
        "[http]\ntoken_file = \"/nonexistent/token\"\n[engine]\nmin_coverage = \"lots\"\ngap_factor = 0.5\n\
         [broker.tls]\ncert_file = \"/nonexistent/server.crt\"\nkey_file = \"/nonexistent/server.key\"\n\
         [[racks]]\nsite = \"a\"\nrack = \"r1\"\nbudget_kw = \"x\"\n",
    );
    let err = refused("dcwatt-collector", &cfg);
    for want in [
        "http.token_file",
        "/nonexistent/token",
        "broker.tls.cert_file",
        "broker.tls.key_file",
        "engine.min_coverage",
        "engine.gap_factor",
        "racks[0].budget_kw",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    for rust in ["f64", "u64", "floating point", "struct "] {
        assert!(!err.contains(rust), "Rust type words ({rust}) in:\n{err}");
    }
    let agent = dir.write(
        "a.toml",
        "site = \"s\"\n[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n\
         [mqtt.tls]\nca_file = \"/nonexistent/ca.crt\"\n",
    );
    let err = refused("dcwatt-agent", &agent);
    for want in [
        "mqtt.password_file",
        "mqtt.tls.ca_file",
        "/nonexistent/ca.crt",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
}

#[test]
fn logs_are_json_objects_with_typed_fields_or_plain_text_without_colour() {
    let dir = TempDir::new("svc-logs");
    let http = free_port();
    let mqtt = free_port();
    let mut cmd = Command::new(bin("dcwatt-collector"));
    cmd.current_dir(&dir.0)
        .env("DCWATT__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("DCWATT__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("DCWATT__LOG__FORMAT", "json")
        .env_remove("RUST_LOG");
    let mut proc = Proc::spawn("collector", cmd, dir.0.join("json.log"));
    wait_for("collector ready", Duration::from_secs(20), || {
        proc.log().contains("collector ready").then_some(())
    });
    proc.terminate(Duration::from_secs(10));
    let log = proc.log();
    let mut ready = None;
    let mut typed = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "embedded broker listening" {
            assert!(v["log_mib"].is_u64(), "numbers stay numbers: {line}");
            assert!(v["tls"].is_boolean(), "booleans stay booleans: {line}");
            typed = true;
        }
        if v["message"] == "collector ready" {
            ready = Some(v);
        }
    }
    assert!(typed, "no broker line in:\n{log}");
    let ready = ready.unwrap_or_else(|| panic!("no ready line in:\n{log}"));
    assert_eq!(ready["http"], format!("127.0.0.1:{http}"), "{ready}");
    assert!(
        !log.contains("Some("),
        "Rust Debug text in the JSON logs:\n{log}"
    );

    // Text to a file (not a terminal): no ANSI colour codes.
    let mut cmd = Command::new(bin("dcwatt-collector"));
    cmd.current_dir(&dir.0)
        .env("DCWATT__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("DCWATT__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env_remove("RUST_LOG");
    let mut proc = Proc::spawn("collector", cmd, dir.0.join("text.log"));
    wait_for("collector ready", Duration::from_secs(20), || {
        proc.log().contains("collector ready").then_some(())
    });
    proc.terminate(Duration::from_secs(10));
    assert!(
        !proc.log().contains('\u{1b}'),
        "ANSI escapes:\n{}",
        proc.log()
    );
}
