//! dcwatt-agent: reads power and load on a host or next to facility meters and publishes
//! protocol-v1 batches over MQTT.
//!
//! - [`config`]: the agent's configuration, validated whole before anything starts.
//! - [`sources`]: one module per source behind the [`sources::Source`] trait; sources know
//!   nothing of MQTT.
//! - [`scheduler`]: samples the sources on their intervals and assembles batches.
//! - [`publisher`]: the MQTT side: birth, last will, QoS 1 batches, reconnect with backoff.
//! - [`spool`]: the on-disk spool that keeps batches while the broker is away.
//! - [`metrics`]: the optional `/metrics` of the agent itself (`http.listen`).
//! - [`run`]: wires them together; stops the sources first, then lets the publisher take
//!   what is queued (phased shutdown, shared with the collector).
#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod publisher;
pub mod run;
pub mod scheduler;
pub mod sources;
pub mod spool;
