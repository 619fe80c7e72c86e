//! dcwatt-collector: turns the agents' MQTT stream into live, standards-correct PUE.
//!
//! - [`engine`]: per-site state, energy integration, PUE windows, categories, coverage.
//!   PURE: no I/O, no clock, no tokio.
//! - [`intake`]: decode → validate → sequence check → engine; counts every refusal.
//! - [`broker`]: the embedded MQTT broker (rumqttd) and its in-process link to the intake.
//! - [`alerts`]: rules and their state machine (pure), notification sinks, persistence.
//! - [`api`]: HTTP JSON and Prometheus `/metrics`; reads the engine, never changes it.
//! - [`config`]: configuration, validated whole before anything binds.
//! - [`publish`]: the MQTT client for what the collector publishes itself.
//! - [`summary`]: retained site summaries on `dcwatt/v1/{site}/summary`.
//! - [`fleet`]: the region view from site summaries (fleet collectors).
//! - [`sink`]: the InfluxDB sink (line protocol over the v2 write API).
//! - [`history`]: the embedded history (SQLite): trends and energy reports.
//! - [`state`]: the engine saved to disk, restored at start-up.
//! - [`live`]: values SIGHUP may replace (rack budgets, alert rules, site settings).
//! - [`reload`]: SIGHUP: re-reads the configuration and applies what can change live.
//! - [`run`]: wiring and shutdown order.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod broker;
pub mod config;
pub mod engine;
pub mod fleet;
pub mod history;
pub mod intake;
pub mod live;
pub mod publish;
pub mod reload;
pub mod run;
pub mod sink;
pub mod state;
pub mod summary;
