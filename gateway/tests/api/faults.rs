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
        assert_eq!(e["relayed_by"], other.state.gateway_id());
    }
    assert_ne!(other.state.gateway_id(), app.state.gateway_id());
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

#[tokio::test]
async fn the_relay_survives_losing_the_server_of_its_stream_consumer() {
    let mut cluster = testsupport::start_jetstream_cluster(3);
    let all: Vec<String> = cluster.iter().map(|s| s.url()).collect();
    let all = all.join(",");
    let probe = NatsArgs::for_url(all.clone())
        .connect("probe")
        .await
        .unwrap();
    let js = async_nats::jetstream::new(probe);
    // The JetStream cluster is up once it takes a stream of three replicas.
    eventually(
        "a JetStream cluster of 3",
        Duration::from_secs(30),
        || async {
            let config = async_nats::jetstream::stream::Config {
                name: "PROBE".into(),
                num_replicas: 3,
                ..Default::default()
            };
            js.get_or_create_stream(config).await.ok()?;
            js.delete_stream("PROBE").await.ok()
        },
    )
    .await;

    let nodes_client = NatsArgs::for_url(all.clone())
        .connect("nodes")
        .await
        .unwrap();
    let settings = Settings {
        status_ack: true,
        ..Settings::default()
    };
    let _nodes = Running::start(nodes_client, seed_zero_work(), settings)
        .await
        .unwrap();
    // The relay's consumer has one replica, on any server of the stream; losing the
    // gateway's own server is a reconnection (tested above), so the gateway is started
    // until its consumer is elsewhere.
    let mut attempt = 0;
    let (gateway, host) = loop {
        attempt += 1;
        let gateway = Gw::start(&all, |s| {
            if let Some(stream) = s.stream.as_mut() {
                stream.replicas = 3;
            }
        })
        .await;
        let stream = js.get_stream("MESH_STATUS").await.unwrap();
        let host = eventually("the relay's consumer", WAIT, || {
            relay_consumer_host(&stream)
        })
        .await;
        let own = gateway.state.client.server_info().server_name;
        if host != own || attempt == 8 {
            break (gateway, host);
        }
        drop(gateway);
        eventually("the consumer let go", WAIT, || async {
            relay_consumer_host(&stream).await.is_none().then_some(())
        })
        .await;
    };
    assert!(
        gateway.state.history.is_some(),
        "the gateway relays from the stream"
    );
    let http = reqwest::Client::new();
    let activate = || async {
        let response = http
            .post(format!("{}/activate", gateway.base))
            .json(&json!({"timeout_ms": 2000}))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())?;
        let reply: serde_json::Value = response.json().await.ok()?;
        reply["activation_id"].as_str().map(String::from)
    };
    let mut live = gateway.sse("", None).await;
    let first = eventually("the seed tree answers", Duration::from_secs(30), activate).await;
    events_of(&mut live, &first, "before the loss").await;

    // The server holding the relay's (single-replica) consumer dies.
    let index: usize = host.trim_start_matches('s').parse().unwrap();
    cluster[index].stop();
    let killed = Instant::now();

    // Activations go on, and every event of one that started after the loss reaches a
    // stream opened before it: the relay consumes anew once its consumer is missed
    // (two idle heartbeats, 2 s).
    let after = eventually(
        "activations after the loss",
        Duration::from_secs(30),
        activate,
    )
    .await;
    events_of(&mut live, &after, &format!("after losing {host}")).await;
    eprintln!(
        "lost {host}, which held the relay's consumer: the events of an activation after it arrived {:?} after the loss",
        killed.elapsed()
    );
}

/// Reads `sse` until the 16 status events of `activation` arrived, each within 25 s.
async fn events_of(sse: &mut Sse, activation: &str, when: &str) {
    let mut got = 0;
    while got < 16 {
        let Some(frame) = sse.next_of("status", Duration::from_secs(25)).await else {
            panic!("{got} of 16 events of {activation} ({when}) within 25 s");
        };
        if frame.json()["activation_id"] == activation {
            got += 1;
        }
    }
}

/// The server holding the consumer a client is bound to on `stream` (the relay's).
async fn relay_consumer_host(stream: &async_nats::jetstream::stream::Stream) -> Option<String> {
    let mut consumers = stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = info.ok()?;
        if info.push_bound {
            return info.cluster?.leader;
        }
    }
    None
}
