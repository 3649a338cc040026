//! The `gateway` binary stops promptly on SIGTERM, ending every open event stream, and
//! with the records of its last activations on the bus.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const CLIENTS: usize = 1000;

/// Opens `GET /events` on a raw connection and reads until the stream's first frames
/// (retry, topology, bus) have arrived.
async fn open_stream(port: u16) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"GET /events HTTP/1.1\r\nhost: t\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: bus") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    tcp
}

#[tokio::test]
async fn sigterm_with_1000_streams_open_exits_at_once() {
    let server = NatsServer::start();
    let port = testsupport::free_port();
    let mut child = Proc::spawn(
        "gateway",
        std::process::Command::new(BIN)
            .args(["--nats-url", &server.url()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn"),
    );
    eventually("the gateway listens", Duration::from_secs(20), || async {
        TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    // The health check the compose file uses: 200 from /readyz, or a failure.
    let ping = |port: u16| {
        std::process::Command::new(BIN)
            .args(["--ping", "--listen", &format!("127.0.0.1:{port}")])
            .output()
            .unwrap()
    };
    eventually(
        "gateway --ping succeeds",
        Duration::from_secs(20),
        || async { ping(port).status.success().then_some(()) },
    )
    .await;
    let nobody = ping(testsupport::free_port());
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no gateway answers"));

    let mut streams = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS / 50 {
        let batch: Vec<_> = (0..50).map(|_| open_stream(port)).collect();
        streams.extend(futures::future::join_all(batch).await);
    }

    let sent = Instant::now();
    child.signal(Signal::SIGTERM);
    let status = child
        .exit_within(Duration::from_secs(20))
        .await
        .expect("the gateway exits within 20 s");
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    // Before the stop token reached the sessions this took the whole HTTP grace period
    // (5 s) plus draining; now the streams end at once. The bound is generous for a
    // busy machine; the measured time is printed.
    eprintln!("SIGTERM with {CLIENTS} SSE clients: exited after {took:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // Every stream was ended by the server (end of the chunked body, then EOF).
    let mut buf = [0u8; 4096];
    for mut tcp in streams {
        let eof = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            eof.is_ok(),
            "a stream stayed open after the gateway stopped"
        );
    }
}

/// The records still gathering for a burst are sent before the gateway exits.
#[tokio::test]
async fn the_last_records_are_kept_when_the_gateway_stops() {
    let app = spawn_on(NatsServer::start_jetstream(), seed_zero_work(), |_| {}).await;
    let port = testsupport::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Proc::spawn(
        "gateway",
        std::process::Command::new(BIN)
            .args(["--nats-url", &app.server.url()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn"),
    );
    let http = reqwest::Client::new();
    let activate =
        |body: serde_json::Value| http.post(format!("{base}/activate")).json(&body).send();
    // Activations until the seed is discovered (ids the gateway chooses), then the last.
    let first: String = eventually(
        "the gateway activates UI",
        Duration::from_secs(20),
        || async {
            let r = activate(serde_json::json!({})).await.ok()?;
            if r.status() != 200 {
                return None;
            }
            let reply: serde_json::Value = r.json().await.ok()?;
            reply["activation_id"].as_str().map(str::to_string)
        },
    )
    .await;
    let last = activate(serde_json::json!({"activation_id": "last-before-stop"}))
        .await
        .unwrap();
    assert_eq!(last.status(), 200);
    child.signal(Signal::SIGTERM);
    let status = child
        .exit_within(Duration::from_secs(20))
        .await
        .expect("the gateway exits within 20 s");
    assert!(status.success(), "{status:?}");
    let stream = async_nats::jetstream::new(app.nats.clone())
        .get_stream("MESH_ACTIVATIONS")
        .await
        .unwrap();
    for id in [first.as_str(), "last-before-stop"] {
        let kept = stream
            .get_last_raw_message_by_subject(&format!("mesh.activations.{id}"))
            .await;
        assert!(kept.is_ok(), "{id}: {kept:?}");
    }
}
