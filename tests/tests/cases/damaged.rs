//! The collector always starts: a damaged history or state file is moved aside with a
//! timestamp and logged at ERROR with what was lost; an empty state file is said out loud;
//! a state file that cannot be read because the disk is full (a real tmpfs, filled) is
//! kept, never overwritten, and once there is room again the saves go on.

use dcwatt_e2e::*;
use std::path::Path;
use std::time::Duration;

const GARBAGE: &[u8] =
    b"this is not a database: a disk that lost its blocks, a file copied half-way";

fn aside(dir: &Path, name: &str, tag: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("{name}.{tag}-");
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&prefix) && !n.ends_with("-wal") && !n.ends_with("-shm")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn saves(c: &Collector) -> f64 {
    metric(&c.metrics(), "dcwatt_state_saves_total").unwrap_or(0.0)
}

#[test]
fn damaged_files_are_moved_aside_and_the_collector_starts() {
    let dir = TempDir::new("damaged");
    std::fs::write(dir.0.join("dcwatt-history.sqlite"), GARBAGE).expect("write");
    std::fs::write(dir.0.join("dcwatt-state.sqlite"), GARBAGE).expect("write");
    let mut c = Collector::start(&dir, BrokerKind::Embedded, &[]);
    for name in ["dcwatt-history.sqlite", "dcwatt-state.sqlite"] {
        let moved = aside(&dir.0, name, "damaged");
        assert_eq!(moved.len(), 1, "{name} moved aside:\n{}", c.proc.log());
        assert_eq!(
            std::fs::read(&moved[0]).expect("read"),
            GARBAGE,
            "kept as it was"
        );
    }
    // New files, written to.
    wait_for("a state save", Duration::from_secs(20), || {
        (saves(&c) >= 1.0).then_some(())
    });
    let text = c.metrics();
    assert_eq!(metric(&text, "dcwatt_state_save_errors_total"), Some(0.0));
    assert_eq!(
        metric(&text, "dcwatt_history_write_errors_total"),
        Some(0.0)
    );
    let log = c.proc.log();
    assert!(
        log.contains("ERROR") && log.contains("the state file is damaged: moved aside"),
        "{log}"
    );
    assert!(
        log.contains("the history database is damaged: moved aside"),
        "{log}"
    );
    c.proc.terminate(Duration::from_secs(30));

    // A state file of 0 bytes: the collector says what was lost.
    std::fs::write(dir.0.join("dcwatt-state.sqlite"), b"").expect("truncate");
    let c = Collector::start(&dir, BrokerKind::Embedded, &[]);
    let log = wait_for("the empty state said", Duration::from_secs(10), || {
        let log = c.proc.log();
        log.contains("the state file is empty (0 bytes)")
            .then_some(log)
    });
    assert!(log.contains("ERROR"), "{log}");
}

#[test]
fn a_state_file_on_a_full_disk_is_kept_and_never_overwritten() {
    let dir = TempDir::new("disk-full");
    let Some(disk) = Tmpfs::mount(&dir.0.join("state"), "8m") else {
        return skip_or_fail(
            "a_state_file_on_a_full_disk_is_kept_and_never_overwritten",
            "cannot mount a tmpfs (needs root)",
        );
    };
    let env = [
        (
            "DCWATT__STATE__PATH",
            disk.0.join("s.sqlite").display().to_string(),
        ),
        ("DCWATT__STATE__INTERVAL_SECS", "1".into()),
        ("DCWATT__HISTORY__ENABLED", "false".into()),
    ];
    // A first run leaves a valid state with a node in it.
    let mut c = Collector::start(&dir, BrokerKind::Embedded, &env);
    let now = dcwatt_common::now_ms();
    let batch = format!(
        r#"{{"v":1,"site":"keep","node":"n","seq":7,"sent_ms":{now},"readings":[{{"metric":"power_w","value":500,"ts_ms":{now},"point":"it_input"}}]}}"#
    );
    publish_all(
        c.mqtt,
        std::iter::once(("dcwatt/v1/keep/n/readings".to_owned(), batch.into_bytes())),
        Duration::from_secs(10),
    );
    wait_for("the site", Duration::from_secs(10), || c.site("keep"));
    let first = saves(&c);
    wait_for("a save with the site", Duration::from_secs(10), || {
        (saves(&c) >= first + 1.0).then_some(())
    });
    c.proc.terminate(Duration::from_secs(30));
    let state = disk.0.join("s.sqlite");
    let valid = std::fs::read(&state).expect("the state file");

    // The disk fills; the collector starts anyway and must not lose or overwrite it.
    disk.fill();
    let c = Collector::start(&dir, BrokerKind::Embedded, &env);
    std::thread::sleep(Duration::from_secs(4));
    let log = c.proc.log();
    let restored = log.contains("engine state restored");
    let kept = log.contains("cannot read the state file now; it is kept");
    assert!(restored || kept, "neither restored nor kept:\n{log}");
    eprintln!(
        "on a full disk the state was {}",
        if kept { "kept" } else { "restored" }
    );
    if restored {
        // SQLite could read it: the site is back.
        assert!(c.site("keep").is_some(), "restored without the site");
    }
    assert!(
        std::fs::read(&state).is_ok_and(|b| b == valid) || restored,
        "the state file was changed while it could not be restored"
    );

    // Room again: the saves go on, and what could not be restored is still there.
    disk.free();
    let before = saves(&c);
    wait_for(
        "a save after the disk has room",
        Duration::from_secs(20),
        || (saves(&c) >= before + 1.0).then_some(()),
    );
    if kept {
        let moved = aside(&disk.0, "s.sqlite", "unrestored");
        assert_eq!(moved.len(), 1, "kept aside:\n{}", c.proc.log());
        assert_eq!(std::fs::read(&moved[0]).expect("read"), valid);
    } else {
        assert!(c.site("keep").is_some());
    }
}

#[test]
fn an_agent_on_a_full_disk_never_reuses_a_sequence_number() {
    let dir = TempDir::new("agent-disk-full");
    let Some(disk) = Tmpfs::mount(&dir.0.join("agent"), "2m") else {
        return skip_or_fail(
            "an_agent_on_a_full_disk_never_reuses_a_sequence_number",
            "cannot mount a tmpfs (needs root)",
        );
    };
    let c = Collector::start(
        &dir,
        BrokerKind::Embedded,
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let profile = dcwatt_e2e::sim::Profile {
        base_w: 400.0,
        amplitude_w: 20.0,
        period_secs: 17.0,
    };
    let toml = format!(
        "state_dir = \"{}\"\n{}",
        disk.0.display(),
        dcwatt_e2e::sim::agent_toml("disk", "full", "host", c.mqtt, &profile, "it_input")
    );
    let seq = || {
        let nodes = get_json(c.http, "/api/v1/sites/disk/nodes")?;
        let n = nodes["nodes"].get(0)?.clone();
        Some((n["seq"].as_u64()?, n))
    };
    let mut agent = start_agent(&dir, "full", &toml);
    wait_for("batches from the agent", Duration::from_secs(20), || {
        seq().filter(|(s, _)| *s >= 3)
    });
    // The disk fills: the sequence file must still keep up with what is sent.
    disk.fill();
    std::thread::sleep(Duration::from_secs(5));
    agent.kill();
    let (before, _) = seq().expect("the node");
    disk.free();
    let _agent = start_agent(&dir, "full-again", &toml);
    let (after, node) = wait_for("batches after the restart", Duration::from_secs(20), || {
        seq().filter(|(s, _)| *s >= before + 3)
    });
    eprintln!("seq {before} before the restart, {after} after: {node}");
    // Batches re-sent from the spool after the kill are duplicates with the same content
    // (dropped, harmless); a number used again for other readings is a conflict.
    assert!(
        node["refused"]["duplicate_conflict"].is_null(),
        "a sequence number was used twice: {node:#}"
    );
    let t = c.metrics();
    assert_eq!(
        metric(
            &t,
            "dcwatt_messages_rejected_total{reason=\"duplicate_conflict\"}"
        ),
        Some(0.0)
    );
    assert_eq!(node["missing_batches"], 0, "{node:#}");
}
