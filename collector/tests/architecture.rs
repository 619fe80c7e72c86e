//! The collector's dependency rules, checked from the source: every `crate::<part>` path
//! in a part's files (in `use` items or inline) is an edge from that part to the other.
//! The rules are the ones README's "Layout" and `lib.rs` state; breaking one fails here,
//! naming the file and the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts (top-level modules) and the files at the top that are only wiring.
const PARTS: [&str; 7] = [
    "intake", "engine", "alerts", "sinks", "api", "config", "zone",
];
const WIRING: [&str; 4] = ["lib", "main", "run", "broker"];

/// (part, must not import): the rules.
const FORBIDDEN: [(&str, &[&str]); 7] = [
    // Time zones and calendars: a leaf that every part may use.
    (
        "zone",
        &[
            "intake", "engine", "alerts", "sinks", "api", "config", "run", "broker",
        ],
    ),
    (
        "engine",
        &[
            "intake", "alerts", "sinks", "api", "config", "run", "broker",
        ],
    ),
    ("sinks", &["alerts", "intake", "api", "run", "broker"]),
    ("api", &["alerts", "intake", "run", "broker"]),
    ("intake", &["sinks", "alerts", "api", "run"]),
    ("alerts", &["intake", "run", "broker"]),
    ("config", &["run", "broker", "intake", "api"]),
];

/// Crates the pure engine may name: the workspace's common crate, std and serde.
const ENGINE_CRATES: [&str; 7] = [
    "crate",
    "super",
    "self",
    "std",
    "dcwatt_common",
    "serde",
    "serde_json",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (so docs may name any part).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::x` in `src`, with the part it names.
fn crate_paths(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        let tail = &rest[i + 7..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `dcwatt_crate::` and the like are not `crate::`.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
            out.push(name);
        }
        rest = tail;
    }
    // `use crate::{a::x, b::y}`.
    let mut rest = src;
    while let Some(i) = rest.find("crate::{") {
        let tail = &rest[i + 8..];
        let group = &tail[..tail.find('}').unwrap_or(tail.len())];
        for item in group.split(',') {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = tail;
    }
    out
}

/// The roots of paths in `src`: each identifier followed by `::` that does not itself
/// follow `::`.
fn path_roots(src: &str) -> BTreeSet<String> {
    let chars: Vec<char> = src.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut roots = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        if !ident(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ident(chars[i]) {
            i += 1;
        }
        let after_colons = start >= 2 && chars[start - 1] == ':' && chars[start - 2] == ':';
        let before_colons = chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':');
        if before_colons && !after_colons {
            roots.insert(chars[start..i].iter().collect());
        }
    }
    roots
}

/// Every broken rule in a source tree: (file, what).
fn violations(src_dir: &Path, deps: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(src_dir, &mut files);
    let mut bad = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src_dir).unwrap_or(f);
        let first = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .unwrap_or_default();
        let text = code(&std::fs::read_to_string(f).unwrap_or_default());
        let shown = rel.display().to_string();
        if !PARTS.contains(&first.as_str()) && !WIRING.contains(&first.as_str()) {
            bad.push((
                shown.clone(),
                format!("{first} is neither a part nor wiring"),
            ));
            continue;
        }
        for to in crate_paths(&text) {
            if to == first {
                continue;
            }
            if let Some((_, never)) = FORBIDDEN.iter().find(|(p, _)| *p == first) {
                if never.contains(&to.as_str()) {
                    bad.push((shown.clone(), format!("{first} imports crate::{to}")));
                }
            }
            if to == "run" {
                bad.push((shown.clone(), "imports crate::run (wiring)".to_owned()));
            }
            if PARTS.contains(&first.as_str()) && PARTS.contains(&to.as_str()) {
                edges.entry(first.clone()).or_default().insert(to);
            }
        }
        if first == "engine" {
            // The engine's own modules (`ring`) are not the crates of the same name.
            let own: BTreeSet<String> = files
                .iter()
                .filter_map(|g| g.strip_prefix(src_dir.join("engine")).ok())
                .filter_map(|g| g.file_stem().map(|x| x.to_string_lossy().into_owned()))
                .collect();
            for root in path_roots(&text) {
                if deps.contains(&root)
                    && !ENGINE_CRATES.contains(&root.as_str())
                    && !own.contains(&root)
                {
                    bad.push((
                        shown.clone(),
                        format!("the pure engine uses the crate {root}"),
                    ));
                }
            }
        }
    }
    // No cycle among the parts.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = edges[start].iter().collect();
        while let Some(n) = todo.pop() {
            if n == start {
                bad.push((start.clone(), format!("a module cycle through {start}")));
                break;
            }
            if seen.insert(n.clone()) {
                todo.extend(edges.get(n).into_iter().flatten());
            }
        }
    }
    bad
}

/// The collector's dependencies, as they are named in code.
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let mut deps = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l == "[dependencies]" || l == "[dev-dependencies]";
            continue;
        }
        if inside {
            if let Some(name) = l
                .split(['=', '.'])
                .next()
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                deps.insert(name.replace('-', "_"));
            }
        }
    }
    deps
}

#[test]
fn the_collector_keeps_its_dependency_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deps = dependencies(&root.join("Cargo.toml"));
    assert!(deps.contains("tokio") && deps.contains("axum"), "{deps:?}");
    let bad = violations(&root.join("src"), &deps);
    assert!(bad.is_empty(), "dependency rules broken:\n{bad:#?}");
}

#[test]
fn a_broken_rule_is_found() {
    let dir = std::env::temp_dir().join(format!("dcwatt-arch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["engine", "api", "alerts"] {
        std::fs::create_dir_all(dir.join(d)).expect("dir");
    }
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).expect("write");
    write("lib.rs", "pub mod engine;\n");
    // Doc comments may name anything; code may not.
    write(
        "engine/mod.rs",
        "//! see crate::api\nuse crate::engine::x;\nfn f() { tokio::spawn(); }\n",
    );
    write("api/mod.rs", "use crate::{engine::View, alerts::Book};\n");
    write(
        "alerts/mod.rs",
        "use crate::alerts::x;\nuse crate::api::Board;\n",
    );
    write("helpers.rs", "");
    let deps: BTreeSet<String> = ["tokio", "serde"].into_iter().map(String::from).collect();
    let bad = violations(&dir, &deps);
    let _ = std::fs::remove_dir_all(&dir);
    let said: Vec<&str> = bad.iter().map(|(_, w)| w.as_str()).collect();
    assert!(said.contains(&"api imports crate::alerts"), "{bad:?}");
    assert!(
        said.contains(&"the pure engine uses the crate tokio"),
        "{bad:?}"
    );
    assert!(
        said.contains(&"helpers is neither a part nor wiring"),
        "{bad:?}"
    );
    assert!(
        said.iter().any(|w| w.starts_with("a module cycle")),
        "{bad:?}"
    );
    assert!(
        !said.iter().any(|w| w.contains("engine imports")),
        "a doc comment is not an import: {bad:?}"
    );
}
