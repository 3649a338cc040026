//! Checks of the repository itself, in `tests/`: `compose.yaml`, the Dockerfile, the
//! Kubernetes manifests and `docs/configuration.md` against what the `handlers` and
//! `gateway` binaries accept, the compose stacks run for real, and system tests that span
//! the repository (the run script, renamed variables, the gateway binary under attack).
//! This library holds what those checks share: reading the binaries' `--help` and YAML.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// The repository's root.
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Variables read by libraries rather than by our command lines.
pub const LIBRARY_ENV: &[&str] = &["RUST_LOG"];

/// Whether clap's help lists `key` (`[env: KEY=value]`, or `[env: KEY]` when hidden).
pub fn documents_env(help: &str, key: &str) -> bool {
    help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]"))
}

/// Every environment variable a binary's `--help` lists.
pub fn env_vars_of(help: &str) -> Vec<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_string())
        .collect()
}

/// `--help` of a workspace binary, from the target directory this test runs from
/// (`cargo test --workspace` builds the binaries before any test runs).
pub fn help_of(binary: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/repo-<hash> -> target/<profile>/<binary>
    let path = exe.parent().unwrap().parent().unwrap().join(binary);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (the test command does)",
        path.display()
    );
    let out = Command::new(path).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Every document of a YAML stream (`---`-separated), as JSON (read by Python's yaml,
/// which the test command installs).
pub fn yaml_documents(yaml: &[u8]) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(yaml)?;
            child.wait_with_output()
        })
        .expect("python3 with yaml runs (scripts/setup test installs it)");
    assert!(out.status.success(), "YAML that Python cannot read");
    serde_json::from_slice(&out.stdout).unwrap()
}
