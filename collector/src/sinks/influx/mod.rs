//! The InfluxDB sink: raw readings and derived values, as line protocol, POSTed to any
//! server with the v2 write API (InfluxDB 2.x, InfluxDB 3.x, VictoriaMetrics), gzipped at
//! `gzip_level` off the async threads.
//!
//! Two tasks share a bounded buffer of sealed chunks:
//! - the encoder takes batches from its queue and, every `derived_interval`, a snapshot of
//!   the derived values; it seals a chunk at `batch_lines` lines or every
//!   `flush_interval`. When the buffer is over `buffer_bytes`, the oldest chunk is dropped
//!   and its lines counted.
//! - the writer writes the oldest chunk until it succeeds: retriable failures (connection
//!   refused, timeouts, 5xx, 429) are retried with backoff, in order; permanent ones (any
//!   other 4xx) are logged with the server's answer, counted and dropped.

pub mod line;
pub mod schema;

use crate::engine::{Batch, Snapshot};
use bytes::Bytes;
use dcwatt_common::backoff::Backoff;
use dcwatt_common::secret::Secret;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// InfluxDB sink settings.
#[derive(Debug, Clone)]
pub struct InfluxConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Organization (InfluxDB 2; ignored by 3.x and VictoriaMetrics).
    pub org: String,
    /// Bucket (InfluxDB 2) or database (InfluxDB 3).
    pub bucket: String,
    /// API token.
    pub token: Option<Secret>,
    /// CA certificate (PEM) to trust for an `https` URL, besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Compress request bodies.
    pub gzip: bool,
    /// The gzip level, 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
    /// Lines per write request.
    pub batch_lines: usize,
    /// Longest time a line waits before it is written.
    pub flush_interval: Duration,
    /// Timeout of one write request.
    pub timeout: Duration,
    /// Most bytes of line protocol held while the server is unreachable.
    pub buffer_bytes: usize,
    /// How often derived values are written.
    pub derived_interval: Duration,
    /// Write raw readings (derived values are always written).
    pub raw: bool,
    /// Batches queued between the intake and the encoder.
    pub queue_batches: usize,
    /// Where lines wait until written (survives restarts); `None` keeps them in memory.
    pub spool_dir: Option<PathBuf>,
}

/// Counters shown on `/metrics`.
#[derive(Debug, Default)]
pub struct InfluxStats {
    /// Lines the server accepted.
    pub lines_written: AtomicU64,
    /// Write requests that succeeded.
    pub requests_ok: AtomicU64,
    /// Failed write attempts that will be retried.
    pub retries: AtomicU64,
    /// Lines the server refused for good (4xx other than 429).
    pub lines_rejected: AtomicU64,
    /// Lines dropped because the buffer was full (server unreachable for too long).
    pub lines_dropped: AtomicU64,
    /// Bytes of line protocol waiting to be written.
    pub buffered_bytes: AtomicU64,
    /// Lines waiting to be written.
    pub buffered_lines: AtomicU64,
    /// True while the last write attempt succeeded.
    pub up: AtomicBool,
}

struct Chunk {
    id: u64,
    lines: usize,
    size: usize,
    /// In memory; `None` when it lives in the spool directory only.
    body: Option<Bytes>,
    /// Being written by one of the writers.
    in_flight: bool,
    /// When it was sealed: a chunk not written within `SPOOL_AFTER` goes to disk.
    sealed_at: std::time::Instant,
}

/// Write requests in flight at once: the server takes them in parallel.
const WRITERS: usize = 4;
/// A chunk still unwritten this long after it was sealed is spooled to disk. Chunks that
/// InfluxDB takes at once never touch the disk; while it is down (or until the first
/// write succeeds) every chunk is spooled as it is sealed.
const SPOOL_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Buffer {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    next_id: u64,
}

struct Shared {
    buf: Mutex<Buffer>,
    ready: Notify,
    stats: Arc<InfluxStats>,
    limit: usize,
    /// Where chunks are kept until written, when spooling to disk.
    dir: Option<PathBuf>,
}

fn chunk_path(dir: &std::path::Path, id: u64, lines: usize) -> PathBuf {
    dir.join(format!("{id:020}-{lines}.lp"))
}

/// Writes a chunk file atomically (temporary file, sync, rename).
fn write_chunk(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

impl Shared {
    fn new(stats: Arc<InfluxStats>, limit: usize, dir: Option<PathBuf>) -> Self {
        Shared {
            buf: Mutex::new(Buffer::default()),
            ready: Notify::new(),
            stats,
            limit,
            dir,
        }
    }

    /// Takes up the chunks a previous run left in the spool directory, oldest first;
    /// removes torn temporary files.
    fn recover(&self) -> std::io::Result<usize> {
        let Some(dir) = &self.dir else {
            return Ok(0);
        };
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let parsed = name.strip_suffix(".lp").and_then(|stem| {
                let (id, lines) = stem.split_once('-')?;
                Some((id.parse::<u64>().ok()?, lines.parse::<usize>().ok()?))
            });
            match parsed {
                Some((id, lines)) => {
                    let size = std::fs::metadata(&path)
                        .map(|m| m.len() as usize)
                        .unwrap_or(0);
                    found.push((id, lines, size));
                }
                None => {
                    tracing::warn!(file = %path.display(), "not a dcwatt spool file; left alone")
                }
            }
        }
        found.sort_unstable();
        let Ok(mut b) = self.buf.lock() else {
            return Ok(0);
        };
        let lines = found.iter().map(|f| f.1).sum();
        for (id, lines, size) in found {
            b.next_id = b.next_id.max(id + 1);
            b.bytes += size;
            b.chunks.push_back(Chunk {
                id,
                lines,
                size,
                body: None,
                in_flight: false,
                sealed_at: std::time::Instant::now(),
            });
        }
        self.publish(&b);
        Ok(lines)
    }

    fn seal(&self, body: String, lines: usize) {
        let Ok(mut b) = self.buf.lock() else {
            return;
        };
        if lines > 0 {
            let id = b.next_id;
            b.next_id += 1;
            let size = body.len();
            b.bytes += size;
            b.chunks.push_back(Chunk {
                id,
                lines,
                size,
                body: Some(Bytes::from(body)),
                in_flight: false,
                sealed_at: std::time::Instant::now(),
            });
            // Keep the newest: the oldest chunk not being written goes first when over
            // the limit (never the only one).
            while b.bytes > self.limit && b.chunks.len() > 1 {
                let Some(i) = b.chunks.iter().position(|c| !c.in_flight) else {
                    break;
                };
                let Some(old) = b.chunks.remove(i) else {
                    break;
                };
                self.forget(&mut b, &old);
                self.stats
                    .lines_dropped
                    .fetch_add(old.lines as u64, Ordering::Relaxed);
                tracing::warn!(
                    lines = old.lines,
                    "InfluxDB buffer full: dropped the oldest lines (raise influx.buffer_mib or fix the server)"
                );
            }
        }
        let all = !self.stats.up.load(Ordering::Relaxed);
        self.spill(&mut b, all);
        self.publish(&b);
        drop(b);
        self.ready.notify_one();
    }

    /// Writes to the spool directory the chunks in memory that are not being written and
    /// are older than `SPOOL_AFTER` (all of them with `all`), and frees their memory.
    fn spill(&self, b: &mut Buffer, all: bool) {
        let Some(dir) = &self.dir else {
            return;
        };
        let now = std::time::Instant::now();
        for c in b.chunks.iter_mut() {
            if c.in_flight || (!all && now.duration_since(c.sealed_at) < SPOOL_AFTER) {
                continue;
            }
            let Some(body) = &c.body else {
                continue;
            };
            match write_chunk(&chunk_path(dir, c.id, c.lines), body) {
                Ok(()) => c.body = None,
                Err(e) => {
                    tracing::error!(error = %e, dir = %dir.display(), "cannot spool InfluxDB lines to disk; keeping them in memory");
                    return;
                }
            }
        }
    }

    /// Spools every chunk still in memory (at shutdown); the lines that could not be
    /// spooled (no spool directory, or a disk error).
    fn spill_all(&self) -> usize {
        let Ok(mut b) = self.buf.lock() else {
            return 0;
        };
        for c in b.chunks.iter_mut() {
            c.in_flight = false;
        }
        self.spill(&mut b, true);
        self.publish(&b);
        b.chunks
            .iter()
            .filter(|c| c.body.is_some())
            .map(|c| c.lines)
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.buf.lock().map_or(true, |b| b.chunks.is_empty())
    }

    /// Accounts for a chunk leaving the buffer, and removes its file.
    fn forget(&self, b: &mut Buffer, c: &Chunk) {
        b.bytes -= c.size.min(b.bytes);
        if c.body.is_none() {
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_file(chunk_path(dir, c.id, c.lines));
            }
        }
    }

    fn publish(&self, b: &Buffer) {
        self.stats
            .buffered_bytes
            .store(b.bytes as u64, Ordering::Relaxed);
        let lines: usize = b.chunks.iter().map(|c| c.lines).sum();
        self.stats
            .buffered_lines
            .store(lines as u64, Ordering::Relaxed);
    }

    /// The oldest chunk no writer has, marked as taken; read from the spool when it is not
    /// in memory. A spool file that cannot be read is dropped and counted.
    fn take(&self) -> Option<(u64, Bytes, usize)> {
        loop {
            let mut b = self.buf.lock().ok()?;
            let i = b.chunks.iter().position(|c| !c.in_flight)?;
            let c = &mut b.chunks[i];
            let (id, lines) = (c.id, c.lines);
            if let Some(body) = &c.body {
                c.in_flight = true;
                return Some((id, body.clone(), lines));
            }
            let path = self.dir.as_ref().map(|d| chunk_path(d, id, lines))?;
            match std::fs::read(&path) {
                Ok(body) => {
                    c.in_flight = true;
                    return Some((id, Bytes::from(body), lines));
                }
                Err(e) => {
                    tracing::error!(error = %e, file = %path.display(), lines, "InfluxDB spool file unreadable; its lines are dropped");
                    self.stats
                        .lines_dropped
                        .fetch_add(lines as u64, Ordering::Relaxed);
                    if let Some(c) = b.chunks.remove(i) {
                        self.forget(&mut b, &c);
                    }
                    self.publish(&b);
                }
            }
        }
    }

    /// A writer gives a chunk back after a failed attempt: it is taken again later.
    fn release(&self, id: u64) {
        if let Ok(mut b) = self.buf.lock() {
            if let Some(c) = b.chunks.iter_mut().find(|c| c.id == id) {
                c.in_flight = false;
            }
        }
    }

    /// A chunk was written (or refused for good): it leaves the buffer.
    fn done(&self, id: u64) {
        if let Ok(mut b) = self.buf.lock() {
            if let Some(i) = b.chunks.iter().position(|c| c.id == id) {
                if let Some(c) = b.chunks.remove(i) {
                    self.forget(&mut b, &c);
                }
            }
            self.publish(&b);
        }
    }
}

/// Why the sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The CA file could not be read or parsed.
    #[error("influx.ca_file {path}: {detail}")]
    Ca {
        /// File.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the InfluxDB client: {0}")]
    Client(String),
}

/// A client of the v2 write API: `POST {url}/api/v2/write?org=&bucket=&precision=ms`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    write_url: reqwest::Url,
    auth: Option<reqwest::header::HeaderValue>,
    gzip_level: Option<u32>,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The server answered with a status other than 2xx.
    #[error("HTTP {status}: {text}")]
    Http {
        /// The status.
        status: reqwest::StatusCode,
        /// The start of the server's answer.
        text: String,
    },
    /// No answer: connection refused or reset, timeout, TLS.
    #[error("{0}")]
    Transport(String),
}

/// Builds the client (checked at start-up, so a bad CA file stops the collector).
///
/// # Errors
/// The CA file is unreadable or the client cannot be built.
pub fn client(cfg: &InfluxConfig) -> Result<Client, SetupError> {
    let mut http = reqwest::ClientBuilder::new()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| SetupError::Ca {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| SetupError::Ca {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        http = http.add_root_certificate(cert);
    }
    let http = http
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))?;
    // The URL was checked when the configuration was loaded; a base path is kept.
    let mut write_url =
        reqwest::Url::parse(&format!("{}/api/v2/write", cfg.url.trim_end_matches('/')))
            .map_err(|e| SetupError::Client(format!("{}: {e}", cfg.url)))?;
    write_url
        .query_pairs_mut()
        .append_pair("org", &cfg.org)
        .append_pair("bucket", &cfg.bucket)
        .append_pair("precision", "ms");
    let auth = match cfg.token.as_ref().map(|t| t.expose()) {
        None | Some("") => None,
        Some(t) => {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Token {t}"))
                .map_err(|_| SetupError::Client("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            Some(v)
        }
    };
    Ok(Client {
        http,
        write_url,
        auth,
        gzip_level: cfg.gzip.then_some(cfg.gzip_level.clamp(1, 9)),
    })
}

/// Gzips a request body.
pub fn gzip(body: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::new(level),
    );
    // Writing into a Vec cannot fail.
    let _ = e.write_all(body);
    e.finish().unwrap_or_default()
}

/// What a failed write means.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again later.
    Retriable,
    /// The server refused the data; trying again would not help.
    Permanent,
}

/// Classifies a write error: connection problems, timeouts, 5xx and 429 are retriable;
/// every other status is permanent.
pub fn classify(e: &RequestError) -> Failure {
    match e {
        RequestError::Http { status, .. } => {
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                Failure::Retriable
            } else {
                Failure::Permanent
            }
        }
        RequestError::Transport(_) => Failure::Retriable,
    }
}

async fn write(client: &Client, body: Bytes) -> Result<(), RequestError> {
    use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
    let mut req = client
        .http
        .post(client.write_url.clone())
        .header(CONTENT_TYPE, "text/plain; charset=utf-8");
    if let Some(level) = client.gzip_level {
        // Compressing a chunk takes milliseconds of CPU: not on the async threads.
        let gz = tokio::task::spawn_blocking(move || gzip(&body, level))
            .await
            .map_err(|e| RequestError::Transport(format!("compressing the body: {e}")))?;
        req = req.header(CONTENT_ENCODING, "gzip").body(gz);
    } else {
        req = req.body(body);
    }
    if let Some(auth) = &client.auth {
        req = req.header(AUTHORIZATION, auth.clone());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| RequestError::Transport(e.to_string()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let mut text = resp.text().await.unwrap_or_default();
    if text.len() > 512 {
        let cut = (0..=512)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
    }
    Err(RequestError::Http { status, text })
}

/// Everything the sink needs to run.
pub struct InfluxSink {
    /// Settings.
    pub cfg: InfluxConfig,
    /// The client from [`client`].
    pub client: Client,
    /// Raw batches from the intake (None when raw readings are not written).
    pub rx: Option<mpsc::Receiver<Arc<Batch>>>,
    /// The engine owner's snapshots, for derived values.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Counters.
    pub stats: Arc<InfluxStats>,
    /// How long to keep writing at shutdown before what is left is given up (spooled
    /// when there is a spool, else counted as dropped).
    pub drain: Duration,
}

impl super::Sink for InfluxSink {
    const NAME: &'static str = "influx";

    /// Runs until `cancel`, then writes what is buffered for up to `drain` before giving up
    /// (what is left is logged and counted as dropped).
    async fn run(self, cancel: CancellationToken) {
        let drain = self.drain;
        let shared = Arc::new(Shared::new(
            self.stats.clone(),
            self.cfg.buffer_bytes,
            self.cfg.spool_dir.clone(),
        ));
        match shared.recover() {
            Ok(0) => {}
            Ok(lines) => tracing::info!(
                lines,
                "InfluxDB lines spooled by a previous run will be written first"
            ),
            Err(e) => tracing::error!(error = %e, "cannot read the InfluxDB spool directory"),
        }
        let writer_stop = CancellationToken::new();
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                tokio::spawn(writer(
                    self.client.clone(),
                    self.cfg.clone(),
                    shared.clone(),
                    writer_stop.clone(),
                    i as u64,
                ))
            })
            .collect();
        encoder(&self.cfg, self.rx, &self.snapshots, &shared, &cancel).await;
        // Drain: let the writer empty the buffer, for a while.
        let deadline = tokio::time::Instant::now() + drain;
        while tokio::time::Instant::now() < deadline && !shared.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        writer_stop.cancel();
        for w in writers {
            let _ = w.await;
        }
        // What is left goes to the spool for the next start; without one it is lost.
        let in_memory = shared.spill_all();
        let left = self.stats.buffered_lines.load(Ordering::Relaxed);
        if in_memory > 0 {
            self.stats
                .lines_dropped
                .fetch_add(in_memory as u64, Ordering::Relaxed);
            tracing::error!(
                lines = in_memory,
                "InfluxDB unreachable at shutdown: lines held in memory were not written"
            );
        }
        if left > in_memory as u64 {
            tracing::warn!(
                lines = left - in_memory as u64,
                "InfluxDB unreachable at shutdown: lines kept in the spool for the next start"
            );
        }
    }
}

async fn encoder(
    cfg: &InfluxConfig,
    mut rx: Option<mpsc::Receiver<Arc<Batch>>>,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    shared: &Shared,
    cancel: &CancellationToken,
) {
    let mut body = String::new();
    let mut lines = 0usize;
    let mut flush = tokio::time::interval(cfg.flush_interval);
    let mut derive = tokio::time::interval(cfg.derived_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    derive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            b = async {
                match rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(b) = b else { rx = None; continue };
                lines += schema::readings(&mut body, &b);
            }
            _ = derive.tick() => {
                let snap = snapshots.borrow().clone();
                for s in &snap.sites {
                    lines += schema::derived(&mut body, s);
                }
            }
            _ = flush.tick() => {
                shared.seal(std::mem::take(&mut body), std::mem::take(&mut lines));
            }
        }
        if lines >= cfg.batch_lines {
            shared.seal(std::mem::take(&mut body), std::mem::take(&mut lines));
        }
    }
    // What is still queued, then the rest.
    if let Some(rx) = rx.as_mut() {
        while let Ok(b) = rx.try_recv() {
            lines += schema::readings(&mut body, &b);
            if lines >= cfg.batch_lines {
                shared.seal(std::mem::take(&mut body), std::mem::take(&mut lines));
            }
        }
    }
    shared.seal(body, lines);
}

async fn writer(
    client: Client,
    cfg: InfluxConfig,
    shared: Arc<Shared>,
    stop: CancellationToken,
    index: u64,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(30),
        dcwatt_common::now_ms().unsigned_abs() ^ index,
    );
    let mut limiter = dcwatt_common::logging::RateLimiter::new(Duration::from_secs(30));
    loop {
        let Some((id, body, lines)) = shared.take() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = shared.ready.notified() => continue,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        // More may be waiting: let another writer look.
        shared.ready.notify_one();
        let result = tokio::select! {
            _ = stop.cancelled() => {
                shared.release(id);
                return;
            }
            r = write(&client, body) => r,
        };
        match result {
            Ok(()) => {
                shared.done(id);
                let s = &shared.stats;
                s.lines_written.fetch_add(lines as u64, Ordering::Relaxed);
                s.requests_ok.fetch_add(1, Ordering::Relaxed);
                if !s.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(url = %cfg.url, "InfluxDB writes succeed");
                }
                backoff.reset();
            }
            Err(e) => match classify(&e) {
                Failure::Permanent => {
                    shared.done(id);
                    shared
                        .stats
                        .lines_rejected
                        .fetch_add(lines as u64, Ordering::Relaxed);
                    tracing::error!(lines, error = %e, "InfluxDB refused a write; the lines are dropped");
                }
                Failure::Retriable => {
                    shared.release(id);
                    shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let was_up = shared.stats.up.swap(false, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    if was_up
                        || limiter
                            .allow("influx_retry", std::time::Instant::now())
                            .is_some()
                    {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "InfluxDB write failed; retrying (lines are buffered)");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            },
        }
    }
}

impl dcwatt_common::metrics::Source for InfluxStats {
    fn encode(&self, o: &mut dcwatt_common::metrics::Exposition) {
        let i = self;
        o.counter(
            "dcwatt_influx_lines_written_total",
            "Lines InfluxDB accepted.",
            &i.lines_written,
        );
        o.counter(
            "dcwatt_influx_requests_total",
            "Successful InfluxDB write requests.",
            &i.requests_ok,
        );
        o.counter(
            "dcwatt_influx_retries_total",
            "Failed InfluxDB writes that are retried (connection, timeout, 5xx, 429).",
            &i.retries,
        );
        o.counter(
            "dcwatt_influx_lines_rejected_total",
            "Lines InfluxDB refused for good (4xx): dropped.",
            &i.lines_rejected,
        );
        o.counter(
            "dcwatt_influx_lines_dropped_total",
            "Lines dropped because the buffer was full while InfluxDB was unreachable.",
            &i.lines_dropped,
        );
        o.gauge(
            "dcwatt_influx_buffered_lines",
            "Lines waiting to be written to InfluxDB.",
            i.buffered_lines.load(Ordering::Relaxed),
        );
        o.gauge(
            "dcwatt_influx_buffered_bytes",
            "Bytes of line protocol waiting to be written to InfluxDB.",
            i.buffered_bytes.load(Ordering::Relaxed),
        );
        o.gauge(
            "dcwatt_influx_up",
            "1 while the last InfluxDB write succeeded.",
            u8::from(i.up.load(Ordering::Relaxed)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(code: u16) -> RequestError {
        RequestError::Http {
            status: reqwest::StatusCode::from_u16(code).unwrap_or_default(),
            text: String::new(),
        }
    }

    #[test]
    fn server_errors_and_throttling_are_retried_client_errors_are_not() {
        for c in [500, 502, 503, 504, 429, 408] {
            assert_eq!(classify(&http(c)), Failure::Retriable, "{c}");
        }
        for c in [400, 401, 403, 404, 413, 422] {
            assert_eq!(classify(&http(c)), Failure::Permanent, "{c}");
        }
    }

    fn shared(limit: usize) -> Shared {
        Shared::new(Arc::default(), limit, None)
    }

    #[test]
    fn spooled_chunks_survive_a_restart_in_order_and_the_limit_removes_files() {
        let dir = std::env::temp_dir().join(format!("dcwatt-influx-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = Shared::new(Arc::default(), 1 << 20, Some(dir.clone()));
        assert_eq!(first.recover().expect("empty spool"), 0);
        first.seal("a v=1 1\n".to_owned(), 1);
        first.seal("b v=2 2\nb v=3 3\n".to_owned(), 2);
        std::fs::write(dir.join("00000000000000000009-1.tmp"), "torn").expect("tmp");
        drop(first);
        // The next run takes them up, oldest first, and writes them.
        let second = Shared::new(Arc::default(), 20, Some(dir.clone()));
        assert_eq!(second.recover().expect("recover"), 3);
        assert!(
            !dir.join("00000000000000000009-1.tmp").exists(),
            "torn file removed"
        );
        let (id, body, lines) = second.take().expect("oldest");
        assert_eq!((&body[..], lines), (&b"a v=1 1\n"[..], 1));
        second.done(id);
        // A new chunk over the 20-byte limit pushes the oldest out, file and all.
        second.seal("c v=4 4\n".to_owned(), 1);
        assert_eq!(second.stats.lines_dropped.load(Ordering::Relaxed), 2);
        let files: Vec<_> = std::fs::read_dir(&dir).expect("dir").flatten().collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let (_, body, _) = second.take().expect("newest");
        assert_eq!(&body[..], b"c v=4 4\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A stand-in for an InfluxDB server (none can run here): answers each write request
    /// with the next status from `answers` (the last one repeats) and counts requests.
    async fn server(answers: Vec<(u16, &'static str)>) -> (u16, Arc<AtomicU64>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let count = Arc::new(AtomicU64::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst) as usize;
                let (status, body) = answers[n.min(answers.len() - 1)];
                // Read the request head and its body, then answer and close.
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(k) = sock.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if req.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        (port, count)
    }

    fn config(port: u16) -> InfluxConfig {
        InfluxConfig {
            url: format!("http://127.0.0.1:{port}"),
            org: "o".into(),
            bucket: "b".into(),
            token: Some(Secret::new("t")),
            ca_file: None,
            gzip: false,
            gzip_level: 1,
            batch_lines: 100,
            flush_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            buffer_bytes: 1 << 20,
            derived_interval: Duration::from_secs(60),
            raw: true,
            queue_batches: 10,
            spool_dir: None,
        }
    }

    async fn write_one(answers: Vec<(u16, &'static str)>) -> (Arc<InfluxStats>, u64) {
        let (port, requests) = server(answers).await;
        let cfg = config(port);
        let shared = Arc::new(shared(1 << 20));
        shared.seal("m v=1 1\nm v=2 2\nm v=3 3\n".to_owned(), 3);
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer(
            client(&cfg).expect("client"),
            cfg,
            shared.clone(),
            stop.clone(),
            0,
        ));
        for _ in 0..200 {
            if shared.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        stop.cancel();
        let _ = task.await;
        (shared.stats.clone(), requests.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_write_is_the_v2_api_with_its_token_and_a_gzipped_body() {
        use std::io::Read;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("a request");
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let k = sock.read(&mut buf).await.expect("read");
                req.extend_from_slice(&buf[..k]);
                let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("a length");
                if k == 0 || req.len() >= end + 4 + len {
                    let _ = sock
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    return (head, req[end + 4..end + 4 + len].to_vec());
                }
            }
        });
        let cfg = InfluxConfig {
            url: format!("http://127.0.0.1:{port}/base/"),
            gzip: true,
            gzip_level: 1,
            ..config(port)
        };
        let lines = "m,site=a v=1 1\nm,site=a v=2 2\n";
        write(&client(&cfg).expect("client"), Bytes::from(lines))
            .await
            .expect("204 is success");
        let (head, body) = seen.await.expect("server");
        assert!(
            head.starts_with("post /base/api/v2/write?org=o&bucket=b&precision=ms http/1.1"),
            "{head}"
        );
        assert!(head.contains("\r\nauthorization: token t\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-encoding: gzip\r\n"), "{head}");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip");
        assert_eq!(text, lines);
    }

    #[tokio::test]
    async fn a_refused_write_is_counted_and_dropped_not_retried() {
        let (stats, requests) = write_one(vec![(
            400,
            r#"{"code":"invalid","message":"bad timestamp"}"#,
        )])
        .await;
        assert_eq!(requests, 1);
        assert_eq!(stats.lines_rejected.load(Ordering::Relaxed), 3);
        assert_eq!(stats.lines_written.load(Ordering::Relaxed), 0);
        assert_eq!(stats.buffered_lines.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_unavailable_server_is_retried_until_it_accepts() {
        let (stats, requests) = write_one(vec![(503, "busy"), (429, "slow down"), (204, "")]).await;
        assert_eq!(requests, 3);
        assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
        assert_eq!(stats.lines_written.load(Ordering::Relaxed), 3);
        assert_eq!(stats.lines_rejected.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn chunks_written_at_once_never_touch_the_disk_late_ones_are_spooled() {
        let dir = std::env::temp_dir().join(format!("dcwatt-influx-lazy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Shared::new(Arc::default(), 1 << 20, Some(dir.clone()));
        assert_eq!(s.recover().expect("empty spool"), 0);
        let files = || std::fs::read_dir(&dir).map_or(0, |d| d.count());
        // Until a write has succeeded, every chunk is spooled as it is sealed.
        s.seal("a v=1 1\n".to_owned(), 1);
        assert_eq!(files(), 1);
        let (id, _, _) = s.take().expect("a");
        s.done(id);
        assert_eq!(files(), 0);
        // InfluxDB up: a fresh chunk stays in memory; taken by a writer, it is not spooled
        // nor dropped for room, however old; a chunk waiting over a second is spooled.
        s.stats.up.store(true, Ordering::Relaxed);
        s.seal("b v=1 1\n".to_owned(), 1);
        s.seal("c v=1 1\n".to_owned(), 1);
        assert_eq!(files(), 0);
        let (b, _, _) = s.take().expect("b");
        if let Ok(mut buf) = s.buf.lock() {
            for c in buf.chunks.iter_mut() {
                c.sealed_at -= SPOOL_AFTER;
            }
        }
        s.seal(String::new(), 0);
        assert_eq!(files(), 1, "only the waiting chunk c is spooled");
        // A failed attempt gives b back; a second writer meanwhile has c (from disk).
        let (c, body, _) = s.take().expect("c");
        assert_eq!(&body[..], b"c v=1 1\n");
        s.release(b);
        assert_eq!(s.take().map(|t| t.0), Some(b));
        s.done(c);
        s.done(b);
        assert!(s.is_empty());
        assert_eq!(files(), 0);
        // At shutdown what is left in memory goes to the spool.
        s.seal("d v=1 1\n".to_owned(), 1);
        assert_eq!(s.spill_all(), 0);
        assert_eq!(files(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_chunks_and_counts_their_lines() {
        let s = shared(25);
        s.seal("a 1\n".repeat(3), 3); // 12 bytes
        s.seal("b 1\n".repeat(2), 2); // 8 bytes
        s.seal("c 1\n".repeat(2), 2); // 8 bytes: 28 > 25, the oldest goes
        assert_eq!(s.stats.lines_dropped.load(Ordering::Relaxed), 3);
        assert_eq!(s.stats.buffered_lines.load(Ordering::Relaxed), 4);
        let (id, body, lines) = s.take().expect("a chunk");
        assert_eq!((&body[..], lines), (&b"b 1\nb 1\n"[..], 2));
        s.done(id);
        assert_eq!(s.stats.buffered_bytes.load(Ordering::Relaxed), 8);
        // A chunk dropped while being written is not removed twice.
        s.done(id);
        assert_eq!(s.stats.buffered_lines.load(Ordering::Relaxed), 2);
    }
}
