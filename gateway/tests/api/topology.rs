//! Topology discovered from the bus.

use std::time::Duration;

use handlers::{runtime::Running, Settings};

use crate::helpers::*;

#[tokio::test]
async fn topology_is_discovered_not_hard_coded() {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let (status, t) = app.get_json("/topology").await;
    assert_eq!(status, 200);
    let nodes = t["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8);
    let v = nodes.iter().find(|n| n["name"] == "V").unwrap();
    assert_eq!(v["downstream"], serde_json::json!(["T", "DS", "TM"]));
    assert_eq!(v["instances"].as_array().unwrap().len(), 1);
    assert_eq!(t["edges"].as_array().unwrap().len(), 7);

    let mermaid = app
        .http
        .get(app.url("/topology/mermaid"))
        .send()
        .await
        .unwrap();
    assert!(mermaid.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let mermaid = mermaid.text().await.unwrap();
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert_eq!(mermaid.matches(" --> ").count(), 7);
    assert!(mermaid.contains("[\"TM\"]"));
}

#[tokio::test]
async fn nodes_coming_and_going_are_announced() {
    let app = spawn_app(vec![spec("A", &["B"], 0)], |c| {
        c.discovery.interval = std::time::Duration::from_millis(60_000)
    })
    .await;
    let mut sse = app.sse("", None).await;
    let initial = sse
        .next_of("topology", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        initial.json()["nodes"].as_array().unwrap().len(),
        2,
        "A and its downstream B"
    );

    // B starts serving: its first status event (an unknown publisher) triggers discovery
    // at once, long before the 60 s interval.
    let client = async_nats::connect(app.server.url()).await.unwrap();
    let b = Running::start(client, vec![spec("B", &[], 0)], Settings::default())
        .await
        .unwrap();
    let (status, body) = app.activate(serde_json::json!({"node": "B"})).await;
    assert_eq!(status, 200, "{body}");
    let changed = sse
        .next_of("topology", Duration::from_secs(20))
        .await
        .unwrap();
    let nodes = changed.json()["nodes"].as_array().unwrap().clone();
    let b_node = nodes.iter().find(|n| n["name"] == "B").unwrap();
    assert_eq!(b_node["instances"].as_array().unwrap().len(), 1);
    assert!(!changed.json()["mermaid"]
        .as_str()
        .unwrap()
        .contains("offline"));
    let (_, t) = app.get_json("/topology").await;
    let b_state = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "B")
        .unwrap()
        .clone();
    assert_eq!(b_state["state"], "ok");

    drop(b);
}

#[tokio::test]
async fn departures_are_seen_by_the_periodic_refresh() {
    let app = spawn_app(vec![spec("A", &["B"], 0)], |_| {}).await;
    let client = async_nats::connect(app.server.url()).await.unwrap();
    let b = Running::start(client, vec![spec("B", &[], 0)], Settings::default())
        .await
        .unwrap();
    app.wait_for_nodes(2).await;
    let mut sse = app.sse("", None).await;
    sse.next_of("topology", Duration::from_secs(20))
        .await
        .unwrap();
    b.shutdown(Duration::from_secs(1)).await;
    let changed = sse
        .next_of("topology", Duration::from_secs(20))
        .await
        .unwrap();
    let nodes = changed.json()["nodes"].as_array().unwrap().clone();
    let b_node = nodes.iter().find(|n| n["name"] == "B").unwrap();
    assert!(b_node["instances"].as_array().unwrap().is_empty());
    assert!(changed.json()["mermaid"]
        .as_str()
        .unwrap()
        .contains("class n1 offline"));
}

#[tokio::test]
#[ignore = "external: needs python3 with nats-py; ./scripts/test installs it and runs this"]
async fn any_services_api_service_is_shown_with_its_endpoints_and_stats() {
    let app = spawn_app(vec![spec("A", &[], 0)], |c| {
        c.discovery.interval = Duration::from_millis(200);
    })
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/plain_service.py");
    let service = Proc::spawn(
        "python3 plain_service.py",
        std::process::Command::new("python3")
            .arg(script)
            .arg(app.server.url()),
    );
    eventually(
        "the nats-py service is up",
        Duration::from_secs(30),
        || async { service.output().contains("ready").then_some(()) },
    )
    .await;
    let answer = app
        .nats
        .request("weather.forecast", "".into())
        .await
        .unwrap();
    assert_eq!(&answer.payload[..], br#"{"sky":"clear"}"#);

    let weather = eventually(
        "the service with its request counted",
        Duration::from_secs(20),
        || async {
            let (_, t) = app.get_json("/topology").await;
            let w = t["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["name"] == "weather")?
                .clone();
            (w["stats"]["requests"].as_u64()? >= 1).then_some(w)
        },
    )
    .await;
    assert_eq!(weather["kind"], "service");
    assert_eq!(
        weather["endpoints"],
        serde_json::json!(["weather.forecast"])
    );
    assert_eq!(weather["instances"].as_array().unwrap().len(), 1);
    assert_eq!(weather["stats"]["errors"], 0);
    // The mesh node beside it is a node, with its own stats.
    let (_, t) = app.get_json("/topology").await;
    let a = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "A")
        .unwrap()
        .clone();
    assert_eq!(a["kind"], "node");
    assert_eq!(a["endpoints"], serde_json::json!(["activate.A"]));
    assert!(a["stats"].is_object(), "{a}");
    // Drawn as its own shape.
    let mermaid = app
        .http
        .get(app.url("/topology/mermaid"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(mermaid.contains(r#"{{"weather"}}"#), "{mermaid}");
}
