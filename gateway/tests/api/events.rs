//! `GET /events`: the SSE relay over real HTTP.

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use crate::helpers::*;

/// Upper bound of every wait on a condition (generous: the suite runs on busy machines).
const WAIT: Duration = Duration::from_secs(20);

/// Runs the event test `name` (an `async fn(Transport)`) on each transport: the
/// gateway's own and hyper's write the same events.
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn direct() {
                super::$name(crate::helpers::Transport::Direct).await
            }

            #[tokio::test]
            async fn hyper() {
                super::$name(crate::helpers::Transport::Hyper).await
            }
        }
    )*};
}

on_both_transports!(
    one_activation_arrives_complete_and_in_order,
    filters_by_node_and_activation,
    keep_alive_comments_on_idle_streams,
    resumes_from_last_event_id_without_gaps_or_duplicates,
    tells_a_client_what_history_cannot_cover,
    slow_client_does_not_hold_back_others,
    connection_limit_answers_503,
);

async fn one_activation_arrives_complete_and_in_order(via: Transport) {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let mut sse = app.sse_via(via, "", None).await;
    let retry = sse.next(WAIT).await.unwrap();
    assert_eq!(retry.retry, Some(2000), "a retry hint comes first");
    let topology = sse.next(WAIT).await.unwrap();
    assert_eq!(topology.event.as_deref(), Some("topology"));
    assert_eq!(topology.json()["nodes"].as_array().unwrap().len(), 8);

    let (status, tree) = app.activate(json!({"color": "hotpink"})).await;
    assert_eq!(status, 200);
    let frames = sse.statuses(16, WAIT).await;
    let mut ids = Vec::new();
    let mut per_node: HashMap<String, Vec<String>> = HashMap::new();
    for f in &frames {
        ids.push(f.id.clone().unwrap().parse::<u64>().unwrap());
        let e = f.json();
        assert_eq!(e["activation_id"], tree["activation_id"]);
        assert_eq!(e["relayed_by"], app.state.gateway_id());
        if e["state"] == "running" {
            assert_eq!(e["color"], "hotpink");
        }
        per_node
            .entry(e["node"].as_str().unwrap().to_string())
            .or_default()
            .push(e["state"].as_str().unwrap().to_string());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert_eq!(per_node.len(), 8);
    for (node, states) in per_node {
        assert_eq!(states, ["running", "ok"], "{node}");
    }
}

async fn filters_by_node_and_activation(via: Transport) {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let mut only_v_t = app.sse_via(via, "?node=V&node=T", None).await;
    // A client that names its activation can subscribe before it starts.
    let mut only_mine = app.sse_via(via, "?activation=mine-1", None).await;
    let (_, first) = app.activate(json!({})).await;
    let (status, mine) = app.activate(json!({"activation_id": "mine-1"})).await;
    assert_eq!(status, 200);
    assert_eq!(mine["activation_id"], "mine-1");

    let frames = only_v_t.statuses(8, WAIT).await;
    for f in &frames {
        let e = f.json();
        assert!(e["node"] == "V" || e["node"] == "T", "{e}");
    }
    assert_eq!(frames[0].json()["activation_id"], first["activation_id"]);
    assert_eq!(frames[4].json()["activation_id"], "mine-1");

    let frames = only_mine.statuses(16, WAIT).await;
    assert!(frames.iter().all(|f| f.json()["activation_id"] == "mine-1"));
    assert!(only_mine
        .next_of("status", Duration::from_millis(300))
        .await
        .is_none());

    let bad = app
        .http
        .get(app.url("/events?node=a.b"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = app
        .http
        .get(app.url("/events?activation=a%20b"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

async fn keep_alive_comments_on_idle_streams(via: Transport) {
    let app = spawn_app(vec![spec("A", &[], 0)], |c| {
        c.sse.keepalive = std::time::Duration::from_millis(100)
    })
    .await;
    let mut sse = app.sse_via(via, "", None).await;
    let mut comments = 0;
    while comments < 2 {
        let f = sse
            .next(Duration::from_secs(2))
            .await
            .expect("keep-alive within 2 s");
        if f.comment.as_deref() == Some("keep-alive") {
            comments += 1;
        }
    }
}

async fn resumes_from_last_event_id_without_gaps_or_duplicates(via: Transport) {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let mut sse = app.sse_via(via, "", None).await;
    app.activate(json!({})).await;
    let seen = sse.statuses(16, WAIT).await;
    let last = seen.last().unwrap().id.clone().unwrap();
    drop(sse);

    // Missed while disconnected:
    let (_, missed) = app.activate(json!({})).await;
    let mut resumed = app.sse_via(via, "", Some(&last)).await;
    let frames = resumed.statuses(16, WAIT).await;
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f.id.clone().unwrap().parse().unwrap())
        .collect();
    let last: u64 = last.parse().unwrap();
    assert_eq!(ids, (last + 1..=last + 16).collect::<Vec<_>>());
    assert!(frames
        .iter()
        .all(|f| f.json()["activation_id"] == missed["activation_id"]));
    // And live events follow on the same stream.
    let (_, live) = app.activate(json!({})).await;
    let next = resumed.next_of("status", WAIT).await.unwrap();
    assert_eq!(next.json()["activation_id"], live["activation_id"]);
    assert_eq!(next.id.unwrap().parse::<u64>().unwrap(), last + 17);
}

async fn tells_a_client_what_history_cannot_cover(via: Transport) {
    let app = spawn_app(seed_zero_work(), |c| c.sse.history = 4).await;
    let mut watcher = app.sse_via(via, "", None).await;
    app.activate(json!({})).await;
    let seen = watcher.statuses(16, WAIT).await;
    let last: u64 = seen.last().unwrap().id.clone().unwrap().parse().unwrap();
    assert!(last > 5);

    let mut from_start = app.sse_via(via, "", Some("1")).await;
    let lagged = from_start.next_of("lagged", WAIT).await.unwrap();
    assert_eq!(lagged.json()["after"], 1);
    let mut ids = Vec::new();
    while ids.len() < 4 {
        let f = from_start.next(WAIT).await.unwrap();
        if let Some(id) = f.id {
            ids.push(id.parse::<u64>().unwrap());
        }
    }
    assert_eq!(
        ids,
        (last - 3..=last).collect::<Vec<_>>(),
        "the 4 retained events"
    );

    let mut unknown = app.sse_via(via, "", Some("999999")).await;
    assert!(unknown.next_of("lagged", WAIT).await.is_some());
}

async fn slow_client_does_not_hold_back_others(via: Transport) {
    // 100 activations make 1,600 events: far more than a client may fall behind.
    let app = spawn_app(seed_zero_work(), |c| {
        c.sse.buffer = 256;
        c.sse.history = 256;
    })
    .await;
    // A client that connects and never reads.
    let stalled = app.http.get(app.url("/events")).send().await.unwrap();
    let mut reader = app.sse_via(via, "?node=UI", None).await;
    for _ in 0..100 {
        let (status, _) = app.activate(json!({})).await;
        assert_eq!(status, 200);
    }
    let frames = reader.statuses(200, WAIT).await;
    assert_eq!(frames.len(), 200);
    drop(stalled);
}

async fn connection_limit_answers_503(via: Transport) {
    let app = spawn_app(vec![spec("A", &[], 0)], |c| {
        c.sse.max_clients = 2;
        // A closed connection is noticed at once on the direct path, on the next write
        // (a keep-alive at the latest) on hyper's.
        c.sse.keepalive = std::time::Duration::from_millis(50);
    })
    .await;
    let _one = app.sse_via(via, "", None).await;
    let _two = app.sse_via(via, "", None).await;
    let third = app.http.get(app.url("/events")).send().await.unwrap();
    assert_eq!(third.status(), 503);
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"], "too_many_clients");
    drop(_one);
    eventually("a slot frees up", WAIT, || async {
        let r = app.http.get(app.url("/events")).send().await.unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn hand_published_status_shows_and_bad_ones_do_not() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    let mut sse = app.sse("", None).await;
    for bad in [
        &b"not json"[..],
        br#"{"state":"exploded"}"#,
        br#"{"state":"ok","color":"red;}"}"#,
        br#"{"state":"ok","node":"B"}"#,
    ] {
        app.nats.publish("status.A", bad.into()).await.unwrap();
    }
    app.nats
        .publish("status.A", r#"{"state":"ok","code":200}"#.into())
        .await
        .unwrap();
    let frame = sse.next_of("status", WAIT).await.unwrap();
    let e = frame.json();
    assert_eq!(
        (e["node"].as_str(), e["state"].as_str()),
        (Some("A"), Some("ok"))
    );
    assert_eq!(app.state.metrics.events_refused.get(), 4);
}

/// A raw HTTP/1.1 client on one connection: what `GET /events` looks like on the wire.
struct Wire {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
}

impl Wire {
    async fn connect(app: &App) -> Self {
        let addr = app.base.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self {
            stream,
            read: Vec::new(),
        }
    }

    async fn send(&mut self, request: &str) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    async fn until(&mut self, needle: &str) -> String {
        use tokio::io::AsyncReadExt;
        let needle = needle.as_bytes();
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(at) = self.read.windows(needle.len()).position(|w| w == needle) {
                    let taken: Vec<u8> = self.read.drain(..at + needle.len()).collect();
                    return String::from_utf8(taken).unwrap();
                }
                let mut chunk = [0; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
                self.read.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("in time")
    }

    /// Reads to the end of the connection.
    async fn rest(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .unwrap();
        self.read.extend_from_slice(&rest);
        String::from_utf8(std::mem::take(&mut self.read)).unwrap()
    }
}

async fn sse_clients(app: &App) -> u64 {
    app.get_json("/healthz").await.1["sse_clients"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_first_request_for_events_streams_on_the_socket_and_a_leaving_client_is_seen_at_once() {
    // Keep-alives far apart: the client's leaving must be seen without a write.
    let app = spawn_app(vec![spec("A", &[], 0)], |c| {
        c.sse.keepalive = Duration::from_secs(600);
        c.cors_origins = vec!["http://ok.example".into()];
    })
    .await;
    let mut wire = Wire::connect(&app).await;
    wire.send("GET /events?node=A HTTP/1.1\r\nHost: x\r\nOrigin: http://ok.example\r\n\r\n")
        .await;
    let head = wire.until("\r\n\r\n").await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "x-content-type-options: nosniff",
        "access-control-allow-origin: http://ok.example",
        "vary: origin",
        "connection: close",
        "date: ",
        "x-trace-id: ",
    ] {
        assert!(
            head.contains(&format!("\r\n{line}")),
            "no {line:?} in {head}"
        );
    }
    // Close-delimited: the body is the event stream itself.
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(wire.until("\n\n").await.starts_with("retry: "));
    wire.until("event: bus\n").await;
    app.activate(json!({"node": "A"})).await;
    let status = wire.until("\n\n").await;
    let status = wire.until("\n\n").await + &status;
    assert!(status.contains("event: status\n"), "{status}");
    assert_eq!(sse_clients(&app).await, 1);

    drop(wire);
    eventually("the gateway sees the client leave", WAIT, || async {
        (sse_clients(&app).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn events_after_another_request_on_a_kept_alive_connection_stream_too() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    let mut wire = Wire::connect(&app).await;
    wire.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = wire.until("\r\n\r\n").await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    wire.until("}").await;
    // hyper's connection now: the stream comes chunked.
    wire.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = wire.until("\r\n\r\n").await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    wire.until("event: bus\n").await;
}

#[tokio::test]
async fn a_refused_first_request_for_events_is_answered_whole_and_closed() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    let mut wire = Wire::connect(&app).await;
    wire.send("GET /events?node=a.b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = wire.rest().await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "bad_request", "{body}");
    // Malformed heads still get hyper's answer, and the gateway serves on.
    let mut wire = Wire::connect(&app).await;
    wire.send("GET /events HTTP/1.1\r\nbad header\r\n\r\n")
        .await;
    assert!(wire.rest().await.starts_with("HTTP/1.1 400"));
    assert_eq!(app.get_json("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_client_too_slow_for_the_hub_gets_every_event_in_order_once_it_reads_again() {
    const EVENTS: u64 = 5000;
    let app = spawn_app(vec![spec("A", &[], 0)], |c| {
        c.sse.history = 10_000;
        c.sse.history_bytes = 64 << 20;
    })
    .await;
    // A tiny receive window: the gateway's writes stall long before the last event.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut wire = Wire {
        stream: socket.connect(addr).await.unwrap(),
        read: Vec::new(),
    };
    let mut fast = app.sse("", None).await;
    wire.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    wire.until("event: bus\n").await;
    wire.until("\n\n").await;
    let handed_back = app.state.metrics.sse_handed_back.get();
    // Events of about 1 KiB each, published while the slow client reads nothing.
    let padding = "x".repeat(1000);
    for _ in 0..EVENTS {
        let event = json!({"state": "running", "instance": padding});
        app.nats
            .publish("status.A", event.to_string().into())
            .await
            .unwrap();
    }
    app.nats.flush().await.unwrap();
    let first = fast.next_of("status", WAIT).await.unwrap();
    let first: u64 = first.id.unwrap().parse().unwrap();
    eventually("the relay took every event", WAIT, || async {
        (app.state.ingest.log().last_id() >= first + EVENTS - 1).then_some(())
    })
    .await;
    assert!(
        app.state.metrics.sse_handed_back.get() > handed_back,
        "the hub could not write it all, and handed the stream back"
    );
    // Reading again: every event, once, in order, none reported lost.
    let mut expected = first;
    while expected < first + EVENTS {
        let frame = wire.until("\n\n").await;
        assert!(!frame.contains("event: lagged"), "{frame}");
        if let Some(id) = frame.strip_prefix("id: ") {
            let id: u64 = id.lines().next().unwrap().parse().unwrap();
            assert_eq!(id, expected, "{frame}");
            expected += 1;
        }
    }
    // And the fast client, written by the hub meanwhile, had them all too.
    let mut fast_expected = first + 1;
    while fast_expected < first + EVENTS {
        let frame = fast.next_of("status", WAIT).await.unwrap();
        assert_eq!(frame.id.unwrap().parse::<u64>().unwrap(), fast_expected);
        fast_expected += 1;
    }
}

/// A client that shuts down its sending side right after its request (a half-close,
/// as `curl` piping or some proxies do) is still written to: it gets the whole stream,
/// not the first few KB.
#[tokio::test]
async fn a_half_closed_client_still_gets_the_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let address = app.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(b"GET /events HTTP/1.1\r\nhost: mesh\r\n\r\n")
        .await
        .unwrap();
    socket.shutdown().await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    // 20 seed activations are 320 status events, far more than 5 KB.
    for _ in 0..20 {
        let (status, _) = app.activate(json!({})).await;
        assert_eq!(status, 200);
    }
    let want = 320;
    let deadline = tokio::time::Instant::now() + WAIT;
    while String::from_utf8_lossy(&seen)
        .matches("event: status")
        .count()
        < want
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {want} events after {} bytes",
                    String::from_utf8_lossy(&seen)
                        .matches("event: status")
                        .count(),
                    seen.len()
                )
            })
            .unwrap();
        assert!(n > 0, "the gateway closed after {} bytes", seen.len());
        seen.extend_from_slice(&buf[..n]);
    }
}
