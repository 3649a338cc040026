//! The nats-mesh node runtime.
//!
//! A node answers activations on `activate.<node>` through the NATS Services API,
//! activates its downstream nodes concurrently, does its own simulated work, publishes
//! its status on `status.<node>` and replies with the result tree.
//!
//! - [`fate`]: the simulated work's random outcome, reproducible with a seed.
//! - [`node`]: what one node does with one activation.
//! - [`runtime`]: serving a set of nodes until shutdown.
//! - [`topology`]: node settings, from the command line or a topology file.

pub mod fate;
pub mod node;
pub mod runtime;
pub mod topology;

pub use runtime::{run, Settings};
pub use topology::{NodeSpec, Topology};

/// Version reported to the NATS Services API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
