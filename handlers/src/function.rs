//! Functions behind nodes: the user's own work, run by a node after its children
//! answered (scatter, then gather).
//!
//! A [`Function`] gets a [`Call`]: the activation's input and the reply trees of the
//! node's children. It returns a JSON result, which becomes the node's `result`, or a
//! [`FunctionError`], which becomes a failed reply with the error's code. The runtime
//! bounds every call by the activation's budget (a call still running at the deadline
//! is dropped and the node answers `timeout`/504), publishes the node's status events,
//! and limits the calls in flight.
//!
//! Three kinds ship with the runtime: a program ([`crate::exec`]), an HTTP endpoint
//! ([`crate::http`]) and Rust code ([`function`], from an `async fn` or closure).
//!
//! ```no_run
//! use handlers::{function, FunctionError, NodeSpec};
//! # fn example(name: schemas::NodeName) {
//! // A node whose work is to upper-case `input.text`.
//! let upper = function(|call: handlers::Call| async move {
//!     let text = call.input["text"].as_str().ok_or_else(|| {
//!         FunctionError::failed("input.text must be a string")
//!     })?;
//!     Ok(serde_json::json!({ "text": text.to_uppercase() }))
//! });
//! let spec = NodeSpec::function(name, upper);
//! # }
//! ```

use std::{fmt, future::Future, sync::Arc};

use futures::future::BoxFuture;
use schemas::{code, ActivationId, ActivationReply, NodeName};
use serde_json::Value;
use tokio::time::Instant;

/// One call of a function: everything it may use.
#[derive(Clone, Debug)]
pub struct Call {
    /// The node whose function this is.
    pub node: NodeName,
    /// The activation.
    pub activation_id: ActivationId,
    /// The activation's input (`Value::Null` when it has none).
    pub input: Value,
    /// The replies of the node's children, in configured order; a child that did not
    /// succeed is here too, with its outcome and message.
    pub children: Vec<ActivationReply>,
    /// When the activation's budget runs out. The runtime stops waiting then; a
    /// function may use it to bound its own work.
    pub deadline: Instant,
    /// The W3C `traceparent` of the node's hop of the trace (absent only with
    /// `OTEL_PROPAGATORS=none`).
    pub traceparent: Option<String>,
}

impl Call {
    /// The JSON document programs and HTTP endpoints receive (see
    /// `schemas/json/function-input.schema.json`).
    pub fn document(&self) -> schemas::FunctionInput {
        schemas::FunctionInput {
            node: self.node.clone(),
            activation_id: self.activation_id.clone(),
            input: self.input.clone(),
            children: self.children.clone(),
            budget_ms: self.budget_ms(),
        }
    }

    /// Whole milliseconds left of the budget.
    pub fn budget_ms(&self) -> u64 {
        let left = self.deadline.saturating_duration_since(Instant::now());
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A function did not produce a result: the node's reply is `failed` with this code and
/// message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct FunctionError {
    /// The reply's code: 500 when the function failed, 502 when it answered with
    /// something unusable, or the status of an HTTP endpoint.
    pub code: u16,
    /// What happened, for the reply's `message`.
    pub message: String,
}

impl FunctionError {
    /// The function failed (500).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: code::FAILED,
            message: message.into(),
        }
    }

    /// The function answered with something that is not a usable result (502).
    pub fn bad_output(message: impl Into<String>) -> Self {
        Self {
            code: code::BAD_GATEWAY,
            message: message.into(),
        }
    }
}

/// The user's work behind a node.
pub trait Function: Send + Sync + 'static {
    /// What does the work, as discovery shows it: `exec`, `http` or `rust`.
    fn kind(&self) -> &'static str {
        "rust"
    }

    /// Runs once per activation, after the children answered.
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, FunctionError>>;
}

/// A [`Function`] from an `async fn` or closure taking a [`Call`].
pub fn function<F, Fut>(f: F) -> Arc<dyn Function>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, FunctionError>> + Send + 'static,
{
    Arc::new(FnFunction(f))
}

struct FnFunction<F>(F);

impl<F, Fut> Function for FnFunction<F>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, FunctionError>> + Send + 'static,
{
    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, FunctionError>> {
        Box::pin((self.0)(call))
    }
}

impl fmt::Debug for dyn Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function({})", self.kind())
    }
}
