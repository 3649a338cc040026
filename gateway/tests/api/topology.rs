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

/// One rogue `$SRV.INFO` responder answering every discovery with 3,000 services, a
/// node naming 20,000 downstream nodes and 500 replicas of A: the graph the gateway
/// serves (and sends first to every SSE client) stays bounded and says what it left out.
#[tokio::test]
async fn a_rogue_responder_cannot_make_the_topology_unbounded() {
    use futures::StreamExt;
    let app = spawn_app(vec![spec("A", &["B"], 0), spec("B", &[], 0)], |_| {}).await;
    let rogue = async_nats::connect(app.server.url()).await.unwrap();
    let mut asked = rogue.subscribe("$SRV.INFO").await.unwrap();
    rogue.flush().await.unwrap();
    let info = |name: &str, id: String, downstream: String, endpoints: usize| {
        let endpoints: Vec<_> = (0..endpoints)
            .map(|e| serde_json::json!({"subject": format!("rogue.{e}.{}", "x".repeat(300))}))
            .collect();
        serde_json::json!({
            "name": name, "id": id, "version": "1.0.0",
            "metadata": {"mesh.kind": "node", "mesh.downstream": downstream},
            "endpoints": endpoints,
        })
        .to_string()
    };
    let responder = tokio::spawn(async move {
        while let Some(request) = asked.next().await {
            let Some(reply) = request.reply else { continue };
            let many: String = (0..20_000).map(|i| format!("D{i},")).collect();
            let mut answers = vec![info("WIDE", "wide-1".into(), many, 40)];
            answers.extend((0..500).map(|i| info("A", format!("a-{i}"), "B".into(), 0)));
            answers.extend(
                (0..3_000).map(|i| info(&format!("S{i}"), format!("s-{i}"), String::new(), 0)),
            );
            for answer in answers {
                if rogue.publish(reply.clone(), answer.into()).await.is_err() {
                    return;
                }
            }
        }
    });
    let t = eventually(
        "the rogue services heard",
        Duration::from_secs(30),
        || async {
            let (_, t) = app.get_json("/topology").await;
            t["truncated"].is_string().then_some(t)
        },
    )
    .await;
    responder.abort();
    // Unbounded, it was 4.3 MB.
    let bytes = t.to_string().len();
    assert!(bytes < 1024 * 1024, "/topology is {bytes} bytes");
    let nodes = t["nodes"].as_array().unwrap();
    assert!(nodes.len() <= gateway::graph::MAX_NODES, "{}", nodes.len());
    assert!(t["edges"].as_array().unwrap().len() <= gateway::graph::MAX_EDGES);
    for node in nodes {
        let count = |field: &str| node[field].as_array().unwrap().len();
        assert!(count("instances") <= gateway::graph::MAX_REPLICAS_PER_NODE);
        assert!(count("downstream") <= gateway::graph::MAX_DOWNSTREAM);
        for e in node["endpoints"].as_array().unwrap() {
            assert!(e.as_str().unwrap().len() <= gateway::graph::MAX_SUBJECT_LEN);
        }
    }
    let note = t["truncated"].as_str().unwrap();
    assert!(note.contains("left out"), "{note}");
    let mermaid = app
        .http
        .get(app.url("/topology/mermaid"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        mermaid.len() < 256 * 1024,
        "{} bytes of Mermaid",
        mermaid.len()
    );
    // The real nodes are still there and still activate.
    let (status, _) = app.activate(serde_json::json!({"node": "A"})).await;
    assert_eq!(status, 200);
}
