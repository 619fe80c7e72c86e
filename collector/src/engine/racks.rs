//! Racks: power against the configured budgets, A/B feed headroom, rack-unit space,
//! and the capacity stranded when one of power or space runs out before the other.
//! Pure, like the rest of the engine.

use serde::Serialize;
use std::collections::BTreeMap;

/// A rack as alert rules see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RackView {
    /// Rack id.
    pub rack: String,
    /// Measured IT power of its hosts now, W.
    pub power_w: f64,
    /// Budget × derating, W, when configured.
    pub budget_w: Option<f64>,
    /// power / derated budget.
    pub utilization: Option<f64>,
    /// With A/B feeds: derated capacity of one feed minus power, W.
    pub failover_headroom_w: Option<f64>,
    /// Rack units in the rack, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u_total: Option<u32>,
    /// Rack units occupied, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u_used: Option<u32>,
    /// u_used / u_total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space_utilization: Option<f64>,
    /// Power budget left that cannot be used because the rack's space is (≥ 95 %) full, W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stranded_power_w: Option<f64>,
    /// Rack units left that cannot be used because the rack's power is (≥ 95 %) used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stranded_u: Option<u32>,
    /// Hosts whose birth names this rack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<u32>,
    /// Mean CPU utilization of those hosts (0..1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_util: Option<f64>,
    /// Mean utilization of their GPUs (0..1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_util: Option<f64>,
}

impl RackView {
    /// A rack drawing `power_w`, with nothing else known yet.
    pub fn new(rack: &str, power_w: f64) -> Self {
        RackView {
            rack: rack.to_owned(),
            power_w,
            budget_w: None,
            utilization: None,
            failover_headroom_w: None,
            u_total: None,
            u_used: None,
            space_utilization: None,
            stranded_power_w: None,
            stranded_u: None,
            hosts: None,
            cpu_util: None,
            gpu_util: None,
        }
    }
}

/// Rack budgets from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RackBudget {
    /// Site.
    pub site: String,
    /// Rack id.
    pub rack: String,
    /// Budget, W.
    pub budget_w: f64,
    /// Derating factor applied to budget and feed capacity.
    pub derating: f64,
    /// Capacity of one feed of an A/B pair, W (None for a single feed).
    pub feed_w: Option<f64>,
    /// Rack units in the rack.
    pub u_total: Option<u32>,
    /// Rack units occupied.
    pub u_used: Option<u32>,
}

/// Rack views for one site from the engine's rack power and the configured budgets.
pub fn rack_views(
    site: &str,
    power: &BTreeMap<String, f64>,
    budgets: &[RackBudget],
) -> Vec<RackView> {
    let mut racks: BTreeMap<String, RackView> = power
        .iter()
        .map(|(r, w)| (r.clone(), RackView::new(r, *w)))
        .collect();
    for b in budgets.iter().filter(|b| b.site == site) {
        let v = racks
            .entry(b.rack.clone())
            .or_insert_with(|| RackView::new(&b.rack, 0.0));
        let derated = b.budget_w * b.derating;
        v.budget_w = Some(derated);
        v.utilization = (derated > 0.0).then(|| v.power_w / derated);
        v.failover_headroom_w = b.feed_w.map(|f| f * b.derating - v.power_w);
        v.u_total = b.u_total;
        v.u_used = b.u_used;
    }
    racks.into_values().collect()
}

/// Share of a resource at which the other one counts as stranded.
const FULL_SHARE: f64 = 0.95;

/// Rack views with their hosts' CPU and GPU load, space use and stranded capacity:
/// power left where the space is full, space left where the power is used up.
pub fn rack_views_with_load(
    site: &str,
    power: &BTreeMap<String, f64>,
    loads: &BTreeMap<String, super::RackLoad>,
    budgets: &[RackBudget],
) -> Vec<RackView> {
    let mut views: BTreeMap<String, RackView> = rack_views(site, power, budgets)
        .into_iter()
        .map(|v| (v.rack.clone(), v))
        .collect();
    for r in loads.keys() {
        views
            .entry(r.clone())
            .or_insert_with(|| RackView::new(r, 0.0));
    }
    for v in views.values_mut() {
        if let Some(l) = loads.get(&v.rack) {
            v.hosts = Some(l.hosts);
            v.cpu_util = l.cpu_util();
            v.gpu_util = l.gpu_util();
        }
        if let (Some(used), Some(total)) = (v.u_used, v.u_total) {
            let space = f64::from(used) / f64::from(total.max(1));
            v.space_utilization = Some(space);
            if let Some(budget) = v.budget_w {
                v.stranded_power_w = Some(if space >= FULL_SHARE {
                    (budget - v.power_w).max(0.0)
                } else {
                    0.0
                });
            }
            if let Some(u) = v.utilization {
                v.stranded_u = Some(if u >= FULL_SHARE {
                    total.saturating_sub(used)
                } else {
                    0
                });
            }
        }
    }
    views.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RackLoad;

    #[test]
    fn racks_from_power_and_budgets() {
        let mut power = BTreeMap::new();
        power.insert("r1".to_owned(), 6_000.0);
        power.insert("r9".to_owned(), 100.0);
        let budgets = vec![
            RackBudget {
                site: "dc".into(),
                rack: "r1".into(),
                budget_w: 10_000.0,
                derating: 0.8,
                feed_w: Some(7_000.0),
                u_total: None,
                u_used: None,
            },
            RackBudget {
                site: "dc".into(),
                rack: "r2".into(),
                budget_w: 5_000.0,
                derating: 1.0,
                feed_w: None,
                u_total: None,
                u_used: None,
            },
            RackBudget {
                site: "other".into(),
                rack: "r1".into(),
                budget_w: 1.0,
                derating: 1.0,
                feed_w: None,
                u_total: None,
                u_used: None,
            },
        ];
        let v = rack_views("dc", &power, &budgets);
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[0].rack.as_str(), v[0].budget_w, v[0].utilization),
            ("r1", Some(8_000.0), Some(0.75))
        );
        assert!((v[0].failover_headroom_w.unwrap() - (5_600.0 - 6_000.0)).abs() < 1e-9);
        assert_eq!(
            (
                v[1].rack.as_str(),
                v[1].utilization,
                v[1].failover_headroom_w
            ),
            ("r2", Some(0.0), None)
        );
        assert_eq!((v[2].rack.as_str(), v[2].budget_w), ("r9", None));
    }

    #[test]
    fn stranded_capacity_and_load_per_rack() {
        let budget = |rack: &str, kw: f64, used: u32| RackBudget {
            site: "dc".into(),
            rack: rack.into(),
            budget_w: kw * 1000.0,
            derating: 1.0,
            feed_w: None,
            u_total: Some(42),
            u_used: Some(used),
        };
        // Full of servers but drawing little; drawing its whole budget with space left;
        // neither.
        let budgets = vec![
            budget("full", 10.0, 41),
            budget("hot", 5.0, 20),
            budget("ok", 10.0, 20),
        ];
        let power: BTreeMap<String, f64> = [("full", 4_000.0), ("hot", 4_900.0), ("ok", 5_000.0)]
            .into_iter()
            .map(|(r, w)| (r.to_owned(), w))
            .collect();
        let mut loads = BTreeMap::new();
        loads.insert(
            "hot".to_owned(),
            RackLoad {
                hosts: 2,
                cpu_sum: 1.5,
                cpu_hosts: 2,
                gpu_sum: 3.0,
                gpus: 4,
            },
        );
        let v = rack_views_with_load("dc", &power, &loads, &budgets);
        let get = |r: &str| v.iter().find(|x| x.rack == r).expect("rack");
        assert_eq!(
            get("full").stranded_power_w,
            Some(6_000.0),
            "41/42 U used: 6 kW stranded"
        );
        assert_eq!(get("full").stranded_u, Some(0));
        assert_eq!(
            get("hot").stranded_u,
            Some(22),
            "98% of its power: 22 U stranded"
        );
        assert_eq!(get("hot").stranded_power_w, Some(0.0));
        assert_eq!(
            (get("hot").cpu_util, get("hot").gpu_util, get("hot").hosts),
            (Some(0.75), Some(0.75), Some(2))
        );
        assert_eq!(
            (get("ok").stranded_power_w, get("ok").stranded_u),
            (Some(0.0), Some(0))
        );
        assert!((get("ok").space_utilization.expect("space") - 20.0 / 42.0).abs() < 1e-12);
    }
}
