//! Faults: NATS restarts, a node killed mid-activation, a NATS cluster losing a server,
//! two gateways on one bus.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt;
use handlers::{runtime::Running, Settings};
use mesh_core::bus::NatsArgs;
use serde_json::json;

use crate::helpers::*;

/// Upper bound of every wait on a condition (generous: the suite runs on busy machines).
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn nats_restart_is_survived_by_gateway_nodes_and_streams() {
    let mut app = spawn_app(seed_zero_work(), |_| {}).await;
    let mut sse = app.sse("", None).await;
    let bus = sse.next_of("bus", WAIT).await.unwrap();
    assert_eq!(bus.json()["connected"], true);

    app.server.stop();
    let down = sse
        .next_of("bus", WAIT)
        .await
        .expect("the stream stays open and says the bus is down");
    assert_eq!(down.json()["connected"], false);
    let started = Instant::now();
    let (status, body) = app.activate(json!({})).await;
    let outage_answer = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(outage_answer < Duration::from_secs(2), "{outage_answer:?}");
    assert_eq!(app.get_json("/readyz").await.0, 503);

    app.server.restart();
    let up = sse
        .next_of("bus", Duration::from_secs(20))
        .await
        .expect("reconnected");
    assert_eq!(up.json()["connected"], true);
    assert_eq!(app.get_json("/readyz").await.0, 200);
    // The nodes reconnect on their own; the same stream carries the new events.
    let tree = eventually(
        "activations work again",
        Duration::from_secs(20),
        || async {
            let (status, body) = app.activate(json!({})).await;
            (status == 200).then_some(body)
        },
    )
    .await;
    let frame = sse.next_of("status", WAIT).await.unwrap();
    assert!(frame.id.is_some());
    let mut ours = 0;
    let mut frame = Some(frame);
    while let Some(f) = frame {
        if f.json()["activation_id"] == tree["activation_id"] {
            ours += 1;
            if ours == 16 {
                break;
            }
        }
        frame = sse.next_of("status", WAIT).await;
    }
    assert_eq!(ours, 16, "every event of the activation after the restart");
}

#[tokio::test]
async fn a_node_killed_mid_activation_is_reported_within_the_budget() {
    let app = spawn_app(vec![spec("P", &["K"], 0)], |_| {}).await;
    let bin = Path::new(env!("CARGO_BIN_EXE_gateway"))
        .parent()
        .unwrap()
        .join("handlers");
    let mut k = Proc::spawn(
        "handlers",
        std::process::Command::new(bin).args([
            "--nats-url",
            &app.server.url(),
            "-n",
            "K",
            "-t",
            "3000",
        ]),
    );
    app.wait_for_nodes(2).await;
    let mut k_status = app.nats.subscribe("status.K").await.unwrap();
    mesh_core::bus::sync(&app.nats).await.unwrap();

    let started = Instant::now();
    let activation = tokio::spawn({
        let http = app.http.clone();
        let url = app.url("/activate");
        async move {
            let r = http
                .post(url)
                .json(&json!({"node": "P", "timeout_ms": 1500}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    });
    // K is working: kill it (SIGKILL, no goodbye).
    tokio::time::timeout(WAIT, k_status.next())
        .await
        .unwrap()
        .unwrap();
    k.kill();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), activation)
        .await
        .expect("the activation never hangs")
        .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    let child = &body["children"][0];
    assert_eq!(child["node"], "K");
    assert!(
        child["outcome"] == "timeout" || child["outcome"] == "unavailable",
        "{child}"
    );
    assert!(took < Duration::from_millis(1500 + 400), "{took:?}");
}

#[tokio::test]
async fn an_activation_through_one_gateway_shows_on_another() {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let other = Gw::start(&app.server.url(), |_| {}).await;
    let mut other_sse = other.sse("", None).await;
    let (status, tree) = app.activate(json!({})).await;
    assert_eq!(status, 200);
    let frames = other_sse.statuses(16, WAIT).await;
    for f in frames {
        let e = f.json();
        assert_eq!(e["activation_id"], tree["activation_id"]);
        assert_eq!(e["relayed_by"], other.state.relay.gateway_id());
    }
    assert_ne!(other.state.relay.gateway_id(), app.state.relay.gateway_id());
}

#[tokio::test]
async fn a_cluster_losing_a_server_keeps_activating() {
    let mut cluster = testsupport::start_cluster(3);
    let urls: Vec<String> = cluster.iter().map(|s| s.url()).collect();
    let list = |first: usize| {
        let mut l = vec![urls[first].clone()];
        l.extend(
            urls.iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, u)| u.clone()),
        );
        l.join(",")
    };
    // Routes are up once a message crosses from server 2 to server 0.
    let a = async_nats::connect(urls[0].as_str()).await.unwrap();
    let c = async_nats::connect(urls[2].as_str()).await.unwrap();
    let mut probe = a.subscribe("probe").await.unwrap();
    mesh_core::bus::sync(&a).await.unwrap();
    let routed = async {
        loop {
            c.publish("probe", "x".into()).await.unwrap();
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), probe.next()).await
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), routed)
        .await
        .expect("the cluster routes within 10 s");

    // Nodes on server 0, the gateway on server 1.
    let nodes_client = NatsArgs::for_url(list(0)).connect("nodes").await.unwrap();
    let _nodes = Running::start(nodes_client, seed_zero_work(), Settings::default())
        .await
        .unwrap();
    let server1 = cluster.remove(1);
    let app = spawn_on_url(server1, &list(1), vec![], |_| {}).await;
    app.wait_for_nodes(8).await;
    let (status, _) = app.activate(json!({})).await;
    assert_eq!(status, 200);

    // Server 0 dies: the nodes fail over to another server.
    cluster[0].stop();
    let started = Instant::now();
    eventually(
        "activations continue after fail-over",
        Duration::from_secs(20),
        || async {
            let (status, _) = app.activate(json!({"timeout_ms": 1000})).await;
            (status == 200).then_some(())
        },
    )
    .await;
    let recovered = started.elapsed();
    for _ in 0..10 {
        let (status, _) = app.activate(json!({})).await;
        assert_eq!(status, 200);
    }
    eprintln!("cluster fail-over: activations succeeded again after {recovered:?}");
}
