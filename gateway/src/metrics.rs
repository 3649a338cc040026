//! Prometheus metrics of the gateway, served as text on `GET /metrics`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route (a fixed set derived from the API: unknown paths are `other`).
    pub route: String,
    /// The HTTP method (standard ones; anything else is `_OTHER`).
    pub method: &'static str,
    /// The response status.
    pub status: u16,
}

/// Labels of an activation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The root's code (the HTTP status of `POST /activate`).
    pub code: u16,
}

type HistogramFamily = Family<CodeLabels, Histogram, fn() -> Histogram>;

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Latency of `POST /activate`, by code.
    pub activation_seconds: HistogramFamily,
    /// SSE clients connected (set at scrape time).
    pub sse_clients: Gauge,
    /// 1 when connected to NATS (set at scrape time).
    pub nats_connected: Gauge,
    /// Status events accepted from the bus and relayed.
    pub events_relayed: Counter,
    /// Messages on `status.>` refused as invalid.
    pub events_refused: Counter,
    /// Events a lagging SSE client missed because history no longer held them.
    pub events_dropped: Counter,
}

fn activation_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mesh_gateway");
        let metrics = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            activation_seconds: Family::new_with_constructor(activation_histogram),
            sse_clients: Gauge::default(),
            nats_connected: Gauge::default(),
            events_relayed: Counter::default(),
            events_refused: Counter::default(),
            events_dropped: Counter::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "activation_seconds",
            "Latency of POST /activate by root code",
            metrics.activation_seconds.clone(),
        );
        registry.register(
            "sse_clients",
            "SSE clients connected",
            metrics.sse_clients.clone(),
        );
        registry.register(
            "nats_connected",
            "1 when the gateway is connected to NATS",
            metrics.nats_connected.clone(),
        );
        registry.register(
            "events_relayed",
            "Status events relayed from the bus",
            metrics.events_relayed.clone(),
        );
        registry.register(
            "events_refused",
            "Messages on status.> refused as invalid",
            metrics.events_refused.clone(),
        );
        registry.register(
            "events_dropped",
            "Events lagging SSE clients missed",
            metrics.events_dropped.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_bounded_routes() {
        let m = Metrics::default();
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/nodes/{node}/color".into(),
                method: "PUT",
                status: 202,
            })
            .inc();
        m.activation_seconds
            .get_or_create(&CodeLabels { code: 200 })
            .observe(0.002);
        let text = m.render();
        assert!(text.contains(r#"mesh_gateway_http_requests_total{route="/nodes/{node}/color",method="PUT",status="202"} 1"#), "{text}");
        assert!(
            text.contains("mesh_gateway_activation_seconds_count{code=\"200\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
