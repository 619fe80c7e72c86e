//! `sysinfo`: CPU utilization, load average, memory and disk capacity through the sysinfo
//! crate (procfs on Linux). Load and capacity, not power: these readings carry no `point`.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::Reading;
use serde::Deserialize;
use sysinfo::{Disks, System};

/// Source type name.
pub const KIND: &str = "sysinfo";

/// `[[sources]] type = "sysinfo"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysinfoConfig {
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

/// Keeps the `System` between reads: CPU utilization is a difference between two refreshes.
pub struct SysinfoSource {
    sys: System,
    disks: Disks,
}

impl SysinfoSource {
    /// Takes the first CPU sample, so the next read has a difference to report.
    ///
    /// # Errors
    /// This platform is not supported by sysinfo.
    pub fn new() -> Result<Self, SourceError> {
        let mut sys = System::new().map_err(|e| SourceError::Unavailable(e.to_string()))?;
        sys.refresh_cpu_usage();
        let disks = Disks::new_with_refreshed_list()
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        Ok(SysinfoSource { sys, disks })
    }
}

impl Source for SysinfoSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        let cpu = f64::from(self.sys.global_cpu_usage()) / 100.0;
        out.push(Reading::gauge("cpu_util", cpu.clamp(0.0, 1.0), now_ms).from_source(KIND));
        if let Ok(load) = System::load_average() {
            out.push(Reading::gauge("load_1m", load.one, now_ms).from_source(KIND));
        }
        out.push(
            Reading::gauge("mem_used_bytes", self.sys.used_memory() as f64, now_ms)
                .from_source(KIND),
        );
        out.push(
            Reading::gauge("mem_total_bytes", self.sys.total_memory() as f64, now_ms)
                .from_source(KIND),
        );
        let (mut total, mut avail) = (0u64, 0u64);
        for d in self.disks.iter() {
            total = total.saturating_add(d.total_space());
            avail = avail.saturating_add(d.available_space());
        }
        out.push(Reading::gauge("disk_total_bytes", total as f64, now_ms).from_source(KIND));
        out.push(
            Reading::gauge(
                "disk_used_bytes",
                total.saturating_sub(avail) as f64,
                now_ms,
            )
            .from_source(KIND),
        );
        Ok(())
    }
}

/// Reads once and reports what it saw.
pub fn probe() -> Probe {
    match SysinfoSource::new() {
        Ok(mut s) => {
            let mut out = Vec::new();
            match s.read(dcwatt_common::now_ms(), &mut out) {
                Ok(()) => Probe {
                    kind: KIND,
                    available: true,
                    detail: format!(
                        "{} CPUs, {:.1} GiB memory, {} metrics",
                        s.sys.cpus().len(),
                        s.sys.total_memory() as f64 / (1u64 << 30) as f64,
                        out.len()
                    ),
                },
                Err(e) => Probe {
                    kind: KIND,
                    available: false,
                    detail: e.to_string(),
                },
            }
        }
        Err(e) => Probe {
            kind: KIND,
            available: false,
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        let mut s = SysinfoSource::new().unwrap();
        let mut out = Vec::new();
        s.read(1_000, &mut out).unwrap();
        let get = |m: &str| out.iter().find(|r| r.metric == m).map(|r| r.value);
        let util = get("cpu_util").unwrap();
        assert!((0.0..=1.0).contains(&util));
        assert!(get("mem_total_bytes").unwrap() > 0.0);
        assert!(get("mem_used_bytes").unwrap() <= get("mem_total_bytes").unwrap());
        assert!(out
            .iter()
            .all(|r| r.point.is_none() && r.source.as_deref() == Some(KIND)));
    }
}
