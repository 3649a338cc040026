//! Topology discovered from the bus through `$SRV.INFO`: never hard-coded.
//!
//! Discovery asks every service for its info, keeps the nats-mesh nodes (metadata
//! `mesh.kind = node`), groups replicas by name and reads each node's downstream list
//! and work time from its metadata. It runs periodically and at once when a node it does
//! not know publishes a status event.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use async_nats::{service::Info, Client};
use futures::StreamExt;
use poem_openapi::Object;
use schemas::{subject, Color, NodeName, NodeState, StatusEvent};
use tokio_util::sync::CancellationToken;

use crate::relay::Relay;

/// What discovery knows of one node.
#[derive(Clone, Debug, PartialEq, Object)]
pub struct TopologyNode {
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
    /// Latest reported state, if any.
    #[oai(skip_serializing_if_is_none)]
    pub state: Option<NodeState>,
    /// Colour of the latest event, if it had one.
    #[oai(skip_serializing_if_is_none)]
    pub color: Option<Color>,
    /// When the latest event was published.
    #[oai(skip_serializing_if_is_none)]
    pub last_at: Option<String>,
}

/// One edge of the graph.
#[derive(Clone, Debug, PartialEq, Object)]
pub struct Edge {
    /// The calling node.
    pub from: NodeName,
    /// The called node.
    pub to: NodeName,
}

/// The discovered graph.
#[derive(Clone, Debug, Default, PartialEq, Object)]
pub struct Topology {
    /// The node `POST /activate` activates when the body names none.
    #[oai(skip_serializing_if_is_none)]
    pub entry: Option<NodeName>,
    /// Every node, by name.
    pub nodes: Vec<TopologyNode>,
    /// Every downstream relation.
    pub edges: Vec<Edge>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Discovered {
    instances: BTreeSet<String>,
    downstream: Vec<NodeName>,
    work_ms: u64,
    fail_rate: f64,
}

/// The shared, periodically refreshed view of the graph.
pub struct TopologyView {
    entry: NodeName,
    nodes: RwLock<BTreeMap<NodeName, Discovered>>,
    discovered_once: std::sync::atomic::AtomicBool,
}

impl TopologyView {
    /// An empty view; `entry` is the gateway's entry node.
    pub fn new(entry: NodeName) -> Self {
        Self {
            entry,
            nodes: RwLock::default(),
            discovered_once: Default::default(),
        }
    }

    /// Whether discovery has seen `node` serving.
    pub fn serving(&self, node: &NodeName) -> bool {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.get(node).is_some_and(|d| !d.instances.is_empty())
    }

    /// Whether discovery has seen `node` (serving, or named as a downstream).
    pub fn knows(&self, node: &NodeName) -> bool {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.contains_key(node) || nodes.values().any(|d| d.downstream.contains(node))
    }

    /// Whether at least one discovery round has completed.
    pub fn ready(&self) -> bool {
        self.discovered_once
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The graph, with each node's latest state from `states`.
    pub fn snapshot(&self, states: &std::collections::HashMap<NodeName, StatusEvent>) -> Topology {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut names: BTreeSet<NodeName> = nodes.keys().cloned().collect();
        names.extend(nodes.values().flat_map(|d| d.downstream.iter().cloned()));
        let mut topology = Topology {
            entry: Some(self.entry.clone()),
            ..Topology::default()
        };
        for (index, name) in names.into_iter().enumerate() {
            let found = nodes.get(&name).cloned().unwrap_or_default();
            let state = states.get(&name);
            for child in &found.downstream {
                topology.edges.push(Edge {
                    from: name.clone(),
                    to: child.clone(),
                });
            }
            topology.nodes.push(TopologyNode {
                mermaid_id: format!("n{index}"),
                instances: found.instances.into_iter().collect(),
                downstream: found.downstream,
                work_ms: found.work_ms,
                fail_rate: found.fail_rate,
                state: state.map(|s| s.state),
                color: state.and_then(|s| s.color.clone()),
                last_at: state.map(|s| s.at.clone()),
                name,
            });
        }
        topology
    }

    fn replace(&self, found: BTreeMap<NodeName, Discovered>) -> bool {
        self.discovered_once
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        if *nodes == found {
            return false;
        }
        *nodes = found;
        true
    }
}

impl Topology {
    /// Mermaid flowchart source of the graph. Node ids are `n0`, `n1`, ... and labels are
    /// validated names, so nothing from the bus can alter the diagram's syntax.
    pub fn mermaid(&self) -> String {
        let id_of: BTreeMap<&NodeName, &str> = self
            .nodes
            .iter()
            .map(|n| (&n.name, n.mermaid_id.as_str()))
            .collect();
        let mut out = String::from("flowchart LR\n");
        for node in &self.nodes {
            out.push_str(&format!("    {}[\"{}\"]\n", node.mermaid_id, node.name));
        }
        for edge in &self.edges {
            if let (Some(from), Some(to)) = (id_of.get(&edge.from), id_of.get(&edge.to)) {
                out.push_str(&format!("    {from} --> {to}\n"));
            }
        }
        let offline: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| n.instances.is_empty())
            .map(|n| n.mermaid_id.as_str())
            .collect();
        if !offline.is_empty() {
            out.push_str("    classDef offline stroke-dasharray: 4 4,opacity:0.6\n");
            out.push_str(&format!("    class {} offline\n", offline.join(",")));
        }
        out
    }
}

/// Asks every service for its info and keeps the nats-mesh nodes. Waits at most
/// `window`, and stops early once answers have stopped arriving for a short while.
async fn discover(
    client: &Client,
    window: Duration,
) -> Result<BTreeMap<NodeName, Discovered>, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply("$SRV.INFO", inbox, "".into())
        .await?;
    let quiet = (window / 4).min(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + window;
    let mut found: BTreeMap<NodeName, Discovered> = BTreeMap::new();
    loop {
        let wait = if found.is_empty() {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
        };
        let Ok(Some(message)) = tokio::time::timeout(wait, replies.next()).await else {
            break;
        };
        let Ok(info) = serde_json::from_slice::<Info>(&message.payload) else {
            continue;
        };
        if info.metadata.get(subject::META_KIND).map(String::as_str)
            != Some(subject::META_KIND_NODE)
        {
            continue;
        }
        let Ok(name) = NodeName::new(info.name.as_str()) else {
            continue;
        };
        let meta = |key: &str| info.metadata.get(key).map(String::as_str).unwrap_or("");
        let entry = found.entry(name).or_default();
        entry.instances.insert(info.id.chars().take(64).collect());
        entry.downstream = meta(subject::META_DOWNSTREAM)
            .split(',')
            .filter_map(|d| NodeName::new(d.trim()).ok())
            .collect();
        entry.work_ms = meta(subject::META_WORK_MS).parse().unwrap_or(0);
        entry.fail_rate = meta(subject::META_FAIL_RATE)
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(0.0);
    }
    Ok(found)
}

/// Least time between two discoveries triggered by unknown publishers.
const MIN_TRIGGER_GAP: Duration = Duration::from_millis(500);

/// Keeps `view` current until `stop` is cancelled, announcing each change on `relay`.
pub async fn run(
    client: Client,
    view: Arc<TopologyView>,
    relay: Arc<Relay>,
    interval: Duration,
    window: Duration,
    stop: CancellationToken,
) {
    loop {
        match discover(&client, window).await {
            Ok(found) => {
                if view.replace(found) {
                    let topology = view.snapshot(&relay.last_states());
                    tracing::info!(nodes = topology.nodes.len(), "topology changed");
                    if let Ok(json) = serde_json::to_string(&TopologyEvent::from(&topology)) {
                        relay.push_control(crate::relay::Kind::Topology, json);
                    }
                }
            }
            Err(e) => tracing::debug!(cause = %e, "discovery failed"),
        }
        let last = tokio::time::Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {},
            _ = relay.unknown_node.notified() => {
                // A burst of events from unknown publishers costs one discovery.
                tokio::time::sleep_until(last + MIN_TRIGGER_GAP).await;
            },
        }
    }
}

/// Data of an `event: topology`: the graph and its Mermaid source.
#[derive(serde::Serialize)]
pub struct TopologyEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<NodeName>,
    nodes: Vec<serde_json::Value>,
    edges: Vec<serde_json::Value>,
    mermaid: String,
}

impl From<&Topology> for TopologyEvent {
    fn from(t: &Topology) -> Self {
        use poem_openapi::types::ToJSON;
        Self {
            entry: t.entry.clone(),
            nodes: t.nodes.iter().filter_map(ToJSON::to_json).collect(),
            edges: t.edges.iter().filter_map(ToJSON::to_json).collect(),
            mermaid: t.mermaid(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    #[test]
    fn snapshot_includes_named_but_missing_nodes_and_renders_mermaid() {
        let view = TopologyView::new(name("A"));
        let mut found = BTreeMap::new();
        found.insert(
            name("A"),
            Discovered {
                instances: ["i1".to_string(), "i2".to_string()].into(),
                downstream: vec![name("B"), name("end")],
                work_ms: 5,
                fail_rate: 0.0,
            },
        );
        assert!(view.replace(found.clone()));
        assert!(!view.replace(found), "unchanged topology is not announced");
        let t = view.snapshot(&Default::default());
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "end"]);
        assert_eq!(t.nodes[0].instances.len(), 2);
        assert_eq!(t.edges.len(), 2);
        assert!(view.knows(&name("B")));
        assert!(!view.knows(&name("C")));
        let m = t.mermaid();
        assert_eq!(
            m,
            "flowchart LR\n    n0[\"A\"]\n    n1[\"B\"]\n    n2[\"end\"]\n    n0 --> n1\n    n0 --> n2\n    classDef offline stroke-dasharray: 4 4,opacity:0.6\n    class n1,n2 offline\n"
        );
    }
}
