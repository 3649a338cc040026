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

/// `activate.<node>`: where `node` answers activations.
pub fn activate(node: &NodeName) -> String {
    // Joined, not formatted: this is built for every request a node or the gateway sends.
    [ACTIVATE_PREFIX, ".", node.as_str()].concat()
}

/// `status.<node>`: where `node` publishes its status events.
pub fn status(node: &NodeName) -> String {
    [STATUS_PREFIX, ".", node.as_str()].concat()
}

/// The node named by a `status.<node>` subject, when it is one.
pub fn node_of_status(subject: &str) -> Option<NodeName> {
    node_name_of_status(subject).and_then(|name| NodeName::new(name).ok())
}

/// As [`node_of_status`], the name borrowed from `subject`.
pub fn node_name_of_status(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(STATUS_PREFIX)?
        .strip_prefix('.')
        .filter(|name| NodeName::is_valid(name))
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
