//! What the engine shows: site views (live power ratio, PUE per window) and node lists,
//! computed on demand from the buckets. Still pure: `now_ms` is an argument.

use super::{node_interval, Engine, LevelRule, Site};
use dcwatt_common::protocol::{Name, Point};
use dcwatt_common::units::total;
use serde::ser::SerializeMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The rolling windows, by name and length.
pub const WINDOWS: [(&str, i64); 6] = [
    ("1m", 60_000),
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
];

/// A site's meter inventory: how many meters it has per point.
pub(super) type Inventory = std::collections::BTreeMap<Point, u32>;

/// Per point, the meters expected that never reported: since when each is expected.
pub(super) type Unseen = std::collections::BTreeMap<Point, Vec<i64>>;

/// A coverage at least this close to 1 counts as full (sums of milliseconds in floats).
const FULL: f64 = 1.0 - 1e-9;

/// The live power picture of a site.
#[derive(Debug, Clone, Serialize)]
pub struct PowerView {
    /// What this is: a ratio of powers at an instant, indicative only.
    pub label: &'static str,
    /// Facility input power now, W.
    pub facility_w: Option<f64>,
    /// IT power now at the chosen category's level, W.
    pub it_w: Option<f64>,
    /// facility_w / it_w; null while unknown or invalid.
    pub ratio: Option<f64>,
    /// The category IT power is measured at (3 it_input, 2 pdu_output, 1 ups_output).
    pub category: Option<u8>,
    /// Share of known IT meters at that level reporting now.
    pub coverage_it: f64,
    /// Share of known facility meters reporting now.
    pub coverage_facility: f64,
    /// measured, estimated, partial, invalid or no_data.
    pub quality: &'static str,
    /// Why the value is missing or not fully trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// PUE over one rolling window.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    /// e.g. "PUE₃, 1h".
    pub label: String,
    /// Facility energy / IT energy; null while unknown or invalid.
    pub value: Option<f64>,
    /// The category IT energy is measured at.
    pub category: Option<u8>,
    /// Covered / expected IT meter-time in the window.
    pub coverage_it: f64,
    /// Covered / expected facility meter-time in the window.
    pub coverage_facility: f64,
    /// measured, estimated, partial, invalid or no_data.
    pub quality: &'static str,
    /// Why the value is missing or not fully trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// DCiE = 1 / PUE.
    pub dcie: Option<f64>,
    /// Start of the interval the energies cover (ms since epoch).
    pub from_ms: Option<i64>,
    /// End of that interval.
    pub to_ms: Option<i64>,
    /// Share of the window's length that its data spans, (to − from) / length, 0..1: below
    /// 1 while the site's data is younger than the window, and then the quality is at best
    /// `partial`. Absent for a period asked for by its dates (`/energy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_share: Option<f64>,
    /// Facility energy in the interval, kWh.
    pub facility_kwh: f64,
    /// IT energy in the interval at the chosen category, kWh.
    pub it_kwh: f64,
    /// Estimated facility energy for the uncovered meter-time (gaps, resets, meters
    /// gone silent), kWh: in `value`, not in `facility_kwh`. 0 at full coverage.
    pub facility_fill_kwh: f64,
    /// The same for IT.
    pub it_fill_kwh: f64,
    /// The figures beyond PUE over the same interval: WUE, CUE (location- and
    /// market-based), REF, ERF and ERE, each with its quality and coverage.
    pub kpis: super::kpi::Kpis,
}

/// Node counts by state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeCounts {
    /// Known nodes.
    pub total: usize,
    /// Reporting.
    pub online: usize,
    /// Said offline (clean shutdown or last will).
    pub offline: usize,
    /// Silent for longer than their gap bound, without saying so.
    pub stale: usize,
    /// Retired by an operator (decommissioned): not counted in `total`.
    pub retired: usize,
}

/// The windows in their fixed order, serialized as a JSON object.
#[derive(Debug, Clone)]
pub struct Windows(pub Vec<(&'static str, WindowView)>);

impl Serialize for Windows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Windows {
    /// The window called `name`.
    pub fn get(&self, name: &str) -> Option<&WindowView> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// Everything about one site, as `GET /api/v1/sites/{site}` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// Site id.
    pub site: String,
    /// When this view was computed.
    pub ts_ms: i64,
    /// True when no meter of the site is reporting.
    pub stale: bool,
    /// Live power and its ratio.
    pub power: PowerView,
    /// PUE by window name.
    pub pue: Windows,
    /// Node counts.
    pub nodes: NodeCounts,
    /// Batches that never arrived (sequence gaps), summed over nodes.
    pub missing_batches: u64,
    /// Racks, standard racks and compute capacity.
    pub capacity: CapacityView,
    /// Partial PUE per zone, for zones with their own overhead meters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneView>,
    /// The site's targets (`[[sites]] targets`) and where it stands against each, on the
    /// longest window that has the figure (occupancy: now). Absent without targets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<super::targets::TargetView>,
}

/// Partial PUE of one zone over one window: (zone IT + zone overhead) / zone IT.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneWindow {
    /// e.g. "pPUE₃, 1h".
    pub label: String,
    /// The partial PUE; null while unknown.
    pub value: Option<f64>,
    /// The category the zone's IT energy is measured at.
    pub category: Option<u8>,
    /// Covered / expected IT meter-time of the zone.
    pub coverage_it: f64,
    /// Covered / expected overhead meter-time of the zone.
    pub coverage_overhead: f64,
    /// measured, estimated, partial or no_data; partial while `span_share` < 1.
    pub quality: &'static str,
    /// Share of the window's length that the zone's data spans, 0..1.
    pub span_share: f64,
    /// The zone's IT energy, kWh.
    pub it_kwh: f64,
    /// The zone's own overhead energy (cooling, lighting, other), kWh.
    pub overhead_kwh: f64,
}

/// One zone's partial PUE by window.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneView {
    /// Zone id.
    pub zone: String,
    /// Partial PUE by window name.
    pub ppue: std::collections::BTreeMap<&'static str, ZoneWindow>,
}

/// What a site has and uses, the way national statistics count it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CapacityView {
    /// Racks known (configured budgets and racks named in births).
    pub racks: usize,
    /// Racks in use now: metered IT power above the site's `rack_in_use_floor_w` (0 W by
    /// default), or a host in the rack that reports.
    pub racks_in_use: usize,
    /// Racks the site was designed for (`[[sites]] racks_designed`); null unless set.
    pub racks_designed: Option<u32>,
    /// Racks installed (`[[sites]] racks_installed`); null unless set.
    pub racks_installed: Option<u32>,
    /// Designed IT capacity in standard racks (`designed_it_kw` ÷ 2.5 kW).
    pub standard_racks_designed: Option<f64>,
    /// Installed IT capacity in standard racks (`installed_it_kw` ÷ 2.5 kW, else the
    /// `[[racks]]` budgets).
    pub standard_racks_installed: Option<f64>,
    /// Rack occupancy (上架率): racks in use / racks installed; null without
    /// `racks_installed`.
    pub occupancy: Option<f64>,
    /// The same in standard racks: the budgets of the racks in use / the installed
    /// capacity; null without budgets or installed capacity.
    pub occupancy_standard: Option<f64>,
    /// Racks installed / racks designed; null unless both are set.
    pub installed_share: Option<f64>,
    /// Configured rack budgets in standard racks (2.5 kW each).
    pub standard_racks: f64,
    /// Budgets of the racks in use, in standard racks.
    pub standard_racks_in_use: f64,
    /// GPUs reported by the agents.
    pub gpus: u32,
    /// Peak dense FP16 compute of those GPUs, PFLOPS.
    pub fp16_pflops: f64,
    /// GPUs whose model has no FP16 figure (not counted in fp16_pflops).
    pub gpus_without_fp16_figure: u32,
    /// Compute in use: each node's FP16 capacity × the mean utilization of its GPUs,
    /// summed; null while no GPU reports utilization.
    pub fp16_pflops_in_use: Option<f64>,
    /// Storage capacity: the nodes' latest `disk_total_bytes` (the agent's sysinfo
    /// source), summed; null while no node reports it.
    pub storage_bytes: Option<u64>,
    /// Storage in use: the nodes' latest `disk_used_bytes`, summed.
    pub storage_used_bytes: Option<u64>,
}

/// CPU and GPU load of one rack's hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RackLoad {
    /// Hosts whose birth names the rack.
    pub hosts: u32,
    /// Sum of the hosts' CPU utilization.
    pub cpu_sum: f64,
    /// Hosts reporting CPU utilization.
    pub cpu_hosts: u32,
    /// Sum of the GPUs' utilization.
    pub gpu_sum: f64,
    /// GPUs reporting utilization.
    pub gpus: u32,
}

impl RackLoad {
    /// Mean CPU utilization of the hosts reporting it.
    pub fn cpu_util(&self) -> Option<f64> {
        (self.cpu_hosts > 0).then(|| self.cpu_sum / f64::from(self.cpu_hosts))
    }

    /// Mean GPU utilization of the GPUs reporting it.
    pub fn gpu_util(&self) -> Option<f64> {
        (self.gpus > 0).then(|| self.gpu_sum / f64::from(self.gpus))
    }
}

/// Power of one standard rack (标准机架), W.
pub const STANDARD_RACK_W: f64 = 2_500.0;

/// A node's latest value of one point-less metric (load, temperature, UPS status).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSample {
    /// Node id (inline up to 24 bytes, like the names: a 5,000-host snapshot holds about
    /// 85,000 of these, and three allocations each were 26 MiB of a site's peak).
    pub node: Name,
    /// Metric name.
    pub metric: Name,
    /// Component.
    pub component: Name,
    /// When it was read.
    pub ts_ms: i64,
    /// Value.
    pub value: f64,
}

/// One node, as `GET /api/v1/sites/{site}/nodes` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Node id.
    pub node: String,
    /// online, offline or stale.
    pub state: &'static str,
    /// host or meter, from the birth.
    pub role: Option<&'static str>,
    /// Rack, from the birth.
    pub rack: Option<String>,
    /// Zone, from the birth.
    pub zone: Option<String>,
    /// Agent version, from the birth.
    pub agent: Option<String>,
    /// Batch interval in ms (from the birth, else observed).
    pub interval_ms: i64,
    /// When the collector last heard from it.
    pub last_seen_ms: Option<i64>,
    /// Timestamp of its latest reading.
    pub last_reading_ms: Option<i64>,
    /// Latest batch sequence number.
    pub seq: Option<u64>,
    /// Batches that never arrived.
    pub missing_batches: u64,
    /// Batches received twice and dropped.
    pub duplicate_batches: u64,
    /// Times the agent restarted (sequence went back).
    pub restarts: u64,
    /// Its meters flagged frozen now, as `point/component`: a counter stuck while its
    /// gauge shows power, or a gauge repeating the same non-zero value.
    pub frozen_meters: Vec<String>,
    /// The least delay of its last batches, ms: receive time − `sent_ms`. Positive: its
    /// clock is behind the collector's, or its batches are held up (a backlog); negative:
    /// its clock is ahead (its readings' times are then corrected by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// What the collector refused from this node, by reason: invalid readings and
    /// births, and readings over a limit (`too_many_series`, `too_many_zones`,
    /// `too_many_racks`). Absent when nothing was.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
    /// The power its meters that report now measure, W, by point (`it_input` for a host,
    /// `facility_input`, `cooling`… for a facility meter). Absent when none reports.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub live_power_w: BTreeMap<&'static str, f64>,
}

/// Which nodes get their own series on `/metrics` (`http.node_metrics`): a site of tens of
/// thousands of hosts writes a few series per node, so the default writes only the nodes
/// that need someone's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSeries {
    /// No per-node series.
    Off,
    /// Facility meters, and hosts that are not online or have frozen meters.
    Problems,
    /// Every node.
    All,
}

impl NodeSeries {
    /// `off`, `problems` or `all`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(NodeSeries::Off),
            "problems" => Some(NodeSeries::Problems),
            "all" => Some(NodeSeries::All),
            _ => None,
        }
    }

    /// Whether `n` gets its own series.
    pub fn includes(self, n: &NodeView) -> bool {
        match self {
            NodeSeries::Off => false,
            NodeSeries::All => true,
            NodeSeries::Problems => {
                n.role == Some("meter")
                    || (n.state != "online" && n.state != "retired")
                    || !n.frozen_meters.is_empty()
            }
        }
    }
}

pub(super) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

pub(super) fn quality_label(category: u8, window: &str) -> String {
    let sub = match category {
        1 => '₁',
        2 => '₂',
        _ => '₃',
    };
    format!("PUE{sub}, {window}")
}

pub(super) struct LevelStat {
    pub(super) value: f64,
    /// Estimate for the uncovered meter-time, from each meter's own readings (J; W for
    /// the live ratio): what `value` lacks when coverage is below 100 %.
    pub(super) fill: f64,
    pub(super) coverage: f64,
    pub(super) estimated: bool,
    pub(super) known: bool,
}

/// Picks the IT level: the category set for the site when there is one (if it has meters);
/// else the highest category whose coverage meets the minimum, else the best-covered one
/// that has meters at all (its quality then says partial).
pub(super) fn choose(stats: &[(u8, LevelStat)], rule: LevelRule) -> Option<usize> {
    if let Some(c) = rule.category {
        return stats.iter().position(|(k, s)| *k == c && s.known);
    }
    let min_coverage = rule.min_coverage;
    let known: Vec<usize> = (0..stats.len()).filter(|&i| stats[i].1.known).collect();
    known
        .iter()
        .copied()
        .find(|&i| stats[i].1.coverage >= min_coverage)
        .or_else(|| {
            known
                .iter()
                .copied()
                .fold(None, |best: Option<usize>, i| match best {
                    Some(b) if stats[b].1.coverage >= stats[i].1.coverage => Some(b),
                    _ => Some(i),
                })
        })
}

/// Why there is no IT level to compute with.
pub(super) fn no_it_meter(rule: LevelRule) -> String {
    match rule.category {
        Some(c) => format!("no IT meter at category {c} (set for the site by sites.category)"),
        None => "no IT meter at any level".to_owned(),
    }
}

/// Ratio, quality and reason from the two sides.
/// (to − from) / len, rounded to 6 places, at most 1.
fn span_share(from: i64, to: i64, len: i64) -> f64 {
    if len <= 0 {
        return 0.0;
    }
    round6(((to - from).max(0) as f64 / len as f64).min(1.0))
}

/// A window whose data spans less than its length is at best partial: "1 min of 24 h so
/// far" (a 24 h PUE after one minute is not a 24 h PUE).
fn short_span(
    judged: (Option<f64>, &'static str, Option<String>),
    from: i64,
    to: i64,
    len: i64,
) -> (Option<f64>, &'static str, Option<String>) {
    let (value, quality, reason) = judged;
    if to - from >= len || !matches!(quality, "measured" | "estimated") {
        return (value, quality, reason);
    }
    let span = format!("{} of {} so far", duration(to - from), duration(len));
    let reason = match reason {
        Some(r) => format!("{span}; {r}"),
        None => span,
    };
    (value, "partial", Some(reason))
}

/// A length of time the way an operator says it: "45 s", "1 min", "15 min", "1 h", "24 h",
/// "2 h 30 min".
fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ if s % 3600 < 60 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

pub(super) fn judge(
    fac: &LevelStat,
    it: &LevelStat,
) -> (Option<f64>, &'static str, Option<String>) {
    if !fac.known || fac.value <= 0.0 {
        return (
            None,
            "no_data",
            Some("no facility_input meter data".to_owned()),
        );
    }
    if it.value <= 0.0 {
        return (None, "no_data", Some("no IT meter data".to_owned()));
    }
    // Where coverage is short, the uncovered meter-time is filled from each meter's own
    // readings around it; the value says so (partial) and the measured energies stay as
    // they are.
    let ratio = (fac.value + fac.fill) / (it.value + it.fill);
    if ratio < 1.0 {
        return (
            None,
            "invalid",
            Some(format!(
                "facility below IT ({:.6} < {:.6}): a metering error (wrong point, missing facility meter or double-counted IT)",
                fac.value, it.value
            )),
        );
    }
    if it.coverage < FULL || fac.coverage < FULL {
        return (
            Some(ratio),
            "partial",
            Some(format!(
                "coverage below 100% (IT {:.1}%, facility {:.1}%): the uncovered meter-time is estimated from each meter's own readings around it",
                it.coverage * 100.0,
                fac.coverage * 100.0
            )),
        );
    }
    if fac.estimated || it.estimated {
        return (
            Some(ratio),
            "estimated",
            Some("includes estimated readings".to_owned()),
        );
    }
    (Some(ratio), "measured", None)
}

/// A value whose inputs include a node with a clock behind (or held-up batches) is
/// `partial`, never `measured`: its readings may not line up with the other meters'.
pub(super) fn skewed(
    site: &Site,
    max_skew_ms: i64,
    judged: (Option<f64>, &'static str, Option<String>),
) -> (Option<f64>, &'static str, Option<String>) {
    let (value, quality, reason) = judged;
    if !matches!(quality, "measured" | "estimated") {
        return (value, quality, reason);
    }
    let late = site
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.retired_ms.is_none() && n.offline_since_ms.is_none())
        .filter_map(|(i, n)| Some((i, n.clock_offset_ms()?)))
        .filter(|(_, off)| *off > max_skew_ms)
        .max_by_key(|(_, off)| *off);
    match late {
        Some((i, off)) => (
            value,
            "partial",
            Some(format!(
                "clock skew: node {}'s batches arrive {:.1} s after they were sent (its clock is behind, or its batches are held up), so its readings may not line up with the other meters'",
                site.node_ids[i],
                off as f64 / 1000.0
            )),
        ),
        None => (value, quality, reason),
    }
}

pub(super) const IT_LEVELS: [u8; 3] = [3, 2, 1];

/// Meter-time the spans `(from, until)` put inside `[from, to)`, ms.
pub(super) fn expected_ms(spans: impl Iterator<Item = (i64, i64)>, from: i64, to: i64) -> f64 {
    dcwatt_common::units::total(spans.map(|(a, b)| (to.min(b) - from.max(a)).max(0) as f64))
}

impl Site {
    /// When the meters `pick` chooses are expected: from their first reading on, until
    /// their node was retired; and the never-heard ones from `unseen`.
    pub(super) fn spans<'a>(
        &'a self,
        pick: impl Fn(&super::SeriesKey, &super::Series) -> bool + 'a,
        unseen: &'a [i64],
    ) -> impl Iterator<Item = (i64, i64)> + 'a {
        self.series
            .iter()
            .filter(move |(k, s)| pick(k, s))
            .filter_map(|(k, s)| self.span(k, s))
            .chain(unseen.iter().map(|&f| (f, i64::MAX)))
    }

    /// [`Site::spans`] of the meters at `point` only: a range of the series, not a scan.
    pub(super) fn spans_at<'a>(
        &'a self,
        point: Point,
        unseen: &'a [i64],
    ) -> impl Iterator<Item = (i64, i64)> + 'a {
        self.series_at(point)
            .filter_map(|(k, s)| self.span(k, s))
            .chain(unseen.iter().map(|&f| (f, i64::MAX)))
    }

    /// When one meter is expected: from its first reading until its node was retired.
    fn span(&self, k: &super::SeriesKey, s: &super::Series) -> Option<(i64, i64)> {
        let until = self.nodes[k.node].retired_ms.unwrap_or(i64::MAX);
        s.first_ms.map(|f| (f, until))
    }

    /// [`Site::silent_fill`] of the meters at `point` only.
    fn silent_fill_at(&self, point: Point, from: i64, to: i64) -> f64 {
        total(
            self.series_at(point)
                .filter_map(|(k, s)| self.silent(k, s, from, to)),
        )
    }

    /// One meter's estimate after it fell silent: its last known power over the rest of
    /// `[from, to)`.
    fn silent(&self, k: &super::SeriesKey, s: &super::Series, from: i64, to: i64) -> Option<f64> {
        let (last, (_, w)) = (s.last_ms?, s.live?);
        let start = last.max(from).max(s.first_ms.unwrap_or(last));
        // A retired node is not estimated past its retirement.
        let end = to.min(self.nodes[k.node].retired_ms.unwrap_or(i64::MAX));
        (start < end).then(|| w * (end - start) as f64 / 1000.0)
    }

    /// The meters at `point`, in key order.
    fn series_at(
        &self,
        point: Point,
    ) -> impl Iterator<Item = (&super::SeriesKey, &super::Series)> + '_ {
        let start = super::SeriesKey {
            point,
            node: 0,
            component: 0,
        };
        self.series
            .range(start..)
            .take_while(move |(k, _)| k.point == point)
    }

    /// For each of `points`, the meters expected there that have never reported, each
    /// with the time it has been expected since: hosts (by their births) without any
    /// `it_input` meter, and as many more as the site's `inventory` names beyond the
    /// meters known, from the start of the site's data. With `zone`, that zone's hosts
    /// only (the inventory is site-wide, so it does not apply to a zone). Looked up once
    /// per view, not once per window.
    pub(super) fn unseen(
        &self,
        points: impl IntoIterator<Item = Point>,
        inventory: Option<&Inventory>,
        zone: Option<&str>,
    ) -> Unseen {
        points
            .into_iter()
            .map(|p| {
                let configured = inventory.and_then(|i| i.get(&p).copied());
                (p, self.unseen_in(p, configured, zone))
            })
            .collect()
    }

    fn unseen_in(&self, point: Point, configured: Option<u32>, zone: Option<&str>) -> Vec<i64> {
        let mut nodes = std::collections::BTreeSet::new();
        let mut known = 0usize;
        for (k, _) in self.series_at(point) {
            known += 1;
            nodes.insert(k.node);
        }
        let mut since = Vec::new();
        if point == Point::ItInput {
            for (i, n) in self.nodes.iter().enumerate() {
                let here =
                    zone.is_none_or(|z| n.zone.as_deref() == Some(z)) && n.retired_ms.is_none();
                if n.role == Some(dcwatt_common::protocol::Role::Host)
                    && here
                    && !nodes.contains(&i)
                {
                    since.extend(n.born_ms);
                }
            }
        }
        let configured = configured.filter(|_| zone.is_none());
        if let (Some(c), Some(start)) = (configured, self.data_start_ms.or(self.first_ingest_ms)) {
            let extra = (c as usize).saturating_sub(known + since.len());
            since.extend(std::iter::repeat_n(start, extra));
        }
        since
    }

    /// Estimated energy of the meters (those `pick` chooses) that fell silent before
    /// `to`: each one's last known power over the rest of `[from, to)`.
    fn silent_fill(
        &self,
        pick: impl Fn(&super::SeriesKey, &super::Series) -> bool,
        from: i64,
        to: i64,
    ) -> f64 {
        total(
            self.series
                .iter()
                .filter(|(k, s)| pick(k, s))
                .filter_map(|(k, s)| self.silent(k, s, from, to)),
        )
    }

    fn max_gap(&self, node: usize, gap_factor: f64, default_interval: i64) -> i64 {
        (gap_factor * node_interval(&self.nodes[node], default_interval) as f64) as i64
    }

    fn is_active(
        &self,
        last_ms: i64,
        node: usize,
        now_ms: i64,
        gap_factor: f64,
        default_interval: i64,
    ) -> bool {
        now_ms - last_ms <= self.max_gap(node, gap_factor, default_interval)
    }

    /// The latest time every reporting facility and IT meter has data up to.
    pub(super) fn watermark(
        &self,
        now_ms: i64,
        gap_factor: f64,
        default_interval: i64,
    ) -> Option<i64> {
        let pue_series = self
            .series
            .iter()
            .filter(|(k, _)| k.point == Point::FacilityInput || k.point.it_category().is_some())
            .filter_map(|(k, s)| s.last_ms.map(|l| (k.node, l)));
        let mut active_min: Option<i64> = None;
        let mut any_max: Option<i64> = None;
        for (node, last) in pue_series {
            any_max = Some(any_max.map_or(last, |m| m.max(last)));
            if self.is_active(last, node, now_ms, gap_factor, default_interval) {
                active_min = Some(active_min.map_or(last, |m| m.min(last)));
            }
        }
        active_min.or(any_max).map(|w| w.min(now_ms))
    }
}

impl Engine {
    /// The view of one site at `now_ms`, or `None` for an unknown site.
    pub fn site_view(&self, site_id: &str, now_ms: i64) -> Option<SiteView> {
        let site = self.sites.get(site_id)?;
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        let wm = site.watermark(now_ms, gf, di);
        let any_active = site.series.iter().any(|(k, s)| {
            s.last_ms
                .is_some_and(|l| site.is_active(l, k.node, now_ms, gf, di))
        });
        let rule = self.cfg.level_rule(site_id);
        let unseen = site.unseen(
            std::iter::once(Point::FacilityInput)
                .chain(IT_LEVELS.iter().filter_map(|&c| Point::for_category(c)))
                .chain(super::kpi::POINTS),
            self.cfg.site_expected.get(site_id),
            None,
        );
        let power = self.power_view(site, rule, &unseen, now_ms);
        let mut owned_cfg = self.cfg.site_kpis.get(site_id).cloned().unwrap_or_default();
        owned_cfg.live = self.live_carbon(site_id);
        owned_cfg.entered = self.entered_contracts(site_id);
        let kpi_cfg = &owned_cfg;
        let pue = Windows(
            WINDOWS
                .iter()
                .map(|&(name, len)| {
                    let v = self.window_view(site, rule, &unseen, name, len, wm, kpi_cfg);
                    (name, v)
                })
                .collect(),
        );
        let nodes = self.node_views(site, now_ms);
        let mut counts = NodeCounts::default();
        for n in &nodes {
            match n.state {
                "online" => counts.online += 1,
                "offline" => counts.offline += 1,
                "retired" => counts.retired += 1,
                _ => counts.stale += 1,
            }
        }
        counts.total = nodes.len() - counts.retired;
        let mut view = SiteView {
            site: site_id.to_owned(),
            ts_ms: now_ms,
            stale: !any_active,
            power,
            pue,
            nodes: counts,
            missing_batches: site.nodes.iter().map(|n| n.missing).sum(),
            capacity: self.capacity(site_id, site, now_ms),
            zones: self.zone_views(site, rule, wm),
            targets: Vec::new(),
        };
        if let Some(t) = self.cfg.site_targets.get(site_id) {
            view.targets = super::targets::views(t, &view);
        }
        Some(view)
    }

    fn power_view(&self, site: &Site, rule: LevelRule, unseen: &Unseen, now_ms: i64) -> PowerView {
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        let live = |point: Point| -> LevelStat {
            let (mut known, mut active, mut watts, mut estimated) = (0usize, 0usize, 0.0, false);
            let mut fill = 0.0;
            // Meters expected but never heard from count as not reporting.
            known += unseen.get(&point).map_or(0, Vec::len);
            for (k, s) in site.series_at(point) {
                if site.nodes[k.node].retired_ms.is_some() {
                    continue;
                }
                known += 1;
                if let (Some(last), Some((_, w))) = (s.last_ms, s.live) {
                    if site.is_active(last, k.node, now_ms, gf, di) {
                        active += 1;
                        watts += w;
                        estimated |= s.gauge().is_some_and(|g| g.estimated);
                    } else {
                        // Silent: its last known power stands in for it.
                        fill += w;
                    }
                }
            }
            LevelStat {
                value: watts,
                fill,
                coverage: if known > 0 {
                    active as f64 / known as f64
                } else {
                    0.0
                },
                estimated,
                known: known > 0,
            }
        };
        let fac = live(Point::FacilityInput);
        let its: Vec<(u8, LevelStat)> = IT_LEVELS
            .iter()
            .filter_map(|&c| Point::for_category(c).map(|p| (c, live(p))))
            .collect();
        let chosen = choose(&its, rule);
        let (ratio, quality, reason, category, it_w, cov_it) = match chosen {
            Some(i) => {
                let (c, it) = &its[i];
                let (r, q, why) = skewed(site, self.cfg.max_clock_skew_ms, judge(&fac, it));
                // No IT meter reporting: the IT power is unknown, not 0 W.
                let w = (it.coverage > 0.0).then_some(it.value);
                (r, q, why, Some(*c), w, it.coverage)
            }
            None => (None, "no_data", Some(no_it_meter(rule)), None, None, 0.0),
        };
        PowerView {
            label: "instantaneous power ratio (not PUE)",
            // Known only while a facility meter reports; with some silent, a lower bound
            // (coverage_facility says how much).
            facility_w: (fac.known && fac.coverage > 0.0).then_some(fac.value),
            it_w,
            ratio,
            category,
            coverage_it: round6(cov_it),
            coverage_facility: round6(fac.coverage),
            quality,
            reason,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn window_view(
        &self,
        site: &Site,
        rule: LevelRule,
        unseen: &Unseen,
        name: &'static str,
        len: i64,
        watermark: Option<i64>,
        kpi_cfg: &super::kpi::SiteKpiConfig,
    ) -> WindowView {
        let empty = |reason: &str| WindowView {
            label: format!("PUE, {name}"),
            value: None,
            category: None,
            coverage_it: 0.0,
            coverage_facility: 0.0,
            quality: "no_data",
            reason: Some(reason.to_owned()),
            dcie: None,
            from_ms: None,
            to_ms: None,
            span_share: Some(0.0),
            facility_kwh: 0.0,
            it_kwh: 0.0,
            facility_fill_kwh: 0.0,
            it_fill_kwh: 0.0,
            kpis: super::kpi::Kpis::default(),
        };
        let (Some(wm), Some(start)) = (watermark, site.data_start_ms) else {
            return empty("warming up: waiting for the site's meters to report");
        };
        let width = super::Level::width_for(len);
        let to = wm.div_euclid(width) * width;
        let from = (to - len).max((start + width - 1).div_euclid(width) * width);
        if from >= to {
            return empty("not enough data for this window yet");
        }
        let stat_in = |point: Point, from: i64, to: i64| -> LevelStat {
            let Some(level) = site.levels.get(&point) else {
                return LevelStat {
                    value: 0.0,
                    fill: 0.0,
                    coverage: 0.0,
                    estimated: false,
                    known: unseen.get(&point).is_some_and(|u| !u.is_empty()),
                };
            };
            let totals = level.ring_for(len).sum(from, to);
            let silent = site.silent_fill_at(point, from, to);
            let never = unseen.get(&point).map_or(&[][..], Vec::as_slice);
            let expected = expected_ms(site.spans_at(point, never), from, to);
            LevelStat {
                value: totals.energy_j,
                fill: totals.filled_j + silent,
                coverage: if expected > 0.0 {
                    (totals.covered_ms / expected).min(1.0)
                } else {
                    0.0
                },
                estimated: totals.estimated_j > 0.0,
                known: expected > 0.0,
            }
        };
        let level_stat = |point: Point| stat_in(point, from, to);
        let fac = level_stat(Point::FacilityInput);
        let its: Vec<(u8, LevelStat)> = IT_LEVELS
            .iter()
            .filter_map(|&c| Point::for_category(c).map(|p| (c, level_stat(p))))
            .collect();
        let Some(i) = choose(&its, rule) else {
            let mut v = empty(&no_it_meter(rule));
            v.coverage_facility = round6(fac.coverage);
            v.facility_kwh = fac.value / 3.6e6;
            v.from_ms = Some(from);
            v.to_ms = Some(to);
            v.span_share = Some(span_share(from, to, len));
            return v;
        };
        let (category, it) = &its[i];
        let rules = |j| short_span(skewed(site, self.cfg.max_clock_skew_ms, j), from, to, len);
        let (value, quality, reason) = rules(judge(&fac, it));
        // Split where an emission factor's period starts or ends, from the rings' sums (at
        // the window's resolution).
        let parts = super::kpi::parts(&kpi_cfg.boundaries(from, to), to, |p, a, b| {
            let s = stat_in(p, a, b);
            s.value + s.fill
        });
        let kpis = super::kpi::compute(&super::kpi::Inputs {
            facility: &fac,
            it: Some(it),
            pue: (value, quality),
            water: &level_stat(Point::WaterInput),
            onsite: &level_stat(Point::RenewableOnsite),
            reused: &level_stat(Point::EnergyReused),
            parts: &parts,
            cfg: kpi_cfg,
            from_ms: from,
            to_ms: to,
        })
        .judged_by(rules);
        WindowView {
            label: quality_label(*category, name),
            value,
            category: Some(*category),
            coverage_it: round6(it.coverage),
            coverage_facility: round6(fac.coverage),
            quality,
            reason,
            dcie: value.map(|v| 1.0 / v),
            from_ms: Some(from),
            to_ms: Some(to),
            span_share: Some(span_share(from, to, len)),
            facility_kwh: fac.value / 3.6e6,
            it_kwh: it.value / 3.6e6,
            facility_fill_kwh: fac.fill / 3.6e6,
            it_fill_kwh: it.fill / 3.6e6,
            kpis,
        }
    }

    /// Partial PUE per zone with both IT and its own overhead meters. A zone's pPUE does
    /// not add up or multiply into the site's PUE.
    fn zone_views(&self, site: &Site, rule: LevelRule, watermark: Option<i64>) -> Vec<ZoneView> {
        let (Some(wm), Some(start)) = (watermark, site.data_start_ms) else {
            return Vec::new();
        };
        let overhead = [Point::Cooling, Point::Lighting, Point::Other];
        let mut out = Vec::new();
        for (zone, levels) in &site.zone_levels {
            if !overhead.iter().any(|p| levels.contains_key(p)) {
                continue;
            }
            let mut ppue = std::collections::BTreeMap::new();
            let unseen = site.unseen(
                IT_LEVELS
                    .iter()
                    .filter_map(|&c| Point::for_category(c))
                    .chain(overhead),
                None,
                Some(zone),
            );
            for &(name, len) in &WINDOWS {
                let width = super::Level::width_for(len);
                let to = wm.div_euclid(width) * width;
                let from = (to - len).max((start + width - 1).div_euclid(width) * width);
                if from >= to {
                    continue;
                }
                let stat = |point: Point| -> (f64, f64, f64, f64, bool) {
                    let t = levels
                        .get(&point)
                        .map(|l| l.ring_for(len).sum(from, to))
                        .unwrap_or_default();
                    let pick = move |k: &super::SeriesKey, s: &super::Series| {
                        k.point == point && s.zone.as_deref() == Some(zone)
                    };
                    let never = unseen.get(&point).map_or(&[][..], Vec::as_slice);
                    let expected = expected_ms(site.spans(pick, never), from, to);
                    let silent = site.silent_fill(pick, from, to);
                    let fill = t.filled_j + silent;
                    (
                        t.energy_j,
                        fill,
                        t.covered_ms,
                        expected,
                        t.estimated_j > 0.0,
                    )
                };
                let its: Vec<(u8, LevelStat)> = IT_LEVELS
                    .iter()
                    .filter_map(|&c| Point::for_category(c).map(|p| (c, stat(p))))
                    .map(|(c, (e, fill, cov, exp, est))| {
                        (
                            c,
                            LevelStat {
                                value: e,
                                fill,
                                coverage: if exp > 0.0 { (cov / exp).min(1.0) } else { 0.0 },
                                estimated: est,
                                known: exp > 0.0,
                            },
                        )
                    })
                    .collect();
                let Some(i) = choose(&its, rule) else {
                    continue;
                };
                let (category, it) = &its[i];
                let (mut oh, mut oh_fill, mut oh_cov, mut oh_exp, mut oh_est) =
                    (0.0, 0.0, 0.0, 0.0, false);
                for p in overhead {
                    let (e, fill, cov, exp, est) = stat(p);
                    oh += e;
                    oh_fill += fill;
                    oh_cov += cov;
                    oh_exp += exp;
                    oh_est |= est;
                }
                let coverage_overhead = if oh_exp > 0.0 {
                    (oh_cov / oh_exp).min(1.0)
                } else {
                    0.0
                };
                // Uncovered meter-time filled as for the site's PUE.
                let (it_all, oh_all) = (it.value + it.fill, oh + oh_fill);
                let filled = Some((it_all + oh_all) / it_all);
                let (value, quality) = if it.value <= 0.0 || oh_exp <= 0.0 {
                    (None, "no_data")
                } else if it.coverage < FULL || coverage_overhead < FULL {
                    (filled, "partial")
                } else if it.estimated || oh_est {
                    (filled, "estimated")
                } else {
                    (filled, "measured")
                };
                let (_, quality, _) = short_span((value, quality, None), from, to, len);
                let sub = match category {
                    1 => '₁',
                    2 => '₂',
                    _ => '₃',
                };
                ppue.insert(
                    name,
                    ZoneWindow {
                        label: format!("pPUE{sub}, {name}"),
                        value,
                        category: Some(*category),
                        coverage_it: round6(it.coverage),
                        coverage_overhead: round6(coverage_overhead),
                        quality,
                        span_share: span_share(from, to, len),
                        it_kwh: it.value / 3.6e6,
                        overhead_kwh: oh / 3.6e6,
                    },
                );
            }
            out.push(ZoneView {
                zone: zone.clone(),
                ppue,
            });
        }
        out
    }

    fn node_views(&self, site: &Site, now_ms: i64) -> Vec<NodeView> {
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        let mut frozen: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
        let mut live: BTreeMap<usize, BTreeMap<&'static str, f64>> = BTreeMap::new();
        for (k, s) in &site.series {
            // A water meter's rate is litres per second, not power.
            let power = k.point.quantity() == dcwatt_common::protocol::Quantity::Energy;
            if let (Some(last), Some((_, w)), true) = (s.last_ms, s.live, power) {
                if site.is_active(last, k.node, now_ms, gf, di) {
                    *live
                        .entry(k.node)
                        .or_default()
                        .entry(k.point.as_str())
                        .or_default() += w;
                }
            }
            if s.counter_frozen || s.gauge_frozen {
                frozen.entry(k.node).or_default().push(format!(
                    "{}/{}",
                    k.point.as_str(),
                    site.components[k.component]
                ));
            }
        }
        site.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let state = if n.retired_ms.is_some() {
                    "retired"
                } else if n.offline_since_ms.is_some() {
                    "offline"
                } else if n
                    .last_seen_ms
                    .is_some_and(|t| now_ms - t > site.max_gap(i, gf, di))
                {
                    "stale"
                } else {
                    "online"
                };
                NodeView {
                    node: site.node_ids[i].clone(),
                    state,
                    role: n.role.map(|r| r.as_str()),
                    rack: n.rack.clone(),
                    zone: n.zone.clone(),
                    agent: n.agent.clone(),
                    interval_ms: node_interval(n, di),
                    last_seen_ms: n.last_seen_ms,
                    last_reading_ms: n.last_reading_ms,
                    seq: n.last_seq,
                    missing_batches: n.missing,
                    duplicate_batches: n.duplicates,
                    restarts: n.restarts,
                    frozen_meters: frozen.remove(&i).unwrap_or_default(),
                    clock_offset_ms: n.clock_offset_ms(),
                    refused: n.refused.clone(),
                    live_power_w: live.remove(&i).unwrap_or_default(),
                }
            })
            .collect()
    }

    fn capacity(&self, site_id: &str, site: &Site, now_ms: i64) -> CapacityView {
        let cfg = self
            .cfg
            .site_racks
            .get(site_id)
            .copied()
            .unwrap_or_default();
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        let mut in_use: std::collections::BTreeSet<String> = self
            .rack_power(site_id, now_ms)
            .into_iter()
            .filter(|(_, p)| p.reporting > 0 && p.w > cfg.in_use_floor_w)
            .map(|(r, _)| r)
            .collect();
        // A rack with a host that reports is in use, metered or not.
        in_use.extend(site.nodes.iter().enumerate().filter_map(|(i, n)| {
            let reporting = n.retired_ms.is_none()
                && n.offline_since_ms.is_none()
                && n.role == Some(dcwatt_common::protocol::Role::Host)
                && n.last_seen_ms
                    .is_some_and(|t| now_ms - t <= site.max_gap(i, gf, di));
            reporting.then(|| n.rack.clone()).flatten()
        }));
        let mut racks: std::collections::BTreeSet<&str> = site
            .nodes
            .iter()
            .filter(|n| n.retired_ms.is_none())
            .filter_map(|n| n.rack.as_deref())
            .collect();
        let budgets: Vec<(&str, f64)> = self
            .cfg
            .rack_budgets
            .iter()
            .filter(|((s, _), _)| s == site_id)
            .map(|((_, r), w)| (r.as_str(), *w))
            .collect();
        racks.extend(budgets.iter().map(|(r, _)| *r));
        let mut c = CapacityView {
            racks: racks.len(),
            racks_in_use: in_use.len(),
            standard_racks: total(budgets.iter().map(|(_, w)| *w)) / STANDARD_RACK_W,
            standard_racks_in_use: total(
                budgets
                    .iter()
                    .filter(|(r, _)| in_use.contains(*r))
                    .map(|(_, w)| *w),
            ) / STANDARD_RACK_W,
            racks_designed: cfg.designed,
            racks_installed: cfg.installed,
            standard_racks_designed: cfg.designed_w.map(|w| w / STANDARD_RACK_W),
            ..CapacityView::default()
        };
        c.standard_racks_installed = cfg
            .installed_w
            .map(|w| w / STANDARD_RACK_W)
            .or((!budgets.is_empty()).then_some(c.standard_racks));
        c.occupancy = cfg
            .installed
            .filter(|&n| n > 0)
            .map(|n| c.racks_in_use as f64 / f64::from(n));
        c.occupancy_standard = c
            .standard_racks_installed
            .filter(|&s| s > 0.0 && !budgets.is_empty())
            .map(|s| c.standard_racks_in_use / s);
        c.installed_share = match (cfg.installed, cfg.designed) {
            (Some(n), Some(d)) if d > 0 => Some(f64::from(n) / f64::from(d)),
            _ => None,
        };
        let mut in_use_pflops = 0.0;
        let mut measured = false;
        for (i, n) in site.nodes.iter().enumerate() {
            if n.retired_ms.is_some() {
                continue;
            }
            let mut node_pflops = 0.0;
            for g in &n.gpus {
                c.gpus = c.gpus.saturating_add(g.count);
                match g.fp16_tflops {
                    Some(t) => node_pflops += f64::from(g.count) * t / 1000.0,
                    None => c.gpus_without_fp16_figure += g.count,
                }
            }
            c.fp16_pflops += node_pflops;
            // Compute in use: the node's capacity × the mean utilization of its GPUs.
            let utils: Vec<f64> = n
                .latest
                .iter()
                .filter(|((m, _), (ts, _))| {
                    m == "gpu_util" && site.is_active(*ts, i, now_ms, gf, di)
                })
                .map(|(_, (_, v))| *v)
                .collect();
            if node_pflops > 0.0 && !utils.is_empty() {
                measured = true;
                in_use_pflops += node_pflops * total(utils.iter().copied()) / utils.len() as f64;
            }
        }
        c.fp16_pflops_in_use = measured.then_some(in_use_pflops);
        // Capacity counts whether or not a node is fresh (its disks are still there),
        // unless it was retired.
        let disk = |metric: &str| {
            let key = (Name::new(metric), Name::const_new("system"));
            site.nodes
                .iter()
                .filter(|n| n.retired_ms.is_none())
                .filter_map(|n| n.latest.get(&key))
                .map(|(_, v)| {
                    if v.is_finite() && *v > 0.0 {
                        *v as u64
                    } else {
                        0
                    }
                })
                .reduce(u64::saturating_add)
        };
        c.storage_bytes = disk("disk_total_bytes");
        c.storage_used_bytes = disk("disk_used_bytes");
        c
    }

    /// Latest point-less readings of every node of a site, one shared list per node that
    /// has any (rebuilt only for nodes whose readings changed since the last call).
    pub fn node_metrics(&self, site_id: &str) -> Vec<Arc<[MetricSample]>> {
        let Some(site) = self.sites.get(site_id) else {
            return Vec::new();
        };
        site.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.latest.is_empty())
            .map(|(i, n)| {
                n.samples
                    .get_or_init(|| {
                        let node = Name::new(&site.node_ids[i]);
                        n.latest
                            .iter()
                            .map(|((m, c), (ts, v))| MetricSample {
                                node: node.clone(),
                                metric: m.clone(),
                                component: c.clone(),
                                ts_ms: *ts,
                                value: *v,
                            })
                            .collect()
                    })
                    .clone()
            })
            .collect()
    }

    /// Live IT power per rack: the rack PDUs' outputs where any of its metered PDU
    /// outlets reports, else the sum of its hosts' inputs — never both. A meter's rack is
    /// the one its readings name, else its node's (from the birth). Meters of retired
    /// nodes are left out; a meter that is silent past its gap bound counts as known but
    /// not reporting, so a rack whose meters are all silent has no power, not 0 W.
    pub fn rack_power(
        &self,
        site_id: &str,
        now_ms: i64,
    ) -> std::collections::BTreeMap<String, super::RackPower> {
        use std::collections::BTreeMap;
        let mut hosts: BTreeMap<String, super::RackPower> = BTreeMap::new();
        let mut pdus: BTreeMap<String, super::RackPower> = BTreeMap::new();
        let Some(site) = self.sites.get(site_id) else {
            return hosts;
        };
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        for (k, s) in &site.series {
            let sums = match k.point {
                Point::ItInput => &mut hosts,
                Point::PduOutput => &mut pdus,
                _ => continue,
            };
            let node = &site.nodes[k.node];
            if node.retired_ms.is_some() {
                continue;
            }
            let Some(rack) = s.rack.as_ref().or(node.rack.as_ref()) else {
                continue;
            };
            let p = sums.entry(rack.clone()).or_default();
            p.meters += 1;
            if let (Some(last), Some((_, w))) = (s.last_ms, s.live) {
                if site.is_active(last, k.node, now_ms, gf, di) {
                    p.reporting += 1;
                    p.w += w;
                }
            }
        }
        for (rack, p) in pdus {
            let use_pdus = p.reporting > 0 || hosts.get(&rack).is_none_or(|h| h.reporting == 0);
            if use_pdus {
                hosts.insert(rack, p);
            }
        }
        hosts
    }

    /// Mean CPU and GPU utilization (0..1) of each rack's hosts, from their latest
    /// `cpu_util` (system) and `gpu_util` (per GPU) readings, and how many hosts each rack
    /// has. Readings older than the node's gap bound are left out.
    pub fn rack_loads(
        &self,
        site_id: &str,
        now_ms: i64,
    ) -> std::collections::BTreeMap<String, RackLoad> {
        let mut out: std::collections::BTreeMap<String, RackLoad> = Default::default();
        let Some(site) = self.sites.get(site_id) else {
            return out;
        };
        let (gf, di) = (self.cfg.gap_factor, self.cfg.default_interval_ms);
        for (i, n) in site.nodes.iter().enumerate() {
            let Some(rack) = &n.rack else { continue };
            if n.role == Some(dcwatt_common::protocol::Role::Meter) || n.retired_ms.is_some() {
                continue;
            }
            let load = out.entry(rack.clone()).or_default();
            load.hosts += 1;
            let mut cpu = None;
            let (mut gpu_sum, mut gpus) = (0.0, 0u32);
            for ((metric, _component), (ts, v)) in &n.latest {
                if !site.is_active(*ts, i, now_ms, gf, di) {
                    continue;
                }
                match metric.as_str() {
                    "cpu_util" => cpu = Some(*v),
                    "gpu_util" => {
                        gpu_sum += v;
                        gpus += 1;
                    }
                    _ => {}
                }
            }
            if let Some(c) = cpu {
                load.cpu_sum += c;
                load.cpu_hosts += 1;
            }
            load.gpu_sum += gpu_sum;
            load.gpus = load.gpus.saturating_add(gpus);
        }
        out
    }

    /// The nodes of a site, or `None` for an unknown site.
    pub fn nodes(&self, site_id: &str, now_ms: i64) -> Option<Vec<NodeView>> {
        self.sites.get(site_id).map(|s| self.node_views(s, now_ms))
    }
}
