//! What the compose tests share: building the images, a compose project that cleans up
//! after itself, activations and event streams over real HTTP.
#![allow(dead_code)]

use std::{
    process::{Command, Output},
    time::Duration,
};

use futures::StreamExt;
use serde_json::Value;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

pub fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One compose project (of compose file `file`) on its own ports; `down -v` when
/// dropped.
pub struct Stack {
    pub file: &'static str,
    pub project: String,
    pub env: Vec<(&'static str, String)>,
    pub base: String,
}

impl Stack {
    pub fn compose(&self, args: &[&str]) -> Output {
        let out = Command::new("docker-compose")
            .current_dir(ROOT)
            .args(["-f", self.file, "-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Ids of everything docker holds for this project.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut found = Vec::new();
        for what in [
            &["ps", "-aq", "--filter"][..],
            &["volume", "ls", "-q", "--filter"],
            &["network", "ls", "-q", "--filter"],
        ] {
            let out = Command::new("docker")
                .args(what)
                .arg(&label)
                .output()
                .unwrap();
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(String::from),
            );
        }
        found
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What every container said, so that a failure can be read from CI's output.
            if let Ok(logs) = Command::new("docker-compose")
                .current_dir(ROOT)
                .args(["-f", self.file, "-p", &self.project])
                .args([
                    "--profile",
                    "metrics",
                    "logs",
                    "--no-color",
                    "--tail",
                    "150",
                ])
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
            {
                eprintln!(
                    "--- logs of {} ---\n{}{}",
                    self.project,
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
        let _ = Command::new("docker-compose")
            .current_dir(ROOT)
            .args(["-f", self.file, "-p", &self.project])
            .args(["--profile", "metrics", "down", "-v", "--remove-orphans"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output();
    }
}

pub async fn activate(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    match http
        .post(format!("{base}/activate"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

pub fn tree(reply: &Value) -> Vec<&Value> {
    let mut out = vec![reply];
    let mut i = 0;
    while i < out.len() {
        if let Some(children) = out[i]["children"].as_array() {
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// An activation answered by the whole seed tree (its leaves fail 25% of the time).
pub fn answered_by_all(status: u16, reply: &Value) -> bool {
    [200, 500, 502].contains(&status) && tree(reply).len() == 8
}

/// Status events of `activation` replayed after `last` (None: live from now), until
/// `count` arrived; returns their ids.
pub async fn statuses(base: &str, activation: &str, last: Option<u64>, count: usize) -> Vec<u64> {
    let mut request = reqwest::Client::new().get(format!("{base}/events?activation={activation}"));
    if let Some(id) = last {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut body = request.send().await.unwrap().bytes_stream();
    let mut text = String::new();
    let mut ids = Vec::new();
    let read = async {
        while ids.len() < count {
            let chunk = body.next().await.unwrap().unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                if frame.contains("event: status") {
                    let id = frame.lines().find_map(|l| l.strip_prefix("id: "));
                    ids.push(id.unwrap().parse().unwrap());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("only {} of {count} events of {activation}", ids.len()));
    ids
}

/// Builds the stack's images with `scripts/images` (no registry needed); `args` asks for
/// more (`prometheus`).
pub fn build_images(args: &[&str]) {
    // The binaries `cargo test` has built (debug), not a second, release build.
    let images = Command::new(format!("{ROOT}/scripts/images"))
        .args(args)
        .env("MESH_IMAGE_PROFILE", "dev")
        .output()
        .unwrap();
    assert!(
        images.status.success(),
        "scripts/images: {}{}",
        String::from_utf8_lossy(&images.stdout),
        String::from_utf8_lossy(&images.stderr)
    );
}

/// The JSON body of `GET url`, or `None` when there is no (JSON) answer yet.
pub async fn get_json(http: &reqwest::Client, url: String) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}
