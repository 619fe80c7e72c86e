//! metrics: the registry `/metrics` renders. Each part of a binary that counts something
//! registers one [`Source`]; the endpoint loops over the registry in registration order,
//! so adding a part adds a line of wiring, not an edit to the endpoint.
//!
//! The text is the Prometheus exposition format 0.0.4, written by hand on purpose: the
//! family names, help texts, labels and value formatting are dcwatt's public contract
//! (docs/metrics.md), and an encoder that renames counter families (OpenMetrics drops
//! `_total` from the family name and adds `# EOF`) would break existing dashboards.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Something that contributes families to `/metrics`.
pub trait Source: Send + Sync {
    /// Writes this part's families.
    fn encode(&self, out: &mut Exposition);
}

/// Text being built for one scrape.
#[derive(Debug, Default)]
pub struct Exposition(String);

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`; `labels` is the inside of the braces, or empty.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        // A float −0 (an empty sum, a product with −0) is written as 0.
        let value = value.to_string();
        let value = if value == "-0" { "0" } else { value.as_str() };
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    /// A counter family of one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, v: &AtomicU64) {
        self.family(name, "counter", help);
        self.sample(name, "", v.load(Ordering::Relaxed));
    }

    /// A gauge family of one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, "", value);
    }

    /// The text.
    pub fn into_text(self) -> String {
        self.0
    }
}

/// For samples whose labels are built as they are written: `writeln!(out, ...)`.
impl Write for Exposition {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.push_str(s);
        Ok(())
    }
}

/// The sources of one binary, in the order they are rendered.
#[derive(Default)]
pub struct Registry(RwLock<Vec<Arc<dyn Source>>>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.read().map_or(0, |v| v.len());
        write!(f, "Registry({n} sources)")
    }
}

impl Registry {
    /// Adds a source after those registered so far.
    pub fn register(&self, source: Arc<dyn Source>) {
        if let Ok(mut v) = self.0.write() {
            v.push(source);
        }
    }

    /// Every source's families, in registration order.
    pub fn render(&self) -> String {
        let mut out = Exposition(String::with_capacity(8192));
        let sources = self.0.read().map(|v| v.clone()).unwrap_or_default();
        for s in &sources {
            s.encode(&mut out);
        }
        out.into_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two(AtomicU64);

    impl Source for Two {
        fn encode(&self, out: &mut Exposition) {
            out.counter("x_total", "Xs.", &self.0);
            out.family("y", "gauge", "Ys.");
            out.sample("y", "k=\"a\"", 1.5);
        }
    }

    #[test]
    fn sources_render_in_registration_order() {
        let r = Registry::default();
        r.register(Arc::new(Two(AtomicU64::new(3))));
        r.register(Arc::new(Two(AtomicU64::new(4))));
        let text = r.render();
        let expected = "# HELP x_total Xs.\n# TYPE x_total counter\nx_total 3\n\
                        # HELP y Ys.\n# TYPE y gauge\ny{k=\"a\"} 1.5\n";
        assert_eq!(
            text,
            format!("{expected}{}", expected.replace(" 3\n", " 4\n"))
        );
    }

    #[test]
    fn minus_zero_is_written_as_zero() {
        let mut out = Exposition::default();
        out.sample("z", "", -0.0_f64);
        out.sample("z", "k=\"a\"", -0.0_f64 / 2500.0);
        assert_eq!(out.into_text(), "z 0\nz{k=\"a\"} 0\n");
    }
}
