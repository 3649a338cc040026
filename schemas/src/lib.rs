//! Messages of nats-mesh, defined once.
//!
//! - [`name`]: validated node names (`^[A-Za-z0-9_-]{1,64}$`).
//! - [`color`]: validated colours (CSS hex or a fixed list of names).
//! - [`subject`]: the NATS subjects nodes serve and publish on.
//! - [`activation`]: the activation request and the reply tree.
//! - [`reply_in_place`]: a reply tree checked in place, to be passed on as it came.
//! - [`status`]: the status event a node publishes on `status.<node>`.
//! - [`service`]: a node's Services API metadata and the `$SRV` subjects.
//! - [`config`]: live settings of a node and where they are kept.
//! - [`function`]: functions deployed at runtime: the record of a version, the buckets.
//! - [`graph`]: the graph of nodes the gateway discovers.
//! - [`job`]: asynchronous activations: the queue, a job and its record.
//! - [`trigger`]: what activates a node besides a request: a subject, a schedule.
//! - [`record`]: finished activations the gateway keeps for its inspector.
//! - [`sse`]: the gateway's Server-Sent Events: names and payloads.
//! - [`json_schema`]: JSON Schema documents of the three messages.
//! - `openapi` (feature `openapi`): poem-openapi types, so the gateway's OpenAPI document
//!   shows the same validation.
//!
//! Every type here parses from untrusted input: anything that reaches a NATS subject,
//! Mermaid source, CSS or HTML has been validated by one of these types first.

pub mod activation;
pub mod color;
pub mod config;
pub mod function;
pub mod graph;
pub mod job;
pub mod json_schema;
pub mod name;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod record;
pub mod reply_in_place;
pub mod service;
pub mod sse;
pub mod status;
pub mod subject;
pub mod trigger;

pub use activation::{
    code, ActivationId, ActivationReply, ActivationRequest, FunctionInput, Outcome,
};
pub use color::{Color, ColorError};
pub use name::{NameError, NodeName};
pub use status::{NodeState, StatusEvent};

/// Serialises each validated string type (a newtype of `String`) as its text, borrowed:
/// serde's `into = "String"` would clone the string on every serialisation.
macro_rules! serialize_as_str {
    ($($t:ty),+) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    )+};
}
serialize_as_str!(ActivationId, Color, NodeName);

/// The current time as RFC 3339 text, as used in [`StatusEvent::at`].
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        // Formatting a UTC timestamp with a well-known format only fails for years
        // outside 0..=9999, which the system clock never reports.
        .unwrap_or_default()
}
