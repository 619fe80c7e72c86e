//! Racks: power against the configured budgets, A/B feed headroom, rack-unit space,
//! and the capacity stranded when one of power or space runs out before the other.
//! Pure, like the rest of the engine.

use serde::Serialize;
use std::collections::BTreeMap;

/// The live IT power of one rack and how much of it is known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RackPower {
    /// Sum of the reporting meters, W.
    pub w: f64,
    /// Meters the rack's power comes from (PDU outlets or host inputs, never both).
    pub meters: u32,
    /// Of those, the ones that report now.
    pub reporting: u32,
}

impl RackPower {
    /// Every meter of the rack reporting `w` in all.
    pub fn measured(w: f64) -> Self {
        RackPower {
            w,
            meters: 1,
            reporting: 1,
        }
    }
}

/// A rack as alert rules see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RackView {
    /// Rack id.
    pub rack: String,
    /// IT power of its reporting meters now, W; `None` when none of them reports. With
    /// `quality` "partial" it is a lower bound (the silent meters draw something).
    pub power_w: Option<f64>,
    /// measured (every meter reports), partial (some do), no_data (none does, or the rack
    /// has no meter).
    pub quality: &'static str,
    /// Why the power is partial or missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Meters the power comes from (PDU outlets, else host inputs).
    pub meters: u32,
    /// Of those, the ones that report now.
    pub meters_reporting: u32,
    /// Budget × derating, W, when configured.
    pub budget_w: Option<f64>,
    /// power / derated budget.
    pub utilization: Option<f64>,
    /// With A/B feeds: derated capacity of one feed, W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_w: Option<f64>,
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
    /// A rack with `power`, with nothing else known yet.
    pub fn new(rack: &str, power: RackPower) -> Self {
        let (power_w, quality, reason) = match (power.reporting, power.meters) {
            (0, 0) => (None, "no_data", Some("no meter in this rack".to_owned())),
            (0, n) => (
                None,
                "no_data",
                Some(format!("none of the rack's {n} meters reports")),
            ),
            (k, n) if k < n => (
                Some(power.w),
                "partial",
                Some(format!("{k} of the rack's {n} meters report")),
            ),
            _ => (Some(power.w), "measured", None),
        };
        RackView {
            rack: rack.to_owned(),
            power_w,
            quality,
            reason,
            meters: power.meters,
            meters_reporting: power.reporting,
            budget_w: None,
            utilization: None,
            feed_w: None,
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
///
/// Utilization and headroom follow the power: absent when it is, a lower (utilization) or
/// upper (headroom) bound when it is partial.
pub fn rack_views(
    site: &str,
    power: &BTreeMap<String, RackPower>,
    budgets: &[RackBudget],
) -> Vec<RackView> {
    let mut racks: BTreeMap<String, RackView> = power
        .iter()
        .map(|(r, p)| (r.clone(), RackView::new(r, *p)))
        .collect();
    for b in budgets.iter().filter(|b| b.site == site) {
        let v = racks
            .entry(b.rack.clone())
            .or_insert_with(|| RackView::new(&b.rack, RackPower::default()));
        let derated = b.budget_w * b.derating;
        v.budget_w = Some(derated);
        v.utilization = v.power_w.filter(|_| derated > 0.0).map(|w| w / derated);
        v.feed_w = b.feed_w.map(|f| f * b.derating);
        v.failover_headroom_w = v.feed_w.and_then(|f| v.power_w.map(|w| f - w));
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
    power: &BTreeMap<String, RackPower>,
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
            .or_insert_with(|| RackView::new(r, RackPower::default()));
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
            if let (Some(budget), Some(w)) = (v.budget_w, v.power_w) {
                v.stranded_power_w = Some(if space >= FULL_SHARE {
                    (budget - w).max(0.0)
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
        power.insert("r1".to_owned(), RackPower::measured(6_000.0));
        power.insert("r9".to_owned(), RackPower::measured(100.0));
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
            ("r2", None, None),
            "a budgeted rack without meters has no utilization, not 0"
        );
        assert_eq!((v[1].power_w, v[1].quality), (None, "no_data"));
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
        let power: BTreeMap<String, RackPower> =
            [("full", 4_000.0), ("hot", 4_900.0), ("ok", 5_000.0)]
                .into_iter()
                .map(|(r, w)| (r.to_owned(), RackPower::measured(w)))
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

    #[test]
    fn silent_meters_make_power_unknown_or_a_bound() {
        let budgets = vec![RackBudget {
            site: "dc".into(),
            rack: "r1".into(),
            budget_w: 10_000.0,
            derating: 1.0,
            feed_w: Some(8_000.0),
            u_total: None,
            u_used: None,
        }];
        let one = |p: RackPower| {
            let power = [("r1".to_owned(), p)].into_iter().collect();
            rack_views("dc", &power, &budgets).remove(0)
        };
        let silent = one(RackPower {
            w: 0.0,
            meters: 4,
            reporting: 0,
        });
        assert_eq!(
            (
                silent.power_w,
                silent.utilization,
                silent.failover_headroom_w
            ),
            (None, None, None),
            "four silent hosts: unknown, not 0 W"
        );
        assert_eq!(silent.quality, "no_data");
        assert_eq!(
            silent.reason.as_deref(),
            Some("none of the rack's 4 meters reports")
        );
        let half = one(RackPower {
            w: 3_000.0,
            meters: 4,
            reporting: 2,
        });
        assert_eq!(
            (half.power_w, half.utilization, half.quality),
            (Some(3_000.0), Some(0.3), "partial")
        );
        assert_eq!(half.failover_headroom_w, Some(5_000.0));
        assert_eq!(
            (half.meters, half.meters_reporting),
            (4, 2),
            "the coverage is carried"
        );
    }
}
