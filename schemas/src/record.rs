//! A finished activation as the gateway keeps it on the bus, for the activation
//! inspector (`GET /activations`, `GET /activations/{id}`), and the subjects it is kept on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ActivationId, ActivationReply, Color, NodeName, NodeState, Outcome};

/// Subject prefix of kept activations: `mesh.activations.<activation id>`.
pub const SUBJECT_PREFIX: &str = "mesh.activations.";
/// Every kept activation.
pub const SUBJECT_ALL: &str = "mesh.activations.*";

/// The subject an activation is kept on.
pub fn subject(id: &ActivationId) -> String {
    [SUBJECT_PREFIX, id.as_str()].concat()
}

/// A status event of the activation as the gateway received it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct TimelineMark {
    /// The node that published it.
    pub node: NodeName,
    /// Its state (`running`, then `ok` or `failed`).
    pub state: NodeState,
    /// When the gateway received it, in microseconds after it sent the activation
    /// (one clock for every mark, whatever the nodes' clocks say).
    pub offset_us: u64,
    /// The replica that published it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub instance: Option<String>,
}

/// What was asked, so that the activation can be repeated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct RecordedRequest {
    /// The node activated.
    pub node: NodeName,
    /// Its running colour, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub color: Option<Color>,
    /// The budget, in milliseconds.
    pub timeout_ms: u64,
    /// The input, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub input: Option<serde_json::Value>,
}

/// One line of the list of recent activations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ActivationSummary {
    /// The activation.
    pub activation_id: ActivationId,
    /// The node it started at.
    pub node: NodeName,
    /// The root's outcome.
    pub outcome: Outcome,
    /// The root's code (the HTTP status of `POST /activate`).
    pub code: u16,
    /// Time until the reply, in milliseconds, as the gateway measured it.
    pub elapsed_ms: u64,
    /// When the gateway sent it (RFC 3339).
    pub started_at: String,
}

/// A finished activation: what was asked, the reply tree and the status events in the
/// order the gateway received them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ActivationRecord {
    /// The summary (also what `GET /activations` lists).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", oai(flatten))]
    pub summary: ActivationSummary,
    /// What was asked.
    pub request: RecordedRequest,
    /// The reply tree, as `POST /activate` answered it.
    pub reply: ActivationReply,
    /// The activation's status events as the gateway received them, oldest first (at
    /// most a few per node; events that arrived after the reply are not in it).
    pub timeline: Vec<TimelineMark>,
    /// The trace id, when the activation was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub trace_id: Option<String>,
    /// The gateway that ran it.
    pub gateway: String,
}
