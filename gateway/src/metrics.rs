//! Prometheus metrics of the gateway, served on `GET /metrics` as OpenMetrics text when
//! the scraper asks for it (`Accept: application/openmetrics-text`) and as the classic
//! Prometheus text format 0.0.4 otherwise, with the `process_*` metrics of the gateway
//! process and a build-info gauge. Every label takes its values from a fixed set.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
        info::Info,
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

/// Labels of an asynchronous activation's event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `accepted`, `done`, `retried` or `dead`.
    pub event: &'static str,
}

/// Labels of an activation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The root's code (the HTTP status of `POST /activate`).
    pub code: u16,
}

/// Labels of an HTTP request's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route, as in [`HttpLabels`].
    pub route: String,
    /// The method, as in [`HttpLabels`].
    pub method: &'static str,
}

/// Labels of one node's activations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeOutcomeLabels {
    /// The node (a discovered one; events of unknown nodes are not counted).
    pub node: String,
    /// `ok`, `failed`, `timeout`, `unavailable`, `loop` or `rejected`, from its code.
    pub outcome: &'static str,
}

/// Labels of one node's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The node.
    pub node: String,
}

type HistogramFamily = Family<CodeLabels, Histogram, fn() -> Histogram>;
type NodeHistogramFamily = Family<NodeLabels, Histogram, fn() -> Histogram>;
type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Every metric of the gateway.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Latency of `POST /activate`, by code.
    pub activation_seconds: HistogramFamily,
    /// Duration of HTTP requests (until the response head), by route and method.
    pub http_request_seconds: DurationFamily,
    /// SSE clients connected (set at scrape time).
    pub sse_clients: Gauge,
    /// 1 when connected to NATS (set at scrape time).
    pub nats_connected: Gauge,
    /// Status events accepted from the bus and relayed.
    pub events_relayed: Counter,
    /// Messages on `status.>` refused as invalid.
    pub events_refused: Counter,
    /// Messages on `mesh.activations.>` that were no valid record (skipped).
    pub records_refused: Counter,
    /// Events a lagging SSE client missed because history no longer held them.
    pub events_dropped: Counter,
    /// Times the hub handed a stream back to its own task: a client that could not take
    /// an event at once (a slow client), or one the hub could not catch up.
    pub sse_handed_back: Counter,
    /// Asynchronous activations accepted, done, retried and dead, counted by the gateway
    /// that saw it happen.
    pub jobs: Family<JobLabels, Counter>,
    /// Activations of each discovered node by outcome, from their final status events
    /// (every activation of the node, whoever started it).
    pub node_activations: Family<NodeOutcomeLabels, Counter>,
    /// Time each discovered node spent on its activations, from their final status events.
    pub node_seconds: NodeHistogramFamily,
    /// Each node's series, found by name without building labels (which allocates) for
    /// every status event (hashed with foldhash: only discovered nodes are counted).
    node_series: std::sync::Mutex<
        std::collections::HashMap<String, NodeSeries, foldhash::fast::RandomState>,
    >,
}

/// Outcomes of a node's activation, in the order [`NodeSeries::outcomes`] keeps them.
const OUTCOMES: [&str; 6] = ["ok", "failed", "timeout", "unavailable", "loop", "rejected"];

/// One node's series (each shares its value with the family's).
struct NodeSeries {
    /// By [`OUTCOMES`] index, made on first use (an outcome never seen has no series).
    outcomes: [Option<Counter>; OUTCOMES.len()],
    seconds: Histogram,
}

impl Metrics {
    /// Counts one finished activation of a discovered node.
    pub fn node_finished(&self, node: &str, code: Option<u16>, elapsed_ms: Option<u64>) {
        let outcome = match code {
            Some(200) => 0,
            Some(504) => 2,
            Some(503) => 3,
            Some(508) => 4,
            Some(400..=499) => 5,
            _ => 1,
        };
        let mut all = self
            .node_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !all.contains_key(node) {
            let seconds = self
                .node_seconds
                .get_or_create(&NodeLabels {
                    node: node.to_string(),
                })
                .clone();
            all.insert(
                node.to_string(),
                NodeSeries {
                    outcomes: Default::default(),
                    seconds,
                },
            );
        }
        let Some(series) = all.get_mut(node) else {
            return;
        };
        series.outcomes[outcome]
            .get_or_insert_with(|| {
                self.node_activations
                    .get_or_create(&NodeOutcomeLabels {
                        node: node.to_string(),
                        outcome: OUTCOMES[outcome],
                    })
                    .clone()
            })
            .inc();
        if let Some(ms) = elapsed_ms {
            series.seconds.observe(ms as f64 / 1000.0);
        }
    }
}

fn activation_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("mesh_gateway");
        let metrics = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            activation_seconds: Family::new_with_constructor(activation_histogram),
            http_request_seconds: Family::new_with_constructor(activation_histogram),
            sse_clients: Gauge::default(),
            nats_connected: Gauge::default(),
            events_relayed: Counter::default(),
            events_refused: Counter::default(),
            records_refused: Counter::default(),
            events_dropped: Counter::default(),
            sse_handed_back: Counter::default(),
            jobs: Family::default(),
            node_activations: Family::default(),
            node_seconds: Family::new_with_constructor(activation_histogram),
            node_series: Default::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Duration of HTTP requests until the response head, by route and method",
            metrics.http_request_seconds.clone(),
        );
        registry.register(
            "build",
            "The gateway's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
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
            "records_refused",
            "Messages on mesh.activations.> that were no valid record of their id (skipped, never served)",
            metrics.records_refused.clone(),
        );
        registry.register(
            "events_dropped",
            "Events lagging SSE clients missed",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "sse_handed_back",
            "Times the hub handed an SSE stream back to its own task (a client that could not take an event at once)",
            metrics.sse_handed_back.clone(),
        );
        registry.register(
            "async_activations",
            "Asynchronous activations by event: accepted, done, retried (an attempt said try again) and dead (every attempt did)",
            metrics.jobs.clone(),
        );
        root.register(
            "mesh_node_activations",
            "Activations of each discovered node by outcome, from the nodes' status events",
            metrics.node_activations.clone(),
        );
        root.register(
            "mesh_node_activation_seconds",
            "Time each discovered node spent on an activation, from its status events",
            metrics.node_seconds.clone(),
        );
        Self {
            registry: root,
            ..metrics
        }
    }
}

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics for a scraper that sent `accept`: the body and its content type.
    pub fn negotiate(&self, accept: Option<&str>) -> (String, &'static str) {
        let open_metrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
        if open_metrics {
            (self.render(), OPENMETRICS)
        } else {
            (to_prometheus_text(&self.render()), PROMETHEUS_TEXT)
        }
    }
}

/// OpenMetrics text as the classic Prometheus text format 0.0.4: no `# EOF` or `# UNIT`
/// lines, counter families named by their `_total` samples, info families as gauges
/// named by their `_info` samples.
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let mut renamed = std::collections::HashMap::new();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => {
                    renamed.insert(name, (format!("{name}_total"), "counter"));
                }
                Some((name, "info")) => {
                    renamed.insert(name, (format!("{name}_info"), "gauge"));
                }
                Some((name, "unknown")) => {
                    renamed.insert(name, (name.to_string(), "untyped"));
                }
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match comment.and_then(|(p, rest)| {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            renamed.get(name).map(|(new, kind)| (p, new, kind, tail))
        }) {
            Some(("# TYPE ", new, kind, _)) => out.push_str(&format!("# TYPE {new} {kind}")),
            Some((p, new, _, tail)) => out.push_str(&format!("{p}{new} {tail}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The `process_*` metrics of this process, read from `/proc` at each scrape (Linux;
/// nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Ok(());
        };
        // Fields after the command name (which may hold spaces), from field 3 on.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK, 100.0);
        let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE, 4096.0);
        let cpu = field(14).zip(field(15)).map(|(u, s)| (u + s) / ticks);
        let start = field(22).zip(boot_time).map(|(t, b)| b + t / ticks);
        let virtual_bytes = field(23);
        let resident = field(24).map(|pages| pages * page);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as f64)
            .ok();
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft as f64);
        if let Some(cpu) = cpu {
            let counter = ConstCounter::new(cpu);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?;
            counter.encode(m)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                resident,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                start,
            ),
        ] {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let m = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(m)?;
            }
        }
        Ok(())
    }
}

/// A `sysconf` value, or `default` where the system does not say.
fn sysconf(var: nix::unistd::SysconfVar, default: f64) -> f64 {
    match nix::unistd::sysconf(var) {
        Ok(Some(v)) if v > 0 => v as f64,
        _ => default,
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
        assert!(text.contains("mesh_gateway_build_info{version="), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");

        let (classic, content_type) = m.negotiate(Some("text/plain"));
        assert_eq!(content_type, PROMETHEUS_TEXT);
        assert!(!classic.contains("# EOF"));
        assert!(
            classic.contains("# TYPE mesh_gateway_http_requests_total counter"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE mesh_gateway_build_info gauge"),
            "{classic}"
        );
        let (open, content_type) = m.negotiate(Some("application/openmetrics-text;version=1.0.0"));
        assert_eq!(content_type, OPENMETRICS);
        assert!(open.ends_with("# EOF\n"));
    }
}
