//! `GET /topology` and `GET /topology/mermaid`.

use std::sync::Arc;

use poem_openapi::{
    payload::{Json, PlainText},
    ApiResponse, OpenApi,
};

use super::{ApiError, ApiTags};
use schemas::graph::Graph;

use crate::{
    auth::{Reader, CHALLENGE},
    state::State,
};

/// The graph, or why not.
#[derive(ApiResponse)]
pub enum TopologyResponse {
    /// The graph.
    #[oai(status = 200)]
    Graph(Json<Graph>),
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
}

/// The Mermaid source, or why not.
#[derive(ApiResponse)]
pub enum MermaidResponse {
    /// The source.
    #[oai(status = 200)]
    Source(PlainText<String>),
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
}

/// Topology operations.
pub struct TopologyApi(pub Arc<State>);

#[OpenApi]
impl TopologyApi {
    /// The discovered graph
    ///
    /// Nodes (name, replica ids, downstream, work, latest state) and edges, from
    /// `$SRV.INFO` discovery, refreshed periodically and when an unknown node publishes.
    #[oai(
        path = "/topology",
        method = "get",
        tag = "ApiTags::Topology",
        operation_id = "topology"
    )]
    async fn topology(&self, reader: Reader) -> TopologyResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return TopologyResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        TopologyResponse::Graph(Json(self.0.topology()))
    }

    /// The graph as Mermaid source
    ///
    /// A `flowchart LR` with ids `n0`, `n1`, ... and the node names as labels; nodes
    /// named as downstream but not serving are drawn dashed.
    #[oai(
        path = "/topology/mermaid",
        method = "get",
        tag = "ApiTags::Topology",
        operation_id = "topology_mermaid"
    )]
    async fn mermaid(&self, reader: Reader) -> MermaidResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return MermaidResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        MermaidResponse::Source(PlainText(crate::mermaid::render(&self.0.topology())))
    }
}
