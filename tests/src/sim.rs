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

/// A well-behaved site beside hostile input: a facility meter and three hosts, each a
/// real agent with a `sim` source whose exact energy is known here.
pub struct CalmSite {
    /// Site id.
    pub site: &'static str,
    /// The facility meter's profile.
    pub facility: Profile,
    /// The hosts' profiles.
    pub hosts: Vec<Profile>,
    /// The agents.
    pub agents: Vec<crate::Proc>,
}

impl CalmSite {
    /// Starts the agents against the broker on `mqtt` and waits for a 1-minute PUE.
    pub fn start(dir: &crate::TempDir, site: &'static str, c: &crate::Collector) -> CalmSite {
        let facility = Profile {
            base_w: 3_000.0,
            amplitude_w: 200.0,
            period_secs: 31.0,
        };
        let hosts: Vec<Profile> = (0..3)
            .map(|i| Profile {
                base_w: 700.0 + 40.0 * i as f64,
                amplitude_w: 50.0,
                period_secs: 11.0 + 3.0 * i as f64,
            })
            .collect();
        let mut agents = vec![crate::start_agent(
            dir,
            "meter",
            &agent_toml(site, "meter", "meter", c.mqtt, &facility, "facility_input"),
        )];
        for (i, p) in hosts.iter().enumerate() {
            let node = format!("h{i}");
            agents.push(crate::start_agent(
                dir,
                &node,
                &agent_toml(site, &node, "host", c.mqtt, p, "it_input"),
            ));
        }
        crate::wait_for("a PUE value", std::time::Duration::from_secs(60), || {
            c.site(site)?["pue"]["1m"]["value"].as_f64()
        });
        CalmSite {
            site,
            facility,
            hosts,
            agents,
        }
    }

    /// Waits for a 1-minute window ending more than 5 s after `after_ms` and asserts its
    /// PUE is the simulation's exact one (within the 1 s sampling's 0.5 %), fully covered.
    pub fn assert_exact(&self, c: &crate::Collector, after_ms: i64) -> f64 {
        let (view, to) = crate::wait_for(
            "a window after the hostile input",
            std::time::Duration::from_secs(60),
            || {
                let v = c.site(self.site)?;
                let to = v["pue"]["1m"]["to_ms"].as_i64()?;
                (to > after_ms + 5_000).then_some((v.clone(), to))
            },
        );
        let w = &view["pue"]["1m"];
        let from = w["from_ms"].as_i64().expect("from");
        let it: f64 = self.hosts.iter().map(|h| h.energy(from, to)).sum();
        let truth = self.facility.energy(from, to) / it;
        let got = w["value"].as_f64().expect("value");
        assert!(
            (got - truth).abs() / truth < 0.005,
            "PUE {got} vs exact {truth}\n{w:#}"
        );
        assert_eq!(w["coverage_it"], 1.0, "{w:#}");
        crate::assert_measured_so_far(w);
        got
    }
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
