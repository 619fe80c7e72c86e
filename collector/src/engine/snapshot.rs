//! The snapshot: every site's derived values at one instant — site view, racks with
//! budgets, headroom, space and stranded capacity, nodes, latest node metrics, and on a
//! fleet collector the region — computed once by the engine's owner and shared, read-only,
//! by every output (API, `/metrics`, alerts, summaries, InfluxDB, history).

use super::fleet::FleetView;
use super::racks::{rack_views_with_load, RackBudget, RackView};
use super::{Engine, MetricSample, NodeView, SiteView};
use std::sync::Arc;

/// One site's derived values.
#[derive(Debug, Clone)]
pub struct SiteSnapshot {
    /// The site view (live power, PUE per window, zones, counts, capacity).
    pub view: SiteView,
    /// Rack power, budget, utilization, A/B headroom, space and stranded capacity.
    pub racks: Vec<RackView>,
    /// Every node with its state.
    pub nodes: Vec<NodeView>,
    /// The latest point-less node metrics (CPU, GPU, temperatures), one list per node
    /// that has any, shared with earlier snapshots while the node's values stay the same.
    pub metrics: Vec<Arc<[MetricSample]>>,
}

impl SiteSnapshot {
    /// Every node's latest point-less metrics, node by node.
    pub fn metric_samples(&self) -> impl Iterator<Item = &MetricSample> {
        self.metrics.iter().flat_map(|n| n.iter())
    }
}

/// Every site's derived values at `taken_ms`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it was taken (the `now` of every view in it).
    pub taken_ms: i64,
    /// Sites, in the engine's order.
    pub sites: Vec<SiteSnapshot>,
    /// The region, on a fleet collector.
    pub fleet: Option<FleetView>,
    /// How long taking it kept the engine's owner from the intake, s (0 until measured).
    pub took_s: f64,
    /// Each site's live carbon-intensity series (`dcwatt/v1/{site}/carbon`), for the
    /// periods computed from the history.
    pub carbon: std::collections::BTreeMap<String, super::carbon::LiveCarbon>,
    /// Each site's renewable contracts entered over the API (sites without any absent).
    pub contracts: std::collections::BTreeMap<String, std::sync::Arc<[super::contracts::Entered]>>,
}

impl Snapshot {
    /// Takes every site's values from `engine` with these rack budgets.
    pub fn take(engine: &Engine, budgets: &[RackBudget], now_ms: i64) -> Self {
        let sites = engine
            .site_ids()
            .iter()
            .filter_map(|id| {
                let view = engine.site_view(id, now_ms)?;
                Some(SiteSnapshot {
                    view,
                    racks: rack_views_with_load(
                        id,
                        &engine.rack_power(id, now_ms),
                        &engine.rack_loads(id, now_ms),
                        budgets,
                    ),
                    nodes: engine.nodes(id, now_ms).unwrap_or_default(),
                    metrics: engine.node_metrics(id),
                })
            })
            .collect();
        Snapshot {
            taken_ms: now_ms,
            sites,
            fleet: None,
            took_s: 0.0,
            carbon: engine.carbon_series(),
            contracts: engine.contract_lists(),
        }
    }

    /// One site's values.
    pub fn site(&self, id: &str) -> Option<&SiteSnapshot> {
        self.sites.iter().find(|s| s.view.site == id)
    }

    /// The site views.
    pub fn views(&self) -> impl Iterator<Item = &SiteView> {
        self.sites.iter().map(|s| &s.view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use dcwatt_common::protocol::{Point, Reading};

    fn power(point: Point, w: f64, ts_ms: i64) -> Reading {
        Reading::gauge("power_w", w, ts_ms).at(point)
    }

    #[test]
    fn a_snapshot_holds_what_the_engine_says_at_that_instant() {
        let mut e = Engine::new(EngineConfig::default());
        let t0 = 1_800_000_000_000;
        for s in 0..=30 {
            let t = t0 + s * 1000;
            e.apply_readings("dc", "meter", &[power(Point::FacilityInput, 1_500.0, t)], t);
            e.apply_readings("dc", "h1", &[power(Point::ItInput, 1_000.0, t)], t);
        }
        let now = t0 + 30_100;
        let snap = Snapshot::take(&e, &[], now);
        assert_eq!(snap.taken_ms, now);
        let site = snap.site("dc").expect("site");
        assert_eq!(
            serde_json::to_value(&site.view).ok(),
            serde_json::to_value(e.site_view("dc", now)).ok()
        );
        assert_eq!(site.nodes.len(), 2);
        assert_eq!(site.view.power.ratio, Some(1.5));
        assert!(snap.site("elsewhere").is_none());
    }
}
