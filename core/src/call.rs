//! Activating a node over NATS. Every way a call can end becomes an [`ActivationReply`],
//! so callers (parent nodes and the gateway) never handle transport errors themselves.

use std::{
    borrow::Cow,
    time::{Duration, Instant},
};

use async_nats::{
    client::RequestErrorKind,
    service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE},
    Client, Message,
};
use bytes::Bytes;
use schemas::{
    code, reply_in_place::ReplyRoot, subject, ActivationId, ActivationReply, ActivationRequest,
    NodeName, Outcome,
};
use tracing::Instrument;

use crate::span_attrs::{self, Messaging};

/// Sends `request` to `node` and waits at most `wait` for its reply.
///
/// - a reply tree is returned as it came;
/// - a Services API error reply (malformed request, node at its limit) becomes
///   `rejected` with the error's code;
/// - no reply within `wait` becomes `timeout`/504;
/// - nobody serving `activate.<node>` becomes `unavailable`/503 at once.
pub async fn activate(
    client: &Client,
    node: &NodeName,
    request: &ActivationRequest,
    wait: Duration,
) -> ActivationReply {
    call(client, node, request, wait, |_| None, |reply| reply).await
}

/// A reply as [`activate_in_place`] answers it.
#[derive(Debug)]
pub enum Answer {
    /// The node's reply tree, its JSON as it came ([`ReplyRoot::read`] accepted it: it is
    /// the JSON of the tree it decodes to), and its root.
    Json(Bytes, ReplyRoot),
    /// Any other reply, as [`activate`] answers it: made here (no reply, an error reply)
    /// or decoded (a tree [`ReplyRoot::read`] leaves to decoding).
    Tree(ActivationReply),
}

/// As [`activate`], but a reply tree whose JSON can be passed on as it came is not
/// decoded: for a caller that only passes the tree on (the gateway).
pub async fn activate_in_place(
    client: &Client,
    node: &NodeName,
    request: &ActivationRequest,
    wait: Duration,
) -> Answer {
    let read = |message: &Message| {
        ReplyRoot::read(&message.payload).map(|root| Answer::Json(message.payload.clone(), root))
    };
    call(client, node, request, wait, read, Answer::Tree).await
}

/// A call in its span: the node's reply `read` in place when it can be, else decoded
/// (or made here) and given to `tree`.
async fn call<T: Replied>(
    client: &Client,
    node: &NodeName,
    request: &ActivationRequest,
    wait: Duration,
    read: impl FnOnce(&Message) -> Option<T>,
    tree: impl FnOnce(ActivationReply) -> T,
) -> T {
    let subject = subject::activate(node);
    let span = tracing::debug_span!(
        "call",
        otel.name = %span_attrs::messaging_span_name(Messaging::Send, &subject),
        otel.kind = "client",
        node = %node,
    );
    span_attrs::messaging(&span, Messaging::Send, &subject, None);
    if let Some(caller) = request.path.last() {
        span_attrs::caller(&span, caller.as_str());
    }
    let reply = send(client, node, subject, request, wait, &span, read, tree)
        .instrument(span.clone())
        .await;
    reply.describe(&span);
    reply
}

/// What a call answers: a reply that describes itself on the call's span.
trait Replied {
    fn describe(&self, span: &tracing::Span);
}

impl Replied for ActivationReply {
    fn describe(&self, span: &tracing::Span) {
        span_attrs::activation(span, self);
    }
}

impl Replied for Answer {
    fn describe(&self, span: &tracing::Span) {
        match self {
            Answer::Json(_, root) => span_attrs::activation_root(span, root),
            Answer::Tree(reply) => span_attrs::activation(span, reply),
        }
    }
}

/// Sends `request` on `subject` (`node`'s) within `span`; see [`call`].
#[allow(clippy::too_many_arguments)]
async fn send<T>(
    client: &Client,
    node: &NodeName,
    subject: String,
    request: &ActivationRequest,
    wait: Duration,
    span: &tracing::Span,
    read: impl FnOnce(&Message) -> Option<T>,
    tree: impl FnOnce(ActivationReply) -> T,
) -> T {
    let started = Instant::now();
    // The caller names the activation when the request does not, so that a reply made
    // here (no node answered) belongs to the same activation as the node's would.
    let (request, activation_id) = match &request.activation_id {
        Some(id) => (Cow::Borrowed(request), id.clone()),
        None => {
            let id = ActivationId::generate();
            let named = ActivationRequest {
                activation_id: Some(id.clone()),
                ..request.clone()
            };
            (Cow::Owned(named), id)
        }
    };
    let failed = |outcome: Outcome, message: String| {
        ActivationReply::new(node.clone(), activation_id.clone(), outcome, message)
            .elapsed(started.elapsed())
    };
    if wait.is_zero() {
        return tree(failed(
            Outcome::Timeout,
            format!("no budget left to activate {node}"),
        ));
    }
    let payload = match serde_json::to_vec(&*request) {
        Ok(p) => p,
        Err(e) => {
            return tree(failed(
                Outcome::Rejected,
                format!("cannot encode request: {e}"),
            ))
        }
    };
    let mut message = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(wait));
    if let Some(headers) = crate::trace_context::request_headers(span) {
        message = message.headers(headers);
    }
    let sent = client.send_request(subject, message).await;
    if let Some(read) = sent.as_ref().ok().and_then(read) {
        return read;
    }
    tree(match sent {
        Ok(message) => decode_reply(node, &message).unwrap_or_else(|(code, text)| {
            failed(Outcome::of_error_code(code), text).with_code(code)
        }),
        Err(e) => match e.kind() {
            RequestErrorKind::TimedOut => failed(
                Outcome::Timeout,
                format!("{node} did not answer within {} ms", millis(wait)),
            ),
            RequestErrorKind::NoResponders => failed(
                Outcome::Unavailable,
                format!(
                    "no instance of {node} is serving {}",
                    subject::activate(node)
                ),
            ),
            RequestErrorKind::Other => failed(
                Outcome::Unavailable,
                format!("cannot reach {node} over NATS: {e}"),
            ),
        },
    })
}

/// A reply message as a tree, or the code and text of what was wrong with it (a
/// Services API error reply, or a payload that is not a reply tree). A failed
/// activation's reply carries both the error headers and its tree: the tree wins.
pub fn decode_reply(node: &NodeName, message: &Message) -> Result<ActivationReply, (u16, String)> {
    let tree = serde_json::from_slice::<ActivationReply>(&message.payload);
    if let Ok(tree) = tree {
        return Ok(tree);
    }
    if let Some(headers) = &message.headers {
        if let Some(code) = headers.get(NATS_SERVICE_ERROR_CODE) {
            // Only an error status is an error; anything else is a broken reply.
            let code = code
                .as_str()
                .trim()
                .parse()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .unwrap_or(code::BAD_GATEWAY);
            let text = headers
                .get(NATS_SERVICE_ERROR)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            return Err((code, format!("{node} refused the request: {text}")));
        }
    }
    tree.map_err(|e| {
        (
            code::BAD_GATEWAY,
            format!("{node} sent a reply that is not a reply tree: {e}"),
        )
    })
}

/// Whole milliseconds in `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
