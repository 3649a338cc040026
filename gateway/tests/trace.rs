//! One trace per activation, across HTTP and every NATS hop. A test binary of its own:
//! it installs the process-wide tracing subscriber with an in-memory span exporter.
#![allow(clippy::unwrap_used, missing_docs)]

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use gateway::{Gateway, Settings as GatewaySettings};
use handlers::{runtime::Running, Settings, Topology};
use mesh_core::{bus::NatsArgs, telemetry};
use opentelemetry::{trace::Status, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use poem::listener::{Acceptor, Listener, TcpListener};
use testsupport::{eventually, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_is_one_trace_across_every_hop() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _telemetry = telemetry::init_for_test(provider);

    let server = NatsServer::start();
    let _nodes = Running::start(
        async_nats::connect(server.url()).await.unwrap(),
        Topology::seed()
            .without_work()
            .nodes
            .into_iter()
            .chain([handlers::NodeSpec {
                // Fails every activation (500 or 502).
                work: handlers::Work::simulated(0, 1.0),
                ..handlers::NodeSpec::new(schemas::NodeName::new("FAIL").unwrap())
            }])
            .collect(),
        Settings::default(),
    )
    .await
    .unwrap();
    let client = NatsArgs::for_url(server.url())
        .connect("trace test")
        .await
        .unwrap();
    let gateway = Gateway::start(GatewaySettings::default(), client)
        .await
        .unwrap();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(gateway.serve(acceptor, std::future::pending()));

    // An independent subscriber sees D's request with its headers.
    let spy = async_nats::connect(server.url()).await.unwrap();
    let mut to_d = spy.subscribe("activate.D").await.unwrap();
    mesh_core::bus::sync(&spy).await.unwrap();

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/activate"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id != "0".repeat(32));
    let tree: serde_json::Value = response.json().await.unwrap();

    let seen = tokio::time::timeout(Duration::from_secs(5), to_d.next())
        .await
        .unwrap()
        .unwrap();
    let traceparent = seen
        .headers
        .as_ref()
        .unwrap()
        .get("traceparent")
        .unwrap()
        .as_str()
        .to_string();
    let parts: Vec<_> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        (parts[0], parts[1]),
        ("00", trace_id.as_str()),
        "{traceparent}"
    );
    assert_eq!(parts[2].len(), 16);

    // Every span of the activation, in one trace.
    let spans: Vec<SpanData> = eventually("17 spans exported", Duration::from_secs(10), || async {
        let spans: Vec<_> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == trace_id)
            .collect();
        (spans.len() >= 17).then_some(spans)
    })
    .await;
    let by_id: HashMap<_, _> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let parent_name = |s: &SpanData| by_id.get(&s.parent_span_id).map(|p| p.name.to_string());
    let http = spans
        .iter()
        .find(|s| s.name == "POST /activate")
        .unwrap_or_else(|| {
            panic!(
                "the HTTP span among {:?}",
                spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>()
            )
        });
    // gateway HTTP span -> its call to UI -> UI's server span -> UI's call to D -> ...
    let call_ui = spans.iter().find(|s| s.name == "send activate.UI").unwrap();
    assert_eq!(call_ui.parent_span_id, http.span_context.span_id());
    for (node, parent) in [
        ("UI", None),
        ("D", Some("UI")),
        ("P", Some("D")),
        ("V", Some("P")),
        ("H", Some("P")),
        ("T", Some("V")),
        ("DS", Some("V")),
        ("TM", Some("V")),
    ] {
        let server = spans
            .iter()
            .find(|s| s.name == format!("process activate.{node}"))
            .unwrap_or_else(|| panic!("no server span for {node}"));
        assert_eq!(
            parent_name(server).as_deref(),
            Some(format!("send activate.{node}").as_str())
        );
        let call = by_id[&server.parent_span_id];
        let expected = parent.map_or("POST /activate".to_string(), |p| {
            format!("process activate.{p}")
        });
        assert_eq!(
            parent_name(call).as_deref(),
            Some(expected.as_str()),
            "{node}'s caller"
        );
        let attrs = attributes(server);
        assert_eq!(attrs["node"], Value::from(node.to_string()));
        assert_eq!(attrs["mesh.code"], Value::I64(200), "a number");
        assert!(matches!(attrs["mesh.elapsed_ms"], Value::I64(_)));
        assert_eq!(
            attrs["mesh.activation_id"],
            Value::from(tree["activation_id"].as_str().unwrap().to_string())
        );
        assert_eq!(attrs["messaging.system"], Value::from("nats"));
        assert_eq!(
            attrs["messaging.destination.name"],
            Value::from(format!("activate.{node}"))
        );
        assert_eq!(attrs["messaging.operation.type"], Value::from("process"));
        assert_eq!(attrs["messaging.consumer.group.name"], Value::from("mesh"));
        assert_eq!(server.status, Status::Unset);
        for noise in [
            "thread.id",
            "thread.name",
            "code.filepath",
            "busy_ns",
            "idle_ns",
        ] {
            assert!(!attrs.contains_key(noise), "{noise} on {}", server.name);
        }
    }
    let http_attrs = attributes(http);
    assert_eq!(http_attrs["http.request.method"], Value::from("POST"));
    assert_eq!(http_attrs["http.route"], Value::from("/activate"));
    assert_eq!(http_attrs["url.path"], Value::from("/activate"));
    assert_eq!(http_attrs["http.response.status_code"], Value::I64(200));
    assert_eq!(http_attrs["server.address"], Value::from("127.0.0.1"));

    // A caller's baggage travels on with the trace context (OTEL_PROPAGATORS default).
    let _ = reqwest::Client::new()
        .post(format!("http://{addr}/activate"))
        .header("baggage", "tenant=blue")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    // D's next request is this activation's (activations here run one at a time).
    let next_to_d = tokio::time::timeout(Duration::from_secs(10), to_d.next())
        .await
        .unwrap()
        .unwrap();
    let with_baggage = next_to_d
        .headers
        .as_ref()
        .and_then(|h| h.get("baggage"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert_eq!(with_baggage, "tenant=blue");

    // The trace id is in the status events too.
    let mut status = spy.subscribe("status.>").await.unwrap();
    mesh_core::bus::sync(&spy).await.unwrap();
    let again = reqwest::Client::new()
        .post(format!("http://{addr}/activate"))
        .json(&serde_json::json!({"node": "T"}))
        .send()
        .await
        .unwrap();
    let again_id = again.headers()["x-trace-id"].to_str().unwrap().to_string();
    let event = tokio::time::timeout(Duration::from_secs(5), status.next())
        .await
        .unwrap()
        .unwrap();
    let traceparent = event
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{again_id}-")),
        "a status event carries its trace context: {traceparent:?}"
    );
    let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["trace_id"], again_id.as_str());
    // Each status publish is a producer span under the node's own span.
    let status_spans = eventually("T's status spans", Duration::from_secs(10), || async {
        let spans: Vec<_> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id().to_string() == again_id)
            .collect();
        let process = spans
            .iter()
            .find(|s| s.name == "process activate.T")?
            .clone();
        let status: Vec<_> = spans
            .into_iter()
            .filter(|s| s.name == "send status.T")
            .collect();
        (status.len() == 2).then_some((process, status))
    })
    .await;
    for span in &status_spans.1 {
        assert_eq!(span.parent_span_id, status_spans.0.span_context.span_id());
        assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Producer);
        assert_eq!(
            attributes(span)["messaging.destination.name"],
            Value::from("status.T")
        );
    }

    // A manual colour is part of its request's trace.
    // (Once the gateway has discovered T: unknown nodes are refused.)
    let colour = eventually("T discovered", Duration::from_secs(30), || async {
        let r = reqwest::Client::new()
            .put(format!("http://{addr}/nodes/T/color"))
            .json(&serde_json::json!({"color": "#123456"}))
            .send()
            .await
            .unwrap();
        (r.status() != 404).then_some(r)
    })
    .await;
    assert_eq!(colour.status(), 202);
    let colour_trace = colour.headers()["x-trace-id"].to_str().unwrap().to_string();
    let published: serde_json::Value = colour.json().await.unwrap();
    assert_eq!(published["trace_id"], colour_trace.as_str());
    let manual = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = status.next().await.unwrap();
            let e: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if e["state"] == "manual" {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(manual["trace_id"], colour_trace.as_str());

    // A malformed request that carries a trace context is a failed span of that trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{caller_trace}-00f067aa0ba902b7-01").as_str(),
    );
    let refused = spy
        .request_with_headers("activate.T", headers, "{not json".into())
        .await
        .unwrap();
    assert_eq!(
        refused
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Service-Error-Code")
            .unwrap()
            .as_str(),
        "400"
    );
    let malformed = span_where(&exporter, "the malformed request's span", |s| {
        s.span_context.trace_id().to_string() == caller_trace
    })
    .await;
    assert_eq!(malformed.name, "process activate.T");
    assert!(
        matches!(&malformed.status, Status::Error { description } if description.contains("400")),
        "{:?}",
        malformed.status
    );

    // A failed activation: ERROR with a description on the node's span, the caller's
    // and the HTTP span (a 5xx). An unknown path is named by its method alone.
    let failed = reqwest::Client::new()
        .post(format!("http://{addr}/activate"))
        .json(&serde_json::json!({"node": "NOBODY_SERVES_THIS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 404);
    let known_down = reqwest::Client::new()
        .post(format!("http://{addr}/activate"))
        .json(&serde_json::json!({"node": "FAIL"}))
        .send()
        .await
        .unwrap();
    let failed_id = known_down.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let code = known_down.status().as_u16();
    let failed_spans = eventually(
        "the failed activation's spans",
        Duration::from_secs(10),
        || async {
            let spans: Vec<_> = exporter
                .get_finished_spans()
                .unwrap()
                .into_iter()
                .filter(|s| s.span_context.trace_id().to_string() == failed_id)
                .collect();
            spans
                .iter()
                .any(|s| s.name == "POST /activate")
                .then_some(spans)
        },
    )
    .await;
    assert!(code >= 500, "{code}");
    let http = failed_spans
        .iter()
        .find(|s| s.name == "POST /activate")
        .unwrap();
    assert!(
        matches!(http.status, Status::Error { .. }),
        "{:?}",
        http.status
    );
    for name in ["send activate.FAIL", "process activate.FAIL"] {
        let span = span_where(&exporter, name, |s| {
            s.span_context.trace_id().to_string() == failed_id && s.name == name
        })
        .await;
        assert!(
            matches!(&span.status, Status::Error { description } if description.contains("failed")),
            "{name}: {:?}",
            span.status
        );
        assert!(attributes(&span).contains_key("error.type"), "{name}");
    }
    let before = exporter.get_finished_spans().unwrap().len();
    for probe in ["/healthz", "/readyz", "/metrics", "/nowhere"] {
        let r = reqwest::Client::new()
            .get(format!("http://{addr}{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().contains_key("x-trace-id"),
            probe == "/nowhere",
            "{probe}"
        );
    }
    let unmatched = eventually(
        "the unmatched path's span",
        Duration::from_secs(10),
        || async {
            exporter
                .get_finished_spans()
                .unwrap()
                .into_iter()
                .skip(before)
                .find(|s| s.name == "GET")
        },
    )
    .await;
    assert!(!attributes(&unmatched).contains_key("http.route"));
    let probes = exporter.get_finished_spans().unwrap().len() - before;
    assert_eq!(probes, 1, "only the unmatched path made a span");
}

/// The first finished span matching `found`, waited for.
async fn span_where(
    exporter: &InMemorySpanExporter,
    what: &str,
    found: impl Fn(&SpanData) -> bool,
) -> SpanData {
    eventually(what, Duration::from_secs(10), || async {
        exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .find(|s| found(s))
    })
    .await
}

fn attributes(span: &SpanData) -> HashMap<String, Value> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.as_str().to_string(), kv.value.clone()))
        .collect()
}
