//! `rapl`: CPU package and DRAM energy from the Linux powercap sysfs (Intel RAPL, and AMD
//! Zen through the same driver).
//!
//! Zones are found by their `name` file, never by index (numbering differs between
//! machines). Only top-level `package-N` zones and their `dram` sub-zones are read: `core`
//! and `uncore` are inside the package, `psys` contains it, and `intel-rapl-mmio` zones
//! duplicate the package. Energies are published as counters with component
//! `cpu_package{N}` / `dram{N}` and never with a PUE `point`: RAPL is not server power.
//! The kernel counter wraps at `max_energy_range_uj`; this source unwraps it, so the
//! published counter only grows.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::Reading;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Source type name.
pub const KIND: &str = "rapl";

/// `[[sources]] type = "rapl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaplConfig {
    /// Root of sysfs (tests point it at a fixture tree).
    #[serde(default = "default_sysfs")]
    pub sysfs_root: PathBuf,
    /// Own interval, a multiple of the agent's. Must be shorter than the counter's wrap
    /// period (about 15 min at 300 W).
    pub interval_secs: Option<u64>,
}

pub(crate) fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}

/// One RAPL zone being followed.
#[derive(Debug, Clone)]
struct Zone {
    component: String,
    energy_file: PathBuf,
    max_range_uj: Option<u64>,
    last_raw_uj: Option<u64>,
    total_j: f64,
}

/// Why a zone list could not be made.
fn zones(root: &Path) -> Result<Vec<Zone>, SourceError> {
    let base = root.join("class/powercap");
    let entries = std::fs::read_dir(&base).map_err(|e| {
        SourceError::Unavailable(format!(
            "no powercap in {} ({e}): no RAPL on this host or kernel",
            base.display()
        ))
    })?;
    let mut dirs: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        // `intel-rapl:N` and `intel-rapl:N:M`; not the control type dir, not `intel-rapl-mmio:*`.
        .filter(|(n, _)| n.starts_with("intel-rapl:"))
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for (dir_name, path) in &dirs {
        let Ok(name) = std::fs::read_to_string(path.join("name")) else {
            continue;
        };
        let name = name.trim();
        let depth = dir_name.matches(':').count();
        let component = if depth == 1 {
            match name.strip_prefix("package-") {
                Some(n) => format!("cpu_package{n}"),
                None => continue, // psys and other platform zones
            }
        } else if name == "dram" {
            // intel-rapl:N:M → the package N it belongs to.
            let pkg = dir_name.split(':').nth(1).unwrap_or("0");
            format!("dram{pkg}")
        } else {
            continue; // core, uncore: inside the package
        };
        let max_range_uj = std::fs::read_to_string(path.join("max_energy_range_uj"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        out.push(Zone {
            component,
            energy_file: path.join("energy_uj"),
            max_range_uj,
            last_raw_uj: None,
            total_j: 0.0,
        });
    }
    if out.is_empty() {
        return Err(SourceError::Unavailable(format!(
            "no package zones under {}",
            base.display()
        )));
    }
    Ok(out)
}

fn read_uj(path: &Path) -> Result<u64, SourceError> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e| SourceError::Read(format!("{}: {e}", path.display()))),
        Err(e) => Err(explain(path, e)),
    }
}

/// Turns a read failure into what an operator needs to know.
fn explain(path: &Path, e: std::io::Error) -> SourceError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        SourceError::Unavailable(format!(
            "{} is readable by root only (kernel ≥ 5.10, CVE-2020-8694): run the agent as root, \
             or grant read access with a udev rule setting mode 0444 on energy_uj \
             (a security decision: it re-opens the PLATYPUS side channel)",
            path.display()
        ))
    } else {
        SourceError::Read(format!("{}: {e}", path.display()))
    }
}

/// Energy in µJ between two raw counter values, unwrapping once through `max_range`.
pub fn delta_uj(prev: u64, cur: u64, max_range: Option<u64>) -> Option<u64> {
    if cur >= prev {
        Some(cur - prev)
    } else {
        max_range.filter(|&m| m >= prev).map(|m| (m - prev) + cur)
    }
}

/// The RAPL reader.
pub struct RaplSource {
    zones: Vec<Zone>,
}

impl RaplSource {
    /// Finds the zones.
    ///
    /// # Errors
    /// No powercap tree or no package zone.
    pub fn new(cfg: &RaplConfig) -> Result<Self, SourceError> {
        Ok(RaplSource {
            zones: zones(&cfg.sysfs_root)?,
        })
    }
}

impl Source for RaplSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut first_error = None;
        for z in &mut self.zones {
            let raw = match read_uj(&z.energy_file) {
                Ok(v) => v,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if let Some(prev) = z.last_raw_uj {
                // Without a known range a backwards step is a reset we cannot bridge: the
                // published counter simply does not grow for that step.
                if let Some(d) = delta_uj(prev, raw, z.max_range_uj) {
                    z.total_j += d as f64 / 1e6;
                }
            }
            z.last_raw_uj = Some(raw);
            let mut r = Reading::counter("energy_j", z.total_j, now_ms).from_source(KIND);
            r.component = z.component.as_str().into();
            out.push(r);
        }
        match first_error {
            Some(e) if out.is_empty() => Err(e),
            Some(e) => Err(SourceError::Read(format!("some zones unreadable: {e}"))),
            None => Ok(()),
        }
    }
}

/// Says whether RAPL can be read here, and if not exactly why.
pub fn probe(root: &Path) -> Probe {
    match zones(root) {
        Err(e) => Probe {
            kind: KIND,
            available: false,
            detail: e.detail().to_owned(),
        },
        Ok(zs) => {
            let names: Vec<&str> = zs.iter().map(|z| z.component.as_str()).collect();
            match zs
                .iter()
                .map(|z| read_uj(&z.energy_file))
                .find_map(Result::err)
            {
                Some(e) => Probe {
                    kind: KIND,
                    available: false,
                    detail: e.detail().to_owned(),
                },
                None => Probe {
                    kind: KIND,
                    available: true,
                    detail: format!("zones: {}", names.join(", ")),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::fake::FakeSys;

    /// Two packages with DRAM, core/uncore sub-zones, psys, and an mmio duplicate.
    fn server() -> FakeSys {
        let s = FakeSys::new();
        let z = |dir: &str, name: &str, uj: u64| {
            s.set(&format!("class/powercap/{dir}/name"), name);
            s.set(&format!("class/powercap/{dir}/energy_uj"), &uj.to_string());
            s.set(
                &format!("class/powercap/{dir}/max_energy_range_uj"),
                "262143328850",
            );
        };
        z("intel-rapl:0", "package-0", 1_000_000);
        z("intel-rapl:0:0", "core", 500_000);
        z("intel-rapl:0:1", "dram", 200_000);
        z("intel-rapl:1", "package-1", 3_000_000);
        z("intel-rapl:1:0", "dram", 100_000);
        z("intel-rapl:2", "psys", 9_000_000);
        z("intel-rapl-mmio:0", "package-0", 1_000_000);
        s.set("class/powercap/intel-rapl/enabled", "1");
        s
    }

    fn read(src: &mut RaplSource, t: i64) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        src.read(t, &mut out).unwrap();
        assert!(out
            .iter()
            .all(|r| r.point.is_none() && r.kind == dcwatt_common::protocol::Kind::Counter));
        out.into_iter()
            .map(|r| (r.component.to_string(), r.value))
            .collect()
    }

    #[test]
    fn packages_and_dram_by_name_without_duplicates() {
        let s = server();
        let mut src = RaplSource::new(&RaplConfig {
            sysfs_root: s.root().to_owned(),
            interval_secs: None,
        })
        .unwrap();
        let first = read(&mut src, 0);
        let names: Vec<&str> = first.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            names,
            vec!["cpu_package0", "dram0", "cpu_package1", "dram1"]
        );
        assert!(
            first.iter().all(|(_, v)| *v == 0.0),
            "counters start at zero"
        );
        s.set("class/powercap/intel-rapl:0/energy_uj", "3000000");
        s.set("class/powercap/intel-rapl:1:0/energy_uj", "600000");
        let second = read(&mut src, 1000);
        assert_eq!(second[0], ("cpu_package0".into(), 2.0));
        assert_eq!(second[3], ("dram1".into(), 0.5));
    }

    #[test]
    fn wraparound_is_unwrapped() {
        let s = server();
        let mut src = RaplSource::new(&RaplConfig {
            sysfs_root: s.root().to_owned(),
            interval_secs: None,
        })
        .unwrap();
        s.set("class/powercap/intel-rapl:0/energy_uj", "262143000000");
        read(&mut src, 0);
        // 328,850 µJ to the top of the range, then 671,150 µJ after the wrap.
        s.set("class/powercap/intel-rapl:0/energy_uj", "671150");
        let after = read(&mut src, 1000);
        assert!((after[0].1 - 1.0).abs() < 1e-9, "{after:?}");
        assert_eq!(
            delta_uj(10, 5, None),
            None,
            "no range known: a reset, not energy"
        );
        assert_eq!(delta_uj(5, 10, None), Some(5));
    }

    #[test]
    fn an_unreadable_zone_does_not_stop_the_others() {
        let s = server();
        let mut src = RaplSource::new(&RaplConfig {
            sysfs_root: s.root().to_owned(),
            interval_secs: None,
        })
        .unwrap();
        // A directory where the counter should be: reading it fails.
        let f = s.root().join("class/powercap/intel-rapl:1/energy_uj");
        std::fs::remove_file(&f).unwrap();
        std::fs::create_dir(&f).unwrap();
        let mut out = Vec::new();
        let err = src.read(0, &mut out).unwrap_err();
        assert!(err.to_string().contains("intel-rapl:1"), "{err}");
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn permission_denied_says_how_to_grant_access() {
        let s = server();
        // Root reads anything, so the kernel's refusal is reproduced through the mapping.
        let e = explain(
            Path::new("/sys/class/powercap/intel-rapl:0/energy_uj"),
            std::io::ErrorKind::PermissionDenied.into(),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("root") && msg.contains("udev") && msg.contains("0444"),
            "{msg}"
        );
        let p = probe(s.root());
        assert!(p.available, "{}", p.detail);
        assert!(p.detail.contains("cpu_package1"));
        let none = probe(Path::new("/nonexistent"));
        assert!(!none.available && none.detail.contains("no powercap"));
    }
}
