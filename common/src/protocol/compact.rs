//! The compact encoding of a readings batch: the same v1 batch as the JSON payload, as
//! positional CBOR (RFC 8949) arrays instead of objects, so that decoding matches no field
//! names, parses no decimal numbers and scans no escapes. An agent opts in with
//! `encoding = "cbor"`; the collector tells the two apart by the first byte (a JSON payload
//! starts with `{` or white space, a compact one with a CBOR array head, optionally after
//! the self-described CBOR tag 55799). Specified in `docs/protocol.md`:
//!
//! ```text
//! batch   = [v, site, node, seq, sent_ms, readings, *later]
//! reading = [metric, value, ts_ms, ?kind, ?point, ?source, ?component, ?quality,
//!            ?rack, ?zone, ?avg_ms, ?wraps_at, *later]
//! ```
//!
//! An optional slot is `null` or left off the end; `kind`, `point` and `quality` are their
//! JSON wire names. Lengths are definite; integers and floats take any CBOR width (the
//! encoder here writes integers in their shortest form and every value as a 64-bit float,
//! so a value is carried exactly). Later protocol versions may only append slots, which a
//! v1 reader skips, as it skips unknown JSON fields.

use super::{DecodeError, Kind, Name, Point, Quality, Reading, ReadingsMessage, VERSION};

/// The self-described CBOR tag (55799) an encoder may put first.
const SELF_DESCRIBED: [u8; 3] = [0xD9, 0xD9, 0xF7];

/// Deepest nesting skipped in slots this version does not know.
const MAX_SKIP_DEPTH: usize = 16;

/// Whether a payload is in the compact encoding rather than JSON.
pub fn is_compact(payload: &[u8]) -> bool {
    let body = payload.strip_prefix(&SELF_DESCRIBED[..]).unwrap_or(payload);
    body.first().is_some_and(|b| b >> 5 == 4)
}

/// Encodes a batch in the compact encoding.
pub fn encode(m: &ReadingsMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + 40 * m.readings.len());
    head(&mut out, 4, 6);
    head(&mut out, 0, u64::from(m.v));
    text(&mut out, &m.site);
    text(&mut out, &m.node);
    head(&mut out, 0, m.seq);
    int(&mut out, m.sent_ms);
    head(&mut out, 4, m.readings.len() as u64);
    for r in &m.readings {
        reading(&mut out, r);
    }
    out
}

fn reading(out: &mut Vec<u8>, r: &Reading) {
    // Defaults are left out: a gauge, the whole system, measured.
    let kind = (r.kind == Kind::Counter).then_some("counter");
    let component = (r.component != "system").then_some(r.component.as_str());
    let quality = (r.quality == Quality::Estimated).then_some("estimated");
    let slots: [Slot<'_>; 9] = [
        kind.map(Slot::Text),
        r.point.map(|p| Slot::Text(p.as_str())),
        r.source.as_deref().map(Slot::Text),
        component.map(Slot::Text),
        quality.map(Slot::Text),
        r.rack.as_deref().map(Slot::Text),
        r.zone.as_deref().map(Slot::Text),
        r.avg_ms.map(Slot::Uint),
        r.wraps_at.map(Slot::Float),
    ]
    .map(|s| s.unwrap_or(Slot::Null));
    let used = slots
        .iter()
        .rposition(|s| !matches!(s, Slot::Null))
        .map_or(0, |i| i + 1);
    head(out, 4, 3 + used as u64);
    text(out, &r.metric);
    float(out, r.value);
    int(out, r.ts_ms);
    for s in &slots[..used] {
        match *s {
            Slot::Null => out.push(0xF6),
            Slot::Text(t) => text(out, t),
            Slot::Uint(u) => head(out, 0, u),
            Slot::Float(f) => float(out, f),
        }
    }
}

#[derive(Clone, Copy)]
enum Slot<'a> {
    Null,
    Text(&'a str),
    Uint(u64),
    Float(f64),
}

/// A data item's head: major type and argument, shortest form.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xFF => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xFFFF => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

fn int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        // -1 - n, without overflow at i64::MIN.
        head(out, 1, !(v as u64));
    } else {
        head(out, 0, v as u64);
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn float(out: &mut Vec<u8>, v: f64) {
    out.push(0xFB);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

/// Decodes a compact batch. Broken CBOR is `malformed_cbor`; CBOR of another shape is
/// `invalid_schema`; a version other than 1 is `unsupported_version`.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode(payload: &[u8]) -> Result<ReadingsMessage, DecodeError> {
    let body = payload.strip_prefix(&SELF_DESCRIBED[..]).unwrap_or(payload);
    let mut c = Cursor { b: body, i: 0 };
    let n = c.array("the batch")?;
    if n < 6 {
        return Err(schema(format!(
            "the batch has {n} elements; v, site, node, seq, sent_ms and readings are needed"
        )));
    }
    let v = c.uint("v")?;
    if v != u64::from(VERSION) {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    let site = c.text("site")?.to_owned();
    let node = c.text("node")?.to_owned();
    let seq = c.uint("seq")?;
    let sent_ms = c.int("sent_ms")?;
    let count = c.array("readings")?;
    // Every reading takes at least a byte, so a claimed length the payload cannot hold is
    // refused before anything is reserved for it.
    if count > c.left() {
        return Err(malformed(format!(
            "readings claims {count} elements in {} bytes",
            c.left()
        )));
    }
    let mut readings = Vec::with_capacity(count);
    for i in 0..count {
        readings.push(c.reading(i)?);
    }
    for _ in 6..n {
        c.skip(0)?;
    }
    if c.left() > 0 {
        return Err(malformed(format!("{} bytes after the batch", c.left())));
    }
    Ok(ReadingsMessage {
        v: VERSION,
        site,
        node,
        seq,
        sent_ms,
        readings,
    })
}

fn malformed(msg: String) -> DecodeError {
    DecodeError::MalformedCbor(msg)
}

fn schema(msg: String) -> DecodeError {
    DecodeError::InvalidCompact(msg)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.i
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(malformed(format!(
                "truncated at byte {}: {n} more bytes needed",
                self.i
            )));
        }
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        Ok(s)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The next head: (major type, additional information, argument). For major type 7
    /// the argument is the float's or simple value's raw bits.
    fn head(&mut self) -> Result<(u8, u8, u64), DecodeError> {
        let at = self.i;
        let first = self.take(1)?[0];
        let (major, info) = (first >> 5, first & 0x1F);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]])),
            26 => {
                let s = self.take(4)?;
                u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            }
            27 => {
                let s = self.take(8)?;
                u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
            }
            31 => {
                return Err(malformed(format!(
                "indefinite length at byte {at}: the compact encoding takes definite lengths only"
            )))
            }
            _ => {
                return Err(malformed(format!(
                    "reserved additional information {info} at byte {at}"
                )))
            }
        };
        Ok((major, info, arg))
    }

    fn array(&mut self, what: &str) -> Result<usize, DecodeError> {
        match self.head()? {
            (4, _, n) => usize::try_from(n).map_err(|_| malformed(format!("{what}: too long"))),
            (major, ..) => Err(schema(format!(
                "{what} must be an array, not {}",
                type_name(major)
            ))),
        }
    }

    fn uint(&mut self, what: &str) -> Result<u64, DecodeError> {
        match self.head()? {
            (0, _, n) => Ok(n),
            (major, ..) => Err(schema(format!(
                "{what} must be an unsigned integer, not {}",
                type_name(major)
            ))),
        }
    }

    fn int(&mut self, what: &str) -> Result<i64, DecodeError> {
        let out_of_range = || schema(format!("{what} is out of range"));
        match self.head()? {
            (0, _, n) => i64::try_from(n).map_err(|_| out_of_range()),
            (1, _, n) => i64::try_from(n).map(|n| -1 - n).map_err(|_| out_of_range()),
            (major, ..) => Err(schema(format!(
                "{what} must be an integer, not {}",
                type_name(major)
            ))),
        }
    }

    /// A number of any width, integer or float; NaN and infinities come through, for
    /// the intake to refuse with their own reason, as from JSON.
    fn number(&mut self, what: &str) -> Result<f64, DecodeError> {
        match self.head()? {
            (0, _, n) => Ok(n as f64),
            (1, _, n) => Ok(-1.0 - n as f64),
            (7, 25, bits) => Ok(half(bits as u16)),
            (7, 26, bits) => Ok(f64::from(f32::from_bits(bits as u32))),
            (7, 27, bits) => Ok(f64::from_bits(bits)),
            (major, ..) => Err(schema(format!(
                "{what} must be a number, not {}",
                type_name(major)
            ))),
        }
    }

    fn text(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let at = self.i;
        match self.head()? {
            (3, _, n) => {
                let n = usize::try_from(n).map_err(|_| malformed(format!("{what}: too long")))?;
                std::str::from_utf8(self.take(n)?)
                    .map_err(|_| malformed(format!("{what} at byte {at} is not UTF-8")))
            }
            (major, ..) => Err(schema(format!(
                "{what} must be a text string, not {}",
                type_name(major)
            ))),
        }
    }

    /// True (and consumed) when the next item is `null`, or `undefined`.
    fn null(&mut self) -> bool {
        let is_null = matches!(self.peek(), Some(0xF6 | 0xF7));
        self.i += usize::from(is_null);
        is_null
    }

    fn reading(&mut self, index: usize) -> Result<Reading, DecodeError> {
        let n = self.array("a reading")?;
        if n < 3 {
            return Err(schema(format!(
                "readings[{index}] has {n} elements; metric, value and ts_ms are needed"
            )));
        }
        let metric = Name::new(self.text("metric")?);
        let value = self.number("value")?;
        let ts_ms = self.int("ts_ms")?;
        let mut r = Reading::gauge("", value, ts_ms);
        r.metric = metric;
        for slot in 3..n {
            if slot > 11 {
                self.skip(0)?;
                continue;
            }
            if self.null() {
                continue;
            }
            match slot {
                3 => {
                    r.kind = match self.text("kind")? {
                        "gauge" => Kind::Gauge,
                        "counter" => Kind::Counter,
                        other => return Err(unknown(index, "kind", other)),
                    }
                }
                4 => {
                    let p = self.text("point")?;
                    r.point = Some(Point::from_name(p).ok_or_else(|| unknown(index, "point", p))?);
                }
                5 => r.source = Some(Name::new(self.text("source")?)),
                6 => r.component = Name::new(self.text("component")?),
                7 => {
                    r.quality = match self.text("quality")? {
                        "measured" => Quality::Measured,
                        "estimated" => Quality::Estimated,
                        other => return Err(unknown(index, "quality", other)),
                    }
                }
                8 => r.rack = Some(self.text("rack")?.to_owned()),
                9 => r.zone = Some(self.text("zone")?.to_owned()),
                10 => r.avg_ms = Some(self.uint("avg_ms")?),
                _ => r.wraps_at = Some(self.number("wraps_at")?),
            }
        }
        Ok(r)
    }

    /// Skips one data item of any kind (a slot a later version added).
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_SKIP_DEPTH {
            return Err(malformed(format!(
                "nested deeper than {MAX_SKIP_DEPTH} levels"
            )));
        }
        let (major, _, arg) = self.head()?;
        let n = usize::try_from(arg).unwrap_or(usize::MAX);
        match major {
            2 | 3 => {
                self.take(n)?;
            }
            4 | 5 => {
                let items = if major == 5 { n.saturating_mul(2) } else { n };
                if items > self.left() {
                    return Err(malformed(format!(
                        "an item claims {items} elements in {} bytes",
                        self.left()
                    )));
                }
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
            }
            6 => self.skip(depth + 1)?,
            _ => {}
        }
        Ok(())
    }
}

fn unknown(index: usize, field: &str, value: &str) -> DecodeError {
    schema(format!(
        "readings[{index}].{field}: unknown value {value:?}"
    ))
}

fn type_name(major: u8) -> &'static str {
    match major {
        0 | 1 => "an integer",
        2 => "a byte string",
        3 => "a text string",
        4 => "an array",
        5 => "a map",
        6 => "a tagged item",
        _ => "a simple value or float",
    }
}

/// An IEEE 754 half-precision float, widened exactly.
fn half(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1F);
    let frac = f64::from(bits & 0x3FF);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> ReadingsMessage {
        let mut full = Reading::counter("energy_j", 1.5e9, 1_800_000_000_000)
            .at(Point::UpsOutput)
            .from_source("modbus")
            .wrapping_at(4_294_967_295.0);
        full.component = Name::new("ups1");
        full.quality = Quality::Estimated;
        full.rack = Some("r07".into());
        full.zone = Some("hall-b".into());
        full.avg_ms = Some(60_000);
        ReadingsMessage {
            v: 1,
            site: "dc1".into(),
            node: "meter-1".into(),
            seq: 70_000,
            sent_ms: 1_800_000_000_123,
            readings: vec![
                Reading::gauge("power_w", 157.25, 1_800_000_000_000).at(Point::ItInput),
                Reading::gauge("temp_c", -3.0, -5),
                full,
            ],
        }
    }

    #[test]
    fn a_batch_survives_the_round_trip_exactly() {
        let m = batch();
        let bytes = encode(&m);
        assert!(is_compact(&bytes));
        assert_eq!(decode(&bytes).unwrap(), m);
        let mut tagged = SELF_DESCRIBED.to_vec();
        tagged.extend_from_slice(&bytes);
        assert!(is_compact(&tagged));
        assert_eq!(decode(&tagged).unwrap(), m);
        assert!(!is_compact(b"{\"v\":1}") && !is_compact(b" [") && !is_compact(b""));
    }

    #[test]
    fn the_documented_example_has_the_documented_size() {
        let m = ReadingsMessage {
            v: 1,
            site: "dc1".into(),
            node: "h-1".into(),
            seq: 7,
            sent_ms: 1_795_900_000_123,
            readings: vec![Reading::gauge("power_w", 412.5, 1_795_900_000_100).at(Point::ItInput)],
        };
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!((encode(&m).len(), json.len()), (58, 190));
    }

    #[test]
    fn the_layout_is_the_documented_one_byte_for_byte() {
        // [1, "s", "n", 2, 3, [["power_w", 1.5, 4, null, "it_input"]]], by hand from
        // RFC 8949: 0x86 array(6), 0x01, 0x61 "s", 0x61 "n", 0x02, 0x03, 0x81 array(1),
        // 0x85 array(5), 0x67 "power_w", 0xFB and 1.5 as a double, 0x04, then the kind
        // slot null (a gauge) and 0x68 "it_input".
        let m = ReadingsMessage {
            v: 1,
            site: "s".into(),
            node: "n".into(),
            seq: 2,
            sent_ms: 3,
            readings: vec![Reading::gauge("power_w", 1.5, 4).at(Point::ItInput)],
        };
        let mut want = vec![0x86, 0x01, 0x61, b's', 0x61, b'n', 0x02, 0x03, 0x81, 0x85];
        want.push(0x67);
        want.extend_from_slice(b"power_w");
        want.extend_from_slice(&[0xFB, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0, 0x04, 0xF6, 0x68]);
        want.extend_from_slice(b"it_input");
        assert_eq!(encode(&m), want);
    }

    #[test]
    fn other_encoders_widths_and_later_slots_are_read() {
        // A reading written by another CBOR encoder: value as a half float (1.5 =
        // 0x3E00), ts_ms as a negative integer, a 13th slot (a later version's map)
        // skipped, and a 7th batch element skipped.
        let mut p = vec![0x87, 0x01, 0x61, b's', 0x61, b'n', 0x02, 0x03, 0x81, 0x8D];
        p.extend_from_slice(&[0x67]);
        p.extend_from_slice(b"power_w");
        p.extend_from_slice(&[0xF9, 0x3E, 0x00, 0x20]); // 1.5, -1
        p.extend_from_slice(&[0xF6; 9]); // slots 3..=11 null
        p.extend_from_slice(&[0xA1, 0x61, b'x', 0x82, 0x01, 0xFA, 0x3F, 0x80, 0, 0]);
        p.extend_from_slice(&[0x63, b'n', b'e', b'w']);
        let m = decode(&p).unwrap();
        assert_eq!((m.readings[0].value, m.readings[0].ts_ms), (1.5, -1));
        assert_eq!(m.readings[0].component, "system");
        assert_eq!(half(0x7C00), f64::INFINITY);
        assert!(half(0x7E00).is_nan());
        assert_eq!(half(0x0001), 2f64.powi(-24));
    }

    #[test]
    fn broken_and_misshapen_payloads_get_their_reason() {
        let good = encode(&batch());
        let reason = |p: &[u8]| decode(p).unwrap_err().reason();
        assert_eq!(reason(&good[..good.len() - 1]), "malformed_cbor");
        assert_eq!(reason(&[good.as_slice(), &[0]].concat()), "malformed_cbor");
        assert_eq!(reason(&[0x9F]), "malformed_cbor", "indefinite length");
        assert_eq!(reason(&[0x86, 0x02]), "unsupported_version");
        assert_eq!(reason(&[0x82, 0x01, 0x00]), "invalid_schema");
        // A length no payload could hold reserves nothing.
        let huge = [
            0x86, 0x01, 0x61, b's', 0x61, b'n', 0x02, 0x03, 0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0xFF, 0xFF, 0xFF,
        ];
        assert_eq!(reason(&huge), "malformed_cbor");
        // An unknown point is a schema error, as in JSON.
        let mut m = encode(&ReadingsMessage {
            readings: vec![Reading::gauge("power_w", 1.0, 1).at(Point::ItInput)],
            ..batch()
        });
        let at = m.windows(8).position(|w| w == b"it_input").unwrap();
        m[at..at + 8].copy_from_slice(b"it_inpuX");
        assert_eq!(reason(&m), "invalid_schema");
        // Nesting deeper than a later slot could need is refused, not recursed into.
        let mut deep = vec![0x87, 0x01, 0x61, b's', 0x61, b'n', 0x02, 0x03, 0x80];
        deep.extend_from_slice(&[0x81; 40]);
        deep.push(0x00);
        assert_eq!(reason(&deep), "malformed_cbor");
    }
}
