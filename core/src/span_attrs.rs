//! Span names and attributes by the OpenTelemetry semantic conventions (HTTP and
//! messaging), and the mesh's own attributes (`mesh.*`), numbers as numbers. Spans of
//! failed activations and of HTTP 5xx answers get status ERROR with a description.
//!
//! Every function is a no-op on a disabled span (tracing off).

use opentelemetry::trace::Status;
use opentelemetry_semantic_conventions::attribute as semconv;
use schemas::{reply_in_place::ReplyRoot, ActivationReply, Outcome};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What a NATS span does with its subject.
#[derive(Clone, Copy, Debug)]
pub enum Messaging {
    /// A request sent (the caller's side).
    Send,
    /// A request received and handled (the node's side), in a queue group.
    Process,
}

impl Messaging {
    /// The operation's name, also the first word of the span's name.
    pub fn name(self) -> &'static str {
        match self {
            Messaging::Send => "send",
            Messaging::Process => "process",
        }
    }
}

/// The name of a NATS span: `send activate.D`, `process activate.D`.
pub fn messaging_span_name(operation: Messaging, subject: &str) -> String {
    format!("{} {subject}", operation.name())
}

/// The messaging attributes of a span on `subject` (`group`: the queue group, when
/// processing).
pub fn messaging(span: &Span, operation: Messaging, subject: &str, group: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(semconv::MESSAGING_SYSTEM, "nats");
    span.set_attribute(semconv::MESSAGING_DESTINATION_NAME, subject.to_string());
    span.set_attribute(semconv::MESSAGING_OPERATION_NAME, operation.name());
    span.set_attribute(semconv::MESSAGING_OPERATION_TYPE, operation.name());
    if let Some(group) = group {
        span.set_attribute(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_string());
    }
}

/// The outcome of an activation on its span: `mesh.activation_id`, `mesh.outcome`,
/// `mesh.code` and `mesh.elapsed_ms` (integers), and status ERROR unless it succeeded.
pub fn activation(span: &Span, reply: &ActivationReply) {
    if span.is_disabled() {
        return;
    }
    activation_root(span, &ReplyRoot::of(reply));
}

/// As [`activation`], from the root of a reply tree read in place.
pub fn activation_root(span: &Span, root: &ReplyRoot) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("mesh.activation_id", root.activation_id.to_string());
    span.set_attribute("mesh.outcome", root.outcome.to_string());
    span.set_attribute("mesh.code", i64::from(root.code));
    span.set_attribute(
        "mesh.elapsed_ms",
        i64::try_from(root.elapsed_ms).unwrap_or(i64::MAX),
    );
    if root.outcome != Outcome::Ok {
        span.set_attribute(semconv::ERROR_TYPE, root.outcome.to_string());
        span.set_status(Status::error(format!(
            "{} {}: {}",
            root.code, root.outcome, root.message
        )));
    }
}

/// The node making a call (`mesh.caller`): a multi-node process exports the call's
/// span under that node's service ([`crate::node_services`]).
pub fn caller(span: &Span, node: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("mesh.caller", node.to_string());
}

/// A request refused before any activation (malformed, or over a limit): its code as
/// `mesh.code` and status ERROR with `text`.
pub fn refused(span: &Span, code: u16, text: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("mesh.code", i64::from(code));
    span.set_attribute(semconv::ERROR_TYPE, code.to_string());
    span.set_status(Status::error(format!("{code} refused: {text}")));
}

/// The request side of an HTTP server span: method (`_OTHER` for one outside the
/// standard set), route when one matched, path and server address.
pub fn http_request(
    span: &Span,
    method: &'static str,
    route: Option<&str>,
    path: &str,
    host: Option<&str>,
) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(semconv::HTTP_REQUEST_METHOD, method);
    if let Some(route) = route {
        span.set_attribute(semconv::HTTP_ROUTE, route.to_string());
    }
    span.set_attribute(semconv::URL_PATH, path.to_string());
    if let Some(host) = host {
        // `host:port` or `[v6]:port`: the address without the port.
        let address = match host.rsplit_once(':') {
            Some((address, port)) if port.bytes().all(|b| b.is_ascii_digit()) => address,
            _ => host,
        };
        span.set_attribute(semconv::SERVER_ADDRESS, address.to_string());
    }
}

/// The response side of an HTTP server span: its status code, and status ERROR for a
/// 5xx (a 4xx is the client's error, not the server's).
pub fn http_response(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
    if status >= 500 {
        span.set_attribute(semconv::ERROR_TYPE, status.to_string());
        span.set_status(Status::error(format!("HTTP {status}")));
    }
}
