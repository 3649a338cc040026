//! Server-Sent Events: status events from the bus to every client, by stage. Each
//! stage depends only on those before it:
//!
//! - [`frame`]: every byte written on a stream is rendered here.
//! - [`history`]: the durable JetStream stream of status events (follow, replay).
//! - [`log`]: numbered frames: the window, control frames, the live broadcast, the
//!   client count.
//! - [`ingest`]: a bus message becomes a validated frame in the log, once (size,
//!   fields, repeats, sequence); [`ingest::Observer`]s see every accepted event.
//! - [`states`]: the latest state of each node, bounded: an observer of ingest.
//! - [`cursor`]: where a client's stream stands and what it wants: the one rule.
//! - [`session`]: what one client is owed: resume, catch-up, live frames, keep-alives
//!   (no socket: a transport writes its chunks).
//! - [`hub`]: the streams that keep up, written from one task per runtime thread to their
//!   [`hub::Sink`]s.
//!
//! The transports that move the bytes are [`crate::direct`] (the socket itself) and
//! hyper (a response body stream, [`session::Session::into_stream`]).

pub mod cursor;
pub mod frame;
pub mod history;
pub mod hub;
pub mod ingest;
pub mod log;
pub mod session;
pub mod states;
