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
        Self::with_overrides(file, &[])
    }

    /// Like [`Loader::new`], with values that win over both (command-line flags such as
    /// `--state-dir`).
    ///
    /// # Errors
    /// The file is missing or not valid TOML.
    pub fn with_overrides(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<Self, Problems> {
        Self::with_env(file, config::Environment::with_prefix("DCWATT"), overrides)
    }

    fn with_env(
        file: Option<&Path>,
        env: config::Environment,
        overrides: &[(&str, String)],
    ) -> Result<Self, Problems> {
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
        for (key, value) in overrides {
            builder = match builder.set_override(*key, value.as_str()) {
                Ok(b) => b,
                Err(e) => {
                    let mut p = Problems::default();
                    p.push(*key, e.to_string());
                    return Err(p);
                }
            };
        }
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

    /// Each top-level section as canonical JSON text, so that two loads can be compared
    /// section by section (what a reload changed).
    pub fn sections(&self) -> std::collections::BTreeMap<String, String> {
        self.cfg
            .clone()
            .try_deserialize::<std::collections::BTreeMap<String, serde_json::Value>>()
            .map(|m| m.into_iter().map(|(k, v)| (k, v.to_string())).collect())
            .unwrap_or_default()
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
        self.get_checked(key, problems).unwrap_or_default()
    }

    /// Reads an optional `key`; absent is `None`.
    pub fn get_opt<T: DeserializeOwned>(&self, key: &str, problems: &mut Problems) -> Option<T> {
        self.get_checked(key, problems)
    }

    /// Reads `key`; on a type error records every bad value under it, each at its own
    /// dotted path (`racks[0].budget_kw`, not `racks`), and returns what the rest of the
    /// section gives with those values left at their defaults, so that the section's other
    /// checks still run and report.
    fn get_checked<T: DeserializeOwned>(&self, key: &str, problems: &mut Problems) -> Option<T> {
        let mut value = match self.cfg.get::<config::Value>(key) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => return None,
            Err(e) => {
                problems.push(key, operator_words(&clean(&e.to_string(), key)));
                return None;
            }
        };
        // Each round finds one bad value and takes it out; a bound keeps a pathological
        // file from looping long. An error at (or above) a path already reported is the
        // consequence of a removal, not a new problem: an array element left incomplete
        // is dropped (the elements after it keep their own indices in what is reported),
        // anything else ends the search.
        let mut reported: Vec<String> = Vec::new();
        let mut dropped = Dropped::default();
        for _ in 0..64 {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let inner = e.inner().to_string();
                    let mut segments = segments(&e.path().to_string());
                    // "unknown field `x`" is reported at the table that holds it.
                    if let Some(field) = backticked_after(&inner, "unknown field `") {
                        let named = matches!(segments.last(), Some(Segment::Key(k)) if *k == field);
                        if !named {
                            segments.push(Segment::Key(field));
                        }
                    }
                    let path = format!("{key}{}", dropped.original(&segments));
                    if reported.iter().any(|r| r.starts_with(&path)) {
                        if !matches!(segments.last(), Some(Segment::Index(_))) {
                            return None;
                        }
                    } else {
                        problems.push(path.clone(), operator_words(&clean(&inner, key)));
                        reported.push(path);
                    }
                    if segments.is_empty() || !remove_at(&mut value, &segments, &mut dropped) {
                        return None;
                    }
                }
            }
        }
        None
    }
}

/// Array elements taken out so far, by the array's path as reported, with their indices
/// in the file: what maps the remaining elements' indices back to the file's.
#[derive(Default)]
struct Dropped(Vec<(String, usize)>);

impl Dropped {
    /// `segments` (indices into the reduced value) as a path with the file's indices.
    fn original(&self, segments: &[Segment]) -> String {
        let mut path = String::new();
        for seg in segments {
            match seg {
                Segment::Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Segment::Index(i) => {
                    let i = self.file_index(&path, *i);
                    path.push_str(&format!("[{i}]"));
                }
            }
        }
        path
    }

    /// The file index of the `i`-th element still in the array at `array`.
    fn file_index(&self, array: &str, i: usize) -> usize {
        let mut gone: Vec<usize> = self
            .0
            .iter()
            .filter(|(a, _)| a == array)
            .map(|(_, j)| *j)
            .collect();
        gone.sort_unstable();
        let mut idx = i;
        for j in gone {
            if j <= idx {
                idx += 1;
            }
        }
        idx
    }
}

/// One step of a path into a configuration value.
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into segments; `?` (an unknown position) ends the path.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if part.is_empty() || part == "?" {
            continue;
        }
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Segment::Key(name.to_owned()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

/// Removes the value at `path`; false when there is nothing there to remove. An array
/// element is taken out of its array, and recorded in `dropped`.
fn remove_at(v: &mut config::Value, path: &[Segment], dropped: &mut Dropped) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        cur = match (seg, &mut cur.kind) {
            (Segment::Key(k), config::ValueKind::Table(t)) => match t.get_mut(k) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Index(i), config::ValueKind::Array(a)) => match a.get_mut(*i) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, &mut cur.kind) {
        (Segment::Key(k), config::ValueKind::Table(t)) => t.remove(k).is_some(),
        (Segment::Index(i), config::ValueKind::Array(a)) if *i < a.len() => {
            a.remove(*i);
            let array = dropped.original(parents);
            let file_index = dropped.file_index(&array, *i);
            dropped.0.push((array, file_index));
            true
        }
        _ => false,
    }
}

/// The text between `prefix` and the next backtick.
fn backticked_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_owned())
}

/// Serde's words for types, in the operator's: no `u64`, `struct FooRaw` or `sequence`.
fn operator_words(message: &str) -> String {
    let mut m = message.to_owned();
    // The longest phrases first, so that shorter ones do not cut into them.
    for (from, to) in [
        (
            "an unsigned 64 bit or less integer",
            "a whole number, 0 or more",
        ),
        ("a 64 bit or less integer", "a whole number"),
        ("64-bit integer", "number"),
        ("128-bit integer", "number"),
        ("unsigned integer", "number"),
        ("a floating point", "a number"),
        ("floating point", "number"),
        ("a boolean", "true or false"),
        ("a sequence", "a list"),
        ("a map", "a table"),
        ("a string", "text in quotes"),
        ("string \"", "text \""),
        ("unit value", "nothing"),
    ] {
        m = m.replace(from, to);
    }
    for (from, to) in [
        ("u8", "a whole number, 0 to 255"),
        ("u16", "a whole number, 0 to 65535"),
        ("u32", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
    ] {
        m = replace_word(&m, from, to);
    }
    // "expected struct HttpRaw" / "expected internally tagged enum SourceConfig".
    for (from, to) in [
        ("expected struct ", "expected a table"),
        (
            "expected internally tagged enum ",
            "expected a table with a known type",
        ),
        ("expected enum ", "expected one of the allowed values"),
    ] {
        while let Some(at) = m.find(from) {
            let name_start = at + from.len();
            let name_len = m[name_start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(m.len() - name_start);
            m.replace_range(at..name_start + name_len, to);
        }
    }
    m
}

/// Replaces `word` where it stands alone (not inside another word).
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let alone = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        out.push_str(&rest[..at]);
        if alone(before) && alone(after) {
            out.push_str(with);
        } else {
            out.push_str(word);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Drops the config crate's own "for key `x`" suffix: the path is printed beside it already.
fn clean(message: &str, key: &str) -> String {
    let suffix = format!(" for key `{key}`");
    let m = message.replace(&suffix, "");
    match m.find(" for key `") {
        Some(at) if m[at..].ends_with('`') => m[..at].to_owned(),
        _ => m,
    }
}

/// The configuration file to read: the one given with `--config`, else `default` (e.g.
/// `/etc/dcwatt/collector.toml`, where the package puts it) when it exists, else none.
pub fn config_file(given: Option<&Path>, default: &str) -> Option<std::path::PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let d = Path::new(default);
            d.exists().then(|| d.to_path_buf())
        }
    }
}

/// Command-line values that win over the file and the environment: `--state-dir`.
pub fn cli_overrides(state_dir: Option<&Path>) -> Vec<(&'static str, String)> {
    state_dir
        .map(|d| vec![("state_dir", d.display().to_string())])
        .unwrap_or_default()
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
        assert_eq!(paths, vec!["bogus", "http.workers"], "{p}");
        assert!(p.to_string().contains("2 problem(s)"));
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Rack {
        site: String,
        budget_kw: f64,
        u_total: u32,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Engine {
        min_coverage: f64,
        gap_factor: f64,
        strict: bool,
    }

    #[test]
    fn every_bad_value_keeps_its_own_path_and_the_rest_still_reads() {
        let l = Loader::from_toml(
            "[engine]\nmin_coverage = \"lots\"\ngap_factor = 3.0\nstrict = \"maybe\"\ncolour = 1\n\
             [[racks]]\nsite = \"a\"\nbudget_kw = \"x\"\n[[racks]]\nsite = \"b\"\nu_total = -4\n\
             [[racks]]\nsite = \"c\"\n[[racks]]\nsite = [4]\n",
        )
        .unwrap();
        let mut p = Problems::default();
        let e: Engine = l.get_or_default("engine", &mut p);
        assert_eq!(e.gap_factor, 3.0, "the good value is still read: {p}");
        let racks: Vec<Rack> = l.get_or_default("racks", &mut p);
        let paths: Vec<&str> = p.0.iter().map(|x| x.path.as_str()).collect();
        for want in [
            "engine.min_coverage",
            "engine.strict",
            "engine.colour",
            "racks[0].budget_kw",
            "racks[1].u_total",
            "racks[3].site",
        ] {
            assert!(paths.contains(&want), "{want} missing from {p}");
        }
        assert_eq!(p.0.len(), 6, "one problem each, no echoes: {p}");
        assert_eq!(racks.len(), 4, "{p}");
        assert_eq!(racks[2].site, "c", "good elements are still read");
        let text = p.to_string();
        for rust in [
            "u32",
            "u64",
            "f64",
            "floating point",
            "64-bit",
            "struct",
            "boolean",
        ] {
            assert!(!text.contains(rust), "Rust words {rust:?} in:\n{text}");
        }
        assert!(text.contains("true or false"), "{text}");
        assert!(text.contains("a number"), "{text}");
    }

    #[test]
    fn operator_words_replace_whole_words_only() {
        assert_eq!(
            operator_words("expected u32"),
            "expected a whole number, 0 or more"
        );
        assert_eq!(operator_words("menu32 stays"), "menu32 stays");
        assert_eq!(
            operator_words("expected struct HttpRaw in x"),
            "expected a table in x"
        );
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
        let l = Loader::with_env(Some(&file), env, &[("http.workers", "9".to_owned())]).unwrap();
        let mut p = Problems::default();
        let http: Http = l.get_or_default("http", &mut p);
        assert!(p.is_empty(), "{p}");
        assert_eq!(
            http,
            Http {
                listen: "0.0.0.0:9".into(),
                workers: 9
            },
            "a command-line override wins over the environment"
        );
        let node: Option<String> = l.get_opt("node", &mut p);
        assert_eq!(node.as_deref(), Some("0012"), "a string stays a string");
        assert!(p.is_empty(), "{p}");
        let missing = Loader::new(Some(&dir.join("nope.toml")));
        assert!(missing.is_err());
    }
}
