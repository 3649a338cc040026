//! Logs and traces.
//!
//! Logs go to stderr as human text (default) or JSON, filtered by `RUST_LOG`. Spans go to
//! OpenTelemetry when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: exported over OTLP/HTTP, with the trace
//! context carried in NATS headers. Otherwise tracing is off and costs nothing.
//! `OTEL_SERVICE_NAME` overrides the service name; `OTEL_SDK_DISABLED=true` turns it off;
//! `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` picks `http/protobuf` (default) or `http/json`;
//! `OTEL_PROPAGATORS` picks the propagators (`tracecontext,baggage` by default, or
//! `none`). A value this build cannot honour stops the process at start with a message.

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::SdkTracerProvider,
    Resource,
};
use std::io::IsTerminal;
use tracing::Level;

use tracing_subscriber::{
    filter::{self, FilterExt, Targets},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Filter used when `RUST_LOG` is not set: our own events at info, the NATS client's
/// (which repeat ours) at warn.
pub const DEFAULT_FILTER: &str = "info,async_nats=warn";

/// Keeps the tracer provider alive; flushes and shuts it down on drop.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// An OpenTelemetry setting from the environment that this build cannot honour.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn env_value(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// The OTLP protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL` (default `http/protobuf`).
pub fn otlp_protocol() -> Result<opentelemetry_otlp::Protocol, ConfigError> {
    let (name, value) = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| env_value(name).map(|v| (name, v)))
    .unwrap_or(("", "http/protobuf".into()));
    match value.as_str() {
        "http/protobuf" => Ok(opentelemetry_otlp::Protocol::HttpBinary),
        "http/json" => Ok(opentelemetry_otlp::Protocol::HttpJson),
        "grpc" => Err(ConfigError(format!(
            "{name}=grpc is not supported by this build (OTLP/gRPC would need tonic): use \
             http/protobuf or http/json, on the collector's OTLP/HTTP port (4318)"
        ))),
        other => Err(ConfigError(format!(
            "{name}={other} is not an OTLP protocol: use http/protobuf or http/json"
        ))),
    }
}

/// The propagators named by `OTEL_PROPAGATORS` (default `tracecontext,baggage`).
pub fn propagator() -> Result<TextMapCompositePropagator, ConfigError> {
    let value = env_value("OTEL_PROPAGATORS").unwrap_or_else(|| "tracecontext,baggage".into());
    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "tracecontext" => propagators.push(Box::new(TraceContextPropagator::new())),
            "baggage" => propagators.push(Box::new(BaggagePropagator::new())),
            "none" => propagators.clear(),
            other => {
                return Err(ConfigError(format!(
                    "OTEL_PROPAGATORS: {other} is not supported by this build (tracecontext, \
                     baggage, none)"
                )))
            }
        }
    }
    Ok(TextMapCompositePropagator::new(propagators))
}

/// Whether the standard OTLP environment asks for export.
pub fn otlp_configured() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Whose spans a process exports.
#[derive(Clone, Copy, Debug)]
pub enum Services<'a> {
    /// All under one service name.
    One(&'a str),
    /// Each node's under `node-<name>` ([`crate::node_services`]), the rest under the
    /// given name: a process serving several nodes.
    PerNode(&'a str),
}

/// Installs logging, and tracing when OTLP export is configured, for a process serving
/// as `services` (`OTEL_SERVICE_NAME`, when set, names every span's service). Without
/// export no OpenTelemetry layer is installed: spans cost only what logging costs, and
/// no trace context is created or propagated.
pub fn init(services: Services<'_>, format: LogFormat) -> Result<Telemetry, ConfigError> {
    let propagator = propagator()?;
    // Without export, the trace context still travels (span-less) unless the
    // propagators leave W3C trace context out.
    let named = |name: &str| {
        env_value("OTEL_PROPAGATORS").is_none_or(|v| v.split(',').any(|p| p.trim() == name))
    };
    crate::trace_context::set_propagation(named("tracecontext"), named("baggage"));
    let (service, per_node) = match services {
        Services::One(name) => (name, false),
        Services::PerNode(name) => (name, true),
    };
    let named = std::env::var("OTEL_SERVICE_NAME").ok();
    let per_node = per_node && named.is_none();
    let name = named.unwrap_or_else(|| service.to_string());
    let builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build());
    if !otlp_configured() {
        return Ok(init_layers(
            builder.build(),
            format,
            false,
            false,
            propagator,
        ));
    }
    let protocol = otlp_protocol()?;
    let make = move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
    };
    let exporter =
        make().map_err(|e| ConfigError(format!("OTLP export is configured but unusable: {e}")))?;
    let provider = if per_node {
        let by_node = crate::node_services::ByNode::new(exporter, move || make().ok());
        builder.with_batch_exporter(by_node).build()
    } else {
        builder.with_batch_exporter(exporter).build()
    };
    Ok(init_layers(provider, format, true, false, propagator))
}

/// Installs logging and tracing with a given tracer provider. Only the first call in a
/// process takes effect.
pub fn init_with(provider: SdkTracerProvider, format: LogFormat) -> Telemetry {
    init_layers(provider, format, true, false, default_propagator())
}

/// `tracecontext,baggage`.
fn default_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// As [`init_with`] for a test (with an in-memory exporter): logs go through the test
/// harness, which shows them only when the test fails.
pub fn init_for_test(provider: SdkTracerProvider) -> Telemetry {
    init_layers(provider, LogFormat::Text, true, true, default_propagator())
}

fn init_layers(
    provider: SdkTracerProvider,
    format: LogFormat,
    traced: bool,
    test: bool,
    propagator: TextMapCompositePropagator,
) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(propagator);
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = match format {
        LogFormat::Text if test => fmt::layer().with_test_writer().boxed(),
        // Colours only on a terminal: a log file or a container log gets plain text.
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        // Inside a traced span the line carries the span's fields, `trace_id` and
        // `span_id` among them (under `span`).
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Spans are at debug level: disabled, and free, unless traced or `RUST_LOG` asks.
    let spans = Targets::new()
        .with_target("handlers", Level::DEBUG)
        .with_target("gateway", Level::DEBUG)
        .with_target("mesh_core", Level::DEBUG);
    // JSON lines of a traced process carry their span's ids: the fmt layer must see our
    // (debug-level) spans for that, which costs nothing more since tracing enables them
    // anyway. Events stay filtered by `RUST_LOG`.
    let with_span_ids = traced && format == LogFormat::Json;
    let span_context = filter::filter_fn(move |meta| {
        with_span_ids
            && meta.is_span()
            && ["handlers", "gateway", "mesh_core"]
                .iter()
                .any(|t| meta.target().starts_with(t))
    });
    let traces = traced.then(|| {
        tracing_opentelemetry::layer()
            // No per-span thread, source location or busy/idle time: noise in every span.
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_tracer(provider.tracer("nats-mesh"))
            .with_filter(spans)
    });
    // The span filter only where it can pass: a dynamic filter makes every span and
    // event callsite ask again on each use, which costs on every hop.
    let logs_filter = if with_span_ids {
        FilterExt::boxed(filter().or(span_context))
    } else {
        FilterExt::boxed(filter())
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(logs_filter))
        .with(traces)
        .try_init();
    Telemetry { provider }
}
