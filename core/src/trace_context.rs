//! W3C trace context (`traceparent`, `tracestate`) carried in NATS headers, so that one
//! activation is one trace across the gateway and every node it reaches.

use async_nats::HeaderMap;
use opentelemetry::{
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
    Context,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Headers carrying `span`'s trace context; `None` when tracing is off (a disabled span),
/// so that untraced requests carry no headers at all.
pub fn headers_for(span: &tracing::Span) -> Option<HeaderMap> {
    if span.is_disabled() {
        return None;
    }
    let mut headers = HeaderMap::new();
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(&mut headers));
    });
    Some(headers)
}

/// The trace context a message carries (an empty context when it carries none).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => {
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
        }
        None => Context::new(),
    }
}

/// The trace id of `span` as 32 hex digits, when it belongs to a trace.
/// Records the span's OpenTelemetry ids in its `trace_id` and `span_id` fields (declared
/// `Empty` by the span), so that JSON log lines inside it carry them; nothing when the
/// span is not traced.
pub fn record_ids(span: &tracing::Span) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
        span.record("span_id", span_context.span_id().to_string());
    }
}

/// The span's trace id (32 hex digits), when it is traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
