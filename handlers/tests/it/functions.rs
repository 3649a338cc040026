//! Functions behind nodes: programs, HTTP endpoints and Rust code, with real processes,
//! a real nats-server and a real HTTP server.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use handlers::{function, FunctionError, NodeSpec, Settings, Topology};
use poem::{
    handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    web::{Json, Redirect},
    Route, Server,
};
use schemas::{ActivationRequest, Outcome};
use serde_json::{json, Value};

use crate::helpers::*;

/// The nodes of a topology file written into a fresh directory beside `files`
/// (name, contents), so that `exec` programs resolve against it.
fn topology(text: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<NodeSpec>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let path = dir.path().join("topology.toml");
    std::fs::write(&path, text).unwrap();
    let nodes = Topology::load(&path).unwrap().nodes;
    (dir, nodes)
}

fn with_input(input: Value, timeout_ms: u64) -> ActivationRequest {
    ActivationRequest {
        input: Some(input),
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    }
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn exec_function_gets_the_document_and_its_output_is_the_result() {
    let server = NatsServer::start();
    // `cat` answers with the document it was given; SH prints what it may see.
    let (_dir, nodes) = topology(
        r#"
        [[node]]
        name = "CAT"
        downstream = ["SH", "SIM"]
        exec = ["cat"]

        [[node]]
        name = "SH"
        exec = ["sh", "env.sh"]
        env = { GREETING = "hi" }

        [[node]]
        name = "SIM"
        work_ms = 5
        "#,
        &[(
            "env.sh",
            r#"printf '{"node":"%s","id":"%s","budget":%s,"greeting":"%s","nats_url":"%s"}' "$MESH_NODE" "$MESH_ACTIVATION_ID" "$MESH_BUDGET_MS" "$GREETING" "$NATS_URL""#,
        )],
    );
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;
    let reply = activate(&client, "CAT", with_input(json!({"text": "a b c"}), 3000)).await;
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    let doc = reply.result.clone().expect("the root's result");
    assert_eq!(doc["node"], "CAT");
    assert_eq!(doc["activation_id"], reply.activation_id.as_str());
    assert_eq!(doc["input"], json!({"text": "a b c"}));
    assert!(doc["budget_ms"].as_u64().unwrap() <= 3000);
    // Scatter, then gather: the function saw both children's replies.
    let children = doc["children"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    assert_eq!(children[0]["node"], "SH");
    assert_eq!(children[0]["result"]["greeting"], "hi");
    assert_eq!(children[1]["node"], "SIM");
    assert!(
        children[1].get("result").is_none(),
        "simulated nodes have no result"
    );

    let sh = reply.result.as_ref().unwrap()["children"][0]["result"].clone();
    assert_eq!(sh["node"], "SH");
    assert_eq!(sh["id"], reply.activation_id.as_str());
    assert!(sh["budget"].as_u64().unwrap() > 0);
    assert_eq!(
        sh["nats_url"], "",
        "the node's environment is not passed on"
    );
}

#[tokio::test]
async fn exec_failures_say_what_happened() {
    let server = NatsServer::start();
    let (_dir, nodes) = topology(
        r#"
        [[node]]
        name = "EXIT"
        exec = ["sh", "-c", "echo first >&2; echo 'it broke' >&2; exit 3"]
        [[node]]
        name = "TEXT"
        exec = ["echo", "hello"]
        [[node]]
        name = "NONE"
        exec = ["./no-such-program"]
        [[node]]
        name = "BIG"
        exec = ["sh", "-c", "yes big-output-marker-4711"]
        max_output_bytes = 1000
        "#,
        &[],
    );
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;

    let exit = activate(&client, "EXIT", ActivationRequest::default()).await;
    assert_eq!(
        (exit.outcome, exit.code),
        (Outcome::Failed, 500),
        "{exit:#?}"
    );
    assert!(
        exit.message.contains("exited with status 3"),
        "{}",
        exit.message
    );
    assert!(exit.message.contains("it broke"), "{}", exit.message);
    assert!(exit.result.is_none());

    let text = activate(&client, "TEXT", ActivationRequest::default()).await;
    assert_eq!(
        (text.outcome, text.code),
        (Outcome::Failed, 502),
        "{text:#?}"
    );
    assert!(
        text.message.contains("not one JSON value"),
        "{}",
        text.message
    );

    let none = activate(&client, "NONE", ActivationRequest::default()).await;
    assert_eq!(
        (none.outcome, none.code),
        (Outcome::Failed, 500),
        "{none:#?}"
    );
    assert!(none.message.contains("cannot start"), "{}", none.message);

    // `yes` never ends: it is killed as soon as it passes the limit.
    let started = Instant::now();
    let big = activate(&client, "BIG", with_input(Value::Null, 10_000)).await;
    assert_eq!((big.outcome, big.code), (Outcome::Failed, 502), "{big:#?}");
    assert!(
        big.message.contains("more than 1000 bytes"),
        "{}",
        big.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    eventually("yes is gone", Duration::from_secs(10), || async {
        processes_with("big-output-marker-4711")
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn exec_past_its_budget_is_killed_with_its_whole_group() {
    let server = NatsServer::start();
    // The program starts a grandchild and waits: both must die at the deadline.
    let (_dir, nodes) = topology(
        r#"
        [[node]]
        name = "SLOW"
        exec = ["sh", "-c", "sleep 31.4159 & sleep 31.4159; echo 1"]
        "#,
        &[],
    );
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;
    let started = Instant::now();
    let reply = activate(&client, "SLOW", with_input(Value::Null, 400)).await;
    let took = started.elapsed();
    assert_eq!(
        (reply.outcome, reply.code),
        (Outcome::Timeout, 504),
        "{reply:#?}"
    );
    assert!(
        reply.message.contains("did not finish within the 400 ms"),
        "{}",
        reply.message
    );
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    eventually("no process is left", Duration::from_secs(10), || async {
        processes_with("sleep 31.4159").is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_exec_activations_each_get_their_own_result() {
    let server = NatsServer::start();
    let (_dir, nodes) = topology("[[node]]\nname = \"CAT\"\nexec = [\"cat\"]\n", &[]);
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;
    let replies = futures::future::join_all((0..50).map(|i| {
        let client = client.clone();
        async move {
            let r = activate(&client, "CAT", with_input(json!({ "i": i }), 20_000)).await;
            (i, r)
        }
    }))
    .await;
    for (i, reply) in replies {
        assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
        assert_eq!(reply.result.unwrap()["input"]["i"], i);
    }
}

#[tokio::test]
async fn exec_at_its_in_flight_limit_is_rejected_at_once() {
    let server = NatsServer::start();
    let (_dir, nodes) = topology(
        "[[node]]\nname = \"BUSY\"\nexec = [\"sh\", \"-c\", \"sleep 1; echo 1\"]\n",
        &[],
    );
    let settings = Settings {
        max_in_flight: 1,
        ..Settings::default()
    };
    let _running = serve_with(&server, nodes, settings).await;
    let client = connect(&server).await;
    let mut status = client.subscribe("status.BUSY").await.unwrap();
    mesh_core::bus::sync(&client).await.unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { activate(&client, "BUSY", ActivationRequest::default()).await }
    });
    // Once the first is running, the second finds the node at its limit.
    next_within(&mut status, Duration::from_secs(10))
        .await
        .expect("the first is running");
    let started = Instant::now();
    let second = activate(&client, "BUSY", ActivationRequest::default()).await;
    assert_eq!(
        (second.outcome, second.code),
        (Outcome::Rejected, 503),
        "{second:#?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "refused at once"
    );
    assert_eq!(first.await.unwrap().outcome, Outcome::Ok);
}

#[tokio::test]
async fn a_failed_child_is_seen_by_the_function_and_fails_the_node() {
    let server = NatsServer::start();
    let (_dir, mut nodes) = topology(
        "[[node]]\nname = \"AGG\"\ndownstream = [\"BAD\"]\nexec = [\"cat\"]\n",
        &[],
    );
    let mut bad = spec("BAD", &[], 0);
    bad.work = handlers::Work::simulated(0, 1.0);
    nodes.push(bad);
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;
    let reply = activate(&client, "AGG", ActivationRequest::default()).await;
    assert_eq!(
        (reply.outcome, reply.code),
        (Outcome::Failed, 502),
        "{reply:#?}"
    );
    assert!(reply.message.contains("BAD (failed"), "{}", reply.message);
    let result = reply
        .result
        .expect("the function ran and its result is kept");
    assert_eq!(result["children"][0]["outcome"], "failed");
}

#[tokio::test]
async fn rust_function_node() {
    let server = NatsServer::start();
    let words = function(|call: handlers::Call| async move {
        let text = call.input["text"]
            .as_str()
            .ok_or_else(|| FunctionError::failed("input.text must be a string"))?;
        Ok(json!(text.split_whitespace().count()))
    });
    let node = NodeSpec::function(name("WORDS"), words);
    let _running = serve(&server, vec![node]).await;
    let client = connect(&server).await;
    let ok = activate(
        &client,
        "WORDS",
        with_input(json!({"text": "one two three"}), 1000),
    )
    .await;
    assert_eq!((ok.outcome, ok.result), (Outcome::Ok, Some(json!(3))));
    let bad = activate(&client, "WORDS", with_input(json!({"text": 7}), 1000)).await;
    assert_eq!((bad.outcome, bad.code), (Outcome::Failed, 500));
    assert!(bad.message.contains("input.text must be a string"));

    // Its kind is on the bus for discovery.
    let info = client.request("$SRV.INFO.WORDS", "".into()).await.unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["metadata"]["mesh.function"], "rust");
}

#[handler]
fn echo_input_fn(Json(doc): Json<Value>) -> Json<Value> {
    Json(json!({ "got": doc["input"], "node": doc["node"] }))
}

#[handler]
fn missing_fn() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "no such function")
}

#[handler]
fn moved_fn() -> Redirect {
    Redirect::see_other("/echo")
}

#[handler]
async fn slow_fn() -> Json<Value> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    Json(json!("late"))
}

#[handler]
fn not_json_fn() -> &'static str {
    "plain text"
}

/// A real HTTP server with one route per behaviour; returns its base URL.
async fn endpoints() -> String {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let routes = Route::new()
        .at("/echo", poem::post(echo_input_fn))
        .at("/missing", poem::post(missing_fn))
        .at("/moved", poem::post(moved_fn))
        .at("/slow", poem::post(slow_fn))
        .at("/text", poem::post(not_json_fn));
    tokio::spawn(Server::new_with_acceptor(acceptor).run(routes));
    format!("http://{addr}")
}

#[tokio::test]
async fn http_function_outcomes() {
    let server = NatsServer::start();
    let base = endpoints().await;
    let text: String = ["echo", "missing", "moved", "slow", "text"]
        .iter()
        .map(|p| format!("[[node]]\nname = \"{p}\"\nhttp = \"{base}/{p}\"\n\n"))
        .collect();
    let (_dir, nodes) = topology(&text, &[]);
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;

    for i in 0..3 {
        let ok = activate(&client, "echo", with_input(json!({"n": i}), 2000)).await;
        assert_eq!(ok.outcome, Outcome::Ok, "{ok:#?}");
        assert_eq!(ok.result, Some(json!({"got": {"n": i}, "node": "echo"})));
    }
    let missing = activate(&client, "missing", with_input(Value::Null, 2000)).await;
    assert_eq!((missing.outcome, missing.code), (Outcome::Failed, 404));
    assert!(
        missing.message.contains("no such function"),
        "{}",
        missing.message
    );
    // The redirect is not followed: its 303 is not a result.
    let moved = activate(&client, "moved", with_input(Value::Null, 2000)).await;
    assert_eq!(
        (moved.outcome, moved.code),
        (Outcome::Failed, 502),
        "{moved:#?}"
    );
    assert!(moved.message.contains("303"), "{}", moved.message);
    let text = activate(&client, "text", with_input(Value::Null, 2000)).await;
    assert_eq!((text.outcome, text.code), (Outcome::Failed, 502));
    let started = Instant::now();
    let slow = activate(&client, "slow", with_input(Value::Null, 500)).await;
    assert_eq!(
        (slow.outcome, slow.code),
        (Outcome::Timeout, 504),
        "{slow:#?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_rust_example_serves_upper() {
    // cargo test builds the examples beside the test binaries.
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/upper");
    assert!(example.exists(), "{} is missing", example.display());
    let server = NatsServer::start();
    let mut child = Proc::spawn(
        "the example node",
        std::process::Command::new(example)
            .arg(server.url())
            .env("RUST_LOG", "warn"),
    );
    let client = connect(&server).await;
    let reply = eventually("UPPER answers", Duration::from_secs(20), || async {
        let r = activate(
            &client,
            "UPPER",
            with_input(json!({"text": "hello mesh"}), 2000),
        )
        .await;
        (r.outcome != Outcome::Unavailable).then_some(r)
    })
    .await;
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    assert_eq!(
        reply.result,
        Some(json!({"upper": "HELLO MESH", "words": 2}))
    );
    child.signal(Signal::SIGTERM);
    let status = child
        .exit_within(Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
#[ignore = "external: needs python3; ./scripts/test runs this"]
async fn the_wordcount_example_counts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wordcount");
    let port = testsupport::free_port();
    let mut top = Proc::spawn(
        "python3",
        std::process::Command::new("python3")
            .arg(dir.join("top.py"))
            .env("TOP_LISTEN", format!("127.0.0.1:{port}")),
    );
    let text = std::fs::read_to_string(dir.join("topology.toml"))
        .unwrap()
        .replace("127.0.0.1:8765", &format!("127.0.0.1:{port}"));
    let nodes = Topology::parse(&text, Some(&dir)).unwrap().nodes;
    let server = NatsServer::start();
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;
    let input = json!({"text": "the cat and the hat\nsat on the mat"});
    let reply = eventually("the pipeline answers", Duration::from_secs(20), || async {
        let r = activate(&client, "WORDCOUNT", with_input(input.clone(), 5000)).await;
        // TOP may still be starting its server.
        (r.outcome == Outcome::Ok).then_some(r)
    })
    .await;
    let result = reply.result.unwrap();
    assert_eq!(result["words"], 9);
    assert_eq!(
        (result["lines"].clone(), result["chars"].clone()),
        (json!(2), json!(34))
    );
    assert_eq!(result["top"][0], json!({"word": "the", "count": 3}));

    // With TOP's server gone, the aggregator still runs, reports it, and the node fails.
    top.kill();
    let reply = activate(&client, "WORDCOUNT", with_input(input, 5000)).await;
    assert_eq!((reply.outcome, reply.code), (Outcome::Failed, 502));
    let result = reply.result.unwrap();
    assert_eq!(result["words"], 9);
    assert!(
        result["failed"]["TOP"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{result}"
    );
}

/// A program that leaves a child in a new session (and a double-forked one) holding its
/// stdout: its result is taken when it exits, not when its whole budget has run out, and
/// nothing it started is left running after the activation.
#[tokio::test]
async fn nothing_a_program_starts_outlives_its_activation() {
    let server = NatsServer::start();
    let (_dir, nodes) = topology(
        r#"
        [[node]]
        name = "LEAVER"
        exec = ["sh", "leaver.sh"]
        "#,
        &[(
            "leaver.sh",
            "setsid sleep 27.1828 &\n\
             (setsid sh -c 'sleep 27.1828' &) \n\
             sh -c 'sleep 27.1828 & exec sleep 27.1828' &\n\
             sleep 0.2\n\
             echo '{\"left\": true}'\n",
        )],
    );
    let _running = serve(&server, nodes).await;
    let client = connect(&server).await;
    let started = Instant::now();
    let reply = activate(&client, "LEAVER", with_input(Value::Null, 20_000)).await;
    let took = started.elapsed();
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    assert_eq!(reply.result, Some(json!({"left": true})));
    assert!(
        took < Duration::from_secs(5),
        "answered after {took:?}, not at the program's exit"
    );
    eventually("no process is left", Duration::from_secs(10), || async {
        processes_with("sleep 27.1828").is_empty().then_some(())
    })
    .await;

    // At the deadline too, the reaper takes everything with it.
    let (_dir, nodes) = topology(
        r#"
        [[node]]
        name = "STUCK"
        exec = ["sh", "-c", "setsid sleep 23.1406 & (setsid sh -c 'sleep 23.1406' &); sleep 23.1406"]
        "#,
        &[],
    );
    let _stuck = serve(&server, nodes).await;
    let reply = activate(&client, "STUCK", with_input(Value::Null, 400)).await;
    assert_eq!(reply.outcome, Outcome::Timeout, "{reply:#?}");
    eventually("no process is left", Duration::from_secs(10), || async {
        processes_with("sleep 23.1406").is_empty().then_some(())
    })
    .await;
}
