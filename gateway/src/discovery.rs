//! Topology discovered from the bus through `$SRV.INFO`: never hard-coded.
//!
//! Discovery asks every service for its info, keeps the nats-mesh nodes (see
//! [`NodeMeta::from_metadata`]), groups replicas by name and reads what each says of
//! itself. It runs periodically and at once when a node it does not know publishes a
//! status event.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::{service::Info, Client};
use futures::StreamExt;
use schemas::{
    service::{self, NodeMeta, Verb},
    sse::{SseEvent, TopologyEvent},
    NodeName,
};
use tokio_util::sync::CancellationToken;

use crate::{
    graph::{Discovered, GraphView},
    settings::DiscoverySettings,
    sse::{frame, relay::Relay},
};

/// What one discovery round found: the nodes, and the names whose replicas disagree
/// about what the node is (its downstream, work or function).
#[derive(Default)]
struct Round {
    nodes: BTreeMap<NodeName, Discovered>,
    conflicts: std::collections::BTreeSet<NodeName>,
    /// Per node, the instance whose description is kept (the smallest id: the same
    /// choice every round, so the graph does not flap between two descriptions).
    described_by: BTreeMap<NodeName, String>,
}

impl Round {
    fn add(&mut self, name: NodeName, instance: String, meta: NodeMeta) {
        let entry = self.nodes.entry(name.clone()).or_default();
        if !entry.instances.is_empty() && entry.meta != meta {
            self.conflicts.insert(name.clone());
        }
        entry.instances.insert(instance.clone());
        let keep = self
            .described_by
            .get(&name)
            .is_none_or(|current| instance < *current);
        if keep {
            entry.meta = meta;
            self.described_by.insert(name, instance);
        }
    }
}

/// Asks every service for its info and keeps the nats-mesh nodes. Waits at most
/// `window`, and stops early once answers have stopped arriving for a short while.
async fn discover(client: &Client, window: Duration) -> Result<Round, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(service::all(Verb::Info), inbox, "".into())
        .await?;
    let quiet = (window / 4).min(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + window;
    let mut found = Round::default();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = if found.nodes.is_empty() {
            left
        } else {
            quiet.min(left)
        };
        let Ok(Some(message)) = tokio::time::timeout(wait, replies.next()).await else {
            break;
        };
        let Ok(info) = serde_json::from_slice::<Info>(&message.payload) else {
            continue;
        };
        let Some(meta) = NodeMeta::from_metadata(&info.metadata) else {
            continue;
        };
        let Ok(name) = NodeName::new(info.name.as_str()) else {
            continue;
        };
        found.add(name, info.id.chars().take(64).collect(), meta);
    }
    Ok(found)
}

/// Least time between two discoveries triggered by unknown publishers.
const MIN_TRIGGER_GAP: Duration = Duration::from_millis(500);

/// Keeps `view` current until `stop` is cancelled, announcing each change on `relay`.
pub async fn run(
    client: Client,
    view: Arc<GraphView>,
    relay: Arc<Relay>,
    settings: DiscoverySettings,
    stop: CancellationToken,
) {
    let mut conflicts = std::collections::BTreeSet::new();
    loop {
        match discover(&client, settings.window).await {
            Ok(round) => {
                for name in round.conflicts.difference(&conflicts) {
                    tracing::warn!(node = %name, "replicas of one node describe it differently (downstream, work or function): the one with the smallest service id is shown");
                }
                conflicts = round.conflicts;
                if view.replace(round.nodes) {
                    let graph = relay.with_states(|states| view.snapshot(states));
                    tracing::info!(nodes = graph.nodes.len(), "topology changed");
                    let mermaid = crate::mermaid::render(&graph);
                    relay.push_control(
                        SseEvent::Topology,
                        frame::topology(&TopologyEvent { graph, mermaid }),
                    );
                }
            }
            Err(e) => tracing::debug!(cause = %e, "discovery failed"),
        }
        let last = tokio::time::Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {},
            _ = relay.unknown_node.notified() => {
                // A burst of events from unknown publishers costs one discovery.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(last + MIN_TRIGGER_GAP) => {},
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(downstream: &[&str]) -> NodeMeta {
        NodeMeta {
            downstream: downstream
                .iter()
                .map(|d| NodeName::new(*d).unwrap())
                .collect(),
            work_ms: 0,
            fail_rate: 0.0,
            function: "simulated".into(),
        }
    }

    #[test]
    fn disagreeing_replicas_are_reported_and_one_description_is_kept_whatever_the_order() {
        let a = NodeName::new("A").unwrap();
        for order in [["i1", "i2"], ["i2", "i1"]] {
            let mut round = Round::default();
            for instance in order {
                let m = if instance == "i1" {
                    meta(&["B"])
                } else {
                    meta(&["C"])
                };
                round.add(a.clone(), instance.into(), m);
            }
            assert!(round.conflicts.contains(&a));
            assert_eq!(round.nodes[&a].meta, meta(&["B"]), "i1's, in either order");
            assert_eq!(round.nodes[&a].instances.len(), 2);
        }
        let mut agreeing = Round::default();
        agreeing.add(a.clone(), "i1".into(), meta(&["B"]));
        agreeing.add(a.clone(), "i2".into(), meta(&["B"]));
        assert!(agreeing.conflicts.is_empty());
    }
}
