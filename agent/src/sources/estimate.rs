//! `estimate`: whole-system power from CPU utilization when the host has no sensor, by the
//! linear model `P = idle + util × (max − idle)` (Cloud Carbon Footprint, SPECpower
//! calibration). Published with `quality = estimated`, so every PUE it enters says so.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::{Point, Quality, Reading};
use dcwatt_common::settings::Problems;
use serde::Deserialize;
use sysinfo::System;

/// Source type name.
pub const KIND: &str = "estimate";

/// `[[sources]] type = "estimate"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateConfig {
    /// Power at 0 % CPU, W (from SPECpower or a calibration against a PDU outlet).
    pub idle_w: f64,
    /// Power at 100 % CPU, W.
    pub max_w: f64,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

impl EstimateConfig {
    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if !self.idle_w.is_finite() || self.idle_w < 0.0 {
            p.push(format!("{path}.idle_w"), "must be a finite number ≥ 0");
        }
        if !self.max_w.is_finite() || self.max_w < self.idle_w {
            p.push(format!("{path}.max_w"), "must be a finite number ≥ idle_w");
        }
    }

    /// The model.
    pub fn watts(&self, util: f64) -> f64 {
        self.idle_w + util.clamp(0.0, 1.0) * (self.max_w - self.idle_w)
    }
}

/// The estimator, with its own CPU sampler.
pub struct EstimateSource {
    cfg: EstimateConfig,
    sys: System,
}

impl EstimateSource {
    /// Takes the first CPU sample.
    ///
    /// # Errors
    /// CPU utilization cannot be read on this platform.
    pub fn new(cfg: EstimateConfig) -> Result<Self, SourceError> {
        let mut sys = System::new().map_err(|e| SourceError::Unavailable(e.to_string()))?;
        sys.refresh_cpu_usage();
        Ok(EstimateSource { cfg, sys })
    }
}

impl Source for EstimateSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        self.sys.refresh_cpu_usage();
        let util = f64::from(self.sys.global_cpu_usage()) / 100.0;
        let mut r = Reading::gauge("power_w", self.cfg.watts(util), now_ms)
            .at(Point::ItInput)
            .from_source(KIND);
        r.quality = Quality::Estimated;
        out.push(r);
        Ok(())
    }
}

/// Always possible where CPU utilization is; it needs idle_w and max_w configured.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: System::new().is_ok(),
        detail:
            "linear model from CPU utilization (configure idle_w and max_w); quality = estimated"
                .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_model_and_validation() {
        let c = EstimateConfig {
            idle_w: 100.0,
            max_w: 300.0,
            interval_secs: None,
        };
        assert_eq!(c.watts(0.0), 100.0);
        assert_eq!(c.watts(0.5), 200.0);
        assert_eq!(c.watts(1.7), 300.0);
        let mut p = Problems::default();
        EstimateConfig {
            idle_w: 300.0,
            max_w: 100.0,
            interval_secs: None,
        }
        .validate("s", &mut p);
        assert_eq!(p.0[0].path, "s.max_w");
        let mut s = EstimateSource::new(c).unwrap();
        let mut out = Vec::new();
        s.read(5, &mut out).unwrap();
        assert_eq!(out[0].quality, Quality::Estimated);
        assert_eq!(out[0].point, Some(Point::ItInput));
        assert!((100.0..=300.0).contains(&out[0].value));
    }
}
