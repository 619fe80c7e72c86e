//! Tracing set-up and a rate limiter for warnings that bad input can repeat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Installs the fmt subscriber. `RUST_LOG` wins; otherwise `default_filter` applies.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
