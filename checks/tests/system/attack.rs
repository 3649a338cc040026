//! Bounded under attack: the `gateway` binary's memory (RSS from `/proc`) stays bounded
//! while oversized events, a flood of random node names, idle clients replaying from
//! the start, half-open connections and invented methods arrive; an activation keeps
//! its budget meanwhile, and the half-open connections are closed.

use std::{process::Command, time::Duration};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = get_text(http, &format!("{base}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_connections_stay_bounded_under_attack() {
    let server = NatsServer::start_jetstream();
    let port = testsupport::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let gateway = Proc::spawn(
        "gateway",
        Command::new(binary("gateway"))
            .env("NATS_URL", server.url())
            .env("MESH_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("MESH_GATEWAY_HEADER_TIMEOUT_MS", "1000")
            .env("MESH_GATEWAY_MAX_CONNECTIONS", "400")
            .env("RUST_LOG", "warn"),
    );
    let _node = Proc::spawn(
        "handlers",
        Command::new(binary("handlers"))
            .args(["-n", "A", "-t", "20"])
            .env("NATS_URL", server.url()),
    );
    let http = reqwest::Client::new();
    eventually("the gateway sees A", Duration::from_secs(30), || async {
        let t = get_json(&http, &format!("{base}/topology")).await?;
        (t["nodes"][0]["instances"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let idle = rss_mib(gateway.id());
    let client = async_nats::connect(server.url()).await.unwrap();

    // Oversized events: 200 of 900 KB (valid JSON, a valid state).
    let big = json!({"state": "ok", "at": "t", "instance": "x".repeat(900_000)}).to_string();
    for _ in 0..200 {
        client
            .publish("status.A", big.clone().into())
            .await
            .unwrap();
    }
    // A flood of random node names.
    for i in 0..20_000 {
        let event = json!({"state": "manual", "color": "#123456", "at": "t"}).to_string();
        client
            .publish(format!("status.R{i}"), event.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    // The stream refuses the oversized ones (its maximum message size is the gateway's
    // event limit; without a stream the gateway refuses and counts them), and relays
    // the rest.
    eventually("the flood relayed", Duration::from_secs(60), || async {
        (metric(&http, &base, "mesh_gateway_events_relayed_total").await >= 20_000.0).then_some(())
    })
    .await;
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("MESH_STATUS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_message_size, 4096);
    assert!(info.state.bytes < 20 * 1024 * 1024, "{:?}", info.state);

    // Idle clients replaying from the start that never read.
    let mut replaying = Vec::new();
    for _ in 0..40 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"GET /events HTTP/1.1\r\nhost: t\r\nlast-event-id: 1\r\n\r\n")
            .await
            .unwrap();
        replaying.push(tcp);
    }
    // Half-open connections: a request head that never ends.
    let mut half_open = Vec::new();
    for _ in 0..250 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"GET /topology HTTP/1.1\r\nhost: t\r\n")
            .await
            .unwrap();
        half_open.push(tcp);
    }
    // Invented methods.
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let _ = http
            .request(method, format!("{base}/topology"))
            .send()
            .await;
    }

    // An activation meanwhile: within its budget.
    let started = std::time::Instant::now();
    let r = http
        .post(format!("{base}/activate"))
        .json(&json!({"node": "A", "timeout_ms": 3000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // The half-open connections are closed by the gateway.
    for tcp in &mut half_open {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .expect("the gateway closes a half-open connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    drop(half_open);
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let under_attack = rss_mib(gateway.id());
    let metrics = get_text(&http, &format!("{base}/metrics")).await;
    let topology = get_text(&http, &format!("{base}/topology")).await;
    println!(
        "gateway RSS: idle {idle} MiB, under attack {under_attack} MiB; /metrics {} B; /topology {}",
        metrics.len(),
        topology
    );
    assert!(
        under_attack < idle + 150,
        "RSS grew from {idle} to {under_attack} MiB"
    );
    assert!(metrics.contains("method=\"_OTHER\""));
    assert!(
        metrics.len() < 64 * 1024,
        "{} bytes of metrics",
        metrics.len()
    );

    // The replaying clients leave: their consumers go too (the relay keeps its own).
    drop(replaying);
    eventually(
        "replay consumers deleted",
        Duration::from_secs(60),
        || async {
            let info = js
                .get_stream("MESH_STATUS")
                .await
                .ok()?
                .get_info()
                .await
                .ok()?;
            (info.state.consumer_count <= 1).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_file_descriptor_limit_get_503_and_health_still_answers() {
    let server = NatsServer::start();
    let port = testsupport::free_port();
    let base = format!("http://127.0.0.1:{port}");
    // A gateway with only 300 file descriptors: at most 44 connections.
    let gateway = Proc::spawn(
        "gateway",
        Command::new("sh")
            .args(["-c", "ulimit -Sn 300 && ulimit -Hn 300 && exec \"$0\""])
            .arg(binary("gateway"))
            .env("NATS_URL", server.url())
            .env("MESH_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("MESH_GATEWAY_HEADER_TIMEOUT_MS", "60000"),
    );
    let http = reqwest::Client::new();
    eventually("the gateway answers", Duration::from_secs(30), || async {
        let r = http.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(
        gateway.output().contains("max_connections=44"),
        "{}",
        gateway.output()
    );
    // 44 idle connections hold every place; the next ones are answered 503 and closed.
    let mut held = Vec::new();
    for _ in 0..44 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    for _ in 0..100 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("an over-limit connection is answered and closed")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    // Places free again when the held connections go.
    drop(held);
    eventually("health answers again", Duration::from_secs(30), || async {
        let r = http.get(format!("{base}/healthz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}
