//! The `handlers` binary: command line, topology file, SIGTERM.

use std::{process::Command, time::Duration};

use schemas::{ActivationRequest, Outcome};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_handlers");

#[tokio::test]
async fn binary_serves_topology_and_stops_on_sigterm() {
    let server = NatsServer::start();
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology/seed.toml");
    let mut child = Proc::spawn(
        "handlers",
        std::process::Command::new(BIN)
            .args(["--nats-url", &server.url(), "--topology", topology])
            .args(["--fail-rate", "0", "--seed", "1"]),
    );
    let client = connect(&server).await;
    // Every node of the tree serving: the binary registers its nodes one after another,
    // so UI may answer while a node below it is not serving yet.
    let reply = eventually(
        "the binary serves every node",
        Duration::from_secs(20),
        || async {
            let r = activate(
                &client,
                "UI",
                ActivationRequest {
                    timeout_ms: Some(5000),
                    ..Default::default()
                },
            )
            .await;
            let serving = !r.iter().any(|n| n.outcome == Outcome::Unavailable);
            serving.then_some(r)
        },
    )
    .await;
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    assert_eq!(reply.count(), 8);
    let tm = reply.iter().find(|r| r.node.as_str() == "TM").unwrap();
    assert!(tm.elapsed_ms >= 1500, "TM works 1500 ms: {}", tm.elapsed_ms);

    let ping = tokio::process::Command::new(BIN)
        .args([
            "--nats-url",
            &server.url(),
            "--topology",
            topology,
            "--only",
            "TM,UI",
            "--ping",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(String::from_utf8_lossy(&ping.stdout).contains("TM answers $SRV.PING.TM"));
    let missing = tokio::process::Command::new(BIN)
        .args(["--nats-url", &server.url(), "-n", "nobody", "--ping"])
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());

    child.signal(Signal::SIGTERM);
    let status = child
        .exit_within(Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let after = activate(&client, "UI", ActivationRequest::default()).await;
    assert_eq!(after.outcome, Outcome::Unavailable);
}

#[test]
fn binary_refuses_bad_arguments_clearly() {
    for (args, needle) in [
        (&["-n", "a.b"][..], "'.'"),
        (&["-n", "A", "--fail-rate", "2"], "not between 0 and 1"),
        (&["-n", "A", "-s", "*"], "'*'"),
        (
            &["--topology", "/nonexistent.toml"],
            "cannot read topology file",
        ),
        (&[], "--name"),
    ] {
        let out = Command::new(BIN)
            .args(args)
            .env("NATS_URL", "nats://127.0.0.1:1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(needle), "{args:?}: {text}");
    }
}

#[tokio::test]
async fn binary_serves_one_exec_function_and_refuses_a_contradictory_file() {
    let server = NatsServer::start();
    let mut child = Proc::spawn(
        "handlers",
        std::process::Command::new(BIN).args([
            "--nats-url",
            &server.url(),
            "-n",
            "ECHO",
            "--exec",
            "sh -c 'cat'",
        ]),
    );
    let client = connect(&server).await;
    let reply = eventually(
        "the binary serves ECHO",
        Duration::from_secs(10),
        || async {
            let request = ActivationRequest {
                input: Some(serde_json::json!({"k": "v"})),
                ..Default::default()
            };
            let r = activate(&client, "ECHO", request).await;
            (r.outcome != Outcome::Unavailable).then_some(r)
        },
    )
    .await;
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:#?}");
    assert_eq!(reply.result.unwrap()["input"]["k"], "v");
    child.kill();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("both.toml");
    std::fs::write(
        &file,
        "[[node]]\nname = \"WC\"\nexec = [\"wc\"]\nwork_ms = 10\n",
    )
    .unwrap();
    let refused = Command::new(BIN)
        .args(["--nats-url", &server.url(), "--topology"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("node WC") && stderr.contains("not both"),
        "{stderr}"
    );
}
