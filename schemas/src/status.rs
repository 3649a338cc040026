//! The status event a node publishes on `status.<node>`.

use serde::{Deserialize, Serialize};

use crate::{activation::ActivationId, subject, Color, NodeName};

/// The state a status event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum NodeState {
    /// The node received an activation and is working on it.
    Running,
    /// The node's activation succeeded.
    Ok,
    /// The node's activation did not succeed.
    Failed,
    /// A colour set by hand (the gateway's `PUT /nodes/{node}/color`).
    Manual,
    /// Back to rest.
    Idle,
}

/// One status event. Published by nodes, by the gateway for manual colours, and by
/// anyone with a NATS client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct StatusEvent {
    /// The node the event is about; always the node of the subject it came on.
    pub node: NodeName,
    /// The state being reported.
    pub state: NodeState,
    /// Colour to show: the request's running colour, or the manual colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub color: Option<Color>,
    /// Code of the outcome, on final states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub code: Option<u16>,
    /// The activation this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub activation_id: Option<ActivationId>,
    /// Id of the replica (or gateway) that published the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub instance: Option<String>,
    /// Time the node spent on the activation, on final states, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub elapsed_ms: Option<u64>,
    /// Size in bytes of the node's function result (JSON), on final states of function
    /// nodes. The result itself travels in the reply, not in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub result_bytes: Option<u64>,
    /// W3C trace id (32 hex digits) of the activation's trace (absent only when the
    /// publisher propagates no trace context: `OTEL_PROPAGATORS=none`, or another client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub trace_id: Option<String>,
    /// When the event was published (RFC 3339).
    pub at: String,
    /// The gateway that relayed the event to an SSE client (set by the gateway only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub relayed_by: Option<String>,
}

/// Why a status message was ignored.
#[derive(Debug, thiserror::Error)]
pub enum StatusDecodeError {
    /// The subject is not `status.<valid node name>`.
    #[error("subject {0:?} is not status.<node>")]
    Subject(String),
    /// The body is not a valid status event.
    #[error("malformed status event: {0}")]
    Json(#[from] serde_json::Error),
}

/// The shape accepted from the bus: `node` and `at` may be left out by hand-written
/// events (`nats pub status.V '{"state":"ok"}'`).
#[derive(Deserialize)]
struct LenientStatus {
    #[serde(default)]
    node: Option<serde_json::Value>,
    #[serde(default)]
    at: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl StatusEvent {
    /// A new event for `node` in `state`, stamped now.
    pub fn new(node: NodeName, state: NodeState) -> Self {
        Self {
            node,
            state,
            color: None,
            code: None,
            activation_id: None,
            instance: None,
            elapsed_ms: None,
            result_bytes: None,
            trace_id: None,
            at: crate::now_rfc3339(),
            relayed_by: None,
        }
    }

    /// Parses an event received on `subject`. The node is taken from the subject (a body
    /// naming another node is refused); a missing `at` is stamped now.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Self, StatusDecodeError> {
        Self::decode_as_sent(subject, payload).map(|(event, _)| event)
    }

    /// As [`StatusEvent::decode`], and whether the payload was a complete event as
    /// sent (every required field present, nothing filled in): then it is the event's
    /// JSON as it stands.
    pub fn decode_as_sent(
        subject: &str,
        payload: &[u8],
    ) -> Result<(Self, bool), StatusDecodeError> {
        let node = subject::node_of_status(subject)
            .ok_or_else(|| StatusDecodeError::Subject(subject.chars().take(80).collect()))?;
        // The events nodes publish are complete: read them directly. Only a hand-written
        // one takes the lenient (and costlier) path below.
        if let Ok(event) = serde_json::from_slice::<StatusEvent>(payload) {
            if event.node != node {
                return Err(StatusDecodeError::Json(serde::de::Error::custom(format!(
                    "body names node \"{}\", subject names {node}",
                    event.node
                ))));
            }
            return Ok((event, true));
        }
        let lenient: LenientStatus = serde_json::from_slice(payload)?;
        if let Some(claimed) = lenient.node {
            if claimed != serde_json::Value::String(node.to_string()) {
                return Err(StatusDecodeError::Json(serde::de::Error::custom(format!(
                    "body names node {claimed}, subject names {node}"
                ))));
            }
        }
        let mut object = lenient.rest;
        object.insert("node".into(), node.to_string().into());
        object.insert(
            "at".into(),
            lenient.at.unwrap_or_else(crate::now_rfc3339).into(),
        );
        Ok((
            serde_json::from_value(serde_json::Value::Object(object))?,
            false,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut e = StatusEvent::new(NodeName::new("V").unwrap(), NodeState::Ok);
        e.code = Some(200);
        let bytes = serde_json::to_vec(&e).unwrap();
        assert_eq!(StatusEvent::decode("status.V", &bytes).unwrap(), e);
    }

    #[test]
    fn lenient_hand_written_events() {
        let e = StatusEvent::decode("status.V", br##"{"state":"manual","color":"#f0f"}"##).unwrap();
        assert_eq!(e.node.as_str(), "V");
        assert_eq!(e.state, NodeState::Manual);
        assert!(!e.at.is_empty());
    }

    #[test]
    fn refuses_bad_events() {
        for (subject, body) in [
            ("status.V", &br#"{"state":"exploded"}"#[..]),
            ("status.V", br#"{"state":"ok","node":"W"}"#),
            ("status.V", br#"{"state":"ok","color":"red;x"}"#),
            ("status.a.b", br#"{"state":"ok"}"#),
            ("status.V", b"not json"),
            ("status.V", br#"{"state":"ok","code":"x"}"#),
        ] {
            assert!(
                StatusEvent::decode(subject, body).is_err(),
                "{subject} {body:?}"
            );
        }
    }
}
