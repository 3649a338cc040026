//! The nats-mesh HTTP gateway.
//!
//! - [`config`]: command line and environment settings.
//! - [`relay`]: the `status.>` subscription fanned out to SSE clients, with a bounded
//!   window of history for `Last-Event-ID`.
//! - [`topology`]: the graph discovered through `$SRV.INFO`, and its Mermaid source.
//! - [`api`]: the OpenAPI routes (`/activate`, `/nodes/{node}/color`, `/events`,
//!   `/topology`, `/healthz`, `/readyz`).
//! - [`page`]: the live page and its assets, compiled in.
//! - [`metrics`]: Prometheus metrics; every request also gets a span and an
//!   `X-Trace-Id` response header.
//!
//! [`Gateway::start`] wires them on a NATS connection; [`Gateway::serve`] serves HTTP
//! until a shutdown future completes.

pub mod api;
mod auth;
pub mod config;
pub mod history;
mod limit;
pub mod metrics;
mod observe;
pub mod page;
pub mod relay;
pub mod topology;

use std::{
    future::Future,
    sync::{atomic::AtomicUsize, Arc},
    time::Duration,
};

use async_nats::{connection::State as Connection, Client};
use poem::{get, http::Method, listener::TcpAcceptor, EndpointExt, IntoEndpoint, Route, Server};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What every route shares.
pub struct State {
    /// The gateway's settings.
    pub config: Config,
    /// Its NATS connection.
    pub client: Client,
    /// The status relay.
    pub relay: Arc<relay::Relay>,
    /// The discovered graph.
    pub view: Arc<topology::TopologyView>,
    /// SSE clients connected now.
    pub sse_clients: AtomicUsize,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The durable history, when the server has JetStream.
    pub history: Option<Arc<history::History>>,
}

impl State {
    /// Whether the NATS connection is up.
    pub fn bus_connected(&self) -> bool {
        self.client.connection_state() == Connection::Connected
    }

    /// SSE clients connected now.
    pub fn sse_clients(&self) -> usize {
        self.sse_clients.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The graph with each node's latest state.
    pub fn topology(&self) -> topology::Topology {
        self.view.snapshot(&self.relay.last_states())
    }
}

/// A gateway wired to NATS: relay and discovery running, routes ready.
pub struct Gateway {
    state: Arc<State>,
    stop: CancellationToken,
}

impl Gateway {
    /// Starts the relay and discovery on `client`. Returns once the `status.>`
    /// subscription is registered with the server (when NATS is reachable).
    pub async fn start(config: Config, client: Client) -> anyhow::Result<Self> {
        let gateway_id = config
            .gateway_id
            .clone()
            // A NUID's last ten characters are its per-process random sequence, so ids of
            // gateways in one process or in many differ.
            .unwrap_or_else(|| {
                let id = nuid::next().to_string();
                format!("gw-{}", &id[id.len() - 10..])
            });
        let metrics = Arc::new(metrics::Metrics::default());
        let relay = relay::Relay::new(
            gateway_id,
            usize::try_from(config.sse_history)?,
            usize::try_from(config.sse_buffer)?,
            metrics.clone(),
        );
        let view = Arc::new(topology::TopologyView::new(config.entry_node.clone()));
        let stop = CancellationToken::new();
        let mut history = history::History::open(&client, &config).await;
        if let Some(h) = history.as_mut() {
            relay.start_after(h.last_sequence().await);
        }
        let history = history.map(Arc::new);
        let state = Arc::new(State {
            config,
            client: client.clone(),
            relay: relay.clone(),
            view: view.clone(),
            sse_clients: AtomicUsize::new(0),
            metrics,
            history: history.clone(),
        });

        let source = match &history {
            Some(h) => relay::Source::Stream(Box::new(
                h.live()
                    .await
                    .map_err(|e| anyhow::anyhow!("consuming the status stream: {e}"))?,
            )),
            None => relay::Source::Live(relay::subscribe(&client).await?),
        };
        if let Err(e) = handlers::bus::sync(&client).await {
            // Not connected yet: the client subscribes when it connects.
            tracing::warn!(cause = %e, "NATS has not confirmed the status subscription yet");
        }
        tokio::spawn({
            let view = view.clone();
            let relay = relay.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {},
                    _ = relay::run(source, relay, move |n| view.serving(n)) => {},
                }
            }
        });
        tokio::spawn(relay::watch_bus(
            client.clone(),
            relay.clone(),
            stop.clone(),
        ));
        tokio::spawn(topology::run(
            client,
            view,
            relay,
            Duration::from_millis(state.config.discovery_interval_ms),
            Duration::from_millis(state.config.discovery_window_ms),
            stop.clone(),
        ));
        Ok(Self { state, stop })
    }

    /// Shared state (for tests and tools).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Every route: the API, its documents, and the page, with the body limit, the
    /// optional bearer token and CORS, and a span and metrics per request.
    pub fn routes(&self) -> poem::endpoint::BoxEndpoint<'static> {
        let api = api::service(self.state.clone());
        let spec = api::document(&api);
        let docs = api.swagger_ui();
        let max_body = self.state.config.max_body_bytes;
        let metrics = self.state.metrics.clone();
        // The API's operations live at the root beside the page: each of its top-level
        // paths is routed to it (the router cannot nest at "/" and also serve "/").
        let api = Arc::new(api.into_endpoint());
        let mut routes = Route::new()
            .at("/", get(page::index))
            .at("/assets/:file", get(page::asset))
            .at(
                "/openapi.json",
                get(poem::endpoint::make_sync(move |_| {
                    poem::Response::builder()
                        .content_type("application/json; charset=utf-8")
                        .body(spec.clone())
                })),
            )
            .nest("/docs", docs);
        for prefix in api::PREFIXES {
            routes = routes.nest_no_strip(prefix, api.clone());
        }
        let mut endpoint = routes
            .around(move |endpoint, req| limit::limit_body(endpoint, req, max_body))
            .boxed();
        if let Some(token) = self.state.config.api_token.clone() {
            endpoint = endpoint
                .around(move |endpoint, req| auth::require_token(endpoint, req, token.clone()))
                .boxed();
        }
        if !self.state.config.cors_origins.is_empty() {
            let cors = poem::middleware::Cors::new()
                .allow_origins(self.state.config.cors_origins.clone())
                .allow_methods([Method::GET, Method::POST, Method::PUT])
                .allow_headers(["content-type", "authorization", "last-event-id"])
                .expose_headers(["x-trace-id", "x-activation-id"]);
            endpoint = endpoint.with(cors).boxed();
        }
        endpoint
            .around(move |endpoint, req| observe::observe(endpoint, req, metrics.clone()))
            .boxed()
    }

    /// Serves HTTP on `acceptor` until `shutdown` completes, then stops relay and
    /// discovery. Open event streams are closed at shutdown.
    pub async fn serve(
        self,
        acceptor: TcpAcceptor,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let routes = self.routes();
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(routes, shutdown, Some(Duration::from_secs(5)))
            .await;
        self.stop.cancel();
        result
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
