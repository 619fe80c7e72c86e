//! dcwatt-collector: turns the agents' MQTT stream into live, standards-correct PUE.
//!
//! The tree is the architecture; data flows top to bottom:
//!
//! - [`intake`]: decode → validate → sequence check, the MQTT client and the embedded
//!   broker's link, fleet summaries in; its [`owner`](intake::owner) is the one task that
//!   holds the engine and publishes a [`Snapshot`](engine::Snapshot) every second.
//! - [`engine`]: PURE (no I/O, no clock, no tokio): energy, PUE windows, categories,
//!   coverage, zones, racks (budgets, A/B headroom, space, stranded capacity), capacity,
//!   the fleet roll-up, and the snapshot built from them.
//! - [`alerts`]: rules and their state machine (pure), the evaluator reading snapshots,
//!   the notifiers, persistence.
//! - [`sinks`]: InfluxDB, the embedded history, the saved engine state, retained site
//!   summaries on MQTT, and the MQTT client the collector publishes with — one `Sink`
//!   shape each.
//! - [`api`]: HTTP JSON, `/metrics` and the dashboard; reads snapshots, sends edits.
//! - [`config`]: each part's section turned into that part's config type, validated whole
//!   before anything binds; [`config::reload`] applies what SIGHUP may change.
//! - [`zone`]: a site's time zone (IANA or a fixed offset) and its calendar: local days,
//!   months, year to date; a leaf every part may use.
//! - [`broker`]: starting the embedded MQTT broker (rumqttd).
//! - [`run`]: wiring and the shutdown phases.
//!
//! Dependency rules, checked by `tests/architecture.rs`: `engine` imports no other part;
//! `sinks` and `api` never import `alerts` or `intake`; `intake` never imports `sinks`
//! or `alerts`; `zone` imports no other part; nothing imports `run`.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod broker;
pub mod config;
pub mod engine;
pub mod intake;
pub mod run;
pub mod sinks;
pub mod zone;
