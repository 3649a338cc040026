//! Integration tests of the node runtime against a real nats-server per test.
#![allow(clippy::unwrap_used, missing_docs)]

mod binary;
mod discovery;
mod faults;
mod functions;
mod helpers;
mod independent_client;
mod security;
mod seed;
