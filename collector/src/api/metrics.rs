//! `/metrics`: every registered part's families, then the sites', zones', racks' and
//! nodes' numbers from the latest snapshot. Each part (intake, alerts, sinks) registers its
//! own [`Source`]; this file only knows the snapshot. docs/api.md lists every family with
//! its labels, unit and cardinality; a test below keeps the two in step.

use super::AppState;
use crate::engine::NodeSeries;
use crate::engine::{NodeView, RackView, SiteSnapshot, Snapshot};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use dcwatt_common::metrics::{Exposition, Source};
use std::fmt::Display;
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

/// The snapshot's families: registered last.
#[derive(Debug)]
pub struct SiteFamilies {
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Which nodes get their own series.
    pub nodes: NodeSeries,
}

/// `k="v",…` with each value escaped as the exposition format wants (`\\`, `\"`, `\n`).
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(64);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// One family: its header, then a sample for each `(labels, value)` that `rows` yields.
fn family<L, V, I>(o: &mut Exposition, name: &str, help: &str, rows: I)
where
    I: IntoIterator<Item = (L, V)>,
    L: AsRef<str>,
    V: Display,
{
    o.family(name, "gauge", help);
    for (l, v) in rows {
        o.sample(name, l.as_ref(), v);
    }
}

impl Source for SiteFamilies {
    fn encode(&self, o: &mut Exposition) {
        let snap = self.snapshots.borrow().clone();
        family(
            o,
            "dcwatt_snapshot_duration_seconds",
            "How long the latest snapshot took to take, s: the engine applies no readings meanwhile.",
            [("", snap.took_s)],
        );
        sites(o, &snap.sites);
        zones(o, &snap.sites);
        racks(o, &snap.sites);
        nodes(o, &snap.sites, self.nodes);
        carbon(o, &snap.carbon);
    }
}

/// Each site's live carbon-intensity series: what it holds, how far it reaches, what it
/// dropped.
fn carbon(
    o: &mut Exposition,
    series: &std::collections::BTreeMap<String, crate::engine::carbon::LiveCarbon>,
) {
    family(
        o,
        "dcwatt_site_carbon_intervals",
        "Intervals the site's live carbon-intensity series holds (dcwatt/v1/{site}/carbon).",
        series
            .iter()
            .map(|(site, c)| (labels(&[("site", site)]), c.factors.len())),
    );
    family(
        o,
        "dcwatt_site_carbon_series_end_timestamp_seconds",
        "End of the last interval of the site's live carbon-intensity series, s since the epoch (past it, CUE falls back to the configured factors).",
        series.iter().filter_map(|(site, c)| {
            let end = c.factors.iter().map(|f| f.to_ms).max()?;
            Some((labels(&[("site", site)]), end as f64 / 1000.0))
        }),
    );
    let name = "dcwatt_site_carbon_intervals_dropped_total";
    o.family(
        name,
        "counter",
        "Intervals of the site's live carbon-intensity series dropped because it was full (the oldest first).",
    );
    for (site, c) in series {
        o.sample(name, &labels(&[("site", site)]), c.dropped);
    }
}

/// The figures beyond PUE per site and window, their quality, and the quantities they
/// divide (so that a fleet's figure is a ratio of sums: `sum(water) / sum(it energy)`).
fn kpis<'a, W, I>(o: &mut Exposition, windows: &W)
where
    W: Fn() -> I,
    I: Iterator<Item = (&'a str, &'static str, &'a crate::engine::WindowView)>,
{
    let figures = || {
        windows()
            .flat_map(|(site, w, pv)| pv.kpis.figures().map(move |(name, f)| (site, w, name, f)))
    };
    family(
        o,
        "dcwatt_site_kpi",
        "The efficiency figures beyond PUE per site and rolling window, kpi wue (L/kWh), cue and cue_market (kg CO2eq/kWh), ref, erf (0..1) or ere (only while it has a value).",
        figures().filter_map(|(site, w, name, f)| {
            Some((labels(&[("site", site), ("window", w), ("kpi", name)]), f.value?))
        }),
    );
    family(
        o,
        "dcwatt_site_kpi_quality",
        "A constant 1, labelled with the quality of the figure (measured, estimated, partial, invalid, no_data).",
        figures().map(|(site, w, name, f)| {
            let l = labels(&[("site", site), ("window", w), ("kpi", name), ("quality", f.quality)]);
            (l, 1)
        }),
    );
    family(
        o,
        "dcwatt_site_water_litres",
        "Site water use in the window, measured plus the estimate for uncovered meter-time, L (only for sites with water meters).",
        windows().filter_map(|(site, w, pv)| {
            let l = pv.kpis.water_l? + pv.kpis.water_fill_l;
            Some((labels(&[("site", site), ("window", w)]), l))
        }),
    );
    family(
        o,
        "dcwatt_site_kpi_energy_joules",
        "The energies the figures beyond PUE divide, J: kind renewable_onsite, renewable_contract or reused (only those the site has meters or contracts for).",
        windows().flat_map(|(site, w, pv)| {
            let k = &pv.kpis;
            [
                ("renewable_onsite", k.renewable_onsite_kwh),
                ("renewable_contract", Some(k.renewable_contract_kwh).filter(|&x| x > 0.0)),
                ("reused", k.reused_kwh),
            ]
            .into_iter()
            .filter_map(move |(kind, kwh)| {
                Some((labels(&[("site", site), ("window", w), ("kind", kind)]), kwh? * 3.6e6))
            })
        }),
    );
    family(
        o,
        "dcwatt_site_co2_kilograms",
        "Emissions of the site's energy in the window, kg CO2eq, basis location or market (only where every part of the window has a factor).",
        windows().flat_map(|(site, w, pv)| {
            [("location", pv.kpis.co2_kg), ("market", pv.kpis.co2_market_kg)]
                .into_iter()
                .filter_map(move |(basis, kg)| {
                    Some((labels(&[("site", site), ("window", w), ("basis", basis)]), kg?))
                })
        }),
    );
}

fn sites(o: &mut Exposition, sites: &[SiteSnapshot]) {
    let views = || sites.iter().map(|s| &s.view);
    let windows =
        || views().flat_map(|v| v.pue.0.iter().map(move |(w, pv)| (v.site.as_str(), *w, pv)));
    family(
        o,
        "dcwatt_site_pue",
        "Energy-based PUE per site and rolling window, labelled with its category (only while it has a value).",
        windows().filter_map(|(site, w, pv)| {
            let (val, c) = (pv.value?, pv.category?);
            let c = c.to_string();
            Some((labels(&[("site", site), ("window", w), ("category", &c)]), val))
        }),
    );
    family(
        o,
        "dcwatt_site_pue_coverage",
        "Coverage of the PUE window's energies (share of expected meter-time).",
        windows().flat_map(|(site, w, pv)| {
            [("it", pv.coverage_it), ("facility", pv.coverage_facility)]
                .map(|(side, c)| (labels(&[("site", site), ("window", w), ("side", side)]), c))
        }),
    );
    family(
        o,
        "dcwatt_site_pue_quality",
        "A constant 1, labelled with the quality of the PUE window's value (measured, estimated, partial, invalid, no_data).",
        windows().map(|(site, w, pv)| {
            (
                labels(&[("site", site), ("window", w), ("quality", pv.quality)]),
                1,
            )
        }),
    );
    family(
        o,
        "dcwatt_site_pue_window_span_ratio",
        "Share of the window's length that the site's data spans (below 1 the PUE is at best partial).",
        windows().filter_map(|(site, w, pv)| {
            Some((labels(&[("site", site), ("window", w)]), pv.span_share?))
        }),
    );
    family(
        o,
        "dcwatt_site_energy_joules",
        "The energies the window's PUE divides (measured plus the estimate for uncovered meter-time), J, side facility or it, at the PUE's category; only while the PUE has a value, so that sums over sites divide like for like.",
        windows().flat_map(|(site, w, pv)| {
            let c = pv.value.and(pv.category).map(|c| c.to_string());
            let sides = [
                ("facility", pv.facility_kwh + pv.facility_fill_kwh),
                ("it", pv.it_kwh + pv.it_fill_kwh),
            ];
            sides.into_iter().filter_map(move |(side, kwh)| {
                let c = c.as_deref()?;
                let l = labels(&[("site", site), ("window", w), ("side", side), ("category", c)]);
                Some((l, kwh * 3.6e6))
            })
        }),
    );
    kpis(o, &windows);
    family(
        o,
        "dcwatt_site_power_watts",
        "Live site power: facility input and IT (at the chosen category), only while a meter of it reports.",
        views().flat_map(|v| {
            [("facility", v.power.facility_w), ("it", v.power.it_w)]
                .into_iter()
                .filter_map(|(kind, w)| Some((labels(&[("site", &v.site), ("kind", kind)]), w?)))
        }),
    );
    family(
        o,
        "dcwatt_site_power_ratio",
        "Instantaneous facility/IT power ratio (indicative, not PUE).",
        views().filter_map(|v| {
            let (r, c) = (v.power.ratio?, v.power.category?);
            Some((
                labels(&[("site", &v.site), ("category", &c.to_string())]),
                r,
            ))
        }),
    );
    family(
        o,
        "dcwatt_site_nodes",
        "Nodes per site by state.",
        views().flat_map(|v| {
            let n = &v.nodes;
            [
                ("online", n.online),
                ("offline", n.offline),
                ("stale", n.stale),
                ("retired", n.retired),
            ]
            .map(|(state, k)| (labels(&[("site", &v.site), ("state", state)]), k))
        }),
    );
    family(
        o,
        "dcwatt_site_missing_batches",
        "Batches of the site's nodes that never arrived (sequence gaps), summed.",
        views().map(|v| (labels(&[("site", &v.site)]), v.missing_batches)),
    );
    family(
        o,
        "dcwatt_site_standard_racks",
        "Rack budgets in standard racks (2.5 kW each): configured and in use.",
        views().flat_map(|v| {
            let c = &v.capacity;
            [
                ("configured", c.standard_racks),
                ("in_use", c.standard_racks_in_use),
            ]
            .map(|(state, k)| (labels(&[("site", &v.site), ("state", state)]), k))
        }),
    );
    family(
        o,
        "dcwatt_site_target",
        "The site's own target for a figure ([[sites]] targets): kpi pue, wue (at most), ref, occupancy, it_utilization (at least).",
        views().flat_map(|v| {
            v.targets.iter().map(move |t| {
                let d = match t.target.direction {
                    crate::engine::targets::Direction::AtMost => "at_most",
                    crate::engine::targets::Direction::AtLeast => "at_least",
                };
                let l = labels(&[("site", &v.site), ("kpi", t.target.kpi), ("direction", d)]);
                (l, t.target.target)
            })
        }),
    );
    family(
        o,
        "dcwatt_site_racks_planned",
        "Racks the site was designed for and has installed (from configuration), as counts and in standard racks (2.5 kW): only those set.",
        views().flat_map(|v| {
            let c = &v.capacity;
            [
                ("designed", "count", c.racks_designed.map(f64::from)),
                ("installed", "count", c.racks_installed.map(f64::from)),
                ("designed", "standard", c.standard_racks_designed),
                ("installed", "standard", c.standard_racks_installed),
            ]
            .into_iter()
            .filter_map(|(state, unit, k)| {
                Some((labels(&[("site", &v.site), ("state", state), ("unit", unit)]), k?))
            })
        }),
    );
    family(
        o,
        "dcwatt_site_rack_occupancy_ratio",
        "Rack occupancy (上架率): racks in use / racks installed (basis count) or budgets in use / installed capacity (basis standard); only where configured.",
        views().flat_map(|v| {
            let c = &v.capacity;
            [("count", c.occupancy), ("standard", c.occupancy_standard)]
                .into_iter()
                .filter_map(|(basis, x)| {
                    Some((labels(&[("site", &v.site), ("basis", basis)]), x?))
                })
        }),
    );
    family(
        o,
        "dcwatt_site_fp16_pflops",
        "Peak dense FP16 compute of the site's GPUs, PFLOPS.",
        views().map(|v| (labels(&[("site", &v.site)]), v.capacity.fp16_pflops)),
    );
}

fn zones(o: &mut Exposition, sites: &[SiteSnapshot]) {
    let windows = || {
        sites.iter().flat_map(|s| {
            s.view.zones.iter().flat_map(move |z| {
                z.ppue
                    .iter()
                    .map(move |(w, zw)| (s.view.site.as_str(), z.zone.as_str(), *w, zw))
            })
        })
    };
    family(
        o,
        "dcwatt_zone_ppue",
        "Partial PUE of a zone with its own overhead meters, per rolling window (only while it has a value).",
        windows().filter_map(|(site, zone, w, zw)| {
            let (v, c) = (zw.value?, zw.category?);
            let c = c.to_string();
            let l = labels(&[("site", site), ("zone", zone), ("window", w), ("category", &c)]);
            Some((l, v))
        }),
    );
    family(
        o,
        "dcwatt_zone_ppue_coverage",
        "Coverage of the zone window's energies: side it or overhead.",
        windows().flat_map(|(site, zone, w, zw)| {
            [("it", zw.coverage_it), ("overhead", zw.coverage_overhead)].map(|(side, c)| {
                let l = labels(&[
                    ("site", site),
                    ("zone", zone),
                    ("window", w),
                    ("side", side),
                ]);
                (l, c)
            })
        }),
    );
    family(
        o,
        "dcwatt_zone_ppue_quality",
        "A constant 1, labelled with the quality of the zone window's partial PUE.",
        windows().map(|(site, zone, w, zw)| {
            let l = labels(&[
                ("site", site),
                ("zone", zone),
                ("window", w),
                ("quality", zw.quality),
            ]);
            (l, 1)
        }),
    );
    family(
        o,
        "dcwatt_zone_energy_joules",
        "The zone window's energies, J: side it or overhead (the zone's own cooling, lighting, other).",
        windows().flat_map(|(site, zone, w, zw)| {
            [("it", zw.it_kwh), ("overhead", zw.overhead_kwh)].map(|(side, kwh)| {
                let l = labels(&[("site", site), ("zone", zone), ("window", w), ("side", side)]);
                (l, kwh * 3.6e6)
            })
        }),
    );
}

fn racks(o: &mut Exposition, sites: &[SiteSnapshot]) {
    let all = || {
        sites
            .iter()
            .flat_map(|s| s.racks.iter().map(move |r| (s.view.site.as_str(), r)))
    };
    let rl = |site: &str, r: &RackView| labels(&[("site", site), ("rack", &r.rack)]);
    let one = |o: &mut Exposition, name: &str, help: &str, f: fn(&RackView) -> Option<f64>| {
        family(
            o,
            name,
            help,
            all().filter_map(|(site, r)| Some((rl(site, r), f(r)?))),
        );
    };
    one(
        o,
        "dcwatt_rack_power_watts",
        "Live IT power of the rack's meters that report, W (a lower bound while some are silent: see dcwatt_rack_meters); absent while none reports.",
        |r| r.power_w,
    );
    family(
        o,
        "dcwatt_rack_meters",
        "Meters the rack's power comes from (PDU outlets, else host inputs): state total or reporting.",
        all().flat_map(|(site, r)| {
            [("total", r.meters), ("reporting", r.meters_reporting)].map(|(state, n)| {
                (
                    labels(&[("site", site), ("rack", &r.rack), ("state", state)]),
                    n,
                )
            })
        }),
    );
    one(
        o,
        "dcwatt_rack_budget_watts",
        "The rack's power budget × its derating, W (configured racks only).",
        |r| r.budget_w,
    );
    one(
        o,
        "dcwatt_rack_power_utilization_ratio",
        "Rack power / derated budget.",
        |r| r.utilization,
    );
    one(
        o,
        "dcwatt_rack_feed_capacity_watts",
        "With A/B feeds: derated capacity of one feed, W.",
        |r| r.feed_w,
    );
    one(
        o,
        "dcwatt_rack_failover_headroom_watts",
        "With A/B feeds: one feed's derated capacity minus the rack's power, W (below 0: losing a feed overloads the other).",
        |r| r.failover_headroom_w,
    );
    family(
        o,
        "dcwatt_rack_units",
        "Rack units: state total or used (configured racks with space).",
        all().flat_map(|(site, r)| {
            [("total", r.u_total), ("used", r.u_used)]
                .into_iter()
                .filter_map(move |(state, n)| {
                    Some((
                        labels(&[("site", site), ("rack", &r.rack), ("state", state)]),
                        n?,
                    ))
                })
        }),
    );
    one(
        o,
        "dcwatt_rack_space_utilization_ratio",
        "Rack units used / rack units in the rack.",
        |r| r.space_utilization,
    );
    one(
        o,
        "dcwatt_rack_stranded_power_watts",
        "Power budget left that cannot be used because the rack's space is full, W.",
        |r| r.stranded_power_w,
    );
    one(
        o,
        "dcwatt_rack_stranded_units",
        "Rack units left that cannot be used because the rack's power is used up.",
        |r| r.stranded_u.map(f64::from),
    );
    one(
        o,
        "dcwatt_rack_hosts",
        "Hosts whose birth names the rack.",
        |r| r.hosts.map(f64::from),
    );
    one(
        o,
        "dcwatt_rack_cpu_utilization_ratio",
        "Mean CPU utilization of the rack's hosts that report it.",
        |r| r.cpu_util,
    );
    one(
        o,
        "dcwatt_rack_gpu_utilization_ratio",
        "Mean utilization of the rack's GPUs that report it.",
        |r| r.gpu_util,
    );
}

/// The latest value of these node metrics (the agent's metric name, its family, help).
const NODE_METRICS: [(&str, &str, &str); 2] = [
    (
        "temp_c",
        "dcwatt_node_temperature_celsius",
        "A node's latest temperature reading, °C, by component (inlet, cpu…).",
    ),
    (
        "ups_output_source",
        "dcwatt_node_ups_output_source",
        "A UPS's latest output source (UPS-MIB upsOutputSource: 3 normal, 4 bypass, 5 battery).",
    ),
];

fn nodes(o: &mut Exposition, sites: &[SiteSnapshot], which: NodeSeries) {
    // Each site's nodes that get their own series, chosen once per scrape.
    let picked: Vec<Vec<&NodeView>> = sites
        .iter()
        .map(|s| s.nodes.iter().filter(|n| which.includes(n)).collect())
        .collect();
    let chosen = || {
        sites
            .iter()
            .zip(&picked)
            .flat_map(|(s, nodes)| nodes.iter().map(move |n| (s, *n)))
    };
    let nl = |s: &SiteSnapshot, n: &NodeView| labels(&[("site", &s.view.site), ("node", &n.node)]);
    family(
        o,
        "dcwatt_node_series_omitted",
        "Nodes of the site left out of the per-node series by http.node_metrics.",
        sites.iter().zip(&picked).map(|(s, kept)| {
            (
                labels(&[("site", &s.view.site)]),
                s.nodes.len() - kept.len(),
            )
        }),
    );
    family(
        o,
        "dcwatt_node_up",
        "1 while the node reports, 0 while it is offline or stale (retired nodes are not written).",
        chosen()
            .filter(|(_, n)| n.state != "retired")
            .map(|(s, n)| (nl(s, n), u8::from(n.state == "online"))),
    );
    family(
        o,
        "dcwatt_node_state",
        "A constant 1, labelled with the node's state (online, offline, stale, retired).",
        chosen().map(|(s, n)| {
            let l = labels(&[
                ("site", &s.view.site),
                ("node", &n.node),
                ("state", n.state),
            ]);
            (l, 1)
        }),
    );
    family(
        o,
        "dcwatt_node_info",
        "A constant 1, labelled with the node's role, rack, zone and agent version from its birth (empty when not given).",
        chosen().map(|(s, n)| {
            let l = labels(&[
                ("site", &s.view.site),
                ("node", &n.node),
                ("role", n.role.unwrap_or_default()),
                ("rack", n.rack.as_deref().unwrap_or_default()),
                ("zone", n.zone.as_deref().unwrap_or_default()),
                ("agent", n.agent.as_deref().unwrap_or_default()),
            ]);
            (l, 1)
        }),
    );
    family(
        o,
        "dcwatt_node_last_seen_age_seconds",
        "Seconds since the collector last heard from the node.",
        chosen().filter_map(|(s, n)| {
            let age = (s.view.ts_ms - n.last_seen_ms?).max(0) as f64 / 1000.0;
            Some((nl(s, n), age))
        }),
    );
    family(
        o,
        "dcwatt_node_missing_batches",
        "Batches of the node that never arrived (sequence gaps not filled).",
        chosen().map(|(s, n)| (nl(s, n), n.missing_batches)),
    );
    family(
        o,
        "dcwatt_node_power_watts",
        "The power the node's reporting meters measure now, W, by measurement point.",
        chosen().flat_map(|(s, n)| {
            n.live_power_w.iter().map(move |(point, w)| {
                let l = labels(&[("site", &s.view.site), ("node", &n.node), ("point", point)]);
                (l, *w)
            })
        }),
    );
    // The metrics are a site's flat list: look each one's node up once.
    let kept: Vec<std::collections::HashSet<&str>> = picked
        .iter()
        .map(|nodes| nodes.iter().map(|n| n.node.as_str()).collect())
        .collect();
    for (metric, name, help) in NODE_METRICS {
        family(
            o,
            name,
            help,
            sites.iter().zip(&kept).flat_map(|(s, kept)| {
                s.metric_samples()
                    .filter(move |m| m.metric == metric && kept.contains(m.node.as_str()))
                    .map(move |m| {
                        let l = labels(&[
                            ("site", &s.view.site),
                            ("node", &m.node),
                            ("component", &m.component),
                        ]);
                        (l, m.value)
                    })
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, RackBudget};
    use dcwatt_common::metrics::Registry;
    use dcwatt_common::protocol::{Point, Reading, StatusMessage};

    const T0: i64 = 1_800_000_000_000;

    fn birth(node: &str, fields: &str) -> StatusMessage {
        serde_json::from_str(&format!(
            r#"{{"v":1,"site":"dc","node":"{node}","state":"online","ts_ms":{T0},"interval_ms":1000,{fields}}}"#
        ))
        .expect("birth")
    }

    /// A site of one facility meter (1,500 W), host h1 in rack r1 (1,000 W, inlet 24.5 °C)
    /// and host h2 in rack r2, silent after its first reading (400 W): 120 s of data. The
    /// gauges swing ±1 W about their means (a gauge repeating itself exactly is flagged
    /// frozen), so each second's trapezoid is exactly the mean.
    fn scrape(which: NodeSeries) -> String {
        let mut e = Engine::new(EngineConfig::default());
        e.apply_status(&birth("m1", r#""role":"meter""#), T0);
        e.apply_status(
            &birth("h1", r#""role":"host","rack":"r1","zone":"hall-1""#),
            T0,
        );
        e.apply_status(&birth("h2", r#""role":"host","rack":"r2""#), T0);
        for s in 0..=120 {
            let t = T0 + s * 1000;
            let swing = if s % 2 == 0 { -1.0 } else { 1.0 };
            let gauge = |p, w: f64| Reading::gauge("power_w", w + swing, t).at(p);
            e.apply_readings("dc", "m1", &[gauge(Point::FacilityInput, 1_500.0)], t);
            let mut inlet = Reading::gauge("temp_c", 24.5, t);
            inlet.component = "inlet".into();
            e.apply_readings("dc", "h1", &[gauge(Point::ItInput, 1_000.0), inlet], t);
            if s == 0 {
                e.apply_readings("dc", "h2", &[gauge(Point::ItInput, 400.0)], t);
            }
        }
        let budgets = [RackBudget {
            site: "dc".into(),
            rack: "r1".into(),
            budget_w: 2_000.0,
            derating: 0.8,
            feed_w: Some(1_000.0),
            u_total: Some(42),
            u_used: Some(10),
        }];
        let now = T0 + 120_500;
        let mut snap = Snapshot::take(&e, &budgets, now);
        snap.took_s = 0.0125;
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let r = Registry::default();
        r.register(Arc::new(SiteFamilies {
            snapshots: rx,
            nodes: which,
        }));
        r.render()
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn the_snapshot_says_how_long_it_took() {
        let t = scrape(NodeSeries::All);
        assert_eq!(value(&t, "dcwatt_snapshot_duration_seconds"), Some(0.0125));
    }

    #[test]
    fn racks_carry_power_budget_headroom_and_space_by_hand() {
        let t = scrape(NodeSeries::All);
        let r1 = "{site=\"dc\",rack=\"r1\"}";
        let v = |name: &str| value(&t, &format!("{name}{r1}"));
        // The last reading (second 120) is 1,000 − 1 W.
        assert_eq!(v("dcwatt_rack_power_watts"), Some(999.0));
        // 2,000 W × 0.8 = 1,600 W; 999 / 1,600 = 0.624375.
        assert_eq!(v("dcwatt_rack_budget_watts"), Some(1_600.0));
        assert_eq!(v("dcwatt_rack_power_utilization_ratio"), Some(0.624375));
        // One feed: 1,000 W × 0.8 = 800 W, minus 999 W drawn.
        assert_eq!(v("dcwatt_rack_feed_capacity_watts"), Some(800.0));
        assert_eq!(v("dcwatt_rack_failover_headroom_watts"), Some(-199.0));
        assert_eq!(
            value(
                &t,
                "dcwatt_rack_units{site=\"dc\",rack=\"r1\",state=\"used\"}"
            ),
            Some(10.0)
        );
        // r2's one meter is silent: no power, never 0 W, and its meter counts say why.
        assert!(
            !t.contains("dcwatt_rack_power_watts{site=\"dc\",rack=\"r2\"}"),
            "{t}"
        );
        assert_eq!(
            value(
                &t,
                "dcwatt_rack_meters{site=\"dc\",rack=\"r2\",state=\"reporting\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &t,
                "dcwatt_rack_meters{site=\"dc\",rack=\"r2\",state=\"total\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn the_site_energies_divide_to_its_pue() {
        let t = scrape(NodeSeries::All);
        let pue = value(
            &t,
            "dcwatt_site_pue{site=\"dc\",window=\"1m\",category=\"3\"}",
        )
        .expect("1m PUE");
        let e = |side: &str| {
            value(
                &t,
                &format!(
                    "dcwatt_site_energy_joules{{site=\"dc\",window=\"1m\",side=\"{side}\",category=\"3\"}}"
                ),
            )
            .expect(side)
        };
        // 60 s × 1,500 W = 90 kJ of facility energy; IT is h1's 60 s × 1,000 W measured
        // and silent h2's 60 s × 399 W estimated from its one reading (400 − 1 W):
        // 60 + 23.94 = 83.94 kJ.
        assert!((e("facility") - 90_000.0).abs() < 1e-6, "{}", e("facility"));
        assert!((e("it") - 83_940.0).abs() < 1e-6, "{}", e("it"));
        assert!((e("facility") / e("it") - pue).abs() < 1e-12);
        assert!((pue - 90.0 / 83.94).abs() < 1e-9, "{pue}");
        assert_eq!(
            value(
                &t,
                "dcwatt_site_pue_quality{site=\"dc\",window=\"1m\",quality=\"partial\"}"
            ),
            Some(1.0),
            "h2's share is estimated: {t}"
        );
        // 120 s of data in a 1 h window.
        let span = value(
            &t,
            "dcwatt_site_pue_window_span_ratio{site=\"dc\",window=\"1h\"}",
        )
        .expect("span");
        assert!((span - 120.0 / 3600.0).abs() < 1e-3, "{span}");
        assert!(
            t.contains("dcwatt_site_pue_quality{site=\"dc\",window=\"1h\",quality=\"partial\"} 1"),
            "a young window is partial"
        );
    }

    #[test]
    fn the_node_knob_bounds_the_per_node_series() {
        let all = scrape(NodeSeries::All);
        assert_eq!(
            value(&all, "dcwatt_node_up{site=\"dc\",node=\"h1\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&all, "dcwatt_node_up{site=\"dc\",node=\"h2\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(
                &all,
                "dcwatt_node_power_watts{site=\"dc\",node=\"h1\",point=\"it_input\"}"
            ),
            Some(999.0)
        );
        assert_eq!(
            value(
                &all,
                "dcwatt_node_temperature_celsius{site=\"dc\",node=\"h1\",component=\"inlet\"}"
            ),
            Some(24.5)
        );
        let age = value(
            &all,
            "dcwatt_node_last_seen_age_seconds{site=\"dc\",node=\"h2\"}",
        )
        .expect("h2 age");
        assert!((age - 120.5).abs() < 1e-9, "{age}");
        assert!(all.contains(
            "dcwatt_node_info{site=\"dc\",node=\"h1\",role=\"host\",rack=\"r1\",zone=\"hall-1\",agent=\"\"} 1"
        ));
        assert!(all.contains("dcwatt_node_state{site=\"dc\",node=\"h2\",state=\"stale\"} 1"));
        assert_eq!(
            value(&all, "dcwatt_node_series_omitted{site=\"dc\"}"),
            Some(0.0)
        );

        // Problems only: the meter and the stale host, not the healthy h1.
        let some = scrape(NodeSeries::Problems);
        assert!(some.contains("dcwatt_node_up{site=\"dc\",node=\"m1\"} 1"));
        assert!(some.contains("dcwatt_node_up{site=\"dc\",node=\"h2\"} 0"));
        assert!(!some.contains("node=\"h1\""), "{some}");
        assert_eq!(
            value(&some, "dcwatt_node_series_omitted{site=\"dc\"}"),
            Some(1.0)
        );

        let none = scrape(NodeSeries::Off);
        assert!(!none.contains("node=\""), "{none}");
        assert_eq!(
            value(&none, "dcwatt_node_series_omitted{site=\"dc\"}"),
            Some(3.0)
        );
        // The site's own families do not depend on the knob.
        assert!(none.contains("dcwatt_site_nodes{site=\"dc\",state=\"stale\"} 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y"), ("b", "c\\d\ne")]),
            "a=\"x\\\"y\",b=\"c\\\\d\\ne\""
        );
    }

    #[test]
    fn docs_list_every_family_with_its_labels() {
        let docs = include_str!("../../../docs/api.md");
        let t = scrape(NodeSeries::All);
        for l in t.lines() {
            if let Some(name) = l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()) {
                assert!(
                    docs.contains(&format!("| `{name}` |")),
                    "docs/api.md has no row for {name}"
                );
            }
        }
    }
}
