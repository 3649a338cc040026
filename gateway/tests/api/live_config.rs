//! `PUT`/`DELETE /nodes/{node}/config`: live settings on every replica, kept on the bus
//! (JetStream key-value bucket), or sent to running replicas without JetStream.

use std::time::Duration;

use handlers::{runtime::Running, Settings};
use serde_json::{json, Value};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

async fn put(app: &App, node: &str, body: Value) -> (u16, Value) {
    let r = app
        .http
        .put(app.url(&format!("/nodes/{node}/config")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until an activation of `node` answers `code`.
async fn until_code(app: &App, node: &str, code: u16) {
    eventually(&format!("{node} answers {code}"), WAIT, || async {
        let (status, _) = app.activate(json!({"node": node})).await;
        (status == code).then_some(())
    })
    .await;
}

fn topology_node(t: &Value, name: &str) -> Value {
    t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_change_reaches_every_replica_also_later_ones_and_a_reset_undoes_it() {
    let app = spawn_on(
        NatsServer::start_jetstream(),
        vec![spec("A", &[], 0)],
        |_| {},
    )
    .await;
    until_code(&app, "A", 200).await;

    let (status, body) = put(&app, "A", json!({"fail_rate": 1.0})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"node": "A", "fail_rate": 1.0, "persisted": true})
    );
    eventually("A fails", WAIT, || async {
        let (status, _) = app.activate(json!({"node": "A"})).await;
        (status == 500 || status == 502).then_some(())
    })
    .await;
    // Values not given keep what was set.
    let (status, body) = put(&app, "A", json!({"work_ms": 5})).await;
    assert_eq!(status, 200);
    assert_eq!(body["fail_rate"], 1.0);
    assert_eq!(body["work_ms"], 5);
    let (_, t) = app.get_json("/topology").await;
    let a = topology_node(&t, "A");
    assert_eq!(
        (a["fail_rate"].clone(), a["work_ms"].clone()),
        (json!(1.0), json!(5))
    );

    // A replica started after the change serves with it from its first activation.
    let late = Running::start(
        async_nats::connect(app.server.url()).await.unwrap(),
        vec![spec("A", &[], 0)],
        Settings::default(),
    )
    .await
    .unwrap();
    let first = app._nodes.as_ref().unwrap().instances()[&name("A")].clone();
    let late_id = late.instances()[&name("A")].clone();
    assert_ne!(first, late_id);
    for _ in 0..10 {
        let (status, reply) = app.activate(json!({"node": "A"})).await;
        assert!(status == 500 || status == 502, "{reply}");
    }

    // Reset: every replica back to the file's values.
    let r = app
        .http
        .delete(app.url("/nodes/A/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("both replicas succeed again", WAIT, || async {
        for _ in 0..6 {
            let (status, _) = app.activate(json!({"node": "A"})).await;
            if status != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (_, t) = app.get_json("/topology").await;
    assert_eq!(topology_node(&t, "A")["fail_rate"], 0.0);
    late.shutdown(Duration::from_secs(1)).await;

    // The bucket is bounded: settings for invented names cannot fill the server.
    let js = async_nats::jetstream::new(app.nats.clone());
    let mut bucket = js.get_stream("KV_MESH_NODE_CONFIG").await.unwrap();
    assert_eq!(
        bucket.info().await.unwrap().config.max_bytes,
        mesh_core::live_config::MAX_BYTES
    );
}

#[tokio::test]
async fn bad_changes_are_refused_and_change_nothing() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    for bad in [
        json!({"fail_rate": 1.5}),
        json!({"fail_rate": -0.1}),
        json!({"fail_rate": -0.0}),
        json!({"work_ms": 600001}),
        json!({"work_ms": "slow"}),
        json!({"fail_rate": 0.5, "colour": "red"}),
        json!([1]),
    ] {
        let (status, body) = put(&app, "A", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = put(&app, "NOBODY", json!({"fail_rate": 1.0})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = put(&app, "a.b", json!({"fail_rate": 1.0})).await;
    assert_eq!(status, 400);
    // An empty change changes nothing and says what is in force.
    let (status, body) = put(&app, "A", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"node": "A", "persisted": false}));
    // Nothing changed: A still succeeds, and shows its own values.
    let (status, _) = app.activate(json!({"node": "A"})).await;
    assert_eq!(status, 200);
    let (_, t) = app.get_json("/topology").await;
    assert_eq!(topology_node(&t, "A")["fail_rate"], 0.0);
}

#[tokio::test]
async fn without_jetstream_running_replicas_still_take_a_change() {
    let app = spawn_app(vec![spec("A", &[], 0)], |_| {}).await;
    until_code(&app, "A", 200).await;
    let (status, body) = put(&app, "A", json!({"fail_rate": 1.0})).await;
    assert_eq!(status, 200);
    assert_eq!(body["persisted"], false, "{body}");
    eventually("A fails", WAIT, || async {
        let (status, _) = app.activate(json!({"node": "A"})).await;
        (status == 500 || status == 502).then_some(())
    })
    .await;
}
