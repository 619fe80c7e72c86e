//! The efficiency figures beyond PUE, from the same sums as PUE: WUE (water per IT kWh),
//! CUE (CO₂eq per IT kWh, location- and market-based kept apart), REF (renewable share of
//! facility energy), ERF (reused share) and ERE ((1 − ERF) × PUE). A rolling window and a
//! calendar period hand the same inputs (per-point sums, and the stretches of the period
//! inside each emission factor's period), so both give the same figure for the same
//! minutes. Still pure.

use super::view::LevelStat;
use dcwatt_common::protocol::Point;
use serde::Serialize;

/// The points only these figures read.
pub(super) const POINTS: [Point; 3] = [
    Point::WaterInput,
    Point::RenewableOnsite,
    Point::EnergyReused,
];

/// Joules in a kWh.
const KWH_J: f64 = 3.6e6;
/// A coverage at least this close to 1 counts as full.
const FULL: f64 = 1.0 - 1e-9;

/// What an emission factor stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The grid's average intensity where the site is (a national or provincial factor).
    Location,
    /// What the site's supplier mix leaves after contracts: a residual-mix factor, applied
    /// to the grid energy no renewable contract covers.
    Market,
}

impl Basis {
    /// `location` or `market`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "location" => Some(Basis::Location),
            "market" => Some(Basis::Market),
            _ => None,
        }
    }
}

/// A grid emission factor over `[from_ms, to_ms)` (`[[sites]] emission_factors`, or a
/// live series over MQTT).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EmissionFactor {
    /// Start, ms since the epoch.
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
    /// kg CO₂eq per kWh taken from the grid.
    pub kg_per_kwh: f64,
    /// Location- or market-based.
    pub basis: Basis,
    /// Where the factor comes from (publisher and year).
    pub source: String,
}

/// Renewable energy bought by contract over `[from_ms, to_ms)` (green power contracts,
/// certificates): credited to REF and to market-based CUE, prorated by time; never to PUE.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RenewableContract {
    /// Start, ms since the epoch.
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
    /// Energy the contract covers over its whole period, kWh.
    pub kwh: f64,
    /// The certificate or contract id an auditor can look up.
    pub evidence: String,
    /// e.g. `green_certificate`, `ppa`, `green_power_trading`.
    pub kind: String,
    /// When it was entered over the API (absent for the configuration's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_ms: Option<i64>,
}

/// The longest evidence id, bytes.
pub const MAX_EVIDENCE_BYTES: usize = 200;
/// The longest contract kind, bytes.
pub const MAX_KIND_BYTES: usize = 64;

impl RenewableContract {
    /// True when `other` names the same evidence over an overlapping period: the same
    /// energy entered twice. (One contract may deliver over several periods.)
    pub fn counts_twice(&self, other: &RenewableContract) -> bool {
        self.evidence == other.evidence && self.from_ms < other.to_ms && other.from_ms < self.to_ms
    }

    /// What is wrong with the contract's energy, evidence and kind, by field (its period
    /// is checked where it is parsed).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.kwh.is_finite() && self.kwh >= 0.0) {
            out.push(("kwh", format!("{} must be 0 or more", self.kwh)));
        }
        let text = |s: &str, max: usize| {
            !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
        };
        if !text(&self.evidence, MAX_EVIDENCE_BYTES) {
            out.push((
                "evidence",
                format!("give the certificate or contract id (1 to {MAX_EVIDENCE_BYTES} bytes, no control characters)"),
            ));
        }
        if !text(&self.kind, MAX_KIND_BYTES) {
            out.push((
                "kind",
                format!("name the kind, e.g. green_certificate (1 to {MAX_KIND_BYTES} bytes)"),
            ));
        }
        out
    }
}

/// A site's settings for the figures beyond PUE.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteKpiConfig {
    /// Grid emission factors by period, either basis, none overlapping another of its basis.
    pub factors: Vec<EmissionFactor>,
    /// kg CO₂eq per kWh of on-site renewable generation (0 unless set: no direct emission).
    pub onsite_kg_per_kwh: f64,
    /// Renewable energy contracts.
    pub contracts: Vec<RenewableContract>,
    /// Rated IT power of the site's racks, W (`installed_it_kw`, else the sum of the
    /// `[[racks]]` budgets): the basis of IT load utilization.
    pub rated_it_w: Option<f64>,
    /// The live carbon-intensity series (`dcwatt/v1/{site}/carbon`), by start, none
    /// overlapping another of its basis: where one covers a part, it wins over `factors`.
    pub live: std::sync::Arc<[EmissionFactor]>,
    /// Renewable energy contracts entered over the API, counted like `contracts`.
    pub entered: std::sync::Arc<[super::contracts::Entered]>,
}

impl SiteKpiConfig {
    /// The times inside `(from, to)` where an emission factor's period starts or ends,
    /// with `from` first: the starts of the stretches CUE is computed over, each inside at
    /// most one factor period per basis.
    pub fn boundaries(&self, from: i64, to: i64) -> Vec<i64> {
        let mut b: Vec<i64> = self
            .factors
            .iter()
            .chain(self.live_in(from, to))
            .flat_map(|f| [f.from_ms, f.to_ms])
            .filter(|&t| t > from && t < to)
            .collect();
        b.push(from);
        b.sort_unstable();
        b.dedup();
        b
    }

    /// The live factors that overlap `[from, to)` (a range of the sorted series).
    fn live_in(&self, from: i64, to: i64) -> impl Iterator<Item = &EmissionFactor> {
        // Sorted by start and none longer than 31 days: those ending after `from` start
        // after `from` − 31 days.
        let first = self
            .live
            .partition_point(|f| f.from_ms < from - super::carbon::MAX_INTERVAL_MS);
        self.live[first..]
            .iter()
            .take_while(move |f| f.from_ms < to)
            .filter(move |f| f.to_ms > from)
    }

    /// The factor of `basis` whose period holds all of `[from, to)`: a live one first.
    fn factor(&self, basis: Basis, from: i64, to: i64) -> Option<&EmissionFactor> {
        let covers = |f: &&EmissionFactor| f.basis == basis && f.from_ms <= from && to <= f.to_ms;
        self.live_in(from, to)
            .find(covers)
            .or_else(|| self.factors.iter().find(covers))
    }

    /// Contract energy prorated to `[from, to)`, kWh: each contract's energy times the
    /// share of its period inside.
    pub fn contract_kwh(&self, from: i64, to: i64) -> f64 {
        let entered = self.entered.iter().map(|e| &e.contract);
        let all = self.contracts.iter().chain(entered);
        dcwatt_common::units::total(all.map(|c| {
            let overlap = (to.min(c.to_ms) - from.max(c.from_ms)).max(0) as f64;
            c.kwh * overlap / (c.to_ms - c.from_ms).max(1) as f64
        }))
    }
}

/// The stretch of a window or period inside one factor period: its facility and on-site
/// renewable energy, measured plus the estimate for uncovered meter-time, J.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    /// Start, ms.
    pub from_ms: i64,
    /// End (exclusive), ms.
    pub to_ms: i64,
    /// Facility energy, J.
    pub facility_j: f64,
    /// On-site renewable energy, J.
    pub onsite_j: f64,
}

/// What the figures are computed from: the window's or period's sums per point (water in
/// litres, the rest in J), and its PUE.
pub(super) struct Inputs<'a> {
    pub(super) facility: &'a LevelStat,
    /// IT at the PUE's category; None without one.
    pub(super) it: Option<&'a LevelStat>,
    pub(super) pue: (Option<f64>, &'static str),
    pub(super) water: &'a LevelStat,
    pub(super) onsite: &'a LevelStat,
    pub(super) reused: &'a LevelStat,
    pub(super) parts: &'a [Part],
    pub(super) cfg: &'a SiteKpiConfig,
    pub(super) from_ms: i64,
    pub(super) to_ms: i64,
}

/// One figure over a window or period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kpi {
    /// The figure; null while unknown or invalid.
    pub value: Option<f64>,
    /// measured, estimated, partial, invalid or no_data, from the figure's own meters.
    pub quality: &'static str,
    /// The least coverage among the figure's meters (share of expected meter-time).
    pub coverage: f64,
    /// Why the value is missing or not fully trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Kpi {
    fn none(reason: impl Into<String>) -> Self {
        Kpi {
            value: None,
            quality: "no_data",
            coverage: 0.0,
            reason: Some(reason.into()),
        }
    }

    /// The figure with the window's own rules applied to it (clock skew, short span).
    fn judged_by(self, rule: &impl Fn(Judged) -> Judged) -> Self {
        let (value, quality, reason) = rule((self.value, self.quality, self.reason));
        Kpi {
            value,
            quality,
            reason,
            ..self
        }
    }
}

/// A value, its quality and its reason.
type Judged = (Option<f64>, &'static str, Option<String>);

/// The figures beyond PUE over one window or period, with the quantities they divide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kpis {
    /// Water Usage Effectiveness: site water (L) / IT energy (kWh), L/kWh.
    pub wue: Kpi,
    /// Carbon Usage Effectiveness, location-based: kg CO₂eq / IT kWh.
    pub cue: Kpi,
    /// Carbon Usage Effectiveness, market-based (contracts at zero, the rest of the grid
    /// energy at the residual-mix factor): kg CO₂eq / IT kWh.
    pub cue_market: Kpi,
    /// Renewable Energy Factor: (on-site renewable + contracts) / facility energy, 0..1.
    #[serde(rename = "ref")]
    pub ref_: Kpi,
    /// Energy Reuse Factor: reused energy / facility energy, 0..1.
    pub erf: Kpi,
    /// Energy Reuse Effectiveness: (1 − ERF) × PUE.
    pub ere: Kpi,
    /// IT load utilization: IT energy / (rated IT power × the interval), 0..1: the average
    /// rack IT power over its rating.
    pub it_utilization: Kpi,
    /// Rated IT power × the interval, kWh (null without a rating).
    pub rated_it_kwh: Option<f64>,
    /// Water measured, L (null without a water meter).
    pub water_l: Option<f64>,
    /// Water estimated for uncovered meter-time, L: in `wue`, not in `water_l`.
    pub water_fill_l: f64,
    /// On-site renewable energy measured plus its estimate, kWh (null without a meter).
    pub renewable_onsite_kwh: Option<f64>,
    /// Contract renewable energy prorated to the window, kWh.
    pub renewable_contract_kwh: f64,
    /// Reused energy measured plus its estimate, kWh (null without a heat meter).
    pub reused_kwh: Option<f64>,
    /// Location-based emissions, kg CO₂eq (null without a factor for every part).
    pub co2_kg: Option<f64>,
    /// Market-based emissions, kg CO₂eq.
    pub co2_market_kg: Option<f64>,
}

impl Default for Kpis {
    fn default() -> Self {
        let none = || Kpi::none("no data for this window yet");
        Kpis {
            wue: none(),
            cue: none(),
            cue_market: none(),
            ref_: none(),
            erf: none(),
            ere: none(),
            it_utilization: none(),
            rated_it_kwh: None,
            water_l: None,
            water_fill_l: 0.0,
            renewable_onsite_kwh: None,
            renewable_contract_kwh: 0.0,
            reused_kwh: None,
            co2_kg: None,
            co2_market_kg: None,
        }
    }
}

/// The figures' public names, in the order [`Kpis::figures`] gives them.
pub const FIGURES: [&str; 7] = [
    "wue",
    "cue",
    "cue_market",
    "ref",
    "erf",
    "ere",
    "it_utilization",
];

/// What a figure (or PUE) divides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divides {
    /// The IT energy at the PUE's category (PUE, WUE, CUE, ERE).
    It,
    /// The facility energy (REF, ERF).
    Facility,
    /// The rated IT power over the interval (IT load utilization).
    RatedIt,
}

/// What the figure `name` divides by.
pub fn divides(name: &str) -> Divides {
    match name {
        "ref" | "erf" => Divides::Facility,
        "it_utilization" => Divides::RatedIt,
        _ => Divides::It,
    }
}

/// `[starts[0], to)` cut at `starts`, each part with its facility and on-site renewable
/// energy from `energy(point, from, to)`.
pub(super) fn parts(starts: &[i64], to: i64, energy: impl Fn(Point, i64, i64) -> f64) -> Vec<Part> {
    starts
        .iter()
        .enumerate()
        .map(|(n, &a)| {
            let b = starts.get(n + 1).copied().unwrap_or(to);
            Part {
                from_ms: a,
                to_ms: b,
                facility_j: energy(Point::FacilityInput, a, b),
                onsite_j: energy(Point::RenewableOnsite, a, b),
            }
        })
        .collect()
}

impl Kpis {
    /// The figures by their public names ([`FIGURES`]).
    pub fn figures(&self) -> [(&'static str, &Kpi); 7] {
        let f = [
            &self.wue,
            &self.cue,
            &self.cue_market,
            &self.ref_,
            &self.erf,
            &self.ere,
            &self.it_utilization,
        ];
        std::array::from_fn(|i| (FIGURES[i], f[i]))
    }

    /// The figure called `name`.
    pub fn get(&self, name: &str) -> Option<&Kpi> {
        self.figures()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f)
    }

    /// Every figure with the window's own rules applied (clock skew, short span).
    pub(super) fn judged_by(self, rule: impl Fn(Judged) -> Judged) -> Self {
        Kpis {
            wue: self.wue.judged_by(&rule),
            cue: self.cue.judged_by(&rule),
            cue_market: self.cue_market.judged_by(&rule),
            ref_: self.ref_.judged_by(&rule),
            erf: self.erf.judged_by(&rule),
            ere: self.ere.judged_by(&rule),
            it_utilization: self.it_utilization.judged_by(&rule),
            ..self
        }
    }
}

fn whole(s: &LevelStat) -> f64 {
    s.value + s.fill
}

/// The quality of a figure from its meters: partial below full coverage of any, estimated
/// where any includes estimated readings, else measured.
fn from_meters(value: f64, meters: &[(&str, &LevelStat)]) -> Kpi {
    if let Some((name, _)) = meters.iter().find(|(_, s)| s.coverage <= 0.0) {
        return Kpi::none(format!("no {name} meter data in the period"));
    }
    let coverage = meters
        .iter()
        .map(|(_, s)| s.coverage)
        .fold(1.0_f64, f64::min);
    let (quality, reason) = if coverage < FULL {
        let each: Vec<String> = meters
            .iter()
            .map(|(n, s)| format!("{n} {:.1}%", s.coverage * 100.0))
            .collect();
        (
            "partial",
            Some(format!(
                "coverage below 100% ({}): the uncovered meter-time is estimated from each meter's own readings around it",
                each.join(", ")
            )),
        )
    } else if meters.iter().any(|(_, s)| s.estimated) {
        ("estimated", Some("includes estimated readings".to_owned()))
    } else {
        ("measured", None)
    };
    Kpi {
        value: Some(value),
        quality,
        coverage: super::view::round6(coverage),
        reason,
    }
}

/// The worse of two qualities.
fn worse(a: &'static str, b: &'static str) -> &'static str {
    let rank = |q: &str| match q {
        "measured" => 0,
        "estimated" => 1,
        "partial" => 2,
        "invalid" => 3,
        _ => 4,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// `2026-01-01T00:00:00Z`.
fn time(ms: i64) -> String {
    let (days, ms) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = dcwatt_common::civil_date(days);
    let s = ms / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Computes the figures.
pub(super) fn compute(i: &Inputs<'_>) -> Kpis {
    let it_kwh = i.it.map(whole).filter(|&e| e > 0.0).map(|e| e / KWH_J);
    let facility_j = (i.facility.known && i.facility.value > 0.0).then(|| whole(i.facility));
    let contract_kwh = i.cfg.contract_kwh(i.from_ms, i.to_ms);
    let mut k = Kpis {
        water_l: i.water.known.then_some(i.water.value),
        water_fill_l: i.water.fill,
        renewable_onsite_kwh: i.onsite.known.then(|| whole(i.onsite) / KWH_J),
        renewable_contract_kwh: contract_kwh,
        reused_kwh: i.reused.known.then(|| whole(i.reused) / KWH_J),
        ..Kpis::default()
    };
    k.rated_it_kwh = i
        .cfg
        .rated_it_w
        .map(|w| w * (i.to_ms - i.from_ms).max(0) as f64 / 1000.0 / KWH_J);
    k.it_utilization = match (i.it, it_kwh, k.rated_it_kwh) {
        (_, _, None) => {
            Kpi::none("no rated IT power: set sites.installed_it_kw or the racks' budget_kw")
        }
        (Some(it), Some(e), Some(rated)) if rated > 0.0 => from_meters(e / rated, &[("IT", it)]),
        _ => Kpi::none("no IT energy at the PUE's category"),
    };
    k.wue = wue(i, it_kwh);
    k.erf = erf(i, facility_j);
    k.ere = ere(&k.erf, i.pue);
    k.ref_ = ref_(i, facility_j, contract_kwh);
    (k.cue, k.co2_kg) = cue(i, it_kwh, Basis::Location);
    (k.cue_market, k.co2_market_kg) = cue(i, it_kwh, Basis::Market);
    k
}

fn wue(i: &Inputs<'_>, it_kwh: Option<f64>) -> Kpi {
    if !i.water.known {
        return Kpi::none("no water_input meter: WUE needs the site's water meters");
    }
    let (Some(it), Some(it_kwh)) = (i.it, it_kwh) else {
        return Kpi::none("no IT energy at the PUE's category");
    };
    from_meters(whole(i.water) / it_kwh, &[("water", i.water), ("IT", it)])
}

fn erf(i: &Inputs<'_>, facility_j: Option<f64>) -> Kpi {
    if !i.reused.known {
        return Kpi::none("no energy_reused meter: ERF needs heat meters at the site boundary");
    }
    let Some(fac) = facility_j else {
        return Kpi::none("no facility_input meter data");
    };
    let erf = whole(i.reused) / fac;
    if erf > 1.0 {
        return Kpi {
            value: None,
            quality: "invalid",
            coverage: 0.0,
            reason: Some(format!(
                "reused energy above facility energy ({:.6} > {:.6} kWh): a metering error (a heat meter inside the boundary, or a missing facility meter)",
                whole(i.reused) / KWH_J,
                fac / KWH_J
            )),
        };
    }
    from_meters(erf, &[("reused", i.reused), ("facility", i.facility)])
}

/// (1 − ERF) × PUE: as good as the worse of the two.
fn ere(erf: &Kpi, pue: (Option<f64>, &'static str)) -> Kpi {
    let (Some(e), Some(p)) = (erf.value, pue.0) else {
        let why = if erf.value.is_none() {
            format!(
                "no ERF ({})",
                erf.reason.as_deref().unwrap_or("no reused energy")
            )
        } else {
            "no PUE for this window".to_owned()
        };
        return Kpi::none(why);
    };
    let quality = worse(erf.quality, pue.1);
    Kpi {
        value: Some((1.0 - e) * p),
        quality,
        coverage: erf.coverage,
        reason: (quality != "measured").then(|| {
            format!(
                "ERF {}, PUE {}{}",
                erf.quality,
                pue.1,
                erf.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )
        }),
    }
}

fn ref_(i: &Inputs<'_>, facility_j: Option<f64>, contract_kwh: f64) -> Kpi {
    if !i.onsite.known && contract_kwh <= 0.0 {
        return Kpi::none(
            "no renewable_onsite meter and no renewable contract in the period: REF needs one or the other",
        );
    }
    let Some(fac) = facility_j else {
        return Kpi::none("no facility_input meter data");
    };
    let onsite = if i.onsite.known { whole(i.onsite) } else { 0.0 };
    let renewable = onsite + contract_kwh * KWH_J;
    let mut k = if i.onsite.known {
        from_meters(
            renewable.min(fac) / fac,
            &[("renewable", i.onsite), ("facility", i.facility)],
        )
    } else {
        from_meters(renewable.min(fac) / fac, &[("facility", i.facility)])
    };
    let mut notes: Vec<String> = k.reason.take().into_iter().collect();
    if !i.onsite.known {
        notes.push("contracts only: the site has no renewable_onsite meter".to_owned());
    }
    if renewable > fac {
        notes.push(format!(
            "renewable energy ({:.3} kWh) above facility energy ({:.3} kWh): capped at 1, the excess is not credited",
            renewable / KWH_J,
            fac / KWH_J
        ));
    }
    k.reason = (!notes.is_empty()).then(|| notes.join("; "));
    k
}

/// CUE on one basis and the emissions it divides. Location-based: the grid energy
/// (facility − on-site renewable) at the location factor. Market-based: the grid energy
/// left after the contracts (prorated to each part) at the residual-mix factor. On-site
/// generation at the site's on-site factor in both.
fn cue(i: &Inputs<'_>, it_kwh: Option<f64>, basis: Basis) -> (Kpi, Option<f64>) {
    let (Some(it), Some(it_kwh)) = (i.it, it_kwh) else {
        return (Kpi::none("no IT energy at the PUE's category"), None);
    };
    if !i.facility.known || i.facility.value <= 0.0 {
        return (Kpi::none("no facility_input meter data"), None);
    }
    let mut kg = 0.0;
    for p in i.parts {
        let Some(f) = i.cfg.factor(basis, p.from_ms, p.to_ms) else {
            let what = match basis {
                Basis::Location => "location-based emission factor",
                Basis::Market => "market-based (residual mix) emission factor",
            };
            return (
                Kpi::none(format!(
                    "no {what} for {} to {} (sites.emission_factors)",
                    time(p.from_ms),
                    time(p.to_ms)
                )),
                None,
            );
        };
        let mut grid_kwh = (p.facility_j - p.onsite_j).max(0.0) / KWH_J;
        if basis == Basis::Market {
            grid_kwh = (grid_kwh - i.cfg.contract_kwh(p.from_ms, p.to_ms)).max(0.0);
        }
        kg += grid_kwh * f.kg_per_kwh + p.onsite_j / KWH_J * i.cfg.onsite_kg_per_kwh;
    }
    let mut meters = vec![("facility", i.facility), ("IT", it)];
    if i.onsite.known {
        meters.push(("renewable", i.onsite));
    }
    (from_meters(kg / it_kwh, &meters), Some(kg))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn stat(value: f64) -> LevelStat {
        LevelStat {
            value,
            fill: 0.0,
            coverage: 1.0,
            estimated: false,
            known: true,
        }
    }

    fn absent() -> LevelStat {
        LevelStat {
            value: 0.0,
            fill: 0.0,
            coverage: 0.0,
            estimated: false,
            known: false,
        }
    }

    fn factor(from_h: i64, to_h: i64, kg: f64, basis: Basis) -> EmissionFactor {
        EmissionFactor {
            from_ms: from_h * H,
            to_ms: to_h * H,
            kg_per_kwh: kg,
            basis,
            source: "test".into(),
        }
    }

    fn contract(from_h: i64, to_h: i64, kwh: f64) -> RenewableContract {
        RenewableContract {
            from_ms: from_h * H,
            to_ms: to_h * H,
            kwh,
            evidence: "GEC-1".into(),
            kind: "green_certificate".into(),
            entered_ms: None,
        }
    }

    /// One scenario: energies in kWh, water in L, over hours [0, 10).
    struct Case {
        facility_kwh: f64,
        it_kwh: f64,
        water_l: Option<f64>,
        onsite_kwh: Option<f64>,
        reused_kwh: Option<f64>,
        /// (from hour, facility kWh, on-site kWh) per part.
        parts: Vec<(i64, f64, f64)>,
        cfg: SiteKpiConfig,
    }

    impl Case {
        /// Facility 1,500 kWh and IT 1,000 kWh over the 10 h, no other meter.
        fn bare(cfg: SiteKpiConfig) -> Self {
            Case {
                facility_kwh: 1500.0,
                it_kwh: 1000.0,
                water_l: None,
                onsite_kwh: None,
                reused_kwh: None,
                parts: vec![(0, 1500.0, 0.0)],
                cfg,
            }
        }
    }

    fn run(c: &Case) -> Kpis {
        let opt = |x: Option<f64>, scale: f64| x.map_or_else(absent, |v| stat(v * scale));
        let (fac, it) = (stat(c.facility_kwh * KWH_J), stat(c.it_kwh * KWH_J));
        let (water, onsite, reused) = (
            opt(c.water_l, 1.0),
            opt(c.onsite_kwh, KWH_J),
            opt(c.reused_kwh, KWH_J),
        );
        let parts: Vec<Part> = c
            .parts
            .iter()
            .enumerate()
            .map(|(n, &(from_h, f, o))| Part {
                from_ms: from_h * H,
                to_ms: c.parts.get(n + 1).map_or(10 * H, |p| p.0 * H),
                facility_j: f * KWH_J,
                onsite_j: o * KWH_J,
            })
            .collect();
        let pue = c.facility_kwh / c.it_kwh;
        compute(&Inputs {
            facility: &fac,
            it: Some(&it),
            pue: (Some(pue), "measured"),
            water: &water,
            onsite: &onsite,
            reused: &reused,
            parts: &parts,
            cfg: &c.cfg,
            from_ms: 0,
            to_ms: 10 * H,
        })
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-12 * b.abs().max(1.0))
    }

    #[test]
    fn each_figure_by_hand() {
        // 10 h: facility 1,500 kWh, IT 1,000 kWh (PUE 1.5), water 1,800 L, PV 150 kWh,
        // reused heat 300 kWh; a location factor of 0.5 for hours 0–4 and 0.6 for 4–10,
        // facility 600 + 900 kWh with PV 60 + 90 kWh in those parts; a residual mix of
        // 0.7 throughout; a contract of 200 kWh over hours 5–15 (half inside: 100 kWh,
        // all of it in the second part).
        let cfg = SiteKpiConfig {
            factors: vec![
                factor(0, 4, 0.5, Basis::Location),
                factor(4, 24, 0.6, Basis::Location),
                factor(0, 24, 0.7, Basis::Market),
            ],
            onsite_kg_per_kwh: 0.0,
            contracts: vec![contract(5, 15, 200.0)],
            rated_it_w: None,
            live: Default::default(),
            entered: Default::default(),
        };
        assert_eq!(cfg.boundaries(0, 10 * H), vec![0, 4 * H]);
        let k = run(&Case {
            facility_kwh: 1500.0,
            it_kwh: 1000.0,
            water_l: Some(1800.0),
            onsite_kwh: Some(150.0),
            reused_kwh: Some(300.0),
            parts: vec![(0, 600.0, 60.0), (4, 900.0, 90.0)],
            cfg,
        });
        // WUE = 1800 / 1000 = 1.8 L/kWh.
        assert!(close(k.wue.value, 1.8), "{:?}", k.wue);
        assert_eq!(k.wue.quality, "measured");
        // ERF = 300 / 1500 = 0.2; ERE = 0.8 × 1.5 = 1.2.
        assert!(close(k.erf.value, 0.2), "{:?}", k.erf);
        assert!(close(k.ere.value, 1.2), "{:?}", k.ere);
        // REF = (150 + 100) / 1500 = 1/6.
        assert!(close(k.ref_.value, 250.0 / 1500.0), "{:?}", k.ref_);
        assert!(close(Some(k.renewable_contract_kwh), 100.0));
        // CUE location = ((600−60)×0.5 + (900−90)×0.6) / 1000 = (270 + 486) / 1000.
        assert!(close(k.co2_kg, 756.0), "{:?}", k.co2_kg);
        assert!(close(k.cue.value, 0.756), "{:?}", k.cue);
        // Market: part 1 (540 − 0) × 0.7 = 378; part 2 (810 − 100) × 0.7 = 497.
        assert!(close(k.co2_market_kg, 875.0), "{:?}", k.co2_market_kg);
        assert!(close(k.cue_market.value, 0.875), "{:?}", k.cue_market);
    }

    #[test]
    fn a_figure_without_its_meters_has_no_value_and_says_so() {
        let k = run(&Case::bare(SiteKpiConfig::default()));
        for (name, f) in k.figures() {
            assert_eq!((f.value, f.quality), (None, "no_data"), "{name}: {f:?}");
            assert!(f.reason.is_some(), "{name}");
        }
        assert!(k
            .wue
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("water_input")));
        assert!(k
            .cue
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("emission factor")));
        assert_eq!((k.water_l, k.reused_kwh, k.co2_kg), (None, None, None));
    }

    #[test]
    fn contracts_alone_give_ref_capped_at_one() {
        // No PV meter; a contract of 2,000 kWh over the 10 h against 1,500 kWh: capped.
        let k = run(&Case::bare(SiteKpiConfig {
            contracts: vec![contract(0, 10, 2000.0)],
            ..SiteKpiConfig::default()
        }));
        assert!(close(k.ref_.value, 1.0), "{:?}", k.ref_);
        let why = k.ref_.reason.unwrap_or_default();
        assert!(
            why.contains("contracts only") && why.contains("capped"),
            "{why}"
        );
    }

    #[test]
    fn a_factor_must_cover_every_part_and_reuse_above_facility_is_invalid() {
        // The factor ends at hour 6; the part runs to 10.
        let k = run(&Case {
            reused_kwh: Some(1600.0),
            ..Case::bare(SiteKpiConfig {
                factors: vec![factor(0, 6, 0.5, Basis::Location)],
                ..SiteKpiConfig::default()
            })
        });
        assert_eq!(k.cue.value, None);
        assert!(k
            .cue
            .reason
            .unwrap_or_default()
            .contains("1970-01-01T00:00:00Z to 1970-01-01T10:00:00Z"));
        assert_eq!((k.erf.value, k.erf.quality), (None, "invalid"));
        assert_eq!(k.ere.value, None);
    }

    #[test]
    fn partial_meters_make_a_partial_figure() {
        let fac = stat(1500.0 * KWH_J);
        let it = stat(1000.0 * KWH_J);
        let water = LevelStat {
            value: 900.0,
            fill: 900.0,
            coverage: 0.5,
            estimated: false,
            known: true,
        };
        let k = compute(&Inputs {
            facility: &fac,
            it: Some(&it),
            pue: (Some(1.5), "measured"),
            water: &water,
            onsite: &absent(),
            reused: &absent(),
            parts: &[],
            cfg: &SiteKpiConfig::default(),
            from_ms: 0,
            to_ms: H,
        });
        // The fill counts in the value: (900 + 900) / 1000.
        assert!(close(k.wue.value, 1.8), "{:?}", k.wue);
        assert_eq!((k.wue.quality, k.wue.coverage), ("partial", 0.5));
        assert_eq!((k.water_l, k.water_fill_l), (Some(900.0), 900.0));
    }
}
