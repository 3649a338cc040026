//! The seed topology end to end, concurrency and deadlines.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use schemas::{subject, ActivationRequest, NodeState, Outcome, StatusEvent};

use crate::helpers::*;

#[tokio::test]
async fn seed_topology_end_to_end() {
    let server = NatsServer::start();
    let running = serve(&server, seed_zero_work()).await;
    let client = connect(&server).await;
    let mut status = client.subscribe(subject::STATUS_ALL).await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();

    let reply = activate(&client, "UI", ActivationRequest::default()).await;

    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    assert_eq!(reply.code, 200);
    assert_eq!(reply.count(), 8);
    let order: Vec<_> = reply.iter().map(|r| r.node.to_string()).collect();
    assert_eq!(order, ["UI", "D", "P", "V", "T", "DS", "TM", "H"]);
    for r in reply.iter() {
        assert_eq!(r.activation_id, reply.activation_id);
        assert_eq!(r.outcome, Outcome::Ok);
        assert_eq!(r.instance.as_ref(), running.instances().get(&r.node));
    }

    let mut events: Vec<StatusEvent> = Vec::new();
    while events.len() < 16 {
        let msg = next_within(&mut status, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("only {} status events arrived", events.len()));
        events.push(StatusEvent::decode(&msg.subject, &msg.payload).unwrap());
    }
    let mut per_node: HashMap<String, Vec<NodeState>> = HashMap::new();
    for e in &events {
        assert_eq!(
            e.activation_id.as_ref().map(|a| a.as_str()),
            Some(reply.activation_id.as_str())
        );
        per_node
            .entry(e.node.to_string())
            .or_default()
            .push(e.state);
    }
    assert_eq!(per_node.len(), 8);
    for (node, states) in per_node {
        assert_eq!(states, [NodeState::Running, NodeState::Ok], "{node}");
    }
    // A parent starts running before its child does.
    let first_running = |n: &str| {
        events
            .iter()
            .position(|e| e.node.as_str() == n && e.state == NodeState::Running)
            .unwrap()
    };
    assert!(first_running("UI") < first_running("D"));
    assert!(first_running("V") < first_running("TM"));
    assert!(next_within(&mut status, Duration::from_millis(200))
        .await
        .is_none());
}

#[tokio::test]
async fn children_run_concurrently() {
    let server = NatsServer::start();
    let _running = serve(
        &server,
        vec![
            spec("V", &["T", "DS", "TM"], 0),
            spec("T", &[], 300),
            spec("DS", &[], 200),
            spec("TM", &[], 400),
        ],
    )
    .await;
    let client = connect(&server).await;
    let started = Instant::now();
    let reply = activate(&client, "V", ActivationRequest::default()).await;
    let waited = started.elapsed();

    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    // Close to the slowest child (400 ms), far from the sum (900 ms).
    assert!(reply.elapsed_ms >= 400, "{} ms", reply.elapsed_ms);
    assert!(
        reply.elapsed_ms < 650,
        "{} ms: children ran one after another?",
        reply.elapsed_ms
    );
    assert!(waited < Duration::from_millis(700), "{waited:?}");
}

#[tokio::test]
async fn node_handles_activations_concurrently() {
    let server = NatsServer::start();
    let _running = serve(&server, vec![spec("slow", &[], 400)]).await;
    let client = connect(&server).await;
    let started = Instant::now();
    let replies = futures::future::join_all(
        (0..20).map(|_| activate(&client, "slow", ActivationRequest::default())),
    )
    .await;
    assert!(replies.iter().all(|r| r.outcome == Outcome::Ok));
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn deadline_stops_slow_leaf_with_504() {
    let server = NatsServer::start();
    let _running = serve(&server, vec![spec("TM", &[], 1500)]).await;
    let client = connect(&server).await;
    let started = Instant::now();
    let reply = activate(
        &client,
        "TM",
        ActivationRequest {
            timeout_ms: Some(300),
            ..Default::default()
        },
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(
        (reply.outcome, reply.code),
        (Outcome::Timeout, 504),
        "{reply:#?}"
    );
    assert!(reply.instance.is_some(), "the node itself answered");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_millis(450), "{waited:?}");
}

#[tokio::test]
async fn deadline_travels_down_the_tree() {
    let server = NatsServer::start();
    let _running = serve(
        &server,
        vec![
            spec("A", &["B"], 0),
            spec("B", &["C"], 0),
            spec("C", &[], 2000),
        ],
    )
    .await;
    let client = connect(&server).await;
    let mut c_status = client.subscribe("status.C").await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();
    let started = Instant::now();
    let reply = activate(
        &client,
        "A",
        ActivationRequest {
            timeout_ms: Some(400),
            ..Default::default()
        },
    )
    .await;
    // A answered without waiting for C's 2 s of work (the bound leaves room for a busy
    // machine; the budget is 400 ms).
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.code, 502, "{reply:#?}");
    // C timed out: in its own reply, or (when its reply is later than B's margin, as on
    // a loaded machine) in the one B makes for it.
    let c = reply.iter().find(|r| r.node.as_str() == "C").unwrap();
    assert_eq!((c.outcome, c.code), (Outcome::Timeout, 504), "{reply:#?}");
    // C itself received the shrunken deadline and stopped its work there: its final
    // status event says 504, long before its 2 s of work would have ended.
    let final_event = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = futures::StreamExt::next(&mut c_status).await.unwrap();
            let e: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if e["state"] != "running" {
                break e;
            }
        }
    })
    .await
    .expect("C's final status event");
    assert_eq!(final_event["code"], 504, "{final_event}");
    assert!(
        final_event["elapsed_ms"].as_u64().unwrap() < 1000,
        "{final_event}"
    );
}

#[tokio::test]
async fn failures_propagate_as_502_with_codes() {
    let server = NatsServer::start();
    let mut leaf = spec("L", &[], 0);
    leaf.work = handlers::Work::simulated(0, 1.0);
    let _running = serve(
        &server,
        vec![spec("P", &["L", "M"], 0), leaf, spec("M", &[], 0)],
    )
    .await;
    let client = connect(&server).await;
    let mut status = client.subscribe("status.L").await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();
    let reply = activate(&client, "P", ActivationRequest::default()).await;
    assert_eq!((reply.outcome, reply.code), (Outcome::Failed, 502));
    let l = &reply.children[0];
    assert_eq!(l.outcome, Outcome::Failed);
    assert!(matches!(l.code, 500 | 502));
    assert!(reply.message.contains('L'), "{}", reply.message);
    assert_eq!(reply.children[1].outcome, Outcome::Ok);
    let mut states = Vec::new();
    for _ in 0..2 {
        let m = next_within(&mut status, Duration::from_secs(5))
            .await
            .unwrap();
        states.push(StatusEvent::decode(&m.subject, &m.payload).unwrap());
    }
    assert_eq!(states[0].state, NodeState::Running);
    assert_eq!(states[1].state, NodeState::Failed);
    assert_eq!(states[1].code, Some(l.code));
}

#[tokio::test]
async fn acknowledged_status_events_are_stored_once() {
    use futures::StreamExt;
    let server = NatsServer::start_jetstream();
    let client = connect(&server).await;
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ACKED".into(),
            subjects: vec!["status.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let settings = handlers::Settings {
        status_ack: true,
        ..handlers::Settings::default()
    };
    let running = serve_with(
        &server,
        vec![spec("A", &["B"], 0), spec("B", &[], 0)],
        settings,
    )
    .await;
    let reply = activate(&client, "A", ActivationRequest::default()).await;
    assert_eq!(reply.outcome, schemas::Outcome::Ok);
    // Shutdown waits for the acknowledged publishes.
    running.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stream.info().await.unwrap().state.messages, 4);
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut states = Vec::new();
    while let Some(Ok(m)) = messages.next().await {
        assert!(
            m.headers
                .as_ref()
                .is_some_and(|h| h.get(async_nats::header::NATS_MESSAGE_ID).is_some()),
            "{:?}",
            m.headers
        );
        let e: schemas::StatusEvent = serde_json::from_slice(&m.payload).unwrap();
        states.push(format!("{} {:?}", e.node, e.state));
    }
    // Per node, running before its final state.
    for node in ["A", "B"] {
        let mine: Vec<_> = states.iter().filter(|s| s.starts_with(node)).collect();
        assert_eq!(mine, [&format!("{node} Running"), &format!("{node} Ok")]);
    }
}
