//! `POST /activate` and `PUT /nodes/{node}/color` over real HTTP, real NATS, real nodes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn activates_the_seed_topology() {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    let response = app.activate_response(json!({})).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let tree: schemas::ActivationReply = response.json().await.unwrap();
    assert_eq!(tree.node.as_str(), "UI", "entry node by default");
    assert_eq!(tree.activation_id.as_str(), id);
    assert_eq!(tree.count(), 8);
    assert!(tree
        .iter()
        .all(|r| r.code == 200 && r.activation_id.as_str() == id));

    let (status, body) = app.activate(json!({"node": "V", "color": "#0ff"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["node"], "V");
    assert_eq!(body["children"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn http_status_is_the_root_code() {
    let mut failing = spec("F", &[], 0);
    failing.work = handlers::Work::simulated(0, 1.0);
    let app = spawn_app(
        vec![failing, spec("P", &["F"], 0), spec("slow", &[], 2000)],
        |_| {},
    )
    .await;

    let (status, body) = app.activate(json!({"node": "F"})).await;
    assert!(status == 500 || status == 502, "{status}");
    assert_eq!(body["code"], status);
    assert_eq!(body["outcome"], "failed");

    let (status, body) = app.activate(json!({"node": "P"})).await;
    assert_eq!(status, 502);
    assert_eq!(body["children"][0]["node"], "F");

    let started = Instant::now();
    let (status, body) = app
        .activate(json!({"node": "slow", "timeout_ms": 300}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["outcome"], "timeout");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_node_is_404_naming_it() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    let started = Instant::now();
    let (status, body) = app.activate(json!({"node": "Nowhere"})).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 404);
    assert!(
        body["message"].as_str().unwrap().contains("Nowhere"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn known_node_without_instances_is_503() {
    // B is named as A's downstream but nothing serves it.
    let app = spawn_app(vec![spec("A", &["B"], 0)], |_| {}).await;
    let (status, body) = app.activate(json!({"node": "B"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["outcome"], "unavailable");
}

#[tokio::test]
async fn nats_down_answers_503_quickly_and_readyz_follows() {
    let mut app = spawn_app(seed_zero_work(), |_| {}).await;
    let (status, _) = app.get_json("/readyz").await;
    assert_eq!(status, 200);

    app.server.stop();
    eventually(
        "gateway notices NATS is down",
        Duration::from_secs(10),
        || async {
            let (status, _) = app.get_json("/readyz").await;
            (status == 503).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    let (status, body) = app.activate(json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["message"].as_str().unwrap().contains("NATS"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, 200, "liveness does not depend on NATS");
    assert_eq!(body["nats_connected"], false);
}

#[tokio::test]
async fn bad_bodies_are_refused_and_nothing_is_published() {
    let app = spawn_app(vec![spec("A", &[], 0)], |c| c.max_body_bytes = 1024).await;
    let mut status_sub = app.nats.subscribe("status.>").await.unwrap();
    mesh_core::bus::sync(&app.nats).await.unwrap();
    for body in [
        json!({"node": "a.b"}),
        json!({"node": "*"}),
        json!({"node": ">"}),
        json!({"node": ""}),
        json!({"node": 7}),
        json!({"color": "red;background:url(x)"}),
        json!({"color": "</style><script>"}),
        json!({"timeout_ms": 0}),
        json!({"timeout_ms": "soon"}),
        json!({"timeout_ms": 600001}),
        json!({"nodes": "A"}),
        json!([1, 2]),
    ] {
        let (status, reply) = app.activate(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert_eq!(reply["error"], "bad_request");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    let raw = app
        .http
        .post(app.url("/activate"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let huge = app
        .http
        .post(app.url("/activate"))
        .header("content-type", "application/json")
        .body(format!("{{\"node\":\"{}\"}}", "A".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let for_color = app
        .http
        .put(app.url("/nodes/a.b/color"))
        .json(&json!({"color": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(for_color.status(), 400);
    let bad_color = app
        .http
        .put(app.url("/nodes/A/color"))
        .json(&json!({"color": "javascript:alert(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_color.status(), 400);
    // Nothing above reached the bus: the next status event is the valid activation's.
    let (status, ok) = app.activate(json!({"node": "A"})).await;
    assert_eq!(status, 200);
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut status_sub),
    )
    .await
    .unwrap()
    .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(event["activation_id"], ok["activation_id"]);
}

#[tokio::test]
async fn manual_colour_is_published_as_status() {
    let app = spawn_app(vec![spec("V", &[], 0)], |_| {}).await;
    let mut events = app.sse("?node=V", None).await;
    app.wait_for_nodes(1).await;
    // A node nobody serves or names: 404, nothing published.
    let unknown = app
        .http
        .put(app.url("/nodes/NOBODY/color"))
        .json(&json!({"color": "#ff00ff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "unknown_node");
    assert!(app.state.latest.with(|s| s.is_empty()));
    let response = app
        .http
        .put(app.url("/nodes/V/color"))
        .json(&json!({"color": "#ff00ff"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let frame = events
        .next_of("status", Duration::from_secs(5))
        .await
        .unwrap();
    let event = frame.json();
    assert_eq!(event["node"], "V");
    assert_eq!(event["state"], "manual");
    assert_eq!(event["color"], "#ff00ff");
    assert_eq!(event["relayed_by"], app.state.gateway_id());
}

#[tokio::test]
async fn input_reaches_every_function_and_results_come_back() {
    // ROOT gathers its child's result; both see the activation's input.
    let child = handlers::function(|call: handlers::Call| async move {
        Ok(json!({ "len": call.input["text"].as_str().map_or(0, str::len) }))
    });
    let root = handlers::function(|call: handlers::Call| async move {
        let child = call.children[0].result.clone().unwrap_or_default();
        Ok(json!({ "text": call.input["text"], "child": child }))
    });
    let nodes = vec![
        handlers::NodeSpec::function(name("ROOT"), root).with_downstream(vec![name("LEN")]),
        handlers::NodeSpec::function(name("LEN"), child),
    ];
    let app = spawn_app(nodes, |_| {}).await;
    let (status, tree) = app
        .activate(json!({"node": "ROOT", "input": {"text": "hello"}}))
        .await;
    assert_eq!(status, 200, "{tree:#}");
    assert_eq!(
        tree["result"],
        json!({"text": "hello", "child": {"len": 5}})
    );
    assert_eq!(tree["children"][0]["result"], json!({"len": 5}));

    // The input is any JSON, and the body limit still holds.
    let (status, tree) = app
        .activate(json!({"node": "LEN", "input": [1, {"a": null}]}))
        .await;
    assert_eq!((status, &tree["result"]), (200, &json!({"len": 0})));
    let huge = "x".repeat(20 * 1024);
    let (status, _) = app
        .activate(json!({"node": "LEN", "input": {"text": huge}}))
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn a_node_refusing_a_valid_body_is_a_bad_gateway_not_a_bad_request() {
    let app = spawn_app(vec![], |_| {}).await;
    // Something on activate.FORGE answering every request with its own 400.
    answer_on(&app, "FORGE", |request| {
        json!({
            "node": "FORGE", "activation_id": request["activation_id"],
            "outcome": "rejected", "code": 400, "elapsed_ms": 0,
            "message": "refused by the node"
        })
        .to_string()
    })
    .await;
    let (status, body) = app.activate(json!({"node": "FORGE"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["code"], 400,
        "the node's own code is in the tree: {body}"
    );
}

#[tokio::test]
async fn a_reply_tree_is_answered_as_it_came_and_anything_else_decoded_or_refused() {
    let app = spawn_app(vec![], |_| {}).await;
    // Something on activate.RAW answering with the reply its input names.
    answer_on(&app, "RAW", |request| {
        let id = request["activation_id"].as_str().unwrap();
        match request["input"].as_str().unwrap() {
            // A tree in this version's fields, spaced and in another key order.
            "spaced" => format!(
                r#"{{ "children": [], "activation_id": "{id}", "node": "RAW",
                        "instance": "i-1", "outcome": "ok", "code": 200, "elapsed_ms": 1,
                        "message": "as \u0069t came", "result": {{"b": 1, "a": [2.5]}} }}"#
            ),
            // A field this version does not know.
            "extra" => json!({
                "node": "RAW", "activation_id": id, "instance": "i-1", "outcome": "ok",
                "code": 200, "elapsed_ms": 1, "message": "ok", "children": [],
                "secret": "dropped"
            })
            .to_string(),
            _ => json!({"node": "RAW", "activation_id": id}).to_string(),
        }
    })
    .await;
    let post = |input: &str| app.activate_response(json!({"node": "RAW", "input": input}));

    let r = post("spaced").await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-activation-id"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with(r#"{ "children": [], "activation_id": ""#) && body.contains("\\u0069"),
        "answered as it came: {body}"
    );
    let tree: schemas::ActivationReply = serde_json::from_str(&body).unwrap();
    assert_eq!(tree.message, "as it came");
    let (status, record) = app.get_json(&format!("/activations/{id}")).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["reply"], serde_json::to_value(&tree).unwrap());

    let (status, body) = app.activate(json!({"node": "RAW", "input": "extra"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("secret").is_none(),
        "decoded, not passed on: {body}"
    );
    assert_eq!(body["instance"], "i-1");

    let (status, body) = app.activate(json!({"node": "RAW", "input": "junk"})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a reply tree"),
        "{body}"
    );
}

/// Something on `activate.<node>` (not a mesh node) answering every request with
/// `reply(request)`, subscribed once this returns.
async fn answer_on(
    app: &App,
    node: &str,
    reply: impl Fn(&serde_json::Value) -> String + Send + 'static,
) {
    let mut requests = app
        .nats
        .subscribe(format!("activate.{node}"))
        .await
        .unwrap();
    let nats = app.nats.clone();
    tokio::spawn(async move {
        while let Some(m) = futures::StreamExt::next(&mut requests).await {
            let request: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let _ = nats.publish(m.reply.unwrap(), reply(&request).into()).await;
        }
    });
    mesh_core::bus::sync(&app.nats).await.unwrap();
}
