//! One span and one metric per HTTP request, continuing the caller's trace when it sends
//! `traceparent` (or starting one), and an `X-Trace-Id` header on every traced response:
//! the request's [`mesh_core::trace_context::TraceContext`], its exported span's when
//! spans are exported (none with `OTEL_PROPAGATORS=none`). Probes
//! (`/healthz`, `/readyz`) and scrapes (`/metrics`) are counted but not traced: they
//! would be most of the traces and say nothing. Every response, errors included, says
//! `X-Content-Type-Options: nosniff`.

use std::sync::Arc;

use opentelemetry::propagation::Extractor;
use poem::{http::HeaderMap, Endpoint, IntoResponse, Request, Response, Result};
use tracing::Instrument;

use mesh_core::{span_attrs, trace_context::TraceContext};

use crate::{
    metrics::{HttpLabels, Metrics, RouteLabels},
    routes::{method_label, RouteTable},
};

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A request span's name, `METHOD route` (the method alone for an unmatched path),
/// written only when the span is enabled.
struct SpanName<'a>(&'a str, Option<&'a str>);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(route) => write!(f, "{} {route}", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// Paths served without a span.
const UNTRACED: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Wraps one request: span, metrics, trace id and `nosniff` headers.
pub async fn observe<E: Endpoint>(
    endpoint: E,
    req: Request,
    metrics: Arc<Metrics>,
    routes: Arc<RouteTable>,
) -> Result<Response> {
    let path = req.uri().path().to_string();
    let method = method_label(req.method());
    // The method as sent, for the access log only (never a label).
    let req_method = req.method().clone();
    let route = routes.label(&path);
    let span = if UNTRACED.contains(&path.as_str()) {
        tracing::Span::none()
    } else {
        // The span is named now: its name cannot change once its context exists. An
        // unmatched path is named by its method alone (the conventions' low-cardinality
        // rule).
        let matched = (route != crate::routes::UNMATCHED).then_some(route.as_str());
        let span = tracing::debug_span!(
            "http",
            otel.name = %SpanName(method, matched),
            otel.kind = "server",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        mesh_core::trace_context::continue_in(&span, || {
            opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&HttpHeaders(req.headers()))
            })
        });
        let host = req
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        span_attrs::http_request(&span, method, matched, &path, host);
        span
    };
    // The request's trace context (the exported span's, or the caller's one hop
    // further, or a new one) goes on to every request and event of the activation.
    let trace = (!UNTRACED.contains(&path.as_str()))
        .then(|| {
            TraceContext::for_hop(&span, || {
                let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
                TraceContext::parse(
                    header("traceparent")?,
                    header("tracestate"),
                    header("baggage"),
                )
            })
        })
        .flatten();
    let trace_id = match &trace {
        Some(trace) => Some(trace.trace_id_hex()),
        None => mesh_core::trace_context::trace_id(&span),
    };
    let started = std::time::Instant::now();
    let call = endpoint.call(req).instrument(span.clone());
    let called = match trace {
        Some(trace) => trace.scope(call).await,
        None => call.await,
    };
    let mut response = match called {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16();
    if status == 405 {
        // RFC 9110: a 405 says which methods the resource supports.
        if let Some(allow) = routes.allowed(&path).and_then(|a| a.parse().ok()) {
            response
                .headers_mut()
                .insert(poem::http::header::ALLOW, allow);
        }
    }
    span_attrs::http_response(&span, status);
    let elapsed = started.elapsed();
    // The access log: one line per request, at debug (`RUST_LOG=gateway::access=debug`).
    tracing::debug!(
        target: "gateway::access",
        method = %req_method,
        path = %path,
        route = %route,
        status,
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
    metrics
        .http_request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method,
        })
        .observe(elapsed.as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status,
        })
        .inc();
    let headers = response.headers_mut();
    // No answer is to be sniffed, errors included (poem's `SetHeader` skips those).
    headers.insert(
        poem::http::header::X_CONTENT_TYPE_OPTIONS,
        poem::http::HeaderValue::from_static("nosniff"),
    );
    if let Some(id) = trace_id.and_then(|id| id.parse().ok()) {
        headers.insert("x-trace-id", id);
    }
    Ok(response)
}
