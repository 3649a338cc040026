//! The graph of nodes as the gateway discovers it (`GET /topology`, `event: topology`).

use serde::{Deserialize, Serialize};

use crate::{Color, NodeName, NodeState};

/// What a discovered service is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
#[cfg_attr(feature = "openapi", oai(rename_all = "snake_case"))]
pub enum NodeKind {
    /// A nats-mesh node (or a name some node lists as downstream).
    #[default]
    Node,
    /// Any other NATS Services API service (nats.go `micro`, nats.py `nats.micro`, ...).
    Service,
}

/// `$SRV.STATS` summed over a node's or service's replicas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct ServiceStats {
    /// Requests handled, by every endpoint of every replica.
    pub requests: u64,
    /// Requests answered with a Services API error.
    pub errors: u64,
    /// Average processing time of a request, in milliseconds.
    pub average_ms: f64,
}

/// What discovery knows of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(rename = "TopologyNode"))]
pub struct GraphNode {
    /// The node's name.
    pub name: NodeName,
    /// Id used for the node in the Mermaid source (`n0`, `n1`, ...).
    pub mermaid_id: String,
    /// Replica ids currently answering discovery; empty for a node that is only named
    /// as someone's downstream.
    pub instances: Vec<String>,
    /// Nodes it activates.
    pub downstream: Vec<NodeName>,
    /// Its own simulated work, in milliseconds.
    pub work_ms: u64,
    /// Probability that its own work fails.
    pub fail_rate: f64,
    /// What does its own work: `simulated`, `exec`, `http` or `rust` (empty for a node
    /// that is only named).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub function: String,
    /// `node` for a nats-mesh node, `service` for any other Services API service.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub kind: NodeKind,
    /// Subjects of its Services API endpoints, as its replicas announce them.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", oai(default))]
    pub endpoints: Vec<String>,
    /// Its replicas' `$SRV.STATS`, summed, when they answered the latest round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub stats: Option<ServiceStats>,
    /// Latest reported state, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub state: Option<NodeState>,
    /// Colour of the latest event, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub color: Option<Color>,
    /// When the latest event was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub last_at: Option<String>,
}

/// One edge of the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
pub struct Edge {
    /// The calling node.
    pub from: NodeName,
    /// The called node.
    pub to: NodeName,
}

/// The discovered graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(poem_openapi::Object))]
#[cfg_attr(feature = "openapi", oai(rename = "Topology"))]
pub struct Graph {
    /// The node `POST /activate` activates when the body names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub entry: Option<NodeName>,
    /// Every node, by name.
    pub nodes: Vec<GraphNode>,
    /// Every downstream relation.
    pub edges: Vec<Edge>,
    /// Present when the gateway shows less than discovery heard (the graph is bounded
    /// in nodes, replicas, edges and endpoints): what was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", oai(skip_serializing_if_is_none))]
    pub truncated: Option<String>,
}
