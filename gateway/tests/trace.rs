//! One trace per activation, across HTTP and every NATS hop. A test binary of its own:
//! it installs the process-wide tracing subscriber with an in-memory span exporter.
#![allow(clippy::unwrap_used, missing_docs)]

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use gateway::{Gateway, Settings as GatewaySettings};
use handlers::{runtime::Running, Settings, Topology};
use mesh_core::{bus::NatsArgs, telemetry};
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
        Topology::seed().without_work().nodes,
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
    let call_ui = spans
        .iter()
        .find(|s| s.name == "activate.UI request")
        .unwrap();
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
            .find(|s| s.name == format!("activate {node}"))
            .unwrap_or_else(|| panic!("no server span for {node}"));
        assert_eq!(
            parent_name(server).as_deref(),
            Some(format!("activate.{node} request").as_str())
        );
        let call = by_id[&server.parent_span_id];
        let expected = parent.map_or("POST /activate".to_string(), |p| format!("activate {p}"));
        assert_eq!(
            parent_name(call).as_deref(),
            Some(expected.as_str()),
            "{node}'s caller"
        );
        let attrs: HashMap<_, _> = server
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str().to_string(), kv.value.to_string()))
            .collect();
        assert_eq!(attrs.get("node").map(String::as_str), Some(node));
        assert_eq!(attrs.get("code").map(String::as_str), Some("200"));
        assert_eq!(
            attrs.get("activation").map(String::as_str),
            tree["activation_id"].as_str()
        );
    }

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
    let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["trace_id"], again_id.as_str());
}
