//! `[engine]`, `[[sites]]` and `[[racks]]`: the engine's settings.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SiteRaw {
    pub(super) site: String,
    /// A fixed offset (`+08:00`): no daylight saving. UTC when neither is set.
    #[serde(default)]
    pub(super) utc_offset: Option<String>,
    /// An IANA zone (`Europe/Berlin`): days and months follow daylight saving.
    #[serde(default)]
    pub(super) time_zone: Option<String>,
    /// The PUE category the site reports at (1, 2 or 3); chosen from coverage when unset.
    #[serde(default)]
    pub(super) category: Option<u8>,
    /// Meters the site has per measurement point, e.g. `{ facility_input = 2,
    /// it_input = 500 }`: coverage counts those that never reported as missing.
    #[serde(default)]
    pub(super) expected_meters: std::collections::BTreeMap<String, u32>,
    /// Grid emission factors by period, for CUE.
    #[serde(default)]
    pub(super) emission_factors: Vec<FactorRaw>,
    /// kg CO₂eq per kWh of on-site renewable generation (default 0).
    #[serde(default)]
    pub(super) onsite_kg_per_kwh: Option<f64>,
    /// Renewable energy bought by contract, for REF and market-based CUE.
    #[serde(default)]
    pub(super) renewable_contracts: Vec<ContractRaw>,
    /// Racks the site was designed for, for occupancy.
    #[serde(default)]
    pub(super) racks_designed: Option<u32>,
    /// Racks installed.
    #[serde(default)]
    pub(super) racks_installed: Option<u32>,
    /// Designed IT capacity, kW.
    #[serde(default)]
    pub(super) designed_it_kw: Option<f64>,
    /// Installed IT capacity, kW.
    #[serde(default)]
    pub(super) installed_it_kw: Option<f64>,
    /// Metered rack IT power above which a rack is in use, W.
    #[serde(default)]
    pub(super) rack_in_use_floor_w: Option<f64>,
    /// Targets: a preset and/or figures.
    #[serde(default)]
    pub(super) targets: Option<TargetsRaw>,
}

/// `[[sites]] targets`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetsRaw {
    pub(super) preset: Option<String>,
    /// Where the site's own figures come from (default "site configuration").
    pub(super) source: Option<String>,
    pub(super) pue: Option<f64>,
    pub(super) wue: Option<f64>,
    #[serde(rename = "ref")]
    pub(super) ref_: Option<f64>,
    pub(super) occupancy: Option<f64>,
    pub(super) it_utilization: Option<f64>,
}

/// A site's targets: the preset's, then the site's own figures over them.
pub(super) fn site_targets(
    i: usize,
    sr: &SiteRaw,
    p: &mut Problems,
) -> Vec<crate::engine::targets::Target> {
    use crate::engine::targets::{direction, preset, Target, PRESETS};
    let Some(t) = &sr.targets else {
        return Vec::new();
    };
    let mut out: Vec<Target> = Vec::new();
    let mut set = |kpi: &'static str, target: f64, source: &str, confirmed: bool| {
        let Some(direction) = direction(kpi) else {
            return;
        };
        out.retain(|t| t.kpi != kpi);
        out.push(Target {
            kpi,
            target,
            direction,
            source: source.to_owned(),
            confirmed,
        });
    };
    if let Some(name) = &t.preset {
        match preset(name) {
            Some(pr) => {
                for (kpi, v) in pr.targets {
                    set(kpi, *v, pr.source, pr.confirmed);
                }
            }
            None => p.push(
                format!("sites[{i}].targets.preset"),
                format!(
                    "{name:?} is not a preset (one of {})",
                    PRESETS.map(|p| p.name).join(", ")
                ),
            ),
        }
    }
    let own = t.source.as_deref().unwrap_or("site configuration");
    for (kpi, v, max) in [
        ("pue", t.pue, 10.0),
        ("wue", t.wue, 1_000.0),
        ("ref", t.ref_, 1.0),
        ("occupancy", t.occupancy, 1.0),
        ("it_utilization", t.it_utilization, 1.0),
    ] {
        let Some(v) = v else { continue };
        let min = if kpi == "pue" { 1.0 } else { 0.0 };
        if v.is_finite() && (min..=max).contains(&v) {
            set(kpi, v, own, true);
        } else {
            p.push(
                format!("sites[{i}].targets.{kpi}"),
                format!("{v} must be {min}..={max}"),
            );
        }
    }
    out
}

/// A site's designed and installed racks, with every problem pushed at its path.
pub(super) fn site_racks(i: usize, sr: &SiteRaw, p: &mut Problems) -> crate::engine::SiteRacks {
    let kw = |name: &str, v: Option<f64>, p: &mut Problems| match v {
        Some(k) if !(k.is_finite() && k > 0.0 && k <= 10_000_000.0) => {
            p.push(
                format!("sites[{i}].{name}"),
                format!("{k} must be above 0 kW (at most 10000000)"),
            );
            None
        }
        v => v.map(|k| k * 1000.0),
    };
    let r = crate::engine::SiteRacks {
        designed: sr.racks_designed,
        installed: sr.racks_installed,
        designed_w: kw("designed_it_kw", sr.designed_it_kw, p),
        installed_w: kw("installed_it_kw", sr.installed_it_kw, p),
        in_use_floor_w: sr.rack_in_use_floor_w.unwrap_or(0.0),
    };
    if !(r.in_use_floor_w.is_finite() && r.in_use_floor_w >= 0.0) {
        p.push(
            format!("sites[{i}].rack_in_use_floor_w"),
            "must be 0 W or more",
        );
    }
    if let (Some(d), Some(n)) = (r.designed, r.installed) {
        if n > d {
            p.push(
                format!("sites[{i}].racks_installed"),
                format!("{n} racks installed is more than the {d} designed"),
            );
        }
    }
    r
}

/// One `[[sites]] emission_factors` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FactorRaw {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) kg_per_kwh: f64,
    #[serde(default = "location")]
    pub(super) basis: String,
    pub(super) source: String,
}

fn location() -> String {
    "location".to_owned()
}

/// One `[[sites]] renewable_contracts` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContractRaw {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) kwh: f64,
    pub(super) evidence: String,
    #[serde(default = "contract")]
    pub(super) kind: String,
}

fn contract() -> String {
    "contract".to_owned()
}

/// The highest emission factor taken for plausible, kg CO₂eq/kWh (coal-fired generation
/// is about 1; 3 leaves room for any grid and refuses a factor given in g/kWh).
const MAX_KG_PER_KWH: f64 = 3.0;

/// A site's emission factors and contracts, with every problem pushed at its path.
/// Dates are the site's local dates or times (`2026-01-01`, `2026-01-01T00:00`).
pub(super) fn site_kpis(
    i: usize,
    sr: &SiteRaw,
    zone: &crate::zone::SiteZone,
    p: &mut Problems,
) -> crate::engine::kpi::SiteKpiConfig {
    use crate::engine::kpi::{Basis, EmissionFactor, RenewableContract, SiteKpiConfig};
    let mut period = |path: String, from: &str, to: &str| -> Option<(i64, i64)> {
        crate::zone::parse_local_period(from, to, zone)
            .map_err(|why| p.push(path, why))
            .ok()
    };
    let mut cfg = SiteKpiConfig::default();
    let mut bad = Vec::new();
    for (j, f) in sr.emission_factors.iter().enumerate() {
        let path = format!("sites[{i}].emission_factors[{j}]");
        let span = period(path.clone(), &f.from, &f.to);
        let basis = Basis::parse(&f.basis);
        if basis.is_none() {
            bad.push((
                format!("{path}.basis"),
                format!("{:?} is not location or market", f.basis),
            ));
        }
        if !(f.kg_per_kwh.is_finite() && (0.0..=MAX_KG_PER_KWH).contains(&f.kg_per_kwh)) {
            bad.push((
                format!("{path}.kg_per_kwh"),
                format!("{} must be 0..={MAX_KG_PER_KWH} kg CO2eq/kWh", f.kg_per_kwh),
            ));
        }
        if f.source.trim().is_empty() {
            bad.push((
                format!("{path}.source"),
                "name the factor's publisher and year".to_owned(),
            ));
        }
        if let (Some((from_ms, to_ms)), Some(basis)) = (span, basis) {
            if let Some(k) = cfg
                .factors
                .iter()
                .position(|o| o.basis == basis && o.from_ms < to_ms && from_ms < o.to_ms)
            {
                bad.push((
                    path.clone(),
                    format!("overlaps emission_factors[{k}] of the same basis"),
                ));
            }
            cfg.factors.push(EmissionFactor {
                from_ms,
                to_ms,
                kg_per_kwh: f.kg_per_kwh,
                basis,
                source: f.source.clone(),
            });
        }
    }
    for (j, c) in sr.renewable_contracts.iter().enumerate() {
        let path = format!("sites[{i}].renewable_contracts[{j}]");
        let span = period(path.clone(), &c.from, &c.to);
        let (from_ms, to_ms) = span.unwrap_or_default();
        let contract = RenewableContract {
            from_ms,
            to_ms,
            kwh: c.kwh,
            evidence: c.evidence.clone(),
            kind: c.kind.clone(),
            entered_ms: None,
        };
        for (field, why) in contract.problems() {
            bad.push((format!("{path}.{field}"), why));
        }
        if let Some(k) = cfg.contracts.iter().position(|o| o.counts_twice(&contract)) {
            bad.push((
                format!("{path}.evidence"),
                format!(
                    "{:?} over the same time as renewable_contracts[{k}]: a certificate counts once",
                    c.evidence
                ),
            ));
        }
        if span.is_some() {
            cfg.contracts.push(contract);
        }
    }
    match sr.onsite_kg_per_kwh {
        Some(k) if !(k.is_finite() && (0.0..=MAX_KG_PER_KWH).contains(&k)) => bad.push((
            format!("sites[{i}].onsite_kg_per_kwh"),
            format!("{k} must be 0..={MAX_KG_PER_KWH} kg CO2eq/kWh"),
        )),
        Some(k) => cfg.onsite_kg_per_kwh = k,
        None => {}
    }
    for (path, why) in bad {
        p.push(path, why);
    }
    cfg
}

/// Parses a UTC offset: `Z`, `+08:00`, `-05:30`, `+0800`. Returns seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s == "Z" || s == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct EngineRaw {
    pub(super) min_coverage: f64,
    pub(super) gap_factor: f64,
    pub(super) default_interval_secs: u64,
    pub(super) frozen_gauge_readings: u32,
}

impl Default for EngineRaw {
    fn default() -> Self {
        EngineRaw {
            min_coverage: 0.95,
            gap_factor: 3.0,
            default_interval_secs: 10,
            frozen_gauge_readings: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RackRaw {
    pub(super) site: String,
    pub(super) rack: String,
    pub(super) budget_kw: f64,
    #[serde(default = "derating")]
    pub(super) derating: f64,
    pub(super) feed_kw: Option<f64>,
    pub(super) u_total: Option<u32>,
    pub(super) u_used: Option<u32>,
}

pub(super) fn derating() -> f64 {
    0.8
}
