//! WebAssembly functions deployed at runtime: real nats-server with JetStream, real
//! runner processes (`handlers --functions`), real HTTP.

use std::{process::Command, time::Duration};

use schemas::ActivationRequest;
use serde_json::{json, Value};

use crate::helpers::*;

/// A module printing `text` after spinning `spin_ms` on WASI's monotonic clock.
fn module(text: &str, spin_ms: u64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{}")
            (func $now (result i64)
              (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 16)))
              (i64.load (i32.const 16)))
            (func (export "_start") (local $end i64)
              (local.set $end (i64.add (call $now) (i64.const {})))
              (loop $spin (br_if $spin (i64.lt_u (call $now) (local.get $end))))
              (i32.store (i32.const 0) (i32.const 64))
              (i32.store (i32.const 4) (i32.const {}))
              (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        text.replace('"', "\\\""),
        spin_ms.saturating_mul(1_000_000),
        text.len()
    ))
    .unwrap()
}

fn echo() -> Vec<u8> {
    wat::parse_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/wasm/echo.wat"
    ))
    .unwrap()
}

/// A JetStream server, a gateway and `runners` runner processes.
struct Platform {
    server: NatsServer,
    gw: Gw,
    runners: Vec<Proc>,
    http: reqwest::Client,
    nats: async_nats::Client,
}

impl Platform {
    async fn start(runners: usize, tweak: impl FnOnce(&mut gateway::Settings)) -> Self {
        let server = NatsServer::start_jetstream();
        let gw = Gw::start(&server.url(), tweak).await;
        let nats = async_nats::connect(server.url()).await.unwrap();
        let mut platform = Self {
            server,
            gw,
            runners: Vec::new(),
            http: reqwest::Client::new(),
            nats,
        };
        for _ in 0..runners {
            platform.add_runner();
        }
        platform
    }

    fn add_runner(&mut self) {
        let runner = Proc::spawn(
            "runner",
            Command::new(handlers_bin())
                .args(["--functions", "--nats-url", &self.server.url()])
                .env("RUST_LOG", "info"),
        );
        self.runners.push(runner);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.base)
    }

    async fn deploy(&self, name: &str, module: &[u8], query: &str) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(&format!("/functions/{name}{query}")))
            .header("content-type", "application/wasm")
            .body(module.to_vec())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn activate(&self, node: &str, input: Value) -> Value {
        let r = self
            .http
            .post(self.url("/activate"))
            .json(&json!({"node": node, "input": input}))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// The first reply of `node` that is not "nobody serves it".
    async fn served(&self, node: &str) -> Value {
        eventually(
            &format!("a runner serves {node}"),
            Duration::from_secs(30),
            || async {
                let reply = self.activate(node, json!({"n": 1})).await;
                (reply["outcome"] != "unavailable").then_some(reply)
            },
        )
        .await
    }

    fn logs(&self) -> String {
        self.runners.iter().map(Proc::output).collect()
    }
}

#[tokio::test]
async fn a_function_deployed_at_runtime_answers_over_http_and_nats_and_is_drawn() {
    let p = Platform::start(1, |_| {}).await;
    // The runner started before anything was deployed.
    let (status, deployed) = p.deploy("ECHO", &echo(), "").await;
    assert_eq!(status, 201, "{deployed}");
    let version = deployed["current"]["version"].as_u64().unwrap();
    assert_eq!(deployed["current"]["settings"]["memory_mib"], 64);
    assert!(deployed["current"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("SHA-256="));

    let reply = p.served("ECHO").await;
    assert_eq!(reply["outcome"], "ok", "{reply}\n{}", p.logs());
    assert_eq!(reply["result"]["input"], json!({"n": 1}), "{reply}");
    assert_eq!(reply["result"]["node"], "ECHO");

    // Over NATS, without the gateway.
    let request = ActivationRequest {
        input: Some(json!("bus")),
        ..Default::default()
    };
    let over_nats =
        mesh_core::call::activate(&p.nats, &name("ECHO"), &request, Duration::from_secs(10)).await;
    assert_eq!(
        over_nats.result.as_ref().unwrap()["input"],
        "bus",
        "{over_nats:?}"
    );

    // A function with a downstream node gathers its child's reply.
    let (status, parent) = p
        .deploy(
            "PARENT",
            &echo(),
            "?downstream=ECHO&description=calls%20ECHO",
        )
        .await;
    assert_eq!(status, 201, "{parent}");
    let reply = p.served("PARENT").await;
    assert_eq!(reply["outcome"], "ok", "{reply}");
    assert_eq!(reply["children"][0]["node"], "ECHO", "{reply}");
    assert_eq!(
        reply["result"]["children"][0]["result"]["input"],
        json!({"n": 1}),
        "{reply}"
    );

    // Discovery draws both, with the edge, without a restart.
    let topology = eventually(
        "the new nodes are drawn",
        Duration::from_secs(30),
        || async {
            let (_, t) = p.get("/topology").await;
            let nodes = t["nodes"].as_array()?;
            let parent = nodes.iter().find(|n| n["name"] == "PARENT")?;
            (parent["downstream"] == json!(["ECHO"])).then_some(t)
        },
    )
    .await;
    let drawn = topology["nodes"].as_array().unwrap();
    let parent = drawn.iter().find(|n| n["name"] == "PARENT").unwrap();
    assert_eq!(parent["function"], "wasm", "{parent}");

    let (status, list) = p.get("/functions").await;
    assert_eq!(status, 200);
    let names: Vec<_> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].clone())
        .collect();
    assert_eq!(names, [json!("ECHO"), json!("PARENT")], "{list}");
    let (_, one) = p.get("/functions/PARENT").await;
    assert_eq!(one["current"]["settings"]["description"], "calls ECHO");
    assert_eq!(one["versions"].as_array().unwrap().len(), 1);
    assert!(version < one["current"]["version"].as_u64().unwrap());

    // Deleted: no runner serves it any longer.
    let r = p
        .http
        .delete(p.url("/functions/PARENT"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    eventually(
        "PARENT is no longer served",
        Duration::from_secs(30),
        || async {
            let reply = p.activate("PARENT", json!(null)).await;
            (reply["outcome"] == "unavailable").then_some(())
        },
    )
    .await;
    assert_eq!(p.get("/functions/PARENT").await.0, 404);
    let r = p
        .http
        .delete(p.url("/functions/PARENT"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn a_new_version_leaves_activations_in_flight_alone_and_an_old_one_comes_back() {
    let p = Platform::start(1, |_| {}).await;
    let (status, v1) = p.deploy("F", &module(r#"{"v":1}"#, 1500), "").await;
    assert_eq!(status, 201, "{v1}");
    let v1 = v1["current"]["version"].as_u64().unwrap();
    assert_eq!(p.served("F").await["result"], json!({"v": 1}));

    // An activation of version 1 is in flight when version 2 is deployed.
    let in_flight = tokio::spawn({
        let (http, url) = (p.http.clone(), p.url("/activate"));
        async move {
            let r = http
                .post(url)
                .json(&json!({"node": "F"}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    });
    eventually(
        "the slow activation is running",
        Duration::from_secs(10),
        || async {
            let (_, t) = p.get("/topology").await;
            let f = t["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["name"] == "F")?
                .clone();
            (f["state"] == "running").then_some(())
        },
    )
    .await;
    let (status, v2) = p.deploy("F", &module(r#"{"v":2}"#, 0), "").await;
    assert_eq!(status, 200, "{v2}");
    let v2 = v2["current"]["version"].as_u64().unwrap();
    assert!(v2 > v1);
    eventually("version 2 answers", Duration::from_secs(30), || async {
        (p.activate("F", json!(null)).await["result"] == json!({"v": 2})).then_some(())
    })
    .await;
    let first = in_flight.await.unwrap();
    assert_eq!(first["outcome"], "ok", "{first}");
    assert_eq!(
        first["result"],
        json!({"v": 1}),
        "it finished on its own version"
    );

    // Roll back to version 1: a new version with version 1's module.
    let r = p
        .http
        .post(p.url("/functions/F/rollback"))
        .json(&json!({"version": v1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rolled: Value = r.json().await.unwrap();
    assert!(rolled["current"]["version"].as_u64().unwrap() > v2);
    assert_eq!(rolled["current"]["module"], rolled["versions"][0]["module"]);
    assert_eq!(rolled["versions"].as_array().unwrap().len(), 3);
    eventually(
        "version 1 answers again",
        Duration::from_secs(30),
        || async {
            (p.activate("F", json!(null)).await["result"] == json!({"v": 1})).then_some(())
        },
    )
    .await;
    let r = p
        .http
        .post(p.url("/functions/F/rollback"))
        .json(&json!({"version": 999_999}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn a_module_past_its_budget_or_memory_fails_its_activation_not_the_runner() {
    let p = Platform::start(1, |_| {}).await;
    let forever = module("{}", u64::MAX / 2_000_000);
    let (status, body) = p.deploy("LOOP", &forever, "?timeout_ms=300").await;
    assert_eq!(status, 201, "{body}");
    let started = std::time::Instant::now();
    let reply = p.served("LOOP").await;
    assert_eq!(reply["outcome"], "timeout", "{reply}");
    assert_eq!(reply["code"], 504);
    assert!(started.elapsed() < Duration::from_secs(20));

    let bomb = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "_start")
               (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
               unreachable))"#,
    )
    .unwrap();
    let (status, body) = p.deploy("BOMB", &bomb, "?memory_mib=8").await;
    assert_eq!(status, 201, "{body}");
    let reply = p.served("BOMB").await;
    assert_eq!(reply["outcome"], "failed", "{reply}");
    assert_eq!(reply["code"], 500);
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("limit of 8 MiB"),
        "{reply}"
    );

    // The runner is unharmed: the next activations are served as before.
    let (status, _) = p.deploy("ECHO", &echo(), "").await;
    assert_eq!(status, 201);
    assert_eq!(p.served("ECHO").await["outcome"], "ok");
    assert_eq!(p.activate("LOOP", json!(null)).await["outcome"], "timeout");
}

#[tokio::test]
async fn bad_modules_are_refused_at_deploy_and_change_nothing() {
    let p = Platform::start(0, |s| {
        s.max_module_bytes = 64 * 1024;
        s.api_token = Some("s3cret".into());
    })
    .await;
    let put = |name: &str, body: Vec<u8>, query: &str, token: Option<&str>| {
        let mut r = p
            .http
            .put(p.url(&format!("/functions/{name}{query}")))
            .header("content-type", "application/wasm")
            .body(body);
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        async move {
            let r = r.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let token = Some("s3cret");
    assert_eq!(put("F", echo(), "", None).await.0, 401);
    let (status, body) = put("F", b"\0asm junk".to_vec(), "", token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_module")),
        "{body}"
    );
    let imports = wat::parse_str(
        r#"(module (import "env" "socket" (func)) (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let (status, body) = put("F", imports, "", token).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("env::socket"),
        "{body}"
    );
    let library = wat::parse_str(r#"(module (func (export "run")))"#).unwrap();
    let (status, body) = put("F", library, "", token).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("_start"),
        "{body}"
    );
    let (status, body) = put("F", echo(), "?memory_mib=1", token).await;
    assert_eq!(status, 400, "echo starts with 17 pages: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("memory limit"),
        "{body}"
    );
    let (status, body) = put("F", vec![0; 100 * 1024], "", token).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(put("F", echo(), "?timeout_ms=0", token).await.0, 400);
    assert_eq!(put("F", echo(), "?downstream=a.b", token).await.0, 400);
    assert_eq!(put("a.b", echo(), "", token).await.0, 400);
    assert_eq!(put("F%3E", echo(), "", token).await.0, 400);
    let wrong_type = p
        .http
        .put(p.url("/functions/F"))
        .bearer_auth("s3cret")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(
        wrong_type.status().is_client_error(),
        "{}",
        wrong_type.status()
    );
    // A name something else serves: a function would share its requests.
    let client = async_nats::connect(p.server.url()).await.unwrap();
    let _taken = handlers::runtime::Running::start(
        client,
        vec![spec("TAKEN", &[], 0)],
        handlers::Settings::default(),
    )
    .await
    .unwrap();
    eventually("TAKEN is discovered", Duration::from_secs(30), || async {
        let (_, t) = p.get("/topology").await;
        t["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["name"] == "TAKEN")
            .then_some(())
    })
    .await;
    let (status, body) = put("TAKEN", echo(), "", token).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("simulated"),
        "{body}"
    );
    // Nothing was stored.
    let (status, list) = p.get("/functions").await;
    assert_eq!((status, list), (200, json!({"functions": []})));
    assert_eq!(p.get("/functions/F").await.0, 404);
    // The same module, accepted.
    let (status, body) = put("F", echo(), "", token).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn runners_share_activations_and_functions_outlive_restarts() {
    let mut p = Platform::start(2, |_| {}).await;
    let (status, _) = p.deploy("ECHO", &echo(), "").await;
    assert_eq!(status, 201);
    p.served("ECHO").await;
    // Both runners registered it.
    let request = ActivationRequest::default();
    let instances = eventually("both runners answer", Duration::from_secs(30), || async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            let reply = mesh_core::call::activate(
                &p.nats,
                &name("ECHO"),
                &request,
                Duration::from_secs(10),
            )
            .await;
            seen.extend(reply.instance);
        }
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert_eq!(instances.len(), 2);

    // Every runner and the gateway stop; new ones find the function on the bus.
    for runner in &mut p.runners {
        runner.kill();
    }
    p.runners.clear();
    let url = p.server.url();
    p.gw = Gw::start(&url, |_| {}).await;
    let (status, list) = p.get("/functions").await;
    assert_eq!(status, 200);
    assert_eq!(list["functions"][0]["name"], "ECHO", "{list}");
    p.add_runner();
    let reply = p.served("ECHO").await;
    assert_eq!(reply["outcome"], "ok", "{reply}\n{}", p.logs());
}

#[tokio::test]
#[ignore = "external: needs wat2wasm, clang, lld and wasi-libc (Debian); ./scripts/test installs them and runs this"]
async fn the_examples_build_offline_and_deploy_with_one_command() {
    let p = Platform::start(1, |_| {}).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/wasm/deploy");
    let base = p.gw.base.clone();
    let out = tokio::task::spawn_blocking(move || Command::new(script).arg(base).output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(reply["outcome"], "ok", "{reply}\n{}", p.logs());
    assert_eq!(
        reply["result"],
        json!({"words": 6, "chars": 22, "counted_by": "WORDCOUNT"})
    );
    assert_eq!(reply["children"][0]["node"], "ECHO", "{reply}");
    assert_eq!(
        reply["children"][0]["result"]["input"]["text"],
        "the cat sat on the mat"
    );
}

#[tokio::test]
async fn a_function_deployed_with_the_bus_alone_is_served() {
    // What `nats obj put` and `nats kv put` do, from an independent client.
    let p = Platform::start(1, |_| {}).await;
    let js = async_nats::jetstream::new(p.nats.clone());
    let (modules, records) = eventually(
        "a runner made the buckets",
        Duration::from_secs(30),
        || async {
            let modules = js.get_object_store("MESH_FUNCTION_MODULES").await.ok()?;
            let records = js.get_key_value("MESH_FUNCTIONS").await.ok()?;
            Some((modules, records))
        },
    )
    .await;
    modules
        .put("by-hand/echo.wasm", &mut &echo()[..])
        .await
        .unwrap();
    records
        .put(
            "BYHAND",
            r#"{"module":"by-hand/echo.wasm","settings":{"timeout_ms":2000}}"#.into(),
        )
        .await
        .unwrap();
    let reply = p.served("BYHAND").await;
    assert_eq!(reply["outcome"], "ok", "{reply}\n{}", p.logs());
    let (_, listed) = p.get("/functions/BYHAND").await;
    assert_eq!(
        listed["current"]["settings"]["timeout_ms"], 2000,
        "{listed}"
    );
    // A record naming no module is refused by the runner, which keeps what it served.
    records
        .put("BYHAND", r#"{"module":"missing.wasm"}"#.into())
        .await
        .unwrap();
    eventually(
        "the runner refused the version",
        Duration::from_secs(30),
        || async { p.logs().contains("version not served").then_some(()) },
    )
    .await;
    assert_eq!(p.activate("BYHAND", json!(null)).await["outcome"], "ok");
}
