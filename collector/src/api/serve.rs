//! The HTTP server: the API's router on hyper, with the limits a public listener needs.
//!
//! - At most `max_connections` connections at once; one more is answered `503` and closed
//!   at once (counted), so idle or half-sent connections can never take the file
//!   descriptors that the state, the history and the broker need.
//! - A client has `header_timeout` to send its request headers, on a new connection and
//!   between requests on a kept-alive one; then the connection is closed.
//! - A failing `accept` (out of file descriptors) is counted and logged at most once per
//!   10 s, and the loop waits before it tries again instead of spinning.

use axum::Router;
use dcwatt_common::logging::RateLimiter;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The listener's limits (`[http]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Connections served at once (`http.max_connections`).
    pub max_connections: usize,
    /// Time a client has to send its request headers (`http.header_timeout_secs`).
    pub header_timeout: Duration,
}

/// Counters shown on `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections refused at `max_connections`.
    pub refused: AtomicU64,
    /// `accept` failures (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Open now.
    pub open: AtomicU64,
}

impl dcwatt_common::metrics::Source for HttpStats {
    fn encode(&self, o: &mut dcwatt_common::metrics::Exposition) {
        o.counter(
            "dcwatt_http_connections_total",
            "HTTP connections accepted and served.",
            &self.accepted,
        );
        o.counter(
            "dcwatt_http_connections_refused_total",
            "HTTP connections refused at http.max_connections (answered 503).",
            &self.refused,
        );
        o.counter(
            "dcwatt_http_accept_errors_total",
            "HTTP accept failures (e.g. out of file descriptors).",
            &self.accept_errors,
        );
        o.gauge(
            "dcwatt_http_connections_open",
            "HTTP connections open now.",
            self.open.load(Ordering::Relaxed),
        );
    }
}

/// What a refused connection is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\nretry-after: 1\r\n\r\n";

/// Serves `router` on `listener` until `stop`; then the open connections finish their
/// requests (graceful) and it returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<HttpStats>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut errors = RateLimiter::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(held) = errors.allow("accept", Instant::now()) {
                    tracing::error!(error = %e, suppressed = held, "cannot accept HTTP connections");
                }
                // Out of descriptors: waiting lets connections close instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = stream.try_write(BUSY);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let service = TowerToHyperService::new(router.clone());
        let (stats, stop) = (stats.clone(), stop.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    // Wait (bounded by the shutdown's grace) for the open connections to finish.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}
