//! Node settings: one node from the command line, or many from a topology file.
//!
//! A topology file is TOML with one `[[node]]` table per node:
//!
//! ```toml
//! [[node]]
//! name = "P"            # required, ^[A-Za-z0-9_-]{1,64}$
//! downstream = ["V", "H"]
//! work_ms = 0           # own simulated work
//! fail_rate = 0.0       # 0 to 1
//! timeout_ms = 5000     # budget when a request brings none
//! ```

use std::{collections::HashSet, path::Path};

use schemas::NodeName;
use serde::Deserialize;

/// Budget of an activation that brings none, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// The settings of one node.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's name; it serves `activate.<name>`.
    pub name: NodeName,
    /// Nodes it activates, concurrently, on every activation.
    #[serde(default)]
    pub downstream: Vec<NodeName>,
    /// Its own simulated work, in milliseconds.
    #[serde(default)]
    pub work_ms: u64,
    /// Probability (0 to 1) that its own work fails.
    #[serde(default)]
    pub fail_rate: f64,
    /// Budget when a request brings none, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl NodeSpec {
    /// A node with no downstream, no work, no failures and the default budget.
    pub fn new(name: NodeName) -> Self {
        Self {
            name,
            downstream: Vec::new(),
            work_ms: 0,
            fail_rate: 0.0,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

/// A set of nodes served together.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The nodes, in file order.
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeSpec>,
}

/// A topology that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid topology file {path}: {cause}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        cause: Box<toml::de::Error>,
    },
    /// A setting is out of range or a name is used twice.
    #[error("invalid topology: {0}")]
    Invalid(String),
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| TopologyError::Read {
            path: shown.clone(),
            cause,
        })?;
        let topology: Topology = toml::from_str(&text).map_err(|cause| TopologyError::Parse {
            path: shown,
            cause: Box::new(cause),
        })?;
        topology.validate()?;
        Ok(topology)
    }

    /// Checks ranges and uniqueness.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.nodes.is_empty() {
            return Err(TopologyError::Invalid("no nodes".into()));
        }
        let mut seen = HashSet::new();
        for node in &self.nodes {
            if !seen.insert(&node.name) {
                return Err(TopologyError::Invalid(format!(
                    "node {} is listed twice",
                    node.name
                )));
            }
            if !(0.0..=1.0).contains(&node.fail_rate) {
                return Err(TopologyError::Invalid(format!(
                    "node {}: fail_rate {} is not between 0 and 1",
                    node.name, node.fail_rate
                )));
            }
            if node.timeout_ms == 0 || node.timeout_ms > schemas::activation::MAX_TIMEOUT_MS {
                return Err(TopologyError::Invalid(format!(
                    "node {}: timeout_ms {} is not between 1 and {}",
                    node.name,
                    node.timeout_ms,
                    schemas::activation::MAX_TIMEOUT_MS
                )));
            }
        }
        Ok(())
    }

    /// The seed topology shipped in `topology/seed.toml`.
    pub fn seed() -> Self {
        // The file is compiled in and covered by a test: parsing it cannot fail.
        toml::from_str(SEED_TOML).unwrap_or(Topology { nodes: Vec::new() })
    }

    /// The same nodes with no simulated work and no failures (for benchmarks and tests).
    pub fn without_work(mut self) -> Self {
        for node in &mut self.nodes {
            node.work_ms = 0;
            node.fail_rate = 0.0;
        }
        self
    }

    /// The node called `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }
}

/// The text of `topology/seed.toml`.
pub const SEED_TOML: &str = include_str!("../../topology/seed.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_is_the_spec_topology() {
        let t: Topology = toml::from_str(SEED_TOML).unwrap();
        t.validate().unwrap();
        assert_eq!(t, Topology::seed());
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["UI", "D", "P", "V", "T", "DS", "TM", "H"]);
        let v = t.get("V").unwrap();
        assert_eq!(v.downstream.len(), 3);
        assert_eq!(t.get("TM").unwrap().work_ms, 1500);
        assert_eq!(t.get("H").unwrap().fail_rate, 0.25);
        assert_eq!(t.get("UI").unwrap().fail_rate, 0.0);
    }

    #[test]
    fn refuses_bad_files() {
        for bad in [
            "",
            "[[node]]\nname = \"a.b\"",
            "[[node]]\nname = \"A\"\nfail_rate = 2.0",
            "[[node]]\nname = \"A\"\ntimeout_ms = 0",
            "[[node]]\nname = \"A\"\n[[node]]\nname = \"A\"",
            "[[node]]\nname = \"A\"\ndownstream = [\"*\"]",
            "[[node]]\nname = \"A\"\ncolour = 1",
        ] {
            let parsed: Result<Topology, _> = toml::from_str(bad);
            assert!(
                parsed
                    .map_err(|_| ())
                    .and_then(|t| t.validate().map_err(|_| ()))
                    .is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
