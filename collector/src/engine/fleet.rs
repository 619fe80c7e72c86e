//! fleet: a collector configured as a fleet collector subscribes to the retained site
//! summaries (`dcwatt/v1/{site}/summary`, carried across Mosquitto bridges from the site
//! brokers) and reports the region: energy-weighted PUE per window (Σ facility energy /
//! Σ IT energy, never an average of ratios), total racks, standard racks, FP16 compute,
//! and which sites' data is stale. Pure: `now` is an argument; the intake feeds it.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Fleet settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// A site whose summary is older than this is stale, ms.
    pub stale_after_ms: i64,
}

/// The latest summary of one site.
#[derive(Debug, Clone)]
struct SiteSummary {
    view: Value,
    received_ms: i64,
}

/// Why a summary was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryError {
    /// Not JSON.
    Json(String),
    /// The payload names another site than its topic.
    Mismatch(String),
}

impl std::fmt::Display for SummaryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SummaryError::Json(e) => write!(f, "summary is not JSON: {e}"),
            SummaryError::Mismatch(s) => write!(f, "summary names site {s:?}, its topic another"),
        }
    }
}

impl std::error::Error for SummaryError {}

/// The region's sites by their latest summaries.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    sites: BTreeMap<String, SiteSummary>,
}

/// One window over the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetWindow {
    /// Σ facility kWh / Σ IT kWh over the sites with a value; null without any.
    pub value: Option<f64>,
    /// Σ facility energy of those sites, kWh.
    pub facility_kwh: f64,
    /// Σ IT energy of those sites, kWh.
    pub it_kwh: f64,
    /// Sites included (a value, not stale).
    pub sites: usize,
    /// The PUE categories of the sites included: one category means a PUE of that
    /// category; several means a mixed fleet figure.
    pub categories: Vec<u64>,
    /// The figures beyond PUE over the fleet (`wue`, `cue`, `cue_market`, `ref`, `erf`,
    /// `ere`), each over the sites that have it: present once a site has it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kpis: BTreeMap<String, FleetKpi>,
}

/// One figure beyond PUE over the fleet: the ratio of the sums of what each site's figure
/// divides (Σ water / Σ IT kWh for WUE, Σ kg CO₂eq / Σ IT kWh for CUE, Σ renewable or
/// reused / Σ facility kWh for REF and ERF, Σ (facility − reused) / Σ IT kWh for ERE),
/// never an average of ratios.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetKpi {
    /// The fleet's figure; null without a site that has it.
    pub value: Option<f64>,
    /// Σ of the sites' numerators (L, kg CO₂eq or kWh).
    pub numerator: f64,
    /// Σ of their denominators, kWh (IT energy, or facility energy for REF and ERF), each
    /// measured plus the estimate for uncovered meter-time, as the site's figure divides.
    pub denominator_kwh: f64,
    /// Sites included.
    pub sites: usize,
}

/// What a figure divides, kWh, in a site's window: the facility energy for REF and ERF,
/// the rated IT energy for IT load utilization, else the IT energy.
fn denominator(kpi: &str, w: &Value) -> f64 {
    match super::kpi::divides(kpi) {
        super::kpi::Divides::Facility => f(&w["facility_kwh"]) + f(&w["facility_fill_kwh"]),
        super::kpi::Divides::RatedIt => f(&w["kpis"]["rated_it_kwh"]),
        super::kpi::Divides::It => f(&w["it_kwh"]) + f(&w["it_fill_kwh"]),
    }
}

/// Per-site lines of the fleet report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetSite {
    /// Site id.
    pub site: String,
    /// True when the summary is older than the stale bound or the site says it is stale.
    pub stale: bool,
    /// When its summary arrived, ms.
    pub received_ms: i64,
    /// Its own PUE by window (value, category, facility_kwh, it_kwh), as summarised.
    pub pue: Value,
}

/// The region report, as `GET /api/v1/fleet` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetView {
    /// When computed.
    pub ts_ms: i64,
    /// Sites known.
    pub sites: usize,
    /// Sites whose data is stale.
    pub stale_sites: Vec<String>,
    /// Energy-weighted PUE per window.
    pub pue: BTreeMap<String, FleetWindow>,
    /// Σ live facility power of the fresh sites, W.
    pub facility_w: f64,
    /// Σ live IT power of the fresh sites, W.
    pub it_w: f64,
    /// Racks known.
    pub racks: u64,
    /// Racks drawing power.
    pub racks_in_use: u64,
    /// Configured budgets in standard racks (2.5 kW).
    pub standard_racks: f64,
    /// Budgets of the racks in use, in standard racks.
    pub standard_racks_in_use: f64,
    /// Racks installed, over the sites that set `racks_installed`.
    pub racks_installed: u64,
    /// Racks in use at those sites.
    pub racks_in_use_of_installed: u64,
    /// Rack occupancy (上架率) of the region: Σ racks in use / Σ racks installed over the
    /// sites that set it; null without any.
    pub occupancy: Option<f64>,
    /// GPUs reported.
    pub gpus: u64,
    /// Peak dense FP16 compute, EFLOPS.
    pub fp16_eflops: f64,
    /// Storage capacity of the sites that report it (`capacity.storage_bytes`); null when
    /// none does.
    pub storage_bytes: Option<u64>,
    /// Each site's line.
    pub by_site: Vec<FleetSite>,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

impl Fleet {
    /// Records a site's summary (an empty payload clears it, as a cleared retained
    /// message does).
    ///
    /// # Errors
    /// The payload is not JSON or names another site.
    pub fn apply(&mut self, site: &str, payload: &[u8], now_ms: i64) -> Result<(), SummaryError> {
        if payload.is_empty() {
            self.sites.remove(site);
            return Ok(());
        }
        let view: Value =
            serde_json::from_slice(payload).map_err(|e| SummaryError::Json(e.to_string()))?;
        let named = view["site"].as_str().unwrap_or_default();
        if named != site {
            return Err(SummaryError::Mismatch(named.to_owned()));
        }
        self.sites.insert(
            site.to_owned(),
            SiteSummary {
                view,
                received_ms: now_ms,
            },
        );
        Ok(())
    }

    /// The region at `now_ms`.
    pub fn view(&self, cfg: &FleetConfig, now_ms: i64) -> FleetView {
        let mut v = FleetView {
            ts_ms: now_ms,
            sites: self.sites.len(),
            stale_sites: Vec::new(),
            pue: BTreeMap::new(),
            facility_w: 0.0,
            it_w: 0.0,
            racks: 0,
            racks_in_use: 0,
            standard_racks: 0.0,
            standard_racks_in_use: 0.0,
            racks_installed: 0,
            racks_in_use_of_installed: 0,
            occupancy: None,
            gpus: 0,
            fp16_eflops: 0.0,
            storage_bytes: None,
            by_site: Vec::new(),
        };
        for (site, s) in &self.sites {
            let sv = &s.view;
            let stale = sv["stale"].as_bool().unwrap_or(true)
                || now_ms - s.received_ms > cfg.stale_after_ms;
            // Capacity counts whether or not the data is fresh: the racks are there.
            let c = &sv["capacity"];
            v.racks += u(&c["racks"]);
            v.racks_in_use += u(&c["racks_in_use"]);
            v.standard_racks += f(&c["standard_racks"]);
            v.standard_racks_in_use += f(&c["standard_racks_in_use"]);
            if let Some(n) = c["racks_installed"].as_u64() {
                v.racks_installed += n;
                v.racks_in_use_of_installed += u(&c["racks_in_use"]);
            }
            v.gpus += u(&c["gpus"]);
            v.fp16_eflops += f(&c["fp16_pflops"]) / 1000.0;
            if let Some(b) = c["storage_bytes"].as_u64() {
                v.storage_bytes = Some(v.storage_bytes.unwrap_or(0).saturating_add(b));
            }
            v.by_site.push(FleetSite {
                site: site.clone(),
                stale,
                received_ms: s.received_ms,
                pue: sv["pue"].clone(),
            });
            if stale {
                v.stale_sites.push(site.clone());
                continue;
            }
            v.facility_w += f(&sv["power"]["facility_w"]);
            v.it_w += f(&sv["power"]["it_w"]);
            if let Some(windows) = sv["pue"].as_object() {
                for (name, w) in windows {
                    let fw = v.pue.entry(name.clone()).or_default();
                    // Only sites with a value count: an invalid or empty window would
                    // add facility energy without IT energy (or the reverse).
                    if w["value"].as_f64().is_none() {
                        continue;
                    }
                    fw.facility_kwh += f(&w["facility_kwh"]);
                    fw.it_kwh += f(&w["it_kwh"]);
                    fw.sites += 1;
                    for (kpi, k) in w["kpis"].as_object().into_iter().flatten() {
                        let Some(x) = k.get("value").and_then(Value::as_f64) else {
                            continue;
                        };
                        // A summary carries each figure as a ratio: its numerator is the
                        // value times what it divides.
                        let den = denominator(kpi, w);
                        let fk = fw.kpis.entry(kpi.clone()).or_default();
                        fk.numerator += x * den;
                        fk.denominator_kwh += den;
                        fk.sites += 1;
                    }
                    if let Some(c) = w["category"].as_u64() {
                        if !fw.categories.contains(&c) {
                            fw.categories.push(c);
                            fw.categories.sort_unstable();
                        }
                    }
                }
            }
        }
        v.occupancy = (v.racks_installed > 0)
            .then(|| v.racks_in_use_of_installed as f64 / v.racks_installed as f64);
        for w in v.pue.values_mut() {
            w.value = (w.it_kwh > 0.0).then(|| w.facility_kwh / w.it_kwh);
            for k in w.kpis.values_mut() {
                k.value = (k.denominator_kwh > 0.0).then(|| k.numerator / k.denominator_kwh);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(site: &str, pue: f64, it_kwh: f64, stale: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "site": site, "stale": stale,
            "power": {"facility_w": pue * 1000.0, "it_w": 1000.0},
            "pue": {"1h": {"value": pue, "category": 3, "facility_kwh": pue * it_kwh, "it_kwh": it_kwh}},
            "capacity": {"racks": 10, "racks_in_use": 8, "standard_racks": 40.0,
                         "standard_racks_in_use": 32.0, "gpus": 64, "fp16_pflops": 63.3},
        }))
        .unwrap()
    }

    #[test]
    fn the_fleet_pue_is_energy_weighted_not_an_average_of_ratios() {
        let cfg = FleetConfig {
            stale_after_ms: 60_000,
        };
        let mut fleet = Fleet::default();
        fleet
            .apply("big", &summary("big", 1.2, 10.0, false), 0)
            .unwrap();
        fleet
            .apply("small", &summary("small", 2.0, 1.0, false), 0)
            .unwrap();
        let v = fleet.view(&cfg, 1_000);
        let w = &v.pue["1h"];
        // (12 + 2) / (10 + 1), not (1.2 + 2.0) / 2.
        assert!((w.value.unwrap() - 14.0 / 11.0).abs() < 1e-12, "{w:?}");
        assert_eq!((w.sites, w.categories.clone()), (2, vec![3]));
        assert_eq!((v.racks, v.standard_racks, v.gpus), (20, 80.0, 128));
        assert!((v.fp16_eflops - 0.1266).abs() < 1e-12);
        assert!(v.stale_sites.is_empty());
        assert_eq!(v.storage_bytes, None, "no site reports storage");
        let mut with_disks: Value =
            serde_json::from_slice(&summary("big", 1.2, 10.0, false)).unwrap();
        with_disks["capacity"]["storage_bytes"] = json!(3_000_000_000_000u64);
        fleet
            .apply("big", &serde_json::to_vec(&with_disks).unwrap(), 0)
            .unwrap();
        assert_eq!(
            fleet.view(&cfg, 1_000).storage_bytes,
            Some(3_000_000_000_000)
        );
    }

    #[test]
    fn the_fleet_figures_beyond_pue_are_ratios_of_sums() {
        let cfg = FleetConfig {
            stale_after_ms: 60_000,
        };
        // Site a: IT 10 kWh (+ 2 estimated), facility 15 kWh, water 24 L → WUE 2.0, ERF
        // 3/15 = 0.2. Site b: IT 4 kWh, facility 6 kWh, water 20 L → WUE 5.0, no heat
        // meter. Site c: stale, left out.
        let site = |name: &str,
                    it: f64,
                    it_fill: f64,
                    fac: f64,
                    wue: f64,
                    erf: Option<f64>,
                    stale: bool| {
            let mut kpis = json!({"wue": {"value": wue, "quality": "measured"}});
            if let Some(e) = erf {
                kpis["erf"] = json!({"value": e, "quality": "measured"});
            }
            serde_json::to_vec(&json!({
                "site": name, "stale": stale,
                "pue": {"1h": {"value": fac / (it + it_fill), "category": 3,
                               "facility_kwh": fac, "it_kwh": it, "it_fill_kwh": it_fill,
                               "facility_fill_kwh": 0.0, "kpis": kpis}},
            }))
            .unwrap()
        };
        let mut fleet = Fleet::default();
        let a = site("a", 10.0, 2.0, 15.0, 2.0, Some(0.2), false);
        fleet.apply("a", &a, 0).unwrap();
        fleet
            .apply("b", &site("b", 4.0, 0.0, 6.0, 5.0, None, false), 0)
            .unwrap();
        fleet
            .apply("c", &site("c", 4.0, 0.0, 6.0, 9.0, Some(0.9), true), 0)
            .unwrap();
        let w = &fleet.view(&cfg, 1_000).pue["1h"];
        // WUE: (2.0 × 12 + 5.0 × 4) L / (12 + 4) kWh = 44 / 16, not (2 + 5) / 2.
        let wue = &w.kpis["wue"];
        assert_eq!(
            (wue.numerator, wue.denominator_kwh, wue.sites),
            (44.0, 16.0, 2)
        );
        assert_eq!(wue.value, Some(44.0 / 16.0));
        // ERF from site a alone: 3 kWh / 15 kWh.
        let erf = &w.kpis["erf"];
        assert_eq!((erf.denominator_kwh, erf.sites), (15.0, 1));
        assert!((erf.value.unwrap() - 0.2).abs() < 1e-15);
        assert!(!w.kpis.contains_key("cue"), "no site has a CUE");
    }

    #[test]
    fn every_figure_rolls_up_as_a_ratio_of_what_it_divides() {
        let cfg = FleetConfig {
            stale_after_ms: 60_000,
        };
        // (site, IT kWh, facility kWh, [cue, cue_market, ref, ere]).
        let sites = [
            ("a", 100.0, 130.0, [0.65, 0.40, 0.10, 1.25]),
            ("b", 10.0, 16.0, [0.90, 0.90, 0.50, 1.50]),
        ];
        let mut fleet = Fleet::default();
        for (name, it, fac, [cue, cue_market, ref_, ere]) in sites {
            let kpi = |v: f64| json!({"value": v, "quality": "measured"});
            let body = json!({
                "site": name, "stale": false,
                "pue": {"24h": {"value": fac / it, "category": 3, "facility_kwh": fac, "it_kwh": it,
                                "kpis": {"cue": kpi(cue), "cue_market": kpi(cue_market),
                                         "ref": kpi(ref_), "ere": kpi(ere)}}},
            });
            fleet
                .apply(name, &serde_json::to_vec(&body).unwrap(), 0)
                .unwrap();
        }
        let w = &fleet.view(&cfg, 1_000).pue["24h"];
        // By hand: kg CO2eq (65 + 9) / 110 IT kWh; market (40 + 9) / 110; renewable
        // (13 + 8) kWh / 146 facility kWh; ERE (125 + 15) / 110.
        for (kpi, want) in [
            ("cue", 74.0 / 110.0),
            ("cue_market", 49.0 / 110.0),
            ("ref", 21.0 / 146.0),
            ("ere", 140.0 / 110.0),
        ] {
            let got = w.kpis[kpi].value.expect(kpi);
            assert!((got - want).abs() < 1e-12, "{kpi}: {got} vs {want}");
            assert_eq!(w.kpis[kpi].sites, 2);
        }
    }

    #[test]
    fn fleet_occupancy_and_utilization_are_ratios_of_sums() {
        let cfg = FleetConfig {
            stale_after_ms: 60_000,
        };
        // a: 8 of 10 installed racks in use, IT 10 kWh of a 20 kWh rating (50 %);
        // b: 12 of 30, IT 1 kWh of 4 kWh (25 %); c sets no installed racks.
        let site = |name: &str, installed: Option<u64>, in_use: u64, it: f64, rated: f64| {
            serde_json::to_vec(&json!({
                "site": name, "stale": false,
                "capacity": {"racks_installed": installed, "racks_in_use": in_use},
                "pue": {"1h": {"value": 1.5, "category": 3, "facility_kwh": 1.5 * it,
                               "it_kwh": it,
                               "kpis": {"it_utilization": {"value": it / rated}, "rated_it_kwh": rated}}},
            }))
            .unwrap()
        };
        let mut fleet = Fleet::default();
        fleet
            .apply("a", &site("a", Some(10), 8, 10.0, 20.0), 0)
            .unwrap();
        fleet
            .apply("b", &site("b", Some(30), 12, 1.0, 4.0), 0)
            .unwrap();
        fleet.apply("c", &site("c", None, 99, 1.0, 4.0), 0).unwrap();
        let v = fleet.view(&cfg, 1_000);
        assert_eq!((v.racks_installed, v.racks_in_use_of_installed), (40, 20));
        assert_eq!(
            v.occupancy,
            Some(0.5),
            "20 / 40, not the mean of 80 % and 40 %"
        );
        let u = &v.pue["1h"].kpis["it_utilization"];
        // (10 + 1 + 1) kWh / (20 + 4 + 4) kWh.
        assert_eq!((u.denominator_kwh, u.sites), (28.0, 3));
        assert!((u.value.unwrap() - 12.0 / 28.0).abs() < 1e-15, "{u:?}");
    }

    #[test]
    fn stale_and_silent_sites_are_named_and_left_out_of_the_pue() {
        let cfg = FleetConfig {
            stale_after_ms: 60_000,
        };
        let mut fleet = Fleet::default();
        fleet.apply("a", &summary("a", 1.3, 5.0, false), 0).unwrap();
        fleet.apply("b", &summary("b", 1.6, 5.0, true), 0).unwrap();
        fleet
            .apply("c", &summary("c", 1.9, 5.0, false), -120_000)
            .unwrap();
        let v = fleet.view(&cfg, 1_000);
        assert_eq!(v.stale_sites, vec!["b".to_owned(), "c".to_owned()]);
        assert_eq!(v.pue["1h"].value, Some(1.3));
        assert_eq!(v.racks, 30, "capacity still counts stale sites");
        assert_eq!(
            fleet.apply("a", b"{\"site\":\"x\"}", 0),
            Err(SummaryError::Mismatch("x".into()))
        );
        assert!(fleet.apply("a", b"nope", 0).is_err());
        fleet.apply("a", b"", 0).unwrap();
        assert_eq!(fleet.view(&cfg, 1_000).sites, 2);
    }
}
