//! What one node does with one activation.

use std::time::{Duration, Instant};

use async_nats::Client;
use futures::future::join_all;
use schemas::{
    code, subject, ActivationId, ActivationReply, ActivationRequest, NodeState, Outcome,
    StatusEvent,
};

use mesh_core::call::{self, millis};

use crate::{fate::Fate, NodeSpec};

/// Share of the remaining budget a node keeps for itself when it calls its children, so
/// that a child times out (and says so in its own reply) just before its parent gives up
/// on it. Capped by [`MAX_HOP_MARGIN`].
const HOP_MARGIN_DIVISOR: u32 = 20;
/// Largest budget a node keeps back per hop.
const MAX_HOP_MARGIN: Duration = Duration::from_millis(25);

/// One node: its settings, its replica id and its connection.
#[derive(Debug)]
pub struct Node {
    spec: NodeSpec,
    client: Client,
    instance: String,
    status_subject: String,
    fate: Fate,
}

impl Node {
    /// A node serving `spec` as replica `instance`; `seed` makes its failures reproducible.
    pub fn new(spec: NodeSpec, client: Client, instance: String, seed: Option<u64>) -> Self {
        let fate = Fate::new(spec.fail_rate, seed, spec.name.as_str());
        Self {
            status_subject: subject::status(&spec.name),
            spec,
            client,
            instance,
            fate,
        }
    }

    /// The node's settings.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// This replica's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs one activation received at `started`: publishes `running`, calls every child
    /// concurrently while doing its own work, publishes the final status and returns
    /// the reply tree.
    pub async fn activate(&self, request: ActivationRequest, started: Instant) -> ActivationReply {
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
        self.publish(&running).await;

        let mut path = request.path;
        path.push(name.clone());
        let children = join_all(self.spec.downstream.iter().map(|child| {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let child_budget = remaining - (remaining / HOP_MARGIN_DIVISOR).min(MAX_HOP_MARGIN);
            let child_request = ActivationRequest {
                activation_id: Some(activation_id.clone()),
                color: request.color.clone(),
                timeout_ms: Some(millis(child_budget)).filter(|ms| *ms > 0),
                path: path.clone(),
            };
            // A budget under one millisecond cannot be expressed: the call times out at once.
            let wait = if child_request.timeout_ms.is_some() {
                remaining
            } else {
                Duration::ZERO
            };
            async move { call::activate(&self.client, child, &child_request, wait).await }
        }));
        let work = async {
            if self.spec.work_ms > 0 {
                let sleep = tokio::time::sleep(Duration::from_millis(self.spec.work_ms));
                tokio::time::timeout_at(deadline.into(), sleep).await.ok()?;
            }
            Some(self.fate.draw())
        };
        let (children, own) = futures::join!(children, work);

        let failed_children: Vec<String> = children
            .iter()
            .filter(|c| !c.outcome.is_ok())
            .map(|c| format!("{} ({} {})", c.node, c.outcome, c.code))
            .collect();
        let (outcome, code, message) = match own {
            None => (
                Outcome::Timeout,
                code::TIMEOUT,
                format!(
                    "own work of {} ms did not fit in the {} ms budget",
                    self.spec.work_ms,
                    millis(budget)
                ),
            ),
            Some(Some(code)) => (Outcome::Failed, code, format!("simulated failure ({code})")),
            Some(None) if !failed_children.is_empty() => (
                Outcome::Failed,
                code::BAD_GATEWAY,
                format!("downstream did not succeed: {}", failed_children.join(", ")),
            ),
            Some(None) => (Outcome::Ok, code::OK, "ok".to_string()),
        };

        let mut done = reply(outcome, code, message);
        done.children = children;
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
        self.publish(&event).await;
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

    async fn publish(&self, event: &StatusEvent) {
        let Ok(body) = serde_json::to_vec(event) else {
            return;
        };
        if let Err(e) = self
            .client
            .publish(self.status_subject.clone(), body.into())
            .await
        {
            tracing::warn!(node = %self.spec.name, cause = %e, "cannot publish status");
        }
    }
}
