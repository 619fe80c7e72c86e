//! Security of the collector's HTTP side: with a token configured, the API and /metrics
//! answer only to `Authorization: Bearer <token>`; the dashboard page and /healthz stay
//! open; the token never reaches the log.

use dcwatt_e2e::webdriver::http_request_with;
use dcwatt_e2e::*;
use std::time::Duration;

const TOKEN: &str = "an-api-token-of-some-length-42";

#[test]
fn the_api_needs_the_bearer_token_when_one_is_set() {
    let dir = TempDir::new("api-token");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__HTTP__TOKEN", TOKEN.to_owned())],
    );
    for path in [
        "/api/v1/sites",
        "/metrics",
        "/api/v1/alerts",
        "/api/v1/sites/x/energy",
    ] {
        let (status, body) = http_get(c.http, path).expect("an answer");
        assert_eq!(status, 401, "{path} without a token: {body}");
        let wrong = http_request_with(c.http, "GET", path, &[("Authorization", "Bearer nope")])
            .expect("an answer");
        assert_eq!(wrong.0, 401, "{path} with a wrong token");
    }
    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        http_request_with(c.http, "GET", "/api/v1/sites", &[("Authorization", &auth)])
            .expect("an answer");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) =
        http_request_with(c.http, "GET", "/metrics", &[("Authorization", &auth)]).expect("answer");
    assert_eq!(status, 200);
    assert!(metrics.contains("dcwatt_readings_accepted_total"));
    for open in ["/healthz", "/", "/assets/app.js"] {
        assert_eq!(http_get(c.http, open).map(|r| r.0), Some(200), "{open}");
    }
    assert!(!c.proc.log().contains(TOKEN), "the token is in the log");
}

fn sh(dir: &TempDir, script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&dir.0)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
fn certificates(dir: &TempDir) {
    sh(
        dir,
        "set -e
         openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=dcwatt-test-ca -keyout ca.key -out ca.crt 2>/dev/null
         openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=other-ca -keyout other.key -out other-ca.crt 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=critical,CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=serverAuth\\n' > server.ext
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile server.ext -out server.crt 2>/dev/null",
    );
}

fn agent_with(
    site: &str,
    node: &str,
    port: u16,
    user: &str,
    password: &str,
    ca: &std::path::Path,
) -> String {
    let p = dcwatt_e2e::sim::Profile {
        base_w: 500.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    dcwatt_e2e::sim::agent_toml(site, node, "host", port, &p, "it_input").replace(
        &format!("port = {port}\n"),
        &format!(
            "port = {port}\nusername = \"{user}\"\npassword = \"{password}\"\n[mqtt.tls]\nca_file = \"{}\"\n",
            ca.display()
        ),
    )
}

/// Mosquitto with TLS, a password per agent and the ACL shipped in configs/mosquitto: an
/// agent with the wrong CA, one with a bad password, and one publishing on another node's
/// topic are all refused — by the broker, and by the collector's own topic check.
#[test]
fn mosquitto_with_tls_passwords_and_the_shipped_acl_refuses_intruders() {
    let dir = TempDir::new("mosquitto-acl");
    let (Some(mosquitto), Some(passwd), Some(publish)) = (
        find_program("mosquitto"),
        find_program("mosquitto_passwd"),
        find_program("mosquitto_pub"),
    ) else {
        return skip_or_fail(
            "mosquitto ACL",
            "mosquitto and mosquitto-clients are not installed",
        );
    };
    certificates(&dir);
    let pw = |user: &str, pass: &str, create: bool| {
        let st = std::process::Command::new(&passwd)
            .args(if create { vec!["-c", "-b"] } else { vec!["-b"] })
            .arg(dir.0.join("passwd"))
            .args([user, pass])
            .status()
            .expect("mosquitto_passwd");
        assert!(st.success());
    };
    pw("dcwatt-collector", "collector-pw", true);
    for n in ["h1", "h2", "h3"] {
        pw(n, &format!("{n}-pw"), false);
    }
    let acl = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/mosquitto/dcwatt.acl"
    ))
    .expect("acl");
    let acl_path = dir.write("dcwatt.acl", &acl);
    let port = free_port();
    let d = dir.0.display().to_string();
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/mosquitto/dcwatt.conf"
    ))
    .expect("conf")
    .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
    .replace("/etc/mosquitto/certs/", &format!("{d}/"))
    .replace("/etc/mosquitto/dcwatt.passwd", &format!("{d}/passwd"))
    .replace("/etc/mosquitto/dcwatt.acl", &acl_path.display().to_string())
    .replace("/var/lib/mosquitto/", &format!("{d}/"))
        + "user root\nlog_dest stderr\nlog_type all\n";
    let conf_path = dir.write("mosquitto.conf", &conf);
    let mut cmd = std::process::Command::new(mosquitto);
    cmd.arg("-c").arg(&conf_path);
    let mut broker = Proc::spawn("mosquitto", cmd, dir.0.join("mosquitto.log"));
    wait_for("mosquitto to listen", Duration::from_secs(10), || {
        assert!(broker.running(), "mosquitto exited:\n{}", broker.log());
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let ca = dir.0.join("ca.crt");
    let c = Collector::start(
        &dir,
        BrokerKind::External(port),
        &[
            ("DCWATT__MQTT__USERNAME", "dcwatt-collector".to_owned()),
            ("DCWATT__MQTT__PASSWORD", "collector-pw".to_owned()),
            ("DCWATT__MQTT__TLS__CA_FILE", ca.display().to_string()),
            ("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".to_owned()),
        ],
    );
    const SITE: &str = "sec";
    let good = start_agent(
        &dir,
        "h1",
        &agent_with(SITE, "h1", port, "h1", "h1-pw", &ca),
    );
    let wrong_ca = start_agent(
        &dir,
        "h2",
        &agent_with(SITE, "h2", port, "h2", "h2-pw", &dir.0.join("other-ca.crt")),
    );
    let bad_pw = start_agent(
        &dir,
        "h3",
        &agent_with(SITE, "h3", port, "h3", "not-h3-pw", &ca),
    );
    wait_for("h1's readings through TLS", Duration::from_secs(30), || {
        let n = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes"))?;
        n["nodes"]
            .as_array()?
            .iter()
            .any(|x| x["node"] == "h1" && x["seq"].as_u64().unwrap_or(0) > 2)
            .then_some(())
    });
    // h1's password used to publish as h4 (denied by the ACL), and as itself with a payload
    // naming h4 (refused by the collector).
    let now = dcwatt_common::now_ms();
    let payload = |node: &str| {
        format!(
            r#"{{"v":1,"site":"{SITE}","node":"{node}","seq":1,"sent_ms":{now},"readings":[{{"metric":"power_w","value":9999,"ts_ms":{now},"point":"it_input"}}]}}"#
        )
    };
    for (topic, body) in [
        (format!("dcwatt/v1/{SITE}/h4/readings"), payload("h4")),
        (format!("dcwatt/v1/{SITE}/h1/readings"), payload("h4")),
    ] {
        let st = std::process::Command::new(&publish)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
            .arg(&ca)
            .args([
                "-u", "h1", "-P", "h1-pw", "-q", "1", "-t", &topic, "-m", &body,
            ])
            .status()
            .expect("mosquitto_pub");
        assert!(st.success());
    }
    let m = wait_for(
        "the collector's topic check",
        Duration::from_secs(20),
        || {
            let m = c.metrics();
            (metric(
                &m,
                "dcwatt_messages_rejected_total{reason=\"topic_mismatch\"}",
            ) == Some(1.0))
            .then_some(m)
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let nodes = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes")).expect("nodes");
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|x| x["node"].as_str())
        .collect();
    assert_eq!(names, vec!["h1"], "only the honest agent got in\n{m}");
    let log = broker.log();
    assert!(
        log.contains("Denied PUBLISH") && log.contains(&format!("'dcwatt/v1/{SITE}/h4/readings'")),
        "the ACL denied h1 writing as h4:\n{log}"
    );
    assert!(
        log.contains("not authorised"),
        "the bad password was refused:\n{log}"
    );
    let h3 = bad_pw.log();
    assert!(h3.contains("NotAuthorized"), "h3 was told so:\n{h3}");
    assert!(
        !h3.contains("not-h3-pw"),
        "the password is in the agent's log"
    );
    let h2 = wrong_ca.log();
    assert!(
        h2.to_lowercase().contains("certificate") || h2.contains("UnknownIssuer"),
        "h2 refused the broker's certificate:\n{h2}"
    );
    drop((good, wrong_ca, bad_pw));
}

/// The embedded broker with TLS and passwords: the right CA and password get in; the
/// wrong CA and a bad password do not; a plaintext client is not served.
#[test]
fn the_embedded_broker_speaks_tls_and_checks_passwords() {
    let dir = TempDir::new("embedded-tls");
    if find_program("openssl").is_none() {
        return skip_or_fail("embedded TLS", "openssl is not installed");
    }
    certificates(&dir);
    let users = dir.write("users", "h1:h1-pw\nh2:h2-pw\nh3:h3-pw\n");
    let config = dir.write(
        "collector.toml",
        &format!(
            "[broker]\nusers_file = \"{}\"\n[broker.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            users.display(),
            dir.0.join("server.crt").display(),
            dir.0.join("server.key").display()
        ),
    );
    let c = Collector::start_with_config(
        &dir,
        BrokerKind::Embedded,
        &config,
        None,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".to_owned())],
    );
    const SITE: &str = "tls";
    let ca = dir.0.join("ca.crt");
    let port = c.mqtt;
    let _good = start_agent(
        &dir,
        "h1",
        &agent_with(SITE, "h1", port, "h1", "h1-pw", &ca),
    );
    let wrong_ca = start_agent(
        &dir,
        "h2",
        &agent_with(SITE, "h2", port, "h2", "h2-pw", &dir.0.join("other-ca.crt")),
    );
    let bad_pw = start_agent(&dir, "h3", &agent_with(SITE, "h3", port, "h3", "nope", &ca));
    wait_for("h1's readings over TLS", Duration::from_secs(30), || {
        let n = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes"))?;
        n["nodes"]
            .as_array()?
            .iter()
            .any(|x| x["node"] == "h1" && x["seq"].as_u64().unwrap_or(0) > 2)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let nodes = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes")).expect("nodes");
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|x| x["node"].as_str())
        .collect();
    assert_eq!(names, vec!["h1"]);
    let h2 = wrong_ca.log();
    assert!(
        h2.to_lowercase().contains("certificate") || h2.contains("UnknownIssuer"),
        "{h2}"
    );
    let h3 = bad_pw.log();
    assert!(
        h3.contains("NotAuthorized") || h3.contains("connection failed"),
        "{h3}"
    );
    // A plaintext client is not served on the TLS port.
    let plain = std::panic::catch_unwind(|| {
        publish_all(
            port,
            std::iter::once(("dcwatt/v1/tls/x/readings".to_owned(), b"{}".to_vec())),
            Duration::from_secs(3),
        )
    });
    assert!(
        plain.is_err(),
        "a plaintext client got through the TLS listener"
    );
    // Readings arrived through the TLS listener and were counted.
    let m = c.metrics();
    assert_eq!(
        metric(&m, "dcwatt_messages_received_total{kind=\"readings\"}").map(|v| v > 2.0),
        Some(true),
        "{m}"
    );
    // The refused login is counted, not only logged.
    assert!(
        metric(&m, "dcwatt_broker_logins_refused_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(
        c.proc
            .log()
            .contains("the embedded broker has no per-topic ACL"),
        "the startup says the embedded broker is for trusted networks"
    );
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn idle_and_half_sent_connections_cannot_take_the_api() {
    use std::io::{Read, Write};
    let dir = TempDir::new("api-flood");
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[
            ("DCWATT__HTTP__MAX_CONNECTIONS", "100".to_owned()),
            ("DCWATT__HTTP__HEADER_TIMEOUT_SECS", "2".to_owned()),
            ("DCWATT__STATE__INTERVAL_SECS", "1".to_owned()),
        ],
    );
    let fds_before = open_fds(c.proc.pid());
    // 2,000 connections without a token: half say nothing, half stop inside the headers.
    let mut held = Vec::new();
    for i in 0..2_000 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", c.http)) else {
            continue;
        };
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /api/v1/sites HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        }
        held.push(s);
    }
    assert!(held.len() >= 1_900, "{} connections opened", held.len());
    std::thread::sleep(Duration::from_millis(500));
    let fds_during = open_fds(c.proc.pid());
    assert!(
        fds_during <= fds_before + 120,
        "{fds_during} descriptors open (from {fds_before}): the connections took them"
    );
    // Past the header timeout the held ones are closed by the collector, and it answers.
    let (status, _) = wait_for("/healthz again", Duration::from_secs(10), || {
        http_get(c.http, "/healthz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    let mut closed = 0;
    for s in &mut held {
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 256];
        // A refused one read its 503 and then the end; a timed-out one reads the end.
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                // Reset: closed with the half-sent request unread.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    let text = c.metrics();
    let refused = metric(&text, "dcwatt_http_connections_refused_total").unwrap_or(0.0);
    eprintln!(
        "{} held, {closed} closed by the collector, {refused} refused; descriptors {fds_before} -> {fds_during}",
        held.len()
    );
    // Those beyond the listen backlog never reached the collector; those it took were
    // refused at once or closed at the header timeout.
    assert!(refused >= 1_000.0, "{refused} refused");
    assert!(
        closed >= 1_000,
        "{closed} closed: the served ones time out, the refused ones are closed at once"
    );
    assert_eq!(metric(&text, "dcwatt_state_save_errors_total"), Some(0.0));
    assert!(metric(&text, "dcwatt_state_saves_total").unwrap_or(0.0) >= 1.0);
}

#[test]
fn connections_never_take_the_descriptors_the_state_needs() {
    let Some(prlimit) = find_program("prlimit") else {
        return skip_or_fail(
            "connections_never_take_the_descriptors_the_state_needs",
            "prlimit (util-linux) is not installed",
        );
    };
    let dir = TempDir::new("fd-limit");
    let (http, mqtt) = (free_port(), free_port());
    // A shell's limit far below the defaults' 20,000 + 512 connections.
    let mut cmd = std::process::Command::new(prlimit);
    cmd.arg("--nofile=400:400")
        .arg(bin("dcwatt-collector"))
        .current_dir(&dir.0)
        .env("DCWATT__HTTP__LISTEN", format!("127.0.0.1:{http}"))
        .env("DCWATT__BROKER__LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("DCWATT__HTTP__HEADER_TIMEOUT_SECS", "2")
        .env("DCWATT__STATE__INTERVAL_SECS", "1");
    let mut proc = Proc::spawn("collector", cmd, dir.0.join("collector.log"));
    wait_for("/healthz", Duration::from_secs(20), || {
        assert!(proc.running(), "collector exited:\n{}", proc.log());
        get_json(http, "/healthz").map(|_| ())
    });
    assert!(
        proc.log().contains("lowered to fit"),
        "the limits were fitted and said so:\n{}",
        proc.log()
    );
    let saves = |t: &str| metric(t, "dcwatt_state_saves_total").unwrap_or(0.0);
    let before = saves(&http_get(http, "/metrics").map(|r| r.1).unwrap_or_default());
    // 600 raw connections to each listener, held.
    let mut held = Vec::new();
    for port in [mqtt, http] {
        for _ in 0..600 {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                held.push(s);
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let fds = open_fds(proc.pid());
    assert!(fds < 400, "{fds} descriptors open");
    let text = wait_for("the API again", Duration::from_secs(10), || {
        http_get(http, "/metrics")
            .filter(|(s, _)| *s == 200)
            .map(|r| r.1)
    });
    eprintln!(
        "{} connections held; the collector has {fds} descriptors open (limit 400)",
        held.len()
    );
    assert!(saves(&text) >= before + 2.0, "state saves went on:\n{text}");
    assert_eq!(
        metric(&text, "dcwatt_state_save_errors_total"),
        Some(0.0),
        "{}",
        proc.log()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(proc.running());
}
