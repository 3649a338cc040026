//! `scripts/run`, the README's run command, end to end: it starts its own nats-server
//! when none answers, the seed nodes and the gateway; Ctrl-C leaves no process behind.

use std::{process::Command, time::Duration};

use serde_json::json;

use crate::helpers::{binary, eventually, get_json, Proc, Signal};
use testsupport::free_port;

fn group_members(pgid: u32) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-g", &pgid.to_string(), "-a"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test]
#[ignore = "external: runs scripts/run, which builds release binaries; ./scripts/test installs it and runs this"]
async fn runner_starts_everything_and_ctrl_c_stops_it() {
    let bin_dir = binary("gateway");
    let bin_dir = bin_dir.parent().unwrap();
    assert!(
        bin_dir.join("handlers").exists(),
        "build the handlers binary too (cargo test --workspace does)"
    );
    let nats_port = free_port();
    let http_port = free_port();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // `env --default-signal=INT`: a process started in the background by a
    // non-interactive shell (as CI may start this test) inherits SIGINT ignored, and
    // bash cannot trap a signal ignored on entry. A terminal's Ctrl-C is not ignored.
    // In a process group of its own, as a terminal would start it: Ctrl-C goes to the
    // whole group.
    let mut runner = Proc::spawn(
        "scripts/run",
        Command::new("env")
            .arg("--default-signal=INT")
            .arg(format!("{root}/scripts/run"))
            .env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
            .env("MESH_GATEWAY_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("MESH_BIN_DIR", bin_dir)
            .env("MESH_FAIL_RATE", "0"),
    );
    let pgid = runner.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");

    eventually(
        "the runner's gateway is ready",
        Duration::from_secs(30),
        || async {
            let r = http.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let started = std::process::Command::new("pgrep")
        .args(["-f", &format!("nats-server.*-p {nats_port}")])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "the runner started its own nats-server"
    );

    let topology = eventually("8 nodes discovered", Duration::from_secs(10), || async {
        let t = get_json(&http, &format!("{base}/topology")).await?;
        (t["nodes"].as_array()?.len() == 8).then_some(t)
    })
    .await;
    assert_eq!(topology["entry"], "UI");
    let reply = http
        .post(format!("{base}/activate"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let tree: schemas::ActivationReply = reply.json().await.unwrap();
    assert_eq!(tree.count(), 8);

    // Ctrl-C: SIGINT to the process group.
    runner.signal(Signal::SIGINT);
    let status = runner
        .exit_within(Duration::from_secs(30))
        .await
        .expect("the runner exits on Ctrl-C");
    assert!(status.success(), "{status:?}");
    eventually("every child gone", Duration::from_secs(10), || async {
        let members = group_members(pgid);
        let nats_left = Command::new("pgrep")
            .args(["-f", &format!("nats-server.*-p {nats_port}")])
            .status()
            .unwrap()
            .success();
        (members.is_empty() && !nats_left).then_some(())
    })
    .await;
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "gateway stopped"
    );
}
