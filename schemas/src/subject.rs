//! NATS subjects of nats-mesh. Every subject is built from a validated [`NodeName`].

use crate::NodeName;

/// Prefix of the activation subjects: `activate.<node>`.
pub const ACTIVATE_PREFIX: &str = "activate";
/// Prefix of the status subjects: `status.<node>`.
pub const STATUS_PREFIX: &str = "status";
/// Wildcard matching every status subject.
pub const STATUS_ALL: &str = "status.>";
/// Queue group shared by every replica of a node.
pub const QUEUE_GROUP: &str = "mesh";
/// Metadata key on a node's service that marks it as a nats-mesh node.
pub const META_KIND: &str = "mesh.kind";
/// Value of [`META_KIND`] for a node.
pub const META_KIND_NODE: &str = "node";
/// Metadata key listing a node's downstream nodes, comma-separated.
pub const META_DOWNSTREAM: &str = "mesh.downstream";
/// Metadata key holding a node's own work time in milliseconds.
pub const META_WORK_MS: &str = "mesh.work_ms";
/// Metadata key holding a node's failure rate (0 to 1).
pub const META_FAIL_RATE: &str = "mesh.fail_rate";

/// `activate.<node>`: where `node` answers activations.
pub fn activate(node: &NodeName) -> String {
    format!("{ACTIVATE_PREFIX}.{node}")
}

/// `status.<node>`: where `node` publishes its status events.
pub fn status(node: &NodeName) -> String {
    format!("{STATUS_PREFIX}.{node}")
}

/// The node named by a `status.<node>` subject, when it is one.
pub fn node_of_status(subject: &str) -> Option<NodeName> {
    subject
        .strip_prefix(STATUS_PREFIX)?
        .strip_prefix('.')
        .and_then(|rest| NodeName::new(rest).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_subjects() {
        let v = NodeName::new("V").unwrap();
        assert_eq!(activate(&v), "activate.V");
        assert_eq!(status(&v), "status.V");
        assert_eq!(node_of_status("status.V"), Some(v));
        assert_eq!(node_of_status("status.a.b"), None);
        assert_eq!(node_of_status("statusV"), None);
        assert_eq!(node_of_status("activate.V"), None);
    }
}
