//! WebAssembly functions of nats-mesh: modules users deploy at runtime.
//!
//! - [`engine`]: checking a module at deploy, compiling it once per version, and running
//!   it once per activation in a fresh instance, bounded in time, memory and output.
//! - [`store`]: where deployed functions are kept on the bus (a key-value bucket of
//!   records, an object store bucket of modules), shared by the gateway that deploys
//!   them and the runners that serve them.

pub mod engine;
pub mod store;

pub use engine::{Compiled, Engine, ModuleError, Run, RunError};
