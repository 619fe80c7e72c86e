//! `nvml`: NVIDIA GPUs through NVML (the nvml-wrapper crate loads `libnvidia-ml.so.1` at
//! run time). No driver on the host → the source says it is unavailable when read; the
//! agent still starts.
//!
//! Units converted here: power mW → W (`power_w`, component `gpu{N}`, never a PUE point:
//! GPU power is inside the server's input power), total energy mJ → J (`energy_j`
//! counter; it restarts at zero when the driver reloads, which is detected and bridged so
//! the published counter only grows), utilization % → ratio, memory bytes, enforced power
//! limit. The GPU models go into the birth inventory with their peak dense FP16 TFLOPS from
//! [`FP16_TFLOPS`], so the collector can report compute capacity in FP16 FLOPS.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::{GpuInventory, Reading};
use serde::Deserialize;

/// Source type name.
pub const KIND: &str = "nvml";

/// `[[sources]] type = "nvml"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmlConfig {
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

/// Peak dense (no sparsity) FP16 Tensor Core TFLOPS of common data-center GPUs, from
/// NVIDIA's datasheets; matched against the NVML device name, first match wins (so the
/// specific variants come before the general ones). Documented in docs/sources.md.
pub const FP16_TFLOPS: &[(&str, f64)] = &[
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H800 PCIe", 756.0),
    ("H800", 989.4),
    ("H20", 148.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L20", 119.5),
    ("L4", 121.0),
    ("A40", 149.7),
    ("A30", 165.0),
    ("A10", 125.0),
    ("V100S", 130.0),
    ("V100", 125.0),
    ("T4", 65.0),
];

/// Peak dense FP16 TFLOPS for an NVML device name, when the model is in the table.
pub fn fp16_tflops(name: &str) -> Option<f64> {
    FP16_TFLOPS
        .iter()
        .find(|(model, _)| name.contains(model))
        .map(|(_, t)| *t)
}

/// One GPU's values as NVML reports them (vendor units). Fields NVML cannot give on a
/// given GPU (e.g. energy before Volta) are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    /// Device name, e.g. "NVIDIA H200".
    pub name: String,
    /// Power, mW.
    pub power_mw: Option<u32>,
    /// Energy since the driver loaded, mJ.
    pub energy_mj: Option<u64>,
    /// GPU utilization, %.
    pub util_pct: Option<u32>,
    /// Memory used, bytes.
    pub mem_used: Option<u64>,
    /// Memory installed, bytes.
    pub mem_total: Option<u64>,
    /// Enforced power limit, mW.
    pub power_limit_mw: Option<u32>,
}

/// What NVML offers: behind a trait so the mapping is tested without a GPU.
pub trait GpuBackend: Send {
    /// One sample per GPU.
    ///
    /// # Errors
    /// NVML failed.
    fn sample(&mut self) -> Result<Vec<GpuSample>, String>;
}

/// The real backend.
pub struct Nvml(nvml_wrapper::Nvml);

impl Nvml {
    /// Loads libnvidia-ml and initializes it.
    ///
    /// # Errors
    /// No library or no driver, in words.
    pub fn init() -> Result<Self, String> {
        nvml_wrapper::Nvml::init().map(Nvml).map_err(|e| match e {
            nvml_wrapper::error::NvmlError::LibloadingError(_)
            | nvml_wrapper::error::NvmlError::LibraryNotFound => {
                "no NVIDIA driver library (libnvidia-ml.so.1) on this host".to_owned()
            }
            nvml_wrapper::error::NvmlError::DriverNotLoaded => {
                "the NVIDIA driver is not loaded".to_owned()
            }
            other => format!("NVML init failed: {other}"),
        })
    }
}

impl GpuBackend for Nvml {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        let n = self.0.device_count().map_err(|e| e.to_string())?;
        (0..n)
            .map(|i| {
                let d = self
                    .0
                    .device_by_index(i)
                    .map_err(|e| format!("GPU {i}: {e}"))?;
                let mem = d.memory_info().ok();
                Ok(GpuSample {
                    name: d.name().unwrap_or_else(|_| "unknown".to_owned()),
                    power_mw: d.power_usage().ok(),
                    energy_mj: d.total_energy_consumption().ok(),
                    util_pct: d.utilization_rates().ok().map(|u| u.gpu),
                    mem_used: mem.as_ref().map(|m| m.used),
                    mem_total: mem.as_ref().map(|m| m.total),
                    power_limit_mw: d.enforced_power_limit().ok(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
struct EnergyState {
    last_mj: Option<u64>,
    /// Energy before the last driver reload(s), mJ.
    offset_mj: u64,
}

/// Maps samples to readings, bridging driver-reload resets of the energy counters.
/// Returns the number of resets seen.
fn map(
    samples: &[GpuSample],
    energy: &mut Vec<EnergyState>,
    now_ms: i64,
    out: &mut Vec<Reading>,
) -> u32 {
    energy.resize(samples.len(), EnergyState::default());
    let mut resets = 0;
    for (i, (s, e)) in samples.iter().zip(energy.iter_mut()).enumerate() {
        let component = format!("gpu{i}");
        let mut push = |r: Reading| {
            let mut r = r.from_source(KIND);
            r.component = component.as_str().into();
            out.push(r);
        };
        if let Some(mw) = s.power_mw {
            push(Reading::gauge("power_w", f64::from(mw) / 1e3, now_ms));
        }
        if let Some(mj) = s.energy_mj {
            if let Some(last) = e.last_mj {
                if mj < last {
                    e.offset_mj += last;
                    resets += 1;
                }
            }
            e.last_mj = Some(mj);
            push(Reading::counter(
                "energy_j",
                (e.offset_mj + mj) as f64 / 1e3,
                now_ms,
            ));
        }
        if let Some(u) = s.util_pct {
            push(Reading::gauge(
                "gpu_util",
                (f64::from(u) / 100.0).clamp(0.0, 1.0),
                now_ms,
            ));
        }
        if let Some(b) = s.mem_used {
            push(Reading::gauge("gpu_mem_used_bytes", b as f64, now_ms));
        }
        if let Some(b) = s.mem_total {
            push(Reading::gauge("gpu_mem_total_bytes", b as f64, now_ms));
        }
        if let Some(mw) = s.power_limit_mw {
            push(Reading::gauge("power_limit_w", f64::from(mw) / 1e3, now_ms));
        }
    }
    resets
}

/// Groups GPUs by model for the birth inventory.
pub fn inventory(samples: &[GpuSample]) -> Vec<GpuInventory> {
    let mut out: Vec<GpuInventory> = Vec::new();
    for s in samples {
        match out.iter_mut().find(|g| g.model == s.name) {
            Some(g) => g.count += 1,
            None => out.push(GpuInventory {
                model: s.name.clone(),
                count: 1,
                fp16_tflops: fp16_tflops(&s.name),
            }),
        }
    }
    out
}

/// The NVML source: unavailable (not failed) when there is no driver.
pub struct NvmlSource {
    backend: Result<Box<dyn GpuBackend>, String>,
    energy: Vec<EnergyState>,
    inventory: Vec<GpuInventory>,
}

impl NvmlSource {
    /// Initializes NVML if it can; never fails.
    pub fn new() -> Self {
        Self::with_backend(Nvml::init().map(|n| Box::new(n) as Box<dyn GpuBackend>))
    }

    /// A source over any backend (tests use a scripted one).
    pub fn with_backend(backend: Result<Box<dyn GpuBackend>, String>) -> Self {
        let mut s = NvmlSource {
            backend,
            energy: Vec::new(),
            inventory: Vec::new(),
        };
        if let Ok(b) = &mut s.backend {
            if let Ok(samples) = b.sample() {
                s.inventory = inventory(&samples);
            }
        }
        s
    }
}

impl Default for NvmlSource {
    fn default() -> Self {
        Self::new()
    }
}

impl Source for NvmlSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let backend = self
            .backend
            .as_mut()
            .map_err(|e| SourceError::Unavailable(e.clone()))?;
        let samples = backend.sample().map_err(SourceError::Read)?;
        let resets = map(&samples, &mut self.energy, now_ms, out);
        if resets > 0 {
            tracing::warn!(
                resets,
                "GPU energy counter restarted (driver reload); bridged"
            );
        }
        Ok(())
    }

    fn gpus(&self) -> Vec<GpuInventory> {
        self.inventory.clone()
    }
}

/// Says whether NVML works here and what it sees.
pub fn probe() -> Probe {
    match Nvml::init().and_then(|mut n| n.sample()) {
        Ok(samples) if samples.is_empty() => Probe {
            kind: KIND,
            available: false,
            detail: "NVML loaded but reports no GPU".to_owned(),
        },
        Ok(samples) => {
            let inv = inventory(&samples);
            let desc: Vec<String> = inv
                .iter()
                .map(|g| {
                    format!(
                        "{} × {}{}",
                        g.count,
                        g.model,
                        g.fp16_tflops
                            .map_or(String::new(), |t| format!(" ({t} FP16 TFLOPS)"))
                    )
                })
                .collect();
            let power: Vec<String> = samples
                .iter()
                .map(|s| {
                    s.power_mw
                        .map_or("?".to_owned(), |p| format!("{:.0} W", f64::from(p) / 1e3))
                })
                .collect();
            Probe {
                kind: KIND,
                available: true,
                detail: format!("{}; power now {}", desc.join(", "), power.join(", ")),
            }
        }
        Err(e) => Probe {
            kind: KIND,
            available: false,
            detail: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scripted(Vec<Vec<GpuSample>>);

    impl GpuBackend for Scripted {
        fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
            if self.0.len() > 1 {
                Ok(self.0.remove(0))
            } else {
                self.0.first().cloned().ok_or_else(|| "gone".to_owned())
            }
        }
    }

    fn h200(power_mw: u32, energy_mj: u64) -> GpuSample {
        GpuSample {
            name: "NVIDIA H200".into(),
            power_mw: Some(power_mw),
            energy_mj: Some(energy_mj),
            util_pct: Some(87),
            mem_used: Some(80 << 30),
            mem_total: Some(141 << 30),
            power_limit_mw: Some(700_000),
        }
    }

    #[test]
    fn units_components_and_inventory() {
        let first = vec![h200(512_345, 1_000_000), h200(100_000, 5_000)];
        let mut src = NvmlSource::with_backend(Ok(Box::new(Scripted(vec![first.clone(), first]))));
        let inv = src.gpus();
        assert_eq!(
            inv,
            vec![GpuInventory {
                model: "NVIDIA H200".into(),
                count: 2,
                fp16_tflops: Some(989.4)
            }]
        );
        let mut out = Vec::new();
        src.read(5, &mut out).unwrap();
        let get = |c: &str, m: &str| {
            out.iter()
                .find(|r| r.component == c && r.metric == m)
                .map(|r| r.value)
        };
        assert_eq!(get("gpu0", "power_w"), Some(512.345));
        assert_eq!(get("gpu0", "energy_j"), Some(1_000.0));
        assert_eq!(get("gpu1", "energy_j"), Some(5.0));
        assert_eq!(get("gpu0", "gpu_util"), Some(0.87));
        assert_eq!(get("gpu0", "power_limit_w"), Some(700.0));
        assert_eq!(
            get("gpu1", "gpu_mem_total_bytes"),
            Some((141u64 << 30) as f64)
        );
        assert!(out
            .iter()
            .all(|r| r.point.is_none() && r.source.as_deref() == Some("nvml")));
    }

    #[test]
    fn driver_reload_reset_is_bridged() {
        let script = vec![
            vec![h200(1, 9_000)],
            vec![h200(1, 10_000)],
            vec![h200(1, 500)],
            vec![h200(1, 700)],
        ];
        let mut src = NvmlSource::with_backend(Ok(Box::new(Scripted(script))));
        let mut totals = Vec::new();
        for t in 0..3 {
            let mut out = Vec::new();
            src.read(t, &mut out).unwrap();
            totals.push(out.iter().find(|r| r.metric == "energy_j").unwrap().value);
        }
        assert_eq!(
            totals,
            vec![10.0, 10.5, 10.7],
            "the counter keeps growing across the reload"
        );
    }

    #[test]
    fn no_driver_is_unavailable_not_a_start_up_failure() {
        let mut src = NvmlSource::with_backend(Err(
            "no NVIDIA driver library (libnvidia-ml.so.1) on this host".into(),
        ));
        assert!(src.gpus().is_empty());
        let e = src.read(0, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(e, SourceError::Unavailable(_)) && e.to_string().contains("libnvidia-ml"),
            "{e}"
        );
    }

    #[test]
    fn fp16_table_matches_specific_models_first() {
        assert_eq!(fp16_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(fp16_tflops("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(fp16_tflops("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(fp16_tflops("NVIDIA L40S"), Some(362.05));
        assert_eq!(fp16_tflops("NVIDIA L4"), Some(121.0));
        assert_eq!(fp16_tflops("Tesla T4"), Some(65.0));
        assert_eq!(fp16_tflops("NVIDIA GeForce RTX 4090"), None);
    }
}
