//! Renamed environment variables: the old names still work for one release, with a
//! warning; `NODE_NAME` (set by Kubernetes on every pod) is not read at all.

use std::{process::Command, time::Duration};

use crate::helpers::*;

fn handlers_bin() -> std::path::PathBuf {
    binary("handlers")
}

#[tokio::test]
async fn old_names_are_read_with_a_warning_and_node_name_is_ignored() {
    let server = NatsServer::start();
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/../topology/seed.toml");
    // As on a Kubernetes pod: NODE_NAME is the pod's node. It must not matter.
    let nodes = Proc::spawn(
        "handlers",
        Command::new(handlers_bin())
            .args(["--topology", topology, "--only", "TM"])
            .env("NATS_URL", server.url())
            .env("NODE_NAME", "worker-node-7")
            .env("NODE_FAIL_RATE", "0.25")
            .env_remove("MESH_FAIL_RATE"),
    );
    let port = testsupport::free_port();
    let listen = format!("127.0.0.1:{port}");
    let gateway = Proc::spawn(
        "gateway",
        Command::new(binary("gateway"))
            .env("NATS_URL", server.url())
            .env("GATEWAY_LISTEN", &listen)
            .env_remove("MESH_GATEWAY_LISTEN")
            // And the access log, one line per request.
            .env("RUST_LOG", "info,gateway::access=debug"),
    );
    let http = reqwest::Client::new();
    let topology = eventually(
        "the gateway listens at the old name's address and sees TM",
        Duration::from_secs(30),
        || async {
            let t = get_json(&http, &format!("http://{listen}/topology")).await?;
            (t["nodes"].as_array()?.len() == 1).then_some(t)
        },
    )
    .await;
    assert_eq!(topology["nodes"][0]["name"], "TM");
    // The old name's value is in force.
    assert_eq!(topology["nodes"][0]["fail_rate"], 0.25, "{topology}");
    assert!(
        nodes.output().contains("NODE_FAIL_RATE is deprecated"),
        "{}",
        nodes.output()
    );
    assert!(gateway.output().contains("GATEWAY_LISTEN is deprecated"));
    let access = gateway.output();
    assert!(
        access.lines().any(|l| l.contains("request")
            && l.contains("route=/topology")
            && l.contains("status=200")),
        "{access}"
    );
}
