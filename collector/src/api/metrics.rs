//! `/metrics`: every registered part's families, then the sites' numbers from the latest
//! snapshot. Each part (intake, alerts, sinks) registers its own [`Source`]; this file
//! only knows the sites.

use super::AppState;
use crate::engine::Snapshot;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use dcwatt_common::metrics::{Exposition, Source};
use std::fmt::Write;
use std::sync::Arc;
use tokio::sync::watch;

/// `GET /metrics`.
pub async fn render(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// The sites' families, from the latest snapshot: registered last.
#[derive(Debug)]
pub struct SiteFamilies(pub watch::Receiver<Arc<Snapshot>>);

impl Source for SiteFamilies {
    fn encode(&self, o: &mut Exposition) {
        let snap = self.0.borrow().clone();
        let views: Vec<_> = snap.views().collect();
        o.family(
            "dcwatt_site_pue",
            "gauge",
            "Energy-based PUE per site and rolling window, labelled with its category.",
        );
        for v in &views {
            for (w, pv) in &v.pue.0 {
                if let (Some(val), Some(c)) = (pv.value, pv.category) {
                    let _ = writeln!(
                        o,
                        "dcwatt_site_pue{{site=\"{}\",window=\"{w}\",category=\"{c}\"}} {val}",
                        v.site
                    );
                }
            }
        }
        o.family(
            "dcwatt_site_pue_coverage",
            "gauge",
            "Coverage of the PUE window's energies (share of expected meter-time).",
        );
        for v in &views {
            for (w, pv) in &v.pue.0 {
                let _ = writeln!(
                    o,
                    "dcwatt_site_pue_coverage{{site=\"{}\",window=\"{w}\",side=\"it\"}} {}",
                    v.site, pv.coverage_it
                );
                let _ = writeln!(
                    o,
                    "dcwatt_site_pue_coverage{{site=\"{}\",window=\"{w}\",side=\"facility\"}} {}",
                    v.site, pv.coverage_facility
                );
            }
        }
        o.family(
            "dcwatt_site_power_watts",
            "gauge",
            "Live site power: facility input and IT (at the chosen category).",
        );
        for v in &views {
            if let Some(w) = v.power.facility_w {
                let _ = writeln!(
                    o,
                    "dcwatt_site_power_watts{{site=\"{}\",kind=\"facility\"}} {w}",
                    v.site
                );
            }
            if let Some(w) = v.power.it_w {
                let _ = writeln!(
                    o,
                    "dcwatt_site_power_watts{{site=\"{}\",kind=\"it\"}} {w}",
                    v.site
                );
            }
        }
        o.family(
            "dcwatt_site_power_ratio",
            "gauge",
            "Instantaneous facility/IT power ratio (indicative, not PUE).",
        );
        for v in &views {
            if let (Some(r), Some(c)) = (v.power.ratio, v.power.category) {
                let _ = writeln!(
                    o,
                    "dcwatt_site_power_ratio{{site=\"{}\",category=\"{c}\"}} {r}",
                    v.site
                );
            }
        }
        o.family("dcwatt_site_nodes", "gauge", "Nodes per site by state.");
        for v in &views {
            for (state, n) in [
                ("online", v.nodes.online),
                ("offline", v.nodes.offline),
                ("stale", v.nodes.stale),
                ("retired", v.nodes.retired),
            ] {
                let _ = writeln!(
                    o,
                    "dcwatt_site_nodes{{site=\"{}\",state=\"{state}\"}} {n}",
                    v.site
                );
            }
        }
        o.family(
            "dcwatt_site_standard_racks",
            "gauge",
            "Rack budgets in standard racks (2.5 kW each): configured and in use.",
        );
        for v in &views {
            let c = &v.capacity;
            let _ = writeln!(
                o,
                "dcwatt_site_standard_racks{{site=\"{}\",state=\"configured\"}} {}",
                v.site, c.standard_racks
            );
            let _ = writeln!(
                o,
                "dcwatt_site_standard_racks{{site=\"{}\",state=\"in_use\"}} {}",
                v.site, c.standard_racks_in_use
            );
        }
        o.family(
            "dcwatt_site_fp16_pflops",
            "gauge",
            "Peak dense FP16 compute of the site's GPUs, PFLOPS.",
        );
        for v in &views {
            let _ = writeln!(
                o,
                "dcwatt_site_fp16_pflops{{site=\"{}\"}} {}",
                v.site, v.capacity.fp16_pflops
            );
        }
    }
}
