//! Server-Sent Events: status events from the bus, relayed to every client.
//!
//! - [`frame`]: every byte written on a stream is rendered here.
//! - [`relay`]: the one `status.>` subscription per gateway, numbered, windowed and
//!   broadcast; the bus connection watcher.
//! - [`history`]: the durable JetStream stream of status events.
//! - [`states`]: the latest state of each node, bounded.
//! - [`session`]: one client's stream: filter, resume, catch-up, end at shutdown.
//! - [`hub`]: the streams that keep up, written from one task per core.

pub mod frame;
pub mod history;
pub mod hub;
pub mod relay;
pub mod session;
pub mod states;
