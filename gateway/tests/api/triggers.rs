//! Triggers: a subject trigger with two gateways runs once per message and answers a
//! reply subject; a cron trigger with two gateways fires once per tick; bad triggers are
//! refused. Real nats-server with JetStream, real nodes, real HTTP.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use handlers::{function, runtime::Running, Call, NodeSpec, Settings};
use serde_json::{json, Value};

use crate::helpers::*;

/// A node that notes every activation id it gets, and answers with its input.
async fn noting(server: &NatsServer, node: &str) -> (Running, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let noted = seen.clone();
    let f = function(move |call: Call| {
        noted.lock().unwrap().push(call.activation_id.to_string());
        async move { Ok(json!({"got": call.input})) }
    });
    let client = async_nats::connect(server.url()).await.unwrap();
    let running = Running::start(
        client,
        vec![NodeSpec::function(name(node), f)],
        Settings::default(),
    )
    .await
    .unwrap();
    (running, seen)
}

async fn put_trigger(http: &reqwest::Client, base: &str, name: &str, body: Value) -> (u16, Value) {
    let r = http
        .put(format!("{base}/triggers/{name}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn runs(http: &reqwest::Client, base: &str, name: &str) -> bool {
    let Ok(r) = http.get(format!("{base}/triggers")).send().await else {
        return false;
    };
    let list: Value = r.json().await.unwrap_or(Value::Null);
    list["triggers"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["name"] == name))
}

/// Two gateways on `server`, the trigger `name` set through the first, once both run it.
async fn two_gateways_running(
    server: &NatsServer,
    name: &str,
    trigger: Value,
) -> (Gw, Gw, reqwest::Client) {
    let (a, b) = (
        Gw::start(&server.url(), |_| {}).await,
        Gw::start(&server.url(), |_| {}).await,
    );
    let http = reqwest::Client::new();
    let (status, body) = put_trigger(&http, &a.base, name, trigger).await;
    assert_eq!(status, 200, "{body}");
    eventually("both gateways run it", Duration::from_secs(30), || async {
        (runs(&http, &a.base, name).await && runs(&http, &b.base, name).await).then_some(())
    })
    .await;
    (a, b, http)
}

#[tokio::test]
async fn a_subject_trigger_runs_once_per_message_across_gateways_and_answers_replies() {
    let server = NatsServer::start_jetstream();
    let (_node, seen) = noting(&server, "ORDER").await;
    let (a, b, http) = two_gateways_running(
        &server,
        "ORDERS",
        json!({"node": "ORDER", "subject": "orders.created"}),
    )
    .await;
    let nats = async_nats::connect(server.url()).await.unwrap();
    // A request is answered with the reply tree.
    let answer = eventually("the trigger answers", Duration::from_secs(30), || async {
        let m = tokio::time::timeout(
            Duration::from_secs(2),
            nats.request("orders.created", r#"{"id":7}"#.into()),
        )
        .await
        .ok()?
        .ok()?;
        serde_json::from_slice::<Value>(&m.payload).ok()
    })
    .await;
    assert_eq!(answer["outcome"], "ok", "{answer}");
    assert_eq!(answer["result"], json!({"got": {"id": 7}}));
    // Messages without a reply subject: one asynchronous activation each, whichever
    // gateway's subscription takes it.
    let before = seen.lock().unwrap().len();
    for i in 0..10 {
        nats.publish("orders.created", format!("{{\"n\":{i}}}").into())
            .await
            .unwrap();
    }
    nats.flush().await.unwrap();
    eventually("ten activations", Duration::from_secs(30), || async {
        (seen.lock().unwrap().len() >= before + 10).then_some(())
    })
    .await;
    // A last request, answered after them: nothing arrived twice meanwhile.
    let _ = nats.request("orders.created", "{}".into()).await.unwrap();
    let ids = seen.lock().unwrap().clone();
    assert_eq!(ids.len(), before + 11, "{ids:?}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );

    // Bad triggers are refused, and removing one stops it everywhere.
    for bad in [
        json!({"node": "ORDER"}),
        json!({"node": "ORDER", "subject": "orders.*"}),
        json!({"node": "ORDER", "subject": "activate.ORDER"}),
        json!({"node": "ORDER", "cron": "not a schedule"}),
        json!({"node": "ORDER", "subject": "x", "cron": "* * * * * *"}),
    ] {
        assert_eq!(
            put_trigger(&http, &a.base, "BAD", bad.clone()).await.0,
            400,
            "{bad}"
        );
    }
    let r = http
        .delete(format!("{}/triggers/ORDERS", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    eventually("no gateway runs it", Duration::from_secs(30), || async {
        (!runs(&http, &a.base, "ORDERS").await && !runs(&http, &b.base, "ORDERS").await)
            .then_some(())
    })
    .await;
    let r = http
        .delete(format!("{}/triggers/ORDERS", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn a_cron_trigger_fires_once_per_tick_across_gateways() {
    let server = NatsServer::start_jetstream();
    let (_node, seen) = noting(&server, "TICK").await;
    let (_a, _b, _http) = two_gateways_running(
        &server,
        "EVERY",
        json!({"node": "TICK", "cron": "* * * * * *", "input": {"tick": true}}),
    )
    .await;
    let ids = eventually("four ticks", Duration::from_secs(60), || async {
        let ids = seen.lock().unwrap().clone();
        (ids.len() >= 4).then_some(ids)
    })
    .await;
    // One activation per tick: its id is the trigger's name and the tick's second.
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
    let seconds: Vec<i64> = ids
        .iter()
        .map(|id| id.strip_prefix("EVERY-").unwrap().parse().unwrap())
        .collect();
    let distinct: HashSet<_> = seconds.iter().collect();
    assert_eq!(distinct.len(), seconds.len(), "{seconds:?}");
}
