//! The gateway's view of the graph: what discovery found, as the [`Graph`] that
//! `GET /topology` and `event: topology` show.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        RwLock,
    },
};

use schemas::{
    config::NodeConfig,
    graph::{Edge, Graph, GraphNode, NodeKind, ServiceStats},
    service::NodeMeta,
    NodeName,
};

use crate::sse::states::LatestStates;

/// What discovery found of one node: its replicas and what they say of themselves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovered {
    /// Replica ids (service ids) that answered.
    pub instances: BTreeSet<String>,
    /// What the latest replica said of the node (empty for a plain service).
    pub meta: NodeMeta,
    /// A mesh node or any other service.
    pub kind: NodeKind,
    /// Subjects of its endpoints.
    pub endpoints: BTreeSet<String>,
}

/// Most nodes the graph holds (discovered ones first, then ones only named downstream).
pub const MAX_NODES: usize = 512;
/// Most replicas shown per node, and in the whole graph.
pub const MAX_REPLICAS_PER_NODE: usize = 64;
/// Most replicas in the whole graph.
pub const MAX_REPLICAS: usize = 2048;
/// Most downstream nodes shown per node.
pub const MAX_DOWNSTREAM: usize = 512;
/// Most edges in the graph, and downstream names over every node.
pub const MAX_EDGES: usize = 2048;
/// Most endpoint subjects shown per service, and in the whole graph; each at most
/// [`MAX_SUBJECT_LEN`] characters.
pub const MAX_ENDPOINTS_PER_NODE: usize = 16;
/// Most endpoint subjects in the whole graph.
pub const MAX_ENDPOINTS: usize = 1024;
/// Longest endpoint subject shown.
pub const MAX_SUBJECT_LEN: usize = 128;

/// What discovery heard but the graph leaves out, past its bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Services (names) past [`MAX_NODES`].
    pub services: usize,
    /// Replicas past [`MAX_REPLICAS_PER_NODE`] or [`MAX_REPLICAS`].
    pub replicas: usize,
    /// Downstream names past [`MAX_DOWNSTREAM`], or edges past [`MAX_EDGES`].
    pub downstream: usize,
    /// Endpoint subjects past the endpoint bounds.
    pub endpoints: usize,
}

impl LeftOut {
    /// The note the graph carries, when anything was left out.
    pub fn note(&self) -> Option<String> {
        (*self != Self::default()).then(|| {
            format!(
                "discovery heard more than the gateway shows: left out {} services, {} replicas, \
                 {} downstream names or edges and {} endpoints (at most {MAX_NODES} nodes, \
                 {MAX_REPLICAS_PER_NODE} replicas, {MAX_DOWNSTREAM} downstream nodes and \
                 {MAX_ENDPOINTS_PER_NODE} endpoints each, {MAX_EDGES} edges)",
                self.services, self.replicas, self.downstream, self.endpoints
            )
        })
    }
}

/// Live settings kept for nodes discovery does not know (the newest): settings arrive
/// from anyone who may publish on `mesh.config.*` or write the bucket.
pub const UNKNOWN_LIVE: usize = crate::sse::states::UNKNOWN_NODES;

/// Live settings by node, and which of them were for unknown nodes, oldest first.
#[derive(Default)]
struct Live {
    by_node: BTreeMap<NodeName, NodeConfig>,
    unknown: VecDeque<NodeName>,
}

/// The shared, periodically refreshed view of the graph.
pub struct GraphView {
    entry: NodeName,
    nodes: RwLock<BTreeMap<NodeName, Discovered>>,
    /// The latest `$SRV.STATS` totals, by name (not part of what makes the graph change).
    stats: RwLock<BTreeMap<NodeName, ServiceStats>>,
    /// Live settings in force, by name (over what the nodes announced at start).
    live: RwLock<Live>,
    /// Replicas that missed the latest discovery round, kept for one more: a busy
    /// replica (or a busy gateway) that answers late does not make the graph flap.
    missed: std::sync::Mutex<BTreeSet<(NodeName, String)>>,
    /// What the latest discovery round left out.
    left_out: std::sync::Mutex<LeftOut>,
    discovered_once: AtomicBool,
}

impl GraphView {
    /// An empty view; `entry` is the gateway's entry node.
    pub fn new(entry: NodeName) -> Self {
        Self {
            entry,
            nodes: RwLock::default(),
            stats: RwLock::default(),
            live: RwLock::default(),
            missed: Default::default(),
            left_out: Default::default(),
            discovered_once: AtomicBool::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeName, Discovered>> {
        // Nothing panics while holding the lock; a poisoned one still holds valid data.
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether discovery has seen `node` serving.
    pub fn serving(&self, node: &str) -> bool {
        self.read()
            .get(node)
            .is_some_and(|d| !d.instances.is_empty())
    }

    /// What serves `node` now, when discovery has seen it serving: its function kind
    /// (`simulated`, `exec`, `http`, `rust`, `wasm`), or `service` for a plain service.
    pub fn served_as(&self, node: &NodeName) -> Option<String> {
        let nodes = self.read();
        let d = nodes.get(node).filter(|d| !d.instances.is_empty())?;
        Some(match d.kind {
            schemas::graph::NodeKind::Node => d.meta.function.clone(),
            schemas::graph::NodeKind::Service => "service".into(),
        })
    }

    /// Whether discovery has seen `node` (serving, or named as a downstream).
    pub fn knows(&self, node: &NodeName) -> bool {
        let nodes = self.read();
        nodes.contains_key(node) || nodes.values().any(|d| d.meta.downstream.contains(node))
    }

    /// Whether at least one discovery round has completed.
    pub fn ready(&self) -> bool {
        self.discovered_once.load(Ordering::Relaxed)
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the live settings of `node` (the default: none, the file's values). Of
    /// nodes discovery does not know, the newest [`UNKNOWN_LIVE`] are kept: the oldest
    /// is forgotten unless discovery has found it since.
    pub fn set_live(&self, node: &NodeName, config: NodeConfig) {
        // Never two locks at once: `knows` reads the nodes.
        let known = self.knows(node);
        {
            let mut live = self.live_mut();
            if config == NodeConfig::default() {
                live.by_node.remove(node);
                live.unknown.retain(|n| n != node);
                return;
            }
            if live.by_node.insert(node.clone(), config).is_none() && !known {
                live.unknown.push_back(node.clone());
            }
        }
        loop {
            let oldest = {
                let mut live = self.live_mut();
                if live.unknown.len() <= UNKNOWN_LIVE {
                    return;
                }
                live.unknown.pop_front()
            };
            let Some(oldest) = oldest else { return };
            if !self.knows(&oldest) {
                self.live_mut().by_node.remove(&oldest);
            }
        }
    }

    /// The live settings of `node` in force.
    pub fn live(&self, node: &NodeName) -> NodeConfig {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        live.by_node.get(node).copied().unwrap_or_default()
    }

    /// How many nodes have live settings here.
    pub fn live_count(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_node
            .len()
    }

    /// Keeps the latest `$SRV.STATS` totals.
    pub fn set_stats(&self, stats: BTreeMap<NodeName, ServiceStats>) {
        *self.stats.write().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// Notes what the latest discovery round left out.
    pub fn set_left_out(&self, left_out: LeftOut) {
        *self.left_out.lock().unwrap_or_else(|p| p.into_inner()) = left_out;
    }

    /// The graph, with each node's latest state from `states`: at most [`MAX_NODES`]
    /// nodes and [`MAX_EDGES`] edges, with a note saying what was left out.
    pub fn snapshot(&self, states: &LatestStates) -> Graph {
        let nodes = self.read();
        let stats = self.stats.read().unwrap_or_else(|p| p.into_inner());
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        let mut left_out = *self.left_out.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: BTreeSet<NodeName> = nodes.keys().take(MAX_NODES).cloned().collect();
        for child in nodes.values().flat_map(|d| d.meta.downstream.iter()) {
            if names.len() >= MAX_NODES && !names.contains(child) {
                left_out.downstream += 1;
                continue;
            }
            names.insert(child.clone());
        }
        let mut graph = Graph {
            entry: Some(self.entry.clone()),
            ..Graph::default()
        };
        for (index, name) in names.iter().cloned().enumerate() {
            let found = nodes.get(&name).cloned();
            let serving = found.is_some();
            let found = found.unwrap_or_default();
            let state = states.get(&name);
            // Live settings change simulated work only.
            let live = live
                .by_node
                .get(&name)
                .filter(|_| serving && found.meta.function == "simulated")
                .copied()
                .unwrap_or_default();
            for child in &found.meta.downstream {
                if graph.edges.len() >= MAX_EDGES || !names.contains(child) {
                    left_out.downstream += 1;
                    continue;
                }
                graph.edges.push(Edge {
                    from: name.clone(),
                    to: child.clone(),
                });
            }
            graph.nodes.push(GraphNode {
                mermaid_id: format!("n{index}"),
                instances: found.instances.into_iter().collect(),
                downstream: found.meta.downstream,
                work_ms: live.work_ms.unwrap_or(found.meta.work_ms),
                fail_rate: live.fail_rate.unwrap_or(found.meta.fail_rate),
                function: if serving {
                    found.meta.function
                } else {
                    String::new()
                },
                kind: found.kind,
                endpoints: found.endpoints.into_iter().collect(),
                stats: stats.get(&name).cloned(),
                state: state.as_ref().map(|s| s.state),
                color: state.as_ref().and_then(|s| s.color.clone()),
                last_at: state.map(|s| s.at),
                name,
            });
        }
        graph.truncated = left_out.note();
        graph
    }

    /// Replaces what is known by a discovery round's findings; whether anything changed.
    /// A replica that answered before but not in this round is kept until it misses a
    /// second round in a row.
    pub fn replace(&self, mut found: BTreeMap<NodeName, Discovered>) -> bool {
        self.discovered_once.store(true, Ordering::Relaxed);
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let mut missed = self.missed.lock().unwrap_or_else(|p| p.into_inner());
        let mut missing_now = BTreeSet::new();
        for (name, before) in nodes.iter() {
            for instance in &before.instances {
                let answered = found
                    .get(name)
                    .is_some_and(|d| d.instances.contains(instance));
                let key = (name.clone(), instance.clone());
                if !answered && !missed.contains(&key) {
                    let entry = found.entry(name.clone()).or_insert_with(|| Discovered {
                        instances: BTreeSet::new(),
                        ..before.clone()
                    });
                    if entry.instances.len() >= MAX_REPLICAS_PER_NODE {
                        continue;
                    }
                    entry.instances.insert(instance.clone());
                    missing_now.insert(key);
                }
            }
        }
        *missed = missing_now;
        if *nodes == found {
            return false;
        }
        *nodes = found;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    #[test]
    fn snapshot_includes_named_but_missing_nodes() {
        let view = GraphView::new(name("A"));
        let mut found = BTreeMap::new();
        found.insert(
            name("A"),
            Discovered {
                instances: ["i1".to_string(), "i2".to_string()].into(),
                meta: NodeMeta {
                    downstream: vec![name("B"), name("end")],
                    work_ms: 5,
                    fail_rate: 0.0,
                    function: "simulated".into(),
                },
                ..Discovered::default()
            },
        );
        assert!(view.replace(found.clone()));
        assert!(
            !view.replace(found.clone()),
            "unchanged topology is not announced"
        );
        let t = view.snapshot(&LatestStates::new(1));
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "end"]);
        assert_eq!(t.nodes[0].instances.len(), 2);
        assert_eq!(t.nodes[0].function, "simulated");
        assert_eq!(t.nodes[1].function, "", "named, not serving");
        assert_eq!(t.edges.len(), 2);
        assert!(view.knows(&name("B")));
        assert!(!view.knows(&name("C")));
        assert!(view.serving("A"));
        assert!(!view.serving("B"));

        // One round without A (a late answer) keeps it; two in a row remove it.
        assert!(!view.replace(BTreeMap::new()));
        assert!(view.serving("A"));
        assert!(view.replace(BTreeMap::new()));
        assert!(!view.serving("A"));
        // Back again, and a round where it answers resets the count.
        assert!(view.replace(found.clone()));
        assert!(!view.replace(BTreeMap::new()));
        assert!(!view.replace(found.clone()));
        assert!(!view.replace(BTreeMap::new()));
        assert!(view.serving("A"));
    }

    #[test]
    fn live_settings_of_unknown_nodes_are_bounded_and_known_ones_kept() {
        let view = GraphView::new(name("A"));
        let mut found = BTreeMap::new();
        found.insert(name("A"), Discovered::default());
        view.replace(found);
        let some = NodeConfig {
            work_ms: Some(2),
            fail_rate: Some(0.5),
        };
        view.set_live(&name("A"), some);
        // Settings for a node discovery finds later, then a flood of invented names.
        view.set_live(&name("LATE"), some);
        let mut found = BTreeMap::new();
        found.insert(name("A"), Discovered::default());
        found.insert(name("LATE"), Discovered::default());
        view.replace(found);
        for i in 0..10 * UNKNOWN_LIVE {
            view.set_live(&name(&format!("invented{i}")), some);
        }
        assert_eq!(view.live_count(), UNKNOWN_LIVE + 2);
        assert_eq!(view.live(&name("A")), some);
        assert_eq!(view.live(&name("LATE")), some);
        let newest = format!("invented{}", 10 * UNKNOWN_LIVE - 1);
        assert_eq!(view.live(&name(&newest)), some);
        assert_eq!(view.live(&name("invented0")), NodeConfig::default());
        // Back to the defaults: forgotten.
        view.set_live(&name(&newest), NodeConfig::default());
        assert_eq!(view.live_count(), UNKNOWN_LIVE + 1);
    }
}
