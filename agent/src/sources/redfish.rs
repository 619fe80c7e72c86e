//! `redfish`: whole-system power (and energy, where offered) from the BMC's Redfish
//! service over HTTPS.
//!
//! Paths, tried in this order unless one is configured: the chassis'
//! `EnvironmentMetrics` (`PowerWatts`, `EnergykWh`), then `PowerSubsystem` (sum of the
//! power supplies' `InputPowerWatts`), then the legacy `Power`
//! (`PowerControl[0].PowerConsumedWatts`, deprecated since 2020.4 but the most deployed).
//! The path that answered is kept, logged and shown by `probe`. Whole-system power is
//! `it_input`.
//!
//! Without a configured `chassis`, the chassis is chosen by its `ChassisType`: a server
//! (`RackMount`, `StandAlone`, `Blade`, `Sled`) that offers one of the paths. Cards (a
//! SmartNIC), enclosures, racks and power equipment are skipped, each with its reason;
//! when none or several qualify, the error names every chassis and what decided, and
//! `chassis` chooses. BMCs are slow and limit sessions: one client, one connection pool, a
//! per-request timeout, and the discovery done once.

use super::{Probe, Source, SourceError};
use dcwatt_common::protocol::{Point, Reading};
use dcwatt_common::secret::Secret;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Source type name.
pub const KIND: &str = "redfish";

/// Which resource power is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerPath {
    /// EnvironmentMetrics, else PowerSubsystem, else Power.
    #[default]
    Auto,
    /// `Chassis/{id}/EnvironmentMetrics`.
    EnvironmentMetrics,
    /// `Chassis/{id}/PowerSubsystem/PowerSupplies/*/Metrics`.
    PowerSubsystem,
    /// Legacy `Chassis/{id}/Power`.
    Power,
}

impl PowerPath {
    fn as_str(self) -> &'static str {
        match self {
            PowerPath::Auto => "auto",
            PowerPath::EnvironmentMetrics => "EnvironmentMetrics",
            PowerPath::PowerSubsystem => "PowerSubsystem",
            PowerPath::Power => "Power",
        }
    }
}

/// `[[sources]] type = "redfish"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedfishConfig {
    /// Base URL of the BMC, e.g. `https://10.0.0.9`.
    pub url: String,
    /// User name for basic authentication.
    pub username: Option<String>,
    /// File holding the password; else the `REDFISH_PASSWORD` environment variable.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the BMC's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (BMCs often have self-signed ones). Off by default.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Chassis id; the first chassis with a power reading when absent.
    pub chassis: Option<String>,
    /// Which resource to read; `auto` by default.
    #[serde(default)]
    pub path: PowerPath,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Own interval, a multiple of the agent's (BMCs refresh every few seconds to a minute).
    pub interval_secs: Option<u64>,
}

fn default_timeout() -> u64 {
    10
}

/// Standard base64 (for the basic-auth header).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Chassis types whose power is one host's whole-system power.
const SERVER_TYPES: [&str; 4] = ["RackMount", "StandAlone", "Blade", "Sled"];

/// The members of a Redfish collection, each once (a service may list one twice).
pub(crate) fn members(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in v["Members"].as_array().into_iter().flatten() {
        if let Some(id) = m["@odata.id"].as_str() {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_owned());
            }
        }
    }
    out
}

/// A chassis' type as its resource says, for messages.
fn chassis_type(res: &Value) -> &str {
    res["ChassisType"].as_str().unwrap_or("no ChassisType")
}

/// Why a chassis is not a server whose power is the host's, if it is not.
fn not_a_server(res: &Value) -> Option<String> {
    match res["ChassisType"].as_str() {
        Some(t) if SERVER_TYPES.contains(&t) => None,
        Some(t) => Some(format!("{t}, not a server")),
        None if !res["Links"]["PowerDistribution"].is_null() => {
            Some("power distribution equipment (Links.PowerDistribution)".to_owned())
        }
        None => None,
    }
}

/// What a discovery found and what one read yields.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerReading {
    /// Whole-system power, W.
    pub watts: f64,
    /// Lifetime energy, J, when the BMC offers it.
    pub energy_j: Option<f64>,
}

/// How to reach a Redfish service (a BMC or a PDU).
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// Base URL.
    pub url: &'a str,
    /// User name for basic authentication.
    pub username: Option<&'a str>,
    /// Password file; else `REDFISH_PASSWORD`.
    pub password_file: Option<&'a std::path::Path>,
    /// CA file.
    pub ca_file: Option<&'a std::path::Path>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
}

/// An HTTPS client for one Redfish service, with basic authentication.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl Client {
    /// Builds the client (no request yet).
    ///
    /// # Errors
    /// The URL, CA file or password file is unusable.
    pub fn new(c: &Connection<'_>) -> Result<Self, SourceError> {
        if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
            return Err(SourceError::Unavailable(format!(
                "url {:?} must start with https://",
                c.url
            )));
        }
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .disable_verification(c.insecure_skip_verify);
        if let Some(ca) = c.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| SourceError::Unavailable(format!("{}: {e}", ca.display())))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(SourceError::Unavailable(format!(
                    "{} holds no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(c.timeout_secs.max(1))))
            .http_status_as_error(false)
            .build()
            .into();
        let password = match c.password_file {
            Some(f) => Some(
                Secret::from_file(f)
                    .map_err(|e| SourceError::Unavailable(format!("{}: {e}", f.display())))?,
            ),
            None => std::env::var("REDFISH_PASSWORD").ok().map(Secret::new),
        };
        let auth = c.username.map(|u| {
            let pw = password.as_ref().map_or("", |p| p.expose());
            format!("Basic {}", base64(format!("{u}:{pw}").as_bytes()))
        });
        Ok(Client {
            base: c.url.trim_end_matches('/').to_owned(),
            agent,
            auth,
        })
    }

    /// GETs a resource as JSON.
    ///
    /// # Errors
    /// Network, HTTP status (401/403 as unavailable), or malformed JSON.
    pub fn get(&self, path: &str) -> Result<Value, SourceError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url).header("Accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req
            .call()
            .map_err(|e| SourceError::Read(format!("GET {url}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| SourceError::Read(format!("GET {url}: {e}")))?;
        match status {
            200 => serde_json::from_str(&body)
                .map_err(|e| SourceError::Read(format!("GET {url}: malformed JSON: {e}"))),
            401 | 403 => Err(SourceError::Unavailable(format!(
                "GET {url}: {status}: wrong username or password"
            ))),
            _ => Err(SourceError::Read(format!("GET {url}: HTTP {status}"))),
        }
    }
}

/// A Redfish client for one BMC.
pub struct RedfishSource {
    cfg: RedfishConfig,
    client: Client,
    /// `(chassis path, resource)` once discovered.
    found: Option<(String, PowerPath)>,
}

impl RedfishSource {
    /// Builds the client (no request yet).
    ///
    /// # Errors
    /// The URL, CA file or password file is unusable.
    pub fn new(cfg: RedfishConfig) -> Result<Self, SourceError> {
        let client = Client::new(&Connection {
            url: &cfg.url,
            username: cfg.username.as_deref(),
            password_file: cfg.password_file.as_deref(),
            ca_file: cfg.ca_file.as_deref(),
            insecure_skip_verify: cfg.insecure_skip_verify,
            timeout_secs: cfg.timeout_secs,
        })?;
        Ok(RedfishSource {
            cfg,
            client,
            found: None,
        })
    }

    fn get(&self, path: &str) -> Result<Value, SourceError> {
        self.client.get(path)
    }

    fn read_path(&self, chassis: &str, path: PowerPath) -> Result<PowerReading, SourceError> {
        match path {
            PowerPath::EnvironmentMetrics => {
                let at = format!("{chassis}/EnvironmentMetrics");
                let v = self.get(&at)?;
                let watts = v["PowerWatts"]["Reading"]
                    .as_f64()
                    .ok_or_else(|| SourceError::Read(format!("{at} has no PowerWatts.Reading")))?;
                let energy_j = v["EnergykWh"]["Reading"].as_f64().map(|kwh| kwh * 3.6e6);
                Ok(PowerReading { watts, energy_j })
            }
            PowerPath::PowerSubsystem => {
                let at = format!("{chassis}/PowerSubsystem/PowerSupplies");
                let list = self.get(&at)?;
                let mut watts = None;
                // Each supply once, even if the collection lists it twice.
                for psu in members(&list) {
                    // A bay without metrics (empty or unmanaged) contributes nothing.
                    if let Ok(metrics) = self.get(&format!("{psu}/Metrics")) {
                        if let Some(w) = metrics["InputPowerWatts"]["Reading"].as_f64() {
                            *watts.get_or_insert(0.0) += w;
                        }
                    }
                }
                let watts = watts.ok_or_else(|| {
                    SourceError::Read(format!("no power supply of {at} reports InputPowerWatts"))
                })?;
                Ok(PowerReading {
                    watts,
                    energy_j: None,
                })
            }
            PowerPath::Power => {
                let at = format!("{chassis}/Power");
                let v = self.get(&at)?;
                let watts = v["PowerControl"][0]["PowerConsumedWatts"]
                    .as_f64()
                    .ok_or_else(|| {
                        SourceError::Read(format!("{at} has no PowerControl[0].PowerConsumedWatts"))
                    })?;
                Ok(PowerReading {
                    watts,
                    energy_j: None,
                })
            }
            PowerPath::Auto => Err(SourceError::Read("auto is not a path".into())),
        }
    }

    /// The first of `paths` that gives a reading on this chassis (in `auto`, only those
    /// its resource links), or why none does.
    fn first_path(&self, chassis: &str, res: &Value) -> Result<PowerPath, SourceError> {
        let auto = self.cfg.path == PowerPath::Auto;
        let paths: &[PowerPath] = match self.cfg.path {
            PowerPath::Auto => &[
                PowerPath::EnvironmentMetrics,
                PowerPath::PowerSubsystem,
                PowerPath::Power,
            ],
            ref p => std::slice::from_ref(p),
        };
        let mut why = Vec::new();
        for &p in paths {
            if auto && res[p.as_str()].is_null() {
                continue;
            }
            match self.read_path(chassis, p) {
                Ok(_) => return Ok(p),
                Err(e @ SourceError::Unavailable(_)) => return Err(e),
                Err(e) => why.push(e.detail().to_owned()),
            }
        }
        Err(SourceError::Read(if why.is_empty() {
            "offers no EnvironmentMetrics, PowerSubsystem or Power".to_owned()
        } else {
            why.join(", ")
        }))
    }

    /// Finds the chassis and the resource that answers, once.
    ///
    /// # Errors
    /// No chassis, or several, give whole-system power: the error names each chassis
    /// and what decided.
    pub fn discover(&mut self) -> Result<(String, PowerPath), SourceError> {
        if let Some(f) = &self.found {
            return Ok(f.clone());
        }
        if let Some(id) = &self.cfg.chassis {
            let c = format!("/redfish/v1/Chassis/{id}");
            let res = self.get(&c)?;
            let p = self.first_path(&c, &res).map_err(|e| match e {
                SourceError::Read(why) => {
                    SourceError::Read(format!("{c} ({}): {why}", chassis_type(&res)))
                }
                other => other,
            })?;
            match not_a_server(&res) {
                Some(what) => tracing::warn!(
                    chassis = %c, path = p.as_str(),
                    "the configured chassis is {what}: its power is published as this host's whole-system power"
                ),
                None => {
                    tracing::info!(chassis = %c, kind = chassis_type(&res), path = p.as_str(), "redfish power found")
                }
            }
            self.found = Some((c.clone(), p));
            return Ok((c, p));
        }
        let list = members(&self.get("/redfish/v1/Chassis")?);
        if list.is_empty() {
            return Err(SourceError::Unavailable("the BMC lists no chassis".into()));
        }
        let mut skipped = Vec::new();
        let mut found = Vec::new();
        for c in &list {
            let res = match self.get(c) {
                Ok(v) => v,
                Err(e @ SourceError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    skipped.push(e.detail().to_owned());
                    continue;
                }
            };
            let kind = chassis_type(&res).to_owned();
            if let Some(what) = not_a_server(&res) {
                skipped.push(format!("{c} ({kind}): {what}"));
                continue;
            }
            match self.first_path(c, &res) {
                Ok(p) => found.push((c.clone(), kind, p)),
                Err(e @ SourceError::Unavailable(_)) => return Err(e),
                Err(e) => skipped.push(format!("{c} ({kind}): {}", e.detail())),
            }
        }
        match found.as_slice() {
            [] => Err(SourceError::Read(format!(
                "no chassis gives whole-system power: {}; set chassis to read one anyway",
                skipped.join("; ")
            ))),
            [(c, kind, p)] => {
                tracing::info!(
                    chassis = %c, kind = %kind, path = p.as_str(), skipped = %skipped.join("; "),
                    "redfish power found"
                );
                self.found = Some((c.clone(), *p));
                Ok((c.clone(), *p))
            }
            several => Err(SourceError::Read(format!(
                "several chassis give whole-system power: {}; set chassis = \"ID\" to choose the one that is this host",
                several
                    .iter()
                    .map(|(c, kind, p)| format!("{c} ({kind}, {})", p.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// One reading through the discovered path.
    ///
    /// # Errors
    /// The BMC did not answer or answered nonsense.
    pub fn read_power(&mut self) -> Result<(PowerReading, PowerPath), SourceError> {
        let (chassis, path) = self.discover()?;
        Ok((self.read_path(&chassis, path)?, path))
    }
}

impl Source for RedfishSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let (r, _) = self.read_power()?;
        out.push(
            Reading::gauge("power_w", r.watts, now_ms)
                .at(Point::ItInput)
                .from_source(KIND),
        );
        if let Some(j) = r.energy_j {
            out.push(
                Reading::counter("energy_j", j, now_ms)
                    .at(Point::ItInput)
                    .from_source(KIND),
            );
        }
        Ok(())
    }
}

/// Redfish needs a BMC address: probe says how to configure it.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: false,
        detail: "not configured: set url (https://BMC), username and password_file to read the BMC over Redfish".to_owned(),
    }
}

/// Probes a configured BMC: which path answered and a sample reading.
pub fn probe_configured(cfg: &RedfishConfig) -> Probe {
    let result = RedfishSource::new(cfg.clone()).and_then(|mut s| {
        let (r, path) = s.read_power()?;
        let chassis = s.found.map(|(c, _)| c).unwrap_or_default();
        Ok((r, path, chassis))
    });
    match result {
        Ok((r, path, chassis)) => Probe {
            kind: KIND,
            available: true,
            detail: format!(
                "{} via {chassis} {}: {:.0} W",
                cfg.url,
                path.as_str(),
                r.watts
            ),
        },
        Err(e) => Probe {
            kind: KIND,
            available: false,
            detail: format!("{}: {}", cfg.url, e.detail()),
        },
    }
}

#[cfg(test)]
mod tests;
