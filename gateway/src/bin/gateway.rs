//! `gateway`: the nats-mesh HTTP gateway.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use gateway::{
    settings::{
        AsyncSettings, DiscoverySettings, HttpSettings, ReplayLimits, SseSettings, StreamSettings,
    },
    Gateway, Settings,
};
use mesh_core::{
    bus::NatsArgs,
    env,
    telemetry::{self, LogFormat},
};
use poem::listener::{Acceptor, Listener, TcpListener};
use schemas::NodeName;

/// jemalloc with its background thread instead of the system allocator: it gives memory
/// back once thousands of SSE clients have left (glibc's malloc kept it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The nats-mesh HTTP gateway: `POST /activate` on the bus, Server-Sent Events of every
/// status event, topology discovered through the NATS Services API, and a live page.
///
/// Every option can also be set through the environment variable shown beside it.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "gateway", version)]
struct Config {
    /// How to reach NATS.
    #[command(flatten)]
    nats: NatsArgs,

    /// Address to listen on for HTTP.
    #[arg(long, env = "MESH_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Node activated by `POST /activate` when the body names none.
    #[arg(long, env = "MESH_GATEWAY_ENTRY_NODE", default_value = "UI")]
    entry_node: NodeName,
    /// Id of this gateway in relayed events (`relayed_by`); a random one when absent.
    #[arg(long, env = "MESH_GATEWAY_ID")]
    gateway_id: Option<String>,

    /// Budget of an activation whose body gives none, in milliseconds.
    #[arg(long, env = "MESH_GATEWAY_ACTIVATE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    activate_timeout_ms: u64,
    /// Bearer token required by the mutating routes (`POST /activate`,
    /// `PUT /nodes/{node}/color`, `PUT`/`DELETE /nodes/{node}/config`); they are open
    /// when unset.
    #[arg(long, env = "MESH_GATEWAY_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Token required to read (`/events`, `/activations`, `/topology`, `GET /functions`,
    /// `GET /triggers`): as `Authorization: Bearer`, or the cookie `POST /session` sets
    /// for the page and EventSource; the API token reads too. Reads are open when unset.
    #[arg(long, env = "MESH_GATEWAY_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// Origins allowed to call the API from browsers (CORS), repeat or comma-separate;
    /// CORS is off when none is given.
    #[arg(
        long = "cors-origin",
        env = "MESH_GATEWAY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Threads running the gateway's tasks: HTTP, NATS, the event fan-out [default: half
    /// the cores this process may use, at least 1]. One thread per core costs more in
    /// hand-offs between threads than it serves when the gateway shares its cores with
    /// nats-server and the nodes; a gateway with cores of its own serving many event
    /// streams may want more.
    #[arg(long, env = "MESH_GATEWAY_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Most HTTP connections at once; more are answered 503 and closed [default: the
    /// file descriptor limit (raised to its hard limit at start) less 256, at most
    /// 100000]. Clamped to that when larger.
    #[arg(long, env = "MESH_GATEWAY_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Longest a new connection may take to send its first request head, in
    /// milliseconds.
    #[arg(long, env = "MESH_GATEWAY_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    header_timeout_ms: u64,
    /// A connection with nothing read or written this long is closed, in milliseconds
    /// (at least three times the SSE keep-alive interval).
    #[arg(long, env = "MESH_GATEWAY_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    idle_timeout_ms: u64,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "MESH_GATEWAY_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    max_body_bytes: usize,
    /// Largest WebAssembly module `PUT /functions/{name}` accepts, in bytes (413 beyond).
    #[arg(long, env = "MESH_GATEWAY_MAX_MODULE_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    max_module_bytes: u64,

    /// Interval of `: keep-alive` comments on idle SSE streams, in milliseconds.
    #[arg(long, env = "MESH_SSE_KEEPALIVE_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    sse_keepalive_ms: u64,
    /// Reconnection delay suggested to SSE clients (`retry:`), in milliseconds.
    #[arg(long, env = "MESH_SSE_RETRY_MS", default_value_t = 2_000)]
    sse_retry_ms: u64,
    /// Most SSE clients at once; more get 503.
    #[arg(long, env = "MESH_SSE_MAX_CLIENTS", default_value_t = 20_000)]
    sse_max_clients: usize,
    /// Events a client may fall behind before it is told it lagged.
    #[arg(long, env = "MESH_SSE_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    sse_buffer: u64,
    /// Events kept in memory for `Last-Event-ID` resumption.
    #[arg(long, env = "MESH_SSE_HISTORY", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    sse_history: u64,
    /// Bytes of events kept in memory for `Last-Event-ID` (whichever of the two limits
    /// comes first).
    #[arg(long, env = "MESH_SSE_HISTORY_BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=4 * 1024 * 1024 * 1024))]
    sse_history_bytes: u64,
    /// Largest status event relayed, in bytes; larger ones are refused, counted in
    /// `/metrics`, and not stored by the stream either.
    #[arg(long, env = "MESH_SSE_MAX_EVENT_BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(256..=1024 * 1024))]
    sse_max_event_bytes: u64,
    /// Most bytes of stored events one `Last-Event-ID` replay sends; a client missing
    /// more is told so and resumes from its new last id.
    #[arg(long, env = "MESH_SSE_MAX_REPLAY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    sse_max_replay_bytes: u64,
    /// Replays from the stream running at once; a client waits up to 2 s for one, then
    /// is told what it missed.
    #[arg(long, env = "MESH_SSE_MAX_REPLAYS", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    sse_max_replays: u64,

    /// JetStream stream keeping status events (created when missing); empty turns
    /// durable history off. Without JetStream the gateway relays live.
    #[arg(long, env = "MESH_STREAM", default_value = "MESH_STATUS")]
    stream: String,
    /// Oldest event the stream keeps, in milliseconds.
    #[arg(long, env = "MESH_STREAM_MAX_AGE_MS", default_value_t = 3_600_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    stream_max_age_ms: u64,
    /// Deprecated: `GATEWAY_STREAM_MAX_AGE_SECS`, read when `MESH_STREAM_MAX_AGE_MS` is
    /// unset.
    #[arg(
        long,
        env = "GATEWAY_STREAM_MAX_AGE_SECS",
        hide = true,
        conflicts_with = "stream_max_age_ms"
    )]
    stream_max_age_secs: Option<u64>,
    /// Most bytes the stream keeps.
    #[arg(long, env = "MESH_STREAM_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    stream_max_bytes: u64,
    /// Copies of the stream in a NATS cluster, when the gateway creates it (3 keeps the
    /// history through the loss of a server).
    #[arg(long, env = "MESH_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=5))]
    stream_replicas: u64,

    /// JetStream stream keeping finished activations for the inspector (`GET
    /// /activations`; created when missing, one message per activation id); empty keeps
    /// the newest 256 in this gateway's memory, as without JetStream.
    #[arg(
        long,
        env = "MESH_ACTIVATIONS_STREAM",
        default_value = "MESH_ACTIVATIONS"
    )]
    activations_stream: String,
    /// Oldest activation that stream keeps, in milliseconds.
    #[arg(long, env = "MESH_ACTIVATIONS_MAX_AGE_MS", default_value_t = 3_600_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    activations_max_age_ms: u64,
    /// Most bytes that stream keeps.
    #[arg(long, env = "MESH_ACTIVATIONS_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    activations_max_bytes: u64,

    /// Asynchronous activations (`Prefer: respond-async`): most waiting at once (more
    /// are refused with 503). 0 turns them off.
    #[arg(long, env = "MESH_ASYNC_MAX_QUEUED", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    async_max_queued: u64,
    /// Most bytes of asynchronous activations waiting, and of their records kept.
    #[arg(long, env = "MESH_ASYNC_MAX_BYTES", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    async_max_bytes: u64,
    /// Longest an asynchronous activation may wait, and how long its record is kept, in
    /// milliseconds.
    #[arg(long, env = "MESH_ASYNC_MAX_AGE_MS", default_value_t = 86_400_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    async_max_age_ms: u64,
    /// Attempts of an asynchronous activation whose outcome says "try again" (timeout,
    /// unavailable, rejected) before it is dead.
    #[arg(long, env = "MESH_ASYNC_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    async_max_attempts: u32,
    /// Pause before the second attempt, in milliseconds; doubled for each further one,
    /// with up to half drawn at random.
    #[arg(long, env = "MESH_ASYNC_BACKOFF_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    async_backoff_ms: u64,
    /// Longest pause between two attempts, in milliseconds.
    #[arg(long, env = "MESH_ASYNC_BACKOFF_MAX_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    async_backoff_max_ms: u64,
    /// Asynchronous activations this gateway runs at once (0: it queues, others run).
    #[arg(long, env = "MESH_ASYNC_WORKERS", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    async_workers: u64,
    /// How long an attempt's gateway may go silent before another gateway takes the
    /// activation, in milliseconds (a running attempt says it is alive every third of it).
    #[arg(long, env = "MESH_ASYNC_ACK_WAIT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(300..=3_600_000))]
    async_ack_wait_ms: u64,
    /// Asynchronous activations running at once across all gateways.
    #[arg(long, env = "MESH_ASYNC_MAX_RUNNING", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    async_max_running: u64,
    /// How long an `Idempotency-Key` names its activation, in milliseconds.
    #[arg(long, env = "MESH_ASYNC_IDEMPOTENCY_WINDOW_MS", default_value_t = 86_400_000,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    async_idempotency_window_ms: u64,
    /// Asynchronous activations of one node this gateway runs at once; more wait in the
    /// queue (without counting an attempt): a node sees at most this many per gateway.
    #[arg(long, env = "MESH_ASYNC_NODE_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    async_node_concurrency: u64,
    /// URL prefixes an asynchronous activation's `X-Callback-Url` may start with (repeat,
    /// or comma-separate in the variable), e.g. `http://hooks.internal:8000/`; callbacks
    /// to anything else are refused (400). None: no callbacks.
    #[arg(long = "async-callback-allow", env = "MESH_ASYNC_CALLBACK_ALLOW", value_delimiter = ',', value_parser = callback_prefix)]
    async_callback_allow: Vec<String>,
    /// Link to a trace in your tracing UI, `{trace_id}` replaced by the trace id (Jaeger:
    /// `http://localhost:16686/trace/{trace_id}`): the inspector links each traced
    /// activation to its trace.
    #[arg(long, env = "MESH_GATEWAY_TRACE_URL", value_parser = trace_url)]
    trace_url: Option<String>,

    /// Interval of topology discovery (`$SRV.INFO`), in milliseconds.
    #[arg(long, env = "MESH_DISCOVERY_INTERVAL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(50..))]
    discovery_interval_ms: u64,
    /// How long one discovery waits for services to answer, in milliseconds.
    #[arg(long, env = "MESH_DISCOVERY_WINDOW_MS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    discovery_window_ms: u64,

    /// Log format; `RUST_LOG` sets the filter (default info).
    #[arg(long, env = "MESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Health check: ask the gateway listening at `--listen` for `/readyz` and exit 0
    /// when it answers 200 within 2 s (for container healthchecks), 1 otherwise.
    #[arg(long)]
    ping: bool,
}

/// File descriptors kept for everything but HTTP connections (NATS, files, logs).
const FD_RESERVE: u64 = 256;

/// Raises the soft limit on open files to the hard limit; returns the soft limit now.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

impl Config {
    /// The connection limit: as configured, within the file descriptor limit.
    fn connection_limit(&self) -> usize {
        let fds = raise_fd_limit();
        let fit = fds.saturating_sub(FD_RESERVE).clamp(16, 100_000);
        let limit = match self.max_connections {
            Some(wanted) if wanted > fit => {
                tracing::warn!(
                    wanted,
                    fds,
                    limit = fit,
                    "--max-connections is above what the file descriptor limit allows: lowered"
                );
                fit
            }
            Some(wanted) => wanted,
            None => fit,
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        tracing::info!(
            file_descriptors = fds,
            max_connections = limit,
            max_sse_clients = self.sse_max_clients.min(limit),
            "connection limits"
        );
        limit
    }

    fn settings(&self) -> anyhow::Result<Settings> {
        let max_connections = self.connection_limit();
        Ok(Settings {
            entry_node: self.entry_node.clone(),
            gateway_id: self.gateway_id.clone(),
            activate_timeout: Duration::from_millis(self.activate_timeout_ms),
            api_token: self.api_token.clone(),
            read_token: self.read_token.clone(),
            cors_origins: self.cors_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            max_module_bytes: usize::try_from(self.max_module_bytes)?,
            asynchronous: (self.async_max_queued > 0).then(|| AsyncSettings {
                max_queued: i64::try_from(self.async_max_queued).unwrap_or(i64::MAX),
                max_bytes: i64::try_from(self.async_max_bytes).unwrap_or(i64::MAX),
                max_age: Duration::from_millis(self.async_max_age_ms),
                max_attempts: self.async_max_attempts,
                backoff: Duration::from_millis(self.async_backoff_ms),
                backoff_max: Duration::from_millis(self.async_backoff_max_ms),
                workers: usize::try_from(self.async_workers).unwrap_or(usize::MAX),
                ack_wait: Duration::from_millis(self.async_ack_wait_ms),
                max_ack_pending: i64::try_from(self.async_max_running).unwrap_or(i64::MAX),
                idempotency_window: Duration::from_millis(self.async_idempotency_window_ms),
                replicas: usize::try_from(self.stream_replicas).unwrap_or(1),
                callback_allow: self.async_callback_allow.clone(),
                node_concurrency: usize::try_from(self.async_node_concurrency)
                    .unwrap_or(usize::MAX),
            }),
            http: HttpSettings {
                max_connections,
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            },
            sse: SseSettings {
                keepalive: Duration::from_millis(self.sse_keepalive_ms),
                retry: Duration::from_millis(self.sse_retry_ms),
                max_clients: self.sse_max_clients.min(max_connections),
                buffer: usize::try_from(self.sse_buffer)?,
                history: usize::try_from(self.sse_history)?,
                history_bytes: usize::try_from(self.sse_history_bytes)?,
                max_event_bytes: usize::try_from(self.sse_max_event_bytes)?,
                replay: ReplayLimits {
                    bytes: usize::try_from(self.sse_max_replay_bytes)?,
                    at_once: usize::try_from(self.sse_max_replays)?,
                    ..Default::default()
                },
            },
            stream: (!self.stream.is_empty()).then(|| StreamSettings {
                name: self.stream.clone(),
                max_age: match self.stream_max_age_secs {
                    Some(secs) => Duration::from_secs(secs),
                    None => Duration::from_millis(self.stream_max_age_ms),
                },
                max_bytes: self.stream_max_bytes,
                replicas: usize::try_from(self.stream_replicas).unwrap_or(1),
            }),
            activations: (!self.activations_stream.is_empty()).then(|| StreamSettings {
                name: self.activations_stream.clone(),
                max_age: Duration::from_millis(self.activations_max_age_ms),
                max_bytes: self.activations_max_bytes,
                replicas: usize::try_from(self.stream_replicas).unwrap_or(1),
            }),
            trace_url: self.trace_url.clone(),
            discovery: DiscoverySettings {
                interval: Duration::from_millis(self.discovery_interval_ms),
                window: Duration::from_millis(self.discovery_window_ms),
            },
        })
    }
}

/// A trace link template: an http(s) URL with `{trace_id}` in it.
/// A callback prefix: an `http://` URL with a host and a path ending in `/` (so a prefix
/// cannot be extended into another host: `http://a.com` would allow `http://a.com.evil`).
fn callback_prefix(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text}: callbacks are http:// URLs"))?;
    let Some((host, _)) = rest.split_once('/') else {
        return Err(format!("{text}: end the prefix with a path, at least `/`"));
    };
    if host.is_empty() || host.contains('@') {
        return Err(format!("{text}: a host, without credentials"));
    }
    Ok(text.to_string())
}

fn trace_url(text: &str) -> Result<String, String> {
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err("an http:// or https:// URL is needed".into());
    }
    if !text.contains("{trace_id}") {
        return Err("the URL must contain {trace_id}, where the trace id goes".into());
    }
    Ok(text.to_string())
}

/// `GET /readyz` on the gateway at `listen` (an unspecified address means this host):
/// Ok when it answers 200.
async fn ping(listen: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let asked = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /readyz HTTP/1.0\r\nhost: localhost\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    match tokio::time::timeout(Duration::from_secs(2), asked).await {
        Ok(Ok(head)) if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" => {
            println!("the gateway at {addr} is ready");
            Ok(())
        }
        Ok(Ok(head)) => anyhow::bail!(
            "the gateway at {addr} is not ready: {}",
            String::from_utf8_lossy(&head)
        ),
        Ok(Err(e)) => anyhow::bail!("no gateway answers at {addr}: {e}"),
        Err(_) => anyhow::bail!("the gateway at {addr} did not answer within 2 s"),
    }
}

/// Environment variables renamed in this release, read under their old names until the
/// next (not `LOG_FORMAT`, a name other programs use).
const RENAMED: &[env::Renamed] = &[
    ("GATEWAY_LISTEN", "MESH_GATEWAY_LISTEN"),
    ("GATEWAY_ENTRY_NODE", "MESH_GATEWAY_ENTRY_NODE"),
    ("GATEWAY_ID", "MESH_GATEWAY_ID"),
    (
        "GATEWAY_ACTIVATE_TIMEOUT_MS",
        "MESH_GATEWAY_ACTIVATE_TIMEOUT_MS",
    ),
    ("GATEWAY_API_TOKEN", "MESH_GATEWAY_API_TOKEN"),
    ("GATEWAY_CORS_ORIGINS", "MESH_GATEWAY_CORS_ORIGINS"),
    ("GATEWAY_MAX_BODY_BYTES", "MESH_GATEWAY_MAX_BODY_BYTES"),
    ("SSE_KEEPALIVE_MS", "MESH_SSE_KEEPALIVE_MS"),
    ("SSE_RETRY_MS", "MESH_SSE_RETRY_MS"),
    ("SSE_MAX_CLIENTS", "MESH_SSE_MAX_CLIENTS"),
    ("SSE_BUFFER", "MESH_SSE_BUFFER"),
    ("SSE_HISTORY", "MESH_SSE_HISTORY"),
    ("GATEWAY_STREAM", "MESH_STREAM"),
    ("GATEWAY_STREAM_MAX_BYTES", "MESH_STREAM_MAX_BYTES"),
    ("GATEWAY_STREAM_REPLICAS", "MESH_STREAM_REPLICAS"),
    ("DISCOVERY_INTERVAL_MS", "MESH_DISCOVERY_INTERVAL_MS"),
    ("DISCOVERY_WINDOW_MS", "MESH_DISCOVERY_WINDOW_MS"),
];

fn main() -> ExitCode {
    let (config, renamed) = env::parse::<Config>(&[env::NATS_RENAMED, RENAMED].concat());
    // Telemetry outlives the runtime: its exporter thread is flushed after the last span.
    let _telemetry = match telemetry::init(telemetry::Services::One("gateway"), config.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for notice in renamed {
        tracing::warn!("{notice}");
    }
    if config.stream_max_age_secs.is_some() {
        tracing::warn!("GATEWAY_STREAM_MAX_AGE_SECS is deprecated and will be ignored in the next release: use MESH_STREAM_MAX_AGE_MS (milliseconds)");
    }
    let threads = config.threads.map_or_else(default_threads, usize::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(r) => {
            tracing::info!(threads, "async runtime started");
            r
        }
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads when `--threads` is not given: half the cores this process may use
/// (its CPU affinity and cgroup quota count), at least one. On 2 cores shared with
/// nats-server and the nodes, one thread spent 14% less CPU per activation than two and
/// served 3% more of them (#29, docs/benchmark.md): each request hands work between the
/// HTTP connection's task and the NATS connection's, and on busy cores a hand-off to
/// another thread is a wake-up and a context switch.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.ping {
        return ping(config.listen).await;
    }
    let settings = config.settings()?;
    let listen = config.listen;
    // Signals are handled from here on: also while NATS is not reachable yet.
    let mut stop = std::pin::pin!(mesh_core::shutdown::signal());
    let client = tokio::select! {
        client = config.nats.connect_eventually("nats-mesh gateway") => client?,
        _ = &mut stop => return Ok(()),
    };
    let acceptor = TcpListener::bind(listen)
        .into_acceptor()
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let gateway = Gateway::start(settings, client.clone()).await?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .map_or_else(|| listen.to_string(), |a| a.to_string());
    tracing::info!(
        "gateway on http://{addr}/ (page), http://{addr}/docs (Swagger UI), http://{addr}/events (SSE)"
    );
    gateway.serve(acceptor, stop).await?;
    mesh_core::bus::drain(&client, Duration::from_secs(3)).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// The command line with nothing given and no environment read.
    fn defaults() -> Config {
        let command = Config::command().mut_args(|arg| arg.env(None));
        Config::from_arg_matches(&command.get_matches_from(["gateway"])).unwrap()
    }

    #[test]
    fn the_command_lines_defaults_are_the_librarys() {
        let mut settings = defaults().settings().unwrap();
        let library = Settings::default();
        // The one default the machine decides: the open-file limit.
        assert!(settings.http.max_connections >= 16);
        settings.http.max_connections = library.http.max_connections;
        settings.sse.max_clients = settings.sse.max_clients.max(library.sse.max_clients);
        assert_eq!(settings, library);
    }
}
