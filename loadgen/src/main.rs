//! dcwatt-loadgen: simulates many dcwatt agents publishing protocol-v1 batches over real
//! MQTT, for benchmarks (`scripts/bench.sh`, docs/benchmarks.md).
//!
//! Every host meters a constant power at `it_input` (a gauge and an exact energy counter)
//! and one facility meter publishes `ratio` × the hosts' sum at `facility_input`, so the
//! site's PUE is exactly `ratio`. The rest of each batch is CPU load and temperatures, one
//! series per (node, metric, component). At the end it prints, as one JSON object, exactly
//! what it sent and what the broker acknowledged.
//!
//! Two modes:
//! - paced (`--duration-secs`): each node publishes once per `--interval-ms`, the nodes
//!   spread evenly over the interval, as a real fleet does;
//! - flood (`--batches`): that many batches in all, round-robin over the nodes, as fast as
//!   the broker acknowledges them (QoS 1).

use anyhow::{bail, Context, Result};
use clap::Parser;
use dcwatt_common::protocol::{
    decode, readings_topic, status_topic, Encoding, ReadingsMessage, Role, State, StatusMessage,
    VERSION,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Simulated dcwatt agents publishing over MQTT.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Site id of every simulated node.
    #[arg(long, default_value = "bench")]
    site: String,
    /// Simulated hosts (one facility meter comes on top).
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Readings per batch (at least 3).
    #[arg(long, default_value_t = 20)]
    readings: usize,
    /// Each node's publishing interval (paced mode), also announced in its birth.
    #[arg(long, default_value_t = 10_000)]
    interval_ms: u64,
    /// Paced mode: publish for this many seconds.
    #[arg(long, conflicts_with = "batches", required_unless_present = "batches")]
    duration_secs: Option<f64>,
    /// Flood mode: publish this many batches in all, as fast as the broker takes them.
    #[arg(long)]
    batches: Option<u64>,
    /// MQTT connections the nodes are spread over; `--connections` above `--hosts` gives
    /// one connection per node (and one for the facility meter), as a real site has.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Connections opened per second at the start (0: all at once), so that thousands of
    /// them do not overrun the broker's listen queue together.
    #[arg(long, default_value_t = 0)]
    connect_per_sec: u32,
    /// Facility power over IT power: the site's exact PUE.
    #[arg(long, default_value_t = 1.4)]
    ratio: f64,
    /// Client id prefix (the connection's index is appended).
    #[arg(long, default_value = "dcwatt-loadgen")]
    client_id: String,
    /// How batches are written: `json`, or `cbor` (the compact encoding, docs/protocol.md).
    #[arg(long, default_value = "json", value_parser = ["json", "cbor"])]
    encoding: String,
    /// How long to wait at the end for the broker to acknowledge everything.
    #[arg(long, default_value_t = 120)]
    ack_timeout_secs: u64,
    /// Keep each connection's MQTT session across reconnects (clean session off), so that
    /// what the broker had not acknowledged when it went away is sent again once it is
    /// back, as a real agent's spool does. Without it a connection that comes back to a
    /// new session drops its unacknowledged publishes, and the summary's `unacked` counts
    /// them.
    #[arg(long)]
    persistent_session: bool,
}

/// One simulated node.
struct Node {
    name: String,
    role: Role,
    rack: Option<String>,
    watts: f64,
    seq: u64,
    last_ts: i64,
}

/// What every connection adds up.
#[derive(Default)]
struct Totals {
    status_sent: AtomicU64,
    batches_sent: AtomicU64,
    readings_sent: AtomicU64,
    acked: AtomicU64,
    /// Publishes (births and batches) that no PUBACK answered by the end.
    unacked: AtomicU64,
    connection_errors: AtomicU64,
}

#[derive(Clone, Copy)]
enum Plan {
    Flood { batches: u64 },
    Paced { until: Instant, offset: Duration },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcwatt-loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dcwatt-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<serde_json::Value> {
    if cli.hosts == 0 || cli.connections == 0 {
        bail!("--hosts and --connections must be at least 1");
    }
    if cli.readings < 3 {
        bail!("--readings must be at least 3 (power, energy and load)");
    }
    if !(cli.ratio >= 1.0 && cli.ratio.is_finite()) {
        bail!("--ratio must be a finite number ≥ 1");
    }
    if cli.interval_ms == 0 {
        bail!("--interval-ms must be positive");
    }
    dcwatt_common::protocol::validate_id(&cli.site).context("--site")?;
    let mut nodes: Vec<Node> = (0..cli.hosts)
        .map(|i| Node {
            name: format!("h{i:06}"),
            role: Role::Host,
            rack: Some(format!("r{:04}", i / 20)),
            watts: 150.0 + (i % 200) as f64,
            seq: 0,
            last_ts: 0,
        })
        .collect();
    let it_power: f64 = nodes.iter().map(|n| n.watts).sum();
    nodes.insert(
        0,
        Node {
            name: "facility".to_owned(),
            role: Role::Meter,
            rack: None,
            watts: it_power * cli.ratio,
            seq: 0,
            last_ts: 0,
        },
    );
    let connections = cli.connections.min(nodes.len());
    let mut shares: Vec<Vec<Node>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, n) in nodes.into_iter().enumerate() {
        shares[i % connections].push(n);
    }
    let cli = Arc::new(cli);
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let epoch_ms = dcwatt_common::now_ms();
    let mut tasks = Vec::new();
    for (idx, share) in shares.into_iter().enumerate() {
        let plan = match (cli.batches, cli.duration_secs) {
            (Some(b), _) => {
                let (base, rem) = (b / connections as u64, b % connections as u64);
                Plan::Flood {
                    batches: base + u64::from((idx as u64) < rem),
                }
            }
            (None, Some(d)) => Plan::Paced {
                until: start + Duration::from_secs_f64(d.max(0.0)),
                offset: Duration::from_millis(cli.interval_ms) * idx as u32
                    / (connections * share.len()) as u32,
            },
            (None, None) => bail!("give --duration-secs or --batches"),
        };
        tasks.push(tokio::spawn(connection(
            idx,
            cli.clone(),
            share,
            plan,
            epoch_ms,
            totals.clone(),
        )));
    }
    for t in tasks {
        t.await.context("a connection task failed")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let t = &totals;
    let batches = t.batches_sent.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "mode": if cli.batches.is_some() { "flood" } else { "paced" },
        "site": cli.site,
        "hosts": cli.hosts,
        "connections": connections,
        "readings_per_batch": cli.readings,
        "interval_ms": cli.interval_ms,
        "status_sent": t.status_sent.load(Ordering::Relaxed),
        "batches_sent": batches,
        "readings_sent": t.readings_sent.load(Ordering::Relaxed),
        "acked": t.acked.load(Ordering::Relaxed),
        "unacked": t.unacked.load(Ordering::Relaxed),
        "connection_errors": t.connection_errors.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
        "batches_per_s": batches as f64 / elapsed,
        "it_power_w": it_power,
        "facility_power_w": it_power * cli.ratio,
        "pue": cli.ratio,
    }))
}

/// One MQTT connection publishing for its share of the nodes.
async fn connection(
    idx: usize,
    cli: Arc<Cli>,
    mut nodes: Vec<Node>,
    plan: Plan,
    epoch_ms: i64,
    totals: Arc<Totals>,
) -> Result<()> {
    if cli.connect_per_sec > 0 {
        let at = Duration::from_secs_f64(idx as f64 / f64::from(cli.connect_per_sec));
        tokio::time::sleep(at).await;
    }
    let mut options = MqttOptions::new(format!("{}-{idx}", cli.client_id), &cli.host, cli.port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(256);
    options.set_clean_session(!cli.persistent_session);
    options.set_max_packet_size(
        dcwatt_common::protocol::MAX_PAYLOAD_BYTES + 4096,
        dcwatt_common::protocol::MAX_PAYLOAD_BYTES + 4096,
    );
    let (client, mut events) = AsyncClient::new(options, 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, totals, acked) = (stop.clone(), totals.clone(), acked.clone());
        tokio::spawn(async move {
            // As the agents do: doubling, with jitter per connection, so that thousands of
            // connections losing their broker together do not come back in step.
            let mut backoff = dcwatt_common::backoff::Backoff::new(
                Duration::from_millis(250),
                Duration::from_secs(30),
                u64::from(std::process::id()) ^ (idx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            while !stop.load(Ordering::Relaxed) {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => backoff.reset(),
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        totals.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        totals.connection_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("dcwatt-loadgen: connection {idx}: {e}");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        })
    };
    let mut published = 0u64;
    for n in &nodes {
        let birth = StatusMessage {
            v: VERSION,
            site: cli.site.clone(),
            node: n.name.clone(),
            state: State::Online,
            ts_ms: dcwatt_common::now_ms(),
            role: Some(n.role),
            rack: n.rack.clone(),
            zone: None,
            agent: Some(format!("dcwatt-loadgen {}", env!("CARGO_PKG_VERSION"))),
            sources: Vec::new(),
            interval_ms: Some(cli.interval_ms),
            gpus: Vec::new(),
        };
        client
            .publish(
                status_topic(&cli.site, &n.name),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&birth)?,
            )
            .await?;
        published += 1;
        totals.status_sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut payload = String::with_capacity(64 * cli.readings + 128);
    let count = nodes.len();
    let mut publish_next = |i: usize, payload: &mut String| {
        let n = &mut nodes[i % count];
        n.seq += 1;
        n.last_ts = dcwatt_common::now_ms().max(n.last_ts + 1);
        batch(payload, &cli, n, epoch_ms);
        let body = if cli.encoding == "cbor" {
            // The same batch, re-encoded: what the bench measures is the collector, not
            // the generator.
            match decode::<ReadingsMessage>(payload.as_bytes()) {
                Ok(m) => m.encode(Encoding::Cbor),
                Err(_) => payload.as_bytes().to_vec(),
            }
        } else {
            payload.as_bytes().to_vec()
        };
        (readings_topic(&cli.site, &n.name), body)
    };
    let mut sent = 0u64;
    match plan {
        Plan::Flood { batches } => {
            for i in 0..batches {
                let (topic, body) = publish_next(i as usize, &mut payload);
                client.publish(topic, QoS::AtLeastOnce, false, body).await?;
                sent += 1;
            }
        }
        Plan::Paced { until, offset } => {
            let tick = Duration::from_millis(cli.interval_ms) / count as u32;
            let mut timer = tokio::time::interval_at(
                tokio::time::Instant::now() + offset,
                tick.max(Duration::from_micros(100)),
            );
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut i = 0usize;
            loop {
                timer.tick().await;
                if Instant::now() >= until {
                    break;
                }
                let (topic, body) = publish_next(i, &mut payload);
                client.publish(topic, QoS::AtLeastOnce, false, body).await?;
                sent += 1;
                i += 1;
            }
        }
    }
    published += sent;
    totals.batches_sent.fetch_add(sent, Ordering::Relaxed);
    totals
        .readings_sent
        .fetch_add(sent * cli.readings as u64, Ordering::Relaxed);
    // Everything acknowledged by the broker, or give up after the timeout (the summary
    // then shows fewer acks than publishes).
    let deadline = Instant::now() + Duration::from_secs(cli.ack_timeout_secs);
    while acked.load(Ordering::Relaxed) < published
        && Instant::now() < deadline
        && !poller.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A broker acknowledges a publish that it got twice (sent again after a reconnect)
    // twice, so this undercounts what was lost; the collector's missing batches are the
    // exact figure.
    totals.unacked.fetch_add(
        published.saturating_sub(acked.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;
    Ok(())
}

/// Writes one readings batch for `n` at `n.last_ts` into `out`.
fn batch(out: &mut String, cli: &Cli, n: &Node, epoch_ms: i64) {
    let ts = n.last_ts;
    let point = match n.role {
        Role::Host => "it_input",
        Role::Meter => "facility_input",
    };
    // Exact energy since the run's epoch at constant power.
    let energy = n.watts * (ts - epoch_ms) as f64 / 1000.0;
    out.clear();
    let _ = write!(
        out,
        r#"{{"v":{VERSION},"site":"{}","node":"{}","seq":{},"sent_ms":{ts},"readings":["#,
        cli.site, n.name, n.seq
    );
    let _ = write!(
        out,
        r#"{{"metric":"power_w","value":{},"ts_ms":{ts},"point":"{point}"}},"#,
        n.watts
    );
    let _ = write!(
        out,
        r#"{{"metric":"energy_j","kind":"counter","value":{energy},"ts_ms":{ts},"point":"{point}"}},"#
    );
    let load = (n.seq % 100) as f64 / 100.0;
    let _ = write!(
        out,
        r#"{{"metric":"cpu_util","value":{load},"ts_ms":{ts}}}"#
    );
    for k in 3..cli.readings {
        let _ = write!(
            out,
            r#",{{"metric":"temp_c","value":{}.5,"ts_ms":{ts},"component":"sensor{k}"}}"#,
            20 + k % 30
        );
    }
    out.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_decode_with_the_protocol_and_carry_exact_energy() {
        let cli = Cli::parse_from(["dcwatt-loadgen", "--batches", "1", "--readings", "20"]);
        let n = Node {
            name: "h000007".to_owned(),
            role: Role::Host,
            rack: None,
            watts: 157.0,
            seq: 3,
            last_ts: 1_800_000_010_000,
        };
        let mut s = String::new();
        batch(&mut s, &cli, &n, 1_800_000_000_000);
        let m: ReadingsMessage = match decode(s.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("{e}: {s}"),
        };
        assert_eq!(
            (m.node.as_str(), m.seq, m.readings.len()),
            ("h000007", 3, 20)
        );
        assert_eq!(m.readings[0].value, 157.0);
        assert_eq!(m.readings[1].value, 1570.0);
        assert_eq!(m.readings[19].component, "sensor19");
    }
}
