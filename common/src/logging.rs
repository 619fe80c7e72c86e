//! Tracing set-up (`log.level`, `log.format`, reloadable level) and a rate limiter for
//! warnings that bad input can repeat.

use crate::settings::{Loader, Problems};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (ANSI colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields as JSON values (for log shippers).
    Json,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogRaw {
    level: String,
    format: String,
}

impl Default for LogRaw {
    fn default() -> Self {
        LogRaw {
            level: "info".to_owned(),
            format: "text".to_owned(),
        }
    }
}

/// The validated `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Level or filter directives (`info`, `warn,dcwatt_collector=debug`).
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl LogSettings {
    /// Reads and checks `[log]`; problems are recorded at `log.level` / `log.format`.
    pub fn from_loader(l: &Loader, p: &mut Problems) -> LogSettings {
        let raw: LogRaw = l.get_or_default("log", p);
        if let Err(e) = EnvFilter::builder().parse(&raw.level) {
            p.push(
                "log.level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or filter: {e}",
                    raw.level
                ),
            );
        }
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                p.push(
                    "log.format",
                    format!("{other:?} is not a log format (text or json)"),
                );
                LogFormat::Text
            }
        };
        LogSettings {
            level: raw.level,
            format,
        }
    }
}

/// Changes the level of the installed subscriber (SIGHUP).
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    extra: String,
    from_env: bool,
}

impl LogHandle {
    /// Applies `level` (plus the binary's fixed directives), and logs when it cannot: when
    /// `RUST_LOG` is set the environment keeps winning over the configuration.
    pub fn apply_level(&self, level: &str) {
        if self.from_env {
            tracing::info!("RUST_LOG is set: it keeps deciding the log level");
            return;
        }
        let applied = EnvFilter::builder()
            .parse(join_directives(level, &self.extra))
            .map_err(|e| e.to_string())
            .and_then(|filter| self.handle.reload(filter).map_err(|e| e.to_string()));
        if let Err(e) = applied {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

fn join_directives(level: &str, extra: &str) -> String {
    if extra.is_empty() {
        level.to_owned()
    } else {
        format!("{level},{extra}")
    }
}

/// Installs the subscriber on standard error: `RUST_LOG` wins; otherwise `settings.level`
/// followed by `extra` (directives the binary always adds, e.g. `rumqttd=off`). Colour only
/// when standard error is a terminal. Returns `None` when a subscriber was already set
/// (tests), keeping the first.
pub fn init(settings: &LogSettings, extra: &str) -> Option<LogHandle> {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::builder()
            .parse(join_directives(&settings.level, extra))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    // The level filter belongs to the log lines only, so that the embedded broker's
    // refusals are counted even while its lines are off.
    let once = once_per_place(NOISY_TARGETS, Duration::from_secs(10));
    let installed = match settings.format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi)
                    .with_filter(once)
                    .with_filter(filter),
            )
            .with(broker_refusals())
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(once)
                    .with_filter(filter),
            )
            .with(broker_refusals())
            .try_init(),
    };
    installed.ok().map(|()| LogHandle {
        handle,
        extra: extra.to_owned(),
        from_env,
    })
}

/// Dependencies that can log in a tight loop: the embedded broker (rumqttd) retries a
/// failed `accept` at once and logs each failure, thousands of lines a second when
/// descriptors run out.
pub const NOISY_TARGETS: &[&str] = &["rumqttd"];

/// Lets through at most one event per place in the code (callsite) every `period` for
/// targets under any of `prefixes`; every other event passes. A flood of the same line
/// from a dependency becomes one line per period.
pub fn once_per_place<S: tracing::Subscriber>(
    prefixes: &'static [&'static str],
    period: Duration,
) -> impl tracing_subscriber::layer::Filter<S> {
    let last: std::sync::Mutex<HashMap<&'static str, Instant>> = std::sync::Mutex::default();
    tracing_subscriber::filter::dynamic_filter_fn(move |m, _| {
        if !m.is_event() || !prefixes.iter().any(|p| m.target().starts_with(p)) {
            return true;
        }
        let now = Instant::now();
        let Ok(mut last) = last.lock() else {
            return true;
        };
        match last.get(m.name()) {
            Some(t) if now.duration_since(*t) < period => false,
            _ => {
                last.insert(m.name(), now);
                true
            }
        }
    })
}

/// Packets the embedded broker refused for their size (over `broker` max payload),
/// counted from its own error events: rumqttd drops such a connection and tells its
/// embedder nothing else.
pub static BROKER_PACKETS_TOO_LARGE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Counts the embedded broker's refusals of oversized packets
/// ([`BROKER_PACKETS_TOO_LARGE`]); sees rumqttd's ERROR events only.
fn broker_refusals<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    struct Refusals;
    struct Find(bool);
    impl tracing::field::Visit for Find {
        fn record_debug(&mut self, _: &tracing::field::Field, v: &dyn std::fmt::Debug) {
            self.0 = self.0 || format!("{v:?}").contains("PayloadSizeLimitExceeded");
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Refusals {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut found = Find(false);
            e.record(&mut found);
            if found.0 {
                BROKER_PACKETS_TOO_LARGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    Refusals.with_filter(tracing_subscriber::filter::filter_fn(|m| {
        m.is_event() && m.target().starts_with("rumqttd") && *m.level() == tracing::Level::ERROR
    }))
}

/// Shows a string that came from the network or a file with its control characters
/// escaped (`\n`, `\u{1b}`), so that no input can start a line of its own or forge a log
/// record.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Lets one message per key through per period and counts what it held back, so a flood of
/// bad input yields one WARN line per reason and period, never one per message.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    last: HashMap<String, (Instant, u64)>,
}

impl RateLimiter {
    /// A limiter that lets one message per key through every `period`.
    pub fn new(period: Duration) -> Self {
        RateLimiter {
            period,
            last: HashMap::new(),
        }
    }

    /// `Some(suppressed)` when a message for `key` may be logged now, with the number held
    /// back since the last one; `None` when it should be held back.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.period => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let held = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(held)
            }
            None => {
                self.last.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_in_a_tight_loop_logs_once_per_period() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
            fn on_event(
                &self,
                _: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(
            Count(seen.clone()).with_filter(once_per_place(&["rumqttd"], Duration::from_secs(10))),
        );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..10_000 {
                tracing::error!(target: "rumqttd::server::broker", "Unable to accept socket.");
            }
            for _ in 0..3 {
                tracing::error!(target: "dcwatt_collector::run", "ours");
            }
        });
        assert_eq!(seen.load(Ordering::Relaxed), 1 + 3);
    }

    #[test]
    fn input_cannot_start_a_log_line() {
        let shown = Escaped("site\n2026-12-02T00:00:00Z ERROR forged\u{1b}[31m 电").to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "site\\n2026-12-02T00:00:00Z ERROR forged\\u{1b}[31m 电"
        );
    }

    #[test]
    fn one_per_period_and_counts_the_rest() {
        let mut r = RateLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.allow("nan", t0), Some(0));
        assert_eq!(r.allow("nan", t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow("nan", t0 + Duration::from_secs(2)), None);
        assert_eq!(r.allow("other", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(r.allow("nan", t0 + Duration::from_secs(11)), Some(2));
    }
}
