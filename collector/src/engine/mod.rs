//! engine: per-site state and everything PUE. PURE: no I/O, no clock, no tokio — `now_ms`
//! is always an argument, so every rule here is tested without a network.
//!
//! Model (see docs/measurement.md):
//! - A *series* is one meter: (node, point, component). Its energy comes from its
//!   `energy_j` counter when it has one, else from its `power_w` gauge by the trapezoid
//!   rule; never across a gap longer than `gap_factor` × the node's interval.
//! - Each segment of energy between two samples goes into time buckets per measurement
//!   point (1 s buckets for 30 min, 1 min buckets for 25 h), with the time it covers.
//! - A window's PUE is facility energy / IT energy over the *same* interval, ending at the
//!   watermark (the latest time every live meter has reported up to), with IT energy
//!   taken at one level only: category 3 (it_input), 2 (pdu_output) or 1 (ups_output).
//! - Coverage is covered meter-time / expected meter-time: a meter is expected from its
//!   first sample on, and a meter that stops reporting lowers coverage from then on.

pub mod carbon;
pub mod contracts;
mod export;
pub mod fleet;
pub mod kpi;
pub mod racks;
mod ring;
mod snapshot;
pub mod targets;
mod view;

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

pub use export::{period_kpi_view, period_view, Export, MinuteCursor, MinuteEnergy, PeriodTotals};
pub use racks::{RackBudget, RackPower, RackView};
pub use snapshot::{SiteSnapshot, Snapshot};
pub use view::{
    MetricSample, NodeSeries, NodeView, PowerView, RackLoad, SiteView, WindowView, Windows, WINDOWS,
};

use dcwatt_common::protocol::{Name, Point, Quality, Reading, Role, State, StatusMessage};
use ring::{Ring, Spread};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Lowest IT coverage at which a category is used (default 0.95).
    pub min_coverage: f64,
    /// A silence longer than this many intervals is a gap, not integrated (default 3).
    pub gap_factor: f64,
    /// Interval assumed for a node that has not said its interval (default 10 s).
    pub default_interval_ms: i64,
    /// Readings of exactly the same non-zero power after which a gauge is flagged
    /// frozen (default 60; 0: never).
    pub frozen_gauge_readings: u32,
    /// Rated power budget per (site, rack), W: the basis of standard racks (2.5 kW each).
    pub rack_budgets: BTreeMap<(String, String), f64>,
    /// Sites whose PUE category is set by configuration (`[[sites]] category`) rather than
    /// chosen from coverage.
    pub site_categories: BTreeMap<String, u8>,
    /// Meters each site has per point (`[[sites]] expected_meters`): those that never
    /// reported count as missing in coverage.
    pub site_expected: BTreeMap<String, BTreeMap<Point, u32>>,
    /// Per site, what the figures beyond PUE need besides meters: emission factors and
    /// renewable contracts (`[[sites]]`).
    pub site_kpis: BTreeMap<String, kpi::SiteKpiConfig>,
    /// Per site, its racks as designed and installed (`[[sites]]`), for occupancy.
    pub site_racks: BTreeMap<String, SiteRacks>,
    /// Per site, its targets (`[[sites]] targets`).
    pub site_targets: BTreeMap<String, Vec<targets::Target>>,
    /// What one site and one node may make the engine hold.
    pub limits: Limits,
    /// A node whose batches arrive later than this after they were sent, at the least
    /// over its last [`CLOCK_BATCHES`] batches (its clock is behind, or its batches are
    /// held up), makes the values it enters `partial` (`intake.max_clock_skew_secs`).
    pub max_clock_skew_ms: i64,
}

/// What one site and one node may make the engine hold (`[intake]` in the
/// configuration): readings beyond a limit are refused by [`Engine::admit`], counted on
/// the node and by reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Zones a site may name (`intake.max_zones_per_site`).
    pub zones_per_site: usize,
    /// Racks a site may name (`intake.max_racks_per_site`).
    pub racks_per_site: usize,
    /// Distinct series (a metered point and component, or a metric and component) one
    /// node may report (`intake.max_series_per_node`).
    pub series_per_node: usize,
    /// Readings one node may send per second, over a burst of two seconds
    /// (`intake.max_readings_per_node_per_sec`): enough for an agent replaying its spool
    /// at 50 batches a second with 2,000 readings each.
    pub readings_per_node_per_sec: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            zones_per_site: 1_000,
            racks_per_site: 20_000,
            series_per_node: 5_000,
            readings_per_node_per_sec: 100_000.0,
        }
    }
}

/// Readings [`Engine::admit`] refused, by limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// The site already names `zones_per_site` zones.
    pub zones: u64,
    /// The site already names `racks_per_site` racks.
    pub racks: u64,
    /// The node already reports `series_per_node` series.
    pub series: u64,
    /// The node sent more than `readings_per_node_per_sec` (over a 2 s burst).
    pub fast: u64,
}

impl Refused {
    /// By reason label (`too_many_zones`, `too_many_racks`, `too_many_series`).
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("too_many_zones", self.zones),
            ("too_many_racks", self.racks),
            ("too_many_series", self.series),
            ("too_fast", self.fast),
        ]
    }
}

/// A site's racks as designed and installed, from configuration: the basis of rack
/// occupancy (上架率).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SiteRacks {
    /// Racks the site was designed for (`racks_designed`).
    pub designed: Option<u32>,
    /// Racks installed (`racks_installed`).
    pub installed: Option<u32>,
    /// Designed IT capacity, W (`designed_it_kw`): standard racks designed = ÷ 2.5 kW.
    pub designed_w: Option<f64>,
    /// Installed IT capacity, W (`installed_it_kw`); else the sum of the `[[racks]]`
    /// budgets.
    pub installed_w: Option<f64>,
    /// A rack is in use when its metered IT power is above this, W, or a host in it
    /// reports (`rack_in_use_floor_w`, default 0).
    pub in_use_floor_w: f64,
}

/// How a site's IT level is picked: the highest category whose coverage meets
/// `min_coverage`, unless `category` fixes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelRule {
    /// Lowest IT coverage at which a category is used automatically.
    pub min_coverage: f64,
    /// The category set for the site, if any.
    pub category: Option<u8>,
}

impl EngineConfig {
    /// The rule for `site`.
    pub fn level_rule(&self, site: &str) -> LevelRule {
        LevelRule {
            min_coverage: self.min_coverage,
            category: self.site_categories.get(site).copied(),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            min_coverage: 0.95,
            gap_factor: 3.0,
            default_interval_ms: 10_000,
            frozen_gauge_readings: 60,
            rack_budgets: BTreeMap::new(),
            site_categories: BTreeMap::new(),
            site_expected: BTreeMap::new(),
            site_kpis: BTreeMap::new(),
            site_racks: BTreeMap::new(),
            site_targets: BTreeMap::new(),
            limits: Limits::default(),
            max_clock_skew_ms: 5_000,
        }
    }
}

/// Bucket rings per point, finest first: (width ms, buckets). 1 s for 30 min (windows up
/// to 15 min), 1 min for 25 h (up to 24 h), 1 h for 33 days (up to 30 days).
const RINGS: [(i64, usize); 3] = [(1_000, 1_800), (60_000, 1_500), (3_600_000, 800)];
/// How far back (in batches) redelivered or late batches are recognised.
const SEQ_WINDOW: u64 = 4096;
/// Batches a sequence number may jump beyond what the time since the node was last heard
/// explains, and still count as missing (see [`Engine::check_seq`]).
pub const SEQ_JUMP_SLACK: u64 = 64;
/// Batches per node whose delivery delay (receive time − `sent_ms`) is remembered; the
/// least of them is the node's clock offset.
pub const CLOCK_BATCHES: usize = 16;
/// Batches per node whose content digest is remembered, to tell a conflicting duplicate
/// from a redelivery.
pub const DIGESTS: usize = 32;
/// Ranges of skipped sequence numbers remembered per node (each gap is one range).
const HOLE_RANGES: usize = 32;
/// Samples kept per meter stream so that one arriving late is put in its place: at most
/// this many, and none older than `REORDER_MS` before the newest. Older samples are
/// dropped and counted (`out_of_order`).
const REORDER_SAMPLES: usize = 8;
/// See `REORDER_SAMPLES`. Well inside the finest ring's span, so that every segment a
/// late sample splits is still in the buckets.
const REORDER_MS: i64 = 10 * 60_000;
/// Counter samples without movement, while the gauge shows power, before the counter is
/// taken for frozen.
const FROZEN_AFTER: u32 = 3;
/// A counter delta implying more than this is a wrong wrap or a glitch, not energy.
const MAX_PLAUSIBLE_W: f64 = 100e6;

/// One accepted batch as the outputs see it: the readings that passed validation, with
/// the node's place.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Site.
    pub site: String,
    /// Node.
    pub node: String,
    /// The node's rack, from its birth.
    pub rack: Option<String>,
    /// The node's zone, from its birth.
    pub zone: Option<String>,
    /// The readings that passed validation.
    pub readings: Vec<Reading>,
}

/// The engine encoded (CBOR) for the state file by its owner, when it was taken, or why
/// it could not be.
#[derive(Debug)]
pub struct EncodedEngine {
    /// When, ms since the epoch.
    pub taken_ms: i64,
    /// The encoded engine.
    pub cbor: Result<Vec<u8>, String>,
}

/// A change to the engine that does not come from the agents' stream: asked for by an
/// operator (the API, a reload) and applied by the engine's owner.
#[derive(Debug, Clone)]
pub enum Edit {
    /// A decommissioned node: its meters are no longer expected.
    Retire {
        /// Site.
        site: String,
        /// Node.
        node: String,
        /// When.
        now_ms: i64,
    },
    /// New settings (a reload).
    Config(EngineConfig),
    /// A renewable contract entered over the API.
    Contract {
        /// Site.
        site: String,
        /// The contract, checked ([`kpi::RenewableContract::problems`]).
        contract: kpi::RenewableContract,
        /// When.
        now_ms: i64,
    },
    /// A contract entered over the API, withdrawn.
    Withdraw {
        /// Site.
        site: String,
        /// The id it was given.
        id: u64,
    },
}

/// Why an edit was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It names a site, node or contract the engine does not know.
    NotFound(String),
    /// It conflicts with what is there.
    Conflict(String),
}

/// What an edit did: the id it gave or took (a contract's), or why it was not made.
pub type Edited = Result<Option<u64>, Refusal>;

/// What happened to a batch's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// The next one, or the first from this node.
    InOrder,
    /// Already seen (redelivery): the batch must be dropped.
    Duplicate,
    /// `n` batches never arrived before this one.
    Gap(u64),
    /// A batch from an earlier gap arrived late (replayed from a spool): no longer missing.
    Late,
    /// Lower than before: the agent restarted.
    Restart,
}

/// Per-batch facts the intake counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Counters that went backwards without a known wrap (a reset), not turned into
    /// energy.
    pub counter_resets: u64,
    /// Counters that wrapped at their known range, unwrapped.
    pub counter_wraps: u64,
    /// Counter jumps implying absurd power, not turned into energy.
    pub implausible_jumps: u64,
    /// Samples older than their series' reorder window: dropped.
    pub out_of_order: u64,
    /// Samples that arrived after a newer one of their series, within the reorder
    /// window: put in their place.
    pub reordered: u64,
    /// Segments (partly) older than the buckets hold.
    pub too_old: u64,
    /// Counters found frozen (energy then comes from the gauge).
    pub frozen_counters: u64,
    /// Gauges found repeating the same non-zero value (flagged; energy unchanged).
    pub frozen_gauges: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct SeriesKey {
    point: Point,
    node: usize,
    component: usize,
}

/// One recent sample of a meter's stream, with the energy segment that ends at it, so
/// that a sample arriving late (within the reorder window) can be put in its place.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample {
    ts: i64,
    value: f64,
    estimated: bool,
    /// Energy from this stream counts (the counter is not frozen; the gauge stands in
    /// for no counter).
    integrate: bool,
    /// For an averaged gauge: the window it averages, ending at `ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    avg_ms: Option<i64>,
    /// For a wrapping counter: where it wraps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wraps_at: Option<f64>,
    /// Energy added for the stretch before this sample: (from, to, joules).
    seg: Option<Seg>,
    /// Or, where that stretch has no valid data (a gap, a reset), the estimate of its
    /// energy from the readings around it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fill: Option<Seg>,
    /// The first sample of its stream: nothing came before it.
    #[serde(default)]
    first: bool,
}

/// A meter stream's latest samples, oldest first: at most `REORDER_SAMPLES`, none older
/// than `REORDER_MS` before the newest.
type Tail = Vec<Sample>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Series {
    /// First sample of the stream energy comes from: the meter is expected from then on.
    first_ms: Option<i64>,
    /// Last sample of that stream.
    last_ms: Option<i64>,
    /// Recent counter samples.
    #[serde(default)]
    counters: Tail,
    /// Recent gauge samples.
    #[serde(default)]
    gauges: Tail,
    /// The latest counter sample as states saved before the reorder window had it: read
    /// once to seed `counters`, never written.
    #[serde(default, rename = "counter", skip_serializing)]
    legacy_counter: Option<(i64, f64)>,
    /// The same for the gauge.
    #[serde(default, rename = "gauge", skip_serializing)]
    legacy_gauge: Option<(i64, f64, bool)>,
    /// Last counter sample time: while recent, gauges are not integrated.
    counter_seen_ms: Option<i64>,
    /// Current power and when.
    live: Option<(i64, f64)>,
    /// The rack the meter's readings name (a facility agent reading rack PDUs), if any.
    rack: Option<String>,
    /// The zone the meter belongs to: its readings' own, else its node's.
    #[serde(default)]
    zone: Option<String>,
    /// Consecutive counter samples that did not move while the gauge showed power.
    frozen_run: u32,
    /// The counter is stuck (a stale register or cache): energy comes from the gauge.
    counter_frozen: bool,
    /// Gauge readings in a row with the same non-zero value as the one before.
    #[serde(default)]
    gauge_repeats: u32,
    /// The gauge has repeated the same non-zero value `frozen_gauge_readings` times.
    #[serde(default)]
    gauge_frozen: bool,
}

impl Series {
    /// Seeds the tails from a state saved before they existed.
    fn migrate(&mut self) {
        if let Some((ts, value)) = self.legacy_counter.take() {
            if self.counters.is_empty() {
                self.counters.push(Sample::new(ts, value, false));
            }
        }
        if let Some((ts, value, estimated)) = self.legacy_gauge.take() {
            if self.gauges.is_empty() {
                self.gauges.push(Sample::new(ts, value, estimated));
            }
        }
    }

    /// The latest gauge sample.
    fn gauge(&self) -> Option<&Sample> {
        self.gauges.last()
    }

    /// The counter's or the gauge's recent samples.
    fn tail(&self, counter: bool) -> &Tail {
        if counter {
            &self.counters
        } else {
            &self.gauges
        }
    }

    fn tail_mut(&mut self, counter: bool) -> &mut Tail {
        if counter {
            &mut self.counters
        } else {
            &mut self.gauges
        }
    }
}

impl Sample {
    /// A plain sample (counted, not averaged, not wrapping) with nothing placed yet.
    fn new(ts: i64, value: f64, estimated: bool) -> Self {
        Sample {
            ts,
            value,
            estimated,
            integrate: true,
            avg_ms: None,
            wraps_at: None,
            seg: None,
            fill: None,
            first: false,
        }
    }
}

impl Node {
    /// The least delay of its recent batches: its clock offset plus the shortest delivery
    /// time (positive: behind ours, or held up; negative: ahead).
    fn clock_offset_ms(&self) -> Option<i64> {
        self.delays.iter().copied().min()
    }

    /// Takes a state's single-number holes into ranges.
    fn migrate_holes(&mut self) {
        for h in std::mem::take(&mut self.legacy_holes) {
            match self.holes.last_mut() {
                Some(last) if last.1 == h => last.1 = h + 1,
                _ => self.holes.push((h, h.saturating_add(1))),
            }
        }
        if self.holes.len() > HOLE_RANGES {
            let extra = self.holes.len() - HOLE_RANGES;
            self.holes.drain(..extra);
        }
    }

    /// Whether `seq` was a hole; it no longer is.
    fn take_hole(&mut self, seq: u64) -> bool {
        let Some(i) = self.holes.iter().position(|h| h.0 <= seq && seq < h.1) else {
            return false;
        };
        let (from, to) = self.holes[i];
        match (from == seq, seq + 1 == to) {
            (true, true) => {
                self.holes.remove(i);
            }
            (true, false) => self.holes[i].0 = seq + 1,
            (false, true) => self.holes[i].1 = seq,
            (false, false) => {
                self.holes[i].1 = seq;
                self.holes.insert(i + 1, (seq + 1, to));
            }
        }
        true
    }
}

/// What the engine knows about a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Node {
    role: Option<Role>,
    rack: Option<String>,
    zone: Option<String>,
    agent: Option<String>,
    interval_ms: Option<i64>,
    /// When its first birth came: a host is expected to report its input from then on.
    #[serde(default)]
    born_ms: Option<i64>,
    /// When an operator retired it (decommissioned): its meters are no longer expected
    /// from then on. A new birth or newer readings bring it back.
    #[serde(default)]
    retired_ms: Option<i64>,
    /// The last three spacings between batches; their minimum is the observed interval,
    /// so one long silence does not stretch the gap bound over itself.
    recent_spacings: [i64; 3],
    offline_since_ms: Option<i64>,
    last_seen_ms: Option<i64>,
    last_reading_ms: Option<i64>,
    last_seq: Option<u64>,
    /// Ranges `[from, to)` of sequence numbers that were skipped recently and may still
    /// arrive late, oldest first.
    #[serde(default, rename = "hole_ranges")]
    holes: Vec<(u64, u64)>,
    /// The same as single numbers, as states saved before the ranges had them: read once,
    /// never written.
    #[serde(default, rename = "holes", skip_serializing)]
    legacy_holes: std::collections::BTreeSet<u64>,
    /// GPUs by model, from the birth.
    gpus: Vec<dcwatt_common::protocol::GpuInventory>,
    missing: u64,
    duplicates: u64,
    restarts: u64,
    /// The last batches' sequence numbers and content digests, newest last: a duplicate
    /// whose content differs from the first copy is a conflict, not a redelivery.
    #[serde(default)]
    digests: std::collections::VecDeque<(u64, u64)>,
    /// Readings this node may still send now (a token bucket refilled at
    /// `readings_per_node_per_sec`, holding two seconds' worth), and when it was filled.
    #[serde(skip)]
    budget: Option<(i64, f64)>,
    /// Receive time − `sent_ms` of the last batches, ms, newest last.
    #[serde(default)]
    delays: std::collections::VecDeque<i64>,
    /// Metered series (point and component) this node has.
    #[serde(default)]
    metered: u32,
    /// What was refused from this node at a limit or as invalid, by reason.
    #[serde(default)]
    refused: BTreeMap<String, u64>,
    /// Latest value of each (metric, component) without a measurement point: load,
    /// temperatures, UPS status, for alert rules.
    latest: BTreeMap<(Name, Name), (i64, f64)>,
    /// `latest` as snapshots list it: built by the first snapshot after a change and
    /// shared by every snapshot until the next change. A node changes once per interval
    /// and a snapshot is taken every second, so most snapshots copy nothing of it.
    #[serde(skip)]
    samples: std::sync::OnceLock<std::sync::Arc<[MetricSample]>>,
}

impl Node {
    /// Counts `n` refusals of this node's input for `reason`.
    fn count_refused(&mut self, reason: &str, n: u64) {
        if n > 0 {
            let slot = self.refused.entry(reason.to_owned()).or_default();
            *slot = slot.saturating_add(n);
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Level {
    rings: [Ring; 3],
}

impl Level {
    fn new() -> Self {
        Level {
            rings: RINGS.map(|(width, len)| Ring::new(width, len)),
        }
    }

    /// Index of the finest ring that holds a window of `len` ms with a bucket to spare.
    fn ring_index(len: i64) -> usize {
        RINGS
            .iter()
            .position(|(width, n)| len + width <= width * *n as i64)
            .unwrap_or(RINGS.len() - 1)
    }

    /// The ring for a window of `len` ms.
    fn ring_for(&self, len: i64) -> &Ring {
        &self.rings[Self::ring_index(len)]
    }

    /// Bucket width used for a window of `len` ms.
    fn width_for(len: i64) -> i64 {
        RINGS[Self::ring_index(len)].0
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Site {
    node_ids: Vec<String>,
    node_index: HashMap<String, usize>,
    nodes: Vec<Node>,
    components: Vec<String>,
    /// `components` by name, rebuilt after a restore: a lookup never scans.
    #[serde(skip)]
    component_index: HashMap<String, usize>,
    /// The zones and racks the site names, rebuilt after a restore (see `places`).
    #[serde(skip)]
    places: Option<Places>,
    series: BTreeMap<SeriesKey, Series>,
    levels: BTreeMap<Point, Level>,
    first_ingest_ms: Option<i64>,
    /// Start of the site's data: windows never reach before it (see `settle`).
    data_start_ms: Option<i64>,
    /// Per zone, the IT and overhead points' buckets, for partial PUE.
    #[serde(default)]
    zone_levels: BTreeMap<String, BTreeMap<Point, Level>>,
    /// Counts the applies that added energy: a reader's [`MinuteCursor`] remembers the
    /// last one it has seen.
    #[serde(default)]
    revision: u64,
    /// Per minute (its start, ms), the last revision that added energy to it: what
    /// changed since a cursor, found without the engine knowing who reads.
    #[serde(default)]
    touched: BTreeMap<i64, u64>,
    /// `now` of the last look for the start of the data (see `settle`).
    #[serde(skip)]
    settle_checked_ms: Option<i64>,
}

/// The zones and racks a site names, for its limits.
#[derive(Debug, Clone, Default)]
struct Places {
    zones: std::collections::HashSet<String>,
    racks: std::collections::HashSet<String>,
}

impl Site {
    /// The zones and racks named so far by births and readings.
    fn places(&mut self) -> &mut Places {
        let (nodes, series) = (&self.nodes, &self.series);
        self.places.get_or_insert_with(|| {
            let mut p = Places::default();
            for (zone, rack) in (nodes.iter().map(|n| (&n.zone, &n.rack)))
                .chain(series.values().map(|s| (&s.zone, &s.rack)))
            {
                p.zones.extend(zone.iter().cloned());
                p.racks.extend(rack.iter().cloned());
            }
            p
        })
    }

    /// Whether the site may name `zone` and `rack` (known ones always), taking new ones
    /// into its places; else the limit that refuses them.
    fn admit_place(
        &mut self,
        zone: Option<&String>,
        rack: Option<&String>,
        lim: &Limits,
    ) -> Result<(), &'static str> {
        let p = self.places();
        let new_zone = zone.filter(|z| !p.zones.contains(*z));
        let new_rack = rack.filter(|r| !p.racks.contains(*r));
        if new_zone.is_some() && p.zones.len() >= lim.zones_per_site {
            return Err("too_many_zones");
        }
        if new_rack.is_some() && p.racks.len() >= lim.racks_per_site {
            return Err("too_many_racks");
        }
        p.zones.extend(new_zone.cloned());
        p.racks.extend(new_rack.cloned());
        Ok(())
    }

    /// The index of a component's name, if it has one.
    fn component_index_get(&mut self, name: &str) -> Option<usize> {
        if self.component_index.len() != self.components.len() {
            self.component_index = (self.components.iter().cloned())
                .enumerate()
                .map(|(i, c)| (c, i))
                .collect();
        }
        self.component_index.get(name).copied()
    }

    /// The index of a component's name, added when new.
    fn component(&mut self, name: &str) -> usize {
        if let Some(i) = self.component_index_get(name) {
            return i;
        }
        self.components.push(name.to_owned());
        self.component_index
            .insert(name.to_owned(), self.components.len() - 1);
        self.components.len() - 1
    }
}

/// A node's latest-values key. Names of up to 24 bytes are held inline, so building one
/// to look a reading up copies two short names and allocates nothing.
fn pair_key(metric: &Name, component: &Name) -> (Name, Name) {
    (metric.clone(), component.clone())
}

/// All sites.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Engine {
    /// Comes from the configuration at every start, never from a saved state.
    #[serde(skip)]
    cfg: EngineConfig,
    sites: BTreeMap<String, Site>,
    /// Each site's live carbon-intensity series (`dcwatt/v1/{site}/carbon`).
    #[serde(default)]
    carbon: BTreeMap<String, carbon::LiveCarbon>,
    /// Each site's renewable contracts entered over the API.
    #[serde(default)]
    contracts: BTreeMap<String, contracts::SiteContracts>,
}

impl Engine {
    /// An empty engine.
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            cfg,
            sites: BTreeMap::new(),
            carbon: BTreeMap::new(),
            contracts: BTreeMap::new(),
        }
    }

    /// Adds a site's live carbon-intensity factors (checked by
    /// [`carbon::CarbonMessage::factors`]). Refused for a new site beyond `max_sites`
    /// sites with a series.
    ///
    /// # Errors
    /// Too many sites with a series.
    pub fn apply_carbon(
        &mut self,
        site: &str,
        factors: Vec<kpi::EmissionFactor>,
        max_sites: usize,
    ) -> Result<(), String> {
        if !self.carbon.contains_key(site) && self.carbon.len() >= max_sites {
            return Err(format!("{max_sites} sites already have a carbon series"));
        }
        self.carbon.entry(site.to_owned()).or_default().add(factors);
        Ok(())
    }

    /// A site's live carbon-intensity factors (empty without a series).
    pub fn live_carbon(&self, site: &str) -> std::sync::Arc<[kpi::EmissionFactor]> {
        self.carbon
            .get(site)
            .map(|c| c.factors.clone())
            .unwrap_or_default()
    }

    /// Enters a renewable contract for a site the engine knows (from its data or its
    /// configuration); the id it was given.
    ///
    /// # Errors
    /// An unknown site (not found), or a contract that one configured or entered already
    /// counts, or a full list (a conflict).
    pub fn enter_contract(
        &mut self,
        site: &str,
        contract: kpi::RenewableContract,
        now_ms: i64,
    ) -> Result<u64, Refusal> {
        let configured = self.cfg.site_kpis.get(site);
        if configured.is_none() && !self.sites.contains_key(site) {
            return Err(Refusal::NotFound(format!("no site {site:?}")));
        }
        let configured = configured.map_or(&[][..], |c| &c.contracts[..]);
        let entered = self.contracts.entry(site.to_owned()).or_default();
        entered
            .enter(configured, contract, now_ms)
            .map_err(Refusal::Conflict)
    }

    /// Withdraws a contract entered over the API (a mistaken entry); it, if there was one.
    pub fn withdraw_contract(&mut self, site: &str, id: u64) -> Option<contracts::Entered> {
        self.contracts.get_mut(site)?.withdraw(id)
    }

    /// A site's contracts entered over the API (empty without any).
    pub fn entered_contracts(&self, site: &str) -> std::sync::Arc<[contracts::Entered]> {
        self.contracts
            .get(site)
            .map(|c| c.entered.clone())
            .unwrap_or_default()
    }

    /// Every site's contracts entered over the API, as the snapshot carries them.
    pub fn contract_lists(&self) -> BTreeMap<String, std::sync::Arc<[contracts::Entered]>> {
        self.contracts
            .iter()
            .filter(|(_, c)| !c.entered.is_empty())
            .map(|(s, c)| (s.clone(), c.entered.clone()))
            .collect()
    }

    /// Each site's live series, as the snapshot carries it.
    pub fn carbon_series(&self) -> BTreeMap<String, carbon::LiveCarbon> {
        self.carbon.clone()
    }

    /// Replaces the settings (after restoring a saved state: the configuration wins).
    pub fn set_config(&mut self, cfg: EngineConfig) {
        self.cfg = cfg;
    }

    /// Applies an edit.
    ///
    /// # Errors
    /// What it names is unknown, or it conflicts with what is there.
    pub fn edit(&mut self, edit: Edit) -> Edited {
        match edit {
            Edit::Retire { site, node, now_ms } => {
                if self.retire_node(&site, &node, now_ms) {
                    Ok(None)
                } else {
                    Err(Refusal::NotFound(format!(
                        "no node {node:?} at site {site:?}"
                    )))
                }
            }
            Edit::Config(cfg) => {
                self.set_config(cfg);
                Ok(None)
            }
            Edit::Contract {
                site,
                contract,
                now_ms,
            } => self.enter_contract(&site, contract, now_ms).map(Some),
            Edit::Withdraw { site, id } => match self.withdraw_contract(&site, id) {
                Some(_) => Ok(Some(id)),
                None => Err(Refusal::NotFound(format!(
                    "no contract {id} entered for site {site:?}"
                ))),
            },
        }
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Site ids known so far, sorted.
    pub fn site_ids(&self) -> Vec<String> {
        self.sites.keys().cloned().collect()
    }

    /// A node's role, when its birth said so.
    pub fn node_role(&self, site: &str, node: &str) -> Option<Role> {
        let s = self.sites.get(site)?;
        s.nodes[*s.node_index.get(node)?].role
    }

    /// Whether the node is known.
    pub fn has_node(&self, site: &str, node: &str) -> bool {
        self.sites
            .get(site)
            .is_some_and(|s| s.node_index.contains_key(node))
    }

    /// Nodes known over all sites.
    pub fn node_count(&self) -> usize {
        self.sites.values().map(|s| s.nodes.len()).sum()
    }

    /// A node's rack and zone, from its birth.
    pub fn node_place(&self, site: &str, node: &str) -> (Option<String>, Option<String>) {
        let Some(s) = self.sites.get(site) else {
            return (None, None);
        };
        match s.node_index.get(node) {
            Some(&i) => (s.nodes[i].rack.clone(), s.nodes[i].zone.clone()),
            None => (None, None),
        }
    }

    fn node_mut(&mut self, site: &str, node: &str) -> (&mut Site, usize) {
        let s = self.sites.entry(site.to_owned()).or_default();
        let idx = match s.node_index.get(node) {
            Some(i) => *i,
            None => {
                s.node_ids.push(node.to_owned());
                s.nodes.push(Node::default());
                s.node_index.insert(node.to_owned(), s.nodes.len() - 1);
                s.nodes.len() - 1
            }
        };
        (s, idx)
    }

    /// Sites known.
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// Whether the site is known.
    pub fn has_site(&self, site: &str) -> bool {
        self.sites.contains_key(site)
    }

    /// The engine's tick (every second, from its owner): what is due by time alone, with
    /// or without new batches — a site whose backlog came at once and then stopped has
    /// its windows opened here.
    pub fn tick(&mut self, now_ms: i64) {
        let (gap_factor, default_interval) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        for site in self.sites.values_mut() {
            settle(site, now_ms, gap_factor, default_interval);
        }
    }

    /// Counts a refusal on a known node (shown on its `/nodes` entry).
    pub fn note_refused(&mut self, site: &str, node: &str, reason: &str, n: u64) {
        let Some(s) = self.sites.get_mut(site) else {
            return;
        };
        let Some(&i) = s.node_index.get(node) else {
            return;
        };
        s.nodes[i].count_refused(reason, n);
    }

    /// Whether a birth's zone and rack fit the site's limits (known ones always do).
    ///
    /// # Errors
    /// The limit's reason label.
    pub fn admit_birth(&mut self, msg: &StatusMessage) -> Result<(), &'static str> {
        let lim = self.cfg.limits;
        let (site, _) = self.node_mut(&msg.site, &msg.node);
        site.admit_place(msg.zone.as_ref(), msg.rack.as_ref(), &lim)
    }

    /// Keeps the readings that fit the limits (a node's rate, a site's zones and racks, a
    /// node's series) and says how many were refused, by limit; the node's `refused` counts
    /// them too. Readings of series, zones and racks already known always fit.
    pub fn admit(
        &mut self,
        site_id: &str,
        node_id: &str,
        readings: &mut Vec<Reading>,
        now_ms: i64,
    ) -> Refused {
        let lim = self.cfg.limits;
        let (site, ni) = self.node_mut(site_id, node_id);
        let mut refused = Refused::default();
        // The rate first: readings beyond the node's budget are refused, the batch's
        // later ones first.
        let rate = lim.readings_per_node_per_sec.max(1.0);
        let cap = 2.0 * rate;
        let (at, tokens) = site.nodes[ni].budget.unwrap_or((now_ms, cap));
        let tokens = (tokens + (now_ms - at).max(0) as f64 / 1000.0 * rate).min(cap);
        let allowed = tokens.floor().max(0.0) as usize;
        if readings.len() > allowed {
            refused.fast = (readings.len() - allowed) as u64;
            readings.truncate(allowed);
        }
        site.nodes[ni].budget = Some((now_ms, tokens - readings.len() as f64));
        let mut used = site.nodes[ni].latest.len() + site.nodes[ni].metered as usize;
        let mut fresh: std::collections::HashSet<(Option<Point>, &str, &str)> =
            std::collections::HashSet::new();
        let mut keep = vec![true; readings.len()];
        for (k, r) in readings.iter().enumerate() {
            if let Err(reason) = site.admit_place(r.zone.as_ref(), r.rack.as_ref(), &lim) {
                match reason {
                    "too_many_zones" => refused.zones += 1,
                    _ => refused.racks += 1,
                }
                keep[k] = false;
                continue;
            }
            let known = match r.point {
                None => site.nodes[ni]
                    .latest
                    .contains_key(&pair_key(&r.metric, &r.component)),
                Some(point) => {
                    let metered = point.stream(&r.metric, r.kind).is_some();
                    // Readings the engine does not keep cost nothing.
                    !metered
                        || site.component_index_get(&r.component).is_some_and(|c| {
                            site.series.contains_key(&SeriesKey {
                                point,
                                node: ni,
                                component: c,
                            })
                        })
                }
            };
            let metric = if r.point.is_some() {
                ""
            } else {
                r.metric.as_str()
            };
            if known || fresh.contains(&(r.point, metric, r.component.as_str())) {
                continue;
            }
            if used >= lim.series_per_node {
                refused.series += 1;
                keep[k] = false;
                continue;
            }
            used += 1;
            fresh.insert((r.point, metric, r.component.as_str()));
        }
        drop(fresh);
        let mut k = 0;
        readings.retain(|_| {
            k += 1;
            keep[k - 1]
        });
        for (reason, n) in refused.by_reason() {
            site.nodes[ni].count_refused(reason, n);
        }
        refused
    }

    /// Applies a birth or an offline status.
    pub fn apply_status(&mut self, msg: &StatusMessage, now_ms: i64) {
        let (site, i) = self.node_mut(&msg.site, &msg.node);
        let n = &mut site.nodes[i];
        n.last_seen_ms = Some(now_ms);
        match msg.state {
            State::Online => {
                n.born_ms.get_or_insert(now_ms);
                n.retired_ms = None;
                n.offline_since_ms = None;
                n.role = msg.role.or(n.role);
                n.rack.clone_from(&msg.rack);
                n.zone.clone_from(&msg.zone);
                n.agent.clone_from(&msg.agent);
                n.interval_ms = msg.interval_ms.map(|v| v.min(i64::MAX as u64) as i64);
                n.gpus.clone_from(&msg.gpus);
            }
            State::Offline => n.offline_since_ms = Some(now_ms),
        }
    }

    /// Retires a node (decommissioned): from `now_ms` on its meters are no longer
    /// expected, so coverage and estimates stop counting them; what they measured stays.
    /// A new birth or newer readings bring it back. False for an unknown node.
    pub fn retire_node(&mut self, site: &str, node: &str, now_ms: i64) -> bool {
        let Some(s) = self.sites.get_mut(site) else {
            return false;
        };
        let Some(&i) = s.node_index.get(node) else {
            return false;
        };
        s.nodes[i].retired_ms = Some(now_ms);
        true
    }

    /// Checks and records a batch's sequence number, received at `now_ms`.
    ///
    /// Never overflows, whatever the numbers. A jump forward counts as missing batches
    /// only as far as the time since the node was last heard allows (two batches per
    /// interval, plus [`SEQ_JUMP_SLACK`]); a larger jump is an agent that started over
    /// with new numbers (a restart), not millions of lost batches.
    pub fn check_seq(&mut self, site: &str, node: &str, seq: u64, now_ms: i64) -> SeqCheck {
        let default_interval = self.cfg.default_interval_ms;
        let (s, i) = self.node_mut(site, node);
        let n = &mut s.nodes[i];
        let interval = node_interval(n, default_interval).max(1);
        let elapsed = n
            .last_seen_ms
            .map_or(0, |t| now_ms.saturating_sub(t).max(0));
        let plausible =
            SEQ_JUMP_SLACK.saturating_add((elapsed / interval).saturating_mul(2) as u64);
        n.migrate_holes();
        let last_seq = n.last_seq;
        let check = match last_seq {
            None => SeqCheck::InOrder,
            Some(last) if Some(seq) == last.checked_add(1) => SeqCheck::InOrder,
            Some(last) if seq > last && seq - last - 1 <= plausible => {
                SeqCheck::Gap(seq - last - 1)
            }
            Some(last) if seq > last => SeqCheck::Restart,
            Some(_) if n.take_hole(seq) => SeqCheck::Late,
            // Within the window and not a hole: seen already (redelivery or a replay).
            Some(last) if last - seq <= SEQ_WINDOW => SeqCheck::Duplicate,
            Some(_) => SeqCheck::Restart,
        };
        match check {
            SeqCheck::Duplicate => n.duplicates = n.duplicates.saturating_add(1),
            SeqCheck::Gap(k) => {
                n.missing = n.missing.saturating_add(k);
                let last = n.last_seq.unwrap_or(0);
                // Remember recent holes (as ranges), so late batches fill them instead of
                // counting twice.
                n.holes.push((last + 1, seq));
                if n.holes.len() > HOLE_RANGES {
                    n.holes.remove(0);
                }
            }
            SeqCheck::Late => n.missing = n.missing.saturating_sub(1),
            SeqCheck::Restart => {
                n.restarts = n.restarts.saturating_add(1);
                n.holes.clear();
            }
            SeqCheck::InOrder => {}
        }
        if matches!(
            check,
            SeqCheck::InOrder | SeqCheck::Gap(_) | SeqCheck::Restart
        ) {
            n.last_seq = Some(seq);
            // Forget holes that fell out of the window.
            let floor = seq.saturating_sub(SEQ_WINDOW);
            n.holes.retain_mut(|h| {
                h.0 = h.0.max(floor);
                h.0 < h.1
            });
            n.last_seen_ms = Some(n.last_seen_ms.map_or(now_ms, |t| t.max(now_ms)));
        }
        check
    }

    /// Records how long after its `sent_ms` a node's batch arrived (negative: the node's
    /// clock is ahead of ours).
    pub fn observe_delay(&mut self, site: &str, node: &str, delay_ms: i64) {
        let (s, i) = self.node_mut(site, node);
        let d = &mut s.nodes[i].delays;
        d.push_back(delay_ms);
        while d.len() > CLOCK_BATCHES {
            d.pop_front();
        }
    }

    /// Remembers an accepted batch's content digest (see [`Engine::conflicts`]).
    pub fn remember_digest(&mut self, site: &str, node: &str, seq: u64, digest: u64) {
        let (s, i) = self.node_mut(site, node);
        let d = &mut s.nodes[i].digests;
        d.push_back((seq, digest));
        while d.len() > DIGESTS {
            d.pop_front();
        }
    }

    /// Whether a duplicate batch's content differs from the first copy's (when that copy
    /// is among the last [`DIGESTS`] remembered).
    pub fn conflicts(&self, site: &str, node: &str, seq: u64, digest: u64) -> bool {
        let Some(s) = self.sites.get(site) else {
            return false;
        };
        let Some(&i) = s.node_index.get(node) else {
            return false;
        };
        s.nodes[i]
            .digests
            .iter()
            .any(|(k, d)| *k == seq && *d != digest)
    }

    /// Applies readings that passed validation.
    pub fn apply_readings(
        &mut self,
        site_id: &str,
        node_id: &str,
        readings: &[Reading],
        now_ms: i64,
    ) -> ApplyStats {
        let gap_factor = self.cfg.gap_factor;
        let default_interval = self.cfg.default_interval_ms;
        let frozen_gauge = self.cfg.frozen_gauge_readings;
        let (site, ni) = self.node_mut(site_id, node_id);
        site.first_ingest_ms.get_or_insert(now_ms);
        let mut stats = ApplyStats::default();
        let node = &mut site.nodes[ni];
        node.last_seen_ms = Some(now_ms);
        if let Some(max_ts) = readings.iter().map(|r| r.ts_ms).max() {
            if let Some(prev) = node.last_reading_ms {
                if max_ts > prev {
                    node.recent_spacings.rotate_right(1);
                    node.recent_spacings[0] = max_ts - prev;
                }
            }
            node.last_reading_ms = Some(node.last_reading_ms.map_or(max_ts, |p| p.max(max_ts)));
            if node.offline_since_ms.is_some_and(|t| max_ts > t) {
                node.offline_since_ms = None;
            }
            if node.retired_ms.is_some_and(|t| max_ts > t) {
                node.retired_ms = None;
            }
        }
        let max_gap = (gap_factor * node_interval(node, default_interval) as f64) as i64;
        let mut dirty: Option<i64> = None;
        let mut samples_changed = false;
        for r in readings {
            let Some(point) = r.point else {
                let latest = &mut site.nodes[ni].latest;
                let key = pair_key(&r.metric, &r.component);
                match latest.get_mut(&key) {
                    Some(slot) if r.ts_ms >= slot.0 => {
                        *slot = (r.ts_ms, r.value);
                        samples_changed = true;
                    }
                    Some(_) => {}
                    None => {
                        latest.insert(key, (r.ts_ms, r.value));
                        samples_changed = true;
                    }
                }
                continue;
            };
            let Some(counter) = point.stream(&r.metric, r.kind) else {
                continue;
            };
            // Water is kept in litres, electricity and heat in joules.
            let scale = point.quantity().scale();
            let component = site.component(&r.component);
            let key = SeriesKey {
                point,
                node: ni,
                component,
            };
            let series = match site.series.entry(key) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let n = &mut site.nodes[ni];
                    n.metered = n.metered.saturating_add(1);
                    v.insert(Series::default())
                }
            };
            series.migrate();
            if r.rack.is_some() {
                series.rack.clone_from(&r.rack);
            }
            let zone = r.zone.as_ref().or(site.nodes[ni].zone.as_ref());
            if zone.is_some() && series.zone.as_ref() != zone {
                series.zone = zone.cloned();
            }
            let mut zone_level = match (&series.zone, zone_point(point)) {
                (Some(z), true) => Some(
                    site.zone_levels
                        .entry(z.clone())
                        .or_default()
                        .entry(point)
                        .or_insert_with(Level::new),
                ),
                _ => None,
            };
            let level = site.levels.entry(point).or_insert_with(Level::new);
            // The stream energy comes from: the counter, or the gauge while no counter is
            // recent or the counter is frozen.
            let integrate = if counter {
                !series.counter_frozen
            } else {
                series.counter_frozen
                    || series.counter_seen_ms.is_none_or(|t| r.ts_ms - t > max_gap)
            };
            if counter {
                series.counter_seen_ms =
                    Some(series.counter_seen_ms.map_or(r.ts_ms, |t| t.max(r.ts_ms)));
            }
            let sample = Sample {
                integrate,
                avg_ms: r.avg_ms.map(|w| w.min(i64::MAX as u64) as i64),
                wraps_at: r.wraps_at.map(|w| w * scale),
                ..Sample::new(r.ts_ms, r.value * scale, r.quality == Quality::Estimated)
            };
            let dirty = &mut dirty;
            let mut apply = |c: Change| {
                let kept = c.to_rings(&mut level.rings);
                if let Some(zl) = zone_level.as_deref_mut() {
                    c.to_rings(&mut zl.rings);
                }
                let t0 = c.seg.0;
                *dirty = Some(dirty.map_or(t0, |d| d.min(t0)));
                kept
            };
            if !counter && frozen_gauge > 0 && series.gauge().is_some_and(|g| sample.ts > g.ts) {
                gauge_stuck(series, sample.value, frozen_gauge, &mut stats);
            }
            let Some(placed) = place(series, counter, sample, max_gap, &mut stats, &mut apply)
            else {
                continue;
            };
            if placed.integrate {
                // An average's energy starts where its window does: so does the meter.
                let from_ms = match (placed.avg_ms, placed.seg) {
                    (Some(_), Some((t0, _, _))) => t0,
                    _ => placed.ts,
                };
                series.first_ms = Some(series.first_ms.map_or(from_ms, |f| f.min(from_ms)));
                series.last_ms = Some(series.last_ms.map_or(placed.ts, |l| l.max(placed.ts)));
            }
        }
        if samples_changed {
            site.nodes[ni].samples.take();
        }
        if let Some(from) = dirty {
            site.touch(from);
        }
        settle(site, now_ms, gap_factor, default_interval);
        stats
    }
}

/// Points kept per zone: the IT levels and the zone's own overhead (cooling, lighting,
/// other), which is what a partial PUE needs.
fn zone_point(p: Point) -> bool {
    p.it_category().is_some() || matches!(p, Point::Cooling | Point::Lighting | Point::Other)
}

fn node_interval(n: &Node, default_ms: i64) -> i64 {
    let observed = n.recent_spacings.iter().copied().filter(|&d| d > 0).min();
    n.interval_ms.or(observed).unwrap_or(default_ms).max(1)
}

/// A stretch of time and its energy: (from ms, to ms, joules).
type Seg = (i64, i64, f64);

/// What the stretch before a sample contributes: measured energy over covered time, or,
/// where the data is not valid (a gap, a reset), an estimate that covers nothing.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    seg: Option<Seg>,
    fill: Option<Seg>,
}

impl Step {
    fn energy(seg: Seg) -> Self {
        Step {
            seg: Some(seg),
            fill: None,
        }
    }

    fn fill(seg: Option<Seg>) -> Self {
        Step {
            seg: None,
            fill: seg.filter(|s| s.1 > s.0 && s.2.is_finite() && s.2 >= 0.0),
        }
    }
}

/// A change to the buckets: a segment to add, or one to take back because a late sample
/// split it.
#[derive(Debug, Clone, Copy)]
struct Change {
    seg: Seg,
    what: Spread,
    undo: bool,
}

impl Change {
    /// The changes that add what the stretch before `s` contributes (or take it back).
    fn of(s: &Sample, undo: bool) -> [Option<Change>; 2] {
        let make = |seg: Option<Seg>, what| seg.map(|seg| Change { seg, what, undo });
        [
            make(
                s.seg,
                Spread::Energy {
                    estimated: s.estimated,
                },
            ),
            make(s.fill, Spread::Fill),
        ]
    }

    /// Applies the change to a level's rings; false when part of it was older than
    /// every ring holds.
    fn to_rings(self, rings: &mut [ring::Ring]) -> bool {
        let (t0, t1, e) = self.seg;
        let sign = if self.undo { -1.0 } else { 1.0 };
        let mut kept = false;
        for r in rings {
            kept |= r.spread(t0, t1, e, self.what, sign);
        }
        kept
    }
}

/// Where bucket changes go; returns false when part of the change was older than the
/// buckets hold.
type Apply<'a> = dyn FnMut(Change) -> bool + 'a;

/// Puts a sample in its place in the series' counter or gauge tail and hands the bucket
/// changes to `apply`. Returns it (with the segment ending at it), or `None` when it is a
/// repeat or older than the reorder window (counted in `out_of_order`).
fn place(
    s: &mut Series,
    counter: bool,
    mut b: Sample,
    max_gap: i64,
    stats: &mut ApplyStats,
    apply: &mut Apply,
) -> Option<Sample> {
    let mut give = |changes: [Option<Change>; 2], stats: &mut ApplyStats| {
        for c in changes.into_iter().flatten() {
            if !apply(c) && c.what != Spread::Fill {
                stats.too_old += 1;
            }
        }
    };
    let tail = s.tail(counter);
    let pos = tail.partition_point(|x| x.ts < b.ts);
    if tail.get(pos).is_some_and(|x| x.ts == b.ts) {
        // The same instant again (a redelivered reading): nothing new.
        return None;
    }
    if pos == tail.len() {
        let prev = tail.last().copied();
        b.first = prev.is_none();
        let step = if counter {
            let step = counter_in_order(s, prev, &mut b, max_gap, stats);
            if s.counter_frozen && s.frozen_run == FROZEN_AFTER {
                refill_frozen_run(s, max_gap, &mut |c| {
                    give([Some(c), None], stats);
                    true
                });
            }
            step
        } else {
            s.live = Some((b.ts, b.value));
            stretch(false, prev.as_ref(), &b, max_gap, stats)
        };
        (b.seg, b.fill) = (step.seg, one_fill(s, counter, step).fill);
        let tail = s.tail_mut(counter);
        tail.push(b);
        let keep_from = b.ts - REORDER_MS;
        let stale = tail
            .iter()
            .take(tail.len() - 1)
            .take_while(|x| x.ts < keep_from)
            .count()
            .max(tail.len().saturating_sub(REORDER_SAMPLES));
        tail.drain(..stale);
        give(Change::of(&b, false), stats);
        return Some(b);
    }
    let newest = tail.last().map_or(b.ts, |x| x.ts);
    // Before the first sample the stream ever had, while the window still holds it: the
    // stream starts earlier. Before any other, the segment it would split is gone.
    let front = pos == 0 && tail[0].first && tail.len() < REORDER_SAMPLES;
    if (pos == 0 && !front) || b.ts < newest - REORDER_MS {
        stats.out_of_order += 1;
        return None;
    }
    // Between two samples already placed, a and c: the stretch a–c becomes a–b and b–c.
    // In front of the first one: b becomes the first, and b–c is new.
    stats.reordered += 1;
    let tail = s.tail_mut(counter);
    let a = (pos > 0).then(|| tail[pos - 1]);
    b.first = front;
    let c = &mut tail[pos];
    c.first = false;
    let undo = Change::of(c, true);
    let had = c.seg.is_some() || c.fill.is_some();
    let ab = stretch(counter, a.as_ref(), &b, max_gap, stats);
    // A reset already counted for a–c is not counted again for b–c.
    let mut quiet = ApplyStats::default();
    let bc = stretch(
        counter,
        Some(&b),
        c,
        max_gap,
        if had { stats } else { &mut quiet },
    );
    let (ab, bc) = (one_fill(s, counter, ab), one_fill(s, counter, bc));
    (b.seg, b.fill) = (ab.seg, ab.fill);
    let tail = s.tail_mut(counter);
    let c = &mut tail[pos];
    (c.seg, c.fill) = (bc.seg, bc.fill);
    let add_c = Change::of(c, false);
    tail.insert(pos, b);
    give(undo, stats);
    give(Change::of(&b, false), stats);
    give(add_c, stats);
    Some(b)
}

/// Follows a gauge's repeats of the same non-zero value (the new value being the newest)
/// and flags it frozen at `after` readings alike. A stuck cache and a steady load look the
/// same here, so the flag changes no energy: it is counted and shown on the node.
fn gauge_stuck(s: &mut Series, value: f64, after: u32, stats: &mut ApplyStats) {
    let same = s.gauge().is_some_and(|g| g.value == value) && value != 0.0;
    if !same {
        s.gauge_repeats = 0;
        s.gauge_frozen = false;
        return;
    }
    s.gauge_repeats = s.gauge_repeats.saturating_add(1);
    if s.gauge_repeats + 1 >= after && !s.gauge_frozen {
        s.gauge_frozen = true;
        stats.frozen_gauges += 1;
    }
}

/// A meter with both a counter and a gauge fills an uncovered stretch once: from the
/// counter (its increase is exact), unless the gauge covered the stretch meanwhile; from
/// the gauge only while the counter is missing or frozen.
fn one_fill(s: &Series, counter: bool, mut step: Step) -> Step {
    if let Some((t0, t1, _)) = step.fill {
        let covered_elsewhere = if counter {
            s.gauges
                .iter()
                .filter_map(|g| g.seg)
                .any(|(g0, g1, _)| g1 > t0 && g0 < t1)
        } else {
            !s.counters.is_empty() && !s.counter_frozen
        };
        if covered_elsewhere {
            step.fill = None;
        }
    }
    step
}

/// A counter just found frozen: the zero-energy segments of its run were not a measured
/// zero. They are taken back, and the gauge's segments that lie wholly inside the run
/// are counted instead; what neither covers stays uncovered (it lowers coverage).
fn refill_frozen_run(s: &mut Series, max_gap: i64, apply: &mut Apply) {
    // The run's segments end at the last FROZEN_AFTER − 1 samples in the tail (the newest
    // one, not yet in it, added none).
    let mut run_from = None;
    for x in s.counters.iter_mut().rev().take(FROZEN_AFTER as usize - 1) {
        match x.seg {
            Some(seg) if seg.2 == 0.0 => {
                apply(Change {
                    seg,
                    what: Spread::Energy {
                        estimated: x.estimated,
                    },
                    undo: true,
                });
                x.seg = None;
                run_from = Some(seg.0);
            }
            _ => break,
        }
    }
    let Some(from) = run_from else {
        return;
    };
    for i in 1..s.gauges.len() {
        let (prev, g) = (s.gauges[i - 1], &mut s.gauges[i]);
        if prev.ts >= from && !g.integrate && g.seg.is_none() {
            g.integrate = true;
            let step = gauge_step(Some(&prev), g, max_gap);
            (g.seg, g.fill) = (step.seg, step.fill);
            for c in Change::of(g, false).into_iter().flatten() {
                apply(c);
            }
        }
    }
}

/// What the stretch from `x` to `y` of a counter or gauge stream contributes: nothing
/// while `y`'s stream is not the one energy comes from.
fn stretch(
    counter: bool,
    x: Option<&Sample>,
    y: &Sample,
    max_gap: i64,
    stats: &mut ApplyStats,
) -> Step {
    match (y.integrate, counter, x) {
        (false, _, _) | (true, true, None) => Step::default(),
        (true, true, Some(x)) => counter_step(x, y, max_gap, stats),
        (true, false, x) => gauge_step(x, y, max_gap),
    }
}

/// Mean power of a segment, W.
fn mean_w(seg: Seg) -> f64 {
    seg.2 / ((seg.1 - seg.0).max(1) as f64 / 1000.0)
}

/// Energy between two counter samples when it is a valid segment; across a gap, the
/// counter's own increase as the gap's estimate; across a reset, the meter's previous
/// power held over the lost stretch.
fn counter_step(a: &Sample, b: &Sample, max_gap: i64, stats: &mut ApplyStats) -> Step {
    let e = if b.value >= a.value {
        b.value - a.value
    } else {
        match b.wraps_at {
            // A known range, and the counter was near its top: it went round once.
            Some(w) if a.value > 0.9 * w && a.value < w => {
                stats.counter_wraps += 1;
                w - a.value + b.value
            }
            _ => {
                stats.counter_resets += 1;
                let power = a.seg.or(a.fill).map(mean_w);
                return Step::fill(power.map(|w| (a.ts, b.ts, w * (b.ts - a.ts) as f64 / 1000.0)));
            }
        }
    };
    let dt = b.ts - a.ts;
    if e / (dt as f64 / 1000.0) > MAX_PLAUSIBLE_W {
        stats.implausible_jumps += 1;
        return Step::default();
    }
    if dt > max_gap {
        return Step::fill(Some((a.ts, b.ts, e)));
    }
    Step::energy((a.ts, b.ts, e))
}

/// The newest counter sample: frozen-counter detection, the live value, and the step
/// from the previous sample.
fn counter_in_order(
    s: &mut Series,
    prev: Option<Sample>,
    b: &mut Sample,
    max_gap: i64,
    stats: &mut ApplyStats,
) -> Step {
    let Some(prev) = prev else {
        return Step::default();
    };
    let e = b.value - prev.value;
    // A counter that stands still while the gauge says the device draws power is stuck:
    // after FROZEN_AFTER samples, energy comes from the gauge until it moves again.
    let drawing = s
        .gauge()
        .is_some_and(|g| b.ts - g.ts <= max_gap && g.value > 1.0);
    if e == 0.0 && drawing {
        s.frozen_run += 1;
        if s.frozen_run >= FROZEN_AFTER && !s.counter_frozen {
            s.counter_frozen = true;
            stats.frozen_counters += 1;
        }
    } else if e > 0.0 {
        s.frozen_run = 0;
        s.counter_frozen = false;
    }
    b.integrate = !s.counter_frozen;
    let step = stretch(true, Some(&prev), b, max_gap, stats);
    // A fresh gauge is the better live value; the counter stands in when there is none.
    if let Some(seg) = step.seg {
        if s.gauge().is_none_or(|g| b.ts - g.ts > max_gap) {
            s.live = Some((b.ts, mean_w(seg)));
        }
    }
    step
}

/// Energy of a gauge sample's stretch: the trapezoid from the previous sample, or for an
/// average, exactly `value × window` over its own window, clipped where it would reach
/// back over the previous sample's. Across a gap (or between two averaging windows) the
/// stretch is uncovered, and the straight line between the two readings is its estimate.
fn gauge_step(prev: Option<&Sample>, b: &Sample, max_gap: i64) -> Step {
    if let Some(w) = b.avg_ms {
        let start = prev.map_or(b.ts - w, |p| (b.ts - w).max(p.ts));
        let seg = (start < b.ts).then(|| (start, b.ts, b.value * (b.ts - start) as f64 / 1000.0));
        let fill = prev.filter(|p| p.ts < start).map(|p| {
            (
                p.ts,
                start,
                (p.value + b.value) / 2.0 * (start - p.ts) as f64 / 1000.0,
            )
        });
        return Step {
            seg,
            fill: Step::fill(fill).fill,
        };
    }
    let Some(p) = prev else {
        return Step::default();
    };
    let dt = b.ts - p.ts;
    let seg = (p.ts, b.ts, (p.value + b.value) / 2.0 * dt as f64 / 1000.0);
    if dt > max_gap {
        return Step::fill(Some(seg));
    }
    Step::energy(seg)
}

/// How often, at most, a site that has not settled yet looks for its start of data, ms.
const SETTLE_CHECK_MS: i64 = 100;

/// Fixes the start of the site's data once the meters present at start-up have all
/// reported: windows never reach before it, so numerator and denominator cover the same
/// time even while the first meters trickle in.
///
/// Decided from the data and the engine's tick alone, so that the same data gives the
/// same windows whatever its arrival: it is due once the data spans the settle time, or
/// once that time has passed since the first batch (the engine's tick looks even when no
/// batch comes, as after a backlog delivered at once); the meters present at start-up are
/// those whose data starts within the settle time of the earliest.
fn settle(site: &mut Site, now_ms: i64, gap_factor: f64, default_interval: i64) {
    if site.data_start_ms.is_some() {
        return;
    }
    // Looking at every node and series is done at most every SETTLE_CHECK_MS, not once
    // per batch: at 10,000 hosts, one look per batch was a third of the collector's CPU
    // for the settling time after a start (docs/benchmarks.md). The start found comes
    // from the meters' first samples; looking up to that much later can only take in a
    // meter whose first sample arrived meanwhile.
    if site
        .settle_checked_ms
        .is_some_and(|t| (0..SETTLE_CHECK_MS).contains(&(now_ms - t)))
    {
        return;
    }
    site.settle_checked_ms = Some(now_ms);
    let Some(first) = site.first_ingest_ms else {
        return;
    };
    let longest = site
        .nodes
        .iter()
        .map(|n| node_interval(n, default_interval))
        .max()
        .unwrap_or(default_interval);
    let settle_ms = ((gap_factor.min(2.0) * longest as f64) as i64).max(2_000);
    let pue_series = || {
        site.series
            .iter()
            .filter(|(k, _)| k.point == Point::FacilityInput || k.point.it_category().is_some())
            .map(|(_, s)| s)
    };
    let Some(earliest) = pue_series().filter_map(|s| s.first_ms).min() else {
        return;
    };
    let latest = pue_series()
        .filter_map(|s| s.last_ms)
        .max()
        .unwrap_or(earliest);
    if now_ms - first < settle_ms && latest - earliest < settle_ms {
        return;
    }
    site.data_start_ms = pue_series()
        .filter_map(|s| s.first_ms)
        .filter(|f| *f <= earliest + settle_ms)
        .max();
}
