//! The nats-mesh node runtime.
//!
//! A node answers activations on `activate.<node>` through the NATS Services API,
//! activates its downstream nodes concurrently, does its own simulated work, publishes
//! its status on `status.<node>` and replies with the result tree.
//!
//! - [`bus`]: NATS connection options shared by every binary (URL, credentials, TLS).
//! - [`call`]: activating a node over NATS and turning every failure into a reply.
//! - [`fate`]: the simulated work's random outcome, reproducible with a seed.
//! - [`node`]: what one node does with one activation.
//! - [`runtime`]: serving a set of nodes until shutdown.
//! - [`topology`]: node settings, from the command line or a topology file.
//! - [`telemetry`]: logs, and traces exported over OTLP when configured.
//! - [`trace_context`]: W3C trace context in NATS headers.

pub mod bus;
pub mod call;
pub mod fate;
pub mod node;
pub mod runtime;
pub mod telemetry;
pub mod topology;
pub mod trace_context;

pub use runtime::{run, Settings};
pub use topology::{NodeSpec, Topology};

/// Version reported to the NATS Services API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
