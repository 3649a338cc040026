//! The nats-mesh node runtime: serve nodes of a service graph on NATS.
//!
//! A node answers activations on `activate.<node>` through the NATS Services API (so
//! `$SRV.PING|INFO|STATS` and `nats micro ls` find it; replicas share the queue group
//! `mesh`), activates its downstream nodes concurrently, does its own work, publishes
//! its status on `status.<node>` and replies with the result tree. Deadlines travel with
//! each request and shrink at every hop; a node already on the activation's path refuses
//! it (508); a node at its in-flight limit refuses at once (503).
//!
//! A node's own work is simulated (sleep and a dice roll: the seed demo) or a function:
//! a program, an HTTP endpoint, or your own Rust code, run after the children answered,
//! with their replies (see [`function`](mod@function)).
//!
//! # A node whose work is Rust code
//!
//! ```no_run
//! use handlers::{function, runtime, FunctionError, NodeSpec, Settings};
//! use schemas::NodeName;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let upper = function(|call: handlers::Call| async move {
//!     let text = call.input["text"].as_str().unwrap_or_default();
//!     if text.is_empty() {
//!         return Err(FunctionError::failed("input.text is empty"));
//!     }
//!     Ok(serde_json::json!({ "upper": text.to_uppercase() }))
//! });
//! let node = NodeSpec::function(NodeName::new("UPPER")?, upper);
//! // Serves until Ctrl-C or SIGTERM, then finishes what is in flight.
//! runtime::run(client, vec![node], Settings::default(), mesh_core::shutdown::signal()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `cargo run -p handlers --example upper` runs this example against a local server;
//! `nats req activate.UPPER '{"input":{"text":"hi"}}'` calls it.
//!
//! # Modules
//!
//! - [`function`](mod@function): the [`Function`] trait, its [`Call`] and [`FunctionError`].
//! - [`exec`]: a program as a function; [`http`]: an HTTP endpoint as a function.
//! - [`fate`]: the simulated work's random outcome, reproducible with a seed.
//! - [`node`]: what one node does with one activation.
//! - [`live`]: settings changed while running, from the bus.
//! - [`runtime`]: serving a set of nodes until shutdown.
//! - [`runner`]: the runner pool: every WebAssembly function deployed on the bus.
//! - [`wasm`]: a deployed module as a node's function.
//! - [`topology`]: node settings, from the command line or a topology file.

pub mod exec;
pub mod fate;
pub mod function;
pub mod http;
pub mod live;
pub mod node;
pub mod reap;
pub mod runner;
pub mod runtime;
pub mod topology;
pub mod wasm;

pub use function::{function, Call, Function, FunctionError};
pub use runtime::{run, Settings};
pub use topology::{NodeSpec, Topology, Work};

/// Version reported to the NATS Services API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
