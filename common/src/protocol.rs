//! Wire protocol v1: topics, payloads and identifiers (documented in `docs/protocol.md`).
//!
//! This is a public contract. Fields may only be added, and only as optional ones; a v1
//! reader ignores fields it does not know, so older collectors keep working with newer
//! agents.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

pub mod compact;

/// The protocol version carried in every payload's `v` field.
pub const VERSION: u32 = 1;

/// First two topic levels of every dcwatt topic.
pub const TOPIC_ROOT: &str = "dcwatt/v1";

/// Largest payload the collector accepts; an agent batch is far below it.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Why an identifier (site, node, rack, zone) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty string.
    #[error("must not be empty")]
    Empty,
    /// Longer than 64 characters.
    #[error("is {0} characters long; at most 64 are allowed")]
    TooLong(usize),
    /// A character outside `[A-Za-z0-9_.-]`.
    #[error("contains {0:?}; only letters, digits, '_', '.' and '-' are allowed")]
    BadChar(char),
    /// `.` or `..`: path segments (spool directories, URLs), never names.
    #[error("is {0:?}, a path segment, not a name")]
    Dots(&'static str),
}

/// Checks an identifier against `[A-Za-z0-9_.-]{1,64}`, other than `.` and `..`.
///
/// # Errors
/// Returns what is wrong with it.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    match id {
        "." => return Err(IdError::Dots(".")),
        ".." => return Err(IdError::Dots("..")),
        _ => {}
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(IdError::BadChar(c));
    }
    if id.len() > 64 {
        return Err(IdError::TooLong(id.len()));
    }
    Ok(())
}

/// The topic an agent publishes readings batches on.
pub fn readings_topic(site: &str, node: &str) -> String {
    format!("{TOPIC_ROOT}/{site}/{node}/readings")
}

/// The retained topic carrying a node's birth (online + inventory) and last will (offline).
pub fn status_topic(site: &str, node: &str) -> String {
    format!("{TOPIC_ROOT}/{site}/{node}/status")
}

/// The subscription filter for all readings of one site, or of all sites with `"+"`.
pub fn readings_filter(site: &str) -> String {
    format!("{TOPIC_ROOT}/{site}/+/readings")
}

/// The subscription filter for all statuses of one site, or of all sites with `"+"`.
pub fn status_filter(site: &str) -> String {
    format!("{TOPIC_ROOT}/{site}/+/status")
}

/// What a node topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `dcwatt/v1/{site}/{node}/readings`
    Readings,
    /// `dcwatt/v1/{site}/{node}/status`
    Status,
}

/// A parsed node topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTopic<'a> {
    /// Site id from the topic.
    pub site: &'a str,
    /// Node id from the topic.
    pub node: &'a str,
    /// Readings or status.
    pub kind: TopicKind,
}

/// Why a topic is not a valid dcwatt node topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not under `dcwatt/v1/`, or the wrong number of levels, or an unknown last level.
    #[error("not a dcwatt v1 node topic (expected dcwatt/v1/{{site}}/{{node}}/readings|status)")]
    Shape,
    /// The site level is not a valid id.
    #[error("site id in topic {0}")]
    Site(IdError),
    /// The node level is not a valid id.
    #[error("node id in topic {0}")]
    Node(IdError),
}

/// Parses `dcwatt/v1/{site}/{node}/{readings|status}` and validates both ids.
///
/// # Errors
/// The topic has another shape or an invalid id.
pub fn parse_node_topic(topic: &str) -> Result<NodeTopic<'_>, TopicError> {
    let rest = topic
        .strip_prefix(TOPIC_ROOT)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(TopicError::Shape)?;
    let mut parts = rest.split('/');
    let (Some(site), Some(node), Some(last), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TopicError::Shape);
    };
    let kind = match last {
        "readings" => TopicKind::Readings,
        "status" => TopicKind::Status,
        _ => return Err(TopicError::Shape),
    };
    validate_id(site).map_err(TopicError::Site)?;
    validate_id(node).map_err(TopicError::Node)?;
    Ok(NodeTopic { site, node, kind })
}

/// Gauge (a value at an instant) or counter (a running total that only grows until it
/// wraps or resets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A value at an instant, e.g. `power_w`.
    #[default]
    Gauge,
    /// A running total, e.g. `energy_j`.
    Counter,
}

/// What a meter's counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// Electricity or heat: `energy_j` counters and `power_w` gauges, kept in joules.
    Energy,
    /// Water: `water_m3` counters, kept in litres (1 m³ = 1000 L).
    Water,
}

impl Quantity {
    /// Engine units per unit of the wire metric: joules per joule, litres per m³.
    pub fn scale(self) -> f64 {
        match self {
            Quantity::Energy => 1.0,
            Quantity::Water => 1000.0,
        }
    }
}

/// Whether `metric` is a meter's counter (`energy_j`, `water_m3`): it must be a counter,
/// and it is the one a known wrap range (`wraps_at`) may belong to.
pub fn is_meter_counter(metric: &str) -> bool {
    matches!(metric, "energy_j" | "water_m3")
}

/// Where in the power chain a meter measures. Decides what a reading counts towards in PUE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Point {
    /// Utility / data-centre boundary: the PUE numerator.
    FacilityInput,
    /// UPS input.
    UpsInput,
    /// UPS output: IT energy for PUE category 1.
    UpsOutput,
    /// PDU input.
    PduInput,
    /// PDU output: IT energy for PUE category 2.
    PduOutput,
    /// IT equipment input (host PSU input): IT energy for PUE category 3.
    ItInput,
    /// Cooling load.
    Cooling,
    /// Lighting load.
    Lighting,
    /// Any other overhead load.
    Other,
    /// Site water intake (a water meter's `water_m3` counter): the WUE numerator. Not
    /// electricity: never counted in PUE.
    WaterInput,
    /// On-site renewable generation used by the data centre (a PV or wind inverter's
    /// meter): the REF numerator. Part of what `facility_input` measures; never credited
    /// inside PUE.
    RenewableOnsite,
    /// Energy reused outside the data centre (a heat meter at the site boundary): the ERF
    /// numerator. Never credited inside PUE.
    EnergyReused,
}

impl Point {
    /// Every point, in a fixed order (used to index per-point state).
    pub const ALL: [Point; 12] = [
        Point::FacilityInput,
        Point::UpsInput,
        Point::UpsOutput,
        Point::PduInput,
        Point::PduOutput,
        Point::ItInput,
        Point::Cooling,
        Point::Lighting,
        Point::Other,
        Point::WaterInput,
        Point::RenewableOnsite,
        Point::EnergyReused,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Point::FacilityInput => "facility_input",
            Point::UpsInput => "ups_input",
            Point::UpsOutput => "ups_output",
            Point::PduInput => "pdu_input",
            Point::PduOutput => "pdu_output",
            Point::ItInput => "it_input",
            Point::Cooling => "cooling",
            Point::Lighting => "lighting",
            Point::Other => "other",
            Point::WaterInput => "water_input",
            Point::RenewableOnsite => "renewable_onsite",
            Point::EnergyReused => "energy_reused",
        }
    }

    /// The point with this wire name.
    pub fn from_name(name: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Position in [`Point::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The PUE category for which this point measures IT energy, if any.
    pub fn it_category(self) -> Option<u8> {
        match self {
            Point::UpsOutput => Some(1),
            Point::PduOutput => Some(2),
            Point::ItInput => Some(3),
            _ => None,
        }
    }

    /// What a meter at this point measures: the metric (and kind) its quantity comes
    /// from, and the unit the engine keeps it in.
    pub fn quantity(self) -> Quantity {
        match self {
            Point::WaterInput => Quantity::Water,
            _ => Quantity::Energy,
        }
    }

    /// How a reading at this point feeds its meter, if it does: `Some(true)` for its
    /// counter (`energy_j`, or `water_m3` at `water_input`), `Some(false)` for its gauge
    /// (`power_w`; a water meter has none), `None` for anything else (kept as a plain
    /// metric or refused by validation).
    pub fn stream(self, metric: &str, kind: Kind) -> Option<bool> {
        match (self.quantity(), metric, kind) {
            (Quantity::Energy, "energy_j", Kind::Counter) => Some(true),
            (Quantity::Energy, "power_w", Kind::Gauge) => Some(false),
            (Quantity::Water, "water_m3", Kind::Counter) => Some(true),
            _ => None,
        }
    }

    /// Whether `metric` is a meter's quantity that does not belong at this point: cubic
    /// metres anywhere but at a water meter, power or energy at one. Such a reading would
    /// turn m³ into kWh; it is refused (`metric_point_mismatch`), and an agent refuses to
    /// start with one configured.
    pub fn mismatched(self, metric: &str) -> bool {
        match metric {
            "water_m3" => self.quantity() != Quantity::Water,
            "power_w" | "energy_j" => self.quantity() == Quantity::Water,
            _ => false,
        }
    }

    /// The point that measures IT energy for a PUE category (1, 2 or 3).
    pub fn for_category(category: u8) -> Option<Point> {
        match category {
            1 => Some(Point::UpsOutput),
            2 => Some(Point::PduOutput),
            3 => Some(Point::ItInput),
            _ => None,
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a value was measured or estimated by a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Read from a sensor or meter.
    #[default]
    Measured,
    /// Computed by a model (e.g. from CPU utilization).
    Estimated,
}

/// A metric, component or source name as a reading carries it. Names up to 24 bytes (all
/// that dcwatt's sources produce) are held inline, so decoding a batch allocates nothing
/// per reading for them; it reads like a `&str`.
pub type Name = compact_str::CompactString;

fn default_component() -> Name {
    Name::const_new("system")
}

fn is_default_component(c: &str) -> bool {
    c == "system"
}

/// One value of one metric at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Metric name with its unit suffix, e.g. `power_w`, `energy_j`, `cpu_util`.
    pub metric: Name,
    /// The value in SI units (W, J, ratio 0..1, bytes, °C). Non-finite values are decoded
    /// (from the strings `"NaN"`, `"Infinity"`, `"-Infinity"`) so they can be refused with
    /// their own reason.
    #[serde(deserialize_with = "de_value")]
    pub value: f64,
    /// When the value was read, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Gauge or counter; gauge when absent.
    #[serde(default)]
    pub kind: Kind,
    /// Measurement point, for readings that count towards PUE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<Point>,
    /// The source that produced it: sim, sysinfo, rapl, hwmon, nvml, ipmi_dcmi, redfish,
    /// snmp, modbus, estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Name>,
    /// The part of the node measured: `system` (default), `cpu_package`, `gpu0`, `psu1`, …
    #[serde(
        default = "default_component",
        skip_serializing_if = "is_default_component"
    )]
    pub component: Name,
    /// Measured (default) or estimated.
    #[serde(default)]
    pub quality: Quality,
    /// Rack of the device measured, when it is not the node's own (a facility agent
    /// reading rack PDUs). Optional field added in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Zone of the device measured, when it is not the node's own. Optional field added
    /// in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// For a `power_w` gauge that is a mean rather than an instant value (a BMC's or a
    /// PDU's average): the length of the window it averages, ending at `ts_ms`, in ms.
    /// The collector then counts exactly `value × avg_ms` of energy over that window.
    /// Optional field added in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_ms: Option<u64>,
    /// For an `energy_j` counter that wraps at a known value (a meter's fixed-width
    /// register, in joules): that value. The collector then takes a fall from above 90 %
    /// of it for a wrap and counts `wraps_at − previous + current`; any other fall is a
    /// reset. Optional field added in v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wraps_at: Option<f64>,
}

impl Reading {
    /// A measured gauge reading of the whole system.
    pub fn gauge(metric: &str, value: f64, ts_ms: i64) -> Self {
        Reading {
            metric: Name::new(metric),
            value,
            ts_ms,
            kind: Kind::Gauge,
            point: None,
            source: None,
            component: default_component(),
            quality: Quality::Measured,
            rack: None,
            zone: None,
            avg_ms: None,
            wraps_at: None,
        }
    }

    /// A measured counter reading of the whole system.
    pub fn counter(metric: &str, value: f64, ts_ms: i64) -> Self {
        Reading {
            kind: Kind::Counter,
            ..Reading::gauge(metric, value, ts_ms)
        }
    }

    /// Sets the measurement point.
    pub fn at(mut self, point: Point) -> Self {
        self.point = Some(point);
        self
    }

    /// The value is the mean over the `avg_ms` before `ts_ms`.
    pub fn averaged_over(mut self, avg_ms: u64) -> Self {
        self.avg_ms = Some(avg_ms);
        self
    }

    /// The counter wraps to zero at `range` (joules).
    pub fn wrapping_at(mut self, range: f64) -> Self {
        self.wraps_at = Some(range);
        self
    }

    /// Sets the source name.
    pub fn from_source(mut self, source: &str) -> Self {
        self.source = Some(Name::new(source));
        self
    }
}

fn de_value<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" | "nan" => Ok(f64::NAN),
                "Infinity" | "inf" | "+Infinity" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(E::invalid_type(serde::de::Unexpected::Str(v), &self)),
            }
        }
    }
    d.deserialize_any(V)
}

/// One batch of readings from one node: the payload of `dcwatt/v1/{site}/{node}/readings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingsMessage {
    /// Protocol version, always 1.
    pub v: u32,
    /// Site id; must equal the topic's.
    pub site: String,
    /// Node id; must equal the topic's.
    pub node: String,
    /// Increases by one per batch from a node: for dedup and gap detection.
    pub seq: u64,
    /// When the batch was sent, ms since the Unix epoch.
    pub sent_ms: i64,
    /// The readings.
    #[serde(deserialize_with = "de_readings")]
    pub readings: Vec<Reading>,
}

/// The readings of a batch, into room for a typical batch from the start: JSON gives no
/// length ahead, and growing from serde's 4 moves every reading decoded so far each time.
fn de_readings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Reading>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<Reading>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of readings")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(32).min(1024));
            while let Some(r) = seq.next_element()? {
                v.push(r);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(V)
}

/// How an agent writes its readings batches: JSON (the default, readable with
/// `mosquitto_sub`) or the [`compact`] CBOR layout. The collector reads both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The JSON object of this module's types.
    #[default]
    Json,
    /// The positional CBOR arrays of [`compact`].
    Cbor,
}

impl ReadingsMessage {
    /// The batch as a payload in `encoding`.
    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            // Serializing these plain structs cannot fail; an empty payload would be
            // refused by the collector rather than crash the agent.
            Encoding::Json => serde_json::to_vec(self).unwrap_or_default(),
            Encoding::Cbor => compact::encode(self),
        }
    }
}

/// Online (birth) or offline (last will or clean shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Connected and publishing.
    Online,
    /// Gone: clean shutdown or last will.
    Offline,
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A server measuring itself.
    #[default]
    Host,
    /// An agent reading facility meters, UPSs or PDUs.
    Meter,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Meter => "meter",
        }
    }
}

/// A source an agent uses, as listed in its birth message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Source type: `sim`, `sysinfo`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Sample interval in ms.
    pub interval_ms: u64,
}

/// GPUs of one model in a node, as its birth lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInventory {
    /// Model name as the driver reports it, e.g. "NVIDIA H200".
    pub model: String,
    /// How many of this model the node has.
    pub count: u32,
    /// Peak dense FP16 Tensor TFLOPS of one GPU, when the model is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp16_tflops: Option<f64>,
}

/// Payload of the retained `dcwatt/v1/{site}/{node}/status` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// Protocol version, always 1.
    pub v: u32,
    /// Site id; must equal the topic's.
    pub site: String,
    /// Node id; must equal the topic's.
    pub node: String,
    /// Online or offline.
    pub state: State,
    /// When the state was set. For a last will this is when the agent connected, since the
    /// will is written at connect time; the collector uses the time it received it.
    pub ts_ms: i64,
    /// Host or meter (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Rack id (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// Zone, room or row (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Agent version (online only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Sources in use (online only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceInfo>,
    /// The agent's batch interval in ms (online only): tells the collector how long a
    /// silence is a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// GPUs by model (online only; optional field added in v1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuInventory>,
}

impl StatusMessage {
    /// The offline message an agent sets as its last will and publishes on clean shutdown.
    pub fn offline(site: &str, node: &str, ts_ms: i64) -> Self {
        StatusMessage {
            v: VERSION,
            site: site.to_owned(),
            node: node.to_owned(),
            state: State::Offline,
            ts_ms,
            role: None,
            rack: None,
            zone: None,
            agent: None,
            sources: Vec::new(),
            interval_ms: None,
            gpus: Vec::new(),
        }
    }
}

/// A payload that names its site and node (both must agree with its topic).
pub trait Addressed {
    /// Site id in the payload.
    fn site(&self) -> &str;
    /// Node id in the payload.
    fn node(&self) -> &str;
    /// Protocol version in the payload (`v`).
    fn version(&self) -> u32;
    /// Decodes a payload in the compact encoding ([`compact`]), which only readings
    /// batches have.
    ///
    /// # Errors
    /// See [`DecodeError`].
    fn decode_compact(payload: &[u8]) -> Result<Self, DecodeError>
    where
        Self: Sized,
    {
        let _ = payload;
        Err(DecodeError::InvalidCompact(
            "the compact encoding carries readings batches only; send this payload as JSON"
                .to_owned(),
        ))
    }
}

impl Addressed for ReadingsMessage {
    fn site(&self) -> &str {
        &self.site
    }
    fn node(&self) -> &str {
        &self.node
    }
    fn version(&self) -> u32 {
        self.v
    }
    fn decode_compact(payload: &[u8]) -> Result<Self, DecodeError> {
        compact::decode(payload)
    }
}

impl Addressed for StatusMessage {
    fn site(&self) -> &str {
        &self.site
    }
    fn node(&self) -> &str {
        &self.node
    }
    fn version(&self) -> u32 {
        self.v
    }
}

/// Why a payload could not be decoded. The variants are the reject reasons the collector
/// counts.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(serde_json::Error),
    /// JSON, but not the v1 shape (missing or mistyped field).
    #[error("invalid v1 payload: {0}")]
    InvalidSchema(serde_json::Error),
    /// `v` is not 1.
    #[error("unsupported protocol version {0} (this build speaks v1)")]
    UnsupportedVersion(u64),
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(usize),
    /// Starts like the compact encoding but is not well-formed CBOR (truncated, a
    /// reserved or indefinite length, text that is not UTF-8, bytes after the batch).
    #[error("malformed CBOR: {0}")]
    MalformedCbor(String),
    /// Well-formed CBOR, but not the compact v1 shape.
    #[error("invalid compact v1 payload: {0}")]
    InvalidCompact(String),
}

impl DecodeError {
    /// The reason label used in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::InvalidSchema(_) => "invalid_schema",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::TooLarge(_) => "payload_too_large",
            DecodeError::MalformedCbor(_) => "malformed_cbor",
            DecodeError::InvalidCompact(_) => "invalid_schema",
        }
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    v: Option<serde_json::Value>,
}

/// Decodes a payload of either kind, in JSON or (a readings batch) the compact encoding,
/// checking the size and version before the shape, so a v2 payload is reported as a
/// version problem rather than a schema one.
///
/// One pass over the payload when it is valid (the intake's hot path); only a payload that
/// fails is read a second time, for its version alone.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode<T: serde::de::DeserializeOwned + Addressed>(
    payload: &[u8],
) -> Result<T, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    if compact::is_compact(payload) {
        return T::decode_compact(payload);
    }
    // Checking UTF-8 once for the whole payload spares serde_json a check per string.
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err(not_utf8(payload));
    };
    let full: Result<T, _> = serde_json::from_str(text);
    if let Ok(m) = &full {
        if m.version() == VERSION {
            return full.map_err(classify);
        }
    }
    let version: VersionOnly = serde_json::from_str(text).map_err(classify)?;
    match version.v {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(serde_json::Value::Number(n)) => {
            return Err(DecodeError::UnsupportedVersion(n.as_u64().unwrap_or(0)))
        }
        _ => {
            // Missing or not a number: let the full decode name the field.
        }
    }
    full.map_err(classify)
}

/// The error for a payload that is not UTF-8, with serde_json's position of the bad byte.
fn not_utf8(payload: &[u8]) -> DecodeError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
        Err(e) => classify(e),
        Ok(_) => DecodeError::MalformedJson(serde::de::Error::custom("invalid UTF-8")),
    }
}

fn classify(e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => DecodeError::InvalidSchema(e),
        Category::Io | Category::Syntax | Category::Eof => DecodeError::MalformedJson(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("dc-1.hall_2").is_ok());
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(validate_id("a+"), Err(IdError::BadChar('+')));
        assert_eq!(validate_id("."), Err(IdError::Dots(".")));
        assert_eq!(validate_id(".."), Err(IdError::Dots("..")));
        assert!(validate_id("...").is_ok() && validate_id(".a").is_ok());
        assert_eq!(validate_id(&"x".repeat(65)), Err(IdError::TooLong(65)));
        assert!(validate_id(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn topics_round_trip() {
        let t = readings_topic("dc1", "h-7");
        assert_eq!(t, "dcwatt/v1/dc1/h-7/readings");
        let p = parse_node_topic(&t).unwrap();
        assert_eq!(
            (p.site, p.node, p.kind),
            ("dc1", "h-7", TopicKind::Readings)
        );
        let status = status_topic("dc1", "m");
        assert_eq!(parse_node_topic(&status).unwrap().kind, TopicKind::Status);
        assert_eq!(
            parse_node_topic("dcwatt/v1/dc1/readings"),
            Err(TopicError::Shape)
        );
        assert_eq!(
            parse_node_topic("dcwatt/v2/a/b/readings"),
            Err(TopicError::Shape)
        );
        assert_eq!(
            parse_node_topic("dcwatt/v1/a/b/c/readings"),
            Err(TopicError::Shape)
        );
        assert_eq!(
            parse_node_topic("dcwatt/v1/a/b/summary"),
            Err(TopicError::Shape)
        );
        assert!(matches!(
            parse_node_topic("dcwatt/v1/a b/n/status"),
            Err(TopicError::Site(_))
        ));
    }

    #[test]
    fn reading_defaults_and_wire_names() {
        let json = r#"{"v":1,"site":"s","node":"n","seq":3,"sent_ms":5,
            "readings":[{"metric":"power_w","value":350,"ts_ms":4,"point":"it_input"}],
            "future_field":true}"#;
        let m: ReadingsMessage = decode(json.as_bytes()).unwrap();
        let r = &m.readings[0];
        assert_eq!(r.kind, Kind::Gauge);
        assert_eq!(r.component, "system");
        assert_eq!(r.quality, Quality::Measured);
        assert_eq!(r.point, Some(Point::ItInput));
        assert_eq!(r.value, 350.0);
        let out = serde_json::to_string(&Reading::counter("energy_j", 1.5, 9).at(Point::UpsOutput))
            .unwrap();
        assert_eq!(
            out,
            r#"{"metric":"energy_j","value":1.5,"ts_ms":9,"kind":"counter","point":"ups_output","quality":"measured"}"#
        );
        for p in Point::ALL {
            let s = serde_json::to_string(&p).unwrap();
            assert_eq!(s, format!("\"{}\"", p.as_str()));
            assert_eq!(Point::ALL[p.index()], p);
        }
    }

    #[test]
    fn decode_errors_are_classified() {
        let r = |s: &str| {
            decode::<ReadingsMessage>(s.as_bytes())
                .unwrap_err()
                .reason()
        };
        assert_eq!(r("{not json"), "malformed_json");
        assert_eq!(r(r#"{"v":2,"site":"s"}"#), "unsupported_version");
        // A v2 payload that also parses as v1 is still refused for its version.
        assert_eq!(
            r(r#"{"v":2,"site":"s","node":"n","seq":1,"sent_ms":1,"readings":[]}"#),
            "unsupported_version"
        );
        let mut latin1 =
            br#"{"v":1,"site":"s","node":"n","seq":1,"sent_ms":1,"readings":[{"metric":"t"#
                .to_vec();
        latin1.extend_from_slice(b"\xe9\"}]}");
        assert_eq!(
            decode::<ReadingsMessage>(&latin1).unwrap_err().reason(),
            "malformed_json"
        );
        assert_eq!(r(r#"{"v":1,"site":"s","node":"n"}"#), "invalid_schema");
        assert_eq!(
            r(
                r#"{"v":1,"site":"s","node":"n","seq":1,"sent_ms":1,"readings":[{"metric":"power_w","value":"high","ts_ms":1}]}"#
            ),
            "invalid_schema"
        );
        assert_eq!(
            r(
                r#"{"v":1,"site":"s","node":"n","seq":1,"sent_ms":1,"readings":[{"metric":"power_w","value":1,"ts_ms":1,"point":"moon"}]}"#
            ),
            "invalid_schema"
        );
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            decode::<ReadingsMessage>(&big).unwrap_err().reason(),
            "payload_too_large"
        );
        let nan: ReadingsMessage = decode(br#"{"v":1,"site":"s","node":"n","seq":1,"sent_ms":1,"readings":[{"metric":"power_w","value":"NaN","ts_ms":1}]}"#).unwrap();
        assert!(nan.readings[0].value.is_nan());
    }

    #[test]
    fn status_offline_is_minimal() {
        let s = serde_json::to_string(&StatusMessage::offline("s", "n", 7)).unwrap();
        assert_eq!(
            s,
            r#"{"v":1,"site":"s","node":"n","state":"offline","ts_ms":7}"#
        );
    }
}
