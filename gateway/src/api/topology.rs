//! `GET /topology` and `GET /topology/mermaid`.

use std::sync::Arc;

use poem_openapi::{
    payload::{Json, PlainText},
    OpenApi,
};

use super::ApiTags;
use schemas::graph::Graph;

use crate::state::State;

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
    async fn topology(&self) -> Json<Graph> {
        Json(self.0.topology())
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
    async fn mermaid(&self) -> PlainText<String> {
        PlainText(crate::mermaid::render(&self.0.topology()))
    }
}
