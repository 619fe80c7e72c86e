//! The history database: one SQLite file (WAL mode), written by one thread, read by the
//! API through connections of its own.
//!
//! Tables:
//! - `derived(site, series, key, ts, value, category, coverage, quality)`: one row per
//!   site, series (pue, power_ratio, facility_w, it_w, rack_power_w, rack_utilization,
//!   nodes_online), key (the window or the rack; '' for none) and minute.
//! - `energy(site, point, ts, energy_j, covered_ms, expected_ms, estimated_j)`: closed
//!   minutes of energy per measurement point: any period's PUE is a sum over them.
//! - `raw_series(id, site, node, metric, component, point)` and `raw(series, ts, value)`:
//!   raw readings, for a shorter retention.

use crate::engine::kpi::SiteKpiConfig;
use crate::engine::{period_kpi_view, MinuteEnergy, PeriodTotals, WindowView};
use crate::engine::{Batch, SiteSnapshot};
use dcwatt_common::protocol::{Name, Point};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const SCHEMA_VERSION: i64 = 1;
const MINUTE_MS: i64 = 60_000;

/// A history database error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("history database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by another version of dcwatt.
    #[error("history database: schema version {found}; this dcwatt knows {SCHEMA_VERSION}")]
    Schema {
        /// Version found in the file.
        found: i64,
    },
    /// The writer thread could not start.
    #[error("history writer thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One derived value.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedRow {
    /// Site.
    pub site: String,
    /// Series name.
    pub series: &'static str,
    /// Window or rack; empty for none.
    pub key: String,
    /// Start of the minute.
    pub ts_ms: i64,
    /// The value, when there is one.
    pub value: Option<f64>,
    /// PUE category.
    pub category: Option<u8>,
    /// IT coverage.
    pub coverage: Option<f64>,
    /// Quality.
    pub quality: Option<&'static str>,
}

/// The rows one site snapshot becomes, stamped with the start of its minute.
pub fn derived_rows(s: &SiteSnapshot) -> Vec<DerivedRow> {
    let v = &s.view;
    let ts = v.ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let row = |series, key: &str, value| DerivedRow {
        site: v.site.clone(),
        series,
        key: key.to_owned(),
        ts_ms: ts,
        value,
        category: None,
        coverage: None,
        quality: None,
    };
    let mut rows = Vec::new();
    for (window, w) in &v.pue.0 {
        rows.push(DerivedRow {
            category: w.category,
            coverage: Some(w.coverage_it),
            quality: Some(w.quality),
            ..row("pue", window, w.value)
        });
    }
    rows.push(DerivedRow {
        category: v.power.category,
        coverage: Some(v.power.coverage_it),
        quality: Some(v.power.quality),
        ..row("power_ratio", "", v.power.ratio)
    });
    rows.push(row("facility_w", "", v.power.facility_w));
    rows.push(row("it_w", "", v.power.it_w));
    rows.push(row("nodes_online", "", Some(v.nodes.online as f64)));
    for r in &s.racks {
        if r.power_w.is_some() {
            rows.push(DerivedRow {
                quality: Some(r.quality),
                coverage: Some(f64::from(r.meters_reporting) / f64::from(r.meters.max(1))),
                ..row("rack_power_w", &r.rack, r.power_w)
            });
        }
        if r.utilization.is_some() {
            rows.push(row("rack_utilization", &r.rack, r.utilization));
        }
    }
    rows
}

/// Series the history keeps, and whether a key (window or rack) is needed.
pub const SERIES: [(&str, &str); 7] = [
    ("pue", "window"),
    ("power_ratio", ""),
    ("facility_w", ""),
    ("it_w", ""),
    ("nodes_online", ""),
    ("rack_power_w", "rack"),
    ("rack_utilization", "rack"),
];

/// A series resampled to a step.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Resampled {
    /// Start of each step, ms.
    pub time: Vec<i64>,
    /// The value in each step (null where there is none).
    pub value: Vec<Option<f64>>,
    /// The PUE category of each value (PUE series only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<Option<u8>>,
    /// The IT coverage of each value (PUE series only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coverage: Vec<Option<f64>>,
    /// The quality of each value (PUE series only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<Option<String>>,
}

/// A node as the inventory keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryRow {
    /// Site.
    pub site: String,
    /// Node.
    pub node: String,
    /// `host` or `meter`, from its birth.
    pub role: Option<String>,
    /// Rack, from its birth.
    pub rack: Option<String>,
    /// Zone, from its birth.
    pub zone: Option<String>,
    /// Batch interval, ms.
    pub interval_ms: Option<i64>,
    /// When it was last heard from.
    pub last_seen_ms: i64,
    /// Retired by an operator: leaves the inventory.
    pub retired: bool,
}

/// The nodes of a snapshot, as the inventory keeps them (those never heard from are left
/// out).
pub fn inventory_rows(s: &crate::engine::SiteSnapshot) -> Vec<InventoryRow> {
    s.nodes
        .iter()
        .filter_map(|n| {
            Some(InventoryRow {
                site: s.view.site.clone(),
                node: n.node.clone(),
                role: n.role.map(str::to_owned),
                rack: n.rack.clone(),
                zone: n.zone.clone(),
                interval_ms: Some(n.interval_ms),
                last_seen_ms: n.last_seen_ms?,
                retired: n.state == "retired",
            })
        })
        .collect()
}

/// The history database.
pub struct Store {
    conn: Connection,
    series_ids: HashMap<SeriesKey, i64>,
}

/// A raw series: site, node, metric, component and point, as names held inline (up to 24
/// bytes), so that looking one up per reading allocates nothing and 100,000 of them take
/// a fifth of the memory five strings did.
type SeriesKey = (Name, Name, Name, Name, Option<Point>);

/// Fixed steps of `step_ms` from `from`: the start of the step holding a time.
pub fn every(from: i64, step_ms: i64) -> impl Fn(i64) -> i64 {
    let step_ms = step_ms.max(1);
    move |ts| from + (ts - from).div_euclid(step_ms) * step_ms
}

impl Store {
    /// Opens (creating when missing) the database for writing.
    ///
    /// # Errors
    /// The file cannot be opened or has a schema this version does not know.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS derived(
                 site TEXT NOT NULL, series TEXT NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL,
                 value REAL, category INTEGER, coverage REAL, quality TEXT,
                 PRIMARY KEY(site, series, key, ts)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS derived_ts ON derived(ts);
             CREATE TABLE IF NOT EXISTS energy(
                 site TEXT NOT NULL, point TEXT NOT NULL, ts INTEGER NOT NULL,
                 energy_j REAL NOT NULL, covered_ms REAL NOT NULL, expected_ms REAL NOT NULL,
                 estimated_j REAL NOT NULL, filled_j REAL NOT NULL DEFAULT 0,
                 PRIMARY KEY(site, point, ts)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS energy_ts ON energy(ts);
             CREATE TABLE IF NOT EXISTS raw_series(
                 id INTEGER PRIMARY KEY, site TEXT NOT NULL, node TEXT NOT NULL,
                 metric TEXT NOT NULL, component TEXT NOT NULL, point TEXT NOT NULL,
                 UNIQUE(site, node, metric, component, point));
             CREATE TABLE IF NOT EXISTS inventory(
                 site TEXT NOT NULL, node TEXT NOT NULL, role TEXT, rack TEXT, zone TEXT,
                 interval_ms INTEGER, last_seen_ms INTEGER NOT NULL,
                 PRIMARY KEY(site, node)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS raw(
                 series INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
                 PRIMARY KEY(series, ts)) WITHOUT ROWID;",
        )?;
        // Added after the first release: older files get the column (no fill recorded).
        let has_fill: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('energy') WHERE name = 'filled_j'")?
            .exists([])?;
        if !has_fill {
            conn.execute_batch("ALTER TABLE energy ADD COLUMN filled_j REAL NOT NULL DEFAULT 0")?;
        }
        let version: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(StoreError::Schema { found }),
        }
        Ok(Store {
            conn,
            series_ids: HashMap::new(),
        })
    }

    /// Opens an existing database for reading only (the API).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open_read(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store {
            conn,
            series_ids: HashMap::new(),
        })
    }

    /// Starts a transaction; everything until [`Store::commit`] is written at once.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn begin(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        Ok(())
    }

    /// Commits the transaction.
    ///
    /// # Errors
    /// SQLite refused (e.g. the disk is full); the transaction is rolled back.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            // Ids created in the rolled-back transaction are gone.
            self.series_ids.clear();
            return Err(e.into());
        }
        Ok(())
    }

    /// Abandons the transaction.
    pub fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.series_ids.clear();
    }

    /// Records the nodes a snapshot lists (a retired node leaves the inventory): the
    /// collector knows them again after its state was lost (see [`Store::inventory`]).
    ///
    /// # Errors
    /// The database refused.
    pub fn put_inventory(&mut self, nodes: &[InventoryRow]) -> Result<(), StoreError> {
        let mut put = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO inventory(site, node, role, rack, zone, interval_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for n in nodes.iter().filter(|n| !n.retired) {
            put.execute(rusqlite::params![
                n.site,
                n.node,
                n.role,
                n.rack,
                n.zone,
                n.interval_ms,
                n.last_seen_ms
            ])?;
        }
        let mut del = self
            .conn
            .prepare_cached("DELETE FROM inventory WHERE site = ?1 AND node = ?2")?;
        for n in nodes.iter().filter(|n| n.retired) {
            del.execute(rusqlite::params![n.site, n.node])?;
        }
        Ok(())
    }

    /// The nodes heard from since `since_ms`.
    ///
    /// # Errors
    /// The database refused.
    pub fn inventory(&self, since_ms: i64) -> Result<Vec<InventoryRow>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT site, node, role, rack, zone, interval_ms, last_seen_ms FROM inventory
             WHERE last_seen_ms >= ?1 ORDER BY site, node",
        )?;
        let rows = q.query_map([since_ms], |r| {
            Ok(InventoryRow {
                site: r.get(0)?,
                node: r.get(1)?,
                role: r.get(2)?,
                rack: r.get(3)?,
                zone: r.get(4)?,
                interval_ms: r.get(5)?,
                last_seen_ms: r.get(6)?,
                retired: false,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes derived rows (a minute written twice keeps the newer row).
    ///
    /// # Errors
    /// SQLite refused.
    pub fn put_derived(&mut self, rows: &[DerivedRow]) -> Result<(), StoreError> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO derived(site, series, key, ts, value, category, coverage, quality)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in rows {
            st.execute(params![
                r.site, r.series, r.key, r.ts_ms, r.value, r.category, r.coverage, r.quality
            ])?;
        }
        Ok(())
    }

    /// Writes closed minutes of energy (a minute written twice keeps the newer totals).
    ///
    /// # Errors
    /// SQLite refused.
    pub fn put_minutes(&mut self, site: &str, minutes: &[MinuteEnergy]) -> Result<(), StoreError> {
        let mut st = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO energy(site, point, ts, energy_j, covered_ms, expected_ms, estimated_j, filled_j)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for m in minutes {
            st.execute(params![
                site,
                m.point.as_str(),
                m.ts_ms,
                m.energy_j,
                m.covered_ms,
                m.expected_ms,
                m.estimated_j,
                m.filled_j
            ])?;
        }
        Ok(())
    }

    fn series_id(&mut self, key: SeriesKey) -> Result<i64, StoreError> {
        if let Some(id) = self.series_ids.get(&key) {
            return Ok(*id);
        }
        let (site, node, metric, component, point) = &key;
        let (site, node, metric, component) = (
            site.as_str(),
            node.as_str(),
            metric.as_str(),
            component.as_str(),
        );
        let point = point.map_or("", Point::as_str);
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO raw_series(site, node, metric, component, point)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![site, node, metric, component, point])?;
        let id: i64 = self
            .conn
            .prepare_cached(
                "SELECT id FROM raw_series WHERE site = ?1 AND node = ?2 AND metric = ?3
             AND component = ?4 AND point = ?5",
            )?
            .query_row(params![site, node, metric, component, point], |r| r.get(0))?;
        self.series_ids.insert(key, id);
        Ok(id)
    }

    /// Writes raw readings. Returns how many were written.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn put_raw(&mut self, b: &Batch) -> Result<usize, StoreError> {
        let mut n = 0;
        let (site, node) = (Name::new(&b.site), Name::new(&b.node));
        for r in &b.readings {
            let key = (
                site.clone(),
                node.clone(),
                r.metric.clone(),
                r.component.clone(),
                r.point,
            );
            let id = self.series_id(key)?;
            n += self
                .conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO raw(series, ts, value) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id, r.ts_ms, r.value])?;
        }
        Ok(n)
    }

    /// Deletes derived values and energy older than `derived_before`, raw readings older
    /// than `raw_before`. Returns the rows deleted.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn prune(&mut self, derived_before: i64, raw_before: i64) -> Result<usize, StoreError> {
        let mut n = self
            .conn
            .execute("DELETE FROM derived WHERE ts < ?1", [derived_before])?;
        n += self
            .conn
            .execute("DELETE FROM energy WHERE ts < ?1", [derived_before])?;
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM raw_series")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut st = self
            .conn
            .prepare_cached("DELETE FROM raw WHERE series = ?1 AND ts < ?2")?;
        for id in ids {
            n += st.execute(params![id, raw_before])?;
        }
        Ok(n)
    }

    /// A derived series over `[from, to)` in the steps `bucket` gives (the start of the
    /// step each time falls in: [`every`] for fixed steps, or local days). Rates and power
    /// are averaged over each step; PUE and the power ratio take the last value in each
    /// step (each is already a ratio of sums over its window: averaging ratios would be
    /// wrong).
    ///
    /// # Errors
    /// SQLite refused.
    pub fn series(
        &self,
        site: &str,
        series: &str,
        key: &str,
        from: i64,
        to: i64,
        bucket: &dyn Fn(i64) -> i64,
    ) -> Result<Resampled, StoreError> {
        let is_ratio = matches!(series, "pue" | "power_ratio");
        let mut st = self.conn.prepare_cached(
            "SELECT ts, value, category, coverage, quality FROM derived
             WHERE site = ?1 AND series = ?2 AND key = ?3 AND ts >= ?4 AND ts < ?5 ORDER BY ts",
        )?;
        type Row = (i64, Option<f64>, Option<u8>, Option<f64>, Option<String>);
        let rows = st.query_map(params![site, series, key, from, to], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        let mut out = Resampled::default();
        // (step start, sum, count, last row)
        let mut cur: Option<(i64, f64, u32, Row)> = None;
        let push = |out: &mut Resampled, c: (i64, f64, u32, Row)| {
            let (start, sum, count, last) = c;
            out.time.push(start);
            if is_ratio {
                out.value.push(last.1);
                out.category.push(last.2);
                out.coverage.push(last.3);
                out.quality.push(last.4);
            } else {
                out.value.push((count > 0).then(|| sum / f64::from(count)));
            }
        };
        for row in rows {
            let row: Row = row?;
            let start = bucket(row.0);
            match &mut cur {
                Some(c) if c.0 == start => {
                    if let Some(v) = row.1 {
                        c.1 += v;
                        c.2 += 1;
                    }
                    c.3 = row;
                }
                _ => {
                    if let Some(c) = cur.take() {
                        push(&mut out, c);
                    }
                    let (sum, count) = row.1.map_or((0.0, 0), |v| (v, 1));
                    cur = Some((start, sum, count, row));
                }
            }
        }
        if let Some(c) = cur.take() {
            push(&mut out, c);
        }
        Ok(out)
    }

    /// Sums of closed minutes per point over `[from, to)`, in the steps `bucket` gives
    /// (the start of the step each minute falls in; one step when it maps every minute to
    /// `from`).
    ///
    /// # Errors
    /// SQLite refused.
    pub fn energy_steps(
        &self,
        site: &str,
        from: i64,
        to: i64,
        bucket: &dyn Fn(i64) -> i64,
    ) -> Result<BTreeMap<i64, BTreeMap<Point, PeriodTotals>>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT ts, point, energy_j, covered_ms, expected_ms, estimated_j, filled_j FROM energy
             WHERE site = ?1 AND ts >= ?2 AND ts < ?3",
        )?;
        let mut out: BTreeMap<i64, BTreeMap<Point, PeriodTotals>> = BTreeMap::new();
        let rows = st.query_map(params![site, from, to], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, f64>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, f64>(5)?,
                r.get::<_, f64>(6)?,
            ))
        })?;
        for row in rows {
            let (ts, point, energy_j, covered_ms, expected_ms, estimated_j, filled_j) = row?;
            let Some(point) = Point::from_name(&point) else {
                continue;
            };
            let start = bucket(ts);
            out.entry(start)
                .or_default()
                .entry(point)
                .or_default()
                .add(&MinuteEnergy {
                    ts_ms: ts,
                    point,
                    energy_j,
                    covered_ms,
                    expected_ms,
                    estimated_j,
                    filled_j,
                });
        }
        Ok(out)
    }

    /// Facility and IT energy and the PUE over `[from, to)`, and the figures beyond PUE
    /// that need no emission factors or contracts.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn energy(
        &self,
        site: &str,
        from: i64,
        to: i64,
        rule: crate::engine::LevelRule,
    ) -> Result<(WindowView, u64), StoreError> {
        self.energy_kpis(site, from, to, rule, &SiteKpiConfig::default())
    }

    /// Facility and IT energy, the PUE and every figure beyond it over `[from, to)`, the
    /// minutes summed apart in each of the site's emission factor periods (`cfg`).
    ///
    /// # Errors
    /// SQLite refused.
    pub fn energy_kpis(
        &self,
        site: &str,
        from: i64,
        to: i64,
        rule: crate::engine::LevelRule,
        cfg: &SiteKpiConfig,
    ) -> Result<(WindowView, u64), StoreError> {
        let starts = cfg.boundaries(from, to);
        let part = |ts: i64| crate::zone::step_of(&starts, ts).map_or(from, |(s, _)| s);
        let parts = self.energy_steps(site, from, to, &part)?;
        let minutes: u64 = self.conn.query_row(
            "SELECT COUNT(DISTINCT ts) FROM energy WHERE site = ?1 AND ts >= ?2 AND ts < ?3",
            params![site, from, to],
            |r| r.get(0),
        )?;
        Ok((period_kpi_view(&parts, rule, cfg, from, to), minutes))
    }

    /// Sites with any history.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn sites(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT site FROM energy UNION SELECT DISTINCT site FROM derived",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows in the raw table (for tests and sizing).
    ///
    /// # Errors
    /// SQLite refused.
    pub fn raw_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM raw", [], |r| r.get(0))?)
    }

    /// Raw readings of one node and metric over `[from, to)`.
    ///
    /// # Errors
    /// SQLite refused.
    pub fn raw(
        &self,
        site: &str,
        node: &str,
        metric: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT raw.ts, raw.value FROM raw JOIN raw_series s ON s.id = raw.series
             WHERE s.site = ?1 AND s.node = ?2 AND s.metric = ?3 AND raw.ts >= ?4 AND raw.ts < ?5
             ORDER BY raw.ts",
        )?;
        let rows = st.query_map(params![site, node, metric, from, to], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
