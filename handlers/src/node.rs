//! What one node does with one activation.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::Client;
use futures::future::join_all;
use mesh_core::{
    call::{self, millis},
    span_attrs::{self, Messaging},
};
use schemas::{
    code, config::NodeConfig, subject, ActivationId, ActivationReply, ActivationRequest, NodeState,
    Outcome, StatusEvent,
};
use serde_json::Value;
use tracing::Instrument;

use crate::{
    exec::Exec,
    fate::Fate,
    function::{Call, Function, FunctionError},
    http::HttpEndpoint,
    topology::Work,
    NodeSpec,
};

/// Share of the remaining budget a node keeps for itself when it calls its children, so
/// that a child times out (and says so in its own reply) just before its parent gives up
/// on it. Capped by [`MAX_HOP_MARGIN`].
const HOP_MARGIN_DIVISOR: u32 = 20;
/// Largest budget a node keeps back per hop.
const MAX_HOP_MARGIN: Duration = Duration::from_millis(25);

/// The own work of a running node.
enum Doing {
    /// Sleep, then a dice roll, concurrently with the children.
    Simulated { work_ms: u64, fate: Box<Fate> },
    /// A function, after the children.
    Function(Arc<dyn Function>),
}

/// How the own work ended: `None` when the budget ran out first.
type Own = Option<Result<Option<Value>, FunctionError>>;

/// How long an acknowledged status event is retried before it is given up.
const STATUS_RETRY_FOR: Duration = Duration::from_secs(15);
/// Pause between two attempts of an acknowledged status event.
const STATUS_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Acknowledged status publishing (see `Settings::status_ack`).
struct Acked {
    jetstream: async_nats::jetstream::Context,
    tasks: tokio_util::task::TaskTracker,
}

/// One node: its settings, its replica id and its connection.
pub struct Node {
    spec: NodeSpec,
    client: Client,
    instance: String,
    status_subject: String,
    doing: Doing,
    acked: Option<Acked>,
    /// Settings changed while running (`schemas::config`), over the file's.
    live: std::sync::RwLock<NodeConfig>,
}

impl Node {
    /// A node serving `spec` as replica `instance`; `seed` makes simulated failures
    /// reproducible. Fails when a function cannot be set up (an unusable URL).
    pub fn new(
        spec: NodeSpec,
        client: Client,
        instance: String,
        seed: Option<u64>,
    ) -> Result<Self, crate::http::EndpointError> {
        let doing = match &spec.work {
            Work::Simulated { work_ms, fail_rate } => Doing::Simulated {
                work_ms: *work_ms,
                fate: Box::new(Fate::new(*fail_rate, seed, spec.name.as_str())),
            },
            Work::Exec(e) => Doing::Function(Arc::new(Exec::new(e.clone()))),
            Work::Http(h) => Doing::Function(Arc::new(HttpEndpoint::new(h)?)),
            Work::Rust(f) => Doing::Function(f.clone()),
        };
        Ok(Self {
            status_subject: subject::status(&spec.name),
            spec,
            client,
            instance,
            doing,
            acked: None,
            live: Default::default(),
        })
    }

    /// Takes live settings (they apply to simulated work; functions ignore them).
    pub fn set_live(&self, config: NodeConfig) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The live settings now.
    pub fn live(&self) -> NodeConfig {
        *self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The same node, publishing its status events with JetStream acknowledgements
    /// (retried in tasks tracked by `tasks`, so shutdown waits for them).
    pub fn with_status_ack(mut self, tasks: tokio_util::task::TaskTracker) -> Self {
        let mut jetstream = async_nats::jetstream::new(self.client.clone());
        // Long enough for a new stream leader to commit, so that retries (which the
        // stream may store twice while it is electing) stay rare.
        jetstream.set_timeout(Duration::from_secs(3));
        self.acked = Some(Acked { jetstream, tasks });
        self
    }

    /// The node's settings.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// This replica's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether its own work is a function (which receives the trace context).
    pub fn runs_function(&self) -> bool {
        matches!(self.doing, Doing::Function(_))
    }

    /// The node's connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Largest message the server takes, in bytes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Runs one activation received at `started`: publishes `running`, calls every child
    /// concurrently (a simulated node does its own work meanwhile, a function node runs
    /// its function once they answered), publishes the final status and returns the
    /// reply tree.
    pub async fn activate(
        &self,
        request: ActivationRequest,
        started: Instant,
        traceparent: Option<String>,
    ) -> ActivationReply {
        let name = &self.spec.name;
        let activation_id = request
            .activation_id
            .clone()
            .unwrap_or_else(ActivationId::generate);
        let budget = Duration::from_millis(request.timeout_ms.unwrap_or(self.spec.timeout_ms));
        let deadline = started + budget;
        let reply = |outcome: Outcome, code: u16, message: String| {
            ActivationReply::new(name.clone(), activation_id.clone(), outcome, message)
                .with_code(code)
                .answered_by(self.instance.clone())
                .elapsed(started.elapsed())
        };

        if request.path.contains(name) {
            let path: Vec<_> = request.path.iter().map(|n| n.as_str()).collect();
            tracing::warn!(node = %name, activation = %activation_id, "loop refused");
            return reply(
                Outcome::Loop,
                code::LOOP,
                format!("loop: {name} is already on the path {}", path.join(" -> ")),
            );
        }

        let mut running = self.event(NodeState::Running, &activation_id);
        running.color = request.color.clone();
        let running = self.publish(&running, None).await;

        let mut path = request.path.clone();
        path.push(name.clone());
        let children = join_all(self.spec.downstream.iter().map(|child| {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let child_budget = remaining - (remaining / HOP_MARGIN_DIVISOR).min(MAX_HOP_MARGIN);
            let child_request = ActivationRequest {
                activation_id: Some(activation_id.clone()),
                color: request.color.clone(),
                timeout_ms: Some(millis(child_budget)).filter(|ms| *ms > 0),
                path: path.clone(),
                input: request.input.clone(),
            };
            // A budget under one millisecond cannot be expressed: the call times out at once.
            let wait = if child_request.timeout_ms.is_some() {
                remaining
            } else {
                Duration::ZERO
            };
            async move { call::activate(&self.client, child, &child_request, wait).await }
        }));
        let (children, own): (Vec<ActivationReply>, Own) = match &self.doing {
            Doing::Simulated { work_ms, fate } => {
                let live = self.live();
                let work_ms = live.work_ms.unwrap_or(*work_ms);
                let work = async {
                    if work_ms > 0 {
                        let sleep = tokio::time::sleep(Duration::from_millis(work_ms));
                        tokio::time::timeout_at(deadline.into(), sleep).await.ok()?;
                    }
                    Some(match fate.draw_with(live.fail_rate) {
                        None => Ok(None),
                        Some(code) => Err(FunctionError {
                            code,
                            message: format!("simulated failure ({code})"),
                        }),
                    })
                };
                futures::join!(children, work)
            }
            Doing::Function(function) => {
                let children = children.await;
                let call = Call {
                    node: name.clone(),
                    activation_id: activation_id.clone(),
                    input: request.input.clone().unwrap_or(Value::Null),
                    children: children.clone(),
                    deadline: deadline.into(),
                    traceparent,
                };
                // Dropped at the deadline: an exec function's process group dies with it.
                let own = tokio::time::timeout_at(deadline.into(), function.call(call))
                    .await
                    .ok()
                    .map(|r| r.map(Some));
                (children, own)
            }
        };

        let failed_children: Vec<String> = children
            .iter()
            .filter(|c| !c.outcome.is_ok())
            .map(|c| format!("{} ({} {})", c.node, c.outcome, c.code))
            .collect();
        let (outcome, code, message, result) = match own {
            None => (
                Outcome::Timeout,
                code::TIMEOUT,
                match &self.doing {
                    Doing::Simulated { work_ms, .. } => format!(
                        "own work of {work_ms} ms did not fit in the {} ms budget",
                        millis(budget)
                    ),
                    Doing::Function(f) => format!(
                        "the {} function did not finish within the {} ms budget",
                        f.kind(),
                        millis(budget)
                    ),
                },
                None,
            ),
            Some(Err(e)) if e.code == code::TIMEOUT => (Outcome::Timeout, e.code, e.message, None),
            Some(Err(e)) => (Outcome::Failed, e.code, e.message, None),
            Some(Ok(result)) if !failed_children.is_empty() => (
                Outcome::Failed,
                code::BAD_GATEWAY,
                format!("downstream did not succeed: {}", failed_children.join(", ")),
                result,
            ),
            Some(Ok(result)) => (Outcome::Ok, code::OK, "ok".to_string(), result),
        };

        let result_bytes = result
            .as_ref()
            .and_then(|r| serde_json::to_vec(r).ok())
            .map(|b| b.len() as u64);
        let mut done = reply(outcome, code, message);
        done.children = children;
        done.result = result;
        let mut event = self.event(
            if outcome.is_ok() {
                NodeState::Ok
            } else {
                NodeState::Failed
            },
            &activation_id,
        );
        event.code = Some(code);
        event.elapsed_ms = Some(done.elapsed_ms);
        event.result_bytes = result_bytes;
        self.publish(&event, running).await;
        tracing::debug!(node = %name, activation = %activation_id, %outcome, code, elapsed_ms = done.elapsed_ms, "activation done");
        done
    }

    fn event(&self, state: NodeState, activation_id: &ActivationId) -> StatusEvent {
        let mut event = StatusEvent::new(self.spec.name.clone(), state);
        event.activation_id = Some(activation_id.clone());
        event.instance = Some(self.instance.clone());
        event.trace_id = mesh_core::trace_context::trace_id(&tracing::Span::current());
        event
    }

    /// Publishes `event`. With acknowledgements on, the publish runs in a task (the
    /// activation does not wait for the stream) after `before` (the same activation's
    /// previous event, so the stream keeps their order); its handle is returned.
    async fn publish(
        &self,
        event: &StatusEvent,
        before: Option<tokio::task::JoinHandle<()>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let body: bytes::Bytes = serde_json::to_vec(event).ok()?.into();
        // A producer span per status event (when traced), whose context the event
        // carries in its headers as the activation's requests do.
        let span = tracing::debug_span!(
            "status",
            otel.name = %span_attrs::messaging_span_name(Messaging::Send, &self.status_subject),
            otel.kind = "producer",
            node = %self.spec.name,
            mesh.state = ?event.state,
        );
        span_attrs::messaging(&span, Messaging::Send, &self.status_subject, None);
        let headers = mesh_core::trace_context::headers_for(&span);
        let Some(acked) = &self.acked else {
            let sent =
                mesh_core::bus::publish(&self.client, self.status_subject.clone(), headers, body)
                    .await;
            if let Err(e) = sent {
                tracing::warn!(parent: &span, node = %self.spec.name, cause = %e, "cannot publish status");
            }
            return None;
        };
        let jetstream = acked.jetstream.clone();
        let subject = self.status_subject.clone();
        let node = self.spec.name.clone();
        Some(
            acked.tasks.spawn(
                async move {
                    if let Some(before) = before {
                        let _ = before.await;
                    }
                    publish_acked(&jetstream, subject, body, headers, &node).await;
                }
                .instrument(span),
            ),
        )
    }
}

/// Publishes `body` until the stream acknowledges it, for at most [`STATUS_RETRY_FOR`].
/// Every attempt carries the same `Nats-Msg-Id`: the stream stores it once.
async fn publish_acked(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    body: bytes::Bytes,
    headers: Option<async_nats::HeaderMap>,
    node: &schemas::NodeName,
) {
    use async_nats::jetstream::context::Publish;
    let id = nuid::next().to_string();
    let give_up = Instant::now() + STATUS_RETRY_FOR;
    loop {
        let mut publish = Publish::build().payload(body.clone());
        if let Some(headers) = &headers {
            publish = publish.headers(headers.clone());
        }
        let publish = publish.message_id(&id);
        let attempt = match jetstream.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(()) => return,
            Err(e) if Instant::now() >= give_up => {
                tracing::warn!(node = %node, cause = %e, "status event not stored: given up");
                return;
            }
            // No stream right now (a leader election), or no answer in time: again.
            Err(e) => tracing::debug!(node = %node, cause = %e, "status event not stored yet"),
        }
        tokio::time::sleep(STATUS_RETRY_PAUSE).await;
    }
}
