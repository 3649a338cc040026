//! The gateway's view of the graph: what discovery found, as the [`Graph`] that
//! `GET /topology` and `event: topology` show.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        RwLock,
    },
};

use schemas::{
    graph::{Edge, Graph, GraphNode},
    service::NodeMeta,
    NodeName, StatusEvent,
};

/// What discovery found of one node: its replicas and what they say of themselves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovered {
    /// Replica ids (service ids) that answered.
    pub instances: BTreeSet<String>,
    /// What the latest replica said of the node.
    pub meta: NodeMeta,
}

/// The shared, periodically refreshed view of the graph.
pub struct GraphView {
    entry: NodeName,
    nodes: RwLock<BTreeMap<NodeName, Discovered>>,
    discovered_once: AtomicBool,
}

impl GraphView {
    /// An empty view; `entry` is the gateway's entry node.
    pub fn new(entry: NodeName) -> Self {
        Self {
            entry,
            nodes: RwLock::default(),
            discovered_once: AtomicBool::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeName, Discovered>> {
        // Nothing panics while holding the lock; a poisoned one still holds valid data.
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether discovery has seen `node` serving.
    pub fn serving(&self, node: &NodeName) -> bool {
        self.read()
            .get(node)
            .is_some_and(|d| !d.instances.is_empty())
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

    /// The graph, with each node's latest state from `states`.
    pub fn snapshot(&self, states: &HashMap<NodeName, StatusEvent>) -> Graph {
        let nodes = self.read();
        let mut names: BTreeSet<NodeName> = nodes.keys().cloned().collect();
        names.extend(
            nodes
                .values()
                .flat_map(|d| d.meta.downstream.iter().cloned()),
        );
        let mut graph = Graph {
            entry: Some(self.entry.clone()),
            ..Graph::default()
        };
        for (index, name) in names.into_iter().enumerate() {
            let found = nodes.get(&name).cloned();
            let serving = found.is_some();
            let found = found.unwrap_or_default();
            let state = states.get(&name);
            for child in &found.meta.downstream {
                graph.edges.push(Edge {
                    from: name.clone(),
                    to: child.clone(),
                });
            }
            graph.nodes.push(GraphNode {
                mermaid_id: format!("n{index}"),
                instances: found.instances.into_iter().collect(),
                downstream: found.meta.downstream,
                work_ms: found.meta.work_ms,
                fail_rate: found.meta.fail_rate,
                function: if serving {
                    found.meta.function
                } else {
                    String::new()
                },
                state: state.map(|s| s.state),
                color: state.and_then(|s| s.color.clone()),
                last_at: state.map(|s| s.at.clone()),
                name,
            });
        }
        graph
    }

    /// Replaces what is known by a discovery round's findings; whether anything changed.
    pub fn replace(&self, found: BTreeMap<NodeName, Discovered>) -> bool {
        self.discovered_once.store(true, Ordering::Relaxed);
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
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
            },
        );
        assert!(view.replace(found.clone()));
        assert!(!view.replace(found), "unchanged topology is not announced");
        let t = view.snapshot(&Default::default());
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "end"]);
        assert_eq!(t.nodes[0].instances.len(), 2);
        assert_eq!(t.nodes[0].function, "simulated");
        assert_eq!(t.nodes[1].function, "", "named, not serving");
        assert_eq!(t.edges.len(), 2);
        assert!(view.knows(&name("B")));
        assert!(!view.knows(&name("C")));
        assert!(view.serving(&name("A")));
        assert!(!view.serving(&name("B")));
    }
}
