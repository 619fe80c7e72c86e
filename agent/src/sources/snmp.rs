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
//! - `raritan_pdu2`: inlet 1 activePower (W) and activeEnergy (Wh) — the inlet's decimal
//!   digits are not read: set `scale` if the unit reports decimals;
//! - `servertech_sentry4`: Σ st4InputCordActivePower (W).
//!
//! Power and energy take the device's `point`; a row reporting −1 (unsupported) is skipped.

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

fn o(
    oid: &str,
    metric: &str,
    walk: bool,
    aggregate: Aggregate,
    scale: f64,
    kind: Kind,
    point: Option<Point>,
) -> OidConfig {
    OidConfig {
        oid: oid.into(),
        metric: metric.into(),
        walk,
        aggregate,
        scale,
        kind,
        point,
    }
}

/// A built-in profile's OIDs.
pub fn profile(name: &str) -> Option<Vec<OidConfig>> {
    use Aggregate::{Max, Sum};
    use Kind::{Counter, Gauge};
    Some(match name {
        "ups_mib" => vec![
            o(
                "1.3.6.1.2.1.33.1.4.4.1.4",
                "power_w",
                true,
                Sum,
                1.0,
                Gauge,
                Some(Point::UpsOutput),
            ),
            o(
                "1.3.6.1.2.1.33.1.3.3.1.5",
                "power_w",
                true,
                Sum,
                1.0,
                Gauge,
                Some(Point::UpsInput),
            ),
            o(
                "1.3.6.1.2.1.33.1.4.1.0",
                "ups_output_source",
                false,
                Sum,
                1.0,
                Gauge,
                None,
            ),
            o(
                "1.3.6.1.2.1.33.1.4.4.1.5",
                "ups_load_ratio",
                true,
                Max,
                0.01,
                Gauge,
                None,
            ),
        ],
        "apc_rpdu2" => vec![
            o(
                "1.3.6.1.4.1.318.1.1.26.4.3.1.5",
                "power_w",
                true,
                Sum,
                10.0,
                Gauge,
                None,
            ),
            o(
                "1.3.6.1.4.1.318.1.1.26.4.3.1.9",
                "energy_j",
                true,
                Sum,
                360_000.0,
                Counter,
                None,
            ),
        ],
        "raritan_pdu2" => vec![
            o(
                "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5",
                "power_w",
                false,
                Sum,
                1.0,
                Gauge,
                None,
            ),
            o(
                "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.8",
                "energy_j",
                false,
                Sum,
                3600.0,
                Counter,
                None,
            ),
        ],
        "servertech_sentry4" => vec![o(
            "1.3.6.1.4.1.1718.4.1.3.3.1.3",
            "power_w",
            true,
            Sum,
            1.0,
            Gauge,
            None,
        )],
        _ => return None,
    })
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
        if self.oid_map().is_empty() {
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

fn number(v: &Value<'_>) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Counter32(n) | Value::Unsigned32(n) | Value::Timeticks(n) => Some(f64::from(*n)),
        Value::Counter64(n) => Some(*n as f64),
        Value::OctetString(s) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.trim().parse().ok()),
        _ => None,
    }
}

/// An answer: the OID it is for and its numeric value, if it has one.
type Answer = Option<(Vec<u64>, Option<f64>)>;

/// One SNMP device.
pub struct SnmpSource {
    cfg: SnmpConfig,
    max_power_w: f64,
    map: Vec<(OidConfig, Vec<u64>)>,
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
        let map = cfg
            .oid_map()
            .into_iter()
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
            cfg,
            max_power_w,
            map,
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

    /// GET with retries; the value and the OID it answered for.
    fn get(&mut self, oid: &[u64], next: bool) -> Result<Answer, SourceError> {
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
                    if pdu.error_status != 0 {
                        return Err(SourceError::Read(format!(
                            "SNMP error status {}",
                            pdu.error_status
                        )));
                    }
                    let Some((name, value)) = pdu.varbinds.next() else {
                        return Ok(None);
                    };
                    if matches!(
                        value,
                        Value::EndOfMibView | Value::NoSuchObject | Value::NoSuchInstance
                    ) {
                        return Ok(None);
                    }
                    let name = parse_oid(&name.to_id_string()).unwrap_or_default();
                    return Ok(Some((name, number(&value))));
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

    fn walk(&mut self, column: &[u64]) -> Result<Vec<f64>, SourceError> {
        let mut out = Vec::new();
        let mut at = column.to_vec();
        for _ in 0..4096 {
            match self.get(&at, true)? {
                Some((name, value)) if name.starts_with(column) && name > at => {
                    if let Some(v) = value {
                        out.push(v);
                    }
                    at = name;
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

impl Source for SnmpSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut problems = Vec::new();
        for (e, oid) in self.map.clone() {
            let raw = if e.walk {
                match self.walk(&oid) {
                    // −1 marks an unsupported row (e.g. rPDU2 power on some models).
                    Ok(rows) => {
                        let rows: Vec<f64> = rows.into_iter().filter(|v| *v >= 0.0).collect();
                        match e.aggregate {
                            Aggregate::Sum => (!rows.is_empty()).then(|| rows.iter().sum()),
                            Aggregate::Max => rows.into_iter().reduce(f64::max),
                        }
                    }
                    Err(err) => {
                        problems.push(err.detail().to_owned());
                        break;
                    }
                }
            } else {
                match self.get(&oid, false) {
                    Ok(v) => v.and_then(|(_, v)| v).filter(|v| *v >= 0.0),
                    Err(err) => {
                        problems.push(err.detail().to_owned());
                        break;
                    }
                }
            };
            let Some(raw) = raw else {
                problems.push(format!("{} ({}): no value", e.metric, e.oid));
                continue;
            };
            let value = dcwatt_common::units::scaled(raw, e.scale);
            if let Some(why) = implausible(&e.metric, value, self.max_power_w) {
                problems.push(format!("rejected {why}"));
                continue;
            }
            let mut r = match e.kind {
                Kind::Gauge => Reading::gauge(
                    &e.metric,
                    dcwatt_common::units::scaled(raw, e.scale),
                    now_ms,
                ),
                Kind::Counter => Reading::counter(
                    &e.metric,
                    dcwatt_common::units::scaled(raw, e.scale),
                    now_ms,
                ),
            }
            .from_source(KIND);
            r.point = e
                .point
                .or(if matches!(e.metric.as_str(), "power_w" | "energy_j") {
                    self.cfg.point
                } else {
                    None
                });
            r.component.clone_from(&self.cfg.component);
            r.rack.clone_from(&self.cfg.rack);
            r.zone.clone_from(&self.cfg.zone);
            out.push(r);
        }
        let mut up = Reading::gauge(
            "device_up",
            f64::from(u8::from(self.session.is_some() && !out.is_empty())),
            now_ms,
        )
        .from_source(KIND);
        up.component.clone_from(&self.cfg.component);
        out.push(up);
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
            oids: vec![o(
                "1.3.6.1.4.1.13742.6.5.2.3.1.4.1.1.5",
                "power_w",
                false,
                Aggregate::Sum,
                0.1,
                Kind::Gauge,
                None,
            )],
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
            oids: vec![o(
                "not.an.oid",
                "x",
                false,
                Aggregate::Sum,
                1.0,
                Kind::Gauge,
                None,
            )],
            ..cfg
        }
        .validate("s", &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(paths, vec!["s.profile", "s.oids[0].oid"]);
        assert_eq!(parse_oid(".1.3.6.1"), Some(vec![1, 3, 6, 1]));
    }
}
