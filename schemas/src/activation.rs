//! The activation request and the reply tree.

use std::{borrow::Cow, fmt};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::{Color, NodeName};

/// Largest overall budget a request may ask for, in milliseconds (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Deepest an activation may go: a request's path (the nodes before the one it is
/// sent to) has fewer nodes than this, so that the receiving node, added to it, is at
/// most this deep.
pub const MAX_PATH_LEN: usize = 64;

/// An activation of one node, the body of a request on `activate.<node>`.
///
/// Every field is optional: an empty body is a valid default activation. `path` and
/// `timeout_ms` are rewritten at each hop: a node sends its children the path including
/// itself and only the budget it has left.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// Identifies one activation across every node it reaches; a node makes one up
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<ActivationId>,
    /// Colour shown while the node is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    /// Budget for this node and everything below it, in milliseconds (1 to 600000);
    /// the node's configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600000))]
    pub timeout_ms: Option<u64>,
    /// Nodes already visited by this activation, root first; a node that finds itself
    /// here refuses the request as a loop (508).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub path: Vec<NodeName>,
    /// The activation's input, any JSON: every node passes it on to its children and to
    /// its function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a JSON object of the expected shape.
    #[error("malformed activation request: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("malformed activation request: expected a JSON object")]
    NotAnObject,
    /// `timeout_ms` is out of range.
    #[error("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {0}")]
    Timeout(u64),
    /// `path` is too long.
    #[error("path has {0} nodes: with the node it is sent to, at most {MAX_PATH_LEN} are allowed")]
    PathTooLong(usize),
}

impl ActivationRequest {
    /// Parses and validates a request body. An empty (or all-whitespace) body is the
    /// default request.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        // serde also accepts a struct written as a JSON array; only objects are requests.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(DecodeError::NotAnObject);
        }
        let request: Self = serde_json::from_slice(payload)?;
        request.validate()?;
        Ok(request)
    }

    /// Checks the ranges that the types alone do not.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self.timeout_ms {
            Some(t) if t == 0 || t > MAX_TIMEOUT_MS => return Err(DecodeError::Timeout(t)),
            _ => {}
        }
        if self.path.len() >= MAX_PATH_LEN {
            return Err(DecodeError::PathTooLong(self.path.len()));
        }
        Ok(())
    }
}

/// An activation id: 1 to 64 of `A-Z a-z 0-9 _ -`, so that it is safe in logs, filters
/// and pages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ActivationId(String);

/// Why an activation id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("activation_id must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")]
pub struct ActivationIdError;

impl ActivationId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, ActivationIdError> {
        // An activation id follows the same rule as a node name.
        let id = id.into();
        NodeName::new(id.as_str()).map_err(|_| ActivationIdError)?;
        Ok(Self(id))
    }

    /// A fresh id: a NUID, 22 letters and digits, unique without coordination.
    pub fn generate() -> Self {
        Self(nuid::next().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Looked up by its text (a status event's id, read in place) in maps keyed by id.
impl std::borrow::Borrow<str> for ActivationId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActivationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ActivationId {
    type Error = ActivationIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ActivationId> for String {
    fn from(id: ActivationId) -> String {
        id.0
    }
}

impl JsonSchema for ActivationId {
    fn schema_name() -> Cow<'static, str> {
        "ActivationId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": crate::name::NAME_PATTERN })
    }
}

/// The codes a reply carries (HTTP-like, so that the gateway answers with them as they
/// are). Every place that needs a code names it here.
pub mod code {
    /// The node and everything below it succeeded.
    pub const OK: u16 = 200;
    /// The request was malformed.
    pub const BAD_REQUEST: u16 = 400;
    /// Nothing serves the node and discovery never saw it (gateway only).
    pub const NOT_FOUND: u16 = 404;
    /// The node's own work failed.
    pub const FAILED: u16 = 500;
    /// A child did not succeed, or the node's work failed with a bad answer.
    pub const BAD_GATEWAY: u16 = 502;
    /// Nobody serves the node, or it is at its in-flight limit.
    pub const UNAVAILABLE: u16 = 503;
    /// The budget ran out.
    pub const TIMEOUT: u16 = 504;
    /// The node is already on the activation's path.
    pub const LOOP: u16 = 508;
}

/// How an activation of one node ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum Outcome {
    /// The node and all of its children succeeded (200).
    Ok,
    /// The node's own work failed (500 or 502) or a child did not succeed (502).
    Failed,
    /// The budget ran out before the node answered (504).
    Timeout,
    /// Nobody serves the node (503).
    Unavailable,
    /// The node is already on the activation's path (508).
    Loop,
    /// The request was refused: malformed (400) or the node is at its in-flight limit (503).
    Rejected,
}

impl Outcome {
    /// The code this outcome carries unless a more specific one is given (a failure of
    /// the node's own work may be 500, a node at its limit rejects with 503).
    pub fn code(self) -> u16 {
        match self {
            Outcome::Ok => code::OK,
            Outcome::Failed => code::BAD_GATEWAY,
            Outcome::Timeout => code::TIMEOUT,
            Outcome::Unavailable => code::UNAVAILABLE,
            Outcome::Loop => code::LOOP,
            Outcome::Rejected => code::BAD_REQUEST,
        }
    }

    /// The outcome a reply code stands for, for codes that come from outside a reply
    /// tree (a Services API error reply): 502 is a failure, anything else a refusal.
    pub fn of_error_code(code: u16) -> Self {
        if code == code::BAD_GATEWAY {
            Outcome::Failed
        } else {
            Outcome::Rejected
        }
    }

    /// Whether this outcome is a success.
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
            Outcome::Loop => "loop",
            Outcome::Rejected => "rejected",
        })
    }
}

/// The reply of one node: its own outcome and the replies of every child it called.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ActivationReply {
    /// The node that answered (or, for timeout and unavailable, that was called).
    pub node: NodeName,
    /// The activation this reply belongs to.
    pub activation_id: ActivationId,
    /// Id of the replica that answered; absent when no replica answered (the reply was
    /// made by the caller: timeout, unavailable, or a refused request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub instance: Option<String>,
    /// How the activation of this node ended.
    pub outcome: Outcome,
    /// HTTP-like status code: 200, 500, 502, 503, 504, 508 or 400 (and 404 from the
    /// gateway for a node that nothing serves and discovery never saw).
    pub code: u16,
    /// Time from receipt of the request to the reply, in milliseconds.
    pub elapsed_ms: u64,
    /// Human-readable explanation of the outcome.
    pub message: String,
    /// What the node's function returned (any JSON); absent for simulated nodes and
    /// when the function did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub result: Option<serde_json::Value>,
    /// Replies of the downstream nodes, in the order they are configured.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub children: Vec<ActivationReply>,
}

impl ActivationReply {
    /// A reply with no children, answered by no replica, in no time: `outcome` with its
    /// usual code (see [`Outcome::code`]); builders below adjust it.
    pub fn new(
        node: NodeName,
        activation_id: ActivationId,
        outcome: Outcome,
        message: impl Into<String>,
    ) -> Self {
        Self {
            node,
            activation_id,
            instance: None,
            outcome,
            code: outcome.code(),
            elapsed_ms: 0,
            message: message.into(),
            result: None,
            children: Vec::new(),
        }
    }

    /// Leaves out every node's `result`, in the whole tree (a tree too large to send or
    /// keep keeps its shape, outcomes and messages).
    pub fn strip_results(&mut self) {
        self.result = None;
        self.children
            .iter_mut()
            .for_each(ActivationReply::strip_results);
    }

    /// The same reply with another code.
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }

    /// The same reply, answered by replica `instance`.
    pub fn answered_by(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The same reply, `elapsed` after it was received.
    pub fn elapsed(mut self, elapsed: std::time::Duration) -> Self {
        self.elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Number of replies in this tree, itself included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(Self::count).sum::<usize>()
    }

    /// Depth-first iterator over this reply and every reply below it.
    pub fn iter(&self) -> impl Iterator<Item = &ActivationReply> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let next = stack.pop()?;
            stack.extend(next.children.iter().rev());
            Some(next)
        })
    }
}

/// The JSON document a function node's function receives (on stdin for a program, as
/// the body of a POST for an HTTP endpoint, as [`FunctionInput`] for Rust code): the
/// activation's input and the reply trees of the node's children, which were called
/// first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionInput {
    /// The node whose function this is.
    pub node: NodeName,
    /// The activation.
    pub activation_id: ActivationId,
    /// The activation's input (`null` when it has none).
    pub input: serde_json::Value,
    /// The replies of the node's downstream nodes, in configured order, each with its
    /// `outcome` and, when it succeeded as a function, its `result`.
    pub children: Vec<ActivationReply>,
    /// Milliseconds left of the activation's budget when the function starts.
    pub budget_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_is_default() {
        assert_eq!(ActivationRequest::decode(b"").unwrap(), Default::default());
        assert_eq!(
            ActivationRequest::decode(b" \n").unwrap(),
            Default::default()
        );
        assert_eq!(
            ActivationRequest::decode(b"{}").unwrap(),
            Default::default()
        );
    }

    #[test]
    fn decodes_fields() {
        let r = ActivationRequest::decode(
            br##"{"activation_id":"a1","color":"#F00","timeout_ms":300,"path":["UI","D"]}"##,
        )
        .unwrap();
        assert_eq!(r.activation_id.unwrap().as_str(), "a1");
        assert_eq!(r.color.unwrap().as_str(), "#f00");
        assert_eq!(r.timeout_ms, Some(300));
        assert_eq!(r.path.len(), 2);
    }

    #[test]
    fn refuses_bad_bodies() {
        for bad in [
            &b"nope"[..],
            b"[]",
            b"{\"timeout_ms\":\"x\"}",
            b"{\"timeout_ms\":-1}",
            b"{\"timeout_ms\":0}",
            b"{\"timeout_ms\":600001}",
            b"{\"color\":\"url(x)\"}",
            b"{\"path\":[\"a.b\"]}",
            b"{\"activation_id\":\"a b\"}",
            b"{\"unknown\":1}",
            b"\xff\xfe",
        ] {
            assert!(
                ActivationRequest::decode(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        // The receiving node is added to the path: 63 before it is the deepest allowed.
        let path = |n| format!("{{\"path\":[{}]}}", vec!["\"a\""; n].join(","));
        assert!(matches!(
            ActivationRequest::decode(path(MAX_PATH_LEN).as_bytes()),
            Err(DecodeError::PathTooLong(64))
        ));
        assert!(ActivationRequest::decode(path(MAX_PATH_LEN - 1).as_bytes()).is_ok());
    }

    #[test]
    fn reply_tree_walks_depth_first() {
        let leaf = |n: &str| {
            ActivationReply::new(
                NodeName::new(n).unwrap(),
                ActivationId::new("a").unwrap(),
                Outcome::Ok,
                "",
            )
        };
        let mut root = leaf("A");
        let mut b = leaf("B");
        b.children.push(leaf("C"));
        root.children = vec![b, leaf("D")];
        let order: Vec<_> = root.iter().map(|r| r.node.to_string()).collect();
        assert_eq!(order, ["A", "B", "C", "D"]);
        assert_eq!(root.count(), 4);
    }
}
