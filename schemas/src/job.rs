//! Asynchronous activations: the queue, what it holds, and what is kept of each.
//!
//! `POST /activate` with `Prefer: respond-async` (or a request on [`SUBMIT`]) stores a
//! [`Job`] in the JetStream stream [`STREAM`] on `mesh.async.queue.<node>` and answers at
//! once. Gateways take jobs from the stream's durable consumer [`CONSUMER`], run them
//! (retrying what says "try again") and keep each job's [`JobRecord`] in the key-value
//! bucket [`STATE_BUCKET`] under its activation id. An `Idempotency-Key` is kept in
//! [`KEYS_BUCKET`] for the idempotency window, with the id it named.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{record::RecordedRequest, ActivationId, ActivationReply, NodeName, Outcome};

/// The stream of queued activations.
pub const STREAM: &str = "MESH_ASYNC";
/// The durable consumer every gateway takes jobs from.
pub const CONSUMER: &str = "dispatch";
/// Subjects of queued jobs: `mesh.async.queue.<node>`.
pub const QUEUE_PREFIX: &str = "mesh.async.queue.";
/// The bus door: a [`Submit`] request, answered with an [`Accepted`] (or an error).
pub const SUBMIT: &str = "mesh.async.submit";
/// The key-value bucket of job records, one key per activation id.
pub const STATE_BUCKET: &str = "MESH_ASYNC_STATE";
/// The key-value bucket of idempotency keys (their SHA-256), each naming an activation.
pub const KEYS_BUCKET: &str = "MESH_ASYNC_KEYS";

/// The subject a job for `node` is queued on.
pub fn queue_subject(node: &NodeName) -> String {
    format!("{QUEUE_PREFIX}{node}")
}

/// A queued activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Its activation id.
    pub activation_id: ActivationId,
    /// What was asked.
    pub request: RecordedRequest,
    /// Attempts before it is dead.
    pub max_attempts: u32,
    /// Where its final reply is POSTed, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// When it was accepted (RFC 3339).
    pub queued_at: String,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a gateway (first, or between attempts).
    Queued,
    /// An attempt runs.
    Running,
    /// Answered: ok, or a failure that is not worth retrying.
    Done,
    /// Every attempt said "try again": kept for a re-run on demand.
    Dead,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        })
    }
}

/// One attempt of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: u32,
    /// The gateway that ran it.
    pub gateway: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How it ended (absent while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Its root code (absent while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// How long it took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// The reply tree (results left out when the record would be too large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ActivationReply>,
}

/// What is kept of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// The job.
    pub job: Job,
    /// Where it is.
    pub state: JobState,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
}

/// Whether an outcome says "try again" (the work may succeed later): a timeout, nobody
/// serving, a node at its limit.
pub fn retryable(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Timeout | Outcome::Unavailable | Outcome::Rejected
    )
}

/// A request on [`SUBMIT`]: an activation to run in the background.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The node (default: the gateway's entry node).
    #[serde(default)]
    pub node: Option<NodeName>,
    /// Its input.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// Each attempt's budget in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// A client-chosen activation id.
    #[serde(default)]
    pub activation_id: Option<ActivationId>,
    /// At most one activation per key within the idempotency window.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// The answer to an accepted asynchronous activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    /// Its activation id.
    pub activation_id: ActivationId,
    /// Where its state is: `/activations/<id>`.
    pub location: String,
    /// Whether an earlier request with the same idempotency key made it.
    pub duplicate: bool,
}
