//! `dlt645`: revenue meters speaking DL/T 645-2007 (the multi-function watt-hour meter
//! protocol of China's grid companies), reached over TCP through a serial-to-Ethernet
//! converter in transparent mode, the usual wiring of an RS-485 meter bus in a plant.
//! One meter per `[[sources]]` entry, by its address (the 12 digits on its nameplate).
//!
//! A request is `68 A0..A5 68 C L DATA CS 16`: the address in BCD with its lowest byte
//! first, control code 0x11 (read data), the data identifier DI0..DI3 with 0x33 added to
//! every data byte, and a checksum that is the sum modulo 256 of every byte from the first
//! 0x68 through the data. Four 0xFE bytes ahead of it wake the meter's receiver. A meter
//! answers 0x91 with the identifier and the value in BCD (lowest byte first, 0x33 added),
//! or 0xD1 with an error byte. Every value passes the same plausibility checks as a
//! Modbus meter's before it is published.

use super::{implausible, Probe, Source, SourceError};
use dcwatt_common::protocol::{Point, Reading};
use dcwatt_common::settings::Problems;
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Source type name.
pub const KIND: &str = "dlt645";

/// (Current) forward active total energy, 正向有功总电能: XXXXXX.XX kWh, 4 bytes.
pub const DI_FORWARD_ACTIVE_ENERGY: u32 = 0x0001_0000;
/// (Current) combined active total energy, 组合有功总电能: XXXXXX.XX kWh, 4 bytes, the
/// top bit the sign.
pub const DI_COMBINED_ACTIVE_ENERGY: u32 = 0x0000_0000;
/// Instantaneous total active power, 瞬时总有功功率: XX.XXXX kW, 3 bytes, the top bit the
/// sign (the direction of flow).
pub const DI_ACTIVE_POWER: u32 = 0x0203_0000;

/// Control code: read data (master to meter).
const READ: u8 = 0x11;
/// A normal answer to a read.
const READ_ANSWER: u8 = 0x91;
/// A normal answer with follow-up frames.
const READ_ANSWER_MORE: u8 = 0xB1;
/// An error answer to a read.
const READ_ERROR: u8 = 0xD1;
/// The largest frame a meter can send: 12 bytes of frame around at most 200 of data.
const MAX_FRAME: usize = 12 + 200;
/// Bytes the agent reads past a frame's start before giving up on line noise.
const MAX_NOISE: usize = 64;
/// Where a 6-digit kWh register (XXXXXX.XX) rolls over, in J: 1,000,000 kWh.
const ENERGY_WRAP_J: f64 = 1e6 * 3.6e6;

/// The energy register that feeds `energy_j`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyRegister {
    /// Forward (imported) active energy: what a consumer's meter counts.
    #[default]
    ForwardActive,
    /// Combined active energy, as the meter's combination word defines it.
    CombinedActive,
}

/// `[[sources]] type = "dlt645"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dlt645Config {
    /// The serial-to-Ethernet converter.
    pub host: String,
    /// Its TCP port (converters differ: 4001, 8899, 26, …; no default).
    pub port: u16,
    /// The meter's address, the 12 digits on its nameplate (fewer are padded with leading
    /// zeros); `AAAAAAAAAAAA` asks whichever meter is alone on the bus.
    pub address: String,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Measurement point of the power and energy this meter reads.
    pub point: Option<Point>,
    /// Component label (the device's name), e.g. `main-incomer`.
    #[serde(default = "super::default_component")]
    pub component: String,
    /// Rack the meter belongs to.
    pub rack: Option<String>,
    /// Zone, room or row the meter serves.
    pub zone: Option<String>,
    /// The energy register: `forward_active` (default) or `combined_active`.
    #[serde(default)]
    pub energy: EnergyRegister,
    /// The meter's multiplier (倍率): CT ratio × VT ratio for a meter behind current or
    /// voltage transformers that reports secondary values (200/5 A CTs: 40). Default 1.
    #[serde(default = "one")]
    pub ratio: f64,
    /// Largest plausible power of this meter, W (after `ratio`).
    #[serde(default = "default_max_power")]
    pub max_power_w: f64,
    /// Send the four 0xFE wake-up bytes before each request (default true).
    #[serde(default = "yes")]
    pub wake_up: bool,
    /// Own interval, a multiple of the agent's.
    pub interval_secs: Option<u64>,
}

fn default_timeout() -> u64 {
    3
}
fn default_max_power() -> f64 {
    50e6
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

/// A meter address as it goes on the wire: BCD, lowest byte first.
///
/// # Errors
/// Not 1 to 12 decimal digits nor the broadcast `AAAAAAAAAAAA`.
pub fn parse_address(s: &str) -> Result<[u8; 6], String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("aaaaaaaaaaaa") {
        return Ok([0xAA; 6]);
    }
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a meter address: 1 to 12 digits (the nameplate's), or AAAAAAAAAAAA"
        ));
    }
    let digits: Vec<u8> = format!("{s:0>12}").bytes().map(|b| b - b'0').collect();
    let mut out = [0u8; 6];
    for (i, pair) in digits.chunks(2).enumerate() {
        // The nameplate's first two digits are the highest byte, sent last.
        out[5 - i] = (pair[0] << 4) | pair[1];
    }
    Ok(out)
}

/// A read-data request for `di` to the meter at `address`.
pub fn read_request(address: [u8; 6], di: u32, wake_up: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(20);
    if wake_up {
        f.extend([0xFE; 4]);
    }
    let start = f.len();
    f.push(0x68);
    f.extend(address);
    f.push(0x68);
    f.push(READ);
    f.push(4);
    f.extend(di.to_le_bytes().map(|b| b.wrapping_add(0x33)));
    let cs = checksum(&f[start..]);
    f.push(cs);
    f.push(0x16);
    f
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// A frame from a meter, its data with the 0x33 offset taken off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The meter's address, as on the wire.
    pub address: [u8; 6],
    /// Control code.
    pub control: u8,
    /// Data.
    pub data: Vec<u8>,
}

/// The first whole frame in `buf` (wake-up bytes and line noise ahead of it skipped), or
/// `None` while it is incomplete.
///
/// # Errors
/// A frame that is not one: no second 0x68, a wrong checksum, no 0x16 at its end, or
/// nothing but noise.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Frame>, String> {
    let Some(i) = buf.iter().position(|&b| b == 0x68) else {
        if buf.len() > MAX_NOISE {
            return Err(format!("{} bytes without a frame", buf.len()));
        }
        return Ok(None);
    };
    let f = &buf[i..];
    if f.len() < 10 {
        return Ok(None);
    }
    if f[7] != 0x68 {
        return Err(format!("byte 7 of the frame is 0x{:02X}, not 0x68", f[7]));
    }
    let len = usize::from(f[9]);
    if f.len() < 12 + len {
        return Ok(None);
    }
    let want = checksum(&f[..10 + len]);
    if f[10 + len] != want {
        return Err(format!(
            "checksum 0x{:02X}, the frame sums to 0x{want:02X}",
            f[10 + len]
        ));
    }
    if f[11 + len] != 0x16 {
        return Err(format!("frame ends with 0x{:02X}, not 0x16", f[11 + len]));
    }
    let mut address = [0u8; 6];
    address.copy_from_slice(&f[1..7]);
    Ok(Some(Frame {
        address,
        control: f[8],
        data: f[10..10 + len]
            .iter()
            .map(|b| b.wrapping_sub(0x33))
            .collect(),
    }))
}

/// The value bytes of a meter's answer to a read of `di` from `asked`.
///
/// # Errors
/// Another meter answered, the meter reported an error (with its meaning), or the answer
/// is for another identifier.
pub fn answer_value(frame: &Frame, asked: [u8; 6], di: u32) -> Result<Vec<u8>, String> {
    if asked != [0xAA; 6] && frame.address != asked {
        return Err(format!(
            "meter {} answered a request to {}",
            show_address(frame.address),
            show_address(asked)
        ));
    }
    match frame.control {
        READ_ANSWER | READ_ANSWER_MORE => {
            let di_bytes = di.to_le_bytes();
            if frame.data.len() < 4 || frame.data[..4] != di_bytes {
                return Err(format!("the answer is not for identifier {di:08X}"));
            }
            Ok(frame.data[4..].to_vec())
        }
        READ_ERROR => {
            let err = frame.data.first().copied().unwrap_or(0);
            Err(format!("the meter refused: {}", error_meaning(err)))
        }
        c => Err(format!("control code 0x{c:02X} is not an answer to a read")),
    }
}

/// The meaning of a meter's error byte (DL/T 645-2007 error word).
fn error_meaning(err: u8) -> String {
    let names = [
        "other error",
        "no such data (无请求数据)",
        "wrong password or not authorised",
        "baud rate cannot be changed",
        "too many annual time zones",
        "too many daily periods",
        "too many tariffs",
    ];
    let set: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(bit, _)| err & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        format!("error byte 0x{err:02X}")
    } else {
        format!("{} (error byte 0x{err:02X})", set.join(", "))
    }
}

/// The nameplate form of a wire address.
pub fn show_address(a: [u8; 6]) -> String {
    a.iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// A BCD value, lowest byte first, with `decimals` implied decimals; with `signed`, the
/// top bit of the highest byte is the sign.
///
/// # Errors
/// A nibble above 9 (not BCD: a wrong identifier or a damaged meter).
pub fn bcd(bytes: &[u8], decimals: i32, signed: bool) -> Result<f64, String> {
    let mut n: u64 = 0;
    let mut negative = false;
    for (i, &b) in bytes.iter().enumerate().rev() {
        let mut b = b;
        if signed && i == bytes.len() - 1 {
            negative = b & 0x80 != 0;
            b &= 0x7F;
        }
        let (hi, lo) = (b >> 4, b & 0x0F);
        if hi > 9 || lo > 9 {
            return Err(format!("0x{b:02X} is not BCD"));
        }
        n = n * 100 + u64::from(hi * 10 + lo);
    }
    let v = n as f64 / 10f64.powi(decimals);
    Ok(if negative { -v } else { v })
}

impl Dlt645Config {
    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, p: &mut Problems) {
        if let Err(e) = parse_address(&self.address) {
            p.push(format!("{path}.address"), e);
        }
        if self.host.trim().is_empty() {
            p.push(format!("{path}.host"), "must not be empty");
        }
        if self.port == 0 {
            p.push(
                format!("{path}.port"),
                "set the converter's TCP port (e.g. 4001, 8899)",
            );
        }
        if !(1..=60).contains(&self.timeout_secs) {
            p.push(format!("{path}.timeout_secs"), "must be 1..=60");
        }
        if let Err(e) = dcwatt_common::protocol::validate_id(&self.component) {
            p.push(format!("{path}.component"), e.to_string());
        }
        if self.point == Some(Point::WaterInput) {
            p.push(
                format!("{path}.point"),
                "a DL/T 645 meter counts electricity: it cannot be at water_input",
            );
        }
        if !(self.ratio.is_finite() && self.ratio > 0.0 && self.ratio <= 1e6) {
            p.push(
                format!("{path}.ratio"),
                "must be a positive multiplier up to 1e6 (CT ratio × VT ratio)",
            );
        }
        if !(self.max_power_w.is_finite() && self.max_power_w > 0.0) {
            p.push(format!("{path}.max_power_w"), "must be a positive number");
        }
    }
}

/// One meter.
pub struct Dlt645Source {
    cfg: Dlt645Config,
    address: [u8; 6],
    addr: Option<SocketAddr>,
    conn: Option<TcpStream>,
}

impl Dlt645Source {
    /// Parses the address and resolves the converter; connects on the first read.
    ///
    /// # Errors
    /// The meter address is not one.
    pub fn new(cfg: Dlt645Config) -> Result<Self, SourceError> {
        let address = parse_address(&cfg.address).map_err(SourceError::Unavailable)?;
        let addr = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        Ok(Dlt645Source {
            cfg,
            address,
            addr,
            conn: None,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs.max(1))
    }

    fn connect(&mut self) -> Result<&mut TcpStream, SourceError> {
        if self.conn.is_none() {
            let addr = self
                .addr
                .ok_or_else(|| SourceError::Read(format!("{} does not resolve", self.cfg.host)))?;
            let s = TcpStream::connect_timeout(&addr, self.timeout())
                .map_err(|e| SourceError::Read(format!("{addr}: {e}")))?;
            let _ = s.set_nodelay(true);
            self.conn = Some(s);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SourceError::Read("no connection".into()))
    }

    /// Reads one identifier's value bytes. Any failure drops the connection, so that a
    /// late answer cannot be taken for the next request's.
    fn read_di(&mut self, di: u32) -> Result<Vec<u8>, String> {
        let result = self.exchange(di);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self, di: u32) -> Result<Vec<u8>, String> {
        let request = read_request(self.address, di, self.cfg.wake_up);
        let timeout = self.timeout();
        let asked = self.address;
        let s = self.connect().map_err(|e| e.detail().to_owned())?;
        s.write_all(&request).map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no answer within {} s (a wrong address or baud rate, or the meter is off the bus)",
                    timeout.as_secs()
                ));
            }
            s.set_read_timeout(Some(left))
                .map_err(|e| format!("socket: {e}"))?;
            let n = match s.read(&mut chunk) {
                Ok(0) => return Err("the converter closed the connection".into()),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(format!("receive: {e}")),
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(frame) = parse_frame(&buf)? {
                return answer_value(&frame, asked, di);
            }
            if buf.len() > MAX_FRAME + MAX_NOISE {
                return Err(format!("{} bytes without a whole frame", buf.len()));
            }
        }
    }

    fn reading(&self, metric: &str, value: f64, now_ms: i64, counter: bool) -> Reading {
        let mut r = if counter {
            Reading::counter(metric, value, now_ms)
        } else {
            Reading::gauge(metric, value, now_ms)
        }
        .from_source(KIND);
        if metric == "power_w" || metric == "energy_j" {
            r.point = self.cfg.point;
        }
        if counter {
            r.wraps_at = Some(ENERGY_WRAP_J * self.cfg.ratio);
        }
        r.component = self.cfg.component.as_str().into();
        r.rack.clone_from(&self.cfg.rack);
        r.zone.clone_from(&self.cfg.zone);
        r
    }
}

impl Source for Dlt645Source {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn read(&mut self, now_ms: i64, out: &mut Vec<Reading>) -> Result<(), SourceError> {
        let (energy_di, signed) = match self.cfg.energy {
            EnergyRegister::ForwardActive => (DI_FORWARD_ACTIVE_ENERGY, false),
            EnergyRegister::CombinedActive => (DI_COMBINED_ACTIVE_ENERGY, true),
        };
        // (identifier, metric, value bytes, decimals, signed, to SI, counter)
        let registers = [
            (energy_di, "energy_j", 4, 2, signed, 3.6e6, true),
            (DI_ACTIVE_POWER, "power_w", 3, 4, true, 1000.0, false),
        ];
        let mut problems = Vec::new();
        let mut answered = false;
        for (di, metric, len, decimals, signed, si, counter) in registers {
            let value = self.read_di(di).and_then(|bytes| {
                answered = true;
                if bytes.len() < len {
                    return Err(format!("{} value bytes, {len} expected", bytes.len()));
                }
                bcd(&bytes[..len], decimals, signed)
            });
            match value {
                Ok(v) => {
                    let v = v * si * self.cfg.ratio;
                    if let Some(why) = implausible(metric, v, self.cfg.max_power_w) {
                        problems.push(format!("rejected {why}"));
                        continue;
                    }
                    out.push(self.reading(metric, v, now_ms, counter));
                }
                Err(e) => {
                    problems.push(format!("{metric} ({di:08X}): {e}"));
                    if self.conn.is_none() && !answered {
                        break; // the meter or converter is gone; try again next interval
                    }
                }
            }
        }
        let up = self.reading("device_up", f64::from(u8::from(answered)), now_ms, false);
        out.push(up);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Read(format!(
                "{} (meter {} via {}:{}): {}",
                self.cfg.component,
                show_address(self.address),
                self.cfg.host,
                self.cfg.port,
                problems.join("; ")
            )))
        }
    }
}

/// DL/T 645 needs a configured meter.
pub fn probe() -> Probe {
    Probe {
        kind: KIND,
        available: false,
        detail: "not configured: set host, port and the meter's address".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_request_is_framed_as_the_standard_defines() {
        // Meter 123456789012, forward active total energy (DI 00 01 00 00).
        let a = parse_address("123456789012").expect("address");
        assert_eq!(a, [0x12, 0x90, 0x78, 0x56, 0x34, 0x12]);
        let f = read_request(a, DI_FORWARD_ACTIVE_ENERGY, true);
        // 68+12+90+78+56+34+12+68+11+04+33+33+34+33 = 0x368: checksum 0x68.
        let want = [
            0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x12, 0x90, 0x78, 0x56, 0x34, 0x12, 0x68, 0x11, 0x04,
            0x33, 0x33, 0x34, 0x33, 0x68, 0x16,
        ];
        assert_eq!(f, want);
        assert_eq!(
            parse_address("5678").expect("short"),
            [0x78, 0x56, 0, 0, 0, 0]
        );
        assert_eq!(parse_address("aaaaaaaaaaaa").expect("broadcast"), [0xAA; 6]);
        for bad in ["", "1234567890123", "12345678901x"] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }

    /// A meter's answer: 68 addr 68 C L (DI + value) + 0x33, CS, 16.
    fn answer(address: [u8; 6], control: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0xFE, 0xFE, 0x68];
        f.extend(address);
        f.push(0x68);
        f.push(control);
        f.push(data.len() as u8);
        f.extend(data.iter().map(|b| b.wrapping_add(0x33)));
        let cs = checksum(&f[2..]);
        f.extend([cs, 0x16]);
        f
    }

    #[test]
    fn an_answer_gives_its_bcd_value() {
        let a = parse_address("123456789012").expect("address");
        // 123456.78 kWh: BCD 12 34 56 78, lowest byte first.
        let f = answer(a, 0x91, &[0x00, 0x00, 0x01, 0x00, 0x78, 0x56, 0x34, 0x12]);
        let frame = parse_frame(&f).expect("frame").expect("whole");
        let v = answer_value(&frame, a, DI_FORWARD_ACTIVE_ENERGY).expect("value");
        assert_eq!(bcd(&v, 2, false), Ok(123_456.78));
        // A partial frame waits for the rest; every prefix is incomplete, not an error.
        for n in 0..f.len() {
            assert_eq!(parse_frame(&f[..n]), Ok(None), "{n} bytes");
        }
        // −1.2345 kW (power flowing back): the top bit of the highest byte.
        assert_eq!(bcd(&[0x45, 0x23, 0x81], 4, true), Ok(-1.2345));
        assert!(bcd(&[0x4A, 0x23, 0x01], 4, true).is_err(), "not BCD");
    }

    #[test]
    fn damaged_and_foreign_answers_are_refused_with_their_reason() {
        let a = parse_address("123456789012").expect("address");
        let mut f = answer(a, 0x91, &[0x00, 0x00, 0x01, 0x00, 0x78, 0x56, 0x34, 0x12]);
        let cs = f.len() - 2;
        f[cs] = f[cs].wrapping_add(1);
        assert!(parse_frame(&f).is_err_and(|e| e.contains("checksum")));
        let other = parse_address("1").expect("address");
        let f = answer(other, 0x91, &[0x00, 0x00, 0x01, 0x00, 0, 0, 0, 0]);
        let frame = parse_frame(&f).expect("frame").expect("whole");
        let e = answer_value(&frame, a, DI_FORWARD_ACTIVE_ENERGY);
        assert!(e.is_err_and(|e| e.contains("000000000001 answered")));
        // No such data: error byte bit 1.
        let f = answer(a, 0xD1, &[0x02]);
        let frame = parse_frame(&f).expect("frame").expect("whole");
        let e = answer_value(&frame, a, DI_ACTIVE_POWER);
        assert!(e.is_err_and(|e| e.contains("no such data")));
        // An answer for another identifier.
        let f = answer(a, 0x91, &[0x00, 0x00, 0x03, 0x02, 0, 0, 0]);
        let frame = parse_frame(&f).expect("frame").expect("whole");
        assert!(answer_value(&frame, a, DI_FORWARD_ACTIVE_ENERGY).is_err());
        assert!(parse_frame(&[0u8; 100]).is_err(), "noise");
    }

    #[test]
    fn a_configuration_names_every_problem_at_its_path() {
        let toml = "[[sources]]\ntype = \"dlt645\"\nhost = \"\"\nport = 0\naddress = \"12-34\"\nratio = 0.0\npoint = \"water_input\"\n";
        let l = dcwatt_common::settings::Loader::from_toml(toml).expect("toml");
        let mut p = Problems::default();
        let sources: Vec<super::super::SourceConfig> =
            l.get_opt("sources", &mut p).expect("sources");
        let Some(super::super::SourceConfig::Dlt645(c)) = sources.into_iter().next() else {
            panic!("not a dlt645 entry: {p}");
        };
        c.validate("s", &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        for want in ["s.address", "s.host", "s.port", "s.ratio", "s.point"] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
    }
}
