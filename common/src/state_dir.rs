//! state_dir: the one directory a binary writes to (history, engine and alert state, spools,
//! sequence files). Relative paths in the configuration resolve against it, never against
//! the working directory, so a service started from `/` with a read-only working directory
//! behaves like one started by hand.
//!
//! Default, lowest first: the working directory; `$STATE_DIRECTORY` (set by systemd's
//! `StateDirectory=`); the `state_dir` key (file or `DCWATT__STATE_DIR`); `--state-dir`.

use crate::settings::{Loader, Problems};
use std::path::{Path, PathBuf};

/// The configuration key.
pub const KEY: &str = "state_dir";

/// Reads `state_dir` and checks that it is (or can be made) a writable directory. Problems
/// are recorded at `state_dir`, naming the path. Nothing is created here, so that
/// `check-config` changes nothing; [`create`] makes it at start.
pub fn from_loader(l: &Loader, p: &mut Problems) -> PathBuf {
    let dir: PathBuf = l.get_opt::<PathBuf>(KEY, p).unwrap_or_else(default_dir);
    if dir.as_os_str().is_empty() {
        p.push(KEY, "must not be empty");
        return PathBuf::from(".");
    }
    if let Err(why) = check(&dir) {
        p.push(KEY, why);
    }
    dir
}

/// The default when `state_dir` is not set: systemd's `$STATE_DIRECTORY` (its first entry),
/// else the working directory.
fn default_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `dir` joined with `path` unless `path` is absolute.
pub fn resolve(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// Checks that `dir` is a writable directory, or that its nearest existing ancestor is one
/// in which it can be created.
///
/// # Errors
/// Why not, naming the path, in words an operator can act on.
pub fn check(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => writable(dir).map_err(|e| {
            format!(
                "{} is not writable by this user ({e}); give the service user write access or choose another state_dir",
                dir.display()
            )
        }),
        Ok(_) => Err(format!("{} exists and is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut parent = dir.parent();
            while let Some(p) = parent {
                let p = if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                };
                match std::fs::metadata(p) {
                    Ok(m) if m.is_dir() => {
                        return writable(p).map_err(|e| {
                            format!(
                                "{} does not exist and cannot be created: {} is not writable by this user ({e})",
                                dir.display(),
                                p.display()
                            )
                        });
                    }
                    Ok(_) => {
                        return Err(format!(
                            "{} cannot be created: {} is not a directory",
                            dir.display(),
                            p.display()
                        ))
                    }
                    Err(_) => parent = p.parent(),
                }
            }
            Err(format!("{} cannot be created", dir.display()))
        }
        Err(e) => Err(format!("{} cannot be read: {e}", dir.display())),
    }
}

/// Whether a file can be created in `dir` (the only test that holds for ACLs, read-only
/// mounts and `ProtectSystem=` alike).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".dcwatt-write-test-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The state directory could not be created at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the state directory {path}: {source}")]
pub struct CreateError {
    /// The directory.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// Creates `dir` (and its parents) when missing, mode 0750.
///
/// # Errors
/// It cannot be created.
pub fn create(dir: &Path) -> Result<(), CreateError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| CreateError {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_state_dir() {
        let d = Path::new("/var/lib/dcwatt-collector");
        assert_eq!(
            resolve(d, Path::new("history.sqlite")),
            d.join("history.sqlite")
        );
        assert_eq!(
            resolve(d, Path::new("/srv/h.sqlite")),
            Path::new("/srv/h.sqlite")
        );
    }

    #[test]
    fn missing_is_fine_when_creatable_and_a_file_is_refused() {
        let base = std::env::temp_dir().join(format!("dcwatt-statedir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let missing = base.join("a/b");
        assert_eq!(check(&missing), Ok(()));
        create(&missing).unwrap();
        assert!(missing.is_dir());
        let file = base.join("f");
        std::fs::write(&file, "x").unwrap();
        let err = check(&file).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        let under_file = file.join("x");
        assert!(check(&under_file).is_err());
        let l =
            Loader::from_toml(&format!("state_dir = {:?}", file.display().to_string())).unwrap();
        let mut p = Problems::default();
        from_loader(&l, &mut p);
        assert_eq!(p.0.len(), 1, "{p}");
        assert_eq!(p.0[0].path, "state_dir");
        assert!(p.0[0].message.contains(&file.display().to_string()), "{p}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
