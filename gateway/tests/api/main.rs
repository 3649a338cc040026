//! Gateway tests: in-process for validation and the spec, real nats-server, real nodes
//! and real HTTP for everything else, and a real browser for the page.
#![allow(clippy::unwrap_used, missing_docs)]

mod activate;
mod asynchronous;
mod browser;
mod durable;
mod events;
mod faults;
mod functions;
mod helpers;
mod inspector;
mod live_config;
mod load;
mod permissions;
mod private_reads;
mod schemathesis;
mod shutdown;
mod spec;
mod telemetry;
mod topology;
mod triggers;
