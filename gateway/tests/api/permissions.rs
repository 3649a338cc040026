//! The mesh under the NATS permissions of `examples/permissions/nats-server.conf`:
//! nodes, runners and gateways work (activations, live settings, deployed functions,
//! asynchronous activations); another client can watch but can neither activate a node
//! nor put an event in front of the page.

use std::{path::Path, process::Command, time::Duration};

use futures::StreamExt;
use serde_json::json;

use crate::helpers::*;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");
const CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/permissions/nats-server.conf"
);

#[tokio::test]
async fn the_mesh_works_under_permissions_that_keep_others_out() {
    let server = NatsServer::start_with(&["-js", "-c", CONF]);
    let url = server.url();
    let handlers = Path::new(GATEWAY).parent().unwrap().join("handlers");
    let _nodes = Proc::spawn(
        "handlers",
        Command::new(&handlers)
            .args(["-n", "A", "-s", "B", "--status-ack"])
            .args(["--nats-user", "node", "--nats-password", "node-secret"])
            .env("NATS_URL", &url),
    );
    let _leaf = Proc::spawn(
        "handlers",
        Command::new(&handlers)
            .args(["-n", "B", "--status-ack"])
            .args(["--nats-user", "node", "--nats-password", "node-secret"])
            .env("NATS_URL", &url),
    );
    let port = testsupport::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _gateway = Proc::spawn(
        "gateway",
        Command::new(GATEWAY)
            .args([
                "--nats-user",
                "gateway",
                "--nats-password",
                "gateway-secret",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NATS_URL", &url),
    );
    let http = reqwest::Client::new();
    eventually("A and B discovered", Duration::from_secs(30), || async {
        let t: serde_json::Value = http
            .get(format!("{base}/topology"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let serving = t["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["instances"].as_array().is_some_and(|i| !i.is_empty()))
            .count();
        (serving == 2).then_some(())
    })
    .await;

    // The app user watches the status subjects.
    let app = async_nats::ConnectOptions::with_user_and_password("app".into(), "app-secret".into())
        .connect(&url)
        .await
        .unwrap();
    let mut watched = app.subscribe("status.>").await.unwrap();
    mesh_core::bus::sync(&app).await.unwrap();

    // Through the gateway: an activation of A and B, its events stored and relayed.
    let reply: serde_json::Value = http
        .post(format!("{base}/activate"))
        .json(&json!({"node": "A"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["children"][0]["node"], "B");
    let seen = tokio::time::timeout(Duration::from_secs(10), watched.next())
        .await
        .expect("the app user sees status events")
        .unwrap();
    assert!(seen.subject.starts_with("status."));

    // The gateway may keep it for the inspector (the stream MESH_ACTIVATIONS).
    let id = reply["activation_id"].as_str().unwrap().to_string();
    eventually("the activation kept", Duration::from_secs(20), || async {
        let r = http
            .get(format!("{base}/activations/{id}"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // The app user can neither activate a node nor publish a status event.
    let asked = tokio::time::timeout(
        Duration::from_secs(3),
        app.request("activate.A", "{}".into()),
    )
    .await;
    assert!(
        !matches!(asked, Ok(Ok(_))),
        "activate.A answered the app user: {asked:?}"
    );
    let mut events = http
        .get(format!("{base}/events?node=A"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let forged = json!({"state": "failed", "code": 500, "at": "forged"}).to_string();
    app.publish("status.A", forged.into()).await.unwrap();
    app.flush().await.unwrap();
    // A real event after the forged one: the stream shows it, and never the forgery.
    let _ = http
        .post(format!("{base}/activate"))
        .json(&json!({"node": "A"}))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("\"state\":\"ok\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("A's events on the stream")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("forged"), "{text}");

    // Live settings reach the nodes under these permissions: B fails from now on.
    let r = http
        .put(format!("{base}/nodes/B/config"))
        .json(&json!({"fail_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["persisted"], true,
        "the gateway may write the bucket: {body}"
    );
    eventually("B fails", Duration::from_secs(20), || async {
        let r = http
            .post(format!("{base}/activate"))
            .json(&json!({"node": "B"}))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() >= 500).then_some(())
    })
    .await;
    // The app user may not change them through the bucket.
    let js = async_nats::jetstream::new(app.clone());
    let written = tokio::time::timeout(
        Duration::from_secs(3),
        js.publish("$KV.MESH_NODE_CONFIG.B", "{}".into()),
    )
    .await;
    let acked = match written {
        Ok(Ok(ack)) => tokio::time::timeout(Duration::from_secs(3), ack).await.ok(),
        _ => None,
    };
    assert!(
        !matches!(acked, Some(Ok(_))),
        "the app user wrote the settings bucket"
    );

    // A runner (user runner) serves a function the gateway deploys.
    let _runner = Proc::spawn(
        "runner",
        Command::new(&handlers)
            .args(["--functions", "--nats-user", "runner"])
            .args(["--nats-password", "runner-secret"])
            .env("NATS_URL", &url),
    );
    let echo = wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/wasm/echo.wat"
    ))
    .unwrap();
    let deployed = http
        .put(format!("{base}/functions/ECHO"))
        .header("content-type", "application/wasm")
        .body(echo)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201, "{}", deployed.text().await.unwrap());
    eventually(
        "the runner serves ECHO",
        Duration::from_secs(30),
        || async {
            let reply: serde_json::Value = http
                .post(format!("{base}/activate"))
                .json(&json!({"node": "ECHO", "input": "under permissions"}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (reply["outcome"] == "ok").then_some(())
        },
    )
    .await;

    // An asynchronous activation is queued, taken and kept under the gateway's
    // permissions.
    let accepted = http
        .post(format!("{base}/activate"))
        .header("prefer", "respond-async")
        .json(&json!({"node": "ECHO", "input": "later"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202, "{}", accepted.text().await.unwrap());
    let location = accepted.headers()["location"].to_str().unwrap().to_string();
    let done = eventually(
        "the async activation ended",
        Duration::from_secs(30),
        || async {
            let r = http.get(format!("{base}{location}")).send().await.ok()?;
            let ended = r.status() == 200;
            let body: serde_json::Value = r.json().await.ok()?;
            ended.then_some(body)
        },
    )
    .await;
    assert_eq!(done["job"]["state"], "done", "{done}");
    assert_eq!(done["reply"]["outcome"], "ok", "{done}");
}
