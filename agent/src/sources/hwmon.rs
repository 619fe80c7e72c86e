//! `hwmon`: power, energy and temperatures from the Linux hwmon sysfs ABI.
//!
//! Units on the wire of this ABI: power in µW, energy in µJ, temperature in m°C; converted
//! here, once. Devices are identified by their `name` file:
//! - `power_meter` (ACPI 4.0 power meter) is whole-system input power: published with
//!   `point = it_input`.
//! - `amdgpu` power is a GPU component (`gpu{N}`), inside the server's input power.
//! - Any other device's power and energy are components, never PUE points.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::{Point, Reading};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Source type name.
pub const KIND: &str = "hwmon";

/// `[[sources]] type = "hwmon"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwmonConfig {
    /// Root of sysfs (tests point it at a fixture tree).
    #[serde(default = "super::rapl::default_sysfs")]
    pub sysfs_root: PathBuf,
    /// Publish temperatures too.
    #[serde(default = "yes")]
    pub temperatures: bool,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq)]
enum Unit {
    /// µW → W, gauge.
    Power,
    /// µJ → J, counter.
    Energy,
    /// m°C → °C, gauge.
    Temp,
}

/// One sysfs value file and how to publish it.
#[derive(Debug, Clone)]
struct Channel {
    file: PathBuf,
    unit: Unit,
    component: String,
    point: Option<Point>,
    /// For a `power*_average` file: its averaging window (`power*_average_interval`, ms),
    /// so the collector integrates it over that window.
    avg_ms: Option<u64>,
}

fn sanitize(s: &str) -> String {
    let id: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "unnamed".to_owned()
    } else {
        id
    }
}

/// Lists the channels under `root/class/hwmon`.
fn channels(root: &Path, temperatures: bool) -> Result<Vec<Channel>, SourceError> {
    let base = root.join("class/hwmon");
    let entries = std::fs::read_dir(&base)
        .map_err(|e| SourceError::Unavailable(format!("no hwmon in {} ({e})", base.display())))?;
    let mut devices: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    devices.sort();
    let mut out = Vec::new();
    let mut gpus = 0;
    for dev in devices {
        let Ok(name) = std::fs::read_to_string(dev.join("name")) else {
            continue;
        };
        let name = sanitize(&name);
        let Ok(files) = std::fs::read_dir(&dev) else {
            continue;
        };
        let mut files: Vec<String> = files
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let gpu = (name == "amdgpu").then(|| {
            gpus += 1;
            format!("gpu{}", gpus - 1)
        });
        // Prefer the instantaneous reading; fall back to the average (the ACPI power meter
        // only has the average).
        let has_input = files
            .iter()
            .any(|f| f.starts_with("power") && f.ends_with("_input"));
        for f in &files {
            let (unit, stem) = if f.starts_with("power")
                && (f.ends_with("_input") || (!has_input && f.ends_with("_average")))
            {
                (
                    Unit::Power,
                    f.trim_end_matches("_input").trim_end_matches("_average"),
                )
            } else if f.starts_with("energy") && f.ends_with("_input") {
                (Unit::Energy, f.trim_end_matches("_input"))
            } else if temperatures && f.starts_with("temp") && f.ends_with("_input") {
                (Unit::Temp, f.trim_end_matches("_input"))
            } else {
                continue;
            };
            let label = std::fs::read_to_string(dev.join(format!("{stem}_label")))
                .ok()
                .map(|l| sanitize(&l));
            let (component, point) = match (&unit, name.as_str(), &gpu) {
                (Unit::Power | Unit::Energy, "power_meter", _) => {
                    ("system".to_owned(), Some(Point::ItInput))
                }
                (Unit::Power | Unit::Energy, _, Some(g)) => (g.clone(), None),
                (_, _, Some(g)) => (
                    format!("{g}_{}", label.unwrap_or_else(|| stem.to_owned())),
                    None,
                ),
                _ => (
                    format!("{name}_{}", label.unwrap_or_else(|| stem.to_owned())),
                    None,
                ),
            };
            let avg_ms = f
                .ends_with("_average")
                .then(|| std::fs::read_to_string(dev.join(format!("{stem}_average_interval"))))
                .and_then(|r| r.ok())
                .and_then(|t| t.trim().parse::<u64>().ok())
                .filter(|ms| (1..=86_400_000).contains(ms));
            out.push(Channel {
                file: dev.join(f),
                avg_ms,
                unit,
                component: sanitize(&component),
                point,
            });
        }
    }
    if out.is_empty() {
        return Err(SourceError::Unavailable(format!(
            "no power, energy or temperature sensors under {}",
            base.display()
        )));
    }
    Ok(out)
}

/// The hwmon reader.
pub struct HwmonSource {
    channels: Vec<Channel>,
}

impl HwmonSource {
    /// Finds the sensors.
    ///
    /// # Errors
    /// No hwmon tree or no usable sensor.
    pub fn new(cfg: &HwmonConfig) -> Result<Self, SourceError> {
        Ok(HwmonSource {
            channels: channels(&cfg.sysfs_root, cfg.temperatures)?,
        })
    }
}

impl Source for HwmonSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut failed = Vec::new();
        for c in &self.channels {
            let raw: f64 = match std::fs::read_to_string(&c.file).map(|s| s.trim().parse::<f64>()) {
                Ok(Ok(v)) => v,
                _ => {
                    failed.push(c.file.display().to_string());
                    continue;
                }
            };
            let mut r = match c.unit {
                Unit::Power => Reading::gauge("power_w", raw / 1e6, now_ms),
                Unit::Energy => Reading::counter("energy_j", raw / 1e6, now_ms),
                Unit::Temp => Reading::gauge("temp_c", raw / 1e3, now_ms),
            }
            .from_source(KIND);
            r.component = c.component.as_str().into();
            r.point = c.point;
            r.avg_ms = c.avg_ms;
            out.push(r);
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Read(format!(
                "unreadable: {}",
                failed.join(", ")
            )))
        }
    }
}

/// Says what hwmon offers here.
pub fn probe(root: &Path) -> Probe {
    match channels(root, true) {
        Err(e) => Probe {
            kind: KIND,
            available: false,
            detail: e.detail().to_owned(),
        },
        Ok(cs) => {
            let system = cs.iter().any(|c| c.point == Some(Point::ItInput));
            Probe {
                kind: KIND,
                available: true,
                detail: format!(
                    "{} sensors{}",
                    cs.len(),
                    if system {
                        ", including whole-system power (ACPI power_meter)"
                    } else {
                        ""
                    }
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::fake::FakeSys;

    fn host() -> FakeSys {
        let s = FakeSys::new();
        // ACPI power meter: average only, whole-system input power.
        s.set("class/hwmon/hwmon0/name", "power_meter");
        s.set("class/hwmon/hwmon0/power1_average", "412500000");
        s.set("class/hwmon/hwmon0/power1_average_interval", "1000");
        // amdgpu: instantaneous and average; the instantaneous one is used.
        s.set("class/hwmon/hwmon1/name", "amdgpu");
        s.set("class/hwmon/hwmon1/power1_average", "95000000");
        s.set("class/hwmon/hwmon1/power1_input", "101250000");
        s.set("class/hwmon/hwmon1/temp1_input", "61000");
        s.set("class/hwmon/hwmon1/temp1_label", "edge");
        // CPU temperatures and an energy counter.
        s.set("class/hwmon/hwmon2/name", "k10temp");
        s.set("class/hwmon/hwmon2/temp1_input", "48250");
        s.set("class/hwmon/hwmon2/temp1_label", "Tctl");
        s.set("class/hwmon/hwmon3/name", "amd_energy");
        s.set("class/hwmon/hwmon3/energy1_input", "123456789");
        s.set("class/hwmon/hwmon3/energy1_label", "Esocket0");
        s.set("class/hwmon/hwmon4/name", "nvme");
        s
    }

    #[test]
    fn units_points_and_components() {
        let s = host();
        let cfg = HwmonConfig {
            sysfs_root: s.root().to_owned(),
            temperatures: true,
            interval_secs: None,
        };
        let mut src = HwmonSource::new(&cfg).unwrap();
        let mut out = Vec::new();
        src.read(7, &mut out).unwrap();
        let find = |component: &str, metric: &str| {
            out.iter()
                .find(|r| r.component == component && r.metric == metric)
                .unwrap_or_else(|| panic!("{component} {metric} missing: {out:#?}"))
        };
        let system = find("system", "power_w");
        assert_eq!((system.value, system.point), (412.5, Some(Point::ItInput)));
        assert_eq!(
            system.avg_ms,
            Some(1000),
            "the meter's average says its window"
        );
        let gpu = find("gpu0", "power_w");
        assert_eq!((gpu.value, gpu.point, gpu.avg_ms), (101.25, None, None));
        assert_eq!(find("gpu0_edge", "temp_c").value, 61.0);
        assert_eq!(find("k10temp_Tctl", "temp_c").value, 48.25);
        let e = find("amd_energy_Esocket0", "energy_j");
        assert_eq!(
            (e.value, e.kind, e.point),
            (123.456789, dcwatt_common::protocol::Kind::Counter, None)
        );
        assert_eq!(
            out.len(),
            5,
            "one power per device, no duplicate average: {out:#?}"
        );
        assert_eq!(
            out.iter()
                .filter(|r| r.point == Some(Point::ItInput))
                .count(),
            1
        );
    }

    #[test]
    fn temperatures_can_be_left_out_and_probe_tells() {
        let s = host();
        let cfg = HwmonConfig {
            sysfs_root: s.root().to_owned(),
            temperatures: false,
            interval_secs: None,
        };
        let mut out = Vec::new();
        HwmonSource::new(&cfg).unwrap().read(7, &mut out).unwrap();
        assert!(out.iter().all(|r| r.metric != "temp_c"));
        let p = probe(s.root());
        assert!(
            p.available && p.detail.contains("whole-system"),
            "{}",
            p.detail
        );
        assert!(!probe(Path::new("/nonexistent")).available);
    }
}
