//! What every route shares: the gateway's settings, its connection, the stages of its
//! event path and its stores.

use std::sync::Arc;

use async_nats::{connection::State as Connection, Client};
use bytes::Bytes;
use schemas::{graph::Graph, sse::TopologyEvent};
use tokio_util::sync::CancellationToken;

use crate::{
    activations, graph, metrics,
    settings::Settings,
    sse::{frame, history::History, ingest::Ingest, session, states::Latest},
};

/// What every route shares.
pub struct State {
    /// The gateway's settings.
    pub settings: Settings,
    /// Its NATS connection.
    pub client: Client,
    /// Status events from the bus into the log.
    pub ingest: Arc<Ingest>,
    /// Each node's latest state.
    pub latest: Arc<Latest>,
    /// The activations this gateway runs, whose events become their timelines.
    pub watches: Arc<activations::Watches>,
    /// The discovered graph.
    pub view: Arc<graph::GraphView>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The durable history, when the server has JetStream.
    pub history: Option<Arc<History>>,
    /// Finished activations, for the inspector.
    pub kept: Arc<activations::Kept>,
    /// The key-value bucket of live node settings, when the server has JetStream.
    pub config_store: Option<async_nats::jetstream::kv::Store>,
    /// Asynchronous activations, when JetStream has them.
    pub jobs: Option<Arc<crate::jobs::Jobs>>,
    /// The bucket of triggers, when JetStream has it.
    pub trigger_store: Option<async_nats::jetstream::kv::Store>,
    /// The triggers this gateway runs.
    pub triggers: Arc<crate::triggers::Running>,
    /// Deployed WebAssembly functions.
    pub deployments: crate::deployments::Deployments,
    /// Cancelled when the gateway stops: ends every event stream and background task.
    pub stop: CancellationToken,
}

impl State {
    /// Whether the NATS connection is up.
    pub fn bus_connected(&self) -> bool {
        self.client.connection_state() == Connection::Connected
    }

    /// This gateway's id (`relayed_by`).
    pub fn gateway_id(&self) -> &str {
        self.ingest.gateway_id()
    }

    /// SSE clients connected now.
    pub fn sse_clients(&self) -> usize {
        self.ingest.log().clients()
    }

    /// The graph with each node's latest state.
    pub fn topology(&self) -> Graph {
        self.latest.with(|states| self.view.snapshot(states))
    }

    /// What every event stream of this gateway shares.
    pub fn sessions(&self) -> session::Context {
        session::Context {
            ingest: self.ingest.clone(),
            history: self.history.clone(),
            keepalive: self.settings.sse.keepalive,
            stop: self.stop.clone(),
        }
    }

    /// The first frames of every stream: the retry hint, the topology, the bus state.
    pub fn first_frames(&self) -> Vec<Bytes> {
        let graph = self.topology();
        let mermaid = crate::mermaid::render(&graph);
        vec![
            frame::retry(self.settings.sse.retry.as_millis()),
            frame::topology(&TopologyEvent { graph, mermaid }),
            frame::bus(self.bus_connected(), self.gateway_id()),
        ]
    }
}
