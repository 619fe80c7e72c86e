//! The collector's own files (the state, the history) when they are damaged or cannot be
//! read: the collector always starts.
//!
//! - A *damaged* file (not a database, corrupt, an undecodable save) is moved aside with a
//!   timestamp — `{name}.damaged-{UTC time}`, with its `-wal` and `-shm` — logged at ERROR
//!   with what was lost, and a new one is created.
//! - A file that merely cannot be read *now* (an I/O error, a full disk, a lock) is kept,
//!   never overwritten, and retried.

use std::path::{Path, PathBuf};

/// Why a file the collector keeps could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Its content is not what the collector wrote: move it aside and start a new one.
    Damaged,
    /// It cannot be read now: keep it and retry.
    Unavailable,
}

/// What an SQLite error says about the file.
pub fn classify(e: &rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Fault::Damaged,
        _ => Fault::Unavailable,
    }
}

/// Moves `path` (and its `-wal` and `-shm` companions) aside as
/// `{path}.{tag}-{UTC time}`; returns where it went.
///
/// # Errors
/// The rename failed (the file stays where it was).
pub fn set_aside(path: &Path, tag: &str) -> std::io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{tag}-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    for ext in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(ext);
        let mut to = aside.as_os_str().to_owned();
        to.push(ext);
        // The companions may not exist; a database without them is still whole.
        let _ = std::fs::rename(&from, &to);
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_database_is_told_from_an_unreadable_one() {
        let dir = std::env::temp_dir().join(format!("dcwatt-files-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("x.sqlite");
        std::fs::write(
            &path,
            b"this is not a database, it is a text file of some length",
        )
        .expect("write");
        std::fs::write(dir.join("x.sqlite-wal"), b"").expect("write");
        let e = rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE IF NOT EXISTS t(x)"))
            .expect_err("not a database");
        assert_eq!(classify(&e), Fault::Damaged);
        let aside = set_aside(&path, "damaged").expect("moved");
        assert!(!path.exists() && aside.exists());
        assert!(aside.display().to_string().contains(".damaged-20"));
        let mut wal = aside.into_os_string();
        wal.push("-wal");
        assert!(Path::new(&wal).exists(), "its companion went with it");
        let missing =
            rusqlite::Connection::open(dir.join("no/such/dir/x.sqlite")).expect_err("no directory");
        assert_eq!(classify(&missing), Fault::Unavailable);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
