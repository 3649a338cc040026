//! Triggers: what activates a node besides a request. A trigger activates its node for
//! each message on a NATS subject, or on a cron schedule.
//!
//! Triggers are kept in the key-value bucket [`BUCKET`] (key: the trigger's name), so
//! every gateway runs the same ones; a topology file's `[[trigger]]` tables are put there
//! by the node process that loads it, and `PUT /triggers/{name}` changes them at runtime.
//! A subject trigger is subscribed in queue group [`QUEUE_GROUP`] (one gateway per
//! message); a message with a reply subject is answered with the reply tree, one without
//! becomes an asynchronous activation. A cron trigger queues one asynchronous activation
//! per tick, with an id made of its name and the tick, so however many gateways see the
//! tick the activation is stored once.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::NodeName;

/// The key-value bucket of triggers.
pub const BUCKET: &str = "MESH_TRIGGERS";
/// The queue group of gateways subscribed to a subject trigger.
pub const QUEUE_GROUP: &str = "mesh-triggers";
/// Most triggers a gateway runs.
pub const MAX_TRIGGERS: usize = 1000;
/// Longest subject (bytes).
const MAX_SUBJECT: usize = 256;
/// Subjects a trigger may not take: the mesh's own and the server's.
const RESERVED: [&str; 6] = ["activate.", "status.", "mesh.", "$", "_INBOX.", "_R_."];

/// One trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The node it activates.
    pub node: NodeName,
    /// A NATS subject (no wildcards, not one of the mesh's own): one activation per
    /// message, the message's payload as input (JSON, or else a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A cron schedule with seconds (`sec min hour day month weekday [year]`, UTC): one
    /// asynchronous activation per tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The input of a cron trigger's activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Each activation's budget in milliseconds (default: the gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Why a trigger was refused.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// Not a trigger (malformed, a wrong type, an unknown field).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Not exactly one of `subject` and `cron`.
    #[error("a trigger has exactly one of subject and cron")]
    Kind,
    /// A subject it may not take.
    #[error("subject {0:?}: {1}")]
    Subject(String, &'static str),
    /// A budget out of range.
    #[error("timeout_ms must be between 1 and 600000")]
    Timeout,
}

impl Trigger {
    /// Parses and checks a stored or sent trigger (the schedule is checked by whoever
    /// runs it: see `gateway::triggers`).
    pub fn decode(bytes: &[u8]) -> Result<Self, TriggerError> {
        let trigger: Self = serde_json::from_slice(bytes)?;
        trigger.check()?;
        Ok(trigger)
    }

    /// Whether it is well formed.
    pub fn check(&self) -> Result<(), TriggerError> {
        match (&self.subject, &self.cron) {
            (Some(subject), None) => check_subject(subject)?,
            (None, Some(_)) => {}
            _ => return Err(TriggerError::Kind),
        }
        if self
            .timeout_ms
            .is_some_and(|t| t == 0 || t > crate::activation::MAX_TIMEOUT_MS)
        {
            return Err(TriggerError::Timeout);
        }
        Ok(())
    }
}

fn check_subject(subject: &str) -> Result<(), TriggerError> {
    let refuse = |why| Err(TriggerError::Subject(subject.to_string(), why));
    if subject.is_empty() || subject.len() > MAX_SUBJECT {
        return refuse("a subject is 1 to 256 bytes");
    }
    if subject.split('.').any(|t| {
        t.is_empty()
            || t.bytes()
                .any(|b| b <= b' ' || b == 0x7f || b == b'*' || b == b'>')
    }) {
        return refuse("tokens are non-empty, without spaces, control characters or wildcards");
    }
    if RESERVED.iter().any(|r| subject.starts_with(r)) {
        return refuse(
            "the mesh's own subjects (activate., status., mesh., $, _INBOX.) are not triggers",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_checked() {
        let ok = |t: &str| {
            Trigger::decode(t.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(ok(r#"{"node":"UI","subject":"orders.created"}"#).is_ok());
        assert!(ok(r#"{"node":"UI","cron":"*/5 * * * * *","input":{"x":1}}"#).is_ok());
        for bad in [
            r#"{"node":"UI"}"#,
            r#"{"node":"UI","subject":"a","cron":"* * * * * *"}"#,
            r#"{"node":"UI","subject":"orders.*"}"#,
            r#"{"node":"UI","subject":"orders.>"}"#,
            r#"{"node":"UI","subject":"a..b"}"#,
            r#"{"node":"UI","subject":"activate.UI"}"#,
            r#"{"node":"UI","subject":"$SRV.PING"}"#,
            r#"{"node":"UI","subject":"a b"}"#,
            r#"{"node":"a.b","subject":"x"}"#,
            r#"{"node":"UI","subject":"x","timeout_ms":0}"#,
            r#"{"node":"UI","subject":"x","other":1}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }
}
