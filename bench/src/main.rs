//! `bench`: how close nats-mesh comes to the bus's own limit, measured side by side.
//!
//! Starts its own nats-server (with JetStream), a trivial responder (the raw NATS baseline), a one-node
//! `handlers` process, the seed topology with zero work and no failures, and a gateway;
//! then measures request-reply latency and throughput of each, SSE fan-out to many
//! clients, and resident memory. Prints a Markdown table and writes it, with a JSON
//! file, to `artifacts/bench.md` and `artifacts/bench.json`.
//!
//! Run with `scripts/bench` (builds the release binaries first). `BENCH_SSE_CLIENTS`
//! (default `1000,10000`) sets the fan-out sizes; `BENCH_QUICK=1` measures the NATS
//! scenarios only; `BENCH_SSE_ONLY=1` the SSE fan-outs only; `BENCH_WASM_ONLY=1` one hop
//! and the function rows (WebAssembly beside Rust and exec); `BENCH_ASYNC_ONLY=1` one hop
//! and asynchronous activations; `BENCH_ACTIVATE_ONLY=1` seed activations through
//! `POST /activate` against the same over NATS, with each process's CPU per activation.
//! `BENCH_SSE_SINGLES` (default
//! `1000,10000`) sets the sizes of the fan-outs of single events at 10 per second.
//!
//! `bench --drive NATS_URL NODE CONCURRENCY COUNT` runs COUNT activations of NODE and
//! prints how many per second: a load for side-by-side comparisons of builds outside
//! the bench (each activation must succeed); `bench --drive-http BASE_URL CONCURRENCY
//! COUNT` the same through `POST /activate` of the gateway at BASE_URL, and `bench
//! --drive-get BASE_URL PATH CONCURRENCY COUNT` GETs of PATH (the cost of HTTP alone).
//! `bench --activate-floor NATS_URL PORT NODE` serves the activation path's floor (see
//! `activate_floor`), `bench --sse-floor NATS_URL PORT` the fan-out's (see `floor`).

mod activate_floor;
mod asynchronous;
mod floor;
mod gateway_path;
mod http_load;
mod instructions;
mod procs;
mod sse;
mod stats;
mod wasm;

use std::{
    sync::{atomic::AtomicUsize, Arc},
    time::Duration,
};

use async_nats::Client;
use futures::StreamExt;
use mesh_core::call;
use procs::Proc;
use schemas::{ActivationRequest, NodeName, Outcome};
use stats::{measure, Row, Sample};
use testsupport::{eventually, free_port, NatsServer};

const REQUESTS: usize = 5_000;
/// Activations per function scenario: each starts a process.
const FUNCTION_REQUESTS: usize = 400;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `bench --echo-responder URL`: the raw baseline's responder, in a process of its
    // own like every process under test.
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, flag, url] if flag == "--echo-responder" => {
            return echo_responder(async_nats::connect(url).await?).await;
        }
        // `bench --sse-floor URL PORT`: the floor of SSE fan-out (see `floor`).
        [_, flag, url, port] if flag == "--sse-floor" => {
            return floor::serve(url, port.parse()?).await;
        }
        // `bench --activate-floor URL PORT NODE`: the floor of the activation path (see
        // `activate_floor`).
        [_, flag, url, port, node] if flag == "--activate-floor" => {
            return activate_floor::serve(url, port.parse()?, node).await;
        }
        // `bench --rust-function URL`: the Rust function the WebAssembly one is compared with.
        [_, flag, url] if flag == "--rust-function" => {
            return wasm::rust_function(url).await;
        }
        [_, flag, url, node, c, n] if flag == "--drive" => {
            let client = async_nats::connect(url).await?;
            let s = nats_scenario(&client, node, c.parse()?, Sends::Activation, n.parse()?).await;
            println!("{}", s.rate());
            return Ok(());
        }
        [_, flag, base, c, n] if flag == "--drive-http" => {
            let s = http_scenario_of(base, c.parse()?, n.parse()?).await;
            println!("{}", s.rate());
            return Ok(());
        }
        // `bench --drive-get BASE_URL PATH CONCURRENCY COUNT`: GETs of PATH, each answered
        // 200: the cost of HTTP alone, beside `--drive-http`.
        [_, flag, base, path, c, n] if flag == "--drive-get" => {
            let path: &'static str = Box::leak(path.clone().into_boxed_str());
            let s = get_scenario(base, path, c.parse()?, n.parse()?).await;
            println!("{}", s.rate());
            return Ok(());
        }
        _ => {}
    }
    // With JetStream, as `scripts/run` and compose run it: the gateway relays from the
    // status stream.
    let server = NatsServer::start_jetstream();
    let url = server.url();
    let client = async_nats::connect(&url).await?;
    let _responder = Proc::start("bench", &["--echo-responder", &url], &[])?;
    eventually(
        "the raw responder answers",
        Duration::from_secs(30),
        || async {
            client
                .request("bench.echo", "{}".into())
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;

    // The processes under test.
    let dir = std::env::temp_dir().join(format!("nats-mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let topology = dir.join("seed-zero-work.toml");
    std::fs::write(&topology, zero_work_topology()?)?;
    let nats_env = vec![("NATS_URL", url.clone())];
    let hop = Proc::start("handlers", &["-n", "E"], &nats_env)?;
    // The same (no) work as E, done by a function: a program started per activation.
    let exec_echo = Proc::start("handlers", &["-n", "FX", "--exec", "echo 1"], &nats_env)?;
    let exec_python = Proc::start(
        "handlers",
        &["-n", "FP", "--exec", "python3 -c 'print(1)'"],
        &nats_env,
    )?;
    let seed = Proc::start(
        "handlers",
        &[
            "--topology",
            &topology.display().to_string(),
            "--fail-rate",
            "0",
        ],
        &nats_env,
    )?;
    let http_port = free_port();
    let mut gateway_env = nats_env.clone();
    gateway_env.push(("MESH_GATEWAY_LISTEN", format!("127.0.0.1:{http_port}")));
    gateway_env.push(("MESH_SSE_MAX_CLIENTS", "30000".into()));
    let gateway = Proc::start("gateway", &[], &gateway_env)?;
    let base_url = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    wait_ready(&client, &http, &base_url).await;
    for node in ["FX", "FP"] {
        wait_for_node(&client, node).await;
    }
    let idle_node_kib = hop.rss_kib();
    let idle_gateway_kib = gateway.rss_kib();

    let mut rows = Vec::new();
    // BENCH_QUICK=1: NATS scenarios only (no functions, HTTP or SSE), for a quick look.
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    // BENCH_SSE_ONLY=1: the SSE fan-outs only, for work on the relay.
    let nats = std::env::var_os("BENCH_SSE_ONLY").is_none();
    // BENCH_WASM_ONLY=1: one hop and the function rows only (WebAssembly, Rust, exec).
    let wasm_only = std::env::var_os("BENCH_WASM_ONLY").is_some();
    // BENCH_ASYNC_ONLY=1: one hop and the asynchronous activations only.
    let async_only = std::env::var_os("BENCH_ASYNC_ONLY").is_some();
    // BENCH_ACTIVATE_ONLY=1: the gateway's activation path against the bus only.
    let activate_only = std::env::var_os("BENCH_ACTIVATE_ONLY").is_some();
    let (quick, wasm_only, async_only) = if activate_only {
        (true, false, false)
    } else {
        (quick, wasm_only, async_only)
    };
    // Each compared scenario runs ROUNDS times, each round right after a raw round trip
    // at the same concurrency: a ratio compares two measurements taken side by side.
    let raw = |c: usize| nats_scenario(&client, "bench.echo", c, Sends::Echo, REQUESTS);
    let mut raw_c1 = Vec::new();
    for c in [1, 16, 64].into_iter().filter(|_| nats && !activate_only) {
        let mut r = Compared::new("one hop (node E, zero work)", c);
        for _ in 0..ROUNDS {
            let base = raw(c).await;
            if c == 1 {
                raw_c1.push(base.ms(0.5));
            }
            r.add(
                &base,
                &nats_scenario(&client, "E", c, Sends::Activation, REQUESTS).await,
            );
        }
        rows.push(r.row(RawShare::RoundTrips(1)));
    }
    let hop_c1 = rows.first().map_or(f64::NAN, |r| r.p50_ms);
    let hop_c16 = rows.get(1).map_or(f64::NAN, |r| r.p50_ms);
    let functions: &[(&str, &str)] = if quick || !nats || async_only {
        &[]
    } else {
        &[
            ("FX", "exec function `echo 1` (node FX)"),
            ("FP", "exec function `python3 -c 'print(1)'` (node FP)"),
        ][..if wasm_only { 1 } else { 2 }]
    };
    for &(node, what) in functions {
        for (c, simulated) in [(1, hop_c1), (16, hop_c16)] {
            let s = nats_scenario(&client, node, c, Sends::Activation, FUNCTION_REQUESTS).await;
            let note = format!(
                "{:.1}x node E (same work, simulated); +{:.2} ms per activation",
                s.ms(0.5) / simulated,
                s.ms(0.5) - simulated
            );
            rows.push(s.row(what, c, note));
        }
    }
    // A WebAssembly function hop against a Rust function doing the same work and against
    // the exec function `echo 1`, side by side at each concurrency.
    let wasm_report = if quick || !nats || async_only {
        None
    } else {
        let rust_fn = Proc::start("bench", &["--rust-function", &url], &[])?;
        let runner = Proc::start("handlers", &["--functions"], &nats_env)?;
        wait_for_node(&client, wasm::RUST_NODE).await;
        let runner_kib_before = runner.rss_kib();
        let mut deploy_ms = Vec::new();
        for i in 0..3 {
            let name = if i == 0 {
                wasm::WASM_NODE.to_string()
            } else {
                format!("FW{i}")
            };
            deploy_ms.push(wasm::deploy_to_first_ok(&client, &http, &base_url, &name).await?);
        }
        for c in [1, 16] {
            let rust =
                nats_scenario(&client, wasm::RUST_NODE, c, Sends::Activation, REQUESTS).await;
            let wasm_fn =
                nats_scenario(&client, wasm::WASM_NODE, c, Sends::Activation, REQUESTS).await;
            let exec = nats_scenario(&client, "FX", c, Sends::Activation, FUNCTION_REQUESTS).await;
            rows.push(rust.row(
                "Rust function answering 1 (node FR)",
                c,
                format!(
                    "{:.2}x node E",
                    rust.ms(0.5) / if c == 1 { hop_c1 } else { hop_c16 }
                ),
            ));
            rows.push(wasm_fn.row(
                "WebAssembly function printing 1 (node FW)",
                c,
                format!(
                    "{:.2}x the Rust function's p50 (target ≤ 1.5x); {:.1}x faster than exec `echo 1` ({:.2} ms, same run)",
                    wasm_fn.ms(0.5) / rust.ms(0.5),
                    exec.ms(0.5) / wasm_fn.ms(0.5),
                    exec.ms(0.5)
                ),
            ));
        }
        let instance_us = wasm::instance_us(2000).await?;
        // 100 functions: deployed, each activated once.
        let functions = 100;
        for i in 0..functions {
            wasm::deploy(&http, &base_url, &format!("M{i}"), &wasm::module()).await?;
        }
        for i in 0..functions {
            wait_for_node(&client, &format!("M{i}")).await;
        }
        let report = wasm::Report {
            deploy_to_first_ok_ms: deploy_ms,
            instance_us,
            runner_kib_before,
            runner_kib_with: runner.rss_kib(),
            functions,
        };
        drop((rust_fn, runner));
        Some(report)
    };
    // Asynchronous activations beside synchronous ones, through the same gateway.
    let async_report = if quick || !nats || wasm_only {
        None
    } else {
        Some(asynchronous::measure(&http, &base_url, "E").await)
    };
    let mut idle_gateway_us = Vec::new();
    let nats = nats && !wasm_only && !async_only;
    for c in [1, 16, 64].into_iter().filter(|_| nats && !activate_only) {
        let mut r = Compared::new("seed activation over NATS", c);
        for _ in 0..ROUNDS {
            let base = raw(c).await;
            let relayed_before = events_relayed(&http, &base_url).await;
            let gateway_cpu = gateway.cpu_seconds();
            let s = nats_scenario(&client, "UI", c, Sends::Activation, REQUESTS).await;
            if c == 64 {
                // Every activation's 16 events reach the gateway, with no SSE client to
                // send them to: its CPU once it relayed them all, per activation (the
                // 100 warm-up ones included; each worker runs its share rounded up).
                let activations = REQUESTS.div_ceil(c) * c + 100;
                let events = 16 * activations;
                eventually(
                    "the gateway relays every event",
                    Duration::from_secs(60),
                    || async {
                        (events_relayed(&http, &base_url).await >= relayed_before + events as u64)
                            .then_some(())
                    },
                )
                .await;
                idle_gateway_us
                    .push((gateway.cpu_seconds() - gateway_cpu) * 1e6 / activations as f64);
            }
            r.add(&base, &s);
        }
        rows.push(r.row(RawShare::Seed));
    }
    // The gateway's activation path against the bus, with the CPU split per process.
    let mut gateway_path = Vec::new();
    if nats && (activate_only || !quick) {
        let server_stat = format!("/proc/{}/stat", server.pid().unwrap_or(0));
        let clocks = gateway_path::Clocks {
            front: &gateway,
            server_stat: server_stat.clone(),
            seed: &seed,
        };
        // The floor: an HTTP hop in front of NATS doing nothing else, with clocks of its
        // own.
        let floor_port = free_port();
        let floor = Proc::start(
            "bench",
            &["--activate-floor", &url, &floor_port.to_string(), "UI"],
            &[],
        )?;
        let floor_url = format!("http://127.0.0.1:{floor_port}");
        wait_answers(&floor_url).await;
        let floor_clocks = gateway_path::Clocks {
            front: &floor,
            server_stat,
            seed: &seed,
        };
        for c in [1, 64] {
            let mut rounds = gateway_path::Rounds {
                concurrency: c,
                ..Default::default()
            };
            for _ in 0..gateway_path::ROUNDS {
                let nats = nats_scenario(&client, "UI", c, Sends::Activation, REQUESTS);
                rounds.nats.push(clocks.measure(REQUESTS, nats).await);
                let traced = nats_scenario(&client, "UI", c, Sends::TracedActivation, REQUESTS);
                rounds.traced.push(clocks.measure(REQUESTS, traced).await);
                let http = http_scenario(&base_url, c);
                rounds.http.push(clocks.measure(REQUESTS, http).await);
                let bare = http_scenario(&floor_url, c);
                rounds
                    .floor
                    .push(floor_clocks.measure(REQUESTS, bare).await);
                // One hop of each kind, for what an HTTP hop adds by itself.
                let raw = raw(c).await.ms(0.5);
                let get = get_scenario(&base_url, "/healthz", c, REQUESTS).await;
                rounds.hops.push((raw, get.ms(0.5)));
            }
            gateway_path.push(rounds);
        }
    }
    // The same activations' instructions in a gateway of their own, under callgrind.
    let gateway_instructions = if nats && (activate_only || !quick) {
        instructions::gateway_per_activation(&nats_env, &dir).await?
    } else {
        None
    };
    let idle_gateway_us_per_activation = if idle_gateway_us.is_empty() {
        f64::NAN
    } else {
        median(&idle_gateway_us)
    };
    for c in [1, 16, 64].into_iter().filter(|_| nats && !quick) {
        let mut r = Compared::new("seed activation via POST /activate", c);
        for _ in 0..ROUNDS {
            let base = raw(c).await;
            r.add(&base, &http_scenario(&base_url, c).await);
        }
        rows.push(r.row(RawShare::Seed));
    }

    let default_sizes = |sizes: &'static str| {
        if quick || wasm_only || async_only {
            ""
        } else {
            sizes
        }
    };
    let mut fanouts = Vec::new();
    for n in sizes("BENCH_SSE_CLIENTS", default_sizes("1000,10000")) {
        let (fresh, port) = fresh_gateway(&client, &http, &nats_env).await?;
        fanouts.push(fan_out(&client, &fresh, port, n, Load::Bursts).await?);
    }
    // Single events spread over time (the normal case): one status event every 100 ms.
    for n in sizes("BENCH_SSE_SINGLES", default_sizes("1000,10000")) {
        let (fresh, port) = fresh_gateway(&client, &http, &nats_env).await?;
        fanouts.push(fan_out(&client, &fresh, port, n, Load::Singles).await?);
        drop(fresh);
        // The same clients and events on the floor process, right after.
        let port = free_port();
        let floor = Proc::start("bench", &["--sse-floor", &url, &port.to_string()], &[])?;
        eventually("the floor listens", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        fanouts.push(fan_out(&client, &floor, port, n, Load::Floor).await?);
    }

    // What carrying the trace context costs: the seed at c=64 with it (the default) and
    // with OTEL_PROPAGATORS=none, same build, rounds interleaved.
    drop(seed);
    let propagation = if nats && !activate_only {
        Some(propagation_cost(&client, &server, &topology, &nats_env).await?)
    } else {
        None
    };

    let mut markdown = report(&rows, &fanouts, idle_node_kib, idle_gateway_kib);
    if nats && !activate_only {
        markdown.push_str(&format!(
            "\nGateway CPU per seed activation over NATS with no SSE client (its 16 status events read from the stream, checked, counted and kept as they came; nothing rendered), at c=64, median of {ROUNDS} rounds: {idle_gateway_us_per_activation:.1} µs (min {:.1}).\n",
            min(&idle_gateway_us)
        ));
    }
    for rounds in &gateway_path {
        markdown.push_str(&rounds.markdown());
    }
    if let Some(n) = gateway_instructions {
        markdown.push_str(&format!(
            "\nGateway instructions per seed activation through `POST /activate` (callgrind, user space only; a gateway of its own, c=4, 1,000 activations after 200): {n:.0}.\n"
        ));
    }
    if let Some(propagation) = &propagation {
        markdown.push_str(&propagation.markdown());
    }
    if let Some(wasm) = &wasm_report {
        markdown.push_str(&wasm.markdown());
    }
    if let Some(report) = &async_report {
        markdown.push_str(&report.markdown());
    }
    println!("{markdown}");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::write(artifacts.join("bench.md"), &markdown)?;
    std::fs::write(
        artifacts.join("bench.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": machine(),
            "rows": rows,
            "sse": fanouts,
            "idle_node_rss_kib": idle_node_kib,
            "idle_gateway_rss_kib": idle_gateway_kib,
            "propagation": propagation,
            "gateway_path": gateway_path,
            "gateway_instructions_per_activation": gateway_instructions,
            "wasm": wasm_report,
            "asynchronous": async_report,
            "idle_gateway_us_per_activation": idle_gateway_us,
        }))?,
    )?;
    drop((hop, exec_echo, exec_python, gateway));
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The fan-out sizes in the environment variable `var` (a comma-separated list), else
/// `default`.
fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// A gateway of its own for a fan-out, ready: its memory is measured from its own idle
/// start, not after the load before it.
async fn fresh_gateway(
    client: &Client,
    http: &reqwest::Client,
    nats_env: &[(&str, String)],
) -> anyhow::Result<(Proc, u16)> {
    let port = free_port();
    let mut env = nats_env.to_vec();
    env.push(("MESH_GATEWAY_LISTEN", format!("127.0.0.1:{port}")));
    env.push(("MESH_SSE_MAX_CLIENTS", "30000".into()));
    let gateway = Proc::start("gateway", &[], &env)?;
    wait_ready(client, http, &format!("http://127.0.0.1:{port}")).await;
    Ok((gateway, port))
}

/// Rounds of each side of an interleaved comparison.
const ROUNDS: usize = 5;
/// Rounds of each side of the trace context's cost: a few per cent, on a noisy machine.
const PROPAGATION_ROUNDS: usize = 15;

/// Seed activations per second at c=64 with and without the trace context, and the
/// CPU each activation cost the seed process and the NATS server (µs): on 2 shared
/// cores, what bounds the throughput, and less noisy than it.
#[derive(serde::Serialize)]
struct Propagation {
    on_per_second: Vec<f64>,
    off_per_second: Vec<f64>,
    on_cpu_us: Vec<f64>,
    off_cpu_us: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of the ratios `a[i] / b[i]` of rounds run side by side: what drift on a
/// shared machine disturbs least.
fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(&a.iter().zip(b).map(|(a, b)| a / b).collect::<Vec<_>>())
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

impl Propagation {
    fn markdown(&self) -> String {
        let (on, off) = (median(&self.on_per_second), median(&self.off_per_second));
        let (on_cpu, off_cpu) = (median(&self.on_cpu_us), median(&self.off_cpu_us));
        format!(
            "\nTrace context always on (span-less, nothing exported): seed activations over NATS at c=64, {PROPAGATION_ROUNDS} interleaved rounds each: \
             with it median {on:.0}/s (min {:.0}), with `OTEL_PROPAGATORS=none` median {off:.0}/s (min {:.0}): \
             it costs {:.1}% of throughput (median of the rounds' ratios). CPU per activation (seed process and NATS server): \
             {on_cpu:.1} µs with it, {off_cpu:.1} µs without: {:+.1}% (median of the rounds' ratios).\n",
            min(&self.on_per_second),
            min(&self.off_per_second),
            100.0 * (1.0 - median_ratio(&self.on_per_second, &self.off_per_second)),
            100.0 * (median_ratio(&self.on_cpu_us, &self.off_cpu_us) - 1.0)
        )
    }
}

/// The seed at c=64, propagation on and off in turn, a fresh seed process each round.
async fn propagation_cost(
    client: &Client,
    server: &NatsServer,
    topology: &std::path::Path,
    nats_env: &[(&str, String)],
) -> anyhow::Result<Propagation> {
    let mut result = Propagation {
        on_per_second: Vec::new(),
        off_per_second: Vec::new(),
        on_cpu_us: Vec::new(),
        off_cpu_us: Vec::new(),
    };
    let file = topology.display().to_string();
    let server_stat = format!("/proc/{}/stat", server.pid().unwrap_or(0));
    for _ in 0..PROPAGATION_ROUNDS {
        for on in [true, false] {
            let mut env = nats_env.to_vec();
            if !on {
                env.push(("OTEL_PROPAGATORS", "none".into()));
            }
            let seed = Proc::start("handlers", &["--topology", &file, "--fail-rate", "0"], &env)?;
            wait_for_node(client, "UI").await;
            let cpu = || seed.cpu_seconds() + procs::cpu_seconds(&server_stat);
            let before = cpu();
            let rate = nats_scenario(client, "UI", 64, Sends::Activation, REQUESTS)
                .await
                .rate();
            let cpu_us = (cpu() - before) * 1e6 / REQUESTS as f64;
            if on {
                result.on_per_second.push(rate);
                result.on_cpu_us.push(cpu_us);
            } else {
                result.off_per_second.push(rate);
                result.off_cpu_us.push(cpu_us);
            }
            drop(seed);
            // The next process starts once this one's subscriptions are gone.
            wait_for_no_node(client, "UI").await;
        }
    }
    Ok(result)
}

/// The gateway's count of relayed status events (from `GET /metrics`); 0 when it cannot
/// be read.
async fn events_relayed(http: &reqwest::Client, base: &str) -> u64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("mesh_gateway_events_relayed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until nothing serves `node`.
async fn wait_for_no_node(client: &Client, node: &str) {
    let subject = format!("activate.{node}");
    eventually(&format!("{node} gone"), Duration::from_secs(30), || async {
        match client.request(subject.clone(), "".into()).await {
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => Some(()),
            _ => None,
        }
    })
    .await;
}

/// The seed topology file with every node's work and failure rate removed: the bench
/// measures the mesh's overhead, not the simulated work.
fn zero_work_topology() -> anyhow::Result<String> {
    let mut seed: toml::Table = toml::from_str(include_str!("../../topology/seed.toml"))?;
    for node in seed
        .get_mut("node")
        .and_then(toml::Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(table) = node.as_table_mut() {
            table.remove("work_ms");
            table.remove("fail_rate");
        }
    }
    Ok(toml::to_string(&seed)?)
}

/// Answers every request on `bench.echo` with its payload, until the connection ends.
async fn echo_responder(client: Client) -> anyhow::Result<()> {
    let mut sub = client.subscribe("bench.echo").await?;
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            let _ = client.publish(reply, msg.payload).await;
        }
    }
    Ok(())
}

/// What a compared scenario's ratio is taken against.
enum RawShare {
    /// `n` raw round trips at the same concurrency.
    RoundTrips(usize),
    /// A seed activation: 5 raw round trips on its critical path (latency), and 32 NATS
    /// messages against a raw request-reply's 2 (throughput bound: raw / 16).
    Seed,
}

/// Rounds of one scenario, each beside a raw round trip at the same concurrency.
struct Compared {
    scenario: &'static str,
    concurrency: usize,
    /// (raw p50 ms, raw per second, p50 ms, p99 ms, per second), per round.
    rounds: Vec<(f64, f64, f64, f64, f64)>,
}

impl Compared {
    fn new(scenario: &'static str, concurrency: usize) -> Self {
        Self {
            scenario,
            concurrency,
            rounds: Vec::new(),
        }
    }

    fn add(&mut self, raw: &Sample, s: &Sample) {
        self.rounds
            .push((raw.ms(0.5), raw.rate(), s.ms(0.5), s.ms(0.99), s.rate()));
    }

    fn row(&self, share: RawShare) -> Row {
        let col = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| -> Vec<f64> {
            self.rounds.iter().map(f).collect()
        };
        let (p50, p99, rate) = (col(|r| r.2), col(|r| r.3), col(|r| r.4));
        let trips = match share {
            RawShare::RoundTrips(n) => n as f64,
            RawShare::Seed => 5.0,
        };
        let latency_ratio = median_ratio(&p50, &col(|r| r.0)) / trips;
        let mut note = format!(
            "{latency_ratio:.2}x {} raw p50 at c={} (median of {} side-by-side rounds; raw p50 {:.3} ms)",
            if trips == 1.0 { "the".to_string() } else { format!("{trips:.0}") },
            self.concurrency,
            self.rounds.len(),
            median(&col(|r| r.0)),
        );
        // At c=64 both are bound by throughput, not latency: the share means something.
        if matches!(share, RawShare::Seed) && self.concurrency >= 64 {
            // The bound is raw/16: 32 messages against 2.
            let of_bound = 16.0 * median_ratio(&rate, &col(|r| r.1));
            note.push_str(&format!(
                "; throughput {:.0}% of its bound (raw/16: 32 messages against 2)",
                100.0 * of_bound
            ));
        }
        Row {
            scenario: self.scenario.to_string(),
            concurrency: self.concurrency,
            p50_ms: median(&p50),
            p50_min_ms: min(&p50),
            p99_ms: median(&p99),
            per_second: median(&rate),
            per_second_max: rate.iter().copied().fold(0.0, f64::max),
            note,
        }
    }
}

async fn wait_ready(client: &Client, http: &reqwest::Client, base: &str) {
    wait_for_node(client, "UI").await;
    eventually(
        "the gateway knows 11 nodes (E, FX, FP and the seed)",
        Duration::from_secs(30),
        || async {
            let t: serde_json::Value = http
                .get(format!("{base}/topology"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (t["nodes"].as_array()?.len() == 11).then_some(())
        },
    )
    .await;
}

/// Waits until the activation floor at `base` answers a seed activation with 200.
async fn wait_answers(base: &str) {
    let connections = http_load::Connections::to(base);
    eventually("the floor answers", Duration::from_secs(30), || async {
        let (status, _) = connections
            .send(hyper::Method::POST, "/activate", b"{}")
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
}

/// Waits until `node` answers activations successfully.
async fn wait_for_node(client: &Client, node: &str) {
    let name = NodeName::new(node).unwrap_or_else(|_| unreachable!());
    eventually(
        &format!("{node} answers"),
        Duration::from_secs(30),
        || async {
            let r = call::activate(
                client,
                &name,
                &ActivationRequest::default(),
                Duration::from_secs(5),
            )
            .await;
            (r.outcome == Outcome::Ok).then_some(())
        },
    )
    .await;
}

/// What a NATS scenario sends on its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sends {
    /// `{}` to a raw subject, answered by anything.
    Echo,
    /// An activation of the node of that name, which must succeed.
    Activation,
    /// The same, each in a trace of its own (carried over every hop), as the gateway
    /// starts one for every `POST /activate`.
    TracedActivation,
}

/// `total` request-replies on `target` at `concurrency`, each what `sends` says.
async fn nats_scenario(
    client: &Client,
    target: &str,
    concurrency: usize,
    sends: Sends,
    total: usize,
) -> Sample {
    let client = client.clone();
    let target = target.to_string();
    let name = (sends != Sends::Echo)
        .then(|| NodeName::new(target.as_str()).unwrap_or_else(|e| panic!("{target}: {e}")));
    measure(total, concurrency, move || {
        let (client, target, name) = (client.clone(), target.clone(), name.clone());
        async move {
            match name {
                Some(name) => activate_ok(&client, &name, sends == Sends::TracedActivation).await,
                None => drop(client.request(target, "{}".into()).await.expect("echo")),
            }
        }
    })
    .await
}

/// Activates `name` with the default request, in a fresh trace when `traced`; the
/// activation must succeed.
async fn activate_ok(client: &Client, name: &NodeName, traced: bool) {
    let request = ActivationRequest::default();
    let call = call::activate(client, name, &request, Duration::from_secs(10));
    let r = if traced {
        mesh_core::trace_context::TraceContext::fresh()
            .scope(call)
            .await
    } else {
        call.await
    };
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
}

async fn http_scenario(base: &str, concurrency: usize) -> Sample {
    http_scenario_of(base, concurrency, REQUESTS).await
}

/// `total` GETs of `path` at `base` (`http://host:port`), each answered 200.
async fn get_scenario(base: &str, path: &'static str, concurrency: usize, total: usize) -> Sample {
    http_requests(base, hyper::Method::GET, path, b"", concurrency, total).await
}

/// `total` seed activations through `POST /activate` at `base` (`http://host:port`).
async fn http_scenario_of(base: &str, concurrency: usize, total: usize) -> Sample {
    http_requests(
        base,
        hyper::Method::POST,
        "/activate",
        b"{}",
        concurrency,
        total,
    )
    .await
}

/// `total` requests `method` `path` with `body` at `base` (`http://host:port`), each
/// answered 200, sent by the lean load generator ([`http_load`]).
async fn http_requests(
    base: &str,
    method: hyper::Method,
    path: &'static str,
    body: &'static [u8],
    concurrency: usize,
    total: usize,
) -> Sample {
    let connections = Arc::new(http_load::Connections::to(base));
    measure(total, concurrency, move || {
        let (connections, method) = (connections.clone(), method.clone());
        async move {
            let (status, answer) = connections
                .send(method.clone(), path, body)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(status, 200, "{method} {path}: {answer:?}");
        }
    })
    .await
}

/// What a fan-out sends.
#[derive(Clone, Copy, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Load {
    /// 20 seed activations, 50 ms apart: 16 events each, in bursts.
    Bursts,
    /// 100 single status events, published by the bench at 10 per second.
    Singles,
    /// The same, to the floor process instead of a gateway.
    Floor,
}

impl Load {
    fn events(self) -> usize {
        match self {
            Load::Bursts => 20 * 16,
            Load::Singles | Load::Floor => 100,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Load::Bursts => "20 activations (bursts of 16)",
            Load::Singles => "100 single events at 10/s",
            Load::Floor => "the same, floor: one write per client per event, no HTTP server",
        }
    }
}

/// Result of one SSE fan-out run.
#[derive(serde::Serialize)]
struct FanOut {
    load: Load,
    clients: usize,
    connected: usize,
    connect_failures: usize,
    events_published: u64,
    events_delivered: u64,
    events_lost: u64,
    lagged_notices: u64,
    out_of_order_clients: usize,
    p50_ms: f64,
    p99_ms: f64,
    delivered_per_second: f64,
    gateway_rss_kib_before: u64,
    gateway_rss_kib_connected: u64,
    /// After every client left (the gateway counts none): within 2x of idle, or 30 s on.
    gateway_rss_kib_after: u64,
    /// Seconds from the last client gone to `gateway_rss_kib_after`.
    returned_after_s: f64,
    gateway_kib_per_client: f64,
    gateway_cpu_seconds: f64,
    load_generator_cpu_seconds: f64,
    gateway_cpu_us_per_delivery: f64,
    /// The floor only: how long the writes of one event to every client took, ms (p50,
    /// p99 over the events).
    writes_of_one_event_ms: Option<(f64, f64)>,
}

async fn fan_out(
    client: &Client,
    gateway: &Proc,
    port: u16,
    clients: usize,
    load: Load,
) -> anyhow::Result<FanOut> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let before = gateway.rss_kib();
    let connected = Arc::new(AtomicUsize::new(0));
    let expected = Arc::new(AtomicUsize::new(0));
    let deadline = Arc::new(std::sync::Mutex::new(
        tokio::time::Instant::now() + Duration::from_secs(120),
    ));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    // Connect in batches, so that the listen backlog never overflows.
    for i in 0..clients {
        tasks.push(tokio::spawn(sse::client(
            addr,
            connected.clone(),
            failed.clone(),
            expected.clone(),
            deadline.clone(),
        )));
        if i % 500 == 499 || i + 1 == clients {
            let spawned = i + 1;
            eventually(
                "a batch of SSE clients connected",
                Duration::from_secs(60),
                || async {
                    let done = connected.load(std::sync::atomic::Ordering::Relaxed)
                        + failed.load(std::sync::atomic::Ordering::Relaxed);
                    (done >= spawned).then_some(())
                },
            )
            .await;
        }
    }
    let connect_failures = failed.load(std::sync::atomic::Ordering::Relaxed);
    let connected_rss = gateway.rss_kib();

    let mut floor_writes = match load {
        Load::Floor => Some(client.subscribe(floor::WRITES).await?),
        _ => None,
    };
    let ui = NodeName::new("UI")?;
    let gateway_cpu = gateway.cpu_seconds();
    let own_cpu = procs::cpu_seconds("/proc/self/stat");
    let started = tokio::time::Instant::now();
    expected.store(load.events(), std::sync::atomic::Ordering::Relaxed);
    match load {
        Load::Bursts => {
            for _ in 0..load.events() / 16 {
                let r = call::activate(
                    client,
                    &ui,
                    &ActivationRequest::default(),
                    Duration::from_secs(10),
                )
                .await;
                anyhow::ensure!(r.outcome == Outcome::Ok, "activation failed: {r:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Load::Singles | Load::Floor => {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..load.events() {
                every.tick().await;
                let event = schemas::StatusEvent::new(ui.clone(), schemas::NodeState::Idle);
                client
                    .publish("status.UI", serde_json::to_vec(&event)?.into())
                    .await?;
            }
            client.flush().await?;
        }
    }
    *deadline.lock().unwrap_or_else(|p| p.into_inner()) =
        tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::with_capacity(clients);
    for t in tasks {
        seen.push(t.await?);
    }
    let elapsed = started.elapsed();
    let gateway_cpu = gateway.cpu_seconds() - gateway_cpu;
    let mut writes = Vec::new();
    if let Some(sub) = &mut floor_writes {
        while writes.len() < load.events() {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(m)) => writes.extend(
                    std::str::from_utf8(&m.payload)
                        .ok()
                        .and_then(|us| us.parse().ok())
                        .map(Duration::from_micros),
                ),
                _ => break,
            }
        }
    }
    let writes_of_one_event_ms = (!writes.is_empty()).then(|| {
        let s = Sample::new(writes, elapsed);
        (s.ms(0.5), s.ms(0.99))
    });
    let own_cpu = procs::cpu_seconds("/proc/self/stat") - own_cpu;
    // Every client has closed its connection: memory once the gateway has let go (the
    // floor process keeps nothing worth measuring).
    let mut left = tokio::time::Instant::now();
    let mut after_rss = gateway.rss_kib();
    if !matches!(load, Load::Floor) {
        let http = reqwest::Client::new();
        let healthz = format!("http://{addr}/healthz");
        eventually(
            "the gateway counts no SSE client",
            Duration::from_secs(120),
            || async {
                let h: serde_json::Value =
                    http.get(&healthz).send().await.ok()?.json().await.ok()?;
                (h["sse_clients"].as_u64()? == 0).then_some(())
            },
        )
        .await;
        left = tokio::time::Instant::now();
        // Memory handed back to the system: the RSS once it is within 2x of idle, or
        // after 30 s (jemalloc's background thread returns freed pages within about 10 s).
        while after_rss > 2 * before && left.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            after_rss = gateway.rss_kib();
        }
    }
    let returned_after_s = left.elapsed().as_secs_f64();
    let published = load.events() as u64;
    let delivered: u64 = seen.iter().map(|s| s.received).sum();
    let mut latencies: Vec<Duration> = seen
        .iter()
        .flat_map(|s| {
            s.latencies_us
                .iter()
                .map(|us| Duration::from_micros(u64::from(*us)))
        })
        .collect();
    latencies.shrink_to_fit();
    let sample = Sample::new(latencies, elapsed);
    Ok(FanOut {
        load,
        clients,
        connected: connected.load(std::sync::atomic::Ordering::Relaxed),
        connect_failures,
        events_published: published,
        events_delivered: delivered,
        // Lost by clients that connected (connection failures are reported apart).
        events_lost: {
            let owed = published * (clients - connect_failures) as u64;
            owed - delivered.min(owed)
        },
        lagged_notices: seen.iter().map(|s| s.lagged).sum(),
        out_of_order_clients: seen.iter().filter(|s| !s.in_order).count(),
        p50_ms: sample.ms(0.5),
        p99_ms: sample.ms(0.99),
        delivered_per_second: delivered as f64 / elapsed.as_secs_f64(),
        gateway_rss_kib_before: before,
        gateway_rss_kib_connected: connected_rss,
        gateway_rss_kib_after: after_rss,
        returned_after_s,
        gateway_kib_per_client: connected_rss.saturating_sub(before) as f64 / clients as f64,
        gateway_cpu_seconds: gateway_cpu,
        load_generator_cpu_seconds: own_cpu,
        gateway_cpu_us_per_delivery: gateway_cpu * 1e6 / delivered.max(1) as f64,
        writes_of_one_event_ms,
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs, {model}")
}

fn report(rows: &[Row], fanouts: &[FanOut], node_kib: u64, gateway_kib: u64) -> String {
    let mut out = format!("Machine: {}\n\n", machine());
    out.push_str("| scenario | concurrency | p50 ms (min) | p99 ms | per second (best) | compared |\n|---|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.3} ({:.3}) | {:.3} | {:.0} ({:.0}) | {} |\n",
            r.scenario,
            r.concurrency,
            r.p50_ms,
            r.p50_min_ms,
            r.p99_ms,
            r.per_second,
            r.per_second_max,
            r.note
        ));
    }
    out.push_str("\n| SSE load | clients | connected | delivered | lost | lagged | p50 ms | p99 ms | events/s delivered | gateway KiB per client | gateway MiB: idle / all connected / all left (s after) | CPU s: gateway / load generator | gateway CPU µs per delivery |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for f in fanouts {
        let memory = if matches!(f.load, Load::Floor) {
            "-".to_string()
        } else {
            format!(
                "{:.1} / {:.1} / {:.1} ({:.0} s)",
                f.gateway_rss_kib_before as f64 / 1024.0,
                f.gateway_rss_kib_connected as f64 / 1024.0,
                f.gateway_rss_kib_after as f64 / 1024.0,
                f.returned_after_s,
            )
        };
        let per_client = if matches!(f.load, Load::Floor) {
            "-".to_string()
        } else {
            format!("{:.1}", f.gateway_kib_per_client)
        };
        // Single events: the cost against the floor's, same clients, measured right after.
        let floor = fanouts
            .iter()
            .find(|o| matches!(o.load, Load::Floor) && o.clients == f.clients)
            .filter(|_| matches!(f.load, Load::Singles))
            .map_or(String::new(), |o| {
                format!(
                    " ({:.2}x the floor)",
                    f.gateway_cpu_us_per_delivery / o.gateway_cpu_us_per_delivery
                )
            });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.0} | {per_client} | {memory} | {:.2} / {:.2} | {:.2}{floor} |\n",
            f.load.label(),
            f.clients,
            f.connected,
            f.events_delivered,
            f.events_lost,
            f.lagged_notices,
            f.p50_ms,
            f.p99_ms,
            f.delivered_per_second,
            f.gateway_cpu_seconds,
            f.load_generator_cpu_seconds,
            f.gateway_cpu_us_per_delivery
        ));
    }
    out.push_str(&single_events(fanouts));
    out.push_str(&format!(
        "\nIdle resident memory: node process {:.1} MiB, gateway {:.1} MiB.\n",
        node_kib as f64 / 1024.0,
        gateway_kib as f64 / 1024.0
    ));
    out
}

/// Single events to many clients against the fewest clients of the same run (p50), beside
/// the same ratio of the floor (what the machine allows: one write per client per event,
/// nothing else), and p99 against how long the floor's writes of one event to as many
/// clients took.
fn single_events(fanouts: &[FanOut]) -> String {
    let of = |load: fn(&Load) -> bool| -> Vec<&FanOut> {
        fanouts.iter().filter(|f| load(&f.load)).collect()
    };
    let singles = of(|l| matches!(l, Load::Singles));
    let floors = of(|l| matches!(l, Load::Floor));
    let Some(fewest) = singles.iter().min_by_key(|f| f.clients) else {
        return String::new();
    };
    let floor_of = |clients: usize| floors.iter().find(|o| o.clients == clients);
    let mut out = String::new();
    for f in &singles {
        let Some(floor) = floor_of(f.clients) else {
            continue;
        };
        let Some((writes_p50, writes_p99)) = floor.writes_of_one_event_ms else {
            continue;
        };
        let ratio = f.p50_ms / fewest.p50_ms;
        // The floor's own growth from the fewest clients to as many: the machine's.
        let beside = floor_of(fewest.clients)
            .filter(|_| f.clients != fewest.clients)
            .map_or(String::new(), |few| {
                let growth = floor.p50_ms / few.p50_ms;
                format!(
                    " (the floor's: {growth:.2}x, from {:.2} to {:.2} ms; the gateway's growth is {:.2}x the floor's)",
                    few.p50_ms,
                    floor.p50_ms,
                    ratio / growth,
                )
            });
        out.push_str(&format!(
            "\nSingle events to {} clients: p50 {:.2} ms, {ratio:.2}x the p50 with {} clients{beside}; p99 {:.2} ms, {:.2}x the time the floor's writes of one event to {} clients took (p50 {:.2} ms, p99 {:.2} ms).\n",
            f.clients,
            f.p50_ms,
            fewest.clients,
            f.p99_ms,
            f.p99_ms / writes_p50,
            f.clients,
            writes_p50,
            writes_p99,
        ));
    }
    out
}
