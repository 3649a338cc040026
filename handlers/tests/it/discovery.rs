//! Discovery through the NATS Services API.

use std::{collections::HashMap, time::Duration};

use async_nats::service::Info;
use futures::StreamExt;
use schemas::subject;

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
