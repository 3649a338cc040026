//! Live settings of a node, changed while it runs (`PUT /nodes/{node}/config`).
//!
//! They are kept in the JetStream key-value bucket [`BUCKET`], one key per node name,
//! which every node process watches: every replica takes a change at once, and so do
//! replicas that start later or restart. Without JetStream the gateway sends the
//! change on [`subject`] instead, to the replicas running at that moment only. An
//! absent or deleted key means the topology file's values.

use serde::{Deserialize, Serialize};

use crate::NodeName;

/// The key-value bucket keeping live settings.
pub const BUCKET: &str = "MESH_NODE_CONFIG";

/// Subjects of the fallback without JetStream: `mesh.config.<node>`.
pub const SUBJECT_ALL: &str = "mesh.config.*";

/// Largest simulated work that can be set, in milliseconds (10 minutes).
pub const MAX_WORK_MS: u64 = 600_000;

/// The fallback subject of `node`.
pub fn subject(node: &NodeName) -> String {
    format!("mesh.config.{node}")
}

/// Settings that override a simulated node's file values; `None` keeps the file's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Probability (0 to 1) that the node's own work fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_rate: Option<f64>,
    /// The node's own simulated work, in milliseconds (at most [`MAX_WORK_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_ms: Option<u64>,
}

/// Why live settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a settings object (malformed, a wrong type, an unknown field).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A failure rate outside 0..1.
    #[error("fail_rate must be between 0 and 1, got {0}")]
    FailRate(f64),
    /// More work than [`MAX_WORK_MS`].
    #[error("work_ms must be at most {MAX_WORK_MS}, got {0}")]
    WorkMs(u64),
}

impl NodeConfig {
    /// Parses and checks a stored or sent value; empty means no override.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let config: Self = serde_json::from_slice(bytes)?;
        config.check()?;
        Ok(config)
    }

    /// Whether the values are in range.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(rate) = self.fail_rate {
            // -0.0 compares equal to 0.0, but is not a rate anyone means.
            if !(0.0..=1.0).contains(&rate) || rate.is_sign_negative() {
                return Err(ConfigError::FailRate(rate));
            }
        }
        if let Some(ms) = self.work_ms {
            if ms > MAX_WORK_MS {
                return Err(ConfigError::WorkMs(ms));
            }
        }
        Ok(())
    }

    /// These settings with `newer`'s values where it has some.
    pub fn merged(self, newer: NodeConfig) -> NodeConfig {
        NodeConfig {
            fail_rate: newer.fail_rate.or(self.fail_rate),
            work_ms: newer.work_ms.or(self.work_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_checks_and_merges() {
        assert_eq!(NodeConfig::decode(b"").unwrap(), NodeConfig::default());
        let c = NodeConfig::decode(br#"{"fail_rate":0.5}"#).unwrap();
        assert_eq!(c.fail_rate, Some(0.5));
        assert!(NodeConfig::decode(br#"{"fail_rate":1.5}"#).is_err());
        assert!(NodeConfig::decode(br#"{"fail_rate":-0.0}"#).is_err());
        assert!(NodeConfig::decode(br#"{"fail_rate":0.0}"#).is_ok());
        assert!(NodeConfig::decode(br#"{"work_ms":600001}"#).is_err());
        assert!(NodeConfig::decode(br#"{"other":1}"#).is_err());
        assert!(NodeConfig::decode(b"[").is_err());
        let merged = c.merged(NodeConfig {
            work_ms: Some(10),
            ..Default::default()
        });
        assert_eq!((merged.fail_rate, merged.work_ms), (Some(0.5), Some(10)));
        assert_eq!(subject(&NodeName::new("UI").unwrap()), "mesh.config.UI");
    }
}
