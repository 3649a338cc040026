//! `PUT /nodes/{node}/color`: the seed's manual colour, as a `manual` status event.

use std::sync::Arc;

use poem_openapi::{param::Path, payload::Json, ApiResponse, Object, OpenApi};
use schemas::{subject, Color, NodeName, NodeState, StatusEvent};

use super::{ApiError, ApiTags};
use crate::{
    auth::{Caller, CHALLENGE},
    State,
};

/// The colour to show.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ColorBody {
    /// The colour.
    pub color: Color,
}

/// The answer to a colour change.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ColorResponse {
    /// The `manual` status event was published on `status.<node>`.
    #[oai(status = 202)]
    Published(Json<StatusEvent>),
    /// Invalid node name, colour or body.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token (`MESH_GATEWAY_API_TOKEN`) and none or a wrong one
    /// was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// No node of that name is known: discovery has not seen it serving or named.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// The body is larger than `MESH_GATEWAY_MAX_BODY_BYTES`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ApiError>),
    /// NATS is down: nothing was published.
    #[oai(status = 503)]
    BusDown(Json<ApiError>),
}

fn bad_request(err: poem::Error) -> ColorResponse {
    ColorResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// Node operations.
pub struct NodesApi(pub Arc<State>);

#[OpenApi]
impl NodesApi {
    /// Set a node's colour
    ///
    /// Publishes a `manual` status event with the colour on `status.<node>`; every page
    /// and SSE client shows it, as the seed demo's "activate with a colour" did.
    #[oai(
        path = "/nodes/:node/color",
        method = "put",
        tag = "ApiTags::Nodes",
        operation_id = "set_node_color"
    )]
    async fn set_color(
        &self,
        caller: Caller,
        node: Path<NodeName>,
        body: Json<ColorBody>,
    ) -> ColorResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return ColorResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        if !self.0.view.knows(&node.0) {
            return ColorResponse::NotFound(Json(ApiError::new(
                "unknown_node",
                format!("no node {} is known (GET /topology lists them)", node.0),
            )));
        }
        let mut event = StatusEvent::new(node.0, NodeState::Manual);
        event.color = Some(body.0.color);
        event.instance = Some(self.0.relay.gateway_id().to_string());
        let subject = subject::status(&event.node);
        let published = match serde_json::to_vec(&event) {
            Ok(bytes) if self.0.bus_connected() => self
                .0
                .client
                .publish(subject, bytes.into())
                .await
                .map_err(|e| e.to_string()),
            Ok(_) => Err("the gateway is not connected to NATS".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match published {
            Ok(()) => ColorResponse::Published(Json(event)),
            Err(cause) => ColorResponse::BusDown(Json(ApiError::new(
                "bus_down",
                format!("nothing published: {cause}"),
            ))),
        }
    }
}
