//! Alert states and history, kept across collector restarts in one JSON file written
//! atomically (temporary file, fsync, rename) after every evaluation that changed them.
//! At most one evaluation interval of changes is lost in a crash.

use super::{AlertKey, AlertState, Transition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many transitions the history keeps.
pub const HISTORY: usize = 1000;

/// Alert states and recent transitions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Book {
    /// Current state per alert (inactive alerts without a suppression are dropped).
    #[serde(with = "as_pairs")]
    pub states: BTreeMap<AlertKey, AlertState>,
    /// Most recent transitions, oldest first.
    pub history: VecDeque<Transition>,
}

impl Book {
    /// Records transitions, keeping at most [`HISTORY`].
    pub fn record(&mut self, t: &[Transition]) {
        self.history.extend(t.iter().cloned());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }
}

mod as_pairs {
    use super::{AlertKey, AlertState};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<AlertKey, AlertState>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<AlertKey, AlertState>, D::Error> {
        Ok(Vec::<(AlertKey, AlertState)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// Where the book is kept.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// A store at `path` (its directory is created when missing).
    pub fn new(path: PathBuf) -> Self {
        Store { path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the book; a missing file is an empty book.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(&self) -> Result<Book, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Writes the book atomically.
    ///
    /// # Errors
    /// The directory or file cannot be written.
    pub fn save(&self, book: &Book) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec(book).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Change, Phase};

    #[test]
    fn round_trip_and_bounded_history() {
        let dir = std::env::temp_dir().join(format!("dcwatt-alert-store-{}", std::process::id()));
        let store = Store::new(dir.join("sub/alerts.json"));
        assert!(
            store.load().unwrap().states.is_empty(),
            "missing file is an empty book"
        );
        let key = AlertKey {
            rule: "r".into(),
            site: "s".into(),
            target: "n".into(),
        };
        let mut book = Book::default();
        book.states.insert(
            key.clone(),
            AlertState {
                phase: Phase::Firing,
                since_ms: 5,
                ..AlertState::default()
            },
        );
        let t = Transition {
            alert: key.id(),
            key: key.clone(),
            change: Change::Fired,
            at_ms: 5,
            since_ms: 5,
            value: Some(1.0),
            threshold: 0.5,
            severity: "warning".into(),
            summary: "x".into(),
            labels: BTreeMap::new(),
        };
        book.record(&vec![t; HISTORY + 10]);
        assert_eq!(book.history.len(), HISTORY);
        store.save(&book).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.states[&key].phase, Phase::Firing);
        assert_eq!(back.history.len(), HISTORY);
        std::fs::write(store.path(), "{garbage").unwrap();
        assert!(store.load().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
