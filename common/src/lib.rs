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

/// The civil (proleptic Gregorian) date of a day number, days since 1970-01-01, as
/// (year, month, day): Howard Hinnant's days-to-civil algorithm.
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the Unix epoch from the system clock.
///
/// The only clock read in `common`; pure code takes `now` as an argument instead.
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates_are_right_across_month_year_and_leap_day() {
        use super::civil_date;
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(20_513), (2026, 3, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }
}
