//! Live settings (`schemas::config`) of the nodes served here: read from the key-value
//! bucket before a node serves (see `runtime`), then followed as they change.

use std::{collections::HashMap, sync::Arc};

use async_nats::{jetstream::kv, Client};
use schemas::NodeName;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

pub use mesh_core::live_config::{open, stored};

/// Applies changes to the nodes served here until `stop`.
pub async fn follow(
    client: Client,
    store: Option<kv::Store>,
    nodes: HashMap<NodeName, Vec<Arc<Node>>>,
    stop: CancellationToken,
) {
    mesh_core::live_config::follow(client, store, stop, |name, config| {
        if let Some(replicas) = nodes.get(name) {
            tracing::info!(node = %name, ?config, "live settings");
            for node in replicas {
                node.set_live(config);
            }
        }
    })
    .await;
}
