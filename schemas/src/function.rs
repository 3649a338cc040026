//! Functions deployed at runtime: where they are kept on the bus and the record that
//! describes one version.
//!
//! A deployed function is one key in the key-value bucket [`BUCKET`] (the key is the
//! function's node name) whose value is a [`FunctionRecord`]: the name of its module in
//! the object store bucket [`MODULES_BUCKET`] and its settings. The key's revision is the
//! version; the bucket keeps the last [`HISTORY`] of them, so an earlier one can be put
//! back (a rollback is a new revision with an older record). Deleting the key stops the
//! function on every runner.
//!
//! Everything that writes the bucket (the gateway, or `nats kv put` by hand) writes this
//! record; everything that reads it (runners, the gateway) checks it with
//! [`FunctionRecord::decode`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::NodeName;

/// The key-value bucket of deployed functions: one key per function.
pub const BUCKET: &str = "MESH_FUNCTIONS";
/// The object store bucket of modules.
pub const MODULES_BUCKET: &str = "MESH_FUNCTION_MODULES";
/// Versions kept per function (the bucket's history; JetStream's largest).
pub const HISTORY: i64 = 64;

/// Budget of an activation that brings none, by default (milliseconds).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Memory a module may grow to, by default (MiB).
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Activations of one function one runner handles at once, by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
/// Largest result, by default (bytes).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

/// Largest budget (milliseconds).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Largest memory limit (MiB).
pub const MAX_MEMORY_MIB: u32 = 4096;
/// Largest in-flight limit.
pub const MAX_IN_FLIGHT: u32 = 100_000;
/// Largest result limit (bytes).
pub const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// Most downstream nodes.
pub const MAX_DOWNSTREAM: usize = 64;
/// Longest description (bytes).
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest module object name (bytes).
pub const MAX_MODULE_NAME: usize = 255;

/// One version of a deployed function, as kept in [`BUCKET`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionRecord {
    /// Name of the module (a WASI command) in the object store bucket [`MODULES_BUCKET`].
    pub module: String,
    /// The module's digest as the object store gives it (`SHA-256=<base64url>`); when
    /// present, a runner refuses a module whose digest differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The module's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When this version was deployed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    /// How it runs.
    #[serde(default)]
    pub settings: FunctionSettings,
}

/// How a deployed function runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionSettings {
    /// Nodes it activates, concurrently, before its module runs; their replies are the
    /// `children` of its input.
    #[serde(default)]
    pub downstream: Vec<NodeName>,
    /// Budget of an activation that brings none, in milliseconds (1 to 600000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory the module may grow to, in MiB (1 to 4096); past it the activation fails.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Activations one runner handles at once; more are refused with 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Largest result in bytes; a larger output is a 502.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// What it does, for people.
    #[serde(default)]
    pub description: String,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_memory_mib() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_max_output_bytes() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

impl Default for FunctionSettings {
    fn default() -> Self {
        Self {
            downstream: Vec::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mib: DEFAULT_MEMORY_MIB,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            description: String::new(),
        }
    }
}

/// Why a function record or its settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a record (malformed, a wrong type, an unknown field).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A value out of range.
    #[error("{0}")]
    Range(String),
}

impl FunctionSettings {
    /// Whether every value is in range; `name` is the function's own name (it may not be
    /// its own downstream node).
    pub fn check(&self, name: &NodeName) -> Result<(), RecordError> {
        let range = |what: &str, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(RecordError::Range(format!(
                    "{what} must be between 1 and {max}, got {value}"
                )))
            }
        };
        range("timeout_ms", self.timeout_ms, MAX_TIMEOUT_MS)?;
        range("memory_mib", self.memory_mib.into(), MAX_MEMORY_MIB.into())?;
        range(
            "max_in_flight",
            self.max_in_flight.into(),
            MAX_IN_FLIGHT.into(),
        )?;
        range("max_output_bytes", self.max_output_bytes, MAX_OUTPUT_BYTES)?;
        if self.downstream.len() > MAX_DOWNSTREAM {
            return Err(RecordError::Range(format!(
                "at most {MAX_DOWNSTREAM} downstream nodes, got {}",
                self.downstream.len()
            )));
        }
        if self.downstream.contains(name) {
            return Err(RecordError::Range(format!(
                "{name} cannot be its own downstream node"
            )));
        }
        if self.description.len() > MAX_DESCRIPTION {
            return Err(RecordError::Range(format!(
                "the description is longer than {MAX_DESCRIPTION} bytes"
            )));
        }
        Ok(())
    }
}

impl FunctionRecord {
    /// Parses and checks a stored value for the function `name`.
    pub fn decode(name: &NodeName, bytes: &[u8]) -> Result<Self, RecordError> {
        let record: Self = serde_json::from_slice(bytes)?;
        if record.module.is_empty() || record.module.len() > MAX_MODULE_NAME {
            return Err(RecordError::Range(format!(
                "module must name an object of 1 to {MAX_MODULE_NAME} bytes"
            )));
        }
        record.settings.check(name)?;
        Ok(record)
    }

    /// The record as stored.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, numbers and names only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The object name of a module deployed through the gateway: the function's name and
/// the module's SHA-256 in hex, so a module deployed twice is stored once and every
/// version's module stays for a rollback.
pub fn module_object(name: &NodeName, sha256_hex: &str) -> String {
    format!("{name}/{sha256_hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    #[test]
    fn a_minimal_record_gets_the_default_settings() {
        let r = FunctionRecord::decode(&name("F"), br#"{"module":"f.wasm"}"#).unwrap();
        assert_eq!(r.module, "f.wasm");
        assert_eq!(r.settings, FunctionSettings::default());
        let again = FunctionRecord::decode(&name("F"), &r.encode()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let refused = |text: &str| {
            FunctionRecord::decode(&name("F"), text.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(refused("[").contains("EOF"), "{}", refused("["));
        assert!(refused(r#"{"module":""}"#).contains("module"));
        assert!(refused(r#"{"module":"m","other":1}"#).contains("unknown field"));
        assert!(refused(r#"{"module":"m","settings":{"memory_mib":0}}"#).contains("memory_mib"));
        assert!(
            refused(r#"{"module":"m","settings":{"timeout_ms":600001}}"#).contains("timeout_ms")
        );
        assert!(
            refused(r#"{"module":"m","settings":{"downstream":["F"]}}"#).contains("own downstream")
        );
        assert!(refused(r#"{"module":"m","settings":{"downstream":["a.b"]}}"#).contains("a.b"));
    }
}
