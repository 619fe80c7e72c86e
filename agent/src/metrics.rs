//! The agent's own `/metrics` (`http.listen`, off by default): its sources' reads, errors
//! and durations, batches built, queued, spooled, published and dropped, the broker
//! connection and the spool's size, for the Prometheus that already watches the host.
//!
//! The server is a few lines over a TCP listener rather than an HTTP framework: it answers
//! `GET /metrics` (and `/` with a pointer to it), one request per connection, and keeps the
//! agent as small as it is. Must not: block the sampling or the publisher, or hold more
//! than [`MAX_CONNECTIONS`] connections.

use crate::scheduler::{AgentStats, SourceStat};
use dcwatt_common::metrics::{Exposition, Registry, Source};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Connections served at once; more are closed at once (and counted).
pub const MAX_CONNECTIONS: usize = 16;
/// A request must arrive whole within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// The agent's families.
pub struct AgentFamilies {
    /// Shared counters.
    pub stats: Arc<AgentStats>,
    /// Each source's kind, position in the configuration and reads.
    pub sources: Vec<(&'static str, usize, Arc<SourceStat>)>,
    /// The spool's size bound, when there is a spool.
    pub spool_max_bytes: Option<u64>,
    /// Connections refused at [`MAX_CONNECTIONS`].
    pub refused: Arc<AtomicU64>,
}

impl Source for AgentFamilies {
    fn encode(&self, o: &mut Exposition) {
        let st = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        o.counter(
            "dcwatt_agent_batches_built_total",
            "Batches assembled from the sources' readings.",
            &st.batches_built,
        );
        o.counter(
            "dcwatt_agent_batches_published_total",
            "Batches handed to the broker connection (replays from the spool included).",
            &st.batches_published,
        );
        o.counter(
            "dcwatt_agent_batches_spooled_total",
            "Batches written to the spool while the broker was away.",
            &st.batches_spooled,
        );
        o.counter(
            "dcwatt_agent_batches_dropped_total",
            "Batches lost: publish queue full without a spool, spool full (oldest dropped), or a spool write failure.",
            &st.batches_dropped,
        );
        o.gauge(
            "dcwatt_agent_queue_batches",
            "Batches waiting for the publisher.",
            load(&st.queued),
        );
        o.gauge(
            "dcwatt_agent_last_batch_timestamp_seconds",
            "When the last batch was built, seconds since the epoch (0: none yet).",
            load(&st.last_batch_ms) as f64 / 1000.0,
        );
        if let Some(max) = self.spool_max_bytes {
            o.gauge(
                "dcwatt_agent_spool_batches",
                "Batches in the spool until the broker has them.",
                load(&st.spool_batches),
            );
            o.gauge(
                "dcwatt_agent_spool_bytes",
                "Bytes the spool holds.",
                load(&st.spool_bytes),
            );
            o.counter(
                "dcwatt_agent_batches_acknowledged_total",
                "Spooled batches the broker acknowledged (PUBACK), and so taken off the spool.",
                &st.batches_acknowledged,
            );
            o.counter(
                "dcwatt_agent_spool_syncs_total",
                "Syncs of the spool to the disk: one for all the batches written in a second that were not yet acknowledged.",
                &st.spool_syncs,
            );
            o.gauge(
                "dcwatt_agent_spool_max_bytes",
                "The spool's size bound (spool.max_mib); beyond it the oldest batches are dropped.",
                max,
            );
        }
        o.gauge(
            "dcwatt_agent_broker_connected",
            "1 while connected to the broker.",
            u8::from(st.connected.load(Ordering::Relaxed)),
        );
        o.counter(
            "dcwatt_agent_broker_connections_total",
            "Connections to the broker made.",
            &st.connections,
        );
        o.counter(
            "dcwatt_agent_broker_connection_errors_total",
            "Connection attempts that failed and connections lost.",
            &st.connection_errors,
        );
        o.counter(
            "dcwatt_agent_publish_errors_total",
            "Publishes the MQTT client refused.",
            &st.publish_errors,
        );
        let per_source = |o: &mut Exposition,
                          name: &str,
                          kind: &str,
                          help: &str,
                          f: &dyn Fn(&SourceStat) -> String| {
            o.family(name, kind, help);
            for (source, index, s) in &self.sources {
                o.sample(
                    name,
                    &format!("source=\"{source}\",index=\"{index}\""),
                    f(s),
                );
            }
        };
        per_source(
            o,
            "dcwatt_agent_source_reads_total",
            "counter",
            "Reads of each configured source (index: its place in [[sources]]).",
            &|s| load(&s.reads).to_string(),
        );
        per_source(
            o,
            "dcwatt_agent_source_read_errors_total",
            "counter",
            "Reads of each source that failed (logged, at most once a minute per error).",
            &|s| load(&s.errors).to_string(),
        );
        per_source(
            o,
            "dcwatt_agent_source_read_seconds_total",
            "counter",
            "Time spent reading each source, summed: rate() / rate(reads) is the mean read time.",
            &|s| (load(&s.nanos) as f64 / 1e9).to_string(),
        );
        per_source(
            o,
            "dcwatt_agent_source_last_read_seconds",
            "gauge",
            "How long each source's last read took.",
            &|s| (load(&s.last_nanos) as f64 / 1e9).to_string(),
        );
        o.counter(
            "dcwatt_agent_http_connections_refused_total",
            "Connections to /metrics closed at once because 16 were being served.",
            &self.refused,
        );
    }
}

/// Serves `registry` on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    refused: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &registry)).await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut s: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return reply(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            )
            .await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = registry.render();
            reply(
                &mut s,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", "/") => {
            reply(
                &mut s,
                "200 OK",
                "text/plain",
                "dcwatt agent: metrics at /metrics\n",
            )
            .await
        }
        ("GET", _) => {
            reply(
                &mut s,
                "404 Not Found",
                "text/plain",
                "not found: try /metrics\n",
            )
            .await
        }
        _ => reply(&mut s, "405 Method Not Allowed", "text/plain", "only GET\n").await,
    }
}

async fn reply(s: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(request.as_bytes()).await.expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn it_answers_metrics_and_only_that() {
        let stats = Arc::new(AgentStats::default());
        stats.batches_built.store(7, Ordering::Relaxed);
        let read = Arc::new(SourceStat::default());
        read.reads.store(3, Ordering::Relaxed);
        read.errors.store(1, Ordering::Relaxed);
        read.nanos.store(1_500_000_000, Ordering::Relaxed);
        let registry = Arc::new(Registry::default());
        let refused = Arc::new(AtomicU64::new(0));
        registry.register(Arc::new(AgentFamilies {
            stats,
            sources: vec![("rapl", 0, read)],
            spool_max_bytes: Some(1024),
            refused: refused.clone(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, registry, refused, cancel.clone()));

        let ok = get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(
            ok.contains("\ndcwatt_agent_batches_built_total 7\n"),
            "{ok}"
        );
        assert!(
            ok.contains("dcwatt_agent_source_read_errors_total{source=\"rapl\",index=\"0\"} 1\n")
        );
        assert!(ok
            .contains("dcwatt_agent_source_read_seconds_total{source=\"rapl\",index=\"0\"} 1.5\n"));
        assert!(ok.contains("dcwatt_agent_spool_max_bytes 1024\n"), "{ok}");
        let body = ok.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        assert!(
            ok.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{ok}"
        );

        let missing = get(port, "GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(port, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(get(port, &huge).await.starts_with("HTTP/1.1 431"));
        cancel.cancel();
    }
}
