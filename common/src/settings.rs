//! Configuration loading shared by both binaries.
//!
//! Sources, later ones winning: built-in defaults, the TOML file given with `--config`, then
//! environment variables `DCWATT__SECTION__KEY` (prefix `DCWATT`, `__` between levels, so
//! keys that contain `_` stay intact). Every section is read on its own so that all
//! problems are reported together, each with its dotted path.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `mqtt.port`.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

/// Everything wrong with a configuration, reported at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing is wrong, else all problems.
    ///
    /// # Errors
    /// At least one problem was recorded.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  {}: {}", p.path, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The merged configuration sources, read section by section.
pub struct Loader {
    cfg: config::Config,
}

impl Loader {
    /// Merges the file (when given; it must exist) and the `DCWATT__` environment.
    ///
    /// # Errors
    /// The file is missing or not valid TOML.
    pub fn new(file: Option<&Path>) -> Result<Self, Problems> {
        Self::with_env(file, config::Environment::with_prefix("DCWATT"))
    }

    fn with_env(file: Option<&Path>, env: config::Environment) -> Result<Self, Problems> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // Values stay strings until a key's type asks for a number or a bool, so a node
        // called "0012" keeps its zeros.
        let env = env.prefix_separator("__").separator("__");
        builder = builder.add_source(env);
        match builder.build() {
            Ok(cfg) => Ok(Loader { cfg }),
            Err(e) => {
                let mut p = Problems::default();
                let at =
                    file.map_or_else(|| "<environment>".to_owned(), |f| f.display().to_string());
                p.push(at, e.to_string());
                Err(p)
            }
        }
    }

    /// A loader over a TOML string and no environment (for tests and `check-config` of
    /// shipped examples).
    ///
    /// # Errors
    /// The text is not valid TOML.
    pub fn from_toml(text: &str) -> Result<Self, Problems> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map(|cfg| Loader { cfg })
            .map_err(|e| {
                let mut p = Problems::default();
                p.push("<toml>", e.to_string());
                p
            })
    }

    /// Reports every top-level key that is not in `known`.
    pub fn check_keys(&self, known: &[&str], problems: &mut Problems) {
        let table = match self
            .cfg
            .clone()
            .try_deserialize::<config::Map<String, config::Value>>()
        {
            Ok(t) => t,
            Err(e) => {
                problems.push("<root>", e.to_string());
                return;
            }
        };
        let mut keys: Vec<&String> = table.keys().collect();
        keys.sort();
        for key in keys {
            if !known.contains(&key.as_str()) {
                problems.push(
                    key.clone(),
                    format!("unknown key (known: {})", known.join(", ")),
                );
            }
        }
    }

    /// Reads `key` as `T`, falling back to `T::default()` when absent; a problem is recorded
    /// (and the default returned) when it is present but invalid.
    pub fn get_or_default<T: DeserializeOwned + Default>(
        &self,
        key: &str,
        problems: &mut Problems,
    ) -> T {
        match self.cfg.get::<T>(key) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => T::default(),
            Err(e) => {
                problems.push(key, clean(&e.to_string(), key));
                T::default()
            }
        }
    }

    /// Reads an optional `key`; absent is `None`.
    pub fn get_opt<T: DeserializeOwned>(&self, key: &str, problems: &mut Problems) -> Option<T> {
        match self.cfg.get::<T>(key) {
            Ok(v) => Some(v),
            Err(config::ConfigError::NotFound(_)) => None,
            Err(e) => {
                problems.push(key, clean(&e.to_string(), key));
                None
            }
        }
    }
}

/// Drops the config crate's own "for key `x`" suffix: the path is printed beside it already.
fn clean(message: &str, key: &str) -> String {
    let suffix = format!(" for key `{key}`");
    message.replace(&suffix, "")
}

/// Exit code for a configuration error (EX_USAGE), used by both binaries.
pub const EXIT_CONFIG: i32 = 64;

/// A secret set either inline (`{prefix}.{key}`, usually from the environment) or in a
/// file (`{prefix}.{key}_file`). Both at once, or a file that cannot be read, is a problem
/// recorded at `{prefix}.{key}_file`.
pub fn secret_setting(
    value: Option<&str>,
    file: Option<&Path>,
    prefix: &str,
    key: &str,
    problems: &mut Problems,
) -> Option<crate::secret::Secret> {
    use crate::secret::Secret;
    match (value, file) {
        (Some(_), Some(_)) => {
            problems.push(
                format!("{prefix}.{key}_file"),
                format!("set either {key} or {key}_file, not both"),
            );
            None
        }
        (Some(v), None) => Some(Secret::new(v)),
        (None, Some(f)) => match Secret::from_file(f) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(
                    format!("{prefix}.{key}_file"),
                    format!("cannot read {}: {e}", f.display()),
                );
                None
            }
        },
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Http {
        listen: String,
        workers: u32,
    }

    #[test]
    fn sections_and_unknown_keys_reported_together() {
        let l =
            Loader::from_toml("bogus = 1\n[http]\nworkers = \"many\"\n[mqtt]\nport = 1\n").unwrap();
        let mut p = Problems::default();
        l.check_keys(&["http", "mqtt"], &mut p);
        let http: Http = l.get_or_default("http", &mut p);
        assert_eq!(http, Http::default());
        let missing: Option<u32> = l.get_opt("interval_secs", &mut p);
        assert_eq!(missing, None);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(paths, vec!["bogus", "http"], "{p}");
        assert!(p.to_string().contains("2 problem(s)"));
    }

    #[test]
    fn environment_overrides_file_with_double_underscore() {
        let dir = std::env::temp_dir().join(format!("dcwatt-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:1\"\nworkers = 2\n").unwrap();
        let mut vars = std::collections::HashMap::new();
        vars.insert("TEST__HTTP__LISTEN".to_owned(), "0.0.0.0:9".to_owned());
        vars.insert("TEST__HTTP__WORKERS".to_owned(), "7".to_owned());
        vars.insert("TEST__NODE".to_owned(), "0012".to_owned());
        vars.insert("TEST_UNRELATED".to_owned(), "x".to_owned());
        let env = config::Environment::with_prefix("TEST").source(Some(vars));
        let l = Loader::with_env(Some(&file), env).unwrap();
        let mut p = Problems::default();
        let http: Http = l.get_or_default("http", &mut p);
        assert!(p.is_empty(), "{p}");
        assert_eq!(
            http,
            Http {
                listen: "0.0.0.0:9".into(),
                workers: 7
            }
        );
        let node: Option<String> = l.get_opt("node", &mut p);
        assert_eq!(node.as_deref(), Some("0012"), "a string stays a string");
        assert!(p.is_empty(), "{p}");
        let missing = Loader::new(Some(&dir.join("nope.toml")));
        assert!(missing.is_err());
    }
}
