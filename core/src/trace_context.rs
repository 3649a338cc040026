//! W3C trace context (`traceparent`, `tracestate`, `baggage`) carried in NATS headers, so
//! that one activation is one trace across the gateway and every node it reaches.
//!
//! The context always travels, exported or not. Each hop (an HTTP request at the
//! gateway, an activation at a node) has one [`TraceContext`], the caller's continued
//! one hop further or a new trace, and runs inside it ([`TraceContext::scope`]). When
//! spans are exported, the hop's context is its exported span's (OpenTelemetry's ids),
//! and what is sent inside an exported span names that span as its parent, written by
//! OpenTelemetry's propagator; when they are not, no span is built and the hop's
//! context is a few bytes passed on. One function ([`of`]) decides which, for every
//! reader: request headers, a function's `traceparent`, a status event's `trace_id`.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use async_nats::HeaderMap;
use opentelemetry::{
    propagation::{Extractor, Injector},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId},
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

/// The OpenTelemetry context of `span`, when it is exported (a valid span context).
fn exported(span: &tracing::Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The trace context of something done inside `span`, the one place that decides it:
/// `span`'s own when it is exported (a message sent in it names it as parent), else the
/// hop's ([`TraceContext::scope`]); `None` when neither (propagation off, or outside a
/// hop).
enum Of {
    /// An exported span: OpenTelemetry's context, written by its propagator.
    Span(SpanContext),
    /// The hop's context.
    Hop,
}

fn of(span: &tracing::Span) -> Of {
    match exported(span) {
        Some(context) => Of::Span(context),
        None => Of::Hop,
    }
}

/// Headers written by the global propagator (`OTEL_PROPAGATORS`) for `span`'s exported
/// context.
fn propagated(span: &tracing::Span) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(&mut headers));
    });
    headers
}

/// Headers carrying `span`'s exported trace context; `None` when spans are not exported
/// (a status event then carries its trace id in its body only).
pub fn headers_for(span: &tracing::Span) -> Option<HeaderMap> {
    match of(span) {
        Of::Span(_) => Some(propagated(span)),
        Of::Hop => None,
    }
}

/// Headers for a request sent inside `span`: they name `span` (exported) or the hop as
/// the request's parent; `None` when there is no context to carry.
pub fn request_headers(span: &tracing::Span) -> Option<HeaderMap> {
    match of(span) {
        Of::Span(_) => Some(propagated(span)),
        Of::Hop => CURRENT.try_with(TraceContext::headers).ok(),
    }
}

/// The `traceparent` to hand a function run inside `span`.
pub fn traceparent_for(span: &tracing::Span) -> Option<String> {
    match of(span) {
        Of::Span(_) => propagated(span)
            .get("traceparent")
            .map(|v| v.as_str().to_string()),
        Of::Hop => CURRENT.try_with(TraceContext::traceparent).ok(),
    }
}

/// The trace id (32 hex digits) of what is done inside `span`.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    match of(span) {
        Of::Span(context) => Some(context.trace_id().to_string()),
        Of::Hop => CURRENT.try_with(TraceContext::trace_id_hex).ok(),
    }
}

/// The trace context a message carries, as OpenTelemetry reads it (an empty context
/// when it carries none): the parent of an exported span.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => {
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
        }
        None => Context::new(),
    }
}

/// Makes `span` a child of the context `parent` reads (a caller's, from its headers) and
/// records its ids ([`record_ids`]). Nothing, not even the read, for a disabled span
/// (nothing exported or logged): it has no parent to set.
pub fn continue_in(span: &tracing::Span, parent: impl FnOnce() -> Context) {
    if span.is_disabled() {
        return;
    }
    let _ = span.set_parent(parent());
    record_ids(span);
}

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

/// Whether hops carry a W3C trace context ([`TraceContext`]); set by
/// [`crate::telemetry`] from `OTEL_PROPAGATORS` (`none` turns it off).
static PROPAGATE: AtomicBool = AtomicBool::new(true);
/// Whether a caller's `baggage` goes on with the hop's context.
static BAGGAGE: AtomicBool = AtomicBool::new(true);

/// Turns the trace context on or off, with or without `baggage` (both on by default).
pub fn set_propagation(trace_context: bool, baggage: bool) {
    PROPAGATE.store(trace_context, Ordering::Relaxed);
    BAGGAGE.store(baggage, Ordering::Relaxed);
}

/// Whether a trace context is carried.
pub fn propagating() -> bool {
    PROPAGATE.load(Ordering::Relaxed)
}

/// A hop's W3C trace context: the gateway continues a caller's `traceparent` (or starts
/// a trace), and every hop passes the trace on with a span id of its own, so that
/// `X-Trace-Id`, the status events' `trace_id` and every NATS request agree, whether or
/// not anything is exported. Its ids are OpenTelemetry's types; when the hop's span is
/// exported they are that span's ([`TraceContext::of_span`]). Without export it costs a
/// random number, one formatted `traceparent` and a 55-byte header per hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never invalid).
    pub trace_id: TraceId,
    /// This hop's span id (never invalid).
    pub span_id: SpanId,
    /// The trace flags (`01`: sampled).
    pub flags: TraceFlags,
    /// This context as a version-00 `traceparent`, formatted once: the requests of the
    /// hop carry it as it is (the hop's span id is their parent id), and its trace id is
    /// the status events' `trace_id`.
    traceparent: Arc<str>,
    /// The caller's `tracestate`, passed on unchanged.
    pub state: Option<Arc<str>>,
    /// The caller's `baggage`, passed on unchanged.
    pub baggage: Option<Arc<str>>,
}

/// Longest `tracestate` or `baggage` passed on (the W3C limits are 512 and 8192 bytes).
const MAX_PASSED: usize = 8192;

/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;
/// Where the trace id and the parent (span) id sit in a `traceparent`.
const TRACE_HEX: std::ops::Range<usize> = 3..35;
const SPAN_HEX: std::ops::Range<usize> = 36..52;

const TRACEPARENT: async_nats::HeaderName = async_nats::HeaderName::from_static("traceparent");
const TRACESTATE: async_nats::HeaderName = async_nats::HeaderName::from_static("tracestate");
const BAGGAGE_HEADER: async_nats::HeaderName = async_nats::HeaderName::from_static("baggage");

tokio::task_local! {
    static CURRENT: TraceContext;
}

fn nonzero_u64() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// The bytes `hex` (lowercase hex digits only, as W3C requires) stands for.
fn lower_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    const_hex::decode_to_array(hex).ok()
}

/// `00-<trace>-<span>-<flags>`.
fn format_traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Arc<str> {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // The slices have exactly twice the input's length: encoding cannot fail.
    let _ = const_hex::encode_to_slice(trace_id.to_bytes(), &mut out[TRACE_HEX]);
    let _ = const_hex::encode_to_slice(span_id.to_bytes(), &mut out[SPAN_HEX]);
    let _ = const_hex::encode_to_slice([flags.to_u8()], &mut out[53..]);
    Arc::from(std::str::from_utf8(&out).unwrap_or_default())
}

impl TraceContext {
    /// The context of a hop: `span`'s when it is exported (its parent set already),
    /// else the `caller`'s (read from the request only then) one hop further, else a new
    /// trace; `None` when propagation is off.
    pub fn for_hop(span: &tracing::Span, caller: impl FnOnce() -> Option<Self>) -> Option<Self> {
        if !propagating() {
            return None;
        }
        if let Some(context) = Self::of_span(span) {
            return Some(context);
        }
        Some(caller().map_or_else(Self::fresh, |c| c.child()))
    }

    /// The context of an exported `span` (OpenTelemetry's ids, state and baggage, as
    /// its propagator writes them); `None` when `span` is not exported.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let context = exported(span)?;
        let headers = propagated(span);
        let header = |name: &str| headers.get(name).map(|v| v.as_str());
        let state = context.trace_state().header();
        let (trace_id, span_id, flags) =
            (context.trace_id(), context.span_id(), context.trace_flags());
        let passed = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(Arc::from);
        Some(Self {
            trace_id,
            span_id,
            flags,
            traceparent: format_traceparent(trace_id, span_id, flags),
            state: passed(Some(state.as_str())),
            baggage: passed(header("baggage")),
        })
    }

    /// A new trace (sampled, so that a later hop that exports records it).
    pub fn fresh() -> Self {
        let trace_id =
            TraceId::from(u128::from(nonzero_u64()) << 64 | u128::from(rand::random::<u64>()));
        let span_id = SpanId::from(nonzero_u64());
        let flags = TraceFlags::SAMPLED;
        Self {
            trace_id,
            span_id,
            flags,
            traceparent: format_traceparent(trace_id, span_id, flags),
            state: None,
            baggage: None,
        }
    }

    /// The trace a `traceparent` (with its `tracestate` and `baggage`) names, or `None`
    /// when it is not a valid W3C trace context.
    pub fn parse(traceparent: &str, state: Option<&str>, baggage: Option<&str>) -> Option<Self> {
        let b = traceparent.trim().as_bytes();
        // A later version may add fields after the flags; version 00 may not.
        if b.len() < TRACEPARENT_LEN || (b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-') {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let [version] = lower_hex::<1>(&b[0..2])?;
        if version == 0xff || (version == 0 && b.len() != TRACEPARENT_LEN) {
            return None;
        }
        let trace_id = TraceId::from_bytes(lower_hex(&b[TRACE_HEX])?);
        let span_id = SpanId::from_bytes(lower_hex(&b[SPAN_HEX])?);
        let [flags] = lower_hex::<1>(&b[53..55])?;
        let flags = TraceFlags::new(flags);
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let passed = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= MAX_PASSED
                        && v.bytes().all(|c| (0x20..0x7f).contains(&c))
                })
                .map(Arc::from)
        };
        // A version-00 one is already as this context is written: kept, not formatted
        // again (a later version's is written as version 00).
        let traceparent = if version == 0 {
            Arc::from(std::str::from_utf8(b).ok()?)
        } else {
            format_traceparent(trace_id, span_id, flags)
        };
        Some(Self {
            trace_id,
            span_id,
            flags,
            traceparent,
            state: passed(state),
            baggage: passed(baggage.filter(|_| BAGGAGE.load(Ordering::Relaxed))),
        })
    }

    /// The context a message's headers carry, if any (read in one pass over them: no
    /// header name is built or hashed).
    pub fn from_headers(headers: Option<&HeaderMap>) -> Option<Self> {
        let (mut traceparent, mut state, mut baggage) = (None, None, None);
        for (name, values) in headers?.iter() {
            let value = values.first().map(|v| v.as_str());
            match name.as_ref() {
                "traceparent" => traceparent = value,
                "tracestate" => state = value,
                "baggage" => baggage = value,
                _ => {}
            }
        }
        Self::parse(traceparent?, state, baggage)
    }

    /// The same trace, one hop further: a new span id.
    pub fn child(&self) -> Self {
        let span_id = SpanId::from(nonzero_u64());
        Self {
            span_id,
            traceparent: format_traceparent(self.trace_id, span_id, self.flags),
            ..self.clone()
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        self.traceparent[TRACE_HEX].to_string()
    }

    /// The `traceparent` header value (version 00, this hop's span id as parent id).
    pub fn traceparent(&self) -> String {
        self.traceparent.to_string()
    }

    /// Headers carrying this context: the requests a hop sends name it as their parent.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, self.traceparent());
        if let Some(state) = &self.state {
            headers.insert(TRACESTATE, state.to_string());
        }
        if let Some(baggage) = &self.baggage {
            headers.insert(BAGGAGE_HEADER, baggage.to_string());
        }
        headers
    }

    /// Runs `work` with this context as the hop's (what [`request_headers`],
    /// [`trace_id`] and [`traceparent_for`] read for spans that are not exported).
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_its_child_keeps_the_trace() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(t, Some("k=v"), Some("tenant=blue")).unwrap();
        assert_eq!(c.traceparent(), t);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
        let h = child.headers();
        assert!(h
            .get("traceparent")
            .unwrap()
            .as_str()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(h.get("tracestate").unwrap().as_str(), "k=v");
        assert_eq!(h.get("baggage").unwrap().as_str(), "tenant=blue");
        assert_eq!(TraceContext::from_headers(Some(&h)).unwrap(), child);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None, None), None, "{bad}");
        }
        // A later version may add fields after the flags.
        assert!(TraceContext::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz",
            None,
            None
        )
        .is_some());
        // Multi-byte text where the fields are cut is refused, not a panic.
        let wide = format!("00-{}-00f067aa0ba902b7-01", "é".repeat(16));
        assert_eq!(TraceContext::parse(&wide, None, None), None);
        assert_eq!(TraceContext::parse(&"é".repeat(40), None, None), None);
        // Hostile tracestate or baggage is not passed on.
        let c = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("a\r\nb"),
            Some(&"x".repeat(9000)),
        )
        .unwrap();
        assert_eq!((c.state, c.baggage), (None, None));
    }

    #[test]
    fn the_context_is_read_among_other_headers_and_written_as_version_00() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "x");
        h.insert(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later",
        );
        h.insert("tracestate", "k=v");
        let c = TraceContext::from_headers(Some(&h)).unwrap();
        assert_eq!(
            c.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(c.state.as_deref(), Some("k=v"));
        assert_eq!(c.span_id, SpanId::from(0x00f0_67aa_0ba9_02b7));
        let mut other = HeaderMap::new();
        other.insert("Traceparent-Not", c.traceparent().as_str());
        assert_eq!(TraceContext::from_headers(Some(&other)), None);
    }

    #[test]
    fn fresh_traces_differ_and_are_sampled() {
        let (a, b) = (TraceContext::fresh(), TraceContext::fresh());
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.flags, TraceFlags::SAMPLED);
        assert_eq!(a.traceparent().len(), 55);
        assert_eq!(
            TraceContext::parse(&a.traceparent(), None, None),
            Some(a.clone())
        );
        assert_eq!(a.trace_id_hex(), a.trace_id.to_string());
    }
}
