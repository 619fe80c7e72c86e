//! `modbus`: power meters over Modbus TCP (tokio-modbus), one device per `[[sources]]`
//! entry, read through a register map.
//!
//! A register map entry says where a value is (0-based address on the wire, holding or
//! input registers), how it is encoded (u16 … f64, word order ABCD/CDAB/BADC/DCBA) and how
//! to get SI units (`scale`: 1000 for kW → W, 3.6e6 for kWh → J, 3600 for Wh → J). Built-in
//! profiles (`sdm630`, `pm5xxx`) are overridable entry by entry. Every value passes a
//! plausibility check before it is published, so a wrong word order or scale in the
//! configuration shows up as a rejection with its reason, not as an absurd PUE. A device
//! that stops answering publishes `device_up = 0` and a log line; the others keep polling.

use super::{implausible, Probe, Source, SourceError};
use dcwatt_common::protocol::{is_meter_counter, Kind, Point, Reading};
use dcwatt_common::settings::Problems;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio_modbus::client::sync::{tcp, Context, Reader};
use tokio_modbus::Slave;

/// Source type name.
pub const KIND: &str = "modbus";

/// Which register table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Function 0x03.
    Holding,
    /// Function 0x04.
    #[default]
    Input,
}

/// How a value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegType {
    /// One register, unsigned.
    U16,
    /// One register, signed.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, signed.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, signed.
    I64,
    /// Two registers, IEEE-754 single.
    F32,
    /// Four registers, IEEE-754 double.
    F64,
}

impl RegType {
    /// Registers this type spans.
    pub fn registers(self) -> u16 {
        match self {
            RegType::U16 | RegType::I16 => 1,
            RegType::U32 | RegType::I32 | RegType::F32 => 2,
            RegType::U64 | RegType::I64 | RegType::F64 => 4,
        }
    }

    /// Where an unsigned integer register rolls over to zero (in raw units); `None` for
    /// floats, signed types and 64 bits (which do not wrap in a meter's lifetime).
    pub fn rollover(self) -> Option<f64> {
        match self {
            RegType::U16 => Some(65_536.0),
            RegType::U32 => Some(4_294_967_296.0),
            _ => None,
        }
    }
}

impl RegisterConfig {
    /// For an energy counter in an unsigned 16- or 32-bit register: the value (in SI
    /// units) at which the published counter wraps, so the collector unwraps it.
    pub fn wraps_at(&self) -> Option<f64> {
        (self.kind == Kind::Counter && self.scale > 0.0)
            .then(|| self.ty.rollover().map(|n| n * self.scale))
            .flatten()
    }
}

/// Byte and word order of multi-register values. A B C D are the value's bytes from most
/// to least significant (for 64-bit values the pattern extends to all four words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WordOrder {
    /// Big-endian: most significant word first (Modbus convention, Eastron, Schneider).
    #[default]
    Abcd,
    /// Words swapped (common on PLC gateways).
    Cdab,
    /// Bytes swapped within each word.
    Badc,
    /// Little-endian.
    Dcba,
}

/// One register map entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Metric name with its SI unit suffix (`power_w`, `energy_j`, `voltage_l1_v`, …).
    pub metric: String,
    /// 0-based address on the wire (manual register 30053 → 52; Schneider 3060 → 3059).
    pub address: u16,
    /// Holding or input registers.
    #[serde(default)]
    pub function: Function,
    /// Encoding.
    #[serde(rename = "type")]
    pub ty: RegType,
    /// Word order.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Multiplier to SI units.
    #[serde(default = "one")]
    pub scale: f64,
    /// The device's own unit, for the record (e.g. "kWh").
    pub unit: Option<String>,
    /// Gauge or counter (energy registers are counters).
    #[serde(default)]
    pub kind: Kind,
}

fn one() -> f64 {
    1.0
}

/// `[[sources]] type = "modbus"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Meter or gateway address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Measurement point of the power and energy this meter reads.
    pub point: Option<Point>,
    /// Component label (the device's name), e.g. `main-incomer`.
    #[serde(default = "super::default_component")]
    pub component: String,
    /// Rack the device belongs to (rack PDUs, in-rack meters).
    pub rack: Option<String>,
    /// Zone, room or row the device serves.
    pub zone: Option<String>,
    /// Built-in register map: `sdm630` or `pm5xxx`.
    pub profile: Option<String>,
    /// Word order for the profile's entries (e.g. CDAB behind a PLC gateway); explicit
    /// `registers` carry their own.
    pub word_order: Option<WordOrder>,
    /// Entries added to, or replacing (same metric) those of, the profile.
    #[serde(default)]
    pub registers: Vec<RegisterConfig>,
    /// Largest plausible power of this device, W (a wrong scale or word order lands far
    /// outside it).
    #[serde(default = "default_max_power")]
    pub max_power_w: f64,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

fn default_port() -> u16 {
    502
}
fn default_unit() -> u8 {
    1
}
fn default_timeout() -> u64 {
    3
}
fn default_max_power() -> f64 {
    50e6
}

fn entry(
    metric: &str,
    address: u16,
    function: Function,
    ty: RegType,
    scale: f64,
    unit: &str,
    kind: Kind,
) -> RegisterConfig {
    RegisterConfig {
        metric: metric.into(),
        address,
        function,
        ty,
        word_order: WordOrder::Abcd,
        scale,
        unit: Some(unit.into()),
        kind,
    }
}

/// A built-in profile's register map.
pub fn profile(name: &str) -> Option<Vec<RegisterConfig>> {
    use Function::{Holding, Input};
    use Kind::{Counter, Gauge};
    match name {
        // Eastron SDM630: input registers, float32 ABCD (register tables: 30001… → 0…).
        "sdm630" => Some(vec![
            entry("voltage_l1_v", 0, Input, RegType::F32, 1.0, "V", Gauge),
            entry("voltage_l2_v", 2, Input, RegType::F32, 1.0, "V", Gauge),
            entry("voltage_l3_v", 4, Input, RegType::F32, 1.0, "V", Gauge),
            entry("power_w", 52, Input, RegType::F32, 1.0, "W", Gauge),
            entry("energy_j", 72, Input, RegType::F32, 3.6e6, "kWh", Counter),
        ]),
        // Schneider PowerLogic PM5xxx: holding registers, 1-based in the manual.
        // Active power total at 3060 (address 3059) is derived from the per-phase layout
        // after 3054 and not confirmed by a primary source: verify it on commissioning
        // (the agent logs this at start-up).
        "pm5xxx" => Some(vec![
            entry("power_w", 3059, Holding, RegType::F32, 1000.0, "kW", Gauge),
            entry(
                "energy_j",
                3203,
                Holding,
                RegType::I64,
                3600.0,
                "Wh",
                Counter,
            ),
        ]),
        _ => None,
    }
}

impl ModbusConfig {
    /// The effective register map: the profile with the configured entries applied.
    pub fn register_map(&self) -> Vec<RegisterConfig> {
        let mut map = self
            .profile
            .as_deref()
            .and_then(profile)
            .unwrap_or_default();
        if let Some(order) = self.word_order {
            for m in &mut map {
                m.word_order = order;
            }
        }
        for r in &self.registers {
            match map.iter_mut().find(|m| m.metric == r.metric) {
                Some(m) => *m = r.clone(),
                None => map.push(r.clone()),
            }
        }
        map
    }

    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if let Some(name) = &self.profile {
            if profile(name).is_none() {
                p.push(
                    format!("{path}.profile"),
                    format!("unknown profile {name:?} (sdm630, pm5xxx)"),
                );
            }
        }
        if self.register_map().is_empty() {
            p.push(
                format!("{path}.registers"),
                "no registers: set a profile or list registers",
            );
        }
        if self.host.trim().is_empty() {
            p.push(format!("{path}.host"), "must not be empty");
        }
        if !(1..=60).contains(&self.timeout_secs) {
            p.push(format!("{path}.timeout_secs"), "must be 1..=60");
        }
        if let Err(e) = dcwatt_common::protocol::validate_id(&self.component) {
            p.push(format!("{path}.component"), e.to_string());
        }
        for (i, r) in self.registers.iter().enumerate() {
            if !r.scale.is_finite() || r.scale == 0.0 {
                p.push(
                    format!("{path}.registers[{i}].scale"),
                    "must be a finite, non-zero number",
                );
            }
            if is_meter_counter(&r.metric) && r.kind != Kind::Counter {
                p.push(
                    format!("{path}.registers[{i}].kind"),
                    format!("{} is a counter", r.metric),
                );
            }
        }
        // A water meter at water_input counts water_m3; an electricity or heat meter
        // elsewhere counts power_w and energy_j. Mixing them would turn m³ into kWh.
        for (i, r) in self.register_map().iter().enumerate() {
            if self.point.is_some_and(|pt| pt.mismatched(&r.metric)) {
                p.push(
                    format!("{path}.registers[{i}].metric"),
                    format!(
                        "{} does not belong at point {}: a water meter (point = \"water_input\") reads water_m3, other points power_w and energy_j",
                        r.metric,
                        self.point.map_or("none", Point::as_str)
                    ),
                );
            }
        }
    }
}

/// Decodes a value from its registers.
pub fn decode(regs: &[u16], ty: RegType, order: WordOrder) -> Option<f64> {
    let n = usize::from(ty.registers());
    if regs.len() < n {
        return None;
    }
    let mut words: Vec<u16> = regs[..n].to_vec();
    if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
        words.reverse();
    }
    if matches!(order, WordOrder::Badc | WordOrder::Dcba) {
        for w in &mut words {
            *w = w.swap_bytes();
        }
    }
    let raw = words
        .iter()
        .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
    Some(match ty {
        RegType::U16 => raw as u16 as f64,
        RegType::I16 => raw as u16 as i16 as f64,
        RegType::U32 => raw as u32 as f64,
        RegType::I32 => raw as u32 as i32 as f64,
        RegType::U64 => raw as f64,
        RegType::I64 => raw as i64 as f64,
        RegType::F32 => f64::from(f32::from_bits(raw as u32)),
        RegType::F64 => f64::from_bits(raw),
    })
}

/// One meter.
pub struct ModbusSource {
    cfg: ModbusConfig,
    map: Vec<RegisterConfig>,
    addr: Option<SocketAddr>,
    ctx: Option<Context>,
}

impl ModbusSource {
    /// Resolves the address; connects on the first read.
    ///
    /// # Errors
    /// The host does not resolve.
    pub fn new(cfg: ModbusConfig) -> Result<Self, SourceError> {
        let map = cfg.register_map();
        if cfg.profile.as_deref() == Some("pm5xxx")
            && !cfg.registers.iter().any(|r| r.metric == "power_w")
        {
            tracing::warn!(host = %cfg.host, "pm5xxx profile: power_w at address 3059 is not confirmed by a primary source; verify it against the meter's display");
        }
        let addr = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        Ok(ModbusSource {
            cfg,
            map,
            addr,
            ctx: None,
        })
    }

    fn connect(&mut self) -> Result<&mut Context, SourceError> {
        if self.ctx.is_none() {
            let addr = self
                .addr
                .ok_or_else(|| SourceError::Read(format!("{} does not resolve", self.cfg.host)))?;
            let timeout = Duration::from_secs(self.cfg.timeout_secs.max(1));
            let ctx = tcp::connect_slave_with_timeout(addr, Slave(self.cfg.unit_id), Some(timeout))
                .map_err(|e| SourceError::Read(format!("{addr}: {e}")))?;
            self.ctx = Some(ctx);
        }
        self.ctx
            .as_mut()
            .ok_or_else(|| SourceError::Read("no connection".into()))
    }

    fn read_entry(&mut self, r: &RegisterConfig) -> Result<f64, SourceError> {
        let ctx = self.connect()?;
        let n = r.ty.registers();
        let regs = match r.function {
            Function::Holding => ctx.read_holding_registers(r.address, n),
            Function::Input => ctx.read_input_registers(r.address, n),
        };
        let regs = match regs {
            Ok(Ok(v)) => v,
            Ok(Err(code)) => {
                return Err(SourceError::Read(format!(
                    "{} at {}: exception {code:?}",
                    r.metric, r.address
                )))
            }
            Err(e) => {
                // The connection is gone: reconnect on the next read.
                self.ctx = None;
                return Err(SourceError::Read(format!(
                    "{}:{}: {e}",
                    self.cfg.host, self.cfg.port
                )));
            }
        };
        let raw = decode(&regs, r.ty, r.word_order)
            .ok_or_else(|| SourceError::Read(format!("{}: short response", r.metric)))?;
        Ok(dcwatt_common::units::scaled(raw, r.scale))
    }
}

impl Source for ModbusSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let mut problems = Vec::new();
        let mut answered = false;
        for r in self.map.clone() {
            match self.read_entry(&r) {
                Ok(v) => {
                    answered = true;
                    if let Some(why) = implausible(&r.metric, v, self.cfg.max_power_w) {
                        problems.push(format!("rejected {why}"));
                        continue;
                    }
                    let mut reading = match r.kind {
                        Kind::Gauge => Reading::gauge(&r.metric, v, now_ms),
                        Kind::Counter => Reading::counter(&r.metric, v, now_ms),
                    }
                    .from_source(KIND);
                    // The meter's quantity carries its point: power and energy, or a
                    // water meter's cubic metres.
                    if r.metric == "power_w" || is_meter_counter(&r.metric) {
                        reading.point = self.cfg.point;
                    }
                    if is_meter_counter(&r.metric) {
                        reading.wraps_at = r.wraps_at();
                    }
                    reading.component = self.cfg.component.as_str().into();
                    reading.rack.clone_from(&self.cfg.rack);
                    reading.zone.clone_from(&self.cfg.zone);
                    out.push(reading);
                }
                Err(e) => {
                    problems.push(e.detail().to_owned());
                    if self.ctx.is_none() {
                        break; // the device is gone; try again next interval
                    }
                }
            }
        }
        let mut up =
            Reading::gauge("device_up", f64::from(u8::from(answered)), now_ms).from_source(KIND);
        up.component = self.cfg.component.as_str().into();
        out.push(up);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Read(format!(
                "{} ({}:{} unit {}): {}",
                self.cfg.component,
                self.cfg.host,
                self.cfg.port,
                self.cfg.unit_id,
                problems.join("; ")
            )))
        }
    }
}

/// Modbus needs a configured device.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: false,
        detail: "not configured: set host, unit_id and a profile (sdm630, pm5xxx) or registers"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_energy_registers_say_where_they_wrap() {
        let entry = |ty, kind| RegisterConfig {
            metric: "energy_j".into(),
            address: 0,
            function: Function::Holding,
            ty,
            word_order: WordOrder::Abcd,
            scale: 3_600.0, // Wh
            unit: Some("Wh".into()),
            kind,
        };
        assert_eq!(
            entry(RegType::U32, Kind::Counter).wraps_at(),
            Some(4_294_967_296.0 * 3_600.0)
        );
        assert_eq!(
            entry(RegType::U16, Kind::Counter).wraps_at(),
            Some(65_536.0 * 3_600.0)
        );
        assert_eq!(entry(RegType::F32, Kind::Counter).wraps_at(), None);
        assert_eq!(entry(RegType::U64, Kind::Counter).wraps_at(), None);
        assert_eq!(entry(RegType::U32, Kind::Gauge).wraps_at(), None);
    }

    fn words(bytes: &[u8]) -> Vec<u16> {
        bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn every_type_and_word_order() {
        let f = 12345.5f32.to_be_bytes(); // A B C D
        assert_eq!(
            decode(&words(&f), RegType::F32, WordOrder::Abcd),
            Some(12345.5)
        );
        assert_eq!(
            decode(
                &words(&[f[2], f[3], f[0], f[1]]),
                RegType::F32,
                WordOrder::Cdab
            ),
            Some(12345.5)
        );
        assert_eq!(
            decode(
                &words(&[f[1], f[0], f[3], f[2]]),
                RegType::F32,
                WordOrder::Badc
            ),
            Some(12345.5)
        );
        assert_eq!(
            decode(
                &words(&[f[3], f[2], f[1], f[0]]),
                RegType::F32,
                WordOrder::Dcba
            ),
            Some(12345.5)
        );
        let q = 123_456_789_012i64.to_be_bytes();
        assert_eq!(
            decode(&words(&q), RegType::I64, WordOrder::Abcd),
            Some(123_456_789_012.0)
        );
        let mut le = q;
        le.reverse();
        assert_eq!(
            decode(&words(&le), RegType::I64, WordOrder::Dcba),
            Some(123_456_789_012.0)
        );
        assert_eq!(decode(&[0xFFFF], RegType::I16, WordOrder::Abcd), Some(-1.0));
        assert_eq!(
            decode(&[0xFFFF], RegType::U16, WordOrder::Abcd),
            Some(65535.0)
        );
        assert_eq!(
            decode(&[0xFFFF, 0xFFFE], RegType::I32, WordOrder::Abcd),
            Some(-2.0)
        );
        assert_eq!(
            decode(&[0x0001, 0x0000], RegType::U32, WordOrder::Cdab),
            Some(1.0)
        );
        assert_eq!(
            decode(&words(&2.5f64.to_be_bytes()), RegType::F64, WordOrder::Abcd),
            Some(2.5)
        );
        assert_eq!(decode(&[1], RegType::F32, WordOrder::Abcd), None, "short");
    }

    #[test]
    fn a_wrong_word_order_is_implausible_not_absurd() {
        let f = 230.1f32.to_be_bytes();
        let wrong = decode(&words(&f), RegType::F32, WordOrder::Cdab).unwrap();
        assert!(
            implausible("voltage_l1_v", wrong, 50e6).is_some(),
            "{wrong}"
        );
        let p = 12345.5f32.to_be_bytes();
        let wrong = decode(&words(&p), RegType::F32, WordOrder::Cdab).unwrap();
        assert!(implausible("power_w", wrong, 1e6).is_some(), "{wrong}");
        assert!(implausible("power_w", -3.0, 1e6)
            .unwrap()
            .contains("negative"));
        assert!(implausible("frequency_hz", 5.0, 1e6).is_some());
        assert_eq!(implausible("power_w", 12345.5, 1e6), None);
    }

    #[test]
    fn profiles_are_overridable_entry_by_entry() {
        let cfg: ModbusConfig = toml_cfg(
            "host = \"m\"\nprofile = \"sdm630\"\n[[sources.registers]]\nmetric = \"power_w\"\naddress = 52\ntype = \"f32\"\nword_order = \"CDAB\"\n[[sources.registers]]\nmetric = \"frequency_hz\"\naddress = 70\ntype = \"f32\"\n",
        );
        let map = cfg.register_map();
        assert_eq!(map.len(), 6);
        assert_eq!(
            map.iter()
                .find(|r| r.metric == "power_w")
                .unwrap()
                .word_order,
            WordOrder::Cdab
        );
        assert!(map.iter().any(|r| r.metric == "frequency_hz"));
        let mut p = Problems::default();
        toml_cfg("host = \"m\"\nprofile = \"acme\"\n").validate("s", &mut p);
        assert_eq!(p.0[0].path, "s.profile");
    }

    #[test]
    fn a_water_meter_counts_cubic_metres_at_water_input_only() {
        // A 32-bit litre totaliser: scale 0.001 gives m³, and the register wraps at
        // 2³² L = 4,294,967.296 m³.
        let water = "host = \"m\"\npoint = \"water_input\"\n[[sources.registers]]\nmetric = \"water_m3\"\naddress = 0\ntype = \"u32\"\nscale = 0.001\nkind = \"counter\"\n";
        let cfg = toml_cfg(water);
        let mut p = Problems::default();
        cfg.validate("s", &mut p);
        assert!(p.0.is_empty(), "{p}");
        assert_eq!(cfg.register_map()[0].wraps_at(), Some(4_294_967.296));
        // Cubic metres at an electrical point, or kWh at the water point, are refused.
        let mut p = Problems::default();
        toml_cfg(&water.replace("water_input", "facility_input")).validate("s", &mut p);
        assert_eq!(p.0[0].path, "s.registers[0].metric", "{p}");
        let mut p = Problems::default();
        toml_cfg("host = \"m\"\npoint = \"water_input\"\nprofile = \"sdm630\"\n")
            .validate("s", &mut p);
        assert!(p.to_string().contains("power_w does not belong"), "{p}");
        let mut p = Problems::default();
        toml_cfg(&water.replace("kind = \"counter\"", "kind = \"gauge\"")).validate("s", &mut p);
        assert_eq!(p.0[0].path, "s.registers[0].kind", "{p}");
        assert!(implausible("water_m3", -1.0, 1e6).is_some());
    }

    /// A modbus source entry parsed the way the agent parses it.
    fn toml_cfg(entry: &str) -> ModbusConfig {
        let toml = format!("[[sources]]\ntype = \"modbus\"\n{entry}");
        let l = dcwatt_common::settings::Loader::from_toml(&toml).unwrap();
        let mut p = Problems::default();
        let sources: Vec<super::super::SourceConfig> = l.get_opt("sources", &mut p).unwrap();
        match sources.into_iter().next() {
            Some(super::super::SourceConfig::Modbus(c)) => c,
            _ => panic!("not a modbus entry: {p}"),
        }
    }
}
