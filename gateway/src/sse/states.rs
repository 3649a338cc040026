//! The latest status event of each node, bounded: every node discovery knows, plus a
//! small number of the most recent others (anyone on the bus may publish on
//! `status.<any name>`, and those must not grow the gateway's memory).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use schemas::{NodeName, StatusEvent};

/// Nodes unknown to discovery whose latest state is kept (anyone may publish on
/// `status.<any name>`).
pub const UNKNOWN_NODES: usize = 256;

/// Latest states, by node: each kept as the JSON of a complete status event, decoded
/// only when asked for (events come far more often than anyone looks).
pub struct LatestStates {
    /// Looked up for every event: hashed with foldhash (the names are not secret, and
    /// how many there are is bounded).
    states: HashMap<NodeName, Bytes, foldhash::fast::RandomState>,
    /// Nodes discovery did not know when they published, oldest first; at most
    /// `unknown_capacity` of them keep a state.
    unknown: VecDeque<NodeName>,
    unknown_capacity: usize,
}

impl LatestStates {
    /// An empty map keeping at most `unknown_capacity` states of unknown nodes.
    pub fn new(unknown_capacity: usize) -> Self {
        Self {
            states: HashMap::default(),
            unknown: VecDeque::new(),
            unknown_capacity: unknown_capacity.max(1),
        }
    }

    /// Records `event` (the JSON of a complete status event about `node`, a valid
    /// name) as the node's latest; `known` says whether discovery knows the node. The
    /// oldest unknown node's state goes when there are too many.
    pub fn record(&mut self, node: &str, event: Bytes, known: bool) {
        if known && self.unknown.is_empty() {
            // The usual case: a discovered node, nothing to allocate when it has a state.
            if let Some(latest) = self.states.get_mut(node) {
                *latest = event;
                return;
            }
        }
        let Ok(node) = NodeName::new(node) else {
            return;
        };
        let was_unknown = self.unknown.contains(&node);
        if known {
            if was_unknown {
                self.unknown.retain(|n| n != &node);
            }
        } else if !was_unknown && !self.states.contains_key(&node) {
            if self.unknown.len() == self.unknown_capacity {
                if let Some(oldest) = self.unknown.pop_front() {
                    self.states.remove(&oldest);
                }
            }
            self.unknown.push_back(node.clone());
        }
        self.states.insert(node, event);
    }

    /// The latest state of `node`.
    pub fn get(&self, node: &NodeName) -> Option<StatusEvent> {
        serde_json::from_slice(self.states.get(node)?).ok()
    }

    /// Number of nodes with a state.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no node has a state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// The latest states as an observer of ingest: shared, behind a lock.
pub struct Latest(std::sync::Mutex<LatestStates>);

impl Latest {
    /// Keeps every known node's state and at most `unknown_capacity` others.
    pub fn new(unknown_capacity: usize) -> Self {
        Self(std::sync::Mutex::new(LatestStates::new(unknown_capacity)))
    }

    /// Runs `f` on the latest states (under a lock: keep it short).
    pub fn with<R>(&self, f: impl FnOnce(&LatestStates) -> R) -> R {
        f(&crate::sync::lock(&self.0))
    }
}

impl super::ingest::Observer for Latest {
    fn observe(&self, event: &super::ingest::Accepted<'_>) {
        crate::sync::lock(&self.0).record(event.node, event.json.clone(), event.known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str) -> Bytes {
        format!(r#"{{"node":"{node}","state":"ok","at":"t"}}"#).into()
    }

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    #[test]
    fn unknown_nodes_are_bounded_and_known_ones_stay() {
        let mut states = LatestStates::new(3);
        states.record("UI", event("UI"), true);
        for i in 0..1000 {
            states.record(&format!("rand{i}"), event(&format!("rand{i}")), false);
        }
        assert_eq!(states.len(), 4, "UI and the three newest unknown");
        assert_eq!(
            states.get(&name("UI")).map(|e| e.node),
            Some(name("UI")),
            "decoded when asked for"
        );
        assert!(states.get(&name("rand999")).is_some());
        assert!(states.get(&name("rand996")).is_none());
    }

    #[test]
    fn a_node_discovered_later_is_no_longer_evicted() {
        let mut states = LatestStates::new(2);
        states.record("LATE", event("LATE"), false);
        states.record("LATE", event("LATE"), true);
        for i in 0..10 {
            states.record(&format!("x{i}"), event(&format!("x{i}")), false);
        }
        assert!(states.get(&name("LATE")).is_some());
        assert_eq!(states.len(), 3);
    }

    #[test]
    fn a_known_node_publishing_again_keeps_its_place() {
        let mut states = LatestStates::new(2);
        states.record("A", event("A"), false);
        states.record("A", event("A"), false);
        states.record("B", event("B"), false);
        assert_eq!(states.len(), 2, "A is counted once");
    }
}
