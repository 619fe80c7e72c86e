//! Prometheus text exposition of the pipeline counters and the sites' numbers.

use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
}

/// `dcwatt_ingest_latency_seconds`: from a reading's timestamp to its effect.
fn latency_histogram(out: &mut String, h: &crate::intake::LatencyHistogram) {
    const NAME: &str = "dcwatt_ingest_latency_seconds";
    family(
        out,
        NAME,
        "histogram",
        "From each accepted reading's timestamp to its effect in the site state.",
    );
    let (cumulative, sum_ms, count) = h.snapshot();
    let bounds = crate::intake::LATENCY_BOUNDS_MS
        .iter()
        .map(|b| *b as f64 / 1000.0);
    for (le, n) in bounds
        .map(|b| b.to_string())
        .chain(["+Inf".to_owned()])
        .zip(cumulative)
    {
        let _ = writeln!(out, "{NAME}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{NAME}_sum {}", sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "{NAME}_count {count}");
}

/// `GET /metrics`.
pub async fn render(State(s): State<AppState>) -> impl IntoResponse {
    let mut o = String::with_capacity(4096);
    let st = &s.stats;
    family(
        &mut o,
        "dcwatt_messages_received_total",
        "counter",
        "MQTT messages received by the intake.",
    );
    let _ = writeln!(
        o,
        "dcwatt_messages_received_total{{kind=\"readings\"}} {}",
        st.readings_messages.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "dcwatt_messages_received_total{{kind=\"status\"}} {}",
        st.status_messages.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "dcwatt_messages_received_total{{kind=\"summary\"}} {}",
        st.summary_messages.load(Ordering::Relaxed)
    );
    counter(
        &mut o,
        "dcwatt_readings_accepted_total",
        "Readings accepted into the engine.",
        &st.readings_accepted,
    );
    latency_histogram(&mut o, &st.latency);
    family(
        &mut o,
        "dcwatt_messages_rejected_total",
        "counter",
        "Whole messages refused, by reason.",
    );
    for (reason, n) in st.messages_rejected() {
        let _ = writeln!(
            o,
            "dcwatt_messages_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut o,
        "dcwatt_readings_rejected_total",
        "counter",
        "Single readings refused, by reason.",
    );
    for (reason, n) in st.readings_rejected() {
        let _ = writeln!(
            o,
            "dcwatt_readings_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(&mut o, "dcwatt_batches_missing", "gauge", "Agent batches that have not arrived (sequence gaps not yet filled by late, replayed batches).");
    let _ = writeln!(
        o,
        "dcwatt_batches_missing {}",
        st.batches_missing.load(Ordering::Relaxed)
    );
    counter(
        &mut o,
        "dcwatt_batches_late_total",
        "Batches that arrived after later ones (replayed from an agent's spool), filling a gap.",
        &st.late_batches,
    );
    counter(
        &mut o,
        "dcwatt_agent_restarts_total",
        "Agent restarts seen (sequence number went back).",
        &st.agent_restarts,
    );
    counter(
        &mut o,
        "dcwatt_counter_resets_total",
        "Energy counters that went backwards without a known wrap (a reset), not turned into energy.",
        &st.counter_resets,
    );
    counter(
        &mut o,
        "dcwatt_counter_wraps_total",
        "Energy counters that wrapped at their known range (wraps_at), unwrapped into energy.",
        &st.counter_wraps,
    );
    counter(
        &mut o,
        "dcwatt_counter_jumps_rejected_total",
        "Energy counter jumps implying absurd power, not turned into energy.",
        &st.implausible_jumps,
    );
    counter(
        &mut o,
        "dcwatt_samples_out_of_order_total",
        "Samples older than their meter's reorder window (its last 8 samples, 10 min at most): dropped.",
        &st.out_of_order,
    );
    counter(
        &mut o,
        "dcwatt_samples_reordered_total",
        "Samples that arrived after newer ones of their meter, within the reorder window: put in their place.",
        &st.reordered,
    );
    counter(
        &mut o,
        "dcwatt_energy_too_old_total",
        "Energy segments older than the engine's buckets hold.",
        &st.too_old,
    );
    counter(
        &mut o,
        "dcwatt_counters_frozen_total",
        "Energy counters found stuck while their gauge showed power (energy then comes from the gauge).",
        &st.frozen_counters,
    );
    counter(
        &mut o,
        "dcwatt_gauges_frozen_total",
        "Power gauges found repeating the same non-zero value for engine.frozen_gauge_readings readings (flagged; their energy still counts).",
        &st.frozen_gauges,
    );
    counter(
        &mut o,
        "dcwatt_broker_disconnects_total",
        "Connections to the broker lost.",
        &st.broker_disconnects,
    );
    family(
        &mut o,
        "dcwatt_broker_connected",
        "gauge",
        "1 while the intake is connected to its broker.",
    );
    let _ = writeln!(
        o,
        "dcwatt_broker_connected {}",
        u8::from(st.broker_connected.load(Ordering::Relaxed))
    );
    family(
        &mut o,
        "dcwatt_intake_queue_depth",
        "gauge",
        "Messages waiting between the broker and the intake.",
    );
    let _ = writeln!(
        o,
        "dcwatt_intake_queue_depth {}",
        s.queue.max_capacity() - s.queue.capacity()
    );

    family(
        &mut o,
        "dcwatt_alerts_firing",
        "gauge",
        "Alerts firing, by severity.",
    );
    let mut firing: std::collections::BTreeMap<&str, u64> = ["info", "warning", "critical"]
        .iter()
        .map(|s| (*s, 0))
        .collect();
    let rules = s.rules.get();
    if let Ok(book) = s.book.lock() {
        for (key, st) in &book.states {
            if st.phase == crate::alerts::Phase::Firing {
                let sev = rules
                    .iter()
                    .find(|r| r.name == key.rule)
                    .map_or("warning", |r| r.severity.as_str());
                *firing.entry(sev).or_default() += 1;
            }
        }
    }
    for (sev, n) in &firing {
        let _ = writeln!(o, "dcwatt_alerts_firing{{severity=\"{sev}\"}} {n}");
    }
    let a = &s.alert_stats;
    for (name, help, arr) in [
        (
            "dcwatt_alert_notifications_total",
            "Alert notifications delivered, by sink.",
            &a.sent,
        ),
        (
            "dcwatt_alert_notification_failures_total",
            "Alert notifications that failed after retries, by sink.",
            &a.failed,
        ),
        (
            "dcwatt_alert_notifications_dropped_total",
            "Alert notifications refused by a full sink queue, by sink.",
            &a.dropped,
        ),
    ] {
        family(&mut o, name, "counter", help);
        for (i, sink) in crate::alerts::notify::SINKS.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}{{sink=\"{sink}\"}} {}",
                arr[i].load(Ordering::Relaxed)
            );
        }
    }
    sinks(&mut o, &s.sinks);

    let now = dcwatt_common::now_ms();
    let views: Vec<_> = match s.engine.lock() {
        Ok(e) => e
            .site_ids()
            .iter()
            .filter_map(|id| e.site_view(id, now))
            .collect(),
        Err(_) => Vec::new(),
    };
    family(
        &mut o,
        "dcwatt_site_pue",
        "gauge",
        "Energy-based PUE per site and rolling window, labelled with its category.",
    );
    for v in &views {
        for (w, pv) in &v.pue.0 {
            if let (Some(val), Some(c)) = (pv.value, pv.category) {
                let _ = writeln!(
                    o,
                    "dcwatt_site_pue{{site=\"{}\",window=\"{w}\",category=\"{c}\"}} {val}",
                    v.site
                );
            }
        }
    }
    family(
        &mut o,
        "dcwatt_site_pue_coverage",
        "gauge",
        "Coverage of the PUE window's energies (share of expected meter-time).",
    );
    for v in &views {
        for (w, pv) in &v.pue.0 {
            let _ = writeln!(
                o,
                "dcwatt_site_pue_coverage{{site=\"{}\",window=\"{w}\",side=\"it\"}} {}",
                v.site, pv.coverage_it
            );
            let _ = writeln!(
                o,
                "dcwatt_site_pue_coverage{{site=\"{}\",window=\"{w}\",side=\"facility\"}} {}",
                v.site, pv.coverage_facility
            );
        }
    }
    family(
        &mut o,
        "dcwatt_site_power_watts",
        "gauge",
        "Live site power: facility input and IT (at the chosen category).",
    );
    for v in &views {
        if let Some(w) = v.power.facility_w {
            let _ = writeln!(
                o,
                "dcwatt_site_power_watts{{site=\"{}\",kind=\"facility\"}} {w}",
                v.site
            );
        }
        if let Some(w) = v.power.it_w {
            let _ = writeln!(
                o,
                "dcwatt_site_power_watts{{site=\"{}\",kind=\"it\"}} {w}",
                v.site
            );
        }
    }
    family(
        &mut o,
        "dcwatt_site_power_ratio",
        "gauge",
        "Instantaneous facility/IT power ratio (indicative, not PUE).",
    );
    for v in &views {
        if let (Some(r), Some(c)) = (v.power.ratio, v.power.category) {
            let _ = writeln!(
                o,
                "dcwatt_site_power_ratio{{site=\"{}\",category=\"{c}\"}} {r}",
                v.site
            );
        }
    }
    family(
        &mut o,
        "dcwatt_site_nodes",
        "gauge",
        "Nodes per site by state.",
    );
    for v in &views {
        for (state, n) in [
            ("online", v.nodes.online),
            ("offline", v.nodes.offline),
            ("stale", v.nodes.stale),
            ("retired", v.nodes.retired),
        ] {
            let _ = writeln!(
                o,
                "dcwatt_site_nodes{{site=\"{}\",state=\"{state}\"}} {n}",
                v.site
            );
        }
    }
    family(
        &mut o,
        "dcwatt_site_standard_racks",
        "gauge",
        "Rack budgets in standard racks (2.5 kW each): configured and in use.",
    );
    for v in &views {
        let c = &v.capacity;
        let _ = writeln!(
            o,
            "dcwatt_site_standard_racks{{site=\"{}\",state=\"configured\"}} {}",
            v.site, c.standard_racks
        );
        let _ = writeln!(
            o,
            "dcwatt_site_standard_racks{{site=\"{}\",state=\"in_use\"}} {}",
            v.site, c.standard_racks_in_use
        );
    }
    family(
        &mut o,
        "dcwatt_site_fp16_pflops",
        "gauge",
        "Peak dense FP16 compute of the site's GPUs, PFLOPS.",
    );
    for v in &views {
        let _ = writeln!(
            o,
            "dcwatt_site_fp16_pflops{{site=\"{}\"}} {}",
            v.site, v.capacity.fp16_pflops
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o,
    )
}

/// The sinks' counters (only for the sinks that run).
fn sinks(o: &mut String, k: &crate::sink::Sinks) {
    let taps = [("influx", &k.taps.influx), ("history", &k.taps.history)];
    if taps.iter().any(|(_, t)| t.is_some()) {
        family(
            o,
            "dcwatt_sink_queue_dropped_total",
            "counter",
            "Readings a sink's full queue refused (the sink was behind), by sink.",
        );
        for (name, t) in taps {
            if let Some(t) = t {
                let _ = writeln!(
                    o,
                    "dcwatt_sink_queue_dropped_total{{sink=\"{name}\"}} {}",
                    t.dropped()
                );
            }
        }
        family(
            o,
            "dcwatt_sink_queue_batches",
            "gauge",
            "Batches waiting in a sink's queue, by sink.",
        );
        for (name, t) in taps {
            if let Some(t) = t {
                let _ = writeln!(
                    o,
                    "dcwatt_sink_queue_batches{{sink=\"{name}\"}} {}",
                    t.depth()
                );
            }
        }
    }
    if let Some(i) = &k.influx {
        counter(
            o,
            "dcwatt_influx_lines_written_total",
            "Lines InfluxDB accepted.",
            &i.lines_written,
        );
        counter(
            o,
            "dcwatt_influx_requests_total",
            "Successful InfluxDB write requests.",
            &i.requests_ok,
        );
        counter(
            o,
            "dcwatt_influx_retries_total",
            "Failed InfluxDB writes that are retried (connection, timeout, 5xx, 429).",
            &i.retries,
        );
        counter(
            o,
            "dcwatt_influx_lines_rejected_total",
            "Lines InfluxDB refused for good (4xx): dropped.",
            &i.lines_rejected,
        );
        counter(
            o,
            "dcwatt_influx_lines_dropped_total",
            "Lines dropped because the buffer was full while InfluxDB was unreachable.",
            &i.lines_dropped,
        );
        family(
            o,
            "dcwatt_influx_buffered_lines",
            "gauge",
            "Lines waiting to be written to InfluxDB.",
        );
        let _ = writeln!(
            o,
            "dcwatt_influx_buffered_lines {}",
            i.buffered_lines.load(Ordering::Relaxed)
        );
        family(
            o,
            "dcwatt_influx_buffered_bytes",
            "gauge",
            "Bytes of line protocol waiting to be written to InfluxDB.",
        );
        let _ = writeln!(
            o,
            "dcwatt_influx_buffered_bytes {}",
            i.buffered_bytes.load(Ordering::Relaxed)
        );
        family(
            o,
            "dcwatt_influx_up",
            "gauge",
            "1 while the last InfluxDB write succeeded.",
        );
        let _ = writeln!(
            o,
            "dcwatt_influx_up {}",
            u8::from(i.up.load(Ordering::Relaxed))
        );
    }
    if let Some(st) = &k.state {
        counter(
            o,
            "dcwatt_state_saves_total",
            "Engine state saves written (for restarts).",
            &st.saves,
        );
        counter(
            o,
            "dcwatt_state_save_errors_total",
            "Engine state saves that failed.",
            &st.save_errors,
        );
        family(
            o,
            "dcwatt_state_last_save_bytes",
            "gauge",
            "Size of the last engine state save.",
        );
        let _ = writeln!(
            o,
            "dcwatt_state_last_save_bytes {}",
            st.last_bytes.load(Ordering::Relaxed)
        );
        family(
            o,
            "dcwatt_state_last_save_timestamp_ms",
            "gauge",
            "When the last engine state save was taken.",
        );
        let _ = writeln!(
            o,
            "dcwatt_state_last_save_timestamp_ms {}",
            st.last_ms.load(Ordering::Relaxed)
        );
    }
    if let Some((_, h)) = &k.history {
        counter(
            o,
            "dcwatt_history_raw_written_total",
            "Raw readings written to the history database.",
            &h.raw_written,
        );
        counter(
            o,
            "dcwatt_history_derived_written_total",
            "Derived rows written to the history database.",
            &h.derived_written,
        );
        counter(o, "dcwatt_history_minutes_written_total", "Minutes of energy per point written to the history database (rewrites of late minutes included).", &h.minutes_written);
        counter(
            o,
            "dcwatt_history_pruned_total",
            "Rows deleted from the history database by retention.",
            &h.pruned,
        );
        counter(
            o,
            "dcwatt_history_write_errors_total",
            "History transactions that failed (their rows are lost).",
            &h.write_errors,
        );
        counter(
            o,
            "dcwatt_history_snapshots_dropped_total",
            "Derived snapshots dropped because the history writer was behind.",
            &h.snapshots_dropped,
        );
    }
}
