//! dcwatt-backfill: writes days of a simulated site's history into a collector's history
//! database — closed minutes of energy per measurement point and the derived series (PUE
//! per window, power, racks) — exactly as the collector itself would have written them, so
//! that a demo's trends and energy reports have a past from its first minute.
//!
//! The site follows the demo's shape (`configs/demo/`): hosts of ~360 W in racks of ten,
//! the last ten GPU servers of ~900 W, UPS losses, two halls' cooling, lighting; the load
//! follows the day (peak 15:00 at the site's UTC offset) and cooling the outdoor heat.

use anyhow::Context;
use clap::Parser;
use dcwatt_collector::engine::{MinuteEnergy, WINDOWS};
use dcwatt_collector::sinks::history::store::{DerivedRow, Store};
use dcwatt_common::protocol::Point;
use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::path::PathBuf;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// Writes a simulated site's past into a dcwatt history database.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The history database (created when missing).
    #[arg(long)]
    db: PathBuf,
    /// Site id.
    #[arg(long, default_value = "demo")]
    site: String,
    /// Days of history, ending at the current minute (or at `--end`).
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Where the history ends, ms since the epoch (a past stretch, e.g. across a daylight
    /// saving change); the current minute when not given.
    #[arg(long)]
    end_ms: Option<i64>,
    /// Hosts (the last ten are GPU servers), ten per rack.
    #[arg(long, default_value_t = 50)]
    hosts: u32,
    /// The site's offset from UTC, hours (for the daily cycle).
    #[arg(long, default_value_t = 8)]
    utc_offset_hours: i64,
}

/// The site's power at one instant, W.
struct Powers {
    facility: f64,
    ups_output: f64,
    it: f64,
    cooling: f64,
    racks: Vec<f64>,
}

fn powers(cli: &Cli, t_ms: i64) -> Powers {
    let local_h = ((t_ms + cli.utc_offset_hours * 3_600_000).rem_euclid(DAY_MS)) as f64 / 3.6e6;
    let load = 1.0 + 0.08 * (TAU * (local_h - 15.0) / 24.0).cos();
    let heat = 0.5 + 0.5 * (TAU * (local_h - 14.0) / 24.0).cos();
    let gpu_from = cli.hosts.saturating_sub(10);
    let mut racks = vec![0.0; cli.hosts.div_ceil(10) as usize];
    for h in 0..cli.hosts {
        let base = if h >= gpu_from {
            900.0
        } else {
            f64::from(280 + ((h + 1) * 37) % 160)
        };
        racks[(h / 10) as usize] += base * load;
    }
    let it: f64 = racks.iter().sum();
    let ups_output = it * 1.02;
    let cooling = (4000.0 + 4500.0) * (0.85 + 0.3 * heat);
    let facility = ups_output / 0.97 + cooling + 400.0;
    Powers {
        facility,
        ups_output,
        it,
        cooling,
        racks,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dcwatt_common::protocol::validate_id(&cli.site).context("--site")?;
    if let Some(dir) = cli.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut store =
        Store::open(&cli.db).with_context(|| format!("opening {}", cli.db.display()))?;
    let now = dcwatt_common::now_ms();
    let end = cli.end_ms.unwrap_or(now);
    anyhow::ensure!(
        (0..=now).contains(&end),
        "--end-ms {end} is not a time between the epoch and now"
    );
    let to = end.div_euclid(MINUTE_MS) * MINUTE_MS;
    let from = to - i64::from(cli.days) * DAY_MS;
    let meters = [
        (Point::FacilityInput, 1.0),
        (Point::UpsOutput, 1.0),
        (Point::ItInput, f64::from(cli.hosts)),
        (Point::Cooling, 2.0),
    ];
    // Rolling (facility, IT) energy per window, for the windows the history can hold.
    let windows: Vec<(&str, i64)> = WINDOWS
        .iter()
        .copied()
        .filter(|(_, len)| *len <= DAY_MS)
        .collect();
    let mut past: VecDeque<(f64, f64)> = VecDeque::new();
    let mut minutes_written = 0u64;
    let mut m = from;
    // Each minute ends where the next begins: its end power is the next one's start.
    let mut b = powers(&cli, m);
    store.begin()?;
    while m < to {
        // Energy of the minute: the mean of its start and end power (trapezoid), × 60 s.
        let a = std::mem::replace(&mut b, powers(&cli, m + MINUTE_MS));
        let mean = |f: fn(&Powers) -> f64| (f(&a) + f(&b)) / 2.0;
        let energy = [
            mean(|p| p.facility),
            mean(|p| p.ups_output),
            mean(|p| p.it),
            mean(|p| p.cooling),
        ];
        let rows: Vec<MinuteEnergy> = meters
            .iter()
            .zip(energy)
            .map(|(&(point, n), w)| MinuteEnergy {
                ts_ms: m,
                point,
                energy_j: w * 60.0,
                covered_ms: n * MINUTE_MS as f64,
                expected_ms: n * MINUTE_MS as f64,
                estimated_j: 0.0,
                filled_j: 0.0,
            })
            .collect();
        store.put_minutes(&cli.site, &rows)?;
        past.push_front((energy[0] * 60.0, energy[2] * 60.0));
        past.truncate((DAY_MS / MINUTE_MS) as usize);
        let row = |series: &'static str, key: &str, value: f64| DerivedRow {
            site: cli.site.clone(),
            series,
            key: key.to_owned(),
            ts_ms: m,
            value: Some(value),
            category: None,
            coverage: None,
            quality: None,
        };
        let mut derived = Vec::new();
        for (name, len) in &windows {
            let n = (len / MINUTE_MS) as usize;
            if past.len() < n {
                continue;
            }
            let (f, i) = past
                .iter()
                .take(n)
                .fold((0.0, 0.0), |(f, i), (df, di)| (f + df, i + di));
            derived.push(DerivedRow {
                category: Some(3),
                coverage: Some(1.0),
                quality: Some("measured"),
                ..row("pue", name, f / i)
            });
        }
        derived.push(DerivedRow {
            category: Some(3),
            coverage: Some(1.0),
            quality: Some("measured"),
            ..row("power_ratio", "", b.facility / b.it)
        });
        derived.push(row("facility_w", "", b.facility));
        derived.push(row("it_w", "", b.it));
        derived.push(row("nodes_online", "", f64::from(cli.hosts + 2)));
        for (i, w) in b.racks.iter().enumerate() {
            derived.push(row("rack_power_w", &format!("r{}", i + 1), *w));
        }
        store.put_derived(&derived)?;
        minutes_written += 1;
        // One transaction per day keeps memory flat and the file consistent.
        if (m - from) % DAY_MS == DAY_MS - MINUTE_MS {
            store.commit()?;
            store.begin()?;
        }
        m += MINUTE_MS;
    }
    store.commit()?;
    println!(
        "dcwatt-backfill: {} minutes of site {} written to {} ({} days)",
        minutes_written,
        cli.site,
        cli.db.display(),
        cli.days
    );
    Ok(())
}
