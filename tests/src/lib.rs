//! Test support for dcwatt's end-to-end tests: real binaries, real brokers, loopback only.
//!
//! Every process a test starts is owned by a guard that kills it on drop; every server
//! binds a free port on 127.0.0.1; nothing reaches beyond this machine.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod sim;
pub mod webdriver;
pub mod wire;

/// The repository's root (for the docs and configs a test checks against).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding the workspace's binaries (`DCWATT_BIN_DIR` overrides).
///
/// # Panics
/// When the binaries are not built: `scripts/test.sh` builds them first.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("DCWATT_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound and released; the race is negligible on loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "dcwatt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// Writes a file in it and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, KiB (0 when it cannot be read).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends SIGTERM (a clean stop) and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGKILL (no chance to clean up) and waits for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.1 GET on loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// GET as JSON; `None` unless 200 with a JSON body.
pub fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(port, path)?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// The value of one sample in Prometheus text, e.g. `metric(text, "x_total{reason=\"a\"}")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Asserts that a PUE window (site JSON) is as good as its span allows: `measured` once its
/// data spans the whole window, and before that `partial` for that reason alone — the
/// reason says how much of the window there is ("40 s of 1 min so far") and nothing else.
///
/// # Panics
/// When the window is anything else.
pub fn assert_measured_so_far(w: &serde_json::Value) {
    let span = w["span_share"].as_f64().unwrap_or(0.0);
    assert!(span > 0.0 && span <= 1.0, "span_share in (0, 1]: {w:#}");
    if span < 1.0 {
        assert_eq!(
            w["quality"], "partial",
            "a window shorter than its length: {w:#}"
        );
        let why = w["reason"].as_str().unwrap_or("");
        assert!(
            why.ends_with("so far") && !why.contains(';'),
            "partial for its span alone: {w:#}"
        );
    } else {
        assert_eq!(w["quality"], "measured", "{w:#}");
    }
}

/// True when `DCWATT_REQUIRE_SERVICES=1`: a missing service fails instead of skipping.
pub fn services_required() -> bool {
    std::env::var("DCWATT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Says loudly that a test is skipped for want of `what`, or fails when services are
/// required.
pub fn skip_or_fail(test: &str, what: &str) {
    assert!(
        !services_required(),
        "{test}: {what} (DCWATT_REQUIRE_SERVICES=1, so this fails instead of skipping)"
    );
    eprintln!("\n*** SKIPPED {test}: {what}. Install it (scripts/test.sh does) or set DCWATT_REQUIRE_SERVICES=1 to make this a failure. ***\n");
}

/// Where an executable is on PATH or in the usual sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running collector.
pub struct Collector {
    /// The process.
    pub proc: Proc,
    /// HTTP port.
    pub http: u16,
    /// MQTT port agents connect to (embedded broker, or the external one it uses).
    pub mqtt: u16,
}

/// Which broker a collector uses.
#[derive(Debug, Clone, Copy)]
pub enum BrokerKind {
    /// rumqttd inside the collector.
    Embedded,
    /// An external broker (Mosquitto) on this port.
    External(u16),
}

impl Collector {
    /// Starts a collector with extra environment overrides and waits for `/healthz`.
    pub fn start(dir: &TempDir, broker: BrokerKind, env: &[(&str, String)]) -> Collector {
        Self::launch(dir, broker, None, None, env)
    }

    /// Starts a collector with a configuration file (and, for an embedded broker, a given
    /// MQTT port, so agents can reconnect to a restarted collector).
    pub fn start_with_config(
        dir: &TempDir,
        broker: BrokerKind,
        config: &Path,
        mqtt: Option<u16>,
        env: &[(&str, String)],
    ) -> Collector {
        Self::launch(dir, broker, Some(config), mqtt, env)
    }

    fn launch(
        dir: &TempDir,
        broker: BrokerKind,
        config: Option<&Path>,
        mqtt_port: Option<u16>,
        env: &[(&str, String)],
    ) -> Collector {
        let mut http = free_port();
        while Some(http) == mqtt_port {
            http = free_port();
        }
        let mut cmd = Command::new(bin("dcwatt-collector"));
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        // Files the collector writes (alert states) stay in the test's scratch directory.
        cmd.current_dir(&dir.0);
        cmd.env("DCWATT__HTTP__LISTEN", format!("127.0.0.1:{http}"));
        let mqtt = match broker {
            BrokerKind::Embedded => {
                // Two free ports asked for one after the other can be the same one.
                let mut p = mqtt_port.unwrap_or_else(free_port);
                while p == http && mqtt_port.is_none() {
                    p = free_port();
                }
                cmd.env("DCWATT__BROKER__LISTEN", format!("127.0.0.1:{p}"));
                p
            }
            BrokerKind::External(p) => {
                cmd.env("DCWATT__BROKER__EMBEDDED", "false");
                cmd.env("DCWATT__MQTT__HOST", "127.0.0.1");
                cmd.env("DCWATT__MQTT__PORT", p.to_string());
                p
            }
        };
        for (k, v) in env {
            cmd.env(k, v);
            if *k == "DCWATT__HTTP__LISTEN" {
                http = v
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(http);
            }
        }
        let mut proc = Proc::spawn("collector", cmd, dir.0.join("collector.log"));
        wait_for("collector /healthz", Duration::from_secs(20), || {
            assert!(proc.running(), "collector exited:\n{}", proc.log());
            let h = get_json(http, "/healthz")?;
            (h["broker_connected"] == true).then_some(())
        });
        Collector { proc, http, mqtt }
    }

    /// `GET /api/v1/sites/{site}` when the site exists.
    pub fn site(&self, site: &str) -> Option<serde_json::Value> {
        get_json(self.http, &format!("/api/v1/sites/{site}"))
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

/// Starts an agent from a TOML config.
pub fn start_agent(dir: &TempDir, name: &str, toml: &str) -> Proc {
    let cfg = dir.write(&format!("{name}.toml"), toml);
    let mut cmd = Command::new(bin("dcwatt-agent"));
    // The agent's spool (dcwatt-spool/{site}/{node}) lives in the test's scratch directory.
    cmd.current_dir(&dir.0);
    cmd.arg("--config").arg(cfg);
    Proc::spawn(name, cmd, dir.0.join(format!("{name}.log")))
}

/// A Mosquitto broker on a free loopback port, or `None` when Mosquitto is not installed.
pub struct Mosquitto {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
}

impl Mosquitto {
    /// Starts Mosquitto with the settings dcwatt recommends (no QoS 1 queue limit).
    pub fn start(dir: &TempDir) -> Option<Mosquitto> {
        Self::start_on(dir, free_port())
    }

    /// Starts Mosquitto on `port`, persisting sessions and queued messages in the scratch
    /// directory, so a restart on the same port keeps the collector's session.
    pub fn start_on(dir: &TempDir, port: u16) -> Option<Mosquitto> {
        Self::start_named(dir, "mosquitto", port, "")
    }

    /// Starts a Mosquitto named `name` (its files in the scratch directory carry the
    /// name, so several can share one) with `extra` configuration lines (e.g. a bridge).
    pub fn start_named(dir: &TempDir, name: &str, port: u16, extra: &str) -> Option<Mosquitto> {
        let exe = find_program("mosquitto")?;
        let store = dir.0.join(format!("{name}-data"));
        std::fs::create_dir_all(&store).ok()?;
        let conf = dir.write(
            &format!("{name}.conf"),
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nlog_dest stderr\nuser root\n{extra}",
                store.display()
            ),
        );
        let mut cmd = Command::new(exe);
        cmd.arg("-c").arg(conf);
        let mut proc = Proc::spawn(name, cmd, dir.0.join(format!("{name}.log")));
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            assert!(proc.running(), "mosquitto exited:\n{}", proc.log());
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Some(Mosquitto { proc, port })
    }
}

/// Publishes every message at QoS 1 to the broker on `port` and returns once the broker
/// acknowledged all of them (a plain rumqttc client, as any third party would use).
///
/// # Panics
/// When the broker does not acknowledge everything within `timeout`.
pub fn publish_all(
    port: u16,
    msgs: impl Iterator<Item = (String, Vec<u8>)> + Send + 'static,
    timeout: Duration,
) -> u64 {
    use rumqttc::{AsyncClient, QoS};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut o = test_client("pub", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(200);
        o.set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut el) = AsyncClient::new(o, 1000);
        let sender = tokio::spawn(async move {
            let mut n = 0u64;
            for (topic, payload) in msgs {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .expect("publish");
                n += 1;
            }
            (n, client)
        });
        let mut acked = 0u64;
        let deadline = tokio::time::Instant::now() + timeout;
        while !sender.is_finished() {
            acked += poll_ack(&mut el, deadline).await;
        }
        let (n, client) = sender.await.expect("sender task");
        while acked < n {
            acked += poll_ack(&mut el, deadline).await;
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
        n
    })
}

/// Polls the test publisher's event loop once; 1 when that was a PUBACK.
async fn poll_ack(el: &mut rumqttc::EventLoop, deadline: tokio::time::Instant) -> u64 {
    use rumqttc::{Event, Packet};
    match tokio::time::timeout_at(deadline, el.poll()).await {
        Err(_) => panic!("timed out waiting for broker acks"),
        Ok(Err(e)) => panic!("test publisher connection failed: {e}"),
        Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => 1,
        Ok(Ok(_)) => 0,
    }
}

/// A Prometheus Alertmanager on a free loopback port, or `None` when not installed.
pub struct Alertmanager {
    /// The process.
    pub proc: Proc,
    /// Its HTTP port.
    pub port: u16,
}

impl Alertmanager {
    /// Starts Alertmanager with a null receiver and no clustering.
    pub fn start(dir: &TempDir) -> Option<Alertmanager> {
        let exe =
            find_program("prometheus-alertmanager").or_else(|| find_program("alertmanager"))?;
        let port = free_port();
        let conf = dir.write(
            "am.yml",
            "route:\n  receiver: \"null\"\n  group_wait: 1s\nreceivers:\n  - name: \"null\"\n",
        );
        let storage = dir.0.join("am-data");
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let mut proc = Proc::spawn("alertmanager", cmd, dir.0.join("alertmanager.log"));
        wait_for("alertmanager to answer", Duration::from_secs(20), || {
            assert!(proc.running(), "alertmanager exited:\n{}", proc.log());
            http_get(port, "/api/v2/status")
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
        Some(Alertmanager { proc, port })
    }
}

/// VictoriaMetrics on a loopback port: a real server for the InfluxDB v2 write API
/// (`POST /api/v2/write`), read back through its export API.
pub struct VictoriaMetrics {
    /// The process.
    pub proc: Proc,
    /// Its HTTP port.
    pub port: u16,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics on a free port, or `None` when it is not installed.
    pub fn start(dir: &TempDir) -> Option<VictoriaMetrics> {
        Self::start_on(dir, free_port())
    }

    /// Starts it on `port` with its data in the scratch directory (a restart on the same
    /// port keeps the data).
    pub fn start_on(dir: &TempDir, port: u16) -> Option<VictoriaMetrics> {
        let exe = find_program("victoria-metrics")?;
        let mut cmd = Command::new(exe);
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.0.join("vm-data").display()
            ))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=1s");
        let mut proc = Proc::spawn("victoria-metrics", cmd, dir.0.join("victoria-metrics.log"));
        wait_for(
            "victoria-metrics to answer",
            Duration::from_secs(30),
            || {
                assert!(proc.running(), "victoria-metrics exited:\n{}", proc.log());
                http_get(port, "/health")
                    .filter(|(s, _)| *s == 200)
                    .map(|_| ())
            },
        );
        Some(VictoriaMetrics { proc, port })
    }

    /// Every sample of the series matching `selector` (e.g. `{__name__="x"}`), after a
    /// flush: one JSON object per series with `metric`, `values` and `timestamps`.
    pub fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let _ = http_get(self.port, "/internal/force_flush");
        let q = url_encode(selector);
        let path = format!("/api/v1/export?match%5B%5D={q}&start=0");
        let Some((200, body)) = http_get(self.port, &path) else {
            return Vec::new();
        };
        body.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// `s` percent-encoded for a query string.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server (Debian's `prometheus`) on a loopback port, scraping what its
/// configuration says every second, with its data in the scratch directory.
pub struct Prometheus {
    /// The process.
    pub proc: Proc,
    /// Its HTTP port.
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML), or `None` when it is not installed.
    pub fn start(dir: &TempDir, config: &str) -> Option<Prometheus> {
        let exe = find_program("prometheus")?;
        let port = free_port();
        let conf = dir.write("prometheus.yml", config);
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut proc = Proc::spawn("prometheus", cmd, dir.0.join("prometheus.log"));
        wait_for("prometheus to be ready", Duration::from_secs(30), || {
            assert!(proc.running(), "prometheus exited:\n{}", proc.log());
            http_get(port, "/-/ready")
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        });
        Some(Prometheus { proc, port })
    }

    /// An instant query's result vector (`data.result`), or `None` when it fails.
    pub fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let v = get_json(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )?;
        (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned())?
    }

    /// The value of a query that returns one sample.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql)?;
        match r.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

/// Connects a fresh MQTT client, subscribes to `filter` and returns the retained messages
/// (and anything else) that arrive within `wait`.
pub fn mqtt_collect(port: u16, filter: &str, wait: Duration) -> Vec<(String, Vec<u8>, bool)> {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let filter = filter.to_owned();
    rt.block_on(async move {
        let o = test_client("sub", port);
        let (client, mut el) = AsyncClient::new(o, 10);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(ev) = tokio::time::timeout_at(deadline, el.poll()).await {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    got.push((p.topic.clone(), p.payload.to_vec(), p.retain))
                }
                Ok(_) => {}
                Err(e) => panic!("test subscriber failed: {e}"),
            }
        }
        got
    })
}

/// The repository's Python with the test peers (`.venv`, made by
/// scripts/install-test-deps.sh), when it has `module`.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let py = std::env::var_os("DCWATT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// MQTT options for a test client with a unique id, on the broker at `port`.
pub fn test_client(role: &str, port: u16) -> rumqttc::MqttOptions {
    static ID: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "dcwatt-test-{role}-{}-{}",
        std::process::id(),
        ID.fetch_add(1, Ordering::Relaxed)
    );
    rumqttc::MqttOptions::new(id, "127.0.0.1", port)
}

/// An snmpsim agent on a free loopback UDP port serving the recordings in
/// `tests/peers/snmp/` plus real devices' recordings from snmpsim-data; a recording
/// `NAME.snmprec` answers to community `NAME`.
pub struct SnmpSim {
    /// The process.
    pub proc: Proc,
    /// UDP port.
    pub port: u16,
}

impl SnmpSim {
    /// Starts snmpsim, or `None` when it is not installed.
    pub fn start(dir: &TempDir, real: &[&str]) -> Option<SnmpSim> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let exe = root.join("../.venv/bin/snmpsim-command-responder");
        if !exe.is_file() {
            return None;
        }
        let data = dir.0.join("snmp-data");
        std::fs::create_dir_all(&data).ok()?;
        for e in std::fs::read_dir(root.join("peers/snmp")).ok()?.flatten() {
            std::fs::copy(e.path(), data.join(e.file_name())).ok()?;
        }
        for name in real {
            let src = root
                .join("../.venv/snmpsim-data")
                .join(format!("{name}.snmprec"));
            let to = data
                .join(Path::new(name).file_name()?)
                .with_extension("snmprec");
            if std::fs::copy(&src, &to).is_err() {
                // snmpsim-data ships most recordings compressed.
                let out = Command::new("bzcat")
                    .arg(src.with_extension("snmprec.bz2"))
                    .output()
                    .ok()?;
                if !out.status.success() {
                    return None;
                }
                std::fs::write(&to, out.stdout).ok()?;
            }
        }
        let port = free_udp_port();
        let mut cmd = Command::new(exe);
        cmd.env("SNMPSIM_ALLOW_ROOT", "true")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!(
                "--cache-dir={}",
                dir.0.join("snmp-cache").display()
            ))
            .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"));
        let proc = Proc::spawn("snmpsim", cmd, dir.0.join("snmpsim.log"));
        Some(SnmpSim { proc, port })
    }
}

/// net-snmp's snmpd on a free loopback UDP port with one SNMPv3 authPriv user
/// (`user`, SHA `auth`, AES `privacy`), or `None` when snmpd is not installed.
pub fn snmpd_v3(dir: &TempDir, user: &str, auth: &str, privacy: &str) -> Option<(Proc, u16)> {
    let exe = find_program("snmpd")?;
    let port = free_udp_port();
    let conf = dir.write(
        "snmpd.conf",
        &format!("createUser {user} SHA \"{auth}\" AES \"{privacy}\"\nrouser {user} priv\n"),
    );
    let mut cmd = Command::new(exe);
    cmd.env("MIBS", "")
        .env("SNMP_PERSISTENT_DIR", dir.0.join("snmpd-persist"))
        .args(["-f", "-Lo", "-C", "-c"])
        .arg(conf)
        .arg("-p")
        .arg(dir.0.join("snmpd.pid"))
        .arg(format!("udp:127.0.0.1:{port}"));
    let mut proc = Proc::spawn("snmpd", cmd, dir.0.join("snmpd.log"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(proc.running(), "snmpd exited:\n{}", proc.log());
    Some((proc, port))
}

/// Runs `dcwatt-agent --once` with the given `[[sources]]` (as a facility agent whose
/// broker is never contacted) and returns (exit success, readings, stderr).
pub fn agent_once(
    dir: &TempDir,
    name: &str,
    sources: &str,
) -> (bool, Vec<dcwatt_common::protocol::Reading>, String) {
    let cfg = dir.write(
        &format!("{name}.toml"),
        &format!("site = \"s\"\nnode = \"n\"\nrole = \"meter\"\n[mqtt]\nport = 1\n{sources}"),
    );
    let out = Command::new(bin("dcwatt-agent"))
        .arg("--config")
        .arg(cfg)
        .arg("--once")
        .output()
        .expect("run dcwatt-agent");
    let batch: dcwatt_common::protocol::ReadingsMessage = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (
        out.status.success(),
        batch.readings,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small tmpfs, unmounted when the test ends.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    /// Mounts one of `size` (e.g. `8m`) at `at`; `None` when mounting is not allowed.
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }

    /// Fills it: a file grown until the disk refuses.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let mut small = [0u8; 512].as_slice();
        while f.write_all(&small[..1]).is_ok() {
            small = &small[1..];
            if small.is_empty() {
                break;
            }
        }
        let _ = f.sync_all();
    }

    /// Removes the filler.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.0.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
