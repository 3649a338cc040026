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
    let opened = async {
        if let Ok(store) = js.get_key_value(trigger::BUCKET).await {
            return Ok(store);
        }
        // Made directly: async-nats' `create_key_value` cannot read nats-server 2.9's
        // answer. This is the stream it would make.
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{}", trigger::BUCKET),
            description: Some("nats-mesh: triggers, one key per trigger".into()),
            subjects: vec![format!("$KV.{}.>", trigger::BUCKET)],
            max_messages_per_subject: 1,
            max_bytes: 16 * 1024 * 1024,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        js.get_key_value(trigger::BUCKET)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(OPEN_WAIT, opened)
        .await
        .map_err(|_| "JetStream did not answer".to_string())?
}
