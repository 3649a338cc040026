//! NATS plumbing shared by every nats-mesh process: the node runtime (`handlers`), the
//! gateway and the bench depend on this crate and on `schemas`; the gateway never depends
//! on the node runtime (the bench does, for the Rust function it measures).
//!
//! - [`bus`]: connection settings (URL, credentials, TLS), connecting, syncing, draining.
//! - [`env`]: old names of renamed environment variables, read for one release.
//! - [`live_config`]: the key-value bucket of live node settings.
//! - [`triggers`]: the key-value bucket of triggers.
//! - [`call`]: activating a node over NATS, every failure turned into a reply.
//! - [`span_attrs`]: span names and attributes by the OpenTelemetry conventions.
//! - [`trace_context`]: W3C trace context in NATS headers.
//! - [`telemetry`]: logs, and traces exported over OTLP when configured.
//! - [`node_services`]: one OpenTelemetry service per node in a multi-node process.
//! - [`shutdown`]: the stop signal of a process (Ctrl-C, SIGTERM).

pub mod bus;
pub mod call;
pub mod env;
pub mod live_config;
pub mod node_services;
pub mod shutdown;
pub mod span_attrs;
pub mod telemetry;
pub mod trace_context;
pub mod triggers;
