//! `handlers`: serve one nats-mesh node, or a whole topology, on NATS.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use handlers::{exec::ExecSpec, http::HttpSpec, runtime, NodeSpec, Settings, Topology, Work};
use mesh_core::{
    bus::NatsArgs,
    env,
    telemetry::{self, LogFormat},
};
use schemas::{
    service::{self, Verb},
    NodeName,
};

/// jemalloc instead of the system allocator: an activation allocates and frees many small
/// buffers (messages, events, headers) across threads, where glibc's malloc took a sixth
/// of a node's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Serve nats-mesh nodes: NATS request-reply handlers on `activate.<node>` that activate
/// their downstream nodes concurrently, do their own work (simulated, or a function: a
/// program or an HTTP endpoint), publish their status on `status.<node>` and reply with
/// the result tree.
///
/// Run one node with `-n NAME [-t MS | --exec CMD | --http URL] [-s CHILD]...`, many
/// with `--topology FILE`, or every WebAssembly function deployed on the bus with
/// `--functions` (a runner: start as many as you like, anywhere).
/// Every option can also be set through the environment variable shown beside it.
#[derive(Debug, Parser)]
#[command(name = "handlers", version)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,

    /// Name of the single node to serve (A-Z a-z 0-9 _ -, at most 64).
    #[arg(
        short = 'n',
        long,
        env = "MESH_NODE",
        required_unless_present_any = ["topology", "functions"],
        conflicts_with_all = ["topology", "functions"]
    )]
    name: Option<NodeName>,
    /// Own simulated work of the single node, in milliseconds [default: 0].
    #[arg(short = 't', long, env = "MESH_NODE_WORK_MS")]
    work_ms: Option<u64>,
    /// The single node's work is this program, started once per activation (split into
    /// argv like a shell would, but never run by one), e.g. `python3 fn.py`: it reads the
    /// input document on stdin and prints one JSON value.
    #[arg(long, env = "MESH_NODE_EXEC", conflicts_with_all = ["http", "work_ms", "topology"])]
    exec: Option<String>,
    /// The single node's work is this HTTP endpoint (`http://host:port/path`), POSTed
    /// the input document once per activation.
    #[arg(long, env = "MESH_NODE_HTTP", conflicts_with_all = ["work_ms", "topology"])]
    http: Option<String>,
    /// Largest result of the single node's function, in bytes (larger: 502).
    #[arg(long, env = "MESH_NODE_MAX_OUTPUT_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    max_output_bytes: u64,
    /// A downstream node of the single node (repeat, or comma-separate in the env var).
    #[arg(
        short = 's',
        long = "downstream",
        env = "MESH_NODE_DOWNSTREAM",
        value_delimiter = ','
    )]
    downstream: Vec<NodeName>,
    /// Probability (0 to 1) that a node's own simulated work fails, split evenly between
    /// 500 and 502. Overrides the topology file's rates (of simulated nodes) when given.
    #[arg(long, env = "MESH_FAIL_RATE", value_parser = parse_rate)]
    fail_rate: Option<f64>,
    /// Budget of an activation that brings none, in milliseconds. Overrides the
    /// topology file's value when given [default: 5000].
    #[arg(long, env = "MESH_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: Option<u64>,

    /// Serve every node of this topology file (TOML, see topology/seed.toml).
    #[arg(long, env = "MESH_TOPOLOGY")]
    topology: Option<PathBuf>,

    /// Be a runner: serve every WebAssembly function deployed on the bus (see
    /// docs/functions.md), picking up new versions and deletions as they happen. A
    /// runner serves functions only: a topology (`MESH_TOPOLOGY`, as the image sets it)
    /// is ignored.
    #[arg(long, env = "MESH_FUNCTIONS")]
    functions: bool,
    /// A runner's largest module, in bytes (a version with a larger one is not served).
    #[arg(long, env = "MESH_MAX_MODULE_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    max_module_bytes: u64,
    /// Most functions one runner serves.
    #[arg(long, env = "MESH_MAX_FUNCTIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_functions: u64,
    /// WebAssembly instances a runner runs at once, over every function (their memory
    /// and stacks are reserved up front, as address space); more answer 503 at once.
    #[arg(long, env = "MESH_WASM_INSTANCES", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    wasm_instances: u32,
    /// Copies of the function buckets when a runner makes them (3 on a three-server
    /// JetStream cluster).
    #[arg(long = "stream-replicas", env = "MESH_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: u64,
    /// With --topology: serve only these nodes of the file (repeat or comma-separate).
    #[arg(long, env = "MESH_ONLY", value_delimiter = ',', requires = "topology")]
    only: Vec<NodeName>,

    /// Seed for the random outcomes, for reproducible runs.
    #[arg(long, env = "MESH_SEED")]
    seed: Option<u64>,
    /// Activations one node handles at once; more are refused with code 503.
    #[arg(long, env = "MESH_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_in_flight: u64,
    /// Milliseconds to wait for activations in flight on shutdown.
    #[arg(long, env = "MESH_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    grace_ms: u64,
    /// Deprecated: `SHUTDOWN_GRACE_SECS`, read when `MESH_SHUTDOWN_GRACE_MS` is unset.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_SECS",
        hide = true,
        conflicts_with = "grace_ms"
    )]
    grace_secs: Option<u64>,
    /// Publish status events with a JetStream acknowledgement, retried until the stream
    /// keeping them has stored them (for clusters: nothing is lost while the stream
    /// elects a new leader). Needs a stream on `status.>` (the gateway creates one).
    #[arg(long, env = "MESH_STATUS_ACK")]
    status_ack: bool,
    /// Log format; `RUST_LOG` sets the filter (default info).
    #[arg(long, env = "MESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Health check: ask each configured node for `$SRV.PING.<node>` and exit 0 when
    /// every one answers (for container healthchecks), 1 otherwise.
    #[arg(long)]
    ping: bool,
}

/// Exits with an error unless every node answers `$SRV.PING.<node>` within 2 s.
async fn ping(cli: &Cli, nodes: &[NodeSpec]) -> anyhow::Result<()> {
    let client = cli.nats.connect("nats-mesh ping").await?;
    if cli.functions {
        // A runner serves what is deployed, maybe nothing: NATS answering is its health.
        tokio::time::timeout(Duration::from_secs(2), client.flush())
            .await
            .map_err(|_| anyhow::anyhow!("NATS did not answer within 2 s"))??;
        println!("NATS answers");
    }
    for node in nodes {
        let subject = service::of(Verb::Ping, &node.name);
        let asked = client.request(subject.clone(), "".into());
        match tokio::time::timeout(Duration::from_secs(2), asked).await {
            Ok(Ok(_)) => println!("{} answers {subject}", node.name),
            Ok(Err(e)) => anyhow::bail!("{} does not answer {subject}: {e}", node.name),
            Err(_) => anyhow::bail!("{} did not answer {subject} within 2 s", node.name),
        }
    }
    Ok(())
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

impl Cli {
    fn nodes(&self) -> anyhow::Result<Vec<NodeSpec>> {
        if self.functions {
            return Ok(Vec::new());
        }
        let mut nodes = match (&self.topology, &self.name) {
            (Some(path), _) => {
                let topology = Topology::load(path)?;
                for only in &self.only {
                    anyhow::ensure!(
                        topology.get(only.as_str()).is_some(),
                        "--only {only}: no such node in {}",
                        path.display()
                    );
                }
                topology
                    .nodes
                    .into_iter()
                    .filter(|n| self.only.is_empty() || self.only.contains(&n.name))
                    .collect()
            }
            (None, Some(name)) => {
                let max_output_bytes = usize::try_from(self.max_output_bytes)?;
                let work = match (&self.exec, &self.http) {
                    (Some(_), _) | (_, Some(_)) if self.fail_rate.is_some() => anyhow::bail!(
                        "node {name}: --fail-rate is for simulated nodes, not functions"
                    ),
                    (Some(command), _) => {
                        let argv = shell_words::split(command)
                            .map_err(|e| anyhow::anyhow!("--exec {command:?}: {e}"))?;
                        anyhow::ensure!(!argv.is_empty(), "--exec needs a program");
                        Work::Exec(ExecSpec {
                            argv,
                            dir: None,
                            env: Default::default(),
                            max_output_bytes,
                        })
                    }
                    (None, Some(url)) => {
                        handlers::http::check_url(url).map_err(|e| anyhow::anyhow!(e))?;
                        Work::Http(HttpSpec {
                            url: url.clone(),
                            max_output_bytes,
                        })
                    }
                    (None, None) => Work::simulated(self.work_ms.unwrap_or(0), 0.0),
                };
                vec![NodeSpec {
                    work,
                    ..NodeSpec::new(name.clone()).with_downstream(self.downstream.clone())
                }]
            }
            (None, None) => anyhow::bail!("give --name, --topology or --functions"),
        };
        for node in &mut nodes {
            if let (Some(rate), Work::Simulated { fail_rate, .. }) =
                (self.fail_rate, &mut node.work)
            {
                *fail_rate = rate;
            }
            if let Some(timeout) = self.timeout_ms {
                node.timeout_ms = timeout;
            }
        }
        Ok(nodes)
    }
}

/// Environment variables renamed in this release, read under their old names until the
/// next (`NODE_NAME` is not: Kubernetes sets it on every pod; nor `LOG_FORMAT`).
const RENAMED: &[env::Renamed] = &[
    ("NODE_WORK_MS", "MESH_NODE_WORK_MS"),
    ("NODE_EXEC", "MESH_NODE_EXEC"),
    ("NODE_HTTP", "MESH_NODE_HTTP"),
    ("NODE_MAX_OUTPUT_BYTES", "MESH_NODE_MAX_OUTPUT_BYTES"),
    ("NODE_DOWNSTREAM", "MESH_NODE_DOWNSTREAM"),
    ("NODE_FAIL_RATE", "MESH_FAIL_RATE"),
    ("NODE_TIMEOUT_MS", "MESH_TIMEOUT_MS"),
    ("NODE_MAX_IN_FLIGHT", "MESH_MAX_IN_FLIGHT"),
    ("NODE_STATUS_ACK", "MESH_STATUS_ACK"),
];

fn main() -> ExitCode {
    // `handlers __reap <program> <args>…`: the reaper of one exec activation.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == handlers::reap::ARG) {
        let code = handlers::reap::run(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    if let Ok(exe) = std::env::current_exe() {
        handlers::exec::use_reaper(exe);
    }
    let (cli, renamed) = env::parse::<Cli>(&[env::NATS_RENAMED, RENAMED].concat());
    // One service name per node: the process's own when it serves one node (as in
    // compose), else each node's spans exported under its own.
    let one = match (&cli.name, cli.only.as_slice()) {
        (Some(name), _) | (None, [name]) => Some(format!("node-{name}")),
        _ => None,
    };
    let services = match &one {
        Some(name) => telemetry::Services::One(name),
        None if cli.functions => telemetry::Services::PerNode("nats-mesh-runner"),
        None => telemetry::Services::PerNode("nats-mesh-nodes"),
    };
    // Telemetry outlives the runtime: its exporter thread is flushed after the last span.
    let _telemetry = match telemetry::init(services, cli.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for notice in renamed {
        tracing::warn!("{notice}");
    }
    if cli.grace_secs.is_some() {
        tracing::warn!("SHUTDOWN_GRACE_SECS is deprecated and will be ignored in the next release: use MESH_SHUTDOWN_GRACE_MS (milliseconds)");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let nodes = cli.nodes()?;
    if cli.ping {
        return ping(&cli, &nodes).await;
    }
    let client_name = match nodes.as_slice() {
        _ if cli.functions => "nats-mesh runner".to_string(),
        [one] => format!("nats-mesh node {}", one.name),
        _ => "nats-mesh nodes".to_string(),
    };
    // Signals are handled from here on: also while NATS is not reachable yet.
    let mut stop = std::pin::pin!(mesh_core::shutdown::signal());
    let client = tokio::select! {
        client = cli.nats.connect_eventually(&client_name) => client?,
        _ = &mut stop => return Ok(()),
    };
    if let Some(path) = cli.topology.as_ref().filter(|_| !cli.functions) {
        let triggers = Topology::load(path)?.triggers;
        if !triggers.is_empty() {
            tokio::spawn(put_triggers(client.clone(), triggers));
        }
    }
    if cli.functions {
        handlers::runner::run(client.clone(), cli.settings()?, cli.runner()?, stop)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    } else {
        runtime::run(client.clone(), nodes, cli.settings()?, stop).await?;
    }
    mesh_core::bus::drain(&client, Duration::from_secs(3)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Puts a topology file's triggers in the bucket every gateway runs triggers from (the
/// file is the truth for its triggers at each start).
async fn put_triggers(
    client: async_nats::Client,
    triggers: Vec<(NodeName, schemas::trigger::Trigger)>,
) {
    let store = match mesh_core::triggers::open(&client, 1).await {
        Ok(store) => store,
        Err(e) => {
            return tracing::warn!(cause = %e, "the topology's triggers were not stored: no gateway runs them")
        }
    };
    for (name, trigger) in triggers {
        let body = serde_json::to_vec(&trigger).unwrap_or_default();
        match store.put(name.as_str(), body.into()).await {
            Ok(_) => tracing::info!(trigger = %name, node = %trigger.node, "trigger stored"),
            Err(e) => tracing::warn!(trigger = %name, cause = %e, "trigger not stored"),
        }
    }
}

impl Cli {
    /// The runner settings the command line gives.
    fn runner(&self) -> anyhow::Result<handlers::runner::RunnerSettings> {
        Ok(handlers::runner::RunnerSettings {
            max_module_bytes: usize::try_from(self.max_module_bytes)?,
            max_functions: usize::try_from(self.max_functions)?,
            replicas: usize::try_from(self.replicas)?,
            instances: self.wasm_instances,
        })
    }

    /// The runtime settings the command line gives.
    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            max_in_flight: usize::try_from(self.max_in_flight)?,
            seed: self.seed,
            grace: match self.grace_secs {
                Some(secs) => Duration::from_secs(secs),
                None => Duration::from_millis(self.grace_ms),
            },
            status_ack: self.status_ack,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[test]
    fn the_command_lines_defaults_are_the_runtimes() {
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let cli =
            Cli::from_arg_matches(&command.get_matches_from(["handlers", "--name", "A"])).unwrap();
        assert_eq!(cli.settings().unwrap(), Settings::default());
        assert_eq!(
            cli.runner().unwrap(),
            handlers::runner::RunnerSettings::default()
        );
    }
}
