//! `docker compose up`, for real: the images built with no registry (`scripts/images`),
//! the stack started on free host ports, an activation through it and its events on
//! the stream, a scaled-out node, NATS and the gateway restarted (the stack recovers by
//! itself and the JetStream history survives), and `down -v` leaving nothing behind.
//!
//! Needs a Docker engine: when none answers, the test says so on stderr and passes
//! (the README's test command says so too, in its summary).
#![allow(clippy::unwrap_used, missing_docs)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use testsupport::{eventually, free_port};

mod common;

use common::*;

#[tokio::test]
#[ignore = "external: needs a Docker engine and docker-compose; ./scripts/test runs this"]
async fn compose_stack_runs_scales_recovers_and_cleans_up() {
    if !engine_answers() {
        eprintln!("\n*** SKIPPED: no Docker engine answers `docker info`: the compose stack was NOT tested ***\n");
        return;
    }
    let started = Instant::now();
    build_images(&["prometheus"]);
    let images_took = started.elapsed();

    let gateway_port = free_port();
    let prometheus_port = free_port();
    let stack = Stack {
        file: "compose.yaml",
        project: format!("meshtest{}", std::process::id()),
        env: vec![
            ("GATEWAY_PORT", gateway_port.to_string()),
            ("NATS_PORT", free_port().to_string()),
            ("NATS_MONITOR_PORT", free_port().to_string()),
            ("PROMETHEUS_PORT", prometheus_port.to_string()),
        ],
        base: format!("http://127.0.0.1:{gateway_port}"),
    };
    let base = stack.base.clone();
    let http = reqwest::Client::new();
    stack.compose(&["up", "-d"]);
    let topology = || get_json(&http, format!("{base}/topology"));
    let instances = |t: &Value, node: &str| {
        t["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["name"] == node))
            .and_then(|n| n["instances"].as_array())
            .map_or(0, Vec::len)
    };
    eventually("8 nodes discovered", Duration::from_secs(90), || async {
        let t = topology().await?;
        let serving = t["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["instances"].as_array().is_some_and(|i| !i.is_empty()))
            .count();
        (serving == 8).then_some(())
    })
    .await;
    let up_took = started.elapsed() - images_took;

    // One activation: the 8-node tree, and its 16 status events on the stream.
    let events = tokio::spawn({
        let base = base.clone();
        async move { statuses(&base, "compose-1", None, 16).await }
    });
    // The stream is open once the gateway counts it.
    eventually("the stream is open", Duration::from_secs(10), || async {
        let h = get_json(&http, format!("{base}/healthz")).await?;
        (h["sse_clients"].as_u64()? >= 1).then_some(())
    })
    .await;
    let (status, reply) = activate(
        &http,
        &base,
        json!({"activation_id": "compose-1", "timeout_ms": 5000}),
    )
    .await;
    assert!(answered_by_all(status, &reply), "{status} {reply:#}");
    let ids = events.await.unwrap();
    let first_id = *ids.iter().min().unwrap();

    // A WebAssembly function deployed to the stack is served by its runner at once.
    let echo = wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/wasm/echo.wat"
    ))
    .unwrap();
    let deployed = http
        .put(format!("{base}/functions/ECHO"))
        .header("content-type", "application/wasm")
        .body(echo)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status().as_u16(), 201);
    let echoed = eventually(
        "the runner serves ECHO",
        Duration::from_secs(30),
        || async {
            let (_, reply) = activate(&http, &base, json!({"node": "ECHO", "input": "hi"})).await;
            (reply["outcome"] == "ok").then_some(reply)
        },
    )
    .await;
    assert_eq!(echoed["result"]["input"], "hi", "{echoed}");

    // Prometheus (profile `metrics`, its image made from Debian's package) scrapes the
    // gateway, and the nodes' activations are in it.
    stack.compose(&["--profile", "metrics", "up", "-d", "prometheus"]);
    let query = |q: &'static str| {
        let http = http.clone();
        async move {
            let url = format!("http://127.0.0.1:{prometheus_port}/api/v1/query?query={q}");
            let v = get_json(&http, url).await?;
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        }
    };
    eventually(
        "Prometheus scrapes the gateway",
        Duration::from_secs(90),
        || async { (query("up%7Bjob%3D%22gateway%22%7D").await? == 1.0).then_some(()) },
    )
    .await;
    eventually(
        "the nodes' activations in Prometheus",
        Duration::from_secs(30),
        || async { (query("sum(mesh_node_activations_total)").await? >= 8.0).then_some(()) },
    )
    .await;

    // Three TM replicas: discovered, and activations spread over them.
    stack.compose(&["up", "-d", "--scale", "tm=3"]);
    eventually("3 TM instances", Duration::from_secs(60), || async {
        (instances(&topology().await?, "TM") == 3).then_some(())
    })
    .await;
    let mut tm_instances = HashSet::new();
    for _ in 0..30 {
        let (status, reply) = activate(&http, &base, json!({"timeout_ms": 5000})).await;
        if answered_by_all(status, &reply) {
            if let Some(tm) = tree(&reply).into_iter().find(|r| r["node"] == "TM") {
                tm_instances.insert(tm["instance"].to_string());
            }
        }
        if tm_instances.len() >= 2 {
            break;
        }
    }
    assert!(
        tm_instances.len() >= 2,
        "activations all went to {tm_instances:?}"
    );

    // NATS and the gateway restart: everything reconnects by itself, and the stream
    // (on its volume) still holds the events from before.
    let restart = Instant::now();
    stack.compose(&["restart", "nats", "gateway"]);
    eventually(
        "activations succeed again",
        Duration::from_secs(90),
        || async {
            let (status, reply) = activate(&http, &base, json!({"timeout_ms": 5000})).await;
            answered_by_all(status, &reply).then_some(())
        },
    )
    .await;
    let recovered = restart.elapsed();
    let replayed = statuses(&base, "compose-1", Some(first_id - 1), 16).await;
    assert_eq!(
        replayed.iter().copied().collect::<HashSet<_>>(),
        ids.iter().copied().collect::<HashSet<_>>(),
        "the events from before the restart, from JetStream"
    );

    stack.compose(&["--profile", "metrics", "down", "-v", "--remove-orphans"]);
    assert_eq!(
        stack.leftovers(),
        Vec::<String>::new(),
        "down -v left things behind"
    );
    eprintln!(
        "compose: images {images_took:?}, up {up_took:?}, recovery after restarting nats and the gateway {recovered:?}, whole test {:?}",
        started.elapsed()
    );
}
