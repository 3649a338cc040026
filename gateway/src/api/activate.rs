//! `POST /activate`: one activation over NATS, answered with the reply tree.

use std::{sync::Arc, time::Duration};

use async_nats::connection::State as Connection;
use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};
use schemas::{
    activation::ActivationId, ActivationReply, ActivationRequest, Color, NodeName, Outcome,
};

use super::{ApiError, ApiTags};
use crate::State;

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
}

/// The answer to an activation: the reply tree (whose root code is the HTTP status) or
/// an error.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ActivateResponse {
    /// Every node succeeded.
    #[oai(status = 200)]
    Ok(
        Json<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The body is malformed or invalid (wrong types, invalid node name or colour).
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token (`GATEWAY_API_TOKEN`) and none or a wrong one
    /// was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>),
    /// The body is larger than `GATEWAY_MAX_BODY_BYTES`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ApiError>),
    /// No node of that name is known to discovery and none answered.
    #[oai(status = 404)]
    UnknownNode(
        Json<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The node's own simulated work failed with 500.
    #[oai(status = 500)]
    Failed(
        Json<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The node's work failed with 502, a downstream node did not succeed, or a node sent
    /// something that is not a reply tree.
    #[oai(status = 502)]
    BadGateway(
        Json<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The node is known but no instance answers, it is at its in-flight limit, or NATS
    /// is down.
    #[oai(status = 503)]
    Unavailable(
        Json<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The budget ran out before the node answered.
    #[oai(status = 504)]
    Timeout(
        Json<ActivationReply>,
        #[oai(header = "X-Activation-Id")] String,
    ),
    /// The activation looped back to a node already on its path.
    #[oai(status = 508)]
    Loop(
        Json<ActivationReply>,
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
    #[oai(path = "/activate", method = "post", tag = "ApiTags::Activation")]
    async fn activate(&self, body: Json<ActivateBody>) -> ActivateResponse {
        let state = &self.0;
        let node = body
            .0
            .node
            .unwrap_or_else(|| state.config.entry_node.clone());
        let budget = body
            .0
            .timeout_ms
            .unwrap_or(state.config.activate_timeout_ms);
        let id = body
            .0
            .activation_id
            .unwrap_or_else(handlers::node::new_activation_id);
        let request = ActivationRequest {
            activation_id: Some(id.clone()),
            color: body.0.color,
            timeout_ms: Some(budget),
            path: Vec::new(),
        };
        let started = std::time::Instant::now();
        let reply = if state.client.connection_state() == Connection::Connected {
            let wait = Duration::from_millis(budget) + REPLY_GRACE;
            handlers::call::activate(&state.client, &node, &request, wait).await
        } else {
            bus_down(&node, &id)
        };
        let (code, response) = respond(reply, state.view.knows(&node));
        state
            .metrics
            .activation_seconds
            .get_or_create(&crate::metrics::CodeLabels { code })
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

fn bus_down(node: &NodeName, id: &ActivationId) -> ActivationReply {
    ActivationReply {
        node: node.clone(),
        activation_id: id.to_string(),
        instance: String::new(),
        outcome: Outcome::Unavailable,
        code: 503,
        elapsed_ms: 0,
        message: "the gateway is not connected to NATS; try again shortly".into(),
        children: Vec::new(),
    }
}

/// The HTTP answer for a reply tree, and its status.
fn respond(mut reply: ActivationReply, known: bool) -> (u16, ActivateResponse) {
    let id = reply.activation_id.clone();
    match reply.code {
        200 => (200, ActivateResponse::Ok(Json(reply), id)),
        500 => (500, ActivateResponse::Failed(Json(reply), id)),
        // Nobody answered on a subject discovery never saw: the node does not exist.
        503 if reply.outcome == Outcome::Unavailable && reply.instance.is_empty() && !known => {
            reply.code = 404;
            reply.message = format!(
                "no node named {} is known: nothing serves activate.{}",
                reply.node, reply.node
            );
            (404, ActivateResponse::UnknownNode(Json(reply), id))
        }
        503 => (503, ActivateResponse::Unavailable(Json(reply), id)),
        504 => (504, ActivateResponse::Timeout(Json(reply), id)),
        508 => (508, ActivateResponse::Loop(Json(reply), id)),
        400 => (
            400,
            ActivateResponse::BadRequest(Json(ApiError::new("bad_request", reply.message))),
        ),
        _ => (502, ActivateResponse::BadGateway(Json(reply), id)),
    }
}
