//! Nothing lost across a broker outage: Mosquitto is stopped for 30 s while 20 agents
//! publish, one agent is killed with SIGKILL during the outage and restarted; once the broker is back,
//! every batch arrives (from the agents' on-disk spools, in order, with their original
//! timestamps), sequence numbers continue across the restart, and the PUE window is whole.

use dcwatt_e2e::sim::{agent_toml, Profile};
use dcwatt_e2e::*;
use std::time::Duration;

const SITE: &str = "outage";

#[test]
fn a_broker_outage_and_an_agent_crash_lose_nothing() {
    let dir = TempDir::new("outage");
    let Some(mut broker) = Mosquitto::start(&dir) else {
        return skip_or_fail("outage", "mosquitto is not installed");
    };
    let port = broker.port;
    let c = Collector::start(
        &dir,
        BrokerKind::External(port),
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let fac = Profile {
        base_w: 11_400.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let host = Profile {
        base_w: 400.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let toml = |node: &str, role: &str, p: &Profile, point: &str| {
        agent_toml(SITE, node, role, port, p, point)
    };
    let _meter = start_agent(
        &dir,
        "meter",
        &toml("meter", "meter", &fac, "facility_input"),
    );
    // Twenty agents: the meter and 19 hosts.
    let _others: Vec<Proc> = (1..=19)
        .filter(|i| *i != 2)
        .map(|i| {
            let node = format!("h{i}");
            start_agent(&dir, &node, &toml(&node, "host", &host, "it_input"))
        })
        .collect();
    let h2 = start_agent(&dir, "h2", &toml("h2", "host", &host, "it_input"));
    wait_for("a PUE value", Duration::from_secs(60), || {
        c.site(SITE)?["pue"]["1m"]["value"].as_f64()
    });

    // The broker goes away for 30 s; h2 is killed (SIGKILL) in the middle of the outage
    // and comes back.
    let _ = broker.proc.terminate(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(15));
    drop(h2);
    let _h2 = start_agent(&dir, "h2", &toml("h2", "host", &host, "it_input"));
    std::thread::sleep(Duration::from_secs(15));
    broker = Mosquitto::start_on(&dir, port).expect("mosquitto restarts");

    // Everything spooled arrives; nothing is missing, nothing went back.
    let nodes = wait_for("the spools to drain", Duration::from_secs(60), || {
        let n = get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes"))?;
        let now = dcwatt_common::now_ms();
        let all_current = n["nodes"].as_array()?.iter().all(|x| {
            x["last_reading_ms"]
                .as_i64()
                .is_some_and(|t| now - t < 3_000)
        });
        all_current.then_some(n)
    });
    let metrics = c.metrics();
    assert_eq!(
        metric(&metrics, "dcwatt_batches_missing"),
        Some(0.0),
        "{nodes:#}"
    );
    assert_eq!(
        metric(&metrics, "dcwatt_agent_restarts_total"),
        Some(0.0),
        "seq persisted across the crash"
    );
    for n in nodes["nodes"].as_array().unwrap() {
        assert_eq!(n["missing_batches"], 0, "{n}");
        assert_eq!(n["restarts"], 0, "{n}");
    }
    // The outage is covered by replayed data: a window over it is whole and exact.
    let w = wait_for("a whole 1m window", Duration::from_secs(30), || {
        let v = c.site(SITE)?;
        let w = v["pue"]["1m"].clone();
        (w["coverage_it"] == 1.0 && w["coverage_facility"] == 1.0).then_some(w)
    });
    let value = w["value"].as_f64().unwrap();
    assert!((value - 11_400.0 / (19.0 * 400.0)).abs() < 1e-6, "{w:#}");
    let log = std::fs::read_to_string(dir.0.join("h2.log")).unwrap_or_default();
    assert!(log.contains("replayed") || log.contains("spool"), "{log}");
    drop(broker);
}

/// An agent whose spool is far too small for the outage: the oldest batches are dropped
/// and counted, the agent keeps running, and the collector counts exactly the dropped
/// batches as missing.
#[test]
fn a_full_spool_drops_the_oldest_counts_them_and_keeps_going() {
    let dir = TempDir::new("spool-full");
    let Some(mut broker) = Mosquitto::start(&dir) else {
        return skip_or_fail("spool full", "mosquitto is not installed");
    };
    let port = broker.port;
    let c = Collector::start(
        &dir,
        BrokerKind::External(port),
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let p = Profile {
        base_w: 500.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    // About 4 KB of spool: a handful of one-second batches.
    let toml =
        agent_toml("full", "h1", "host", port, &p, "it_input") + "[spool]\nmax_mib = 0.004\n";
    let mut agent = start_agent(&dir, "h1", &toml);
    wait_for("h1 reporting", Duration::from_secs(30), || {
        let n = get_json(c.http, "/api/v1/sites/full/nodes")?;
        (n["nodes"][0]["seq"].as_u64()? >= 2).then_some(())
    });
    let _ = broker.proc.terminate(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(15));
    assert!(agent.running(), "the agent keeps running with a full spool");
    assert!(agent.log().contains("spool full"), "{}", agent.log());
    broker = Mosquitto::start_on(&dir, port).expect("mosquitto restarts");
    let node = wait_for("h1 current again", Duration::from_secs(60), || {
        let n = get_json(c.http, "/api/v1/sites/full/nodes")?;
        let x = n["nodes"][0].clone();
        (dcwatt_common::now_ms() - x["last_reading_ms"].as_i64()? < 2_000).then_some(x)
    });
    let exit = agent.terminate(Duration::from_secs(20));
    // Without the terminal colours tracing may add.
    let mut log = String::new();
    let mut escape = false;
    for ch in agent.log().chars() {
        match (escape, ch) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => log.push(c),
        }
    }
    assert!(
        exit.is_some_and(|e| e.success()),
        "a clean stop: {exit:?}\n{log}"
    );
    let dropped: u64 = log
        .lines()
        .find(|l| l.contains("agent stopped"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|v| {
            v.trim_start_matches(|c: char| !c.is_ascii_digit())
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no dropped total in the log:\n{log}"));
    assert!(
        dropped >= 5,
        "a 15 s outage overflows a 4 KB spool: {dropped}"
    );
    // A batch replayed late fills its gap a moment after the newest one arrived: the count
    // settles at the agent's dropped total, or the difference is a real loss.
    let mut node = node;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while node["missing_batches"] != dropped && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(n) = get_json(c.http, "/api/v1/sites/full/nodes") {
            node = n["nodes"][0].clone();
        }
    }
    assert_eq!(node["missing_batches"], dropped, "{node}");
    drop(broker);
}

/// A batch that reached the broker's socket but was never acknowledged is sent again. The
/// broker is frozen (SIGSTOP) for 6 s while the agent keeps publishing into the open
/// connection (no error: the kernel takes the bytes), then killed and started again. An
/// agent that took a batch as delivered after some grace on a live connection would lose
/// what went out while the broker was frozen; one that waits for each PUBACK sends it
/// again, and the collector misses nothing.
#[test]
fn batches_the_broker_never_acknowledged_are_sent_again() {
    const SITE: &str = "unacked";
    let dir = TempDir::new("unacked");
    // Sessions saved as they change: the broker is killed, and the collector's session
    // (its subscription, and what is queued for it) must survive that as it survives a
    // clean restart.
    let save = "autosave_interval 1\nautosave_on_changes true\n";
    let port = free_port();
    let Some(mut broker) = Mosquitto::start_named(&dir, "mosquitto", port, save) else {
        return skip_or_fail("unacked", "mosquitto is not installed");
    };
    let c = Collector::start(
        &dir,
        BrokerKind::External(port),
        &[("DCWATT__ENGINE__DEFAULT_INTERVAL_SECS", "1".into())],
    );
    let host = Profile {
        base_w: 400.0,
        amplitude_w: 0.0,
        period_secs: 60.0,
    };
    let _agent = start_agent(
        &dir,
        "h1",
        &agent_toml(SITE, "h1", "host", port, &host, "it_input"),
    );
    let nodes = || get_json(c.http, &format!("/api/v1/sites/{SITE}/nodes"));
    let last = || nodes()?["nodes"][0]["last_reading_ms"].as_i64();
    wait_for("readings from h1", Duration::from_secs(30), last);

    let pid = broker.proc.pid().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP to mosquitto");
    let frozen_at = dcwatt_common::now_ms();
    std::thread::sleep(Duration::from_secs(6));
    broker.proc.kill();
    broker = Mosquitto::start_named(&dir, "mosquitto", port, save).expect("mosquitto restarts");

    // Caught up: readings from after the restart, every batch in between included.
    let n = wait_for("h1 to catch up", Duration::from_secs(60), || {
        let n = nodes()?;
        let t = n["nodes"][0]["last_reading_ms"].as_i64()?;
        (t > frozen_at + 8_000).then_some(n)
    });
    let node = &n["nodes"][0];
    assert_eq!(node["missing_batches"], 0, "{n:#}");
    assert_eq!(node["restarts"], 0, "{n:#}");
    assert_eq!(
        metric(&c.metrics(), "dcwatt_batches_missing"),
        Some(0.0),
        "{n:#}"
    );
    drop(broker);
}
