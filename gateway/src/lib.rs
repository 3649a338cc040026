//! The nats-mesh HTTP gateway.
//!
//! - [`settings`]: what the gateway is configured with (the binary builds it from its
//!   command line).
//! - [`sse`]: status events from the bus to every client, by stage: ingest, the log,
//!   each client's cursor and session, the hub (see its module documentation).
//! - [`state`]: what every route shares (settings, connection, the event path's stages,
//!   stores).
//! - [`discovery`]: the nodes found through `$SRV.INFO`; [`graph`]: the graph they form;
//!   [`mermaid`]: the graph as Mermaid source.
//! - [`api`]: the OpenAPI operations, one module per group.
//! - [`activations`]: finished activations kept for the inspector ([`finished`]: one
//!   as it is handed over to be kept); `record_writer`: their records sent to the
//!   stream in bursts.
//! - [`jobs`]: asynchronous activations: their queue, records, retries and dispatcher.
//! - [`triggers`]: activations started by messages on a subject or by a schedule.
//! - [`deployments`]: WebAssembly functions deployed through `/functions`: the bus's
//!   function store and the check a module passes before it is stored.
//! - [`routes`]: the route table derived from the OpenAPI document (router prefixes,
//!   metric labels, `Allow`).
//! - [`listener`]: connection limit, request head deadline, accept back-off.
//! - [`direct`]: connections whose first request is `GET /events`, served without hyper.
//! - [`page`]: the live page and its assets, compiled in.
//! - [`metrics`]: Prometheus metrics; every request also gets a span and an
//!   `X-Trace-Id` response header.
//!
//! [`Gateway::start`] wires them on a NATS connection; [`Gateway::serve`] serves HTTP
//! until a shutdown future completes, then ends every event stream and background task.

pub mod activations;
pub mod api;
mod auth;
pub mod deployments;
pub mod direct;
pub mod discovery;
pub mod finished;
pub mod graph;
pub mod jobs;
mod limit;
pub mod listener;
pub mod mermaid;
pub mod metrics;
mod observe;
pub mod page;
mod record_writer;
pub mod routes;
pub mod settings;
pub mod sse;
pub mod state;
mod streams;
mod sync;
pub mod timeline;
pub mod triggers;

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::Client;
use poem::{
    get, http::Method, listener::TcpAcceptor, Endpoint, EndpointExt, IntoEndpoint, Route, Server,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use settings::Settings;
use sse::{
    history::History,
    ingest::{self, Ingest, Observer},
    log::{self, Log},
    states::Latest,
};
pub use state::State;

/// Longest a stopping gateway waits for NATS to take what it still has to send.
const NATS_FLUSH: Duration = Duration::from_secs(2);
/// How long open HTTP connections may take to finish once the event streams have ended.
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// Whether the request's `Origin` is the gateway's own (the origin of its `Host`).
fn is_same_origin(req: &poem::Request) -> bool {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    match (
        header(poem::http::header::ORIGIN),
        header(poem::http::header::HOST),
    ) {
        (Some(origin), Some(host)) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// A gateway wired to NATS: relay and discovery running, routes ready.
pub struct Gateway {
    state: Arc<State>,
    tasks: TaskTracker,
}

impl Gateway {
    /// Starts the relay and discovery on `client`. Returns once the `status.>`
    /// subscription is registered with the server (when NATS is reachable).
    pub async fn start(settings: Settings, client: Client) -> anyhow::Result<Self> {
        let gateway_id = settings
            .gateway_id
            .clone()
            // A NUID's last ten characters are its per-process random sequence, so ids of
            // gateways in one process or in many differ.
            .unwrap_or_else(|| {
                let id = nuid::next().to_string();
                format!("gw-{}", &id[id.len() - 10..])
            });
        let metrics = Arc::new(metrics::Metrics::default());
        let log = Log::new(
            log::Limits {
                history: settings.sse.history,
                history_bytes: settings.sse.history_bytes,
                buffer: settings.sse.buffer,
            },
            metrics.clone(),
        );
        let latest = Arc::new(Latest::new(sse::states::UNKNOWN_NODES));
        let watches = Arc::new(activations::Watches::default());
        let observers: Vec<Arc<dyn Observer>> =
            vec![metrics.clone(), latest.clone(), watches.clone()];
        let ingest = Ingest::new(
            gateway_id,
            settings.sse.max_event_bytes,
            log.clone(),
            observers,
            metrics.clone(),
        );
        let view = Arc::new(graph::GraphView::new(settings.entry_node.clone()));
        let stop = CancellationToken::new();
        // Both streams at once: while a cluster elects its leaders, each may be asked
        // for again for a while (see `streams::open`), and neither waits for the other.
        let (history, kept) = tokio::join!(
            History::open(
                &client,
                settings.stream.as_ref(),
                settings.sse.max_event_bytes,
                settings.sse.replay,
            ),
            activations::Kept::open(
                &client,
                settings.activations.as_ref(),
                metrics.records_refused.clone(),
            ),
        );
        if let Some(h) = &history {
            log.start_after(h.last_sequence().await);
        }
        let history = history.map(Arc::new);
        let source = match &history {
            Some(h) => ingest::Source::Stream(h.clone()),
            None => ingest::Source::Live(ingest::subscribe(&client).await?),
        };
        if let Err(e) = mesh_core::bus::sync(&client).await {
            // Not connected yet: the client subscribes when it connects.
            tracing::warn!(cause = %e, "NATS has not confirmed the status subscription yet");
        }
        let config_store = mesh_core::live_config::open(&client).await;
        let deployments = crate::deployments::Deployments::new(
            client.clone(),
            settings.stream.as_ref().map_or(1, |s| s.replicas),
            settings.max_module_bytes,
        )
        .map_err(|e| anyhow::anyhow!("cannot start the WebAssembly engine: {e}"))?;
        let kept = Arc::new(kept);
        let jobs = match settings.asynchronous.clone() {
            Some(a) => match jobs::Jobs::open(&client, a).await {
                Ok(jobs) => Some(Arc::new(jobs)),
                Err(e) => {
                    tracing::info!(cause = %e, "no queue for asynchronous activations: they are refused with 503");
                    None
                }
            },
            None => None,
        };
        let trigger_store = match &jobs {
            Some(_) => match mesh_core::triggers::open(
                &client,
                settings.stream.as_ref().map_or(1, |s| s.replicas),
            )
            .await
            {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::info!(cause = %e, "no bucket of triggers: none run");
                    None
                }
            },
            None => None,
        };
        let discovery = settings.discovery.clone();
        let state = Arc::new(State {
            settings,
            client: client.clone(),
            ingest: ingest.clone(),
            latest: latest.clone(),
            watches,
            view: view.clone(),
            metrics,
            history,
            kept,
            config_store: config_store.clone(),
            deployments,
            jobs: jobs.clone(),
            trigger_store: trigger_store.clone(),
            triggers: Default::default(),
            stop: stop.clone(),
        });

        let tasks = TaskTracker::new();
        tasks.spawn({
            let view = view.clone();
            let ingest = ingest.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {},
                    _ = ingest::run(source, ingest, move |n| view.serving(n)) => {},
                }
            }
        });
        tasks.spawn(ingest::watch_bus(
            client.clone(),
            log.clone(),
            ingest.gateway_id().to_string(),
            stop.clone(),
        ));
        tasks.spawn({
            let view = view.clone();
            mesh_core::live_config::follow(
                client.clone(),
                config_store,
                stop.clone(),
                move |node, config| view.set_live(node, config),
            )
        });
        if let Some(jobs) = jobs {
            let dispatch = Arc::new(jobs::Dispatch {
                jobs,
                client: client.clone(),
                gateway: state.gateway_id().to_string(),
                kept: state.kept.clone(),
                watches: state.watches.clone(),
                metrics: state.metrics.clone(),
                http: reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
                running: Default::default(),
            });
            tasks.spawn(jobs::dispatch(dispatch.clone(), stop.clone()));
            if let Some(store) = trigger_store {
                tasks.spawn(triggers::run(
                    dispatch.clone(),
                    store,
                    state.triggers.clone(),
                    state.settings.activate_timeout,
                    stop.clone(),
                ));
            }
            tasks.spawn(jobs::serve_submissions(
                dispatch,
                state.settings.entry_node.clone(),
                state.settings.activate_timeout,
                stop.clone(),
            ));
        }
        tasks.spawn(discovery::run(
            client, view, ingest, latest, discovery, stop,
        ));
        tasks.close();
        Ok(Self { state, tasks })
    }

    /// Shared state (for tests and tools).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Every route: the API, its documents, and the page, with the body limit and CORS,
    /// and a span and metrics per request.
    pub fn routes(&self) -> poem::endpoint::BoxEndpoint<'static> {
        let api = api::service(self.state.clone());
        let spec = api::document(&api);
        let table = Arc::new(routes::RouteTable::from_document(&spec));
        let docs = api.swagger_ui();
        let max_body = self.state.settings.max_body_bytes;
        let max_module = self.state.settings.max_module_bytes;
        let metrics = self.state.metrics.clone();
        // The API's operations live at the root beside the page: each of its top-level
        // paths is routed to it (the router cannot nest at "/" and also serve "/").
        let api = Arc::new(api.into_endpoint());
        let mut router = Route::new()
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
            .nest(
                "/docs",
                docs.with(
                    poem::middleware::SetHeader::new()
                        .overriding("Content-Security-Policy", page::DOCS_CSP)
                        .overriding("X-Frame-Options", "DENY"),
                ),
            );
        for prefix in table.api_prefixes() {
            router = router.nest_no_strip(prefix, api.clone());
        }
        let mut endpoint = router
            .around(move |endpoint, req| {
                // A module is larger than any other body: its own limit.
                let max =
                    if req.method() == Method::PUT && req.uri().path().starts_with("/functions/") {
                        max_module
                    } else {
                        max_body
                    };
                limit::limit_body(endpoint, req, max)
            })
            .boxed();
        if !self.state.settings.cors_origins.is_empty() {
            let cors = poem::middleware::Cors::new()
                .allow_origins(self.state.settings.cors_origins.clone())
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers(["content-type", "authorization", "last-event-id"])
                .expose_headers(["x-trace-id", "x-activation-id"]);
            // Browsers send `Origin` on the page's own POST and PUT too: a request from
            // the gateway's own origin is not cross-origin, whatever the allow-list says.
            // The answer depends on the request's `Origin`, refusals included: caches
            // must keep one per origin (`Vary: Origin`).
            endpoint = endpoint
                .with(cors)
                .around(|endpoint, mut req| async move {
                    if is_same_origin(&req) {
                        req.headers_mut().remove(poem::http::header::ORIGIN);
                    }
                    let mut response = match endpoint.call(req).await {
                        Ok(response) => response,
                        Err(refused) => refused.into_response(),
                    };
                    response.headers_mut().append(
                        poem::http::header::VARY,
                        poem::http::HeaderValue::from_static("Origin"),
                    );
                    Ok(response)
                })
                .boxed();
        }
        endpoint
            .around(move |endpoint, req| {
                observe::observe(endpoint, req, metrics.clone(), table.clone())
            })
            .boxed()
    }

    /// Serves HTTP on `acceptor` until `shutdown` completes; then ends every event
    /// stream (so connections close at once), stops relay and discovery, and gives other
    /// requests a few seconds to finish.
    pub async fn serve(
        self,
        acceptor: TcpAcceptor,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let routes = Arc::new(self.routes());
        let stop = self.state.stop.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: ending event streams");
            stop.cancel();
        };
        let http = &self.state.settings.http;
        // Event streams are never idle that long: they write a keep-alive comment when
        // a whole keep-alive interval passed without an event.
        let idle = http.idle_timeout.max(self.state.settings.sse.keepalive * 3);
        let acceptor =
            listener::Limited::new(acceptor, http.max_connections, http.header_timeout, idle);
        let sse = &self.state.settings.sse;
        let hub = sse::hub::Hub::start(
            self.state.ingest.log().clone(),
            // A shard per runtime thread: more would only take turns on the same ones.
            tokio::runtime::Handle::current().metrics().num_workers(),
            sse.keepalive,
            self.state.stop.clone(),
        );
        let streams = direct::Streams {
            endpoint: routes.clone(),
            hub,
            idle,
        };
        let acceptor = direct::EventsFirst::new(acceptor, streams);
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(routes, signal, Some(HTTP_GRACE))
            .await;
        self.state.stop.cancel();
        self.tasks.wait().await;
        // The records of the last activations (asynchronous ones finished by the tasks
        // above among them) leave before the connection closes.
        self.state.kept.flush().await;
        let _ = tokio::time::timeout(NATS_FLUSH, self.state.client.flush()).await;
        result
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}
