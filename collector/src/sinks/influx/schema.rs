//! The InfluxDB schema (docs/influxdb.md): which measurements, tags and fields each kind
//! of data becomes. Tags are only identifiers with a bounded set of values (sites, nodes,
//! racks, zones, metric and point names, windows, categories); values are fields.

use super::line::{Field, Line};
use crate::engine::{Batch, SiteSnapshot};

/// Raw readings: `dcwatt_reading`, one line per reading, stamped with the reading's time.
/// Returns the number of lines written.
pub fn readings(out: &mut String, b: &Batch) -> usize {
    let mut n = 0;
    for r in &b.readings {
        let point = r.point.map(|p| p.as_str());
        n += usize::from(
            Line::new(out, "dcwatt_reading")
                .tag("component", &r.component)
                .tag("metric", &r.metric)
                .tag("node", &b.node)
                .tag_opt("point", point)
                .tag_opt("rack", r.rack.as_deref().or(b.rack.as_deref()))
                .tag("site", &b.site)
                .tag_opt("source", r.source.as_deref())
                .tag_opt("zone", r.zone.as_deref().or(b.zone.as_deref()))
                .field("value", Field::F(r.value))
                .end(r.ts_ms),
        );
    }
    n
}

/// `dcwatt_kpi`: the figures beyond PUE over one window, each with its quality, and the
/// quantities they divide (only those the site has meters or settings for).
fn kpi_line(
    out: &mut String,
    site: &str,
    window: &str,
    k: &crate::engine::kpi::Kpis,
    ts: i64,
) -> usize {
    let mut line = Line::new(out, "dcwatt_kpi")
        .tag("site", site)
        .tag("window", window);
    for (name, f) in k.figures() {
        line = line
            .field_opt(name, f.value)
            .field(&format!("{name}_quality"), Field::S(f.quality));
    }
    usize::from(
        line.field_opt("water_l", k.water_l)
            .field_opt("renewable_onsite_kwh", k.renewable_onsite_kwh)
            .field("renewable_contract_kwh", Field::F(k.renewable_contract_kwh))
            .field_opt("reused_kwh", k.reused_kwh)
            .field_opt("co2_kg", k.co2_kg)
            .field_opt("co2_market_kg", k.co2_market_kg)
            .end(ts),
    )
}

/// Derived values of one site: `dcwatt_pue` per window, `dcwatt_power`, `dcwatt_site`
/// and `dcwatt_rack` per rack, all stamped with the snapshot's time. Returns the number
/// of lines written.
pub fn derived(out: &mut String, s: &SiteSnapshot) -> usize {
    let v = &s.view;
    let site = v.site.as_str();
    let ts = v.ts_ms;
    let mut n = 0;
    for (window, w) in &v.pue.0 {
        let category = w.category.map(|c| c.to_string());
        n += usize::from(
            Line::new(out, "dcwatt_pue")
                .tag_opt("category", category.as_deref())
                .tag("site", site)
                .tag("window", window)
                .field_opt("value", w.value)
                .field_opt("dcie", w.dcie)
                .field("coverage_it", Field::F(w.coverage_it))
                .field("coverage_facility", Field::F(w.coverage_facility))
                .field("facility_kwh", Field::F(w.facility_kwh))
                .field("it_kwh", Field::F(w.it_kwh))
                .field("quality", Field::S(w.quality))
                .end(ts),
        );
        n += kpi_line(out, site, window, &w.kpis, ts);
    }
    let p = &v.power;
    let category = p.category.map(|c| c.to_string());
    n += usize::from(
        Line::new(out, "dcwatt_power")
            .tag_opt("category", category.as_deref())
            .tag("site", site)
            .field_opt("facility_w", p.facility_w)
            .field_opt("it_w", p.it_w)
            .field_opt("ratio", p.ratio)
            .field("coverage_it", Field::F(p.coverage_it))
            .field("coverage_facility", Field::F(p.coverage_facility))
            .field("quality", Field::S(p.quality))
            .end(ts),
    );
    let c = &v.capacity;
    let int = |x: usize| Field::I(i64::try_from(x).unwrap_or(i64::MAX));
    n += usize::from(
        Line::new(out, "dcwatt_site")
            .tag("site", site)
            .field("nodes_total", int(v.nodes.total))
            .field("nodes_online", int(v.nodes.online))
            .field("nodes_offline", int(v.nodes.offline))
            .field("nodes_stale", int(v.nodes.stale))
            .field(
                "missing_batches",
                Field::I(i64::try_from(v.missing_batches).unwrap_or(i64::MAX)),
            )
            .field("racks", int(c.racks))
            .field("racks_in_use", int(c.racks_in_use))
            .field("standard_racks", Field::F(c.standard_racks))
            .field("standard_racks_in_use", Field::F(c.standard_racks_in_use))
            .field_opt("racks_designed", c.racks_designed.map(f64::from))
            .field_opt("racks_installed", c.racks_installed.map(f64::from))
            .field_opt("standard_racks_designed", c.standard_racks_designed)
            .field_opt("standard_racks_installed", c.standard_racks_installed)
            .field_opt("occupancy", c.occupancy)
            .field_opt("occupancy_standard", c.occupancy_standard)
            .field("gpus", Field::I(i64::from(c.gpus)))
            .field("fp16_pflops", Field::F(c.fp16_pflops))
            .field_opt("fp16_pflops_in_use", c.fp16_pflops_in_use)
            .end(ts),
    );
    for r in &s.racks {
        n += usize::from(
            Line::new(out, "dcwatt_rack")
                .tag("rack", &r.rack)
                .tag("site", site)
                .field_opt("power_w", r.power_w)
                .field("meters", Field::I(i64::from(r.meters)))
                .field("meters_reporting", Field::I(i64::from(r.meters_reporting)))
                .field_opt("budget_w", r.budget_w)
                .field_opt("utilization", r.utilization)
                .field_opt("failover_headroom_w", r.failover_headroom_w)
                .end(ts),
        );
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcwatt_common::protocol::{Point, Reading};

    #[test]
    fn a_reading_line_carries_every_tag_it_has() {
        let mut r = Reading::gauge("power_w", 412.5, 1_700_000_000_000)
            .at(Point::ItInput)
            .from_source("ipmi_dcmi");
        r.zone = Some("hall 2".into());
        let plain = Reading::gauge("cpu_util", 0.25, 1_700_000_000_001);
        let b = Batch {
            site: "dc1".into(),
            node: "h-01".into(),
            rack: Some("r12".into()),
            zone: Some("hall1".into()),
            readings: vec![r, plain],
        };
        let mut out = String::new();
        assert_eq!(readings(&mut out, &b), 2);
        assert_eq!(
            out,
            "dcwatt_reading,component=system,metric=power_w,node=h-01,point=it_input,rack=r12,\
             site=dc1,source=ipmi_dcmi,zone=hall\\ 2 value=412.5 1700000000000\n\
             dcwatt_reading,component=system,metric=cpu_util,node=h-01,rack=r12,site=dc1,\
             zone=hall1 value=0.25 1700000000001\n"
        );
    }
}
