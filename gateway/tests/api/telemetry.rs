//! `/metrics` and OTLP export.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use poem::{
    handler,
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::Data,
    Body, EndpointExt, Route, Server,
};
use serde_json::json;

use crate::helpers::*;

/// Parses Prometheus text with the reference parser (prometheus-client from PyPI: its
/// classic parser, or its OpenMetrics one) and returns `{sample name + labels: value}`.
fn parse_prometheus(text: &str, open_metrics: bool) -> std::collections::HashMap<String, f64> {
    let import = if open_metrics {
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families"
    } else {
        "from prometheus_client.parser import text_string_to_metric_families"
    };
    let script = r#"
import json, sys
IMPORT
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#
    .replace("IMPORT", import);
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not Prometheus text (prometheus-client parser): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
#[ignore = "external: needs python3 with prometheus-client (PyPI); ./scripts/test installs it and runs this"]
async fn metrics_parse_and_move_with_activations() {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let scrape = || async {
        let r = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        parse_prometheus(&r.text().await.unwrap(), false)
    };
    app.wait_for_nodes(8).await;
    let before = scrape().await;
    let _sse = app.sse("", None).await;
    let (status, _) = app.activate(json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = app.activate(json!({"node": "nope-x"})).await;
    assert_eq!(status, 404);
    let after = eventually("16 events relayed", Duration::from_secs(5), || async {
        let m = scrape().await;
        let relayed = m
            .get("mesh_gateway_events_relayed_total{}")
            .copied()
            .unwrap_or(0.0);
        let was = before
            .get("mesh_gateway_events_relayed_total{}")
            .copied()
            .unwrap_or(0.0);
        (relayed - was >= 16.0).then_some(m)
    })
    .await;
    let get =
        |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let ok = r#"mesh_gateway_http_requests_total{method="POST",route="/activate",status="200"}"#;
    assert_eq!(get(&after, ok) - get(&before, ok), 1.0, "{after:?}");
    let not_found =
        r#"mesh_gateway_http_requests_total{method="POST",route="/activate",status="404"}"#;
    assert_eq!(get(&after, not_found), 1.0);
    assert_eq!(
        get(
            &after,
            r#"mesh_gateway_activation_seconds_count{code="200"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &after,
            r#"mesh_gateway_activation_seconds_count{code="404"}"#
        ),
        1.0
    );
    assert_eq!(get(&after, "mesh_gateway_sse_clients{}"), 1.0);
    assert_eq!(get(&after, "mesh_gateway_nats_connected{}"), 1.0);
    assert!(after.contains_key("mesh_gateway_events_dropped_total{}"));
    let scrapes = r#"mesh_gateway_http_requests_total{method="GET",route="/metrics",status="200"}"#;
    assert!(get(&after, scrapes) >= 1.0);
    // Per node, from the nodes' own status events.
    for node in ["UI", "D", "TM"] {
        let ok = format!(r#"mesh_node_activations_total{{node="{node}",outcome="ok"}}"#);
        assert_eq!(
            get(&after, &ok) - get(&before, &ok),
            1.0,
            "{node}: {after:?}"
        );
        let timed = format!(r#"mesh_node_activation_seconds_count{{node="{node}"}}"#);
        assert_eq!(get(&after, &timed) - get(&before, &timed), 1.0, "{node}");
    }
    // Every series the provisioned Grafana dashboard queries is one the gateway serves.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/observability/grafana/dashboards/nats-mesh.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let served: std::collections::HashSet<&str> =
        after.keys().map(|k| k.split('{').next().unwrap()).collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .filter(|w| w.starts_with("mesh_") || w.starts_with("process_"));
            for name in names {
                queried += 1;
                assert!(
                    served.contains(name),
                    "the dashboard's {expr:?} queries {name}, which /metrics does not serve"
                );
            }
        }
    }
    assert!(queried >= 8, "{queried}");
    assert!(get(&after, "process_resident_memory_bytes{}") > 1e6);
    assert!(get(&after, "process_open_fds{}") > 0.0);
    assert!(after.contains_key("process_cpu_seconds_total{}"));
    assert_eq!(
        get(
            &after,
            &format!(
                r#"mesh_gateway_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    let timed =
        r#"mesh_gateway_http_request_duration_seconds_count{method="POST",route="/activate"}"#;
    assert!(get(&after, timed) >= 2.0, "{after:?}");

    // A scraper asking for OpenMetrics gets it, and its parser reads the same counters.
    let r = app
        .http
        .get(app.url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let open = parse_prometheus(&r.text().await.unwrap(), true);
    assert_eq!(get(&open, not_found), 1.0, "{open:?}");
    assert!(get(&open, "process_resident_memory_bytes{}") > 1e6);
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Vec<u8>>>>);

#[handler]
async fn collect(body: Body, Data(seen): Data<&Collected>) -> &'static str {
    let bytes = body.into_vec().await.unwrap_or_default();
    seen.0.lock().unwrap().push(bytes);
    ""
}

#[tokio::test]
async fn nodes_export_traces_over_otlp_when_configured() {
    // A stand-in OTLP/HTTP collector that keeps what it receives.
    let collected = Collected::default();
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/v1/traces", post(collect))
        .data(collected.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));

    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    // Protobuf by default; JSON when OTEL_EXPORTER_OTLP_PROTOCOL asks for it.
    for (node, protocol) in [("E", None), ("J", Some("http/json"))] {
        let mut command = std::process::Command::new(handlers_bin());
        command
            .args(["--nats-url", &server.url(), "-n", node])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        if let Some(protocol) = protocol {
            command.env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
        }
        let mut process = Proc::spawn("handlers", &mut command);
        let n = name(node);
        eventually("the node serves", Duration::from_secs(10), || async {
            let r =
                mesh_core::call::activate(&client, &n, &Default::default(), Duration::from_secs(1))
                    .await;
            (r.outcome == schemas::Outcome::Ok).then_some(())
        })
        .await;
        let span_name = format!("process activate.{node}");
        let body = eventually(
            "spans reach the collector",
            Duration::from_secs(10),
            || async {
                let seen = collected.0.lock().unwrap();
                seen.iter()
                    .find(|b| contains(b, span_name.as_bytes()))
                    .cloned()
            },
        )
        .await;
        assert!(
            contains(&body, format!("node-{node}").as_bytes()),
            "the service name is per node"
        );
        let json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
        assert_eq!(json, protocol.is_some(), "{node}: JSON exactly when asked");
        process.kill();
    }

    // A process serving several nodes exports each node's spans under its own service:
    // MA's own span and its call to MB under node-MA, MB's under node-MB.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.toml");
    std::fs::write(
        &file,
        "[[node]]\nname = \"MA\"\ndownstream = [\"MB\"]\nwork_ms = 0\n\n[[node]]\nname = \"MB\"\nwork_ms = 0\nfail_rate = 0.0\n\n[[node]]\nname = \"MC\"\nwork_ms = 0\nfail_rate = 1.0\n",
    )
    .unwrap();
    let _two = Proc::spawn(
        "handlers",
        std::process::Command::new(handlers_bin())
            .args(["--nats-url", &server.url(), "--topology"])
            .arg(&file)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    );
    let ma = name("MA");
    eventually("MA serves", Duration::from_secs(10), || async {
        let r =
            mesh_core::call::activate(&client, &ma, &Default::default(), Duration::from_secs(1))
                .await;
        (r.outcome == schemas::Outcome::Ok).then_some(())
    })
    .await;
    // {service: span names} over everything received in JSON.
    let services = || {
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for body in collected.0.lock().unwrap().iter() {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                continue;
            };
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        out.entry(service.clone())
                            .or_default()
                            .push(span["name"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
        }
        out
    };
    let seen = eventually("both nodes' services", Duration::from_secs(10), || async {
        let seen = services();
        let has = |service: &str, span: &str| {
            seen.get(service)
                .is_some_and(|spans| spans.iter().any(|s| s == span))
        };
        (has("node-MA", "process activate.MA")
            && has("node-MA", "send activate.MB")
            && has("node-MB", "process activate.MB")
            && has("node-MB", "send status.MB"))
        .then_some(seen)
    })
    .await;
    // The exported spans as the collector decodes them: a failed activation's span has
    // status ERROR (2) with a message, and numbers are integers.
    let mc = name("MC");
    let failed =
        mesh_core::call::activate(&client, &mc, &Default::default(), Duration::from_secs(5)).await;
    assert_ne!(failed.outcome, schemas::Outcome::Ok);
    let span = eventually("MC's span", Duration::from_secs(10), || async {
        collected.0.lock().unwrap().iter().find_map(|body| {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["resourceSpans"]
                .as_array()?
                .iter()
                .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
                .flat_map(|ss| ss["spans"].as_array().into_iter().flatten())
                .find(|s| s["name"] == "process activate.MC")
                .cloned()
        })
    })
    .await;
    assert_eq!(span["status"]["code"], 2, "{span}");
    assert!(
        span["status"]["message"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{span}"
    );
    let attribute = |key: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
            .unwrap_or_else(|| panic!("{key} in {span}"))
    };
    let code = attribute("mesh.code");
    assert!(code.get("intValue").is_some(), "an integer: {code}");
    assert_eq!(attribute("messaging.system")["stringValue"], "nats");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    for (service, spans) in &seen {
        if service == "node-MA" || service == "node-MB" {
            let node = &service["node-".len()..];
            for span in spans.iter().filter(|s| s.starts_with("process ")) {
                assert_eq!(span, &format!("process activate.{node}"), "{seen:?}");
            }
        }
    }
    assert!(!seen.contains_key("nats-mesh-nodes"), "{seen:?}");
}

#[test]
fn otel_settings_this_build_cannot_honour_stop_it_at_start() {
    for (var, value, says) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "not supported by this build",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "thrift",
            "not an OTLP protocol",
        ),
        ("OTEL_PROPAGATORS", "tracecontext,b3", "b3 is not supported"),
    ] {
        let out = std::process::Command::new(handlers_bin())
            .args(["-n", "X", "--nats-url", "nats://127.0.0.1:1"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{var}={value}: {stderr}");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn json_log_lines_inside_an_activation_carry_its_trace_id() {
    // An endpoint that takes the spans and drops them.
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/v1/traces", post(collect))
        .data(Collected::default());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    let server = NatsServer::start();
    let node = Proc::spawn(
        "handlers",
        std::process::Command::new(handlers_bin())
            .args([
                "--nats-url",
                &server.url(),
                "-n",
                "E",
                "--log-format",
                "json",
            ])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("RUST_LOG", "info"),
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01").as_str(),
    );
    // A request whose path already holds E: refused as a loop, which E logs.
    let looped = json!({"path": ["E"], "timeout_ms": 1000}).to_string();
    let line = eventually(
        "E's log line of the loop",
        Duration::from_secs(20),
        || async {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                client.request_with_headers("activate.E", headers.clone(), looped.clone().into()),
            )
            .await;
            node.output()
                .lines()
                .find(|l| l.contains("loop refused"))
                .map(String::from)
        },
    )
    .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["span"]["trace_id"], trace_id, "{line}");
    assert_eq!(
        line["span"]["span_id"].as_str().map(str::len),
        Some(16),
        "{line}"
    );
    assert!(
        !node.output().contains('\u{1b}'),
        "no ANSI codes in a log file"
    );
}

/// The `traceparent` of a NATS message, split: (trace id, parent id).
fn traceparent_of(message: &async_nats::Message) -> Option<(String, String)> {
    let value = message
        .headers
        .as_ref()?
        .get("traceparent")?
        .as_str()
        .to_string();
    let parts: Vec<_> = value.split('-').collect();
    (parts.len() == 4 && parts[0] == "00").then(|| (parts[1].to_string(), parts[2].to_string()))
}

#[tokio::test]
async fn the_trace_context_travels_without_any_exporter() {
    // No OpenTelemetry here: nothing is exported, the W3C context goes on regardless.
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let spy = app.nats.clone();
    let mut to_d = spy.subscribe("activate.D").await.unwrap();
    let mut status = spy.subscribe("status.>").await.unwrap();
    mesh_core::bus::sync(&spy).await.unwrap();

    // No traceparent from the caller: the gateway starts a trace.
    let r = app.activate_response(json!({})).await;
    assert_eq!(r.status(), 200);
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_string();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "0".repeat(32));
    let seen = next_within(&mut to_d, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        traceparent_of(&seen).unwrap().0,
        trace,
        "D's request continues it"
    );
    for _ in 0..16 {
        let m = next_within(&mut status, Duration::from_secs(10))
            .await
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(e["trace_id"], trace.as_str(), "{e}");
    }

    // A caller's context is continued, with its tracestate and baggage.
    let caller = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .http
        .post(app.url("/activate"))
        .header("traceparent", format!("00-{caller}-00f067aa0ba902b7-01"))
        .header("tracestate", "vendor=abc")
        .header("baggage", "tenant=blue")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-trace-id"], caller);
    let seen = next_within(&mut to_d, Duration::from_secs(10))
        .await
        .unwrap();
    let (trace, parent) = traceparent_of(&seen).unwrap();
    assert_eq!(trace, caller);
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "each hop has a span id of its own"
    );
    let headers = seen.headers.as_ref().unwrap();
    assert_eq!(headers.get("tracestate").unwrap().as_str(), "vendor=abc");
    assert_eq!(headers.get("baggage").unwrap().as_str(), "tenant=blue");
    // An invalid one is replaced by a new trace.
    let r = app
        .http
        .post(app.url("/activate"))
        .header("traceparent", "00-zz-00f067aa0ba902b7-01")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let fresh = r.headers()["x-trace-id"].to_str().unwrap().to_string();
    assert!(fresh.len() == 32 && fresh != caller);
}

#[tokio::test]
async fn otel_propagators_none_sends_no_trace_context() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut to_leaf = client.subscribe("activate.PL").await.unwrap();
    let mut status = client.subscribe("status.PR").await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();
    for (propagators, carried) in [(None, true), (Some("none"), false)] {
        let mut command = std::process::Command::new(handlers_bin());
        command.args(["--nats-url", &server.url(), "-n", "PR", "-s", "PL"]);
        if let Some(p) = propagators {
            command.env("OTEL_PROPAGATORS", p);
        }
        let mut root = Proc::spawn("handlers", &mut command);
        let pr = name("PR");
        // PL is not served: the spy sees PR's call to it, and PR times out on it.
        let reply = eventually("PR answers", Duration::from_secs(10), || async {
            let request = schemas::ActivationRequest {
                timeout_ms: Some(500),
                ..Default::default()
            };
            let r = mesh_core::call::activate(&client, &pr, &request, Duration::from_secs(5)).await;
            r.instance.is_some().then_some(r)
        })
        .await;
        let seen = next_within(&mut to_leaf, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(traceparent_of(&seen).is_some(), carried, "{propagators:?}");
        let event = loop {
            let m = next_within(&mut status, Duration::from_secs(10))
                .await
                .unwrap();
            let e: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if e["activation_id"] == reply.activation_id.as_str() {
                break e;
            }
        };
        assert_eq!(event["trace_id"].is_string(), carried, "{event}");
        root.kill();
        while next_within(&mut to_leaf, Duration::from_millis(200))
            .await
            .is_some()
        {}
    }
}

async fn next_within(
    sub: &mut async_nats::Subscriber,
    limit: Duration,
) -> Option<async_nats::Message> {
    tokio::time::timeout(limit, futures::StreamExt::next(sub))
        .await
        .ok()
        .flatten()
}
