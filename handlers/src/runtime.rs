//! Serving a set of nodes on one connection until shutdown.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::{
    service::{self, ServiceExt},
    Client,
};
use futures::StreamExt;
use mesh_core::{
    span_attrs::{self, Messaging},
    trace_context::TraceContext,
};
use schemas::{code, service::NodeMeta, subject, ActivationRequest, NodeName};
use tokio::{sync::Semaphore, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{node::Node, topology::Work, NodeSpec, VERSION};

/// Runtime settings shared by every node of a process (its defaults are the `handlers`
/// command line's: a test there holds them together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Activations one node handles at once; more are refused with 503.
    pub max_in_flight: usize,
    /// Makes the random outcomes reproducible.
    pub seed: Option<u64>,
    /// How long shutdown waits for in-flight activations.
    pub grace: Duration,
    /// Publish status events with a JetStream acknowledgement, retried (deduplicated by
    /// `Nats-Msg-Id`) until the stream keeping them has stored them: no event is lost
    /// while a clustered stream elects a new leader. Off: plain publishes.
    pub status_ack: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            seed: None,
            grace: Duration::from_secs(10),
            status_ack: false,
        }
    }
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot register node {node} with the NATS Services API: {cause}")]
pub struct StartError {
    /// The node.
    pub node: NodeName,
    /// Why.
    pub cause: String,
}

/// Nodes being served. Dropping it stops taking requests; [`Running::shutdown`] also
/// waits for the activations in flight.
pub struct Running {
    token: CancellationToken,
    tracker: TaskTracker,
    services: Vec<service::Service>,
    accept: Vec<JoinHandle<()>>,
    instances: HashMap<NodeName, String>,
    client: Client,
}

impl Running {
    /// Registers every node with the Services API and starts serving. Returns once the
    /// server has every subscription (see [`mesh_core::bus::sync`]; at most 10 s when NATS is
    /// unreachable), so a request sent afterwards from any connection is answered.
    pub async fn start(
        client: Client,
        nodes: Vec<NodeSpec>,
        settings: Settings,
    ) -> Result<Self, StartError> {
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Live settings are read before a node serves, so a replica that starts (or
        // restarts) after a change serves with it from its first activation.
        let store = crate::live::open(&client).await;
        let mut live_nodes: HashMap<NodeName, Vec<Arc<Node>>> = HashMap::new();
        let mut running = Self {
            token: token.clone(),
            tracker: tracker.clone(),
            services: Vec::new(),
            accept: Vec::new(),
            instances: HashMap::new(),
            client: client.clone(),
        };
        for spec in nodes {
            let name = spec.name.clone();
            let live = match &store {
                Some(store) => Some(crate::live::stored(store, &name).await),
                None => None,
            };
            let served = serve_node(
                &client,
                spec,
                &settings,
                Registration {
                    max_in_flight: settings.max_in_flight,
                    live,
                    ..Default::default()
                },
                &tracker,
                &token,
            )
            .await?;
            running.instances.insert(name.clone(), served.instance);
            live_nodes.entry(name).or_default().push(served.node);
            running.accept.push(served.accept);
            running.services.push(served.service);
        }
        tracker.spawn(crate::live::follow(
            client.clone(),
            store,
            live_nodes,
            token.clone(),
        ));
        if let Err(e) = mesh_core::bus::sync(&client).await {
            // Not connected yet: the client registers the subscriptions when it connects.
            tracing::warn!(cause = %e, "NATS has not confirmed the subscriptions yet");
        }
        Ok(running)
    }

    /// The replica id of each node served here.
    pub fn instances(&self) -> &HashMap<NodeName, String> {
        &self.instances
    }

    /// Stops taking requests, answers those already received, and waits (at most
    /// `grace`) for every activation in flight.
    pub async fn shutdown(mut self, grace: Duration) {
        self.token.cancel();
        for service in self.services.drain(..) {
            let _ = service.stop().await;
        }
        for handle in self.accept.drain(..) {
            let _ = handle.await;
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "activations still in flight at the end of the grace period"
            );
        }
        // Replies and status events are buffered by the client: send them before the
        // connection can go away.
        match tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(cause = %e, "flushing replies on shutdown"),
            Err(_) => tracing::warn!("NATS unreachable: replies still buffered at shutdown"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// How one node is registered, beyond its spec.
#[derive(Default)]
pub(crate) struct Registration {
    /// Activations it handles at once.
    pub max_in_flight: usize,
    /// Its live settings when it starts.
    pub live: Option<schemas::config::NodeConfig>,
    /// The service's description (default: `nats-mesh node <name>`).
    pub description: Option<String>,
    /// More service metadata.
    pub metadata: Vec<(String, String)>,
}

/// One node registered with the Services API and taking requests.
pub(crate) struct Served {
    pub service: service::Service,
    pub accept: JoinHandle<()>,
    pub instance: String,
    pub node: Arc<Node>,
}

/// Registers `spec` as a service and starts taking its requests (until `token`).
pub(crate) async fn serve_node(
    client: &Client,
    spec: NodeSpec,
    settings: &Settings,
    registration: Registration,
    tracker: &TaskTracker,
    token: &CancellationToken,
) -> Result<Served, StartError> {
    let name = spec.name.clone();
    let fail = |cause: String| StartError {
        node: name.clone(),
        cause,
    };
    let (work_ms, fail_rate) = match spec.work {
        Work::Simulated { work_ms, fail_rate } => (work_ms, fail_rate),
        _ => (0, 0.0),
    };
    let mut metadata = NodeMeta {
        downstream: spec.downstream.clone(),
        work_ms,
        fail_rate,
        function: spec.work.kind().to_string(),
    }
    .to_metadata();
    metadata.extend(registration.metadata);
    let service = client
        .service_builder()
        .description(
            registration
                .description
                .unwrap_or_else(|| format!("nats-mesh node {name}")),
        )
        .metadata(metadata)
        .queue_group(subject::QUEUE_GROUP)
        .start(name.as_str(), VERSION)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let endpoint = service
        .endpoint_builder()
        .name("activate")
        .add(subject::activate(&name))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let instance = service.info().await.id;
    let mut node = Node::new(spec, client.clone(), instance.clone(), settings.seed)
        .map_err(|e| fail(e.to_string()))?;
    if settings.status_ack {
        node = node.with_status_ack(tracker.clone());
    }
    if let Some(live) = registration.live {
        node.set_live(live);
    }
    let node = Arc::new(node);
    let limit = Arc::new(Semaphore::new(registration.max_in_flight));
    let accept = tokio::spawn(accept(
        endpoint,
        node.clone(),
        limit,
        registration.max_in_flight,
        tracker.clone(),
        token.clone(),
    ));
    Ok(Served {
        service,
        accept,
        instance,
        node,
    })
}

/// Serves `nodes` until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    client: Client,
    nodes: Vec<NodeSpec>,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let grace = settings.grace;
    let names: Vec<_> = nodes.iter().map(|n| n.name.to_string()).collect();
    let running = Running::start(client, nodes, settings).await?;
    tracing::info!(nodes = %names.join(","), "serving");
    shutdown.await;
    tracing::info!("shutting down: finishing activations in flight");
    running.shutdown(grace).await;
    Ok(())
}

/// Least time between two log lines about activations refused at the limit.
const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Activations refused at the in-flight limit, logged at most once per
/// [`REFUSALS_LOG_EVERY`] (a flood of refusals is not a flood of log lines).
#[derive(Default)]
struct Refusals {
    since_report: std::sync::atomic::AtomicU64,
    last_report: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Refusals {
    /// Counts one refusal; returns the refusals to report now, if it is time to.
    fn refused(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        self.since_report.fetch_add(1, Relaxed);
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < REFUSALS_LOG_EVERY) {
            return None;
        }
        *last = Some(std::time::Instant::now());
        Some(self.since_report.swap(0, Relaxed))
    }
}

async fn accept(
    mut endpoint: service::endpoint::Endpoint,
    node: Arc<Node>,
    limit: Arc<Semaphore>,
    max_in_flight: usize,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    let refusals = Arc::new(Refusals::default());
    let dispatch = |request: service::Request| {
        let node = node.clone();
        let refusals = refusals.clone();
        match limit.clone().try_acquire_owned() {
            // Boxed: the task then holds a pointer, not the whole activation's state,
            // which spawning and finishing the task would copy several times.
            Ok(permit) => tracker.spawn(async move {
                Box::pin(serve(&node, request)).await;
                drop(permit);
            }),
            Err(_) => tracker.spawn(async move {
                let text = format!(
                    "node {} is at its limit of {max_in_flight} activations in flight",
                    node.spec().name
                );
                if let Some(refused) = refusals.refused() {
                    tracing::warn!(node = %node.spec().name, refused, "{text}: refused {refused} since the last report");
                }
                respond(
                    &request,
                    Err(service::error::Error {
                        code: code::UNAVAILABLE.into(),
                        status: text,
                    }),
                )
                .await;
            }),
        };
    };
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            next = endpoint.next() => match next {
                Some(request) => dispatch(request),
                None => return,
            },
        }
    }
    // Unsubscribe, then answer what the server had already delivered.
    let _ = endpoint.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(request) = endpoint.next().await {
            dispatch(request);
        }
    })
    .await;
}

async fn serve(node: &Node, mut request: service::Request) {
    let started = Instant::now();
    let subject = subject::activate(&node.spec().name);
    // The span exists before the request is read: a malformed request that carries a
    // trace context is a (failed) span of that trace too.
    let span = tracing::debug_span!(
        "activate",
        otel.name = %span_attrs::messaging_span_name(Messaging::Process, &subject),
        otel.kind = "server",
        node = %node.spec().name,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    span_attrs::messaging(
        &span,
        Messaging::Process,
        &subject,
        Some(subject::QUEUE_GROUP),
    );
    mesh_core::trace_context::continue_in(&span, || {
        mesh_core::trace_context::extract(request.message.headers.as_ref())
    });
    match ActivationRequest::decode(&request.message.payload) {
        Ok(activation) => {
            // The hop's trace context (the exported span's, or the caller's one hop
            // further, or a new one) goes on to status events, children and functions.
            let trace = TraceContext::for_hop(&span, || {
                TraceContext::from_headers(request.message.headers.as_ref())
            });
            let activate = async {
                let traceparent = node
                    .runs_function()
                    .then(|| mesh_core::trace_context::traceparent_for(&span))
                    .flatten();
                node.activate(activation, started, traceparent)
                    .instrument(span.clone())
                    .await
            };
            let mut reply = match trace {
                Some(trace) => trace.scope(activate).await,
                None => activate.await,
            };
            let body = match encode_within(&mut reply, node.max_payload()) {
                Ok(body) => body,
                Err(e) => return tracing::error!(cause = %e, "cannot encode reply"),
            };
            span_attrs::activation(&span, &reply);
            if reply.outcome == schemas::Outcome::Ok {
                respond(&request, Ok(body.into())).await;
            } else {
                answer_failed(node, &mut request, &reply, body.into()).await;
            }
        }
        Err(e) => {
            tracing::debug!(node = %node.spec().name, cause = %e, "malformed request refused");
            span_attrs::refused(&span, code::BAD_REQUEST, &e.to_string());
            respond(
                &request,
                Err(service::error::Error {
                    code: code::BAD_REQUEST.into(),
                    status: header_text(&e.to_string()),
                }),
            )
            .await;
        }
    }
}

/// Where async-nats sends its own (empty) error answer for a failed activation, which
/// has already been answered with its tree: a subject nobody listens on.
const DISCARDED: &str = "_INBOX.mesh.discarded";

/// Answers a failed activation with its tree and the Services API error headers
/// (`Nats-Service-Error`, `Nats-Service-Error-Code`), and counts it among the endpoint's
/// errors so that `$SRV.STATS` (`nats micro stats`) shows it. async-nats counts an error
/// only when it sends the error answer itself, which has no body: the tree goes first,
/// and async-nats' answer is sent where nobody listens.
async fn answer_failed(
    node: &Node,
    request: &mut service::Request,
    reply: &schemas::ActivationReply,
    body: bytes::Bytes,
) {
    let Some(reply_to) = request.message.reply.clone() else {
        return;
    };
    let status = header_text(&reply.message);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(service::NATS_SERVICE_ERROR, status.as_str());
    headers.insert(
        service::NATS_SERVICE_ERROR_CODE,
        reply.code.to_string().as_str(),
    );
    if let Err(e) = node
        .client()
        .publish_with_headers(reply_to, headers, body)
        .await
    {
        return tracing::warn!(cause = %e, "cannot send reply");
    }
    request.message.reply = Some(DISCARDED.into());
    respond(
        request,
        Err(service::error::Error {
            code: reply.code.into(),
            status,
        }),
    )
    .await;
}

/// `text` fit for a header value: one line of printable characters, at most 256 bytes.
fn header_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 256 {
        let mut end = 256;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The reply as JSON, at most `max` bytes (the server's payload limit): a tree too large
/// for the bus (large function results) is answered as a failure saying so, without
/// results, so that the caller gets an answer rather than a timeout.
fn encode_within(
    reply: &mut schemas::ActivationReply,
    max: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(&reply)?;
    if body.len() <= max {
        return Ok(body);
    }
    reply.strip_results();
    reply.outcome = schemas::Outcome::Failed;
    reply.code = code::BAD_GATEWAY;
    reply.message = format!(
        "the reply tree is {} bytes, over the bus's limit of {max}: results left out",
        body.len()
    );
    serde_json::to_vec(&reply)
}

/// Answers `request` when it asked for an answer (`nats pub activate.X ''` does not).
async fn respond(
    request: &service::Request,
    response: Result<bytes::Bytes, service::error::Error>,
) {
    if request.message.reply.is_none() {
        return;
    }
    if let Err(e) = request.respond(response).await {
        tracing::warn!(cause = %e, "cannot send reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb\tc"), "a  b c");
        let long = "é".repeat(300);
        let cut = header_text(&long);
        assert!(
            cut.len() <= 256 && cut.chars().all(|c| c == 'é'),
            "{}",
            cut.len()
        );
    }

    #[test]
    fn refusals_are_reported_once_per_interval() {
        let r = Refusals::default();
        assert_eq!(r.refused(), Some(1));
        let reported: Vec<_> = (0..1000).filter_map(|_| r.refused()).collect();
        assert!(reported.is_empty(), "{reported:?}");
        assert_eq!(
            r.since_report.load(std::sync::atomic::Ordering::Relaxed),
            1000
        );
    }
}
