//! `PUT /nodes/{node}/color`: the seed's manual colour, as a `manual` status event.
//! `PUT`/`DELETE /nodes/{node}/config`: a node's live settings (`schemas::config`).

use std::sync::Arc;

use poem_openapi::{param::Path, payload::Json, ApiResponse, Object, OpenApi};
use schemas::{
    config::{self, NodeConfig},
    subject, Color, NodeName, NodeState, StatusEvent,
};

use super::{ApiError, ApiTags};
use crate::{
    auth::{Caller, CHALLENGE},
    state::State,
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

/// New live settings of a simulated node; a value not given keeps what is in force
/// (`{}` changes nothing and answers what is in force).
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ConfigBody {
    /// Probability (0 to 1) that the node's own work fails.
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub fail_rate: Option<f64>,
    /// The node's own simulated work, in milliseconds.
    #[oai(validator(minimum(value = "0"), maximum(value = "600000")))]
    pub work_ms: Option<u64>,
}

/// The live settings of a node, as every replica takes them.
#[derive(Debug, Clone, Object)]
pub struct NodeConfigState {
    /// The node.
    pub node: NodeName,
    /// Failure rate in force, when set live (else the node's own).
    #[oai(skip_serializing_if_is_none)]
    pub fail_rate: Option<f64>,
    /// Simulated work in force, when set live (else the node's own).
    #[oai(skip_serializing_if_is_none)]
    pub work_ms: Option<u64>,
    /// Whether the settings are kept on the bus (the JetStream key-value bucket
    /// `MESH_NODE_CONFIG`: replicas started later and restarted ones take them). Without
    /// JetStream they reach the replicas running now only.
    pub persisted: bool,
}

/// The answer to a change of live settings.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "config_bad_request")]
pub enum ConfigResponse {
    /// Every replica takes the settings now.
    #[oai(status = 200)]
    Applied(Json<NodeConfigState>),
    /// Invalid name or body: unknown fields, wrong types, values out of range.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token (`MESH_GATEWAY_API_TOKEN`) and none or a wrong one
    /// was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// No node of that name is known.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// The body is larger than `MESH_GATEWAY_MAX_BODY_BYTES`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ApiError>),
    /// NATS is down, or the bucket refused the change: nothing changed.
    #[oai(status = 503)]
    BusDown(Json<ApiError>),
}

fn config_bad_request(err: poem::Error) -> ConfigResponse {
    ConfigResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

impl NodesApi {
    /// Stores (or, without JetStream, sends) `config` as `node`'s live settings.
    async fn apply(&self, node: NodeName, config: NodeConfig) -> ConfigResponse {
        let state = &self.0;
        let body = match serde_json::to_vec(&config) {
            Ok(body) => body,
            Err(e) => {
                return ConfigResponse::BusDown(Json(ApiError::new("bus_down", e.to_string())))
            }
        };
        let written = match &state.config_store {
            Some(store) if config == NodeConfig::default() => {
                store.delete(node.as_str()).await.map_err(|e| e.to_string())
            }
            Some(store) => store
                .put(node.as_str(), body.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None if state.bus_connected() => state
                .client
                .publish(config::subject(&node), body.into())
                .await
                .map_err(|e| e.to_string()),
            None => Err("the gateway is not connected to NATS".to_string()),
        };
        if let Err(cause) = written {
            return ConfigResponse::BusDown(Json(ApiError::new(
                "bus_down",
                format!("nothing changed: {cause}"),
            )));
        }
        if state.config_store.is_some() {
            // Also to the replicas that cannot read the bucket (NATS permissions that
            // keep them off the JetStream API): they take it now, though not at a restart.
            let body = serde_json::to_vec(&config).unwrap_or_default();
            let _ = state
                .client
                .publish(config::subject(&node), body.into())
                .await;
        }
        state.view.set_live(&node, config);
        ConfigResponse::Applied(Json(NodeConfigState {
            node,
            fail_rate: config.fail_rate,
            work_ms: config.work_ms,
            persisted: state.config_store.is_some(),
        }))
    }

    /// Checks the caller and the node; the error answer when either is refused.
    fn refuse(&self, caller: &Caller, node: &NodeName) -> Option<ConfigResponse> {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return Some(ConfigResponse::Unauthorized(Json(e), CHALLENGE.into()));
        }
        if !self.0.view.knows(node) {
            return Some(ConfigResponse::NotFound(Json(ApiError::new(
                "unknown_node",
                format!("no node {node} is known (GET /topology lists them)"),
            ))));
        }
        None
    }
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
        event.instance = Some(self.0.gateway_id().to_string());
        // The request's trace, in the event and in the message's headers.
        let span = tracing::Span::current();
        event.trace_id = mesh_core::trace_context::trace_id(&span);
        let headers = mesh_core::trace_context::headers_for(&span);
        let subject = subject::status(&event.node);
        let published = match serde_json::to_vec(&event) {
            Ok(bytes) if self.0.bus_connected() => {
                mesh_core::bus::publish(&self.0.client, subject, headers, bytes.into())
                    .await
                    .map_err(|e| e.to_string())
            }
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

    /// Change a node's live settings
    ///
    /// Sets the failure rate and/or simulated work of a node on every replica at once,
    /// including replicas that start later (kept in the JetStream key-value bucket
    /// `MESH_NODE_CONFIG`, key = node name, which every node process watches). Values
    /// not given keep what was set before. `DELETE` returns to the topology file's
    /// values. Functions (exec, http, rust nodes) ignore these settings.
    #[oai(
        path = "/nodes/:node/config",
        method = "put",
        tag = "ApiTags::Nodes",
        operation_id = "set_node_config"
    )]
    async fn set_config(
        &self,
        caller: Caller,
        node: Path<NodeName>,
        body: Json<ConfigBody>,
    ) -> ConfigResponse {
        if let Some(refused) = self.refuse(&caller, &node.0) {
            return refused;
        }
        let change = NodeConfig {
            fail_rate: body.0.fail_rate,
            work_ms: body.0.work_ms,
        };
        if let Err(e) = change.check() {
            return ConfigResponse::BadRequest(Json(ApiError::new("bad_request", e.to_string())));
        }
        let current = match &self.0.config_store {
            Some(store) => mesh_core::live_config::stored(store, &node.0).await,
            None => self.0.view.live(&node.0),
        };
        if change == NodeConfig::default() {
            // Nothing to change: what is in force.
            return ConfigResponse::Applied(Json(NodeConfigState {
                node: node.0,
                fail_rate: current.fail_rate,
                work_ms: current.work_ms,
                persisted: self.0.config_store.is_some(),
            }));
        }
        self.apply(node.0, current.merged(change)).await
    }

    /// Reset a node's live settings
    ///
    /// Every replica returns to the topology file's values.
    #[oai(
        path = "/nodes/:node/config",
        method = "delete",
        tag = "ApiTags::Nodes",
        operation_id = "reset_node_config"
    )]
    async fn reset_config(&self, caller: Caller, node: Path<NodeName>) -> ConfigResponse {
        if let Some(refused) = self.refuse(&caller, &node.0) {
            return refused;
        }
        self.apply(node.0, NodeConfig::default()).await
    }
}
