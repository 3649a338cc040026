//! The graph of nodes as the gateway discovers it (`GET /topology`, `event: topology`).

use serde::{Deserialize, Serialize};

use crate::{Color, NodeName, NodeState};

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
}
