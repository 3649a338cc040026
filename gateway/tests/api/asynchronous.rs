//! Asynchronous activations (`Prefer: respond-async`): stored before the 202, run once
//! per attempt by whichever gateway takes them, retried, dead, re-run; idempotency keys;
//! the bus door. Real nats-server with JetStream, real nodes, real HTTP.

use std::{process::Command, sync::Arc, time::Duration};

use gateway::settings::AsyncSettings;
use handlers::{runtime::Running, Settings};
use serde_json::{json, Value};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// Quick retries and a short ack wait, for tests.
fn quick(s: &mut gateway::Settings) {
    s.asynchronous = Some(AsyncSettings {
        backoff: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ack_wait: Duration::from_millis(1500),
        max_attempts: 3,
        ..AsyncSettings::default()
    });
}

async fn serve(server: &NatsServer, nodes: Vec<handlers::NodeSpec>) -> Running {
    let client = async_nats::connect(server.url()).await.unwrap();
    Running::start(client, nodes, Settings::default())
        .await
        .unwrap()
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut r = http
        .post(format!("{base}/activate"))
        .header("prefer", "respond-async")
        .json(&body);
    if let Some(key) = key {
        r = r.header("idempotency-key", key);
    }
    r.send().await.unwrap()
}

async fn state(http: &reqwest::Client, base: &str, location: &str) -> (u16, Value) {
    let r = http.get(format!("{base}{location}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Waits until the activation at `location` has ended; its detail.
async fn ended(http: &reqwest::Client, base: &str, location: &str, limit: Duration) -> Value {
    eventually(&format!("{location} ended"), limit, || async {
        let (status, body) = state(http, base, location).await;
        (status == 200).then_some(body)
    })
    .await
}

#[tokio::test]
async fn respond_async_answers_202_once_stored_and_runs_it() {
    let server = NatsServer::start_jetstream();
    let _nodes = serve(&server, vec![spec("A", &["B"], 300), spec("B", &[], 0)]).await;
    let gw = Gw::start(&server.url(), quick).await;
    let http = reqwest::Client::new();
    let r = submit(
        &http,
        &gw.base,
        json!({"node": "A", "input": {"n": 1}}),
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.headers()["preference-applied"], "respond-async");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/activations/{}", body["activation_id"].as_str().unwrap())
    );
    assert_eq!(body["duplicate"], false);
    // While it runs (A works 300 ms): 202 with its state.
    let (status, pending) = state(&http, &gw.base, &location).await;
    assert_eq!(status, 202, "{pending}");
    assert!(
        ["queued", "running"].contains(&pending["state"].as_str().unwrap()),
        "{pending}"
    );
    let done = ended(&http, &gw.base, &location, Duration::from_secs(30)).await;
    assert_eq!(done["job"]["state"], "done", "{done}");
    assert_eq!(done["job"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(done["reply"]["outcome"], "ok");
    assert_eq!(done["reply"]["children"][0]["node"], "B");
    assert_eq!(done["request"]["input"], json!({"n": 1}));

    // Idempotency: the same key is the same activation; another key is another.
    let first = submit(&http, &gw.base, json!({"node": "B"}), Some("order-42")).await;
    let again = submit(&http, &gw.base, json!({"node": "B"}), Some("order-42")).await;
    let other = submit(&http, &gw.base, json!({"node": "B"}), Some("order-43")).await;
    assert_eq!(
        (first.status().as_u16(), again.status().as_u16()),
        (202, 202)
    );
    let loc = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(loc(&first), loc(&again));
    assert_ne!(loc(&first), loc(&other));
    assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], true);

    // Bad input: a key with a space, a taken id; nothing queued for either.
    let bad = submit(&http, &gw.base, json!({}), Some("two words")).await;
    assert_eq!(bad.status().as_u16(), 400);
    let id = location.rsplit('/').next().unwrap();
    let taken = submit(&http, &gw.base, json!({"activation_id": id}), None).await;
    assert_eq!(taken.status().as_u16(), 409);

    // The bus door: a request on mesh.async.submit, answered with the id.
    let nats = async_nats::connect(server.url()).await.unwrap();
    let answer = nats
        .request("mesh.async.submit", r#"{"node":"B","input":"bus"}"#.into())
        .await
        .unwrap();
    let accepted: Value = serde_json::from_slice(&answer.payload).unwrap();
    let location = accepted["location"].as_str().unwrap().to_string();
    let done = ended(&http, &gw.base, &location, Duration::from_secs(30)).await;
    assert_eq!(done["reply"]["outcome"], "ok", "{done}");
    let junk = nats.request("mesh.async.submit", "[".into()).await.unwrap();
    let junk: Value = serde_json::from_slice(&junk.payload).unwrap();
    assert_eq!(junk["error"], "bad_request");
}

#[tokio::test]
async fn a_node_down_for_a_while_is_retried_and_a_node_always_late_is_dead() {
    let server = NatsServer::start_jetstream();
    let gw = Gw::start(&server.url(), |s| {
        quick(s);
        if let Some(a) = &mut s.asynchronous {
            a.max_attempts = 30;
            a.backoff_max = Duration::from_millis(300);
        }
    })
    .await;
    let http = reqwest::Client::new();
    // Nobody serves LATER yet.
    let r = submit(
        &http,
        &gw.base,
        json!({"node": "LATER", "timeout_ms": 1000}),
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    eventually("two attempts failed", Duration::from_secs(30), || async {
        let (_, s) = state(&http, &gw.base, &location).await;
        (s["attempts"].as_array()?.len() >= 2).then_some(())
    })
    .await;
    let _later = serve(&server, vec![spec("LATER", &[], 0)]).await;
    let done = ended(&http, &gw.base, &location, Duration::from_secs(30)).await;
    let attempts = done["job"]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{done}");
    assert_eq!(attempts[0]["outcome"], "unavailable");
    assert_eq!(attempts.last().unwrap()["outcome"], "ok");
    assert_eq!(done["job"]["state"], "done");
}

#[tokio::test]
async fn an_activation_that_always_times_out_is_dead_and_can_be_rerun() {
    let server = NatsServer::start_jetstream();
    let _slow = serve(&server, vec![spec("SLOW", &[], 400)]).await;
    let gw = Gw::start(&server.url(), quick).await;
    let http = reqwest::Client::new();
    let r = submit(
        &http,
        &gw.base,
        json!({"node": "SLOW", "timeout_ms": 100}),
        None,
    )
    .await;
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let dead = ended(&http, &gw.base, &location, Duration::from_secs(30)).await;
    assert_eq!(dead["job"]["state"], "dead", "{dead}");
    let attempts = dead["job"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{dead}");
    assert!(attempts
        .iter()
        .all(|a| a["outcome"] == "timeout" && a["reply"]["code"] == 504));
    let id = location.rsplit('/').next().unwrap().to_string();
    let (_, listed) = state(&http, &gw.base, "/activations?state=dead").await;
    assert_eq!(
        listed["activations"][0]["activation_id"],
        id.as_str(),
        "{listed}"
    );
    let metrics = http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"mesh_gateway_async_activations_total{event="dead"} 1"#),
        "{metrics}"
    );
    // Not dead yet: a re-run of a done one is refused.
    let retry = |id: String| {
        let http = http.clone();
        let url = format!("{}/activations/{id}/retry", gw.base);
        async move { http.post(url).send().await.unwrap() }
    };
    assert_eq!(retry("nobody".into()).await.status().as_u16(), 404);
    // The node is made fast; the re-run succeeds, with every attempt kept.
    let fast = http
        .put(format!("{}/nodes/SLOW/config", gw.base))
        .json(&json!({"work_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status().as_u16(), 200);
    let r = retry(id.clone()).await;
    assert_eq!(r.status().as_u16(), 202);
    let done = eventually("the re-run is done", Duration::from_secs(30), || async {
        let (status, body) = state(&http, &gw.base, &location).await;
        (status == 200 && body["job"]["state"] == "done").then_some(body)
    })
    .await;
    assert_eq!(
        done["job"]["attempts"].as_array().unwrap().len(),
        4,
        "{done}"
    );
    assert_eq!(retry(id).await.status().as_u16(), 409);
}

#[tokio::test]
async fn a_gateway_killed_mid_activation_leaves_it_to_another() {
    let server = NatsServer::start_jetstream();
    let _nodes = serve(&server, vec![spec("WORK", &[], 3000)]).await;
    let port = testsupport::free_port();
    let mut a = Proc::spawn(
        "gateway A",
        Command::new(BIN)
            .args([
                "--nats-url",
                &server.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--gateway-id", "gw-a"])
            .env("MESH_ASYNC_ACK_WAIT_MS", "1500")
            .env("MESH_ASYNC_BACKOFF_MS", "100"),
    );
    let base_a = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("gateway A is ready", Duration::from_secs(30), || async {
        let r = http.get(format!("{base_a}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let r = submit(
        &http,
        &base_a,
        json!({"node": "WORK", "timeout_ms": 10000}),
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    eventually("A runs it", Duration::from_secs(30), || async {
        let (_, s) = state(&http, &base_a, &location).await;
        (s["state"] == "running").then_some(())
    })
    .await;
    a.kill();
    let b = Gw::start(&server.url(), quick).await;
    let done = ended(&http, &b.base, &location, Duration::from_secs(60)).await;
    let attempts = done["job"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{done}");
    assert_eq!(attempts[0]["gateway"], "gw-a");
    assert_eq!(
        attempts[0]["outcome"], "unavailable",
        "A's attempt never ended"
    );
    assert_eq!(attempts[1]["gateway"], b.state.gateway_id());
    assert_eq!(attempts[1]["outcome"], "ok");
}

#[tokio::test]
async fn a_callback_to_an_allowed_url_arrives_once_and_others_are_refused() {
    use poem::{handler, listener::TcpListener, web::Json as PJson, EndpointExt, Route, Server};
    let server = NatsServer::start_jetstream();
    let _nodes = serve(&server, vec![spec("A", &[], 0)]).await;
    // The callback receiver: every POST noted.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    #[handler]
    fn hook(
        body: PJson<Value>,
        seen: poem::web::Data<&std::sync::Arc<std::sync::Mutex<Vec<Value>>>>,
    ) -> &'static str {
        seen.lock().unwrap().push(body.0);
        "ok"
    }
    let port = testsupport::free_port();
    let app = Route::new()
        .at("/hook/done", poem::post(hook))
        .data(received.clone());
    tokio::spawn(Server::new(TcpListener::bind(format!("127.0.0.1:{port}"))).run(app));
    let allowed = format!("http://127.0.0.1:{port}/hook/");
    let gw = Gw::start(&server.url(), |s| {
        quick(s);
        if let Some(a) = &mut s.asynchronous {
            a.callback_allow = vec![allowed.clone()];
        }
    })
    .await;
    let http = reqwest::Client::new();
    let with = |url: String| {
        let http = http.clone();
        let base = gw.base.clone();
        async move {
            http.post(format!("{base}/activate"))
                .header("prefer", "respond-async")
                .header("x-callback-url", url)
                .json(&json!({"node": "A"}))
                .send()
                .await
                .unwrap()
        }
    };
    for refused in [
        format!("http://127.0.0.1:{port}/elsewhere"),
        format!("http://127.0.0.1:{}/hook/done", port + 1),
        format!("http://user:pw@127.0.0.1:{port}/hook/done"),
        "https://example.com/hook/".to_string(),
        "not a url".to_string(),
    ] {
        let r = with(refused.clone()).await;
        assert_eq!(r.status().as_u16(), 400, "{refused}");
    }
    let r = with(format!("{allowed}done")).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["activation_id"].clone();
    let body = eventually("the callback arrives", Duration::from_secs(30), || async {
        received.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(body["activation_id"], id);
    assert_eq!(body["state"], "done");
    assert_eq!(body["reply"]["outcome"], "ok");
    // Once: a second activation's callback arrives after it, and nothing else came.
    let r = with(format!("{allowed}done")).await;
    let second = r.json::<Value>().await.unwrap()["activation_id"].clone();
    eventually("the second callback", Duration::from_secs(30), || async {
        (received.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    let all = received.lock().unwrap().clone();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["activation_id"], second);
}

#[tokio::test]
async fn a_burst_for_one_node_runs_within_its_concurrency_limit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = NatsServer::start_jetstream();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let f = {
        let (now, most) = (now.clone(), most.clone());
        handlers::function(move |_call: handlers::Call| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(json!(null))
            }
        })
    };
    let _node = serve(&server, vec![handlers::NodeSpec::function(name("BUSY"), f)]).await;
    let gw = Gw::start(&server.url(), |s| {
        quick(s);
        if let Some(a) = &mut s.asynchronous {
            a.node_concurrency = 2;
        }
    })
    .await;
    let http = reqwest::Client::new();
    let mut locations = Vec::new();
    for _ in 0..8 {
        let r = submit(&http, &gw.base, json!({"node": "BUSY"}), None).await;
        locations.push(r.headers()["location"].to_str().unwrap().to_string());
    }
    for location in &locations {
        let done = ended(&http, &gw.base, location, Duration::from_secs(60)).await;
        assert_eq!(done["job"]["state"], "done", "{done}");
        assert_eq!(
            done["job"]["attempts"].as_array().unwrap().len(),
            1,
            "waiting is no attempt"
        );
    }
    let most = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} ran at once");
}
