//! Shared pieces of dcwatt that both binaries need, and nothing that runs a loop.
//!
//! - [`protocol`]: wire protocol v1 — topics, payload types, identifiers, validation.
//! - [`units`]: SI units as types (`Watts`, `Joules`, `TimestampMs`).
//! - [`settings`]: loading configuration from file and `DCWATT__` environment, with every
//!   problem reported at once by its dotted path.
//! - [`mqtt`]: the MQTT connection section both binaries share (host, port, credentials,
//!   TLS), validated before any `rumqttc` option is built.
//! - [`backoff`]: exponential backoff with jitter for reconnect and retry loops.
//! - [`logging`]: tracing set-up and a rate limiter for repeated warnings.
//! - [`secret`]: a string that never prints.
//! - [`service`]: signals (stop, reload), readiness and watchdog for the service manager.
//! - [`state_dir`]: the one directory a binary writes to, checked before it starts.
//!
//! `common` depends on neither binary and does no I/O beyond reading a secret or
//! certificate file, checking the state directory, and talking to the service manager.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod logging;
pub mod mqtt;
pub mod protocol;
pub mod secret;
pub mod service;
pub mod settings;
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
