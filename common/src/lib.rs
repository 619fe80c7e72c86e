//! Shared pieces of dcwatt that both binaries need, and nothing that runs a loop.
//!
//! - [`protocol`]: wire protocol v1 — topics, payload types, identifiers, validation.
//! - [`units`]: vendor scale factors applied exactly, once, at the edge.
//! - [`settings`]: loading configuration from file and `DCWATT__` environment, with every
//!   problem reported at once by its dotted path.
//! - [`mqtt`]: the MQTT connection section both binaries share (host, port, credentials,
//!   TLS), validated before any `rumqttc` option is built.
//! - [`backoff`]: exponential backoff with jitter for reconnect and retry loops.
//! - [`live`]: a shared value that a reload (SIGHUP) may replace.
//! - [`logging`]: tracing set-up and a rate limiter for repeated warnings.
//! - [`metrics`]: the `/metrics` registry: one source per part, rendered in order.
//! - [`secret`]: a string that never prints.
//! - [`service`]: signals (stop, reload), readiness and watchdog for the service manager.
//! - [`shutdown`]: stopping in named phases with one grace period, naming what it abandons.
//! - [`state_dir`]: the one directory a binary writes to, checked before it starts.
//!
//! `common` depends on neither binary and does no I/O beyond reading a secret or
//! certificate file, checking the state directory, and talking to the service manager.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod protocol;
pub mod secret;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod state_dir;
pub mod units;

/// The dcwatt version both binaries report (agent births carry it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch from the system clock.
///
/// The only clock read in `common`; pure code takes `now` as an argument instead.
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
