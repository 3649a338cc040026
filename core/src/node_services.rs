//! One OpenTelemetry service per node in a process that serves several (a topology): a
//! span exporter that sends each node's spans under the resource `service.name =
//! node-<name>`, as a process serving one node does, so that a tracing UI's service list
//! and service graph show the nodes rather than one `nats-mesh-nodes` box.
//!
//! A span belongs to the node that does its work: a node's own spans (`process
//! activate.X`, `send status.X`) carry `node = X`; a call to a child (`send activate.Y`,
//! kind client) carries the calling node as `mesh.caller`. Anything else stays under the
//! process's own service.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::{trace::SpanKind, KeyValue, Value};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
    Resource,
};

/// Most services one process reports under (its nodes); spans of further names stay
/// under the process's own service.
const MAX_SERVICES: usize = 256;

/// Makes one exporter per service.
type Make<E> = Box<dyn Fn() -> Option<E> + Send + Sync>;

/// A span exporter that groups spans by node and exports each group through an exporter
/// of its own whose resource names that node's service.
pub struct ByNode<E> {
    make: Make<E>,
    resource: Resource,
    process: Arc<E>,
    nodes: Mutex<HashMap<String, Arc<E>>>,
}

impl<E> fmt::Debug for ByNode<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByNode")
            .field(
                "services",
                &self.nodes.lock().map(|n| n.len()).unwrap_or_default(),
            )
            .finish()
    }
}

impl<E: SpanExporter + 'static> ByNode<E> {
    /// Exports through exporters made by `make`: `process` for spans of no node.
    pub fn new(process: E, make: impl Fn() -> Option<E> + Send + Sync + 'static) -> Self {
        Self {
            make: Box::new(make),
            resource: Resource::builder_empty().build(),
            process: Arc::new(process),
            nodes: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<E>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exporter of `node`'s service, made on first use.
    fn exporter_for(&self, node: &str) -> Arc<E> {
        let mut nodes = self.lock();
        if let Some(exporter) = nodes.get(node) {
            return exporter.clone();
        }
        if nodes.len() >= MAX_SERVICES {
            return self.process.clone();
        }
        let Some(mut exporter) = (self.make)() else {
            return self.process.clone();
        };
        exporter.set_resource(&service_resource(&self.resource, node));
        let exporter = Arc::new(exporter);
        nodes.insert(node.to_string(), exporter.clone());
        exporter
    }

    /// `f` on every exporter; the last error, if any.
    fn each(&self, f: impl Fn(&E) -> OTelSdkResult) -> OTelSdkResult {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.push(self.process.clone());
        // Every exporter is asked, whatever the others answer.
        let results: Vec<_> = all.iter().map(|e| f(e)).collect();
        results.into_iter().rfind(Result::is_err).unwrap_or(Ok(()))
    }
}

/// `resource` with `service.name = node-<node>`.
fn service_resource(resource: &Resource, node: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(format!("node-{node}"))
        .build()
}

/// The node whose work `span` is: the caller of a client span, the node of any other.
pub fn node_of(span: &SpanData) -> Option<&str> {
    let key = if span.span_kind == SpanKind::Client {
        "mesh.caller"
    } else {
        "node"
    };
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match &kv.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl<E: SpanExporter + 'static> SpanExporter for ByNode<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let mut groups: HashMap<Option<String>, Vec<SpanData>> = HashMap::new();
        for span in batch {
            groups
                .entry(node_of(&span).map(str::to_string))
                .or_default()
                .push(span);
        }
        let targets: Vec<_> = groups
            .into_iter()
            .map(|(node, spans)| {
                let exporter = match node {
                    Some(node) => self.exporter_for(&node),
                    None => self.process.clone(),
                };
                (exporter, spans)
            })
            .collect();
        async move {
            let mut result = Ok(());
            for (exporter, spans) in targets {
                if let Err(e) = exporter.export(spans).await {
                    result = Err(e);
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.each(|e| e.shutdown_with_timeout(timeout))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.each(E::force_flush)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
        if let Some(process) = Arc::get_mut(&mut self.process) {
            process.set_resource(resource);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    #[test]
    fn spans_are_exported_under_their_nodes_service() {
        use opentelemetry::trace::{Tracer, TracerProvider};
        let process = InMemorySpanExporter::default();
        let made = Arc::new(Mutex::new(Vec::<InMemorySpanExporter>::new()));
        let make = {
            let made = made.clone();
            move || {
                let e = InMemorySpanExporter::default();
                made.lock().unwrap().push(e.clone());
                Some(e)
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("nats-mesh-nodes")
                    .build(),
            )
            .with_simple_exporter(ByNode::new(process.clone(), make))
            .build();
        let tracer = provider.tracer("test");
        tracer
            .span_builder("process activate.A")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("node", "A")])
            .start(&tracer);
        tracer
            .span_builder("send activate.B")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("node", "B"),
                KeyValue::new("mesh.caller", "A"),
            ])
            .start(&tracer);
        tracer
            .span_builder("process activate.B")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("node", "B")])
            .start(&tracer);
        tracer.span_builder("other").start(&tracer);
        drop(tracer);
        provider.force_flush().unwrap();

        let names = |e: &InMemorySpanExporter| {
            let mut n: Vec<_> = e
                .get_finished_spans()
                .unwrap()
                .iter()
                .map(|s| s.name.to_string())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&process), ["other"]);
        let made = made.lock().unwrap();
        assert_eq!(made.len(), 2);
        let by_first: HashMap<String, Vec<String>> = made
            .iter()
            .map(|e| (names(e)[0].clone(), names(e)))
            .collect();
        assert_eq!(
            by_first["process activate.A"],
            ["process activate.A", "send activate.B"]
        );
        assert_eq!(by_first["process activate.B"], ["process activate.B"]);
    }

    #[test]
    fn a_node_service_keeps_the_process_resource() {
        let base = Resource::builder_empty()
            .with_service_name("nats-mesh-nodes")
            .with_attribute(KeyValue::new("host.name", "h1"))
            .build();
        let r = service_resource(&base, "TM");
        assert_eq!(r.get(&"service.name".into()), Some(Value::from("node-TM")));
        assert_eq!(r.get(&"host.name".into()), Some(Value::from("h1")));
    }
}
