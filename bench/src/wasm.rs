//! Deployed WebAssembly functions in the bench: a function hop against a Rust function
//! doing the same work (answering `1`) and against the exec function `echo 1`; the time
//! from a deploy to the first activation it answers; what one activation's fresh
//! instance costs; a runner's memory with 100 functions deployed.

use std::time::{Duration, Instant};

use async_nats::Client;
use mesh_core::call;
use schemas::{ActivationRequest, NodeName, Outcome};
use serde::Serialize;

/// The Rust function's node, served by `bench --rust-function URL`.
pub const RUST_NODE: &str = "FR";
/// The WebAssembly function's node.
pub const WASM_NODE: &str = "FW";

/// A WASI command printing `1`: the same work as `echo 1` and the Rust function.
pub fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "1")
            (func (export "_start")
              (i32.store (i32.const 0) (i32.const 64))
              (i32.store (i32.const 4) (i32.const 1))
              (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap_or_default()
}

/// Serves [`RUST_NODE`], a Rust function answering `1`, until killed.
pub async fn rust_function(url: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let one = handlers::function(|_call: handlers::Call| async { Ok(serde_json::json!(1)) });
    let node = handlers::NodeSpec::function(NodeName::new(RUST_NODE)?, one);
    handlers::run(
        client,
        vec![node],
        handlers::Settings::default(),
        std::future::pending(),
    )
    .await?;
    Ok(())
}

/// Deploys `module` as `name` through the gateway at `base`.
pub async fn deploy(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    module: &[u8],
) -> anyhow::Result<()> {
    let r = http
        .put(format!("{base}/functions/{name}"))
        .header("content-type", "application/wasm")
        .body(module.to_vec())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "deploy {name}: {}", r.status());
    Ok(())
}

/// Deploys `name` and activates it over NATS until it answers ok: milliseconds from
/// the request to the first ok reply.
pub async fn deploy_to_first_ok(
    client: &Client,
    http: &reqwest::Client,
    base: &str,
    name: &str,
) -> anyhow::Result<f64> {
    let node = NodeName::new(name)?;
    let started = Instant::now();
    deploy(http, base, name, &module()).await?;
    loop {
        let r = call::activate(
            client,
            &node,
            &ActivationRequest::default(),
            Duration::from_secs(5),
        )
        .await;
        if r.outcome == Outcome::Ok {
            return Ok(started.elapsed().as_secs_f64() * 1e3);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{name} never answered: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Microseconds per fresh instance run of [`module`] (instantiate, run, read the
/// output), in this process, one at a time: the median of `runs`.
pub async fn instance_us(runs: usize) -> anyhow::Result<f64> {
    let engine = mesh_wasm::Engine::running(16).map_err(anyhow::Error::msg)?;
    let compiled = engine.compile(&module())?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let run = mesh_wasm::Run {
            stdin: b"{}".to_vec(),
            arg0: "B",
            env: Vec::new(),
            deadline: std::time::Instant::now() + Duration::from_secs(5),
            memory_max: 64 << 20,
            max_output: 1 << 20,
        };
        compiled.run(&engine, run).await?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// What the bench measured of WebAssembly functions beyond the table's rows.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Deploy to first ok activation, each try (ms).
    pub deploy_to_first_ok_ms: Vec<f64>,
    /// One fresh instance run (µs, median).
    pub instance_us: f64,
    /// The runner's resident memory before and with `functions` deployed (KiB).
    pub runner_kib_before: u64,
    /// With the functions deployed and each activated once.
    pub runner_kib_with: u64,
    /// How many were deployed.
    pub functions: usize,
}

impl Report {
    /// The report's paragraph.
    pub fn markdown(&self) -> String {
        let per = (self.runner_kib_with.saturating_sub(self.runner_kib_before)) as f64
            / self.functions.max(1) as f64;
        format!(
            "\nWebAssembly functions: deploy (`PUT /functions/{{name}}`) to the first ok activation over NATS: {} ms (target < 1000). One activation's fresh instance (instantiate, run, read stdout) of the module printing `1`, in process: {:.1} µs (median). A runner's resident memory: {:.1} MiB with nothing deployed, {:.1} MiB with {} functions deployed and each activated once ({per:.0} KiB per function).\n",
            self.deploy_to_first_ok_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.instance_us,
            self.runner_kib_before as f64 / 1024.0,
            self.runner_kib_with as f64 / 1024.0,
            self.functions,
        )
    }
}
