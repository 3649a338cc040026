//! Discovery through the NATS Services API.

use std::{collections::HashMap, time::Duration};

use async_nats::service::Info;
use futures::StreamExt;
use schemas::subject;

use handlers::NodeSpec;

use crate::helpers::*;

#[tokio::test]
async fn srv_info_lists_every_node_with_its_downstream() {
    let server = NatsServer::start();
    let running = serve(&server, seed_zero_work()).await;
    let client = connect(&server).await;

    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply("$SRV.INFO", inbox, "".into())
        .await
        .unwrap();
    let mut infos: HashMap<String, Info> = HashMap::new();
    while infos.len() < 8 {
        let msg = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .unwrap_or_else(|_| panic!("only {} services answered", infos.len()))
            .unwrap();
        let info: Info = serde_json::from_slice(&msg.payload).unwrap();
        infos.insert(info.name.clone(), info);
    }
    for node in handlers::Topology::seed().nodes {
        let info = &infos[node.name.as_str()];
        assert_eq!(&info.id, running.instances().get(&node.name).unwrap());
        // The wire format, spelt out: other tools (`nats micro info`) read these keys.
        assert_eq!(info.metadata["mesh.kind"], "node");
        assert_eq!(info.metadata["mesh.function"], "simulated");
        let downstream: Vec<_> = node.downstream.iter().map(|d| d.as_str()).collect();
        assert_eq!(info.metadata["mesh.downstream"], downstream.join(","));
        assert_eq!(info.endpoints.len(), 1);
        assert_eq!(info.endpoints[0].subject, format!("activate.{}", node.name));
        assert_eq!(info.endpoints[0].queue_group, subject::QUEUE_GROUP);
    }
    let tm = &infos["TM"];
    assert_eq!(tm.metadata["mesh.work_ms"], "0");
    let meta = schemas::service::NodeMeta::from_metadata(&tm.metadata).unwrap();
    assert_eq!((meta.work_ms, meta.fail_rate), (0, 0.0));

    // PING by name finds the node, STATS counts its requests.
    let ping = client.request("$SRV.PING.V", "".into()).await.unwrap();
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "V");
    crate::helpers::activate(&client, "V", Default::default()).await;
    let stats = client.request("$SRV.STATS.V", "".into()).await.unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["endpoints"][0]["num_requests"], 1);
}

#[tokio::test]
async fn failed_activations_are_services_api_errors_that_keep_their_tree() {
    let server = NatsServer::start();
    let failing = NodeSpec {
        work: handlers::Work::simulated(0, 1.0),
        ..NodeSpec::new(name("BROKEN"))
    };
    let _running = serve(&server, vec![failing, spec("FINE", &[], 0)]).await;
    let client = connect(&server).await;

    for _ in 0..3 {
        let message = client
            .request("activate.BROKEN", "{}".into())
            .await
            .unwrap();
        let headers = message.headers.as_ref().expect("error headers");
        let code = headers.get("Nats-Service-Error-Code").unwrap().as_str();
        assert!(code == "500" || code == "502", "{code}");
        assert!(!headers
            .get("Nats-Service-Error")
            .unwrap()
            .as_str()
            .is_empty());
        let tree: schemas::ActivationReply = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(tree.code.to_string(), code);
        assert_eq!(tree.node.as_str(), "BROKEN");
    }
    let ok = client.request("activate.FINE", "{}".into()).await.unwrap();
    assert!(ok.headers.is_none(), "an ok reply has no error headers");

    // `nats micro stats` reads these: every failure counted as an error.
    let stats = |node: &'static str| {
        let client = client.clone();
        async move {
            let stats = client
                .request(format!("$SRV.STATS.{node}"), "".into())
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&stats.payload).unwrap()["endpoints"][0]
                .clone()
        }
    };
    let broken = stats("BROKEN").await;
    assert_eq!(broken["num_requests"], 3, "{broken}");
    assert_eq!(broken["num_errors"], 3, "{broken}");
    assert!(
        !broken["last_error"].as_str().unwrap_or_default().is_empty(),
        "{broken}"
    );
    let fine = stats("FINE").await;
    assert_eq!(
        (fine["num_requests"].as_u64(), fine["num_errors"].as_u64()),
        (Some(1), Some(0)),
        "{fine}"
    );

    // A parent still reads its failed child's tree.
    let _parent = serve(&server, vec![spec("ABOVE", &["BROKEN"], 0)]).await;
    let reply = activate(&client, "ABOVE", Default::default()).await;
    assert_eq!(reply.children.len(), 1);
    assert_eq!(reply.children[0].node.as_str(), "BROKEN");
    assert_ne!(
        reply.children[0].instance, None,
        "the child's own reply, not one made up by the caller"
    );
}
