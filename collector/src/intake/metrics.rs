//! The intake's families on `/metrics`.

use super::{IntakeStats, LatencyHistogram, RawMessage, LATENCY_BOUNDS_MS};
use dcwatt_common::metrics::{Exposition, Source};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// `dcwatt_ingest_latency_seconds`: from a reading's timestamp to its effect.
fn latency_histogram(out: &mut Exposition, h: &LatencyHistogram) {
    const NAME: &str = "dcwatt_ingest_latency_seconds";
    out.family(
        NAME,
        "histogram",
        "From each accepted reading's timestamp to its effect in the site state.",
    );
    let (cumulative, sum_ms, count) = h.snapshot();
    let bounds = LATENCY_BOUNDS_MS.iter().map(|b| *b as f64 / 1000.0);
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

impl Source for IntakeStats {
    fn encode(&self, o: &mut Exposition) {
        let st = self;
        o.family(
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
        let _ = writeln!(
            o,
            "dcwatt_messages_received_total{{kind=\"carbon\"}} {}",
            st.carbon_messages.load(Ordering::Relaxed)
        );
        o.counter(
            "dcwatt_readings_accepted_total",
            "Readings accepted into the engine.",
            &st.readings_accepted,
        );
        latency_histogram(o, &st.latency);
        o.family(
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
        o.family(
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
        o.gauge("dcwatt_batches_missing", "Agent batches that have not arrived (sequence gaps not yet filled by late, replayed batches).", st.batches_missing.load(Ordering::Relaxed));
        o.counter(
        "dcwatt_batches_late_total",
        "Batches that arrived after later ones (replayed from an agent's spool), filling a gap.",
        &st.late_batches,
    );
        o.counter(
            "dcwatt_agent_restarts_total",
            "Agent restarts seen (sequence number went back).",
            &st.agent_restarts,
        );
        o.counter_renamed(
        "dcwatt_energy_meter_resets_total",
        "dcwatt_counter_resets_total",
        "Energy counters that went backwards without a known wrap (a reset), not turned into energy.",
        &st.counter_resets,
    );
        o.counter_renamed(
            "dcwatt_energy_meter_wraps_total",
            "dcwatt_counter_wraps_total",
            "Energy counters that wrapped at their known range (wraps_at), unwrapped into energy.",
            &st.counter_wraps,
        );
        o.counter_renamed(
            "dcwatt_energy_meter_jumps_rejected_total",
            "dcwatt_counter_jumps_rejected_total",
            "Energy counter jumps implying absurd power, not turned into energy.",
            &st.implausible_jumps,
        );
        o.counter(
        "dcwatt_samples_out_of_order_total",
        "Samples older than their meter's reorder window (its last 8 samples, 10 min at most): dropped.",
        &st.out_of_order,
    );
        o.counter(
        "dcwatt_samples_reordered_total",
        "Samples that arrived after newer ones of their meter, within the reorder window: put in their place.",
        &st.reordered,
    );
        o.counter(
            "dcwatt_energy_too_old_total",
            "Energy segments older than the engine's buckets hold.",
            &st.too_old,
        );
        o.counter(
        "dcwatt_counters_frozen_total",
        "Energy counters found stuck while their gauge showed power (energy then comes from the gauge).",
        &st.frozen_counters,
    );
        o.counter(
        "dcwatt_gauges_frozen_total",
        "Power gauges found repeating the same non-zero value for engine.frozen_gauge_readings readings (flagged; their energy still counts).",
        &st.frozen_gauges,
    );
        o.counter(
            "dcwatt_clock_corrected_batches_total",
            "Batches from an agent clock ahead of the collector's by more than intake.max_clock_skew_secs: their readings' times were corrected by the difference.",
            &st.clock_corrected,
        );
        o.counter(
            "dcwatt_clock_late_batches_total",
            "Batches that arrived more than intake.max_clock_skew_secs after they were sent (an agent clock behind, or a backlog); values such a node enters are partial.",
            &st.clock_late,
        );
        o.counter(
            "dcwatt_broker_disconnects_total",
            "Connections to the broker lost.",
            &st.broker_disconnects,
        );
        o.counter(
            "dcwatt_broker_packets_refused_total",
            "Packets the embedded broker refused for their size (over 1 MiB of payload): it drops the connection.",
            &dcwatt_common::logging::BROKER_PACKETS_TOO_LARGE,
        );
        o.counter(
            "dcwatt_broker_logins_refused_total",
            "Logins the embedded broker refused (unknown user or wrong password; each reason and user is logged at most once per 10 s).",
            &st.broker_logins_refused,
        );
        o.gauge(
            "dcwatt_broker_connected",
            "1 while the intake is connected to its broker.",
            u8::from(st.broker_connected.load(Ordering::Relaxed)),
        );
    }
}

/// The intake queue, for its depth.
#[derive(Debug)]
pub struct QueueDepth(pub mpsc::Sender<RawMessage>);

impl Source for QueueDepth {
    fn encode(&self, o: &mut Exposition) {
        o.gauge(
            "dcwatt_intake_queue_depth",
            "Messages waiting between the broker and the intake.",
            self.0.max_capacity() - self.0.capacity(),
        );
    }
}
