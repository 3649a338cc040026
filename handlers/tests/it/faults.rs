//! Cycles, missing nodes, replicas, bad input, limits and shutdown.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use handlers::Settings;
use schemas::{subject, ActivationRequest, Outcome, StatusEvent};

use crate::helpers::*;

#[tokio::test]
async fn cycle_is_refused_with_508() {
    let server = NatsServer::start();
    let _running = serve(&server, vec![spec("A", &["B"], 0), spec("B", &["A"], 0)]).await;
    let client = connect(&server).await;
    let started = Instant::now();
    let reply = activate(&client, "A", ActivationRequest::default()).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.code, 502);
    let b = &reply.children[0];
    assert_eq!(b.code, 502);
    let inner = &b.children[0];
    assert_eq!(
        (inner.node.as_str(), inner.outcome, inner.code),
        ("A", Outcome::Loop, 508)
    );
    assert!(inner.children.is_empty(), "a refused loop calls nobody");
    assert!(inner.message.contains("A -> B"), "{}", inner.message);
}

#[tokio::test]
async fn missing_node_is_unavailable_at_once() {
    let server = NatsServer::start();
    let _running = serve(&server, vec![spec("P", &["ghost"], 0)]).await;
    let client = connect(&server).await;

    let started = Instant::now();
    let direct = activate(&client, "nobody", ActivationRequest::default()).await;
    assert_eq!((direct.outcome, direct.code), (Outcome::Unavailable, 503));
    assert!(started.elapsed() < Duration::from_millis(500));

    let reply = activate(&client, "P", ActivationRequest::default()).await;
    assert_eq!(reply.code, 502);
    assert_eq!(reply.children[0].outcome, Outcome::Unavailable);
    assert!(reply.elapsed_ms < 500, "{reply:#?}");
}

#[tokio::test]
async fn replicas_share_the_load() {
    let server = NatsServer::start();
    let one = serve(&server, vec![spec("R", &[], 0)]).await;
    let two = serve(&server, vec![spec("R", &[], 0)]).await;
    let ids: HashSet<_> = [&one, &two]
        .iter()
        .map(|r| r.instances().values().next().unwrap().clone())
        .collect();
    assert_eq!(ids.len(), 2);
    let client = connect(&server).await;
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let reply = activate(&client, "R", ActivationRequest::default()).await;
        assert_eq!(reply.outcome, Outcome::Ok);
        seen.insert(reply.instance.unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, ids, "both replicas answer from one queue group");
}

#[tokio::test]
async fn malformed_requests_get_400_and_change_nothing() {
    let server = NatsServer::start();
    let _running = serve(&server, vec![spec("M", &["N"], 0), spec("N", &[], 0)]).await;
    let client = connect(&server).await;
    let mut status = client.subscribe(subject::STATUS_ALL).await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();

    for bad in [
        &b"nope"[..],
        b"[]",
        b"{\"timeout_ms\":\"x\"}",
        b"{\"timeout_ms\":0}",
        b"{\"color\":\"red;}\"}",
        b"{\"path\":[\"a.*\"]}",
        b"{\"extra\":true}",
        b"\xff",
    ] {
        let reply = client.request("activate.M", bad.into()).await.unwrap();
        let headers = reply.headers.expect("error headers");
        assert_eq!(
            headers.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(),
            "400"
        );
        assert!(!headers.get(NATS_SERVICE_ERROR).unwrap().as_str().is_empty());
    }
    // The first status event after the refusals belongs to the valid activation.
    let reply = activate(&client, "M", ActivationRequest::default()).await;
    assert_eq!(reply.outcome, Outcome::Ok);
    let first = next_within(&mut status, Duration::from_secs(5))
        .await
        .unwrap();
    let event = StatusEvent::decode(&first.subject, &first.payload).unwrap();
    assert_eq!(
        event.activation_id.as_ref().map(|a| a.as_str()),
        Some(reply.activation_id.as_str())
    );

    // A request through the Rust caller reports the refusal as `rejected`.
    let refused = client
        .request("activate.M", "{\"timeout_ms\":-5}".into())
        .await
        .unwrap();
    assert!(refused.payload.is_empty());
}

#[tokio::test]
async fn fire_and_forget_publish_activates_without_reply() {
    let server = NatsServer::start();
    let _running = serve(&server, vec![spec("F", &[], 0)]).await;
    let client = connect(&server).await;
    let mut status = client.subscribe("status.F").await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();
    client.publish("activate.F", "".into()).await.unwrap();
    for _ in 0..2 {
        next_within(&mut status, Duration::from_secs(5))
            .await
            .expect("status events of a published activation");
    }
    let reply = activate(&client, "F", ActivationRequest::default()).await;
    assert_eq!(
        reply.outcome,
        Outcome::Ok,
        "the node survived a request with no reply subject"
    );
}

#[tokio::test]
async fn in_flight_limit_refuses_with_503() {
    let server = NatsServer::start();
    let _running = serve_with(
        &server,
        vec![spec("busy", &[], 500)],
        Settings {
            max_in_flight: 2,
            ..Settings::default()
        },
    )
    .await;
    let client = connect(&server).await;
    let replies = futures::future::join_all(
        (0..5).map(|_| activate(&client, "busy", ActivationRequest::default())),
    )
    .await;
    let ok = replies.iter().filter(|r| r.outcome == Outcome::Ok).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.code == 503).collect();
    assert_eq!(ok, 2, "{replies:#?}");
    assert_eq!(refused.len(), 3);
    assert!(refused
        .iter()
        .all(|r| r.outcome == Outcome::Rejected && r.message.contains("limit")));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_then_stops_serving() {
    let server = NatsServer::start();
    let running = serve(&server, vec![spec("G", &[], 300)]).await;
    let client = connect(&server).await;
    let mut status = client.subscribe("status.G").await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { activate(&client, "G", ActivationRequest::default()).await }
    });
    // Shut down once the activation is running.
    next_within(&mut status, Duration::from_secs(5))
        .await
        .unwrap();
    running.shutdown(Duration::from_secs(5)).await;

    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.outcome,
        Outcome::Ok,
        "in-flight activation finished: {reply:#?}"
    );
    let after = activate(&client, "G", ActivationRequest::default()).await;
    assert_eq!(after.outcome, Outcome::Unavailable);
}
