//! Where one client's stream stands and which frames it wants: the one rule every
//! writer of a stream (its own task, a hub shard) follows to move through the log.

use std::collections::HashSet;

use schemas::{sse::SseEvent, ActivationId, NodeName};

use super::log::Frame;

/// Where a client's stream stands: what it has been sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Id of the last status frame sent or skipped (filtered out).
    pub last_sent: u64,
    /// Sequence of the last control frame sent.
    pub controls: u64,
}

impl Position {
    /// Moves past `frame`; whether it is new here (neither sent nor skipped before).
    /// Status and control frames are numbered apart.
    pub fn advance(&mut self, frame: &Frame) -> bool {
        let at = if frame.kind == SseEvent::Status {
            &mut self.last_sent
        } else {
            &mut self.controls
        };
        if frame.id <= *at {
            return false;
        }
        *at = frame.id;
        true
    }
}

/// Which status events a client wants (control events always pass).
#[derive(Debug, Default)]
pub struct Filter {
    /// Only these nodes (all when empty).
    pub nodes: HashSet<NodeName>,
    /// Only this activation.
    pub activation: Option<ActivationId>,
}

impl Filter {
    /// Whether `frame` is for this client.
    pub fn matches(&self, frame: &Frame) -> bool {
        if frame.kind != SseEvent::Status {
            return true;
        }
        let node_ok =
            self.nodes.is_empty() || frame.node.as_ref().is_some_and(|n| self.nodes.contains(n));
        let activation_ok = self.activation.is_none() || frame.activation == self.activation;
        node_ok && activation_ok
    }
}

/// A client's cursor: its filter and its position.
#[derive(Debug)]
pub struct Cursor {
    /// What it wants.
    pub filter: std::sync::Arc<Filter>,
    /// What it has been sent.
    pub position: Position,
}

impl Cursor {
    /// Moves past `frame`; whether the client is owed it (new here and wanted).
    pub fn owes(&mut self, frame: &Frame) -> bool {
        self.position.advance(frame) && self.filter.matches(frame)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn status(id: u64, node: &str) -> Frame {
        Frame {
            id,
            kind: SseEvent::Status,
            node: Some(NodeName::new(node).unwrap()),
            activation: None,
            bytes: Bytes::new(),
        }
    }

    fn control(id: u64) -> Frame {
        Frame {
            id,
            kind: SseEvent::Topology,
            node: None,
            activation: None,
            bytes: Bytes::new(),
        }
    }

    #[test]
    fn a_cursor_owes_each_wanted_frame_once_and_numbers_controls_apart() {
        let mut cursor = Cursor {
            filter: std::sync::Arc::new(Filter {
                nodes: [NodeName::new("V").unwrap()].into(),
                activation: None,
            }),
            position: Position {
                last_sent: 0,
                controls: 0,
            },
        };
        assert!(cursor.owes(&status(1, "V")));
        assert!(!cursor.owes(&status(1, "V")), "sent already");
        assert!(!cursor.owes(&status(2, "T")), "filtered out");
        assert_eq!(cursor.position.last_sent, 2, "a skipped frame moves it too");
        assert!(cursor.owes(&control(1)), "controls pass every filter");
        assert!(cursor.owes(&status(3, "V")));
        assert!(!cursor.owes(&control(1)));
        assert_eq!(
            cursor.position,
            Position {
                last_sent: 3,
                controls: 1
            }
        );
    }
}
