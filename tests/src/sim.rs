//! The `sim` source's profile, computed here independently of the agent's code, so the
//! end-to-end tests compare the collector against the simulation's exact energy.

use std::f64::consts::PI;

/// A simulated meter without noise: `base + amplitude·sin(2π·t/period)`, t in seconds
/// since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Mean power, W.
    pub base_w: f64,
    /// Sine amplitude, W.
    pub amplitude_w: f64,
    /// Sine period, s.
    pub period_secs: f64,
}

impl Profile {
    /// Exact energy (J) from `t0_ms` to `t1_ms`.
    pub fn energy(&self, t0_ms: i64, t1_ms: i64) -> f64 {
        let (t0, t1) = (t0_ms as f64 / 1000.0, t1_ms as f64 / 1000.0);
        let w = 2.0 * PI / self.period_secs;
        let c = |t: f64| (w * (t % self.period_secs)).cos();
        self.base_w * (t1 - t0) + self.amplitude_w / w * (c(t0) - c(t1))
    }

    /// The agent configuration section for this profile.
    pub fn toml(&self, point: &str) -> String {
        format!(
            "[[sources]]\ntype = \"sim\"\npoint = \"{point}\"\nbase_w = {:?}\namplitude_w = {:?}\nperiod_secs = {:?}\n",
            self.base_w, self.amplitude_w, self.period_secs
        )
    }
}

/// An agent configuration for one simulated meter.
pub fn agent_toml(
    site: &str,
    node: &str,
    role: &str,
    port: u16,
    profile: &Profile,
    point: &str,
) -> String {
    format!(
        "site = \"{site}\"\nnode = \"{node}\"\nrole = \"{role}\"\ninterval_secs = 1\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n{}",
        profile.toml(point)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_matches_a_riemann_sum() {
        let p = Profile {
            base_w: 300.0,
            amplitude_w: 40.0,
            period_secs: 23.0,
        };
        let (t0, t1) = (1_800_000_000_000i64, 1_800_000_017_345i64);
        let mut sum = 0.0;
        let mut t = t0;
        while t < t1 {
            let s = (t as f64 + 0.5) / 1000.0;
            sum += (p.base_w
                + p.amplitude_w * (2.0 * PI * (s % p.period_secs) / p.period_secs).sin())
                / 1000.0;
            t += 1;
        }
        assert!(
            (p.energy(t0, t1) - sum).abs() < 1e-3,
            "{} vs {sum}",
            p.energy(t0, t1)
        );
    }
}
