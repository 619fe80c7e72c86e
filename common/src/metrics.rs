//! metrics: the registry `/metrics` renders. Each part of a binary that counts something
//! registers one [`Source`]; the endpoint loops over the registry in registration order,
//! so adding a part adds a line of wiring, not an edit to the endpoint.
//!
//! The text is the Prometheus exposition format 0.0.4, written by hand on purpose: the
//! family names, help texts, labels and value formatting are dcwatt's public contract
//! (docs/metrics.md), and an encoder that renames counter families (OpenMetrics drops
//! `_total` from the family name and adds `# EOF`) would break existing dashboards.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Something that contributes families to `/metrics`.
pub trait Source: Send + Sync {
    /// Writes this part's families.
    fn encode(&self, out: &mut Exposition);
}

/// Text being built for one scrape.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    /// Whether renamed families are also written under their deprecated names.
    deprecated: bool,
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`; `labels` is the inside of the braces, or empty.
    pub fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        // A float −0 (an empty sum, a product with −0) is written as 0.
        let value = value.to_string();
        let value = if value == "-0" { "0" } else { value.as_str() };
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
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
        self.text
    }

    /// Whether this scrape also carries the deprecated names of renamed families.
    pub fn deprecated_names(&self) -> bool {
        self.deprecated
    }

    /// A counter family renamed from `old`: written as `name`, and as `old` too (marked
    /// deprecated) while deprecated names are on.
    pub fn counter_renamed(&mut self, name: &str, old: &str, help: &str, v: &AtomicU64) {
        self.counter(name, help, v);
        if self.deprecated {
            self.counter(old, &format!("Deprecated: use {name}. {help}"), v);
        }
    }
}

/// For samples whose labels are built as they are written: `writeln!(out, ...)`.
impl Write for Exposition {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        Ok(())
    }
}

/// The sources of one binary, in the order they are rendered.
#[derive(Default)]
pub struct Registry(RwLock<Vec<Arc<dyn Source>>>, AtomicBool);

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

    /// Also writes renamed families under their old names (for one release after a
    /// rename; off by default, so that the exposition passes `promtool check metrics`).
    pub fn set_deprecated_names(&self, on: bool) {
        self.1.store(on, Ordering::Relaxed);
    }

    /// Every source's families, in registration order.
    pub fn render(&self) -> String {
        let mut out = Exposition {
            text: String::with_capacity(8192),
            deprecated: self.1.load(Ordering::Relaxed),
        };
        let sources = self.0.read().map(|v| v.clone()).unwrap_or_default();
        for s in &sources {
            s.encode(&mut out);
        }
        out.into_text()
    }
}

/// `dcwatt_build_info` and the standard `process_*` families of the running binary, as
/// every Prometheus client library writes them: CPU seconds, resident and virtual memory,
/// open and maximum file descriptors, start time. Read from `/proc/self` (Linux); absent
/// elsewhere.
#[derive(Debug)]
pub struct ProcessMetrics {
    /// The binary (`dcwatt-collector`, `dcwatt-agent`).
    pub program: &'static str,
    /// Its version.
    pub version: &'static str,
}

impl Source for ProcessMetrics {
    fn encode(&self, out: &mut Exposition) {
        out.family(
            "dcwatt_build_info",
            "gauge",
            "A constant 1, labelled with the program and its version.",
        );
        let _ = writeln!(
            out,
            "dcwatt_build_info{{program=\"{}\",version=\"{}\"}} 1",
            self.program, self.version
        );
        let Some(p) = proc_self() else { return };
        out.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        out.sample("process_cpu_seconds_total", "", p.cpu_seconds);
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.rss_bytes,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.vsize_bytes,
        );
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        );
        if let Some(n) = p.open_fds {
            out.gauge("process_open_fds", "Number of open file descriptors.", n);
        }
        if let Some(n) = p.max_fds {
            out.gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                n,
            );
        }
    }
}

struct ProcSelf {
    cpu_seconds: f64,
    rss_bytes: u64,
    vsize_bytes: u64,
    start_time_seconds: f64,
    open_fds: Option<usize>,
    max_fds: Option<u64>,
}

/// Clock ticks per second and page size: what Linux uses on every platform dcwatt ships
/// for (x86-64, arm64).
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_BYTES: u64 = 4096;

fn proc_self() -> Option<ProcSelf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: fields start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields from the state (3rd field of the line, f[0] here): utime 14, stime 15,
    // starttime 22, vsize 23, rss 24 (1-based over the whole line).
    let num = |i: usize| f.get(i - 3).and_then(|x| x.parse::<u64>().ok());
    let (utime, stime, start, vsize, rss) = (num(14)?, num(15)?, num(22)?, num(23)?, num(24)?);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<u64>().ok())
        })?;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    Some(ProcSelf {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        rss_bytes: rss * PAGE_BYTES,
        vsize_bytes: vsize,
        start_time_seconds: boot as f64 + start as f64 / TICKS_PER_SECOND,
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count),
        max_fds,
    })
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
    fn process_families_describe_this_process() {
        let mut out = Exposition::default();
        ProcessMetrics {
            program: "dcwatt-test",
            version: "9.9.9",
        }
        .encode(&mut out);
        let text = out.into_text();
        assert!(text.contains("dcwatt_build_info{program=\"dcwatt-test\",version=\"9.9.9\"} 1"));
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(
            value("process_resident_memory_bytes") > 1e6,
            "a test binary holds MBs"
        );
        assert!(value("process_open_fds") >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn renamed_families_keep_their_old_name_only_when_asked() {
        let r = Registry::default();
        struct Renamed(AtomicU64);
        impl Source for Renamed {
            fn encode(&self, out: &mut Exposition) {
                out.counter_renamed("new_total", "old_total", "Things.", &self.0);
            }
        }
        r.register(Arc::new(Renamed(AtomicU64::new(2))));
        assert!(!r.render().contains("old_total"));
        r.set_deprecated_names(true);
        let text = r.render();
        assert!(
            text.contains("new_total 2") && text.contains("old_total 2"),
            "{text}"
        );
        assert!(text.contains("Deprecated: use new_total."), "{text}");
    }

    #[test]
    fn minus_zero_is_written_as_zero() {
        let mut out = Exposition::default();
        out.sample("z", "", -0.0_f64);
        out.sample("z", "k=\"a\"", -0.0_f64 / 2500.0);
        assert_eq!(out.into_text(), "z 0\nz{k=\"a\"} 0\n");
    }
}
