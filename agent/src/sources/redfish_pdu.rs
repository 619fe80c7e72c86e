//! `redfish_pdu`: power distribution through Redfish `PowerEquipment` (DSP0268 2020.4+).
//!
//! Every `PowerDistribution` collection the schema defines is read: `RackPDUs`,
//! `FloorPDUs`, `PowerShelves`, `TransferSwitches`, `Switchgear` and `ElectricalBuses`.
//! For each member (once per `@odata.id`, following the links the resource itself lists:
//! equipment without metering publishes nothing), its `Metrics` (`PowerWatts`,
//! `EnergykWh`) — or, without metrics, each of its `Mains` — are its input; with `outlets
//! = true` (default) each outlet, and each circuit of type `Bus` that feeds a bus (a power
//! shelf's DC output), is an output. Energy is converted kWh → J and published as counters.
//!
//! Where the readings count is configuration (`count`): rack PDUs, floor PDUs and power
//! shelves by default, their inputs at `pdu_input` and outputs at `pdu_output` (the sum
//! of outputs is category-2 IT energy). Transfer switches and electrical buses usually
//! feed PDUs that are metered too, and switchgear is upstream of everything: they are
//! published without a point (never counted twice) and named in a warning, until `count`
//! names them — switchgear then counts at `facility_input`. A collection the service lists
//! that dcwatt does not know is named in a warning too.

use super::redfish::{members, Client, Connection};
use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::{Point, Reading};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// Source type name.
pub const KIND: &str = "redfish_pdu";

/// `[[sources]] type = "redfish_pdu"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedfishPduConfig {
    /// Base URL of the PDU's (or DCIM's) Redfish service.
    pub url: String,
    /// User name for basic authentication.
    pub username: Option<String>,
    /// File holding the password; else `REDFISH_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the service's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Off by default.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Rack the PDU feeds (a rack PDU).
    pub rack: Option<String>,
    /// Zone, room or row.
    pub zone: Option<String>,
    /// Publish every outlet (and bus feed) as an output.
    #[serde(default = "yes")]
    pub outlets: bool,
    /// The collections whose readings count at a measurement point (the others are
    /// published without one): `RackPDUs`, `FloorPDUs`, `PowerShelves`,
    /// `TransferSwitches`, `Switchgear`, `ElectricalBuses`.
    #[serde(default = "counted_by_default")]
    pub count: Vec<String>,
    /// Per-request timeout, seconds.
    #[serde(default = "ten")]
    pub timeout_secs: u64,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

fn yes() -> bool {
    true
}

fn ten() -> u64 {
    10
}

fn counted_by_default() -> Vec<String> {
    ["RackPDUs", "FloorPDUs", "PowerShelves"]
        .map(str::to_owned)
        .to_vec()
}

/// A `PowerDistribution` collection of `PowerEquipment`: its property name, the prefix of
/// its members' components, and the point its inputs count at when counted.
struct Collection {
    name: &'static str,
    prefix: &'static str,
    input: Point,
    outputs: bool,
}

/// Every collection the PowerEquipment schema defines (v1.2: DSP0268 2023.3).
const COLLECTIONS: [Collection; 6] = [
    Collection {
        name: "RackPDUs",
        prefix: "pdu",
        input: Point::PduInput,
        outputs: true,
    },
    Collection {
        name: "FloorPDUs",
        prefix: "pdu",
        input: Point::PduInput,
        outputs: true,
    },
    Collection {
        name: "PowerShelves",
        prefix: "shelf",
        input: Point::PduInput,
        outputs: true,
    },
    Collection {
        name: "TransferSwitches",
        prefix: "ats",
        input: Point::PduInput,
        outputs: true,
    },
    Collection {
        name: "ElectricalBuses",
        prefix: "bus",
        input: Point::PduInput,
        outputs: true,
    },
    // Switchgear's feeders go to UPSs and distribution that have their own meters.
    Collection {
        name: "Switchgear",
        prefix: "switchgear",
        input: Point::FacilityInput,
        outputs: false,
    },
];

/// Properties of `PowerEquipment` that are not collections of equipment.
const NOT_EQUIPMENT: [&str; 4] = ["Links", "Actions", "Oem", "Status"];

fn id_of(path: &str) -> String {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("unknown");
    last.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect()
}

/// Power and energy readings of one resource that has `PowerWatts` / `EnergykWh`.
fn power_and_energy(
    v: &Value,
    point: Option<Point>,
    component: &str,
    cfg: &RedfishPduConfig,
    now_ms: i64,
    out: &mut Vec<Reading>,
) {
    let mut push = |r: Reading| {
        let mut r = r.from_source(KIND);
        r.point = point;
        r.component = component.into();
        r.rack.clone_from(&cfg.rack);
        r.zone.clone_from(&cfg.zone);
        out.push(r);
    };
    if let Some(w) = v["PowerWatts"]["Reading"].as_f64() {
        push(Reading::gauge("power_w", w, now_ms));
    }
    if let Some(kwh) = v["EnergykWh"]["Reading"].as_f64() {
        push(Reading::counter("energy_j", kwh * 3.6e6, now_ms));
    }
}

/// The PowerEquipment reader.
pub struct RedfishPduSource {
    cfg: RedfishPduConfig,
    client: Client,
    /// The warnings about uncounted and unknown collections, once found.
    warnings: Option<Vec<String>>,
}

/// One piece of equipment to read: its path, component and where its readings count.
struct Equipment {
    path: String,
    component: String,
    input: Option<Point>,
    output: Option<Point>,
    outputs: bool,
}

impl RedfishPduSource {
    /// Builds the client (no request yet).
    ///
    /// # Errors
    /// The URL, CA file or password file is unusable.
    pub fn new(cfg: RedfishPduConfig) -> Result<Self, SourceError> {
        let client = Client::new(&Connection {
            url: &cfg.url,
            username: cfg.username.as_deref(),
            password_file: cfg.password_file.as_deref(),
            ca_file: cfg.ca_file.as_deref(),
            insecure_skip_verify: cfg.insecure_skip_verify,
            timeout_secs: cfg.timeout_secs,
        })?;
        Ok(RedfishPduSource {
            cfg,
            client,
            warnings: None,
        })
    }

    /// Every PDU's resource path (rack and floor PDUs).
    ///
    /// # Errors
    /// The service does not answer.
    pub fn pdus(&self) -> Result<Vec<String>, SourceError> {
        Ok(self
            .equipment()?
            .0
            .into_iter()
            .filter(|e| e.component.starts_with("pdu-"))
            .map(|e| e.path)
            .collect())
    }

    /// Every piece of equipment the service lists, once each, and the warnings about
    /// what is not counted or not known.
    fn equipment(&self) -> Result<(Vec<Equipment>, Vec<String>), SourceError> {
        let root = self.client.get("/redfish/v1/PowerEquipment")?;
        let mut out: Vec<Equipment> = Vec::new();
        let mut warnings = Vec::new();
        for c in &COLLECTIONS {
            let Some(path) = root[c.name]["@odata.id"].as_str() else {
                continue;
            };
            let counted = self.cfg.count.iter().any(|n| n == c.name);
            let list = members(&self.client.get(path)?);
            if !counted && !list.is_empty() {
                warnings.push(format!(
                    "{path}: {} {} published without a measurement point (a {} usually feeds or is fed by equipment metered too); add \"{}\" to count to count it",
                    list.len(),
                    if list.len() == 1 { "member is" } else { "members are" },
                    c.name,
                    c.name
                ));
            }
            for m in list {
                // A member listed by two collections is read once.
                if out.iter().any(|e| e.path == m) {
                    continue;
                }
                out.push(Equipment {
                    component: format!("{}-{}", c.prefix, id_of(&m)),
                    input: counted.then_some(c.input),
                    output: counted.then_some(Point::PduOutput),
                    outputs: c.outputs,
                    path: m,
                });
            }
        }
        for (key, v) in root.as_object().into_iter().flatten() {
            let known = COLLECTIONS.iter().any(|c| c.name == key)
                || NOT_EQUIPMENT.contains(&key.as_str())
                || key.starts_with('@');
            if let (false, Some(link)) = (known, v["@odata.id"].as_str()) {
                warnings.push(format!(
                    "{link}: PowerEquipment lists {key}, which this dcwatt does not read"
                ));
            }
        }
        Ok((out, warnings))
    }

    /// Reads one piece of equipment.
    fn read_one(
        &self,
        e: &Equipment,
        now_ms: i64,
        out: &mut Vec<Reading>,
        failed: &mut Vec<String>,
    ) {
        let cfg = &self.cfg;
        let res = match self.client.get(&e.path) {
            Ok(v) => v,
            Err(err) => {
                failed.push(err.detail().to_owned());
                return;
            }
        };
        if let Some(metrics) = res["Metrics"]["@odata.id"].as_str() {
            match self.client.get(metrics) {
                Ok(m) => power_and_energy(&m, e.input, &e.component, cfg, now_ms, out),
                Err(err) => failed.push(err.detail().to_owned()),
            }
        } else if let Some(mains) = res["Mains"]["@odata.id"].as_str() {
            // No equipment-level metrics: each main (inlet circuit) is an input.
            match self.client.get(mains) {
                Ok(list) => {
                    for main in members(&list) {
                        match self.client.get(&main) {
                            Ok(v) => power_and_energy(
                                &v,
                                e.input,
                                &format!("{}.{}", e.component, id_of(&main)),
                                cfg,
                                now_ms,
                                out,
                            ),
                            Err(err) => failed.push(err.detail().to_owned()),
                        }
                    }
                }
                Err(err) => failed.push(err.detail().to_owned()),
            }
        }
        if !(cfg.outlets && e.outputs) {
            return;
        }
        let mut outputs = Vec::new();
        if let Some(link) = res["Outlets"]["@odata.id"].as_str() {
            match self.client.get(link) {
                Ok(v) => outputs.extend(members(&v).into_iter().map(|o| (o, None))),
                Err(err) => failed.push(err.detail().to_owned()),
            }
        }
        // A circuit that feeds a bus (a power shelf's DC output to the rack's busbar)
        // is an output; branch circuits feed outlets, which are read already.
        if let Some(link) = res["Branches"]["@odata.id"].as_str() {
            match self.client.get(link) {
                Ok(v) => outputs.extend(members(&v).into_iter().map(|b| (b, Some("Bus")))),
                Err(err) => failed.push(err.detail().to_owned()),
            }
        }
        for (o, only) in outputs {
            match self.client.get(&o) {
                Ok(v) if only.is_none_or(|t| v["CircuitType"] == t) => power_and_energy(
                    &v,
                    e.output,
                    &format!("{}.{}", e.component, id_of(&o)),
                    cfg,
                    now_ms,
                    out,
                ),
                Ok(_) => {}
                Err(err) => failed.push(err.detail().to_owned()),
            }
        }
    }
}

impl Source for RedfishPduSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn notes(&self) -> Vec<String> {
        self.warnings.clone().unwrap_or_default()
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut failed = Vec::new();
        let service = format!("redfish-{}", id_of(&self.cfg.url));
        let (equipment, warnings) = match self.equipment() {
            Ok(e) => e,
            Err(e) => {
                let mut up = Reading::gauge("device_up", 0.0, now_ms).from_source(KIND);
                up.component = service.into();
                out.push(up);
                return Err(e);
            }
        };
        if self.warnings.is_none() {
            for w in &warnings {
                tracing::warn!(url = %self.cfg.url, "{w}");
            }
            self.warnings = Some(warnings);
        }
        for e in &equipment {
            self.read_one(e, now_ms, out, &mut failed);
        }
        let mut up = Reading::gauge("device_up", f64::from(u8::from(failed.is_empty())), now_ms)
            .from_source(KIND);
        up.component = service.into();
        out.push(up);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Read(failed.join("; ")))
        }
    }
}

/// Needs a configured service.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: false,
        detail: "not configured: set url (https://PDU) and credentials to read PowerEquipment"
            .to_owned(),
    }
}
