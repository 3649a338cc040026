//! The key-value bucket of live node settings (`schemas::config`), shared by the node
//! runtime (which follows it) and the gateway (which writes it).

use std::time::Duration;

use async_nats::{
    jetstream::{self, kv},
    Client,
};
use futures::StreamExt;
use schemas::{
    config::{self, NodeConfig},
    NodeName,
};
use tokio_util::sync::CancellationToken;

/// Most bytes the bucket holds (about 10,000 nodes' settings); a write beyond is refused
/// (a gateway's `PUT /nodes/{node}/config` then answers 503, nothing changed).
pub const MAX_BYTES: i64 = 1024 * 1024;

/// Longest wait for JetStream to say whether the bucket exists.
const OPEN_WAIT: Duration = Duration::from_secs(3);

/// The bucket of live settings (created when missing), or `None` without JetStream.
pub async fn open(client: &Client) -> Option<kv::Store> {
    let js = jetstream::new(client.clone());
    let opened = crate::bus::key_value(
        &js,
        crate::bus::Bucket {
            name: config::BUCKET,
            description: "nats-mesh: live settings of nodes, one key per node",
            history: 1,
            max_age: Duration::ZERO,
            max_bytes: MAX_BYTES,
            replicas: 1,
        },
    );
    match tokio::time::timeout(OPEN_WAIT, opened).await {
        Ok(Ok(store)) => Some(store),
        Ok(Err(e)) => {
            tracing::info!(
                cause = %e,
                "no JetStream key-value bucket for live settings: changes reach running replicas only, on {}",
                config::SUBJECT_ALL
            );
            None
        }
        Err(_) => None,
    }
}

/// The stored settings of `node`, if any.
pub async fn stored(store: &kv::Store, node: &NodeName) -> NodeConfig {
    match store.get(node.as_str()).await {
        Ok(Some(bytes)) => NodeConfig::decode(&bytes).unwrap_or_default(),
        _ => NodeConfig::default(),
    }
}

/// Pause before watching the bucket again after the watch ended.
const REWATCH_PAUSE: Duration = Duration::from_millis(500);

/// Calls `apply` with each change until `stop`: from the bucket when there is one (its
/// current values first), and from the fallback subject. A deleted key is the default
/// (no override); a malformed value is logged and skipped.
pub async fn follow(
    client: Client,
    store: Option<kv::Store>,
    stop: CancellationToken,
    apply: impl Fn(&NodeName, NodeConfig),
) {
    let apply = |name: &str, bytes: &[u8]| {
        let Ok(node) = NodeName::new(name) else {
            return;
        };
        match NodeConfig::decode(bytes) {
            Ok(config) => apply(&node, config),
            Err(e) => tracing::warn!(node = name, cause = %e, "live settings refused"),
        }
    };
    let Ok(mut sent) = client.subscribe(config::SUBJECT_ALL).await else {
        return;
    };
    loop {
        let mut watch = match &store {
            Some(store) => store.watch_with_history(">").await.ok(),
            None => None,
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(m) = sent.next() => {
                    let name = m.subject.as_str().rsplit('.').next().unwrap_or("");
                    apply(name, &m.payload);
                }
                entry = async { watch.as_mut()?.next().await }, if watch.is_some() => match entry {
                    Some(Ok(entry)) => match entry.operation {
                        kv::Operation::Put => apply(&entry.key, &entry.value),
                        kv::Operation::Delete | kv::Operation::Purge => apply(&entry.key, b""),
                    },
                    // The watch ended (the server went away): watch again.
                    _ => break,
                },
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REWATCH_PAUSE) => {},
        }
    }
}
