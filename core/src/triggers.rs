//! The key-value bucket of triggers (`schemas::trigger`), shared by the gateways that run
//! them and the node processes that put a topology file's triggers there.

use std::time::Duration;

use async_nats::{
    jetstream::{self, kv},
    Client,
};
use schemas::trigger;

/// Longest wait for JetStream to open or make the bucket.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// The bucket of triggers (made when missing, with `replicas` copies), or why not.
pub async fn open(client: &Client, replicas: usize) -> Result<kv::Store, String> {
    let js = jetstream::new(client.clone());
    let opened = crate::bus::key_value(
        &js,
        crate::bus::Bucket {
            name: trigger::BUCKET,
            description: "nats-mesh: triggers, one key per trigger",
            history: 1,
            max_age: Duration::ZERO,
            max_bytes: 16 * 1024 * 1024,
            replicas,
        },
    );
    tokio::time::timeout(OPEN_WAIT, opened)
        .await
        .map_err(|_| "JetStream did not answer".to_string())?
}
