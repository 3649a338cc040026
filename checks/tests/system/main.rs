//! System tests that span the repository: the run script end to end, the binaries'
//! renamed environment variables, and the gateway binary under attack. Each runs the
//! workspace's binaries (built by `cargo test --workspace` before any test runs) against
//! a real nats-server of its own.
#![allow(clippy::unwrap_used, missing_docs)]

mod attack;
mod env_names;
mod runner;

use std::path::PathBuf;

/// What the tests share: the waits and processes of `testsupport`, and the binaries.
mod helpers {
    pub use testsupport::{eventually, NatsServer, Proc, Signal};

    /// `url`'s JSON body, when it answers with one.
    pub async fn get_json(http: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
        http.get(url).send().await.ok()?.json().await.ok()
    }

    /// `url`'s body as text (the request must succeed).
    pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
        http.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// The workspace binary `name`, from the target directory this test runs from.
    pub fn binary(name: &str) -> std::path::PathBuf {
        super::target_dir().join(name)
    }
}

/// target/<profile>, from this test's own path (target/<profile>/deps/system-<hash>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for binary in ["gateway", "handlers"] {
        assert!(
            dir.join(binary).exists(),
            "{} is missing: run `cargo build --workspace` (the test command does)",
            dir.join(binary).display()
        );
    }
    dir
}
