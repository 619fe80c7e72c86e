//! The EU annual data-centre report (Energy Efficiency Directive (EU) 2023/1791 Art. 12,
//! Delegated Regulation (EU) 2024/1364): what dcwatt measures or holds in its
//! configuration for a calendar year, each field with its meters, coverage and quality,
//! and the fields it does not measure listed for the operator (docs/reports.md).

use crate::engine::WindowView;
use serde::Serialize;

/// One reported field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// The field's id in dcwatt's export.
    pub field: &'static str,
    /// What the regulation calls it.
    pub name: &'static str,
    /// The value; null where dcwatt has nothing to report it from.
    pub value: Option<f64>,
    /// Its unit.
    pub unit: &'static str,
    /// Where it comes from: the measurement points or the configuration key.
    pub source: &'static str,
    /// The least coverage among its meters over the year (absent for configured values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// `measured`, `estimated`, `partial`, `invalid`, `no_data` or `configured`.
    pub quality: &'static str,
    /// Why it is missing or not fully trusted, and what it includes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the delegated regulation asks for that dcwatt does not measure (dcwatt's reading
/// of its Annexes I and II).
pub const FOR_THE_OPERATOR: [&str; 10] = [
    "name, operator, location and date of commencement of the data centre",
    "data centre size class and total and computer room floor area (m²)",
    "installed power of the data centre (the facility's, beside PD_IT)",
    "incoming and outgoing data traffic (bytes)",
    "data stored and processed",
    "temperature set points of the computer room",
    "potable water share of the water input",
    "fuels used for cooling or back-up generation, where no facility meter counts them in E_DC",
    "waste heat utilisation outside the data centre and its temperature",
    "guarantees of origin and PPAs behind the renewable energy, if not entered as contracts",
];

fn kpi_field(
    field: &'static str,
    name: &'static str,
    unit: &'static str,
    source: &'static str,
    k: &crate::engine::kpi::Kpi,
) -> Field {
    Field {
        field,
        name,
        value: k.value,
        unit,
        source,
        coverage: Some(k.coverage),
        quality: k.quality,
        note: k.reason.clone(),
    }
}

/// The report's fields from the year's period view (`Store::energy_kpis` over the local
/// calendar year) and the site's rated IT power (W).
pub fn eu_annual(v: &WindowView, rated_it_w: Option<f64>) -> Vec<Field> {
    let k = &v.kpis;
    let estimate = |kwh: f64, what: &str| {
        (kwh > 0.0)
            .then(|| format!("includes {kwh:.3} kWh estimated for uncovered {what} meter-time"))
    };
    let energy = |field, name, source, measured: f64, fill: f64, coverage: f64| Field {
        field,
        name,
        value: (coverage > 0.0).then_some(measured + fill),
        unit: "kWh",
        source,
        coverage: Some(coverage),
        quality: if coverage <= 0.0 {
            "no_data"
        } else if fill > 0.0 {
            "estimated"
        } else {
            "measured"
        },
        note: estimate(fill, source),
    };
    let opt = |field, name, value: Option<f64>, unit, source, reason: &str| Field {
        field,
        name,
        value,
        unit,
        source,
        coverage: None,
        quality: if value.is_some() {
            "measured"
        } else {
            "no_data"
        },
        note: value.is_none().then(|| reason.to_owned()),
    };
    let water_m3 = k.water_l.map(|l| (l + k.water_fill_l) / 1000.0);
    let renewable = match (k.renewable_onsite_kwh, k.renewable_contract_kwh) {
        (None, c) if c <= 0.0 => None,
        (o, c) => Some(o.unwrap_or(0.0) + c),
    };
    vec![
        Field {
            field: "installed_it_power_demand_kw",
            name: "installed information technology power demand (PD_IT)",
            value: rated_it_w.map(|w| w / 1000.0),
            unit: "kW",
            source: "[[sites]] installed_it_kw, else the sum of the racks' budget_kw",
            coverage: None,
            quality: if rated_it_w.is_some() {
                "configured"
            } else {
                "no_data"
            },
            note: rated_it_w
                .is_none()
                .then(|| "set [[sites]] installed_it_kw".to_owned()),
        },
        energy(
            "total_energy_kwh",
            "total energy consumption (E_DC)",
            "facility_input",
            v.facility_kwh,
            v.facility_fill_kwh,
            v.coverage_facility,
        ),
        energy(
            "it_energy_kwh",
            "energy consumption of the information technology equipment (E_IT)",
            "it_input (or the category's IT point)",
            v.it_kwh,
            v.it_fill_kwh,
            v.coverage_it,
        ),
        Field {
            field: "pue",
            name: "power usage effectiveness (PUE)",
            value: v.value,
            unit: "1",
            source: "E_DC / E_IT",
            coverage: Some(v.coverage_it.min(v.coverage_facility)),
            quality: v.quality,
            note: v.reason.clone(),
        },
        opt(
            "water_input_m3",
            "total water input",
            water_m3,
            "m³",
            "water_input",
            "no water_input meter",
        ),
        kpi_field(
            "wue",
            "water usage effectiveness (WUE)",
            "L/kWh",
            "water_input / E_IT",
            &k.wue,
        ),
        opt(
            "waste_heat_reused_kwh",
            "waste heat reused",
            k.reused_kwh,
            "kWh",
            "energy_reused",
            "no energy_reused meter",
        ),
        kpi_field(
            "erf",
            "energy reuse factor (ERF)",
            "1",
            "energy_reused / E_DC",
            &k.erf,
        ),
        Field {
            field: "renewable_energy_kwh",
            name: "total renewable energy consumption",
            value: renewable,
            unit: "kWh",
            source: "renewable_onsite meters + renewable contracts (configured or entered)",
            coverage: None,
            quality: if renewable.is_some() {
                "measured"
            } else {
                "no_data"
            },
            note: Some(format!(
                "on-site {} kWh, contracts {:.3} kWh",
                k.renewable_onsite_kwh
                    .map_or("not metered".to_owned(), |o| format!("{o:.3}")),
                k.renewable_contract_kwh
            )),
        },
        kpi_field(
            "ref",
            "renewable energy factor (REF)",
            "1",
            "renewable energy / E_DC",
            &k.ref_,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kpi::{RenewableContract, SiteKpiConfig};
    use crate::engine::MinuteEnergy;
    use crate::sinks::history::store::Store;
    use dcwatt_common::protocol::Point;

    /// 2025-01-01T00:00:00Z.
    const Y0: i64 = 1_735_689_600_000;
    const DAY: i64 = 86_400_000;

    /// A year of history with ten days in it: 1.3 MW facility, 1 MW IT, 0.1 MW reused
    /// heat, 2 m³ of water a minute, and a 24 MWh certificate for the year.
    #[test]
    fn the_eu_fields_come_from_the_years_minutes_and_say_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("dcwatt-eu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut s = Store::open(&dir.join("h.sqlite")).expect("open");
        let mut batch = Vec::new();
        for i in 0..10 * 1440 {
            for (point, per_minute) in [
                (Point::FacilityInput, 1.3e6 * 60.0),
                (Point::ItInput, 1.0e6 * 60.0),
                (Point::EnergyReused, 0.1e6 * 60.0),
                (Point::WaterInput, 2_000.0),
            ] {
                batch.push(MinuteEnergy {
                    ts_ms: Y0 + 100 * DAY + i * 60_000,
                    point,
                    energy_j: per_minute,
                    covered_ms: 60_000.0,
                    expected_ms: 60_000.0,
                    estimated_j: 0.0,
                    filled_j: 0.0,
                });
            }
        }
        s.begin().expect("begin");
        s.put_minutes("eu", &batch).expect("put");
        s.commit().expect("commit");
        let cfg = SiteKpiConfig {
            contracts: vec![RenewableContract {
                from_ms: Y0,
                to_ms: Y0 + 365 * DAY,
                kwh: 24_000.0,
                evidence: "GO-2025-1".into(),
                kind: "guarantee_of_origin".into(),
                entered_ms: None,
            }],
            rated_it_w: Some(1.2e6),
            ..SiteKpiConfig::default()
        };
        let rule = crate::engine::LevelRule {
            min_coverage: 0.95,
            category: None,
        };
        let (v, minutes) = s
            .energy_kpis("eu", Y0, Y0 + 365 * DAY, rule, &cfg)
            .expect("year");
        assert_eq!(minutes, 14_400);
        let f = eu_annual(&v, cfg.rated_it_w);
        let get = |id: &str| f.iter().find(|x| x.field == id).expect(id).clone();
        assert_eq!(get("installed_it_power_demand_kw").value, Some(1_200.0));
        assert_eq!(get("installed_it_power_demand_kw").quality, "configured");
        // 1.3 MW for 240 h = 312 MWh; 1 MW → 240 MWh.
        let close = |x: Option<f64>, want: f64| x.is_some_and(|x| (x - want).abs() < 1e-6 * want);
        assert!(close(get("total_energy_kwh").value, 312_000.0));
        assert_eq!(get("total_energy_kwh").quality, "measured");
        assert!(close(get("it_energy_kwh").value, 240_000.0));
        assert!(close(get("pue").value, 1.3));
        // 2 m³ a minute for 14 400 minutes; 28 800 m³ over 240 000 kWh = 120 L/kWh.
        assert!(close(get("water_input_m3").value, 28_800.0));
        assert!(close(get("wue").value, 120.0));
        assert!(close(get("waste_heat_reused_kwh").value, 24_000.0));
        assert!(close(get("erf").value, 24_000.0 / 312_000.0));
        // The whole certificate: the year is the report's period.
        assert!(close(get("renewable_energy_kwh").value, 24_000.0));
        assert!(close(get("ref").value, 24_000.0 / 312_000.0));
        // Without a rating or meters, a field says so instead of reporting zero.
        let (empty, _) = s
            .energy_kpis(
                "nobody",
                Y0,
                Y0 + 365 * DAY,
                rule,
                &SiteKpiConfig::default(),
            )
            .expect("year");
        let f = eu_annual(&empty, None);
        for x in &f {
            assert_eq!(x.value, None, "{x:?}");
            assert_eq!(x.quality, "no_data", "{x:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
