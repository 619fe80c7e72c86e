//! `snmp`: UPSs and PDUs over SNMP v2c or v3 (authPriv), through the snmp2 crate (pure
//! Rust, crypto included: no OpenSSL to install), with timeouts and retries.
//!
//! What to read is a list of OID entries: a scalar GET, or a table walked and summed (or
//! maxed) over its rows, scaled to SI units. Built-in profiles:
//! - `ups_mib` (RFC 1628): Σ upsOutputPower → `power_w` at `ups_output`, Σ
//!   upsInputTruePower → `power_w` at `ups_input` (no energy counter exists: the collector
//!   integrates), upsOutputSource → `ups_output_source` (3 normal, 4 bypass, 5 battery),
//!   max upsOutputPercentLoad → `ups_load_ratio`;
//! - `apc_rpdu2`: rPDU2DeviceStatusPower (0.01 kW) and rPDU2DeviceStatusEnergy (0.1 kWh,
//!   column 9 — column 7 is a timestamp);
//! - `raritan_pdu2`: inlet 1 activePower (W) and activeEnergy (Wh), divided by 10 to the
//!   power of the sensor's own inletSensorDecimalDigits;
//! - `servertech_sentry4`: Σ st4InputCordActivePower (W) and Σ st4InputCordEnergy
//!   (0.1 kWh).
//!
//! Power and energy take the device's `point`; a row reporting −1 (unsupported) is skipped.
//!
//! A value is published only when it is a measurement (docs/sources.md, "What is
//! refused"): of the type the MIB defines (a TimeTicks or Counter32 is never a power),
//! consistent with what the same device says about the same line (real power at most
//! V × I and not under a tenth of it, near percent load × rated power, at most the
//! apparent or peak power; a 0 W beside load or current is "not measured"). An entry the
//! device does not have is reported once and skipped until the device is back from an
//! outage; `disable` switches entries off by name.

use super::{implausible, Probe, Source, SourceError};
use dcwatt_common::protocol::{Kind, Point, Reading};
use dcwatt_common::secret::Secret;
use dcwatt_common::settings::Problems;
use serde::Deserialize;
use snmp2::{Oid, SyncSession, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Source type name.
pub const KIND: &str = "snmp";

/// Protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnmpVersion {
    /// Community-based v2c.
    #[default]
    V2c,
    /// User-based v3.
    V3,
}

/// v3 authentication protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthProtocol {
    /// HMAC-SHA-96.
    #[default]
    Sha,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
    /// HMAC-MD5-96 (legacy).
    Md5,
}

/// v3 privacy protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivProtocol {
    /// AES-128-CFB.
    #[default]
    Aes,
    /// AES-256.
    Aes256,
    /// DES (legacy).
    Des,
}

/// How table rows combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Sum of the rows (per-line power).
    #[default]
    Sum,
    /// Largest row (per-line load).
    Max,
}

/// One value to read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidConfig {
    /// Numeric OID: the instance for a GET, the column for a walk.
    pub oid: String,
    /// Metric name with its SI unit suffix.
    pub metric: String,
    /// Walk the column and aggregate its rows.
    #[serde(default)]
    pub walk: bool,
    /// How rows combine.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Multiplier to SI units (0.01 kW → W: 10; 0.1 kWh → J: 360000).
    #[serde(default = "one")]
    pub scale: f64,
    /// Gauge or counter.
    #[serde(default)]
    pub kind: Kind,
    /// Measurement point; power and energy default to the device's.
    pub point: Option<Point>,
    /// The MIB object's name, for messages (profiles set it).
    #[serde(skip)]
    pub object: &'static str,
    /// What the device must agree with before the value is published (profiles set it;
    /// an entry from the configuration is read as configured).
    #[serde(skip)]
    pub check: Check,
    /// The OID (instance or column, like `oid`) of the value's decimal digits: the value
    /// is divided by 10 to that power (Raritan's inletSensorDecimalDigits).
    #[serde(skip)]
    pub digits: Option<&'static str>,
}

impl OidConfig {
    /// The entry's name for `disable` and in messages: `metric@point`, or `metric`.
    pub fn name(&self) -> String {
        match self.point {
            Some(p) => format!("{}@{}", self.metric, p.as_str()),
            None => self.metric.clone(),
        }
    }

    /// The entry for messages: the MIB object's name and OID.
    fn label(&self) -> String {
        if self.object.is_empty() {
            format!("{} ({})", self.metric, self.oid)
        } else {
            format!("{} ({})", self.object, self.oid)
        }
    }
}

/// What a profile's value must agree with on the same device.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Check {
    /// Nothing beyond its type and plausibility.
    #[default]
    None,
    /// UPS-MIB output lines: against each line's voltage, current and percent load, and
    /// the rated output power (upsConfigOutputPower).
    UpsOutput,
    /// UPS-MIB input lines: against each line's voltage and current; 0 W on every line
    /// while the UPS runs on mains is not a measurement.
    UpsInput,
    /// At most another value of the same row: apparent or peak power, times `scale` to
    /// W or VA, with its own decimal digits where it has them.
    AtMost {
        /// Column (or instance) of the bound.
        oid: &'static str,
        /// Its MIB object's name.
        object: &'static str,
        /// Multiplier to W or VA.
        scale: f64,
        /// Its decimal digits' column (or instance).
        digits: Option<&'static str>,
    },
}

fn one() -> f64 {
    1.0
}

/// `[[sources]] type = "snmp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// Device address.
    pub host: String,
    /// UDP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// v2c (default) or v3.
    #[serde(default)]
    pub version: SnmpVersion,
    /// v2c community; else `SNMP_COMMUNITY`, else "public".
    pub community: Option<String>,
    /// v3 user.
    pub username: Option<String>,
    /// v3 authentication protocol.
    #[serde(default)]
    pub auth_protocol: AuthProtocol,
    /// v3 authentication password file.
    pub auth_password_file: Option<PathBuf>,
    /// v3 privacy protocol.
    #[serde(default)]
    pub privacy_protocol: PrivProtocol,
    /// v3 privacy password file (authPriv when set, authNoPriv otherwise).
    pub privacy_password_file: Option<PathBuf>,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Retries after a timeout.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Built-in OID set: ups_mib, apc_rpdu2, raritan_pdu2, servertech_sentry4.
    pub profile: Option<String>,
    /// OIDs added to (or replacing, same metric and point) the profile's.
    #[serde(default)]
    pub oids: Vec<OidConfig>,
    /// Entries not to read, by name (`metric@point` or `metric`, as `probe` lists them):
    /// e.g. `["power_w@ups_input"]` for a UPS whose input power is known to be wrong.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Point of the device's power and energy (the UPS profile sets its own).
    pub point: Option<Point>,
    /// Component label (the device's name).
    #[serde(default = "super::default_component")]
    pub component: String,
    /// Rack the device belongs to (rack PDUs).
    pub rack: Option<String>,
    /// Zone, room or row the device serves.
    pub zone: Option<String>,
    /// Largest plausible power of this device, W; defaults by profile (rack PDUs 50 kW,
    /// UPSs 2 MW, otherwise 50 MW). A wrong scale lands outside it and is refused.
    pub max_power_w: Option<f64>,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

fn default_port() -> u16 {
    161
}
fn default_timeout() -> u64 {
    2
}
fn default_retries() -> u32 {
    1
}

/// Builders of profile entries: the MIB object `object` at `oid`.
impl OidConfig {
    fn gauge(object: &'static str, oid: &str, metric: &str) -> Self {
        OidConfig {
            oid: oid.into(),
            metric: metric.into(),
            walk: false,
            aggregate: Aggregate::Sum,
            scale: 1.0,
            kind: Kind::Gauge,
            point: None,
            object,
            check: Check::None,
            digits: None,
        }
    }

    fn counter(object: &'static str, oid: &str, metric: &str) -> Self {
        OidConfig {
            kind: Kind::Counter,
            ..OidConfig::gauge(object, oid, metric)
        }
    }

    fn walked(self, aggregate: Aggregate) -> Self {
        OidConfig {
            walk: true,
            aggregate,
            ..self
        }
    }

    fn scaled(self, scale: f64) -> Self {
        OidConfig { scale, ..self }
    }

    fn at(self, point: Point) -> Self {
        OidConfig {
            point: Some(point),
            ..self
        }
    }

    fn checked(self, check: Check) -> Self {
        OidConfig { check, ..self }
    }

    fn decimals(self, digits: &'static str) -> Self {
        OidConfig {
            digits: Some(digits),
            ..self
        }
    }
}

/// UPS-MIB upsOutputEntry: .2 voltage (V), .3 current (0.1 A), .4 power (W), .5 load (%).
const UPS_OUTPUT: &str = "1.3.6.1.2.1.33.1.4.4.1";
/// UPS-MIB upsInputEntry: .3 voltage (V), .4 current (0.1 A), .5 true power (W).
const UPS_INPUT: &str = "1.3.6.1.2.1.33.1.3.3.1";
/// upsOutputSource: 3 normal, 4 bypass, 5 battery, 6 booster, 7 reducer.
const UPS_OUTPUT_SOURCE: &str = "1.3.6.1.2.1.33.1.4.1.0";
/// upsConfigOutputPower: the rated output power, W.
const UPS_RATED_POWER: &str = "1.3.6.1.2.1.33.1.9.6.0";

/// A built-in profile's OIDs.
pub fn profile(name: &str) -> Option<Vec<OidConfig>> {
    use Aggregate::{Max, Sum};
    let entries = match name {
        "ups_mib" => vec![
            OidConfig::gauge("upsOutputPower", "1.3.6.1.2.1.33.1.4.4.1.4", "power_w")
                .walked(Sum)
                .at(Point::UpsOutput)
                .checked(Check::UpsOutput),
            OidConfig::gauge("upsInputTruePower", "1.3.6.1.2.1.33.1.3.3.1.5", "power_w")
                .walked(Sum)
                .at(Point::UpsInput)
                .checked(Check::UpsInput),
            OidConfig::gauge("upsOutputSource", UPS_OUTPUT_SOURCE, "ups_output_source"),
            OidConfig::gauge(
                "upsOutputPercentLoad",
                "1.3.6.1.2.1.33.1.4.4.1.5",
                "ups_load_ratio",
            )
            .walked(Max)
            .scaled(0.01),
        ],
        "apc_rpdu2" => vec![
            OidConfig::gauge(
                "rPDU2DeviceStatusPower",
                "1.3.6.1.4.1.318.1.1.26.4.3.1.5",
                "power_w",
            )
            .walked(Sum)
            .scaled(10.0)
            .checked(Check::AtMost {
                oid: "1.3.6.1.4.1.318.1.1.26.4.3.1.6",
                object: "rPDU2DeviceStatusPeakPower",
                scale: 10.0,
                digits: None,
            }),
            OidConfig::counter(
                "rPDU2DeviceStatusEnergy",
                "1.3.6.1.4.1.318.1.1.26.4.3.1.9",
                "energy_j",
            )
            .walked(Sum)
            .scaled(360_000.0),
        ],
        // PDU2-MIB, PDU 1 inlet 1: measurementsInletSensorValue (…6.5.2.3.1.4) and
        // inletSensorDecimalDigits (…6.3.3.4.1.7) by sensor type (5 active power, 6
        // apparent power, 8 active energy).
        "raritan_pdu2" => vec![
            OidConfig::gauge(
                "measurementsInletSensorValue (activePower)",
                "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5",
                "power_w",
            )
            .decimals("1.3.6.1.4.1.13742.6.3.3.4.1.7.1.1.5")
            .checked(Check::AtMost {
                oid: "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.6",
                object: "measurementsInletSensorValue (apparentPower)",
                scale: 1.0,
                digits: Some("1.3.6.1.4.1.13742.6.3.3.4.1.7.1.1.6"),
            }),
            OidConfig::counter(
                "measurementsInletSensorValue (activeEnergy)",
                "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.8",
                "energy_j",
            )
            .decimals("1.3.6.1.4.1.13742.6.3.3.4.1.7.1.1.8")
            .scaled(3600.0),
        ],
        "servertech_sentry4" => vec![
            OidConfig::gauge(
                "st4InputCordActivePower",
                "1.3.6.1.4.1.1718.4.1.3.3.1.3",
                "power_w",
            )
            .walked(Sum)
            .checked(Check::AtMost {
                oid: "1.3.6.1.4.1.1718.4.1.3.3.1.5",
                object: "st4InputCordApparentPower",
                scale: 1.0,
                digits: None,
            }),
            OidConfig::counter(
                "st4InputCordEnergy",
                "1.3.6.1.4.1.1718.4.1.3.3.1.10",
                "energy_j",
            )
            .walked(Sum)
            .scaled(360_000.0),
        ],
        _ => return None,
    };
    Some(entries)
}

fn parse_oid(s: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = s
        .trim()
        .trim_start_matches('.')
        .split('.')
        .map(|p| p.parse().ok())
        .collect();
    parts.filter(|p| p.len() >= 2)
}

impl SnmpConfig {
    /// The effective OID list.
    pub fn oid_map(&self) -> Vec<OidConfig> {
        let mut map = self
            .profile
            .as_deref()
            .and_then(profile)
            .unwrap_or_default();
        for e in &self.oids {
            match map
                .iter_mut()
                .find(|m| m.metric == e.metric && m.point == e.point)
            {
                Some(m) => *m = e.clone(),
                None => map.push(e.clone()),
            }
        }
        map
    }

    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if let Some(name) = &self.profile {
            if profile(name).is_none() {
                p.push(format!("{path}.profile"), format!("unknown profile {name:?} (ups_mib, apc_rpdu2, raritan_pdu2, servertech_sentry4)"));
            }
        }
        let map = self.oid_map();
        if map.is_empty() {
            p.push(
                format!("{path}.oids"),
                "nothing to read: set a profile or list oids",
            );
        }
        for (i, e) in self.oids.iter().enumerate() {
            if parse_oid(&e.oid).is_none() {
                p.push(
                    format!("{path}.oids[{i}].oid"),
                    format!("{:?} is not a numeric OID", e.oid),
                );
            }
            if !e.scale.is_finite() || e.scale == 0.0 {
                p.push(
                    format!("{path}.oids[{i}].scale"),
                    "must be a finite, non-zero number",
                );
            }
        }
        let names: Vec<String> = map.iter().map(OidConfig::name).collect();
        for (i, d) in self.disable.iter().enumerate() {
            if !names.contains(d) {
                p.push(
                    format!("{path}.disable[{i}]"),
                    format!(
                        "{d:?} names no entry of this device (its entries: {})",
                        names.join(", ")
                    ),
                );
            }
        }
        if self.version == SnmpVersion::V3
            && (self.username.is_none() || self.auth_password_file.is_none())
        {
            p.push(
                format!("{path}.username"),
                "v3 needs username and auth_password_file",
            );
        }
        if !(1..=60).contains(&self.timeout_secs) {
            p.push(format!("{path}.timeout_secs"), "must be 1..=60");
        }
    }
}

/// A value and the SNMP type it came as.
fn typed(v: &Value<'_>) -> Option<(f64, &'static str)> {
    match v {
        Value::Integer(i) => Some((*i as f64, "INTEGER")),
        Value::Unsigned32(n) => Some((f64::from(*n), "Gauge32")),
        Value::Counter32(n) => Some((f64::from(*n), "Counter32")),
        Value::Counter64(n) => Some((*n as f64, "Counter64")),
        Value::Timeticks(n) => Some((f64::from(*n), "TimeTicks")),
        Value::OctetString(s) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .map(|v| (v, "OCTET STRING")),
        _ => None,
    }
}

/// Whether a value of SNMP type `ty` may be this metric. Electrical quantities come as
/// the MIBs define them — INTEGER or Gauge32, and energy also as a counter — never as
/// TimeTicks, text, or (for a gauge) a counter; other metrics take any number.
fn type_fits(metric: &str, kind: Kind, ty: &str) -> bool {
    let electrical = ["_w", "_j", "_v", "_a", "_hz", "_va", "_ratio"]
        .iter()
        .any(|suffix| metric.ends_with(suffix));
    match ty {
        "INTEGER" | "Gauge32" => true,
        "Counter32" | "Counter64" => !electrical || kind == Kind::Counter,
        _ => !electrical,
    }
}

/// One row a GET or walk answered: the full OID, the value and its type.
#[derive(Debug, Clone)]
struct Row {
    oid: Vec<u64>,
    value: Option<(f64, &'static str)>,
}

impl Row {
    /// The row's index: the part of its OID after the column `base` (empty for a GET).
    fn index(&self, base: &[u64], walk: bool) -> Vec<u64> {
        if walk {
            self.oid.get(base.len()..).unwrap_or_default().to_vec()
        } else {
            Vec::new()
        }
    }
}

/// The divisor of a value with `digits` decimal digits (as Raritan reports them).
fn decimal_divisor(
    digits: Option<&std::collections::BTreeMap<Vec<u64>, f64>>,
    index: &[u64],
) -> f64 {
    let d = digits.and_then(|d| d.get(index)).copied().unwrap_or(0.0);
    10f64.powi(d.clamp(0.0, 9.0) as i32)
}

fn dotted(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// What one entry gave this poll.
enum Outcome {
    /// A value to publish.
    Value(f64),
    /// The device does not have it (reported once, then skipped).
    Absent(String),
    /// Refused this time, with the reason.
    Refused(String),
}

/// One SNMP device.
pub struct SnmpSource {
    cfg: SnmpConfig,
    max_power_w: f64,
    map: Vec<(OidConfig, Vec<u64>)>,
    /// Entries found missing on the device, by index in `map`; cleared when the device
    /// comes back from an outage (it may have been replaced).
    absent: Vec<bool>,
    /// Whether the device answered the last poll.
    was_up: bool,
    /// Whether the device answered a request in this poll.
    answered: bool,
    /// Columns and scalars read this poll for the checks, by OID.
    seen: std::collections::HashMap<String, Vec<Row>>,
    session: Option<SyncSession>,
    community: Secret,
    auth: Option<(Secret, Option<Secret>)>,
}

impl SnmpSource {
    /// Reads the secrets; connects on the first read.
    ///
    /// # Errors
    /// A password file cannot be read.
    pub fn new(cfg: SnmpConfig) -> Result<Self, SourceError> {
        let map: Vec<(OidConfig, Vec<u64>)> = cfg
            .oid_map()
            .into_iter()
            .filter(|e| !cfg.disable.contains(&e.name()))
            .filter_map(|e| parse_oid(&e.oid).map(|o| (e, o)))
            .collect();
        let read = |f: &PathBuf| {
            Secret::from_file(f)
                .map_err(|e| SourceError::Unavailable(format!("{}: {e}", f.display())))
        };
        let community = Secret::new(
            cfg.community
                .clone()
                .or_else(|| std::env::var("SNMP_COMMUNITY").ok())
                .unwrap_or_else(|| "public".to_owned()),
        );
        let auth = match (&cfg.auth_password_file, &cfg.privacy_password_file) {
            (Some(a), p) => Some((read(a)?, p.as_ref().map(read).transpose()?)),
            (None, _) => None,
        };
        let max_power_w = cfg.max_power_w.unwrap_or(match cfg.profile.as_deref() {
            Some("apc_rpdu2" | "raritan_pdu2" | "servertech_sentry4") => 50e3,
            Some("ups_mib") => 2e6,
            _ => 50e6,
        });
        Ok(SnmpSource {
            absent: vec![false; map.len()],
            cfg,
            max_power_w,
            map,
            was_up: true,
            answered: false,
            seen: std::collections::HashMap::new(),
            session: None,
            community,
            auth,
        })
    }

    fn session(&mut self) -> Result<&mut SyncSession, SourceError> {
        if self.session.is_none() {
            let addr = (self.cfg.host.as_str(), self.cfg.port);
            let timeout = Some(Duration::from_secs(self.cfg.timeout_secs.max(1)));
            let io = |e: std::io::Error| {
                SourceError::Read(format!("{}:{}: {e}", self.cfg.host, self.cfg.port))
            };
            let s = match self.cfg.version {
                SnmpVersion::V2c => {
                    SyncSession::new_v2c(addr, self.community.expose().as_bytes(), timeout, 0)
                        .map_err(io)?
                }
                SnmpVersion::V3 => {
                    let (auth_pw, priv_pw) = self.auth.as_ref().ok_or_else(|| {
                        SourceError::Unavailable("v3 needs auth_password_file".into())
                    })?;
                    let user = self.cfg.username.clone().unwrap_or_default();
                    let protocol = match self.cfg.auth_protocol {
                        AuthProtocol::Sha => snmp2::v3::AuthProtocol::Sha1,
                        AuthProtocol::Sha256 => snmp2::v3::AuthProtocol::Sha256,
                        AuthProtocol::Sha512 => snmp2::v3::AuthProtocol::Sha512,
                        AuthProtocol::Md5 => snmp2::v3::AuthProtocol::Md5,
                    };
                    let level = match priv_pw {
                        Some(p) => snmp2::v3::Auth::AuthPriv {
                            cipher: match self.cfg.privacy_protocol {
                                PrivProtocol::Aes => snmp2::v3::Cipher::Aes128,
                                PrivProtocol::Aes256 => snmp2::v3::Cipher::Aes256,
                                PrivProtocol::Des => snmp2::v3::Cipher::Des,
                            },
                            privacy_password: p.expose().as_bytes().to_vec(),
                        },
                        None => snmp2::v3::Auth::AuthNoPriv,
                    };
                    let security =
                        snmp2::v3::Security::new(user.as_bytes(), auth_pw.expose().as_bytes())
                            .with_auth_protocol(protocol)
                            .with_auth(level);
                    let mut s = SyncSession::new_v3(addr, timeout, 0, security).map_err(io)?;
                    s.init().map_err(|e| {
                        SourceError::Read(format!(
                            "{}:{}: v3 session: {e:?}",
                            self.cfg.host, self.cfg.port
                        ))
                    })?;
                    s
                }
            };
            self.session = Some(s);
        }
        self.session
            .as_mut()
            .ok_or_else(|| SourceError::Read("no session".into()))
    }

    /// GET (or GETNEXT) with retries: the row it answered, or `None` when the device
    /// has no such object.
    fn get(&mut self, oid: &[u64], next: bool) -> Result<Option<Row>, SourceError> {
        let retries = self.cfg.retries;
        let target = Oid::from(oid).map_err(|e| SourceError::Read(format!("bad OID: {e:?}")))?;
        let mut last = String::new();
        for _ in 0..=retries {
            let s = self.session()?;
            let resp = if next {
                s.getnext(&target)
            } else {
                s.get(&target)
            };
            match resp {
                Ok(mut pdu) => {
                    let answer = if pdu.error_status == 2 {
                        // noSuchName: how v1-style agents say "no such object".
                        Ok(None)
                    } else if pdu.error_status != 0 {
                        Err(SourceError::Read(format!(
                            "SNMP error status {}",
                            pdu.error_status
                        )))
                    } else {
                        match pdu.varbinds.next() {
                            None
                            | Some((
                                _,
                                Value::EndOfMibView | Value::NoSuchObject | Value::NoSuchInstance,
                            )) => Ok(None),
                            Some((name, value)) => Ok(Some(Row {
                                oid: parse_oid(&name.to_id_string()).unwrap_or_default(),
                                value: typed(&value),
                            })),
                        }
                    };
                    self.answered = true;
                    return answer;
                }
                Err(e) => {
                    last = format!("{e:?}");
                    self.session = None;
                }
            }
        }
        Err(SourceError::Read(format!(
            "{}:{}: no answer after {} tries ({last})",
            self.cfg.host,
            self.cfg.port,
            retries + 1
        )))
    }

    /// The rows of a column (walked) or the one instance (a GET).
    fn rows(&mut self, oid: &[u64], walk: bool) -> Result<Vec<Row>, SourceError> {
        if !walk {
            return Ok(self.get(oid, false)?.into_iter().collect());
        }
        let mut out = Vec::new();
        let mut at = oid.to_vec();
        for _ in 0..4096 {
            match self.get(&at, true)? {
                Some(row) if row.oid.starts_with(oid) && row.oid > at => {
                    at.clone_from(&row.oid);
                    out.push(row);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// A companion column (or instance) for a check, read once per poll: its numeric
    /// INTEGER and Gauge32 rows by index (the part of the OID after `oid`). Missing or
    /// unreadable, it is empty and the check that needs it is skipped.
    fn companion(&mut self, oid: &str, walk: bool) -> std::collections::BTreeMap<Vec<u64>, f64> {
        let base = parse_oid(oid).unwrap_or_default();
        if !self.seen.contains_key(oid) {
            let rows = if base.is_empty() {
                Vec::new()
            } else {
                self.rows(&base, walk).unwrap_or_default()
            };
            self.seen.insert(oid.to_owned(), rows);
        }
        self.seen
            .get(oid)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let (v, ty) = r.value?;
                matches!(ty, "INTEGER" | "Gauge32").then(|| (r.index(&base, walk), v))
            })
            .collect()
    }

    /// A companion scalar (an instance OID), read once per poll.
    fn scalar(&mut self, oid: &str) -> Option<f64> {
        self.companion(oid, false).get(&Vec::new()).copied()
    }

    /// Reads one entry and decides whether its value is a measurement.
    fn entry(&mut self, e: &OidConfig, oid: &[u64]) -> Result<Outcome, SourceError> {
        let rows = self.rows(oid, e.walk)?;
        if rows.is_empty() {
            return Ok(Outcome::Absent(format!(
                "{}: not on this device (no such object)",
                e.label()
            )));
        }
        let mut lines = Vec::new();
        for r in &rows {
            let Some((v, ty)) = r.value else {
                return Ok(Outcome::Refused(format!(
                    "{} = {}: not a number",
                    e.label(),
                    dotted(&r.oid)
                )));
            };
            if !type_fits(&e.metric, e.kind, ty) {
                return Ok(Outcome::Refused(format!(
                    "{} is a {ty}, not the INTEGER or Gauge32 the MIB defines for {}: refused",
                    dotted(&r.oid),
                    e.metric
                )));
            }
            // −1 marks an unsupported row (e.g. rPDU2 power on some models).
            if v >= 0.0 {
                lines.push((r.index(oid, e.walk), v));
            }
        }
        if lines.is_empty() {
            return Ok(Outcome::Absent(format!(
                "{}: the device reports −1 (not supported by this model)",
                e.label()
            )));
        }
        let digits = e.digits.map(|d| self.companion(d, e.walk));
        for (index, v) in &mut lines {
            *v =
                dcwatt_common::units::scaled(*v, e.scale) / decimal_divisor(digits.as_ref(), index);
        }
        if let Err(why) = self.check(e, &lines) {
            return Ok(Outcome::Refused(why));
        }
        let value = match e.aggregate {
            Aggregate::Sum => lines.iter().map(|(_, v)| v).sum(),
            Aggregate::Max => lines.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max),
        };
        Ok(Outcome::Value(value))
    }

    /// What the same device says about the same lines, against the values (in SI units)
    /// of an entry by row index.
    fn check(&mut self, e: &OidConfig, lines: &[(Vec<u64>, f64)]) -> Result<(), String> {
        let at = |index: &[u64]| {
            if index.is_empty() {
                e.oid.clone()
            } else {
                format!("{}.{}", e.oid, dotted(index))
            }
        };
        match e.check {
            Check::None => Ok(()),
            Check::UpsOutput => {
                let volts = self.companion(&format!("{UPS_OUTPUT}.2"), true);
                let amps = self.companion(&format!("{UPS_OUTPUT}.3"), true);
                let load = self.companion(&format!("{UPS_OUTPUT}.5"), true);
                let rated = self.scalar(UPS_RATED_POWER).filter(|w| *w > 0.0);
                for (index, w) in lines {
                    let a = amps.get(index).map(|a| a / 10.0);
                    let l = load.get(index).copied();
                    line_agrees(&at(index), *w, volts.get(index).copied(), a)?;
                    if *w == 0.0 && l.is_some_and(|l| l > 0.0) {
                        return Err(format!(
                            "{} = 0 W beside {} % load on the same line: this UPS does not measure its output power",
                            at(index),
                            l.unwrap_or_default()
                        ));
                    }
                    if let (Some(rated), Some(l)) = (rated, l) {
                        let per_line = rated / lines.len() as f64;
                        let expected = l / 100.0 * per_line;
                        if *w > 3.0 * expected + 0.02 * per_line
                            || (l >= 5.0 && *w < expected / 3.0)
                        {
                            return Err(format!(
                                "{} = {w} W, but {l} % load of the rated {rated} W (upsConfigOutputPower) is about {expected:.0} W on this line: another unit? (override the entry with its scale)",
                                at(index)
                            ));
                        }
                    }
                }
                Ok(())
            }
            Check::UpsInput => {
                let volts = self.companion(&format!("{UPS_INPUT}.3"), true);
                let amps = self.companion(&format!("{UPS_INPUT}.4"), true);
                for (index, w) in lines {
                    let a = amps.get(index).map(|a| a / 10.0);
                    line_agrees(&at(index), *w, volts.get(index).copied(), a)?;
                }
                if lines.iter().all(|(_, w)| *w == 0.0) {
                    let source = self.scalar(UPS_OUTPUT_SOURCE);
                    let on_mains = matches!(source.map(|s| s as i64), Some(3 | 4 | 6 | 7));
                    let powered = volts.values().any(|v| *v > 0.0);
                    let loaded = [".3", ".4", ".5"].iter().any(|c| {
                        self.companion(&format!("{UPS_OUTPUT}{c}"), true)
                            .values()
                            .any(|v| *v > 0.0)
                    });
                    if on_mains && (powered || loaded) {
                        return Err(format!(
                            "{} = 0 W on every input line while the UPS runs on mains (upsOutputSource = {}): a UPS on mains draws power, so this one does not measure it",
                            e.label(),
                            source.unwrap_or_default()
                        ));
                    }
                }
                Ok(())
            }
            Check::AtMost {
                oid,
                object,
                scale,
                digits,
            } => {
                let bound = self.companion(oid, e.walk);
                let digits = digits.map(|d| self.companion(d, e.walk));
                for (index, w) in lines {
                    let Some(raw) = bound.get(index).copied().filter(|b| *b >= 0.0) else {
                        continue;
                    };
                    let b = raw * scale / decimal_divisor(digits.as_ref(), index);
                    // One step of the bound's resolution, and 2 % for its rounding.
                    if *w > b * 1.02 + scale {
                        return Err(format!(
                            "{} = {w} W is above the {b} of {object} on the same row: refused",
                            at(index)
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A line's real power against its own voltage and current (either may be missing): a
/// zero beside current is not measured; real power is at most V × I (10 % and 50 W for
/// rounding) and not under a tenth of it where the line carries 200 VA or more.
fn line_agrees(at: &str, w: f64, volts: Option<f64>, amps: Option<f64>) -> Result<(), String> {
    if w == 0.0 && amps.is_some_and(|a| a > 0.0) {
        return Err(format!(
            "{at} = 0 W beside {} A on the same line: this UPS does not measure the line's power",
            amps.unwrap_or_default()
        ));
    }
    let (Some(v), Some(a)) = (volts, amps) else {
        return Ok(());
    };
    let va = v * a;
    if w > 0.0 && va > 0.0 {
        if w > 1.1 * va + 50.0 {
            return Err(format!(
                "{at} = {w} W is more than the line's V × I = {va:.0} VA: refused (another unit? override the entry with its scale)"
            ));
        }
        if va >= 200.0 && w < 0.1 * va {
            return Err(format!(
                "{at} = {w} W is under a tenth of the line's V × I = {va:.0} VA: refused (another unit? override the entry with its scale)"
            ));
        }
    }
    Ok(())
}

impl Source for SnmpSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut problems = Vec::new();
        self.answered = false;
        self.seen.clear();
        let (mut expected, mut read) = (0usize, 0usize);
        let mut down = None;
        for k in 0..self.map.len() {
            if self.absent[k] {
                continue;
            }
            let (e, oid) = self.map[k].clone();
            let outcome = match self.entry(&e, &oid) {
                Ok(o) => o,
                Err(err) => {
                    down = Some(err.detail().to_owned());
                    break;
                }
            };
            let value = match outcome {
                Outcome::Value(v) => v,
                Outcome::Absent(why) => {
                    self.absent[k] = true;
                    problems.push(format!(
                        "{why}; {} is not read again until the device is back from an outage",
                        e.name()
                    ));
                    continue;
                }
                Outcome::Refused(why) => {
                    expected += 1;
                    problems.push(why);
                    continue;
                }
            };
            expected += 1;
            if let Some(why) = implausible(&e.metric, value, self.max_power_w) {
                problems.push(format!("{}: rejected {why}", e.label()));
                continue;
            }
            let mut r = match e.kind {
                Kind::Gauge => Reading::gauge(&e.metric, value, now_ms),
                Kind::Counter => Reading::counter(&e.metric, value, now_ms),
            }
            .from_source(KIND);
            r.point = e
                .point
                .or(if matches!(e.metric.as_str(), "power_w" | "energy_j") {
                    self.cfg.point
                } else {
                    None
                });
            r.component = self.cfg.component.as_str().into();
            r.rack.clone_from(&self.cfg.rack);
            r.zone.clone_from(&self.cfg.zone);
            out.push(r);
            read += 1;
        }
        let up = self.answered;
        if up && !self.was_up {
            // Back from an outage: it may be another device now; look for everything.
            self.absent.iter_mut().for_each(|a| *a = false);
        }
        self.was_up = up;
        let mut status = vec![("device_up", f64::from(u8::from(up)))];
        if up {
            let all_absent = !self.absent.is_empty() && self.absent.iter().all(|a| *a);
            if all_absent {
                problems.push(format!(
                    "the device answers but has none of this source's {} entries (is it the device the profile is for?)",
                    self.map.len()
                ));
            }
            status.push((
                "device_read_ratio",
                if expected == 0 {
                    0.0
                } else {
                    read as f64 / expected as f64
                },
            ));
        }
        if let Some(err) = down {
            problems.push(err);
        }
        for (metric, value) in status {
            let mut r = Reading::gauge(metric, value, now_ms).from_source(KIND);
            r.component = self.cfg.component.as_str().into();
            out.push(r);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Read(format!(
                "{} ({}:{}): {}",
                self.cfg.component,
                self.cfg.host,
                self.cfg.port,
                problems.join("; ")
            )))
        }
    }
}

/// SNMP needs a configured device.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: false,
        detail: "not configured: set host, version and credentials, and a profile (ups_mib, apc_rpdu2, raritan_pdu2, servertech_sentry4) or oids".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(oid: &str, metric: &str) -> OidConfig {
        OidConfig::gauge("", oid, metric)
    }

    #[test]
    fn profiles_and_overrides() {
        let ups = profile("ups_mib").unwrap();
        assert_eq!(ups[0].point, Some(Point::UpsOutput));
        let apc = profile("apc_rpdu2").unwrap();
        assert!(
            apc[1].oid.ends_with(".26.4.3.1.9"),
            "energy is column 9, not the timestamp in 7"
        );
        assert_eq!(apc[1].scale, 360_000.0);
        let cfg = SnmpConfig {
            host: "u".into(),
            port: 161,
            version: SnmpVersion::V2c,
            community: None,
            username: None,
            auth_protocol: AuthProtocol::Sha,
            auth_password_file: None,
            privacy_protocol: PrivProtocol::Aes,
            privacy_password_file: None,
            timeout_secs: 2,
            retries: 1,
            profile: Some("raritan_pdu2".into()),
            oids: vec![OidConfig {
                scale: 0.1,
                ..entry("1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5", "power_w")
            }],
            disable: Vec::new(),
            point: Some(Point::PduInput),
            component: "pdu".into(),
            rack: None,
            zone: None,
            max_power_w: None,
            interval_secs: None,
        };
        let map = cfg.oid_map();
        assert_eq!(map.len(), 2);
        assert_eq!(map[0].scale, 0.1, "replaced entry by entry");
        let mut p = Problems::default();
        SnmpConfig {
            profile: Some("acme".into()),
            oids: vec![entry("not.an.oid", "x")],
            disable: vec!["energy_j".into(), "power_w@ups_input".into()],
            ..cfg
        }
        .validate("s", &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["s.profile", "s.oids[0].oid", "s.disable[0]", "s.disable[1]"]
        );
        assert_eq!(parse_oid(".1.3.6.1"), Some(vec![1, 3, 6, 1]));
    }

    #[test]
    fn types_and_lines() {
        assert!(type_fits("power_w", Kind::Gauge, "Gauge32"));
        assert!(!type_fits("power_w", Kind::Gauge, "TimeTicks"));
        assert!(!type_fits("power_w", Kind::Gauge, "Counter32"));
        assert!(!type_fits("power_w", Kind::Gauge, "OCTET STRING"));
        assert!(type_fits("energy_j", Kind::Counter, "Counter64"));
        assert!(type_fits("uptime_s", Kind::Gauge, "TimeTicks"));
        // The Eaton 93E's output line 1: 220 V, 27.0 A, 5100 W (power factor 0.86).
        assert!(line_agrees("x", 5100.0, Some(220.0), Some(27.0)).is_ok());
        // 34 beside 2199 × 18.3 A: another unit, refused.
        assert!(line_agrees("x", 34.0, Some(2199.0), Some(18.3)).is_err());
        // 0 W beside 21 A: not measured; 0 W beside 0 A: a measured zero.
        assert!(line_agrees("x", 0.0, Some(227.0), Some(21.0)).is_err());
        assert!(line_agrees("x", 0.0, Some(231.0), Some(0.0)).is_ok());
        // More real power than V × I.
        assert!(line_agrees("x", 9000.0, Some(220.0), Some(10.0)).is_err());
        // Without voltage or current there is nothing to compare.
        assert!(line_agrees("x", 34.0, None, Some(18.3)).is_ok());
    }
}
