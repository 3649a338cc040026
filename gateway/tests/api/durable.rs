//! Nothing lost: status events kept in JetStream, SSE ids are stream sequences, and a
//! client that resumes with `Last-Event-ID` on any gateway, even a restarted one, gets
//! every event it missed, in order, with no duplicates.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::helpers::*;

/// Upper bound of every wait on a condition (generous: the suite runs on busy machines).
const WAIT: Duration = Duration::from_secs(20);

fn ids(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f.id.clone().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn resume_on_another_or_a_restarted_gateway_loses_nothing() {
    let app = spawn_on(NatsServer::start_jetstream(), seed_zero_work(), |c| {
        c.sse.history = 4
    })
    .await;
    assert!(
        app.state.history.is_some(),
        "JetStream is used when the server has it"
    );
    let other = Gw::start(&app.server.url(), |c| c.sse.history = 4).await;

    // Both gateways number events the same way: stream sequences.
    let mut on_app = app.sse("", None).await;
    let mut on_other = other.sse("", None).await;
    let (_, first) = app.activate(json!({})).await;
    let seen_app = on_app.statuses(16, WAIT).await;
    let seen_other = on_other.statuses(16, WAIT).await;
    assert_eq!(ids(&seen_app), ids(&seen_other));
    assert!(seen_app
        .iter()
        .all(|f| f.json()["activation_id"] == first["activation_id"]));
    let last = ids(&seen_app).last().copied().unwrap();
    drop((on_app, on_other));

    // Missed while away; the window (4 events) cannot cover it, the stream can.
    let (_, missed) = app.activate(json!({})).await;
    eventually("the missed events are relayed", WAIT, || async {
        (other.state.ingest.log().last_id() >= last + 16).then_some(())
    })
    .await;
    let mut resumed = other.sse("", Some(&last.to_string())).await;
    let frames = resumed.statuses(16, WAIT).await;
    assert_eq!(ids(&frames), (last + 1..=last + 16).collect::<Vec<_>>());
    assert!(frames
        .iter()
        .all(|f| f.json()["activation_id"] == missed["activation_id"]));
    assert!(frames
        .iter()
        .all(|f| f.json()["relayed_by"] == other.state.gateway_id()));
    assert!(resumed
        .next_of("lagged", Duration::from_millis(200))
        .await
        .is_none());

    // A gateway restarted from nothing still serves the past from the stream.
    drop(other);
    let (_, third) = app.activate(json!({})).await;
    let restarted = Gw::start(&app.server.url(), |_| {}).await;
    let mut from_restart = restarted.sse("", Some(&last.to_string())).await;
    let frames = from_restart.statuses(32, WAIT).await;
    assert_eq!(ids(&frames), (last + 1..=last + 32).collect::<Vec<_>>());
    assert!(frames[16..]
        .iter()
        .all(|f| f.json()["activation_id"] == third["activation_id"]));
    // Then live events follow without a duplicate.
    let (_, fourth) = app.activate(json!({})).await;
    let next = from_restart.next_of("status", WAIT).await.unwrap();
    assert_eq!(next.json()["activation_id"], fourth["activation_id"]);
    assert_eq!(next.id.unwrap().parse::<u64>().unwrap(), last + 33);
}

#[tokio::test]
async fn without_jetstream_the_gateway_relays_live() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    assert!(app.state.history.is_none());
    let mut sse = app.sse("", None).await;
    let (status, _) = app.activate(json!({"node": "A"})).await;
    assert_eq!(status, 200);
    assert_eq!(sse.statuses(2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn live_a_retried_event_is_relayed_once() {
    // A node publishing with acknowledgements retries with the same `Nats-Msg-Id`, and
    // a live gateway's subscription gets every attempt: only the first is relayed.
    let app = spawn_app(vec![], |_| {}).await;
    assert!(app.state.history.is_none());
    let mut sse = app.sse("", None).await;
    for (id, state) in [
        ("a", "running"),
        ("a", "running"),
        ("b", "ok"),
        ("a", "running"),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let body = json!({"node": "Q", "state": state, "at": "2026-01-01T00:00:00Z"});
        app.nats
            .publish_with_headers("status.Q", headers, body.to_string().into())
            .await
            .unwrap();
    }
    // Without an id, the same event twice is two events.
    for _ in 0..2 {
        let body = json!({"node": "Q", "state": "failed", "at": "2026-01-01T00:00:01Z"});
        app.nats
            .publish("status.Q", body.to_string().into())
            .await
            .unwrap();
    }
    let states: Vec<String> = sse
        .statuses(4, WAIT)
        .await
        .iter()
        .map(|f| f.json()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["running", "ok", "failed", "failed"]);
}

#[tokio::test]
async fn a_gateway_started_before_its_cluster_has_jetstream_relays_from_the_stream() {
    // One server of three: JetStream cannot answer until the others are up. The gateway
    // asks again (it does not settle for relaying live), and the peers start only once
    // it has asked twice.
    let args = testsupport::jetstream_cluster_args(3);
    let first = testsupport::start_all(&args[..1]);
    let url = first[0].url();
    let watcher = async_nats::connect(&url).await.unwrap();
    let mut asks = watcher
        .subscribe("$JS.API.STREAM.INFO.MESH_STATUS")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let starting = tokio::spawn(async move { Gw::start(&url, |_| {}).await });
    for ask in 1..=2 {
        tokio::time::timeout(Duration::from_secs(30), asks.next())
            .await
            .unwrap_or_else(|_| panic!("the gateway asked for the stream {} time(s)", ask - 1));
    }
    let _rest = testsupport::start_all(&args[1..]);
    let gateway = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("the gateway started once the cluster had JetStream")
        .unwrap();
    assert!(
        gateway.state.history.is_some(),
        "the gateway relays from the stream"
    );
}

#[tokio::test]
async fn an_id_the_gateway_has_not_relayed_yet_is_no_gap() {
    // A client moving from a gateway ahead of this one brings an id this one has not
    // relayed yet, but the stream has: it is skipped to, not reported as lost.
    let app = spawn_on(NatsServer::start_jetstream(), vec![], |_| {}).await;
    let js = async_nats::jetstream::new(app.nats.clone());
    let mut last = 0;
    for i in 0..2000 {
        let body =
            json!({"node": "Q", "state": "ok", "at": format!("2026-01-01T00:00:{:02}Z", i % 60)});
        let ack = js
            .publish("status.Q", body.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
        last = ack.sequence;
    }
    // However far the relay has got, the stream holds `last`.
    let mut resumed = app.sse("", Some(&last.to_string())).await;
    let body = json!({"node": "Q", "state": "failed", "at": "2026-01-01T00:01:00Z"});
    js.publish("status.Q", body.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let next = loop {
        let f = resumed.next(WAIT).await.expect("the next event");
        assert_ne!(f.event.as_deref(), Some("lagged"), "no gap to report");
        if f.event.as_deref() == Some("status") {
            break f;
        }
    };
    assert_eq!(
        ids(std::slice::from_ref(&next)),
        [last + 1],
        "nothing before the id, nothing skipped after"
    );
    assert_eq!(next.json()["state"], "failed");

    // Past the stream's end, the id is a gap.
    let mut future = app.sse("", Some(&(last + 1000).to_string())).await;
    assert!(future.next_of("lagged", WAIT).await.is_some());
}

#[tokio::test]
async fn changed_limits_are_applied_to_an_existing_stream() {
    let server = NatsServer::start_jetstream();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "MESH_STATUS".into(),
        subjects: vec!["status.>".into()],
        max_age: Duration::from_secs(60),
        max_bytes: 1024 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let _app = spawn_on(server, vec![], |c| {
        let stream = c.stream.as_mut().unwrap();
        stream.max_age = Duration::from_secs(7200);
        stream.max_bytes = 2 * 1024 * 1024;
        c.sse.max_event_bytes = 2048;
    })
    .await;
    let config = js
        .get_stream("MESH_STATUS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .config;
    assert_eq!(config.max_age, Duration::from_secs(7200));
    assert_eq!(config.max_bytes, 2 * 1024 * 1024);
    assert_eq!(config.max_message_size, 2048);
}
