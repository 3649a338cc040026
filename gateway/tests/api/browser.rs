//! The live page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by the test command).

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::*;
use testsupport::free_port;

/// chromedriver and the Chromium it starts, in one process group killed on drop (also
/// when the test fails), with a fresh profile.
struct Driver {
    _chromedriver: Proc,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
    session: Option<String>,
}

impl Driver {
    async fn start() -> Self {
        let port = free_port();
        let chromedriver = Proc::spawn(
            "chromedriver (Debian package chromium-driver; scripts/test installs it)",
            Command::new("chromedriver").arg(format!("--port={port}")),
        );
        let mut driver = Self {
            _chromedriver: chromedriver,
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

    /// A browser showing `url`.
    async fn open(url: &str) -> Self {
        let driver = Self::start().await;
        driver.call("POST", "/url", json!({ "url": url })).await;
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

    /// Clicks the element matching a CSS selector.
    async fn click(&self, selector: &str) {
        let found = self
            .call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        let element = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("a WebDriver element reference")
            .to_string();
        self.call("POST", &format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// The text of the element with this id.
    async fn text(&self, id: &str) -> String {
        let v = self
            .script(&format!(
                "return document.getElementById('{id}').textContent"
            ))
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    async fn wait_for(&self, what: &str, script: &str) -> Value {
        eventually(what, Duration::from_secs(30), || async {
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
    // GATE holds each activation until the test releases it: its running state lasts
    // exactly as long as the test needs, however slow the machine.
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let nodes = handlers::Topology::seed()
        .nodes
        .into_iter()
        .map(|n| handlers::NodeSpec {
            work: match n.work {
                handlers::Work::Simulated { work_ms, .. } => {
                    handlers::Work::simulated(work_ms.min(1) * 50, 0.0)
                }
                other => other,
            },
            ..n
        })
        .chain([
            handlers::NodeSpec::function(
                name("ECHO"),
                handlers::function(|call: handlers::Call| async move {
                    Ok(json!({ "echo": call.input }))
                }),
            ),
            handlers::NodeSpec::function(
                name("GATE"),
                handlers::function(move |_call: handlers::Call| {
                    let gate = held.clone();
                    async move {
                        gate.acquire().await.unwrap().forget();
                        Ok(json!("released"))
                    }
                }),
            ),
        ])
        .collect();
    let app = spawn_app(nodes, |_| {}).await;

    // A colour set before the page opens: the page shows it from the gateway's last
    // known states.
    let r = app
        .http
        .put(app.url("/nodes/ECHO/color"))
        .json(&json!({"color": "#123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(
        "the gateway knows ECHO's colour",
        Duration::from_secs(20),
        || async {
            let t: Value = app
                .http
                .get(app.url("/topology"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            t["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["name"] == "ECHO" && n["state"] == "manual")
                .then_some(())
        },
    )
    .await;

    let driver = Driver::open(&app.url("/")).await;

    // The diagram renders with every node.
    driver
        .wait_for(
            "the diagram with 10 nodes",
            "return window.mesh && window.mesh.elements.size === 10",
        )
        .await;
    let labels = driver
        .script("return [...document.querySelectorAll('#diagram g.node')].map(n => n.dataset.node).sort()")
        .await;
    assert_eq!(
        labels,
        json!(["D", "DS", "ECHO", "GATE", "H", "P", "T", "TM", "UI", "V"])
    );
    driver
        .wait_for(
            "ECHO in its manual colour on load",
            &fill_is("ECHO", "manual", "rgb(18, 52, 86)"),
        )
        .await;
    driver
        .wait_for(
            "the stream is live",
            "return document.getElementById('conn').dataset.state === 'open'",
        )
        .await;

    // Click the page's own activate control (entry node selected by default).
    driver.click("#activate-btn").await;

    // Every node of the seed reaches a final colour.
    let finals = driver
        .wait_for(
            "every node final",
            "const s = [...document.querySelectorAll('#diagram g.node')]
                .filter(n => !['ECHO', 'GATE'].includes(n.dataset.node)).map(n => n.dataset.state);
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
    // Sixteen lines, each with the activation's whole id.
    let lines = driver
        .script(
            "return [...document.querySelectorAll('#log li:not(.notice)')]
                .map(li => [li.dataset.activation, li.textContent])",
        )
        .await;
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 16);
    let id = lines[0][0].as_str().unwrap().to_string();
    assert_eq!(id.len(), 22, "a NUID");
    for line in lines {
        assert_eq!(line[0], id.as_str());
        assert!(line[1].as_str().unwrap().contains(&id), "{line}");
    }

    // The seed returns to idle after the hold time; the manual colour stays.
    driver
        .wait_for(
            "UI back to idle",
            "return document.querySelector('#diagram g.node[data-node=\"UI\"]').dataset.state === 'idle'",
        )
        .await;
    driver
        .wait_for(
            "ECHO still in its manual colour",
            &fill_is("ECHO", "manual", "rgb(18, 52, 86)"),
        )
        .await;

    // The counter counts activations seen, whoever started them.
    assert_eq!(driver.text("count-activations").await, "1");
    let (code, _) = app.activate(json!({"node": "T"})).await;
    assert_eq!(code, 200);
    driver
        .wait_for(
            "an activation from elsewhere counted",
            "return document.getElementById('count-activations').textContent === '2'",
        )
        .await;

    // Two activations of GATE at once, one from the page and one from elsewhere: the node
    // is drawn in the running colour while both wait, outlined in the newest one's colour.
    driver
        .script(
            "document.getElementById('activate-node').value = 'GATE';
             document.getElementById('activate-btn').click(); return true",
        )
        .await;
    driver
        .wait_for(
            "GATE drawn in the running colour",
            &fill_is("GATE", "running", "rgb(255, 230, 0)"),
        )
        .await;
    let other = tokio::spawn({
        let http = app.http.clone();
        let url = app.url("/activate");
        async move {
            let r = http
                .post(url)
                .json(&json!({"node": "GATE"}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    });
    let running = driver
        .wait_for(
            "two GATE activations running",
            "const ids = [...document.querySelectorAll('#log li.running')]
                .map(li => li.dataset.activation);
             const gate = [...window.mesh.activations].filter(([, n]) => n.get('GATE'));
             return gate.length === 2 && ids.length >= 2 && gate.map(([id]) => id)",
        )
        .await;
    let (first, second) = (running[0].as_str().unwrap(), running[1].as_str().unwrap());
    assert_ne!(first, second);
    let outlines = driver
        .script(&format!(
            "const color = (id) => getComputedStyle(document.querySelector(
                 `#log li[data-activation=\"${{id}}\"] .activation`)).color;
             const gate = document.querySelector('#diagram g.node[data-node=\"GATE\"]');
             return [color('{first}'), color('{second}'), gate.dataset.activation]"
        ))
        .await;
    assert_ne!(
        outlines[0], outlines[1],
        "each activation has its own colour"
    );
    assert_eq!(outlines[2], second, "the node shows the newest activation");

    // Filter on the first: the log shows only its lines, the diagram only its states.
    driver
        .script(&format!(
            "document.querySelector('#log li[data-activation=\"{first}\"] .activation').click();
             return true"
        ))
        .await;
    let visible = driver
        .script(
            "return [...document.querySelectorAll('#log li')].filter(li => !li.hidden)
                .map(li => li.dataset.activation)",
        )
        .await;
    assert!(!visible.as_array().unwrap().is_empty());
    assert!(
        visible.as_array().unwrap().iter().all(|a| a == first),
        "{visible}"
    );
    let shown = driver
        .script(
            "const n = (x) => document.querySelector(`#diagram g.node[data-node=\"${x}\"]`);
             return [n('GATE').dataset.state, n('GATE').dataset.activation, n('UI').dataset.state]",
        )
        .await;
    assert_eq!(shown, json!(["running", first, "idle"]));

    // Released, both end ok; the filtered view follows its own activation only.
    gate.add_permits(2);
    let reply = other.await.unwrap();
    assert_eq!(reply["code"], 200, "{reply}");
    driver
        .wait_for(
            "the first GATE activation ends ok in the filtered view",
            &fill_is("GATE", "ok", "rgb(57, 255, 20)"),
        )
        .await;
    driver.click("#filter-clear").await;
    let hidden = driver
        .script("return document.querySelectorAll('#log li[hidden]').length")
        .await;
    assert_eq!(hidden, 0);

    // The settings form: T fails every activation from now on, on every replica.
    driver
        .script(
            "document.getElementById('config-node').value = 'T';
             document.getElementById('config-rate').value = '1';
             document.getElementById('config-btn').click(); return true",
        )
        .await;
    driver
        .wait_for(
            "the settings applied",
            "return document.getElementById('config-result').textContent.startsWith('200')",
        )
        .await;
    driver
        .script(
            "document.getElementById('activate-node').value = 'T';
             document.getElementById('activate-input').value = '';
             document.getElementById('activate-result').textContent = '';
             return true",
        )
        .await;
    // The replicas take the change asynchronously: activate until the answer is a
    // failure (each click waits for the previous answer).
    let failed = driver
        .wait_for(
            "T's activations fail",
            "const t = document.getElementById('activate-result').textContent;
             if (t.startsWith('500') || t.startsWith('502')) return t;
             if (t !== '…') document.getElementById('activate-btn').click();
             return false",
        )
        .await;
    assert!(failed.as_str().unwrap().contains("failed"), "{failed}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "external: needs chromium and chromedriver; ./scripts/test installs them and runs this"]
async fn page_lists_a_graph_too_big_to_draw_and_takes_a_token() {
    // 450 edges: more than Mermaid draws (a rogue service could announce as many).
    let leaves: Vec<String> = (0..450).map(|i| format!("L{i}")).collect();
    let leaves: Vec<&str> = leaves.iter().map(String::as_str).collect();
    let app = spawn_app(vec![spec("BIG", &leaves, 0)], |c| {
        c.api_token = Some("s3cret".into());
    })
    .await;
    let driver = Driver::open(&app.url("/")).await;
    let note = driver
        .wait_for(
            "the nodes listed instead of drawn",
            "const items = document.querySelectorAll('#diagram .node-list li');
             return items.length === 451 && document.querySelector('#diagram .hint').textContent",
        )
        .await;
    assert!(note.as_str().unwrap().contains("listed instead"), "{note}");

    // A change without the token: 401, and the page offers the token field.
    driver
        .script(
            "document.getElementById('color-node').value = 'BIG';
             document.getElementById('color-btn').click(); return true",
        )
        .await;
    driver
        .wait_for(
            "the token field offered after a 401",
            "return document.getElementById('color-result').textContent.startsWith('401')
                && !document.getElementById('token-form').hidden",
        )
        .await;
    driver
        .script(
            "document.getElementById('token').value = 's3cret';
             document.getElementById('token-btn').click();
             document.getElementById('color-btn').click(); return true",
        )
        .await;
    driver
        .wait_for(
            "the change accepted with the token",
            "return document.getElementById('color-result').textContent.startsWith('202')",
        )
        .await;
    // The listed node takes its state like a drawn one.
    driver
        .wait_for(
            "BIG shown manual in the list",
            "const li = document.querySelector('#diagram .node-list li[data-node=\"BIG\"]');
             return !!li && li.dataset.state === 'manual'",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "external: needs chromium and chromedriver; ./scripts/test installs them and runs this"]
async fn page_asks_for_the_read_token_when_reads_are_private() {
    let app = spawn_app(vec![spec("A", &[], 0)], |c| {
        c.read_token = Some("r3ad".into());
    })
    .await;
    let driver = Driver::open(&app.url("/")).await;
    driver
        .wait_for(
            "the token field offered for private reads",
            "return !document.getElementById('token-form').hidden
                && document.getElementById('token-why').textContent.includes('private')
                && document.querySelectorAll('#diagram g.node').length === 0",
        )
        .await;
    driver
        .script(
            "document.getElementById('token').value = 'r3ad';
             document.getElementById('token-btn').click(); return true",
        )
        .await;
    // The session cookie opens the stream (EventSource) and the graph.
    driver
        .wait_for(
            "the page live with the session",
            "return document.getElementById('conn').dataset.state === 'open'
                && !!document.querySelector('#diagram [data-node=\"A\"]')",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "external: needs chromium and chromedriver; ./scripts/test installs them and runs this"]
async fn page_inspects_an_activation_and_repeats_it() {
    // TM works 300 ms, everyone else nothing: the critical path is UI D P V TM.
    let nodes = seed_zero_work()
        .into_iter()
        .map(|n| match n.name.as_str() {
            "TM" => handlers::NodeSpec {
                work: handlers::Work::simulated(300, 0.0),
                ..n
            },
            _ => n,
        })
        .collect();
    let app = spawn_on(NatsServer::start_jetstream(), nodes, |s| {
        s.asynchronous = Some(gateway::settings::AsyncSettings {
            max_attempts: 2,
            backoff: Duration::from_millis(50),
            ..Default::default()
        });
    })
    .await;
    let driver = Driver::open(&app.url("/")).await;
    driver
        .wait_for(
            "the graph drawn",
            "return document.querySelectorAll('#diagram g.node').length === 8",
        )
        .await;
    driver.click("#activate-btn").await;
    let id = driver
        .wait_for(
            "the activation in the log",
            "const b = document.querySelector('#log li[data-activation] .inspect');
             return !!b && b.parentElement.dataset.activation",
        )
        .await;
    let id = id.as_str().unwrap().to_string();
    driver.click("#log li[data-activation] .inspect").await;
    let critical = driver
        .wait_for(
            "the waterfall drawn",
            "const tracks = document.querySelectorAll('#waterfall .track');
             return tracks.length === 8 && !document.getElementById('inspector').hidden
                 && [...document.querySelectorAll('#waterfall .track.critical')].map(t => t.dataset.node)",
        )
        .await;
    assert_eq!(critical, json!(["UI", "D", "P", "V", "TM"]));
    assert_eq!(driver.text("inspector-id").await, id);
    assert!(driver.text("inspector-json").await.contains(&id));
    // TM's bar is the long one, and starts after the root's.
    let widths = driver
        .script(
            "const w = n => parseFloat(document.querySelector(`#waterfall .track[data-node=\"${n}\"] .bar`).style.width);
             return [w('TM'), w('T'), w('UI')]",
        )
        .await;
    let w: Vec<f64> = serde_json::from_value(widths).unwrap();
    assert!(w[0] > 50.0 && w[1] < w[0] && w[2] >= w[0], "{w:?}");
    assert!(driver.text("inspector-summary").await.contains("200 ok"));

    // Repeat: the same request again, a new activation, inspected in turn.
    driver.click("#inspector-repeat").await;
    let again = driver
        .wait_for(
            "the repeated activation inspected",
            &format!(
                "const id = document.getElementById('inspector-id').textContent;
                 return id !== '{id}' && document.querySelectorAll('#waterfall .track').length === 8 && id"
            ),
        )
        .await;
    let again = again.as_str().unwrap().to_string();
    // Both in the recent list, newest first.
    driver.click("#recent-load").await;
    let listed = driver
        .wait_for(
            "both in the recent list",
            "const ids = [...document.querySelectorAll('#recent button')].map(b => b.dataset.activation);
             return ids.length >= 2 && ids",
        )
        .await;
    assert_eq!(listed[0], again.as_str());
    assert_eq!(listed[1], id.as_str());

    // A dead asynchronous activation: listed, its attempts shown, re-run from the page.
    let queued = app
        .http
        .post(app.url("/activate"))
        .header("prefer", "respond-async")
        .json(&json!({"node": "GONE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status().as_u16(), 202);
    let dead_id = queued.json::<Value>().await.unwrap()["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(
        "the activation is dead",
        Duration::from_secs(30),
        || async {
            let (_, listed) = app.get_json("/activations?state=dead").await;
            (listed["activations"][0]["activation_id"] == dead_id.as_str()).then_some(())
        },
    )
    .await;
    driver.click("#recent-dead").await;
    driver
        .wait_for(
            "the dead one listed",
            &format!(
                "return !!document.querySelector('#recent button[data-activation=\"{dead_id}\"]')"
            ),
        )
        .await;
    driver
        .click(&format!("#recent button[data-activation=\"{dead_id}\"]"))
        .await;
    driver
        .wait_for(
            "its two attempts and the re-run button",
            "return document.querySelectorAll('#inspector-attempts li').length === 2
                 && !document.getElementById('inspector-rerun').hidden",
        )
        .await;
    driver.click("#inspector-rerun").await;
    driver
        .wait_for(
            "the re-run's attempts",
            "return document.querySelectorAll('#inspector-attempts li').length === 4",
        )
        .await;

    // A trigger set now is listed.
    let set = app
        .http
        .put(app.url("/triggers/ORDERS"))
        .json(&json!({"node": "UI", "subject": "orders.created"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    driver
        .wait_for(
            "the trigger listed",
            "const li = document.querySelector('#triggers li[data-trigger=\"ORDERS\"]');
             return !!li && li.textContent.includes('orders.created')",
        )
        .await;

    // A function deployed now is listed with its version.
    let module =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .unwrap();
    let deployed: Value = app
        .http
        .put(app.url("/functions/NOOP?description=does%20nothing"))
        .header("content-type", "application/wasm")
        .body(module)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = deployed["current"]["version"].as_u64().unwrap();
    driver.click("#functions-load").await;
    let shown = driver
        .wait_for(
            "the function listed",
            "const li = document.querySelector('#functions li[data-function=\"NOOP\"]');
             return !!li && [li.dataset.version, li.textContent]",
        )
        .await;
    assert_eq!(shown[0], version.to_string());
    assert!(
        shown[1].as_str().unwrap().contains("does nothing"),
        "{shown}"
    );

    let png = driver.call("GET", "/screenshot", Value::Null).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inspector.png"), bytes).unwrap();
}
