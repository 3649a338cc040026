//! The live page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by the test command).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;
use testsupport::free_port;

struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver; scripts/test installs it)");
        let mut driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _profile: tempfile::tempdir().unwrap(),
            session: None,
        };
        eventually("chromedriver ready", Duration::from_secs(20), || async {
            let r = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            v["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let profile = driver._profile.path().display().to_string();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,900",
                         format!("--user-data-dir={profile}")]
            }
        }}});
        let v = driver.call("POST", "/session", caps).await;
        driver.session = Some(
            v["sessionId"]
                .as_str()
                .expect("a WebDriver session")
                .to_string(),
        );
        driver
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = match &self.session {
            Some(s) => format!("{}/session/{s}{path}", self.base),
            None => format!("{}{path}", self.base),
        };
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn wait_for(&self, what: &str, script: &str) -> Value {
        eventually(what, Duration::from_secs(20), || async {
            let v = self.script(script).await;
            (!v.is_null() && v != json!(false)).then_some(v)
        })
        .await
    }
}

/// A script true when `node` is in `state` and its shape is filled with `rgb`.
fn fill_is(node: &str, state: &str, rgb: &str) -> String {
    format!(
        "const n = document.querySelector('#diagram g.node[data-node=\"{node}\"]');
         return !!n && n.dataset.state === '{state}'
             && getComputedStyle(n.querySelector('rect, polygon, path')).fill === '{rgb}'"
    )
}

fn chromium_binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn artifacts_dir() -> PathBuf {
    std::env::var_os("ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "external: needs chromium and chromedriver; ./scripts/test installs them and runs this"]
async fn page_renders_the_graph_and_lights_up_an_activation() {
    // The seed topology with short leaf work, so the running state is visible.
    let nodes = handlers::Topology::seed()
        .nodes
        .into_iter()
        .map(|n| handlers::NodeSpec {
            work: match n.work {
                handlers::Work::Simulated { work_ms, .. } => {
                    handlers::Work::simulated(work_ms.min(1) * 700, 0.0)
                }
                other => other,
            },
            ..n
        })
        .chain([handlers::NodeSpec::function(
            name("ECHO"),
            handlers::function(
                |call: handlers::Call| async move { Ok(json!({ "echo": call.input })) },
            ),
        )])
        .collect();
    let app = spawn_app(nodes, |_| {}).await;
    let driver = Driver::start().await;
    driver
        .call("POST", "/url", json!({"url": app.url("/")}))
        .await;

    // The diagram renders with every node.
    driver
        .wait_for(
            "the diagram with 9 nodes",
            "return window.mesh && window.mesh.elements.size === 9",
        )
        .await;
    let labels = driver
        .script("return [...document.querySelectorAll('#diagram g.node')].map(n => n.dataset.node).sort()")
        .await;
    assert_eq!(
        labels,
        json!(["D", "DS", "ECHO", "H", "P", "T", "TM", "UI", "V"])
    );
    driver
        .wait_for(
            "the stream is live",
            "return document.getElementById('conn').dataset.state === 'open'",
        )
        .await;

    // Click the page's own activate control (entry node selected by default).
    let button = driver
        .call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": "#activate-btn"}),
        )
        .await;
    let element = button
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    driver
        .call("POST", &format!("/element/{element}/click"), json!({}))
        .await;

    // A leaf is seen running, in the running colour (once the colour transition ends).
    driver
        .wait_for(
            "TM drawn in the running colour",
            &fill_is("TM", "running", "rgb(255, 230, 0)"),
        )
        .await;

    // Then every node reaches a final colour.
    let finals = driver
        .wait_for(
            "every node final",
            "const s = [...document.querySelectorAll('#diagram g.node')]
                .filter(n => n.dataset.node !== 'ECHO').map(n => n.dataset.state);
             return s.length === 8 && s.every(x => x === 'ok' || x === 'failed') && s",
        )
        .await;
    assert!(
        finals.as_array().unwrap().iter().all(|s| s == "ok"),
        "{finals}"
    );
    driver
        .wait_for(
            "UI drawn in the ok colour",
            &fill_is("UI", "ok", "rgb(57, 255, 20)"),
        )
        .await;
    let seen = driver.script("return window.mesh.seen").await;
    for node in ["UI", "D", "P", "V", "T", "DS", "TM", "H"] {
        let states: Vec<_> = seen
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[0] == node)
            .map(|p| p[1].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["running", "ok"], "{node}");
    }
    let result = driver
        .script("return document.getElementById('activate-result').textContent")
        .await;
    assert!(result.as_str().unwrap().starts_with("200 ok"), "{result}");
    let log_len = driver
        .script("return document.querySelectorAll('#log li:not(.notice)').length")
        .await;
    assert_eq!(log_len, 16);

    // A function node: its input from the page's field, its result shown as text (the
    // markup in it is not interpreted) and logged.
    driver
        .script(
            "document.getElementById('activate-node').value = 'ECHO';
             document.getElementById('activate-input').value = '{\"text\": \"<b>hi</b>\"}';
             document.getElementById('activate-btn').click(); return true",
        )
        .await;
    let shown = driver
        .wait_for(
            "the function's result on the page",
            "const t = document.getElementById('activate-output').textContent;
             return t.includes('result') && t",
        )
        .await;
    assert_eq!(shown, r#"result {"echo":{"text":"<b>hi</b>"}}"#);
    let bold = driver
        .script("return document.querySelectorAll('#activate-output b, #log b').length")
        .await;
    assert_eq!(bold, 0, "results are text, never markup");
    driver
        .wait_for(
            "the result in the log",
            "return [...document.querySelectorAll('#log li.result')].some(l => l.textContent.startsWith('ECHO result'))",
        )
        .await;

    // Keep what it looked like.
    let png = driver.call("GET", "/screenshot", Value::Null).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("live-page.png"), bytes).unwrap();

    let _ = driver
        .http
        .delete(format!(
            "{}/session/{}",
            driver.base,
            driver.session.as_deref().unwrap()
        ))
        .send()
        .await;
}
