//! The status event a node publishes on `status.<node>`.

use std::borrow::Cow;

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

impl NodeState {
    /// The state's name, as it is in JSON (`running`, `ok`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Manual => "manual",
            Self::Idle => "idle",
        }
    }
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

/// A complete status event read in place: its text borrowed from the payload (`node`
/// and `at` copied only where the JSON escapes them; an optional text with an escape
/// is not read in place at all), validated as [`StatusEvent`] is. What a relay needs
/// of each event, without building one. It encodes to exactly the bytes the owned
/// event encodes to (colours in lower case): a status event has one encoding.
#[derive(Debug, Deserialize, Serialize)]
pub struct StatusEventRef<'a> {
    /// See [`StatusEvent::node`].
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    /// See [`StatusEvent::state`].
    pub state: NodeState,
    /// See [`StatusEvent::color`].
    #[serde(
        borrow,
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "lower_case"
    )]
    pub color: Option<&'a str>,
    /// See [`StatusEvent::code`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// See [`StatusEvent::activation_id`].
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<&'a str>,
    /// See [`StatusEvent::instance`].
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<&'a str>,
    /// See [`StatusEvent::elapsed_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// See [`StatusEvent::result_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// See [`StatusEvent::trace_id`].
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// See [`StatusEvent::at`].
    #[serde(borrow)]
    pub at: Cow<'a, str>,
    /// See [`StatusEvent::relayed_by`].
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub relayed_by: Option<&'a str>,
}

/// A colour as [`Color`] stores it: in lower case.
fn lower_case<S: serde::Serializer>(
    color: &Option<&str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match color {
        Some(c) if c.bytes().any(|b| b.is_ascii_uppercase()) => {
            serializer.serialize_some(&c.to_ascii_lowercase())
        }
        Some(c) => serializer.serialize_some(c),
        None => serializer.serialize_none(),
    }
}

impl StatusEventRef<'_> {
    /// The event as an owned [`StatusEvent`].
    pub fn to_owned_event(&self) -> StatusEvent {
        // Validated when read: the conversions cannot fail.
        let name = |s: &str| NodeName::new(s).unwrap_or_else(|_| unreachable!("validated"));
        StatusEvent {
            node: name(&self.node),
            state: self.state,
            color: self
                .color
                .map(|c| Color::new(c).unwrap_or_else(|_| unreachable!("validated"))),
            code: self.code,
            activation_id: self
                .activation_id
                .map(|a| ActivationId::new(a).unwrap_or_else(|_| unreachable!("validated"))),
            instance: self.instance.map(str::to_string),
            elapsed_ms: self.elapsed_ms,
            result_bytes: self.result_bytes,
            trace_id: self.trace_id.map(str::to_string),
            at: self.at.to_string(),
            relayed_by: self.relayed_by.map(str::to_string),
        }
    }
}

impl StatusEvent {
    /// Reads a complete event received on `subject` in place (see [`StatusEventRef`]).
    /// What it accepts, [`StatusEvent::decode_as_sent`] reads as sent, to the same
    /// event. Anything else (a hand-written event missing `node` or `at`, an invalid
    /// one, an optional text with an escape) is an error: `decode_as_sent` decides.
    pub fn read_complete<'a>(
        subject: &str,
        payload: &'a [u8],
    ) -> Result<StatusEventRef<'a>, StatusDecodeError> {
        let node = subject::node_name_of_status(subject)
            .ok_or_else(|| StatusDecodeError::Subject(subject.chars().take(80).collect()))?;
        let invalid = |what: &str| {
            Err(StatusDecodeError::Json(serde::de::Error::custom(format!(
                "invalid {what}"
            ))))
        };
        // Checked as a whole once (fast for ASCII), so that no text read from it is
        // checked again, one by one.
        let Ok(text) = std::str::from_utf8(payload) else {
            return invalid("UTF-8");
        };
        let event: StatusEventRef<'a> = serde_json::from_str(text)?;
        if event.node != node {
            return invalid("node: not the subject's");
        }
        if !event.color.is_none_or(Color::is_valid) {
            return invalid("color");
        }
        if !event.activation_id.is_none_or(NodeName::is_valid) {
            return invalid("activation_id");
        }
        Ok(event)
    }

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
    fn a_state_is_named_as_in_json() {
        use NodeState::*;
        for state in [Running, Ok, Failed, Manual, Idle] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }

    #[test]
    fn lenient_hand_written_events() {
        let e = StatusEvent::decode("status.V", br##"{"state":"manual","color":"#f0f"}"##).unwrap();
        assert_eq!(e.node.as_str(), "V");
        assert_eq!(e.state, NodeState::Manual);
        assert!(!e.at.is_empty());
    }

    proptest::proptest! {
        /// Read in place or decoded: the same events accepted as sent, the same fields.
        #[test]
        fn read_in_place_accepts_what_decoding_accepts_as_sent(
            subject in proptest::sample::select(vec!["status.V", "status.V", "status.V", "status.W", "status.v-1", "status.a.b", "status", "other.V"]),
            fields in proptest::collection::vec((0usize..11, 0usize..10), 0..5),
            spaced in proptest::bool::ANY,
            complete in proptest::bool::ANY,
        ) {
            const NAMES: [&str; 11] = ["node", "state", "color", "code", "activation_id",
                "instance", "elapsed_ms", "result_bytes", "trace_id", "at", "relayed_by"];
            const VALUES: [&str; 10] = ["\"V\"", "\"ok\"", "\"#FF00ff\"", "200", "null",
                "\"a\\u0041-1\"", "\"red;x\"", "-1", "\"2026-12-01T10:00:00Z\"", "{}"];
            // Half of them start as a complete event, for the rest to vary.
            let mut body = String::from(if complete {
                "{\"node\":\"V\",\"state\":\"ok\",\"at\":\"x\""
            } else {
                "{"
            });
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 || complete {
                    body.push(',');
                }
                if spaced {
                    body.push(' ');
                }
                body.push_str(&format!("\"{}\":{}", NAMES[*name], VALUES[*value]));
            }
            body.push('}');
            let read = StatusEvent::read_complete(subject, body.as_bytes())
                .ok()
                .map(|e| e.to_owned_event());
            let decoded = StatusEvent::decode_as_sent(subject, body.as_bytes())
                .ok()
                .filter(|(_, as_sent)| *as_sent)
                .map(|(e, _)| e);
            // Read in place: only what decoding reads as sent, to the same event.
            if read.is_some() {
                proptest::prop_assert_eq!(read, decoded, "{}", body);
            }
        }
    }

    #[test]
    fn read_in_place_borrows_and_validates() {
        let mut e = StatusEvent::new(NodeName::new("V").unwrap(), NodeState::Ok);
        e.code = Some(200);
        e.color = Some(Color::new("#ff00ff").unwrap());
        e.activation_id = Some(ActivationId::new("a1").unwrap());
        let bytes = serde_json::to_vec(&e).unwrap();
        let read = StatusEvent::read_complete("status.V", &bytes).unwrap();
        assert!(matches!(read.at, Cow::Borrowed(_)));
        assert_eq!(read.to_owned_event(), e);
        assert!(StatusEvent::read_complete("status.W", &bytes).is_err());
        assert!(StatusEvent::read_complete("status.V", br#"{"state":"ok"}"#).is_err());
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
