use std::time::Duration;

use async_nats::Client;
use handlers::{runtime::Running, NodeSpec, Settings};
use mesh_core::call;
use schemas::{ActivationReply, ActivationRequest};
pub use testsupport::{
    eventually,
    nodes::{name, seed_zero_work, spec},
    NatsServer, Proc, Signal,
};

pub async fn connect(server: &NatsServer) -> Client {
    async_nats::connect(server.url()).await.unwrap()
}

/// Serves `nodes` on their own connection to `server`.
pub async fn serve(server: &NatsServer, nodes: Vec<NodeSpec>) -> Running {
    serve_with(server, nodes, Settings::default()).await
}

/// Nodes served in this process; exec functions run under the built `handlers` binary's
/// reaper, as in the binary.
pub async fn serve_with(server: &NatsServer, nodes: Vec<NodeSpec>, settings: Settings) -> Running {
    handlers::exec::use_reaper(env!("CARGO_BIN_EXE_handlers").into());
    Running::start(connect(server).await, nodes, settings)
        .await
        .unwrap()
}

/// Activates `node` with `request`, waiting at most 10 s.
pub async fn activate(client: &Client, node: &str, request: ActivationRequest) -> ActivationReply {
    call::activate(client, &name(node), &request, Duration::from_secs(10)).await
}

/// Receives the next message on `sub` within `limit`.
pub async fn next_within(
    sub: &mut async_nats::Subscriber,
    limit: Duration,
) -> Option<async_nats::Message> {
    use futures::StreamExt;
    tokio::time::timeout(limit, sub.next()).await.ok().flatten()
}
