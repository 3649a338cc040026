//! What a node tells the NATS Services API about itself, and the `$SRV` subjects.
//!
//! Every node registers one service named after it. Its metadata ([`NodeMeta`]) carries
//! what the gateway needs to draw the graph from discovery alone; the map encoding lives
//! only here, so the node that writes it and the gateway that reads it cannot drift.

use std::collections::HashMap;

pub use async_nats::service::Verb;

use crate::NodeName;

/// Metadata key that marks a service as a nats-mesh node.
const KIND: &str = "mesh.kind";
/// Value of [`KIND`] for a node.
const KIND_NODE: &str = "node";
/// Downstream nodes, comma-separated.
const DOWNSTREAM: &str = "mesh.downstream";
/// Own simulated work, in milliseconds.
const WORK_MS: &str = "mesh.work_ms";
/// Failure rate of the own work, 0 to 1.
const FAIL_RATE: &str = "mesh.fail_rate";
/// What does the node's own work: `simulated`, `exec`, `http`, `rust` or `wasm`.
const FUNCTION: &str = "mesh.function";

/// What discovery learns of a node from its service metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMeta {
    /// Nodes it activates on every activation.
    pub downstream: Vec<NodeName>,
    /// Its own simulated work, in milliseconds (0 for function nodes).
    pub work_ms: u64,
    /// Probability that its own simulated work fails.
    pub fail_rate: f64,
    /// What does its own work: `simulated`, `exec`, `http` or `rust`.
    pub function: String,
}

impl NodeMeta {
    /// The metadata map registered with the Services API.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let downstream: Vec<&str> = self.downstream.iter().map(NodeName::as_str).collect();
        HashMap::from([
            (KIND.to_string(), KIND_NODE.to_string()),
            (DOWNSTREAM.to_string(), downstream.join(",")),
            (WORK_MS.to_string(), self.work_ms.to_string()),
            (FAIL_RATE.to_string(), self.fail_rate.to_string()),
            (FUNCTION.to_string(), self.function.clone()),
        ])
    }

    /// Reads the metadata of a service; `None` when the service is not a nats-mesh node.
    /// Anything malformed (from a rogue service) reads as empty or zero, never as an
    /// error: discovery shows what it can.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Option<Self> {
        if metadata.get(KIND).map(String::as_str) != Some(KIND_NODE) {
            return None;
        }
        let get = |key: &str| metadata.get(key).map(String::as_str).unwrap_or("");
        Some(Self {
            downstream: get(DOWNSTREAM)
                .split(',')
                .filter_map(|d| NodeName::new(d.trim()).ok())
                .collect(),
            work_ms: get(WORK_MS).parse().unwrap_or(0),
            fail_rate: get(FAIL_RATE)
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(0.0),
            function: Some(get(FUNCTION))
                .filter(|f| matches!(*f, "simulated" | "exec" | "http" | "rust" | "wasm"))
                .unwrap_or("simulated")
                .to_string(),
        })
    }
}

/// `$SRV.<VERB>`: every service answers.
pub fn all(verb: Verb) -> String {
    format!("$SRV.{verb}")
}

/// `$SRV.<VERB>.<node>`: every replica of `node` answers.
pub fn of(verb: Verb, node: &NodeName) -> String {
    format!("$SRV.{verb}.{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_strangers_are_not_nodes() {
        let meta = NodeMeta {
            downstream: vec![NodeName::new("T").unwrap(), NodeName::new("DS").unwrap()],
            work_ms: 800,
            fail_rate: 0.25,
            function: "exec".into(),
        };
        assert_eq!(NodeMeta::from_metadata(&meta.to_metadata()), Some(meta));
        assert_eq!(NodeMeta::from_metadata(&HashMap::new()), None);
        let rogue = HashMap::from([
            (KIND.to_string(), KIND_NODE.to_string()),
            (DOWNSTREAM.to_string(), "a.b, ok ,*".to_string()),
            (FAIL_RATE.to_string(), "7".to_string()),
            (FUNCTION.to_string(), "<script>".to_string()),
        ]);
        let read = NodeMeta::from_metadata(&rogue).unwrap();
        assert_eq!(read.downstream, [NodeName::new("ok").unwrap()]);
        assert_eq!((read.work_ms, read.fail_rate), (0, 0.0));
        assert_eq!(read.function, "simulated");
    }

    #[test]
    fn srv_subjects() {
        assert_eq!(all(Verb::Info), "$SRV.INFO");
        assert_eq!(of(Verb::Ping, &NodeName::new("V").unwrap()), "$SRV.PING.V");
    }
}
