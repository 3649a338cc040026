//! `POST /activate`: one activation over NATS, answered with the reply tree.

use std::{sync::Arc, time::Duration};

use async_nats::connection::State as Connection;
use bytes::Bytes;
use mesh_core::call::Answer;
use poem_openapi::{param::Header, payload::Json, ApiResponse, Object, OpenApi};
use schemas::{
    code,
    record::{ActivationSummary, RecordedRequest},
    reply_in_place::ReplyRoot,
    ActivationId, ActivationReply, ActivationRequest, Color, NodeName, Outcome,
};

use super::{encoded::Encoded, ApiError, ApiTags};
use crate::{
    auth::{Caller, CHALLENGE},
    finished::{Finished, KeptReply},
    state::State,
};

/// Extra time the gateway waits beyond the budget, so that the nodes report their own
/// timeouts in the tree before the gateway gives up on them.
const REPLY_GRACE: Duration = Duration::from_millis(250);

/// What to activate.
#[derive(Debug, Clone, Default, Object)]
#[oai(deny_unknown_fields)]
pub struct ActivateBody {
    /// The node to activate; the gateway's entry node (`UI` by default) when absent.
    pub node: Option<NodeName>,
    /// Colour the nodes show while running.
    pub color: Option<Color>,
    /// Id for this activation (so a client can subscribe to
    /// `/events?activation=<id>` before it starts); the gateway makes one up when absent.
    pub activation_id: Option<ActivationId>,
    /// Budget for the whole activation, in milliseconds; the gateway's default when absent.
    #[oai(validator(minimum(value = "1"), maximum(value = "600000")))]
    pub timeout_ms: Option<u64>,
    /// The activation's input, any JSON: every node passes it to its children and to
    /// its function, whose `result` comes back in the reply tree.
    pub input: Option<serde_json::Value>,
}

/// An asynchronous activation, stored and waiting to run.
#[derive(Debug, Clone, Object)]
pub struct AcceptedBody {
    /// Its id.
    pub activation_id: ActivationId,
    /// Where its state is (`GET` it): `/activations/<id>`.
    pub location: String,
    /// Whether an earlier request with the same `Idempotency-Key` made it.
    pub duplicate: bool,
}

impl From<schemas::job::Accepted> for AcceptedBody {
    fn from(a: schemas::job::Accepted) -> Self {
        Self {
            activation_id: a.activation_id,
            location: a.location,
            duplicate: a.duplicate,
        }
    }
}

/// The answer to an activation: the reply tree (whose root code is the HTTP status) or
/// an error.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ActivateResponse {
    /// Every node succeeded.
    #[oai(status = 200)]
    Ok(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// With `Prefer: respond-async`: the activation is stored and will run; `Location`
    /// says where its state is.
    #[oai(status = 202)]
    Accepted(
        Json<AcceptedBody>,
        #[oai(header = "Location")] String,
        #[oai(header = "Preference-Applied")] String,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The body is malformed or invalid (wrong types, invalid node name or colour, an
    /// invalid `Idempotency-Key`).
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The `activation_id` names another activation: one running, kept, or queued.
    #[oai(status = 409)]
    Conflict(Json<ApiError>),
    /// The gateway requires a bearer token (`MESH_GATEWAY_API_TOKEN`) and none or a wrong one
    /// was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// The body is larger than `MESH_GATEWAY_MAX_BODY_BYTES`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ApiError>),
    /// No node of that name is known to discovery and none answered.
    #[oai(status = 404)]
    UnknownNode(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The node's own simulated work failed with 500.
    #[oai(status = 500)]
    Failed(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The node's work failed with 502, a downstream node did not succeed, a node sent
    /// something that is not a reply tree, or a node refused the (valid) request with a
    /// code of its own (4xx).
    #[oai(status = 502)]
    BadGateway(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The node is known but no instance answers, it is at its in-flight limit, or NATS
    /// is down; with `Prefer: respond-async`: the queue is full or unavailable (nothing
    /// was stored).
    #[oai(status = 503)]
    Unavailable(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The budget ran out before the node answered.
    #[oai(status = 504)]
    Timeout(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The activation looped back to a node already on its path.
    #[oai(status = 508)]
    Loop(
        Encoded<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
}

fn bad_request(err: poem::Error) -> ActivateResponse {
    ActivateResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// The activation operation.
pub struct ActivateApi(pub Arc<State>);

#[OpenApi]
impl ActivateApi {
    /// Activate a node
    ///
    /// Sends an activation to `activate.<node>` on NATS and answers with the reply tree:
    /// the node's outcome and, recursively, every downstream node's. The HTTP status is
    /// the root's `code`. Status events of the activation stream on `GET /events`.
    ///
    /// With `Prefer: respond-async` (RFC 7240) the activation runs in the background: it
    /// is stored in JetStream first, then answered 202 with `Location:
    /// /activations/{id}`; attempts whose outcome says "try again" (timeout,
    /// unavailable, rejected) are retried with back-off, and an activation whose every
    /// attempt said so is dead (`GET /activations?state=dead`,
    /// `POST /activations/{id}/retry`).
    #[oai(
        path = "/activate",
        method = "post",
        tag = "ApiTags::Activation",
        operation_id = "activate"
    )]
    async fn activate(
        &self,
        caller: Caller,
        body: Json<ActivateBody>,
        /// `respond-async` runs the activation in the background (202).
        #[oai(name = "Prefer")]
        prefer: Header<Option<String>>,
        /// With `Prefer: respond-async`: at most one activation per key within the
        /// idempotency window; a repeat answers 202 with the same `Location` (1 to 256
        /// printable ASCII characters).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        /// With `Prefer: respond-async`: the final state and reply are POSTed here
        /// (retried; no redirect followed). It must start with one of the gateway's
        /// `MESH_ASYNC_CALLBACK_ALLOW` prefixes (400 otherwise).
        #[oai(name = "X-Callback-Url")]
        callback_url: Header<Option<String>>,
    ) -> ActivateResponse {
        let state = &self.0;
        if let Err(e) = caller.authorize(state.settings.api_token.as_deref()) {
            return ActivateResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let node = body
            .0
            .node
            .unwrap_or_else(|| state.settings.entry_node.clone());
        let budget = body.0.timeout_ms.unwrap_or_else(|| {
            u64::try_from(state.settings.activate_timeout.as_millis()).unwrap_or(u64::MAX)
        });
        let chosen = body.0.activation_id.is_some();
        let id = body.0.activation_id.unwrap_or_else(ActivationId::generate);
        let asked = RecordedRequest {
            node: node.clone(),
            color: body.0.color,
            timeout_ms: budget,
            input: body.0.input,
        };
        // Boxed: the futures stay small, and moving them through poem's layers cheap.
        if prefer.0.as_deref().is_some_and(prefers_async) {
            return Box::pin(self.queue(id, asked, idempotency_key.0, callback_url.0)).await;
        }
        Box::pin(self.run(id, chosen, asked)).await
    }
}

impl ActivateApi {
    /// Runs the activation `asked` as `id` (`chosen` by the client or not) and answers
    /// with its reply tree; keeps its record.
    async fn run(
        &self,
        id: ActivationId,
        chosen: bool,
        asked: RecordedRequest,
    ) -> ActivateResponse {
        let state = &self.0;
        let (node, budget) = (asked.node.clone(), asked.timeout_ms);
        let request = ActivationRequest {
            activation_id: Some(id.clone()),
            color: asked.color.clone(),
            timeout_ms: Some(budget),
            path: Vec::new(),
            input: asked.input.clone(),
        };
        let Some(watch) = state.watches.claim(&id) else {
            return taken(&id);
        };
        if chosen && self.names_another(&id).await {
            return taken(&id);
        }
        let started_at = schemas::now_rfc3339();
        let started = std::time::Instant::now();
        let answer = if state.client.connection_state() == Connection::Connected {
            let wait = Duration::from_millis(budget) + REPLY_GRACE;
            mesh_core::call::activate_in_place(&state.client, &node, &request, wait).await
        } else {
            Answer::Tree(ActivationReply::new(
                node.clone(),
                id,
                Outcome::Unavailable,
                "the gateway is not connected to NATS; try again shortly",
            ))
        };
        let elapsed = started.elapsed();
        let (json, root, code) = as_answered(answer, state.view.knows(&node));
        let response = respond(Encoded::of_json(json.clone()), &root, code);
        // The record takes the answer's bytes as they are.
        state.kept.keep(Finished {
            summary: ActivationSummary {
                activation_id: root.activation_id,
                node: root.node,
                outcome: root.outcome,
                code,
                elapsed_ms: mesh_core::call::millis(elapsed),
                started_at,
            },
            request: asked,
            reply: KeptReply::Json(json),
            timeline: watch.finish(),
            trace_id: mesh_core::trace_context::trace_id(&tracing::Span::current()),
            gateway: state.gateway_id().to_string(),
        });
        state
            .metrics
            .activation_seconds
            .get_or_create(&crate::metrics::CodeLabels { code })
            .observe(elapsed.as_secs_f64());
        response
    }

    /// Whether a client-chosen `id` names an activation already kept, or an
    /// asynchronous one: an id names one activation, and a second never replaces the
    /// first's record. (Two gateways starting the same new id at the same instant are
    /// not told apart: the later record wins.)
    async fn names_another(&self, id: &ActivationId) -> bool {
        let kept = self.0.kept.holds(id).await;
        let queued = match &self.0.jobs {
            Some(jobs) => matches!(jobs.record(id).await, Ok(Some(_))),
            None => false,
        };
        kept || queued
    }
}

/// 409: `id` names another activation.
fn taken(id: &ActivationId) -> ActivateResponse {
    ActivateResponse::Conflict(Json(ApiError::new(
        "conflict",
        format!(
            "activation_id {id} names another activation (running or kept); leave it out \
             and the gateway chooses a fresh one"
        ),
    )))
}

/// Whether a `Prefer` header asks for `respond-async` (RFC 7240: comma-separated
/// preferences, each maybe with parameters).
fn prefers_async(prefer: &str) -> bool {
    prefer.split(',').any(|p| {
        p.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("respond-async"))
    })
}

impl ActivateApi {
    /// Stores the activation in the queue and answers 202.
    async fn queue(
        &self,
        id: ActivationId,
        asked: RecordedRequest,
        key: Option<String>,
        callback: Option<String>,
    ) -> ActivateResponse {
        let state = &self.0;
        if let Some(key) = &key {
            if let Err(e) = crate::jobs::check_key(key) {
                return ActivateResponse::BadRequest(Json(ApiError::new("bad_request", e)));
            }
        }
        let allowed: &[String] = match (&state.jobs, &state.settings.asynchronous) {
            (Some(_), Some(a)) => &a.callback_allow,
            _ => &[],
        };
        let callback = match callback.map(|url| crate::jobs::check_callback(&url, allowed)) {
            Some(Err(e)) => {
                return ActivateResponse::BadRequest(Json(ApiError::new("bad_callback", e)))
            }
            Some(Ok(url)) => Some(url),
            None => None,
        };
        let unavailable = |id: ActivationId, node: NodeName, message: String| {
            let reply = ActivationReply::new(node, id.clone(), Outcome::Unavailable, message);
            ActivateResponse::Unavailable(Encoded::new(&reply), id.to_string())
        };
        let Some(jobs) = &state.jobs else {
            return unavailable(
                id,
                asked.node,
                "asynchronous activations need JetStream, which this gateway does not have".into(),
            );
        };
        let node = asked.node.clone();
        let mut job = crate::jobs::job_for(jobs, id.clone(), asked);
        job.callback_url = callback;
        match jobs.submit(job, key.as_deref()).await {
            Ok(accepted) => {
                if !accepted.duplicate {
                    state
                        .metrics
                        .jobs
                        .get_or_create(&crate::metrics::JobLabels { event: "accepted" })
                        .inc();
                }
                let location = accepted.location.clone();
                let id = accepted.activation_id.to_string();
                ActivateResponse::Accepted(
                    Json(accepted.into()),
                    location,
                    "respond-async".into(),
                    id,
                )
            }
            Err(e @ crate::jobs::SubmitError::Taken(_)) => {
                ActivateResponse::Conflict(Json(ApiError::new("conflict", e.to_string())))
            }
            Err(e) => unavailable(id, node, e.to_string()),
        }
    }
}

/// The reply's JSON as the gateway answers it, its root, and the HTTP status: the root's
/// code, 404 when nobody answered on a subject discovery never saw (the node does not
/// exist), and 502 for a code a node may not answer with (a 4xx of its own, or anything
/// forged). A node's JSON is passed on as it came unless it must be rewritten (404).
fn as_answered(answer: Answer, known: bool) -> (Bytes, ReplyRoot, u16) {
    let unknown = |code: u16, outcome: Outcome, answered: bool| {
        code == code::UNAVAILABLE && outcome == Outcome::Unavailable && !answered && !known
    };
    let mut reply = match answer {
        Answer::Json(json, root) if !unknown(root.code, root.outcome, root.answered) => {
            let status = status_of(root.code);
            return (json, root, status);
        }
        // Read in place, so it decodes; a broken one would be the node's fault.
        Answer::Json(json, root) => serde_json::from_slice(&json).unwrap_or_else(|e| {
            ActivationReply::new(
                root.node,
                root.activation_id,
                Outcome::Failed,
                e.to_string(),
            )
            .with_code(code::BAD_GATEWAY)
        }),
        Answer::Tree(reply) => reply,
    };
    let status = if unknown(reply.code, reply.outcome, reply.instance.is_some()) {
        reply.code = code::NOT_FOUND;
        reply.message = format!(
            "no node named {} is known: nothing serves activate.{}",
            reply.node, reply.node
        );
        code::NOT_FOUND
    } else {
        status_of(reply.code)
    };
    (Encoded::new(&reply).bytes(), ReplyRoot::of(&reply), status)
}

/// The HTTP status of a root's `code` (but 404, see [`as_answered`]).
fn status_of(code: u16) -> u16 {
    match code {
        code::OK | code::FAILED | code::UNAVAILABLE | code::TIMEOUT | code::LOOP => code,
        _ => code::BAD_GATEWAY,
    }
}

/// The HTTP answer for a reply tree (encoded in `json`, its root `root`) with status
/// `code` (from [`as_answered`]).
fn respond(json: Encoded<ActivationReply>, root: &ReplyRoot, code: u16) -> ActivateResponse {
    let id = root.activation_id.to_string();
    match code {
        code::OK => ActivateResponse::Ok(json, id),
        code::FAILED => ActivateResponse::Failed(json, id),
        code::NOT_FOUND => ActivateResponse::UnknownNode(json, id),
        code::UNAVAILABLE => ActivateResponse::Unavailable(json, id),
        code::TIMEOUT => ActivateResponse::Timeout(json, id),
        code::LOOP => ActivateResponse::Loop(json, id),
        // The body was valid here: a node refusing it (or a forged reply) is the node's
        // fault, not the caller's.
        _ => ActivateResponse::BadGateway(json, id),
    }
}
