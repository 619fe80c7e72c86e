//! The InfluxDB sink's own work without a network: encoding raw readings as line protocol,
//! and gzipping 5,000-line request bodies at each level, for batches shaped like
//! dcwatt-loadgen's (20 readings). `cargo bench -p dcwatt-collector --bench influx`; the
//! numbers and what they led to (the default `influx.gzip_level`) are in
//! docs/benchmarks.md.

use dcwatt_collector::engine::Batch;
use dcwatt_collector::sinks::influx::{gzip, schema};
use dcwatt_common::protocol::{Point, Reading};
use std::hint::black_box;
use std::time::Instant;

const BATCHES: usize = 20_000;
const LINES_PER_BODY: usize = 5_000;

/// Values that vary from batch to batch as real ones do (identical values would
/// compress far better than any site's data).
fn batch(node: usize, ts: i64) -> Batch {
    let jitter =
        |k: usize| ((ts as usize / 10_000 * 7_919 + node * 104_729 + k * 31) % 10_000) as f64 / 1e4;
    let watts = 150.0 + (node % 200) as f64 + 10.0 * jitter(0);
    let mut readings = vec![
        Reading::gauge("power_w", watts, ts).at(Point::ItInput),
        Reading::counter("energy_j", watts * ts as f64 / 1e3, ts).at(Point::ItInput),
        Reading::gauge("cpu_util", jitter(2), ts),
    ];
    for k in 3..20 {
        let mut r = Reading::gauge("temp_c", 20.0 + k as f64 + jitter(k), ts);
        r.component = format!("sensor{k}").into();
        readings.push(r);
    }
    Batch {
        site: "bench".into(),
        node: format!("h{node:06}"),
        rack: Some(format!("r{:04}", node / 20)),
        zone: None,
        readings,
    }
}

fn main() {
    let t0 = 1_800_000_000_000;
    let batches: Vec<Batch> = (0..BATCHES)
        .map(|i| batch(i % 1_000, t0 + (i / 1_000) as i64 * 10_000))
        .collect();
    // Encoding, as the sink's encoder does: one growing body, sealed every 5,000 lines.
    let t = Instant::now();
    let (mut bodies, mut body, mut lines) = (Vec::new(), String::new(), 0usize);
    for b in &batches {
        lines += schema::readings(&mut body, b);
        if lines >= LINES_PER_BODY {
            bodies.push(std::mem::take(&mut body));
            lines = 0;
        }
    }
    let encode_s = t.elapsed().as_secs_f64();
    let total_lines = BATCHES * 20;
    let bytes: usize = bodies.iter().map(String::len).sum();
    println!(
        "encode: {total_lines} lines in {:.1} ms: {:.0} lines/s, {:.0} bytes/line",
        encode_s * 1e3,
        total_lines as f64 / encode_s,
        bytes as f64 / total_lines as f64
    );
    for level in [1, 3, 6, 9] {
        let t = Instant::now();
        let mut out = 0usize;
        for b in &bodies {
            out += black_box(gzip(b.as_bytes(), level)).len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "gzip level {level}: {:.0} lines/s ({:.0} MB/s in), {:.1} % of the size",
            total_lines as f64 / s,
            bytes as f64 / s / 1e6,
            100.0 * out as f64 / bytes as f64
        );
    }
}
