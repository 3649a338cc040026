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

/// Asks every service for its info and keeps the nats-mesh nodes. Waits at most
/// `window`, and stops early once answers have stopped arriving for a short while.
async fn discover(
    client: &Client,
    window: Duration,
) -> Result<BTreeMap<NodeName, Discovered>, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(service::all(Verb::Info), inbox, "".into())
        .await?;
    let quiet = (window / 4).min(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + window;
    let mut found: BTreeMap<NodeName, Discovered> = BTreeMap::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = if found.is_empty() {
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
        let entry = found.entry(name).or_default();
        entry.instances.insert(info.id.chars().take(64).collect());
        entry.meta = meta;
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
    loop {
        match discover(&client, settings.window).await {
            Ok(found) => {
                if view.replace(found) {
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
