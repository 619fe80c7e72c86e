//! state: the engine saved to disk, so that a collector restart — even `kill -9` or a power
//! loss — resumes its energy accumulators, PUE windows, coverage and sequence
//! (deduplication) state instead of starting afresh.
//!
//! Every `interval` the engine's owner hands over the engine encoded (CBOR, the size of
//! the saved row: never a second engine in memory), written to one SQLite row in a
//! blocking task: ingest never waits on disk.
//! At start-up the saved engine is restored before any message is taken, with the current
//! configuration.
//!
//! What a hard kill loses at most: the readings applied since the last save (one
//! interval, 5 s by default). Agents re-send what they sent in their last 3 s (see the
//! agent spool), and batches that are in the restored sequence state are dropped as
//! duplicates, so nothing is counted twice.

use crate::engine::{EncodedEngine, Engine};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Saved-state format; a state of another format is not restored.
const FORMAT: i64 = 1;

/// State settings.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The database file.
    pub path: PathBuf,
    /// How often the engine is saved.
    pub interval: Duration,
}

/// Counters shown on `/metrics`.
#[derive(Debug, Default)]
pub struct StateStats {
    /// Saves written.
    pub saves: AtomicU64,
    /// Saves that failed (logged).
    pub save_errors: AtomicU64,
    /// Size of the last save, bytes.
    pub last_bytes: AtomicU64,
    /// When the last save was taken, ms since the epoch.
    pub last_ms: AtomicU64,
}

/// A state file problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused.
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The saved engine could not be encoded or decoded.
    #[error("saved engine state: {0}")]
    Codec(String),
}

fn open(path: &Path) -> Result<Connection, StateError> {
    let err = |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS engine(
             id INTEGER PRIMARY KEY CHECK (id = 1), format INTEGER NOT NULL,
             saved_ms INTEGER NOT NULL, data BLOB NOT NULL)",
    )
    .map_err(err)?;
    Ok(conn)
}

impl StateError {
    /// Whether the file is damaged (move it aside) or merely unreadable now (keep it).
    pub fn fault(&self) -> super::files::Fault {
        match self {
            StateError::Sqlite { source, .. } => super::files::classify(source),
            StateError::Codec(_) => super::files::Fault::Damaged,
        }
    }
}

/// What start-up found in the state file.
#[derive(Debug)]
pub enum Found {
    /// A saved engine and when it was saved.
    Saved(Box<Engine>, i64),
    /// No file, or a file without a save: a first start.
    Nothing,
    /// A file of 0 bytes: whatever it held is gone.
    Empty,
    /// A damaged file, moved aside (or, when that failed, left where it was).
    Damaged {
        /// What was wrong.
        error: StateError,
        /// Where it went.
        aside: std::io::Result<PathBuf>,
    },
    /// A file that cannot be read now, kept: it is read again before every save and never
    /// overwritten while it cannot be.
    Unavailable(StateError),
}

/// Reads the state file at start-up, retrying a file that cannot be read now a few
/// times, and moving a damaged one aside.
pub fn restore(path: &Path) -> Found {
    const TRIES: u32 = 3;
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Found::Empty;
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match load(path) {
            Ok(Some((engine, saved_ms))) => return Found::Saved(Box::new(engine), saved_ms),
            Ok(None) => return Found::Nothing,
            Err(error) if error.fault() == super::files::Fault::Damaged => {
                let aside = super::files::set_aside(path, "damaged");
                return Found::Damaged { error, aside };
            }
            Err(error) if tries >= TRIES => return Found::Unavailable(error),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Encodes an engine.
///
/// # Errors
/// Encoding failed.
pub fn encode(engine: &Engine) -> Result<Vec<u8>, StateError> {
    let mut out = Vec::new();
    ciborium::into_writer(engine, &mut out).map_err(|e| StateError::Codec(e.to_string()))?;
    Ok(out)
}

/// Decodes an engine.
///
/// # Errors
/// The bytes are not a saved engine.
pub fn decode(bytes: &[u8]) -> Result<Engine, StateError> {
    ciborium::from_reader(bytes).map_err(|e| StateError::Codec(e.to_string()))
}

/// Writes a save.
///
/// # Errors
/// The database refused.
pub fn save(path: &Path, saved_ms: i64, data: &[u8]) -> Result<(), StateError> {
    save_on(&mut None, path, saved_ms, data)
}

/// The saved engine and when it was saved, if there is one of this format.
///
/// # Errors
/// The file or the saved data is unreadable.
pub fn load(path: &Path) -> Result<Option<(Engine, i64)>, StateError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = open(path)?;
    let row: Option<(i64, i64, Vec<u8>)> = conn
        .query_row(
            "SELECT format, saved_ms, data FROM engine WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(|source| StateError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
    match row {
        Some((FORMAT, saved_ms, data)) => Ok(Some((decode(&data)?, saved_ms))),
        Some((other, _, _)) => Err(StateError::Codec(format!(
            "format {other}; this dcwatt reads format {FORMAT}"
        ))),
        None => Ok(None),
    }
}

/// Before saving over a file that could not be read at start-up: reads it again. Once it
/// can be read it is moved aside (kept, never overwritten: the running engine started
/// afresh) and saves go ahead; until then they wait.
fn may_save(path: &Path) -> Result<(), StateError> {
    let aside = match load(path) {
        Ok(_) => super::files::set_aside(path, "unrestored"),
        Err(e) if e.fault() == super::files::Fault::Damaged => {
            super::files::set_aside(path, "damaged")
        }
        Err(e) => return Err(e),
    };
    match aside {
        Ok(to) => tracing::warn!(
            path = %path.display(), kept = %to.display(),
            "the state file can be read again; it was not restored (this collector started afresh) and is kept aside"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StateError::Codec(format!(
                "cannot move {} aside: {e}",
                path.display()
            )))
        }
    }
    Ok(())
}

/// Writes a save; a file found damaged is moved aside first and the save written anew.
fn save_or_replace(
    conn: &mut Option<Connection>,
    path: &Path,
    now: i64,
    data: &[u8],
) -> Result<(), StateError> {
    match save_on(conn, path, now, data) {
        Err(e) if e.fault() == super::files::Fault::Damaged => {
            *conn = None;
            let aside = super::files::set_aside(path, "damaged")
                .map_err(|io| StateError::Codec(format!("{e}; cannot move it aside: {io}")))?;
            tracing::error!(
                error = %e, path = %path.display(), aside = %aside.display(),
                "the state file was damaged; moved aside, saving anew"
            );
            save_on(conn, path, now, data)
        }
        other => other,
    }
}

/// Writes a save on the connection kept open between saves (opened when there is none):
/// a save needs no new file descriptor, so clients that take every other descriptor
/// cannot stop it. A failed save drops the connection; the next one opens it again.
fn save_on(
    conn: &mut Option<Connection>,
    path: &Path,
    now: i64,
    data: &[u8],
) -> Result<(), StateError> {
    let c = match conn.take() {
        Some(c) => c,
        None => open(path)?,
    };
    c.execute(
        "INSERT OR REPLACE INTO engine(id, format, saved_ms, data) VALUES (1, ?1, ?2, ?3)",
        params![FORMAT, now, data],
    )
    .map_err(|source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    })?;
    *conn = Some(c);
    Ok(())
}

async fn save_now(
    cfg: &StateConfig,
    copy: Arc<EncodedEngine>,
    stats: &StateStats,
    unrestored: &mut bool,
    conn: &Arc<std::sync::Mutex<Option<Connection>>>,
) {
    let now = copy.taken_ms;
    let path = cfg.path.clone();
    let check = *unrestored;
    let conn = conn.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut conn = conn
            .lock()
            .map_err(|_| StateError::Codec("the state connection's lock is poisoned".into()))?;
        if check {
            *conn = None;
            may_save(&path)?;
        }
        let data = copy
            .cbor
            .as_ref()
            .map_err(|e| StateError::Codec(e.clone()))?;
        save_or_replace(&mut conn, &path, now, data)?;
        Ok::<usize, StateError>(data.len())
    })
    .await;
    if matches!(result, Ok(Ok(_))) {
        *unrestored = false;
    }
    match result {
        Ok(Ok(bytes)) => {
            stats.saves.fetch_add(1, Ordering::Relaxed);
            stats.last_bytes.store(bytes as u64, Ordering::Relaxed);
            stats.last_ms.store(now.max(0) as u64, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            stats.save_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot save the engine state");
        }
        Err(e) => {
            stats.save_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "engine state save task failed");
        }
    }
}

/// The state sink: saves each copy of the engine its owner hands over (every
/// `state.interval`, and once more after the intake has stopped, so a clean stop loses
/// nothing). A copy that arrives while one is being written replaces any older one
/// waiting: only the newest state matters.
pub struct StateSink {
    /// Settings.
    pub cfg: StateConfig,
    /// The owner's encoded engines.
    pub copies: watch::Receiver<Option<Arc<EncodedEngine>>>,
    /// Counters.
    pub stats: Arc<StateStats>,
    /// The file could not be read at start-up: it is read again before every save and
    /// never overwritten while it cannot be (see [`Found::Unavailable`]).
    pub unrestored: bool,
    /// The database, kept open between saves (see [`StateSink::open`]).
    conn: Arc<std::sync::Mutex<Option<Connection>>>,
}

impl StateSink {
    /// A sink saving to `cfg.path`. Its database is opened now and kept open, so that a
    /// save needs no new descriptor (unless the file could not be read at start-up: then
    /// it is left alone until it can be).
    pub fn open(
        cfg: StateConfig,
        copies: watch::Receiver<Option<Arc<EncodedEngine>>>,
        stats: Arc<StateStats>,
        unrestored: bool,
    ) -> Self {
        let conn = (!unrestored).then(|| open(&cfg.path).ok()).flatten();
        StateSink {
            cfg,
            copies,
            stats,
            unrestored,
            conn: Arc::new(std::sync::Mutex::new(conn)),
        }
    }
}

impl super::Sink for StateSink {
    const NAME: &'static str = "state";

    /// Ends when the owner has handed over its last copy (the stop signal is not needed:
    /// the owner's end is the signal).
    async fn run(mut self, _stop: CancellationToken) {
        while self.copies.changed().await.is_ok() {
            let copy = self.copies.borrow_and_update().clone();
            if let Some(copy) = copy {
                save_now(
                    &self.cfg,
                    copy,
                    &self.stats,
                    &mut self.unrestored,
                    &self.conn,
                )
                .await;
            }
        }
    }
}

impl dcwatt_common::metrics::Source for StateStats {
    fn encode(&self, o: &mut dcwatt_common::metrics::Exposition) {
        let st = self;
        o.counter(
            "dcwatt_state_saves_total",
            "Engine state saves written (for restarts).",
            &st.saves,
        );
        o.counter(
            "dcwatt_state_save_errors_total",
            "Engine state saves that failed.",
            &st.save_errors,
        );
        o.gauge(
            "dcwatt_state_last_save_bytes",
            "Size of the last engine state save.",
            st.last_bytes.load(Ordering::Relaxed),
        );
        let last_ms = st.last_ms.load(Ordering::Relaxed);
        o.gauge(
            "dcwatt_state_last_save_timestamp_seconds",
            "When the last engine state save was taken (0: none yet).",
            last_ms as f64 / 1000.0,
        );
        if o.deprecated_names() {
            o.gauge(
                "dcwatt_state_last_save_timestamp_ms",
                "Deprecated: use dcwatt_state_last_save_timestamp_seconds. When the last engine state save was taken.",
                last_ms,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use dcwatt_common::protocol::{Point, Reading};

    #[test]
    fn a_saved_engine_comes_back_with_the_same_numbers() {
        let mut e = Engine::new(EngineConfig::default());
        let t0 = 1_800_000_000_000;
        for s in 0..=600 {
            let t = t0 + s * 1000;
            e.apply_readings(
                "dc",
                "m",
                &[Reading::gauge("power_w", 1500.0, t).at(Point::FacilityInput)],
                t,
            );
            e.apply_readings(
                "dc",
                "h",
                &[Reading::gauge("power_w", 1000.0, t).at(Point::ItInput)],
                t,
            );
            e.check_seq("dc", "h", s as u64, t);
        }
        // A live carbon-intensity series over the last minute (the 1m window's CO₂).
        let live = crate::engine::kpi::EmissionFactor {
            from_ms: t0 + 540_000,
            to_ms: t0 + 660_000,
            kg_per_kwh: 0.6,
            basis: crate::engine::kpi::Basis::Location,
            source: "grid operator".into(),
        };
        e.apply_carbon("dc", vec![live], 10).expect("room");
        // And a renewable contract entered over the API.
        let green = crate::engine::kpi::RenewableContract {
            from_ms: t0,
            to_ms: t0 + 3_600_000,
            kwh: 1.0,
            evidence: "GEC-1".into(),
            kind: "green_certificate".into(),
            entered_ms: None,
        };
        e.enter_contract("dc", green, t0).expect("entered");
        let now = t0 + 600_100;
        let dir = std::env::temp_dir().join(format!("dcwatt-state-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sqlite");
        let _ = std::fs::remove_file(&path);
        let data = encode(&e).expect("encode");
        save(&path, now, &data).expect("save");
        let (mut back, saved) = load(&path).expect("load").expect("a state");
        back.set_config(EngineConfig::default());
        assert_eq!(saved, now);
        let a = serde_json::to_value(e.site_view("dc", now)).expect("json");
        let b = serde_json::to_value(back.site_view("dc", now)).expect("json");
        assert_eq!(a, b);
        assert_eq!(a["pue"]["1m"]["value"], 1.5);
        // The live series came back: 1,500 W for a minute at 0.6 kg/kWh.
        let co2 = b["pue"]["1m"]["kpis"]["co2_kg"].as_f64().expect("co2");
        assert!((co2 - 1.5 / 60.0 * 0.6).abs() < 1e-12, "{co2}");
        // The contract came back: 1 kWh over the hour is 1/60 kWh in the minute.
        let kwh = b["pue"]["1m"]["kpis"]["renewable_contract_kwh"].as_f64();
        assert!(
            kwh.is_some_and(|k| (k - 1.0 / 60.0).abs() < 1e-6),
            "{kwh:?}"
        );
        assert_eq!(back.entered_contracts("dc").len(), 1);
        // The windows keep their span: ten minutes of data are a sixth of the hour.
        assert_eq!(a["pue"]["1m"]["span_share"], 1.0);
        assert_eq!(
            (&b["pue"]["1h"]["span_share"], &b["pue"]["1h"]["quality"]),
            (&serde_json::json!(0.166667), &serde_json::json!("partial"))
        );
        assert_eq!(b["pue"]["1h"]["reason"], "10 min of 1 h so far");
        // The sequence state came back too: the last batch is a duplicate.
        assert_eq!(
            back.check_seq("dc", "h", 600, now),
            crate::engine::SeqCheck::Duplicate
        );
        // A state saved by another format is refused, not misread.
        let conn = open(&path).expect("open");
        conn.execute("UPDATE engine SET format = 99", [])
            .expect("update");
        assert!(load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
