//! Node settings: one node from the command line, or many from a topology file.
//!
//! A topology file is TOML with one `[[node]]` table per node. A node's own work is
//! either simulated (`work_ms`, `fail_rate`: the seed demo) or a function (`exec` or
//! `http`), never both:
//!
//! ```toml
//! [[node]]
//! name = "P"            # required, ^[A-Za-z0-9_-]{1,64}$
//! downstream = ["V", "H"]
//! work_ms = 0           # own simulated work
//! fail_rate = 0.0       # 0 to 1
//! timeout_ms = 5000     # budget when a request brings none
//!
//! [[node]]
//! name = "COUNT"
//! exec = ["python3", "count.py"]   # a program, run in the file's directory
//! env = { LANG = "C.UTF-8" }       # extra environment (optional)
//! max_output_bytes = 1048576       # largest result (optional, default 1 MiB)
//!
//! [[node]]
//! name = "TOP"
//! http = "http://127.0.0.1:8000/top"   # an HTTP endpoint
//!
//! [[trigger]]
//! name = "ORDERS"
//! node = "TOP"
//! subject = "orders.created"           # or cron = "0 */5 * * * *" (with seconds, UTC)
//! ```

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use schemas::NodeName;
use serde::Deserialize;

use crate::{exec::ExecSpec, function::Function, http::HttpSpec};

/// Budget of an activation that brings none, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Largest function result accepted by default, in bytes (1 MiB).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// What a node does as its own work.
#[derive(Clone, Debug)]
pub enum Work {
    /// Sleeps `work_ms`, then fails with probability `fail_rate` (half 500, half 502),
    /// at the same time as its children's calls: the seed demo's nodes.
    Simulated {
        /// Own simulated work, in milliseconds.
        work_ms: u64,
        /// Probability (0 to 1) that the own work fails.
        fail_rate: f64,
    },
    /// A program, once per activation, after the children answered.
    Exec(ExecSpec),
    /// An HTTP endpoint, once per activation, after the children answered.
    Http(HttpSpec),
    /// Rust code, once per activation, after the children answered.
    Rust(Arc<dyn Function>),
}

impl PartialEq for Work {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Work::Simulated { work_ms, fail_rate },
                Work::Simulated {
                    work_ms: w,
                    fail_rate: f,
                },
            ) => work_ms == w && fail_rate == f,
            (Work::Exec(a), Work::Exec(b)) => a == b,
            (Work::Http(a), Work::Http(b)) => a == b,
            (Work::Rust(a), Work::Rust(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Work {
    /// Simulated work of `work_ms` milliseconds failing with probability `fail_rate`.
    pub fn simulated(work_ms: u64, fail_rate: f64) -> Self {
        Work::Simulated { work_ms, fail_rate }
    }

    /// What does the work, as discovery shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Simulated { .. } => "simulated",
            Work::Exec(_) => "exec",
            Work::Http(_) => "http",
            Work::Rust(f) => f.kind(),
        }
    }
}

/// The settings of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// The node's name; it serves `activate.<name>`.
    pub name: NodeName,
    /// Nodes it activates, concurrently, on every activation.
    pub downstream: Vec<NodeName>,
    /// Budget when a request brings none, in milliseconds.
    pub timeout_ms: u64,
    /// Its own work.
    pub work: Work,
}

impl NodeSpec {
    /// A node with no downstream, no work, no failures and the default budget.
    pub fn new(name: NodeName) -> Self {
        Self {
            name,
            downstream: Vec::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            work: Work::simulated(0, 0.0),
        }
    }

    /// A node whose work is the Rust function `f` (see [`crate::function()`]).
    pub fn function(name: NodeName, f: Arc<dyn Function>) -> Self {
        Self {
            work: Work::Rust(f),
            ..Self::new(name)
        }
    }

    /// The same node with these downstream nodes.
    pub fn with_downstream(mut self, downstream: Vec<NodeName>) -> Self {
        self.downstream = downstream;
        self
    }
}

/// One `[[node]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeTable {
    name: NodeName,
    #[serde(default)]
    downstream: Vec<NodeName>,
    work_ms: Option<u64>,
    fail_rate: Option<f64>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    exec: Option<Vec<String>>,
    http: Option<String>,
    env: Option<BTreeMap<String, String>>,
    max_output_bytes: Option<usize>,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    #[serde(rename = "node", default)]
    nodes: Vec<NodeTable>,
    #[serde(rename = "trigger", default)]
    triggers: Vec<TriggerTable>,
}

/// One `[[trigger]]` table as written (see `schemas::trigger`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerTable {
    name: NodeName,
    node: NodeName,
    subject: Option<String>,
    cron: Option<String>,
    input: Option<serde_json::Value>,
    timeout_ms: Option<u64>,
}

impl NodeTable {
    /// The node, with relative paths of `exec` resolved against `dir`.
    fn into_spec(self, dir: Option<&Path>) -> Result<NodeSpec, TopologyError> {
        let name = self.name;
        let invalid = |what: String| TopologyError::Invalid(format!("node {name}: {what}"));
        let simulated = self.work_ms.is_some() || self.fail_rate.is_some();
        let function_only = self.env.is_some() || self.max_output_bytes.is_some();
        let max_output_bytes = self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
        if max_output_bytes == 0 {
            return Err(invalid("max_output_bytes must be at least 1".into()));
        }
        let work = match (self.exec, self.http) {
            (Some(_), Some(_)) => {
                return Err(invalid("give either exec or http, not both".into()));
            }
            (Some(_), None) | (None, Some(_)) if simulated => {
                return Err(invalid(
                    "a node is either simulated (work_ms, fail_rate) or a function (exec, http), not both".into(),
                ));
            }
            (Some(argv), None) => {
                if argv.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(invalid(
                        "exec needs a program: exec = [\"program\", \"arg\", ...]".into(),
                    ));
                }
                Work::Exec(ExecSpec {
                    argv,
                    dir: dir.map(Path::to_path_buf),
                    env: self.env.unwrap_or_default(),
                    max_output_bytes,
                })
            }
            (None, Some(url)) => {
                if self.env.is_some() {
                    return Err(invalid("env is for exec functions only".into()));
                }
                crate::http::check_url(&url).map_err(|e| invalid(e.to_string()))?;
                Work::Http(HttpSpec {
                    url,
                    max_output_bytes,
                })
            }
            (None, None) if function_only => {
                return Err(invalid(
                    "env and max_output_bytes need a function (exec or http)".into(),
                ));
            }
            (None, None) => {
                let fail_rate = self.fail_rate.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&fail_rate) {
                    return Err(invalid(format!(
                        "fail_rate {fail_rate} is not between 0 and 1"
                    )));
                }
                Work::simulated(self.work_ms.unwrap_or(0), fail_rate)
            }
        };
        if self.timeout_ms == 0 || self.timeout_ms > schemas::activation::MAX_TIMEOUT_MS {
            return Err(invalid(format!(
                "timeout_ms {} is not between 1 and {}",
                self.timeout_ms,
                schemas::activation::MAX_TIMEOUT_MS
            )));
        }
        Ok(NodeSpec {
            name,
            downstream: self.downstream,
            timeout_ms: self.timeout_ms,
            work,
        })
    }
}

/// A set of nodes served together.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// The nodes, in file order.
    pub nodes: Vec<NodeSpec>,
    /// The triggers (`[[trigger]]`: `name`, `node`, `subject` or `cron`, `input`,
    /// `timeout_ms`), by name: the node process puts them in the bucket the gateways
    /// run triggers from.
    pub triggers: Vec<(NodeName, schemas::trigger::Trigger)>,
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
    /// A setting is out of range, contradicts another, or a name is used twice.
    #[error("invalid topology: {0}")]
    Invalid(String),
}

impl Topology {
    /// Reads and validates a topology file; `exec` programs run in its directory.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| TopologyError::Read {
            path: shown.clone(),
            cause,
        })?;
        let dir: PathBuf = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::parse(&text, Some(&dir)).map_err(|e| match e {
            TopologyError::Parse { cause, .. } => TopologyError::Parse { path: shown, cause },
            other => other,
        })
    }

    /// Parses and validates the text of a topology file; relative `exec` programs and
    /// their working directory are taken from `dir` (the process's when `None`).
    pub fn parse(text: &str, dir: Option<&Path>) -> Result<Self, TopologyError> {
        let file: TopologyFile = toml::from_str(text).map_err(|cause| TopologyError::Parse {
            path: "(text)".into(),
            cause: Box::new(cause),
        })?;
        let nodes = file
            .nodes
            .into_iter()
            .map(|n| n.into_spec(dir))
            .collect::<Result<Vec<_>, _>>()?;
        let mut triggers = Vec::new();
        for t in file.triggers {
            if triggers.iter().any(|(n, _)| *n == t.name) {
                return Err(TopologyError::Invalid(format!(
                    "trigger {} is declared twice",
                    t.name
                )));
            }
            let trigger = schemas::trigger::Trigger {
                node: t.node,
                subject: t.subject,
                cron: t.cron,
                input: t.input,
                timeout_ms: t.timeout_ms,
            };
            trigger
                .check()
                .map_err(|e| TopologyError::Invalid(format!("trigger {}: {e}", t.name)))?;
            triggers.push((t.name, trigger));
        }
        let topology = Topology { nodes, triggers };
        topology.validate()?;
        Ok(topology)
    }

    /// A cycle among the file's nodes (by their downstream lists), as the path that
    /// closes it (`A B C A`), if there is one.
    pub fn find_cycle(&self) -> Option<Vec<NodeName>> {
        fn visit<'a>(
            topology: &'a Topology,
            node: &'a NodeName,
            on_path: &mut Vec<&'a NodeName>,
            done: &mut HashSet<&'a NodeName>,
        ) -> Option<Vec<NodeName>> {
            if let Some(at) = on_path.iter().position(|n| *n == node) {
                let mut cycle: Vec<NodeName> = on_path[at..].iter().map(|n| (*n).clone()).collect();
                cycle.push(node.clone());
                return Some(cycle);
            }
            if !done.insert(node) {
                return None;
            }
            on_path.push(node);
            let children = topology.get(node.as_str()).map(|n| &n.downstream);
            for child in children.into_iter().flatten() {
                if let Some(cycle) = visit(topology, child, on_path, done) {
                    return Some(cycle);
                }
            }
            on_path.pop();
            None
        }
        let mut done = HashSet::new();
        self.nodes
            .iter()
            .find_map(|n| visit(self, &n.name, &mut Vec::new(), &mut done))
    }

    /// Checks what spans nodes: at least one, each name once, no cycle (every
    /// activation through one would be refused as a loop, code 508).
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
        }
        if let Some(cycle) = self.find_cycle() {
            let path: Vec<_> = cycle.iter().map(NodeName::as_str).collect();
            return Err(TopologyError::Invalid(format!(
                "cycle {}: every activation through it would be refused as a loop (508)",
                path.join(" -> ")
            )));
        }
        Ok(())
    }

    /// The seed topology shipped in `topology/seed.toml`.
    pub fn seed() -> Self {
        // The file is compiled in and covered by a test: parsing it cannot fail.
        Self::parse(SEED_TOML, None).unwrap_or(Topology {
            nodes: Vec::new(),
            triggers: Vec::new(),
        })
    }

    /// The same nodes with no simulated work and no failures (for benchmarks and tests);
    /// function nodes are left as they are.
    pub fn without_work(mut self) -> Self {
        for node in &mut self.nodes {
            if let Work::Simulated { .. } = node.work {
                node.work = Work::simulated(0, 0.0);
            }
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
    fn a_cycle_in_a_file_is_refused_naming_it() {
        let text = r#"
            [[node]]
            name = "A"
            downstream = ["B", "OUT"]
            [[node]]
            name = "B"
            downstream = ["C"]
            [[node]]
            name = "C"
            downstream = ["A"]
        "#;
        let err = Topology::parse(text, None).unwrap_err().to_string();
        assert!(err.contains("cycle A -> B -> C -> A"), "{err}");
        let self_loop = "[[node]]\nname = \"S\"\ndownstream = [\"S\"]\n";
        let err = Topology::parse(self_loop, None).unwrap_err().to_string();
        assert!(err.contains("cycle S -> S"), "{err}");
        // A diamond is no cycle.
        let diamond = r#"
            [[node]]
            name = "A"
            downstream = ["B", "C"]
            [[node]]
            name = "B"
            downstream = ["D"]
            [[node]]
            name = "C"
            downstream = ["D"]
            [[node]]
            name = "D"
        "#;
        assert!(Topology::parse(diamond, None).is_ok());
        assert!(Topology::seed().find_cycle().is_none());
    }

    #[test]
    fn triggers_in_a_file_are_read_and_checked() {
        let text = r#"
            [[node]]
            name = "A"
            [[trigger]]
            name = "ORDERS"
            node = "A"
            subject = "orders.created"
            [[trigger]]
            name = "NIGHTLY"
            node = "A"
            cron = "0 0 3 * * *"
            input = { report = "daily" }
        "#;
        let t = Topology::parse(text, None).unwrap();
        assert_eq!(t.triggers.len(), 2);
        assert_eq!(t.triggers[0].1.subject.as_deref(), Some("orders.created"));
        assert_eq!(
            t.triggers[1].1.input,
            Some(serde_json::json!({"report": "daily"}))
        );
        for bad in [
            "[[trigger]]\nname = \"T\"\nnode = \"A\"\n",
            "[[trigger]]\nname = \"T\"\nnode = \"A\"\nsubject = \"status.A\"\n",
            "[[trigger]]\nname = \"T\"\nnode = \"A\"\nsubject = \"x\"\n[[trigger]]\nname = \"T\"\nnode = \"A\"\nsubject = \"y\"\n",
        ] {
            let err = Topology::parse(bad, None).unwrap_err().to_string();
            assert!(err.contains("trigger T"), "{err}");
        }
    }

    #[test]
    fn seed_file_is_the_spec_topology() {
        let t = Topology::parse(SEED_TOML, None).unwrap();
        assert_eq!(t, Topology::seed());
        let names: Vec<_> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["UI", "D", "P", "V", "T", "DS", "TM", "H"]);
        let v = t.get("V").unwrap();
        assert_eq!(v.downstream.len(), 3);
        assert_eq!(t.get("TM").unwrap().work, Work::simulated(1500, 0.25));
        assert_eq!(t.get("H").unwrap().work, Work::simulated(1000, 0.25));
        assert_eq!(t.get("UI").unwrap().work, Work::simulated(0, 0.0));
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
            "[[node]]\nname = \"A\"\nexec = []",
            "[[node]]\nname = \"A\"\nexec = \"python3 fn.py\"",
            "[[node]]\nname = \"A\"\nhttp = \"https://x/\"",
            "[[node]]\nname = \"A\"\nhttp = \"not a url\"",
            "[[node]]\nname = \"A\"\nexec = [\"true\"]\nhttp = \"http://x/\"",
            "[[node]]\nname = \"A\"\nenv = { X = \"1\" }",
            "[[node]]\nname = \"A\"\nexec = [\"true\"]\nmax_output_bytes = 0",
        ] {
            assert!(Topology::parse(bad, None).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn simulated_and_function_is_refused_naming_the_node() {
        for both in [
            "[[node]]\nname = \"WC\"\nexec = [\"wc\"]\nwork_ms = 0",
            "[[node]]\nname = \"WC\"\nhttp = \"http://h/\"\nfail_rate = 0.5",
        ] {
            let e = Topology::parse(both, None).unwrap_err().to_string();
            assert!(e.contains("node WC") && e.contains("not both"), "{e}");
        }
    }

    #[test]
    fn functions_parse_with_their_directory() {
        let t = Topology::parse(
            "[[node]]\nname = \"F\"\nexec = [\"python3\", \"fn.py\"]\nenv = { K = \"v\" }\n\n[[node]]\nname = \"H\"\nhttp = \"http://127.0.0.1:9/x\"\nmax_output_bytes = 10",
            Some(Path::new("/srv/fns")),
        )
        .unwrap();
        match &t.get("F").unwrap().work {
            Work::Exec(e) => {
                assert_eq!(e.argv, ["python3", "fn.py"]);
                assert_eq!(e.dir.as_deref(), Some(Path::new("/srv/fns")));
                assert_eq!(e.env["K"], "v");
                assert_eq!(e.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.get("H").unwrap().work,
            Work::Http(HttpSpec {
                url: "http://127.0.0.1:9/x".into(),
                max_output_bytes: 10
            })
        );
    }
}
