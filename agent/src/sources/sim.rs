//! `sim`: a deterministic simulated power meter for demos and tests.
//!
//! Power follows `base + amplitude·sin(2π·t/period) + noise(t)`, with `t` in seconds since
//! the Unix epoch (so any observer can recompute it) and noise constant within each whole
//! second, drawn from the seed. The `energy_j` counter is the exact integral of that
//! profile since the source started, not a sum of samples, so a collector that integrates
//! correctly reproduces the simulation's energy exactly.

use super::{Probe, Source, SourceError};
use dcwatt_common::backoff::splitmix64;
use dcwatt_common::protocol::{Point, Reading};
use dcwatt_common::settings::Problems;
use serde::Deserialize;
use std::f64::consts::TAU;

/// Source type name.
pub const KIND: &str = "sim";

/// `[[sources]] type = "sim"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Measurement point the simulated meter sits at.
    pub point: Point,
    /// Mean power in watts.
    pub base_w: f64,
    /// Sine amplitude in watts.
    #[serde(default)]
    pub amplitude_w: f64,
    /// Sine period in seconds.
    #[serde(default = "default_period")]
    pub period_secs: f64,
    /// Noise amplitude in watts (uniform in ±noise_w, constant within each second).
    #[serde(default)]
    pub noise_w: f64,
    /// Noise seed.
    #[serde(default)]
    pub seed: u64,
    /// Component label of the readings.
    #[serde(default = "super::default_component")]
    pub component: String,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
    /// Simulated GPUs in the node (demos): announced in the birth, with a utilization
    /// that follows the power's sine.
    #[serde(default)]
    pub gpus: Option<SimGpus>,
}

/// GPUs a simulated node announces, and their utilization.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGpus {
    /// Model name, e.g. "NVIDIA H200".
    pub model: String,
    /// How many.
    pub count: u32,
    /// Peak dense FP16 TFLOPS of one GPU.
    pub fp16_tflops: f64,
    /// Mean utilization, 0..1.
    #[serde(default = "half")]
    pub util: f64,
}

fn half() -> f64 {
    0.5
}

fn default_period() -> f64 {
    600.0
}

impl SimConfig {
    /// A meter at `point` drawing a constant `watts`.
    pub fn constant(point: Point, watts: f64) -> Self {
        SimConfig {
            point,
            base_w: watts,
            amplitude_w: 0.0,
            period_secs: default_period(),
            noise_w: 0.0,
            seed: 0,
            component: super::default_component(),
            interval_secs: None,
            gpus: None,
        }
    }

    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        for (key, v) in [
            ("base_w", self.base_w),
            ("amplitude_w", self.amplitude_w),
            ("period_secs", self.period_secs),
            ("noise_w", self.noise_w),
        ] {
            if !v.is_finite() || v < 0.0 {
                p.push(format!("{path}.{key}"), "must be a finite number ≥ 0");
            }
        }
        if self.period_secs <= 0.0 {
            p.push(format!("{path}.period_secs"), "must be > 0");
        }
        if self.amplitude_w + self.noise_w > self.base_w {
            p.push(
                format!("{path}.amplitude_w"),
                "amplitude_w + noise_w must not exceed base_w (power would go negative)",
            );
        }
        if let Err(e) = dcwatt_common::protocol::validate_id(&self.component) {
            p.push(format!("{path}.component"), e.to_string());
        }
        if let Some(g) = &self.gpus {
            if !(1..=64).contains(&g.count) {
                p.push(format!("{path}.gpus.count"), "must be 1..=64");
            }
            if !g.fp16_tflops.is_finite() || g.fp16_tflops <= 0.0 {
                p.push(
                    format!("{path}.gpus.fp16_tflops"),
                    "must be a positive number",
                );
            }
            if !(0.0..=1.0).contains(&g.util) {
                p.push(format!("{path}.gpus.util"), "must be between 0 and 1");
            }
        }
    }

    /// GPU utilization at `t_ms`: the mean, moved by the power's sine (same phase).
    pub fn gpu_util_at(&self, g: &SimGpus, t_ms: i64) -> f64 {
        let t = t_ms as f64 / 1000.0;
        let phase = TAU * t.rem_euclid(self.period_secs) / self.period_secs;
        let swing = if self.base_w > 0.0 {
            self.amplitude_w / self.base_w
        } else {
            0.0
        };
        (g.util * (1.0 + swing * phase.sin())).clamp(0.0, 1.0)
    }

    /// Instantaneous power at `t_ms`.
    pub fn power_at(&self, t_ms: i64) -> f64 {
        let t = t_ms as f64 / 1000.0;
        let phase = TAU * t.rem_euclid(self.period_secs) / self.period_secs;
        self.base_w + self.amplitude_w * phase.sin() + self.noise(t_ms.div_euclid(1000))
    }

    /// Exact energy in joules from `t0_ms` to `t1_ms`.
    pub fn energy_between(&self, t0_ms: i64, t1_ms: i64) -> f64 {
        self.smooth_energy_between(t0_ms, t1_ms) + self.noise_energy_between(t0_ms, t1_ms)
    }

    /// Energy of the base and sine parts only (closed form, any span).
    fn smooth_energy_between(&self, t0_ms: i64, t1_ms: i64) -> f64 {
        if t1_ms <= t0_ms {
            return 0.0;
        }
        let (t0, t1) = (t0_ms as f64 / 1000.0, t1_ms as f64 / 1000.0);
        let w = TAU / self.period_secs;
        let phase = |t: f64| w * t.rem_euclid(self.period_secs);
        let mut e = self.base_w * (t1 - t0);
        if self.amplitude_w != 0.0 {
            // ∫ A·sin(ωt) dt = A/ω · (cos ωt0 − cos ωt1); phases reduced mod period for
            // precision, which leaves the cosines unchanged.
            e += self.amplitude_w / w * (phase(t0).cos() - phase(t1).cos());
        }
        e
    }

    /// Energy of the noise part (a sum over whole seconds: meant for short spans).
    fn noise_energy_between(&self, t0_ms: i64, t1_ms: i64) -> f64 {
        let mut e = 0.0;
        if self.noise_w != 0.0 && t1_ms > t0_ms {
            let mut s = t0_ms.div_euclid(1000);
            while s * 1000 < t1_ms {
                let from = t0_ms.max(s * 1000);
                let to = t1_ms.min((s + 1) * 1000);
                e += self.noise(s) * (to - from) as f64 / 1000.0;
                s += 1;
            }
        }
        e
    }

    fn noise(&self, second: i64) -> f64 {
        if self.noise_w == 0.0 {
            return 0.0;
        }
        let mut state = self.seed ^ (second as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let u = (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
        self.noise_w * (2.0 * u - 1.0)
    }
}

/// Where the simulated meter's counter counts from, like a real meter's register that
/// does not restart with the agent: 2026-01-01T00:00:00Z.
pub const COUNTER_ORIGIN_MS: i64 = 1_767_225_600_000;

/// The simulated meter's state: the counter and when it was last advanced.
pub struct SimSource {
    config: SimConfig,
    last_ms: Option<i64>,
    energy_j: f64,
}

impl SimSource {
    /// A meter whose counter holds the energy since [`COUNTER_ORIGIN_MS`], so it continues
    /// across agent restarts (exactly without noise; the noise before the first read is
    /// left out, which is zero on average).
    pub fn new(config: SimConfig) -> Self {
        SimSource {
            config,
            last_ms: None,
            energy_j: 0.0,
        }
    }
}

impl Source for SimSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        if let Some(last) = self.last_ms {
            if now_ms < last {
                return Err(SourceError::Read(format!(
                    "clock went back {} ms; counter held",
                    last - now_ms
                )));
            }
            self.energy_j += self.config.energy_between(last, now_ms);
        } else {
            self.energy_j = self.config.smooth_energy_between(COUNTER_ORIGIN_MS, now_ms);
        }
        self.last_ms = Some(now_ms);
        let c = &self.config;
        let mut power = Reading::gauge("power_w", c.power_at(now_ms), now_ms)
            .at(c.point)
            .from_source(KIND);
        power.component = c.component.as_str().into();
        let mut energy = Reading::counter("energy_j", self.energy_j, now_ms)
            .at(c.point)
            .from_source(KIND);
        energy.component = c.component.as_str().into();
        out.push(power);
        out.push(energy);
        if let Some(g) = &c.gpus {
            let util = c.gpu_util_at(g, now_ms);
            for i in 0..g.count {
                let mut r = Reading::gauge("gpu_util", util, now_ms).from_source(KIND);
                r.component = format!("gpu{i}").into();
                out.push(r);
            }
        }
        Ok(())
    }

    fn gpus(&self) -> Vec<dcwatt_common::protocol::GpuInventory> {
        self.config
            .gpus
            .iter()
            .map(|g| dcwatt_common::protocol::GpuInventory {
                model: g.model.clone(),
                count: g.count,
                fp16_tflops: Some(g.fp16_tflops),
            })
            .collect()
    }
}

/// Always available: it needs no hardware.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: true,
        detail: "simulated meter (needs no hardware; for demos and tests)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(noise_w: f64) -> SimConfig {
        SimConfig {
            point: Point::ItInput,
            base_w: 400.0,
            amplitude_w: 50.0,
            period_secs: 37.0,
            noise_w,
            seed: 9,
            component: "system".into(),
            interval_secs: None,
            gpus: None,
        }
    }

    #[test]
    fn simulated_gpus_are_announced_and_read_with_the_power_cycle() {
        let mut c = cfg(0.0);
        c.gpus = Some(SimGpus {
            model: "NVIDIA H200".into(),
            count: 2,
            fp16_tflops: 989.4,
            util: 0.6,
        });
        let mut src = SimSource::new(c);
        let inv = src.gpus();
        assert_eq!(inv.len(), 1);
        assert_eq!((inv[0].count, inv[0].fp16_tflops), (2, Some(989.4)));
        // A quarter period in (37 s / 4 = 9.25 s), the sine is at its top: 0.6 × (1 + 50/400).
        let mut out = Vec::new();
        src.read(9_250, &mut out).unwrap();
        let utils: Vec<(&str, f64)> = out
            .iter()
            .filter(|r| r.metric == "gpu_util")
            .map(|r| (r.component.as_str(), r.value))
            .collect();
        assert_eq!(utils.len(), 2, "{utils:?}");
        assert_eq!(utils[1].0, "gpu1");
        assert!((utils[0].1 - 0.675).abs() < 1e-9, "{utils:?}");
    }

    /// Midpoint sum at 1 ms resolution: an independent check of the closed form.
    fn numeric(c: &SimConfig, t0: i64, t1: i64) -> f64 {
        let mut e = 0.0;
        let mut t = t0;
        while t < t1 {
            // Power is smooth within a millisecond except at whole seconds, where the noise
            // steps; evaluate at the millisecond's start plus half a millisecond.
            let p0 = c.power_at(t);
            let p1 = c.power_at(t + 1);
            let step_at_second = (t + 1) % 1000 == 0;
            e += if step_at_second { p0 } else { (p0 + p1) / 2.0 } / 1000.0;
            t += 1;
        }
        e
    }

    #[test]
    fn energy_is_the_exact_integral_of_power() {
        let t0 = 1_764_000_000_123;
        for noise in [0.0, 20.0] {
            let c = cfg(noise);
            let exact = c.energy_between(t0, t0 + 45_678);
            let approx = numeric(&c, t0, t0 + 45_678);
            assert!(
                (exact - approx).abs() / exact < 1e-5,
                "noise {noise}: {exact} vs {approx}"
            );
        }
    }

    #[test]
    fn counter_accumulates_the_integral_and_power_stays_in_range() {
        let c = cfg(20.0);
        let mut s = SimSource::new(c.clone());
        let t0 = 1_764_000_000_000;
        let mut out = Vec::new();
        let mut last = t0;
        for k in 0..50 {
            out.clear();
            last = t0 + k * 1_000 + (k % 7) * 13;
            s.read(last, &mut out).unwrap();
            let p = out[0].value;
            assert!((330.0..=470.0).contains(&p), "{p}");
            assert_eq!(out[0].point, Some(Point::ItInput));
            assert_eq!(out[1].metric, "energy_j");
        }
        let total = c.energy_between(t0, last) + c.smooth_energy_between(COUNTER_ORIGIN_MS, t0);
        assert!((out[1].value - total).abs() < 1e-9 * total);
        assert!(
            s.read(t0, &mut out).is_err(),
            "clock going back is an error"
        );
    }

    #[test]
    fn the_counter_continues_across_agent_restarts() {
        let c = cfg(0.0);
        let t0 = 1_800_000_000_000;
        let mut first = SimSource::new(c.clone());
        let mut out = Vec::new();
        first.read(t0, &mut out).unwrap();
        first.read(t0 + 7_000, &mut out).unwrap();
        let before = out.last().unwrap().value;
        // A new process starts 2 s later: its counter carries on where the first left off.
        let mut second = SimSource::new(c.clone());
        out.clear();
        second.read(t0 + 9_000, &mut out).unwrap();
        let after = out[1].value;
        let expected = c.energy_between(t0 + 7_000, t0 + 9_000);
        assert!(
            (after - before - expected).abs() < 1e-6,
            "{} vs {expected}",
            after - before
        );
    }

    #[test]
    fn constant_profile() {
        let mut c = cfg(0.0);
        c.amplitude_w = 0.0;
        assert_eq!(c.energy_between(0, 2_500), 1000.0);
        assert_eq!(c.power_at(123), 400.0);
    }

    #[test]
    fn validation() {
        let mut c = cfg(0.0);
        c.amplitude_w = 500.0;
        c.period_secs = 0.0;
        let mut p = Problems::default();
        c.validate("sources[0]", &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["sources[0].period_secs", "sources[0].amplitude_w"]
        );
    }
}
