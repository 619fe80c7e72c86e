//! `redfish_pdu`: rack and floor PDUs through Redfish `PowerEquipment` (DSP0268 2020.4+).
//!
//! For each PDU under `/redfish/v1/PowerEquipment/{RackPDUs,FloorPDUs}`, following the
//! links the PDU itself lists (a PDU without metering publishes nothing): its `Metrics`
//! (`PowerWatts`, `EnergykWh`) are its input, `point = pdu_input`, component
//! `pdu-{id}`; with `outlets = true` (default) each outlet's `PowerWatts` and `EnergykWh`
//! are published as `pdu_output`, component `pdu-{id}.{outlet}` — the sum of outlets is
//! category-2 IT energy. Energy is converted kWh → J and published as counters.

use super::redfish::{Client, Connection};
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
    /// Publish every outlet as `pdu_output`.
    #[serde(default = "yes")]
    pub outlets: bool,
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

fn members(v: &Value) -> Vec<String> {
    v["Members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["@odata.id"].as_str().map(str::to_owned))
        .collect()
}

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
    point: Point,
    component: &str,
    cfg: &RedfishPduConfig,
    now_ms: i64,
    out: &mut Vec<Reading>,
) {
    let mut push = |r: Reading| {
        let mut r = r.at(point).from_source(KIND);
        r.component = component.to_owned();
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

/// The PDU reader.
pub struct RedfishPduSource {
    cfg: RedfishPduConfig,
    client: Client,
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
        Ok(RedfishPduSource { cfg, client })
    }

    /// Every PDU's resource path.
    ///
    /// # Errors
    /// The service does not answer.
    pub fn pdus(&self) -> Result<Vec<String>, SourceError> {
        let root = self.client.get("/redfish/v1/PowerEquipment")?;
        let mut out = Vec::new();
        for kind in ["RackPDUs", "FloorPDUs"] {
            if let Some(path) = root[kind]["@odata.id"].as_str() {
                out.extend(members(&self.client.get(path)?));
            }
        }
        Ok(out)
    }
}

impl Source for RedfishPduSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut failed = Vec::new();
        let pdus = match self.pdus() {
            Ok(p) => p,
            Err(e) => {
                let mut up = Reading::gauge("device_up", 0.0, now_ms).from_source(KIND);
                up.component = format!("redfish-{}", id_of(&self.cfg.url));
                out.push(up);
                return Err(e);
            }
        };
        for pdu in pdus {
            let component = format!("pdu-{}", id_of(&pdu));
            // Follow the PDU's own links: not every PDU offers metrics or metered outlets.
            let res = match self.client.get(&pdu) {
                Ok(v) => v,
                Err(e) => {
                    failed.push(e.detail().to_owned());
                    continue;
                }
            };
            if let Some(metrics) = res["Metrics"]["@odata.id"].as_str() {
                match self.client.get(metrics) {
                    Ok(m) => {
                        power_and_energy(&m, Point::PduInput, &component, &self.cfg, now_ms, out)
                    }
                    Err(e) => failed.push(e.detail().to_owned()),
                }
            } else if let Some(mains) = res["Mains"]["@odata.id"].as_str() {
                // No PDU-level metrics: each main (inlet circuit) is an input.
                match self.client.get(mains) {
                    Ok(list) => {
                        for main in members(&list) {
                            match self.client.get(&main) {
                                Ok(v) => power_and_energy(
                                    &v,
                                    Point::PduInput,
                                    &format!("{component}.{}", id_of(&main)),
                                    &self.cfg,
                                    now_ms,
                                    out,
                                ),
                                Err(e) => failed.push(e.detail().to_owned()),
                            }
                        }
                    }
                    Err(e) => failed.push(e.detail().to_owned()),
                }
            }
            let outlets = match res["Outlets"]["@odata.id"].as_str() {
                Some(link) if self.cfg.outlets => match self.client.get(link) {
                    Ok(v) => members(&v),
                    Err(e) => {
                        failed.push(e.detail().to_owned());
                        continue;
                    }
                },
                _ => Vec::new(),
            };
            for o in outlets {
                match self.client.get(&o) {
                    Ok(v) => power_and_energy(
                        &v,
                        Point::PduOutput,
                        &format!("{component}.{}", id_of(&o)),
                        &self.cfg,
                        now_ms,
                        out,
                    ),
                    Err(e) => failed.push(e.detail().to_owned()),
                }
            }
        }
        let mut up = Reading::gauge("device_up", f64::from(u8::from(failed.is_empty())), now_ms)
            .from_source(KIND);
        up.component = format!("redfish-{}", id_of(&self.cfg.url));
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
