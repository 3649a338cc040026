//! The activation inspector's reads: every activation a gateway ran, kept on the bus
//! (JetStream) so that any gateway answers, also after a restart; in memory without
//! JetStream.

use std::{collections::HashSet, time::Duration};

use serde_json::json;

use crate::helpers::*;

/// Upper bound of every wait on a condition.
const WAIT: Duration = Duration::from_secs(20);

async fn get(base: &str, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The ids of a `GET /activations` answer, in order.
fn listed(list: &serde_json::Value) -> Vec<String> {
    list["activations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["activation_id"].as_str().unwrap().to_string())
        .collect()
}

/// `GET path` once it answers 200 (an activation is kept just after its answer).
async fn kept(base: &str, path: &str) -> serde_json::Value {
    eventually(path, WAIT, || async {
        let (status, body) = get(base, path).await;
        (status == 200).then_some(body)
    })
    .await
}

#[tokio::test]
async fn activations_are_kept_on_the_bus_for_any_gateway() {
    let mut nodes = seed_zero_work();
    // One node that fails every time, to see a failed root kept as such.
    nodes.push(handlers::NodeSpec {
        work: handlers::Work::simulated(0, 1.0),
        ..handlers::NodeSpec::new(name("BROKEN"))
    });
    nodes.push(handlers::NodeSpec {
        work: handlers::Work::simulated(500, 0.0),
        ..handlers::NodeSpec::new(name("SLOW"))
    });
    let app = spawn_on(NatsServer::start_jetstream(), nodes, |_| {}).await;

    let (status, reply) = app
        .activate(json!({"activation_id": "insp-1", "input": {"n": 1}, "color": "#ff00ff"}))
        .await;
    assert_eq!(status, 200, "{reply}");
    let record = kept(&app.base, "/activations/insp-1").await;
    assert_eq!(record["activation_id"], "insp-1");
    assert_eq!(record["node"], "UI");
    assert_eq!(
        (record["code"].as_u64(), record["outcome"].as_str()),
        (Some(200), Some("ok"))
    );
    assert!(record["started_at"].as_str().unwrap().contains('T'));
    assert_eq!(
        record["reply"], reply,
        "the tree as POST /activate answered it"
    );
    assert_eq!(
        record["request"],
        json!({"node": "UI", "color": "#ff00ff", "timeout_ms": 5000, "input": {"n": 1}})
    );
    assert_eq!(record["gateway"], app.state.gateway_id());
    // The running events of all eight nodes, in the order received, offsets growing.
    let timeline = record["timeline"].as_array().unwrap();
    let running: HashSet<_> = timeline
        .iter()
        .filter(|m| m["state"] == "running")
        .map(|m| m["node"].as_str().unwrap())
        .collect();
    assert_eq!(running.len(), 8, "{timeline:?}");
    let offsets: Vec<u64> = timeline
        .iter()
        .map(|m| m["offset_us"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(
        record.get("trace_url").is_none(),
        "no tracing UI configured"
    );

    let (status, _) = app
        .activate(json!({"activation_id": "insp-2", "node": "BROKEN"}))
        .await;
    assert!(status >= 500);
    let broken = kept(&app.base, "/activations/insp-2").await;
    assert_eq!(broken["code"].as_u64(), Some(u64::from(status)));
    assert_eq!(broken["outcome"], "failed");

    // Newest first, bounded.
    let (status, list) = get(&app.base, "/activations").await;
    assert_eq!(status, 200);
    assert_eq!(list["durable"], true);
    let ids = listed(&list);
    assert_eq!(ids, ["insp-2", "insp-1"]);
    let (_, one) = get(&app.base, "/activations?limit=1").await;
    assert_eq!(one["activations"].as_array().unwrap().len(), 1);
    assert_eq!(one["activations"][0]["activation_id"], "insp-2");
    for bad in [
        "/activations?limit=0",
        "/activations?limit=501",
        "/activations?limit=x",
    ] {
        assert_eq!(get(&app.base, bad).await.0, 400, "{bad}");
    }
    assert_eq!(get(&app.base, "/activations/no-such-one").await.0, 404);
    assert_eq!(get(&app.base, "/activations/a.b").await.0, 400);
    assert_eq!(get(&app.base, "/activations/a%2A").await.0, 400);
    // The same id again names another activation: refused, the first record intact,
    // also at once after the first answer and while the first still runs.
    let (status, conflict) = app
        .activate(json!({"activation_id": "insp-1", "node": "T"}))
        .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"], "conflict");
    let again = kept(&app.base, "/activations/insp-1").await;
    assert_eq!(again["node"], "UI");
    assert_eq!(again["request"]["input"], json!({"n": 1}));
    let (first, second) = tokio::join!(
        app.activate(json!({"activation_id": "insp-3", "node": "SLOW"})),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            app.activate(json!({"activation_id": "insp-3", "node": "T"}))
                .await
        }
    );
    assert_eq!((first.0, second.0), (200, 409), "{first:?} {second:?}");
    let (status, _) = app
        .activate(json!({"activation_id": "insp-4", "node": "T"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .activate(json!({"activation_id": "insp-4", "node": "T"}))
        .await;
    assert_eq!(
        status, 409,
        "refused before the stream has the first record"
    );
    kept(&app.base, "/activations/insp-4").await;
    let (_, list) = get(&app.base, "/activations").await;
    let ids = listed(&list);
    assert_eq!(ids, ["insp-4", "insp-3", "insp-2", "insp-1"]);

    // Junk on the records' subjects: skipped and counted, never a 503, and the list
    // still shows the real ones.
    let js = async_nats::jetstream::new(app.nats.clone());
    for i in 0..300 {
        js.publish(format!("mesh.activations.junk-{i}"), "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut forged = again.clone();
    forged["request"]["input"] = json!("forged");
    js.publish("mesh.activations.insp-9", forged.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(get(&app.base, "/activations/junk-7").await.0, 404);
    assert_eq!(
        get(&app.base, "/activations/insp-9").await.0,
        404,
        "insp-1's record on insp-9's subject"
    );
    let (status, list) = get(&app.base, "/activations").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&list), ["insp-4", "insp-3", "insp-2", "insp-1"]);
    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesh_gateway_records_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 302, "{refused}");

    // Another gateway, and one started later, answer for them: they are on the bus.
    let other = Gw::start(&app.server.url(), |c| {
        c.trace_url = Some("http://traces.example/trace/{trace_id}".into())
    })
    .await;
    let (status, there) = get(&other.base, "/activations/insp-2").await;
    assert_eq!(status, 200);
    assert_eq!(there["reply"], broken["reply"]);
    // Every activation has a trace (exported or not): the link names it.
    let trace = broken["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert_eq!(
        there["trace_url"],
        format!("http://traces.example/trace/{trace}")
    );
}

/// Records go to the stream in bursts (a few milliseconds later), yet a gateway reads
/// what it kept at once: a read first sends the records still gathering.
#[tokio::test]
async fn a_gateway_reads_its_own_records_at_once() {
    let app = spawn_on(NatsServer::start_jetstream(), seed_zero_work(), |_| {}).await;
    for i in 0..10 {
        let id = format!("own-{i}");
        let (status, reply) = app.activate(json!({"activation_id": id})).await;
        assert_eq!(status, 200, "{reply}");
        // No waiting: the record is read right after the answer.
        let (status, record) = get(&app.base, &format!("/activations/{id}")).await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["reply"], reply);
    }
    let ids: Vec<String> = (0..10).map(|i| format!("own-{i}")).collect();
    let batch = futures::future::join_all(
        ids.iter()
            .map(|id| app.activate(json!({"activation_id": format!("{id}-b")}))),
    )
    .await;
    assert!(batch.iter().all(|(status, _)| *status == 200), "{batch:?}");
    let (status, list) = get(&app.base, "/activations?limit=20").await;
    assert_eq!(status, 200);
    let listed: HashSet<String> = listed(&list).into_iter().collect();
    for id in &ids {
        assert!(listed.contains(id), "{id} not in {listed:?}");
        assert!(
            listed.contains(&format!("{id}-b")),
            "{id}-b not in {listed:?}"
        );
    }
}

#[tokio::test]
async fn without_jetstream_a_gateway_keeps_its_own_newest_in_memory() {
    let app = spawn_app(seed_zero_work(), |_| {}).await;
    assert!(!app.state.kept.durable());
    for i in 0..3 {
        let (status, _) = app
            .activate(json!({"activation_id": format!("mem-{i}")}))
            .await;
        assert_eq!(status, 200);
    }
    let record = kept(&app.base, "/activations/mem-1").await;
    assert_eq!(record["reply"]["children"][0]["node"], "D");
    let list = kept(&app.base, "/activations").await;
    assert_eq!(list["durable"], false);
    let ids = listed(&list);
    assert_eq!(ids, ["mem-2", "mem-1", "mem-0"]);
    // Another gateway never saw them.
    let other = Gw::start(&app.server.url(), |_| {}).await;
    assert_eq!(get(&other.base, "/activations/mem-1").await.0, 404);
}
