//! Gateway settings: command line flags, each also read from the environment.

use std::net::SocketAddr;

use handlers::{bus::NatsArgs, telemetry::LogFormat};
use schemas::NodeName;

/// The nats-mesh HTTP gateway: `POST /activate` on the bus, Server-Sent Events of every
/// status event, topology discovered through the NATS Services API, and a live page.
///
/// Every option can also be set through the environment variable shown beside it.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "gateway", version)]
pub struct Config {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Address to listen on for HTTP.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Node activated by `POST /activate` when the body names none.
    #[arg(long, env = "GATEWAY_ENTRY_NODE", default_value = "UI")]
    pub entry_node: NodeName,
    /// Id of this gateway in relayed events (`relayed_by`); a random one when absent.
    #[arg(long, env = "GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// Budget of an activation whose body gives none, in milliseconds.
    #[arg(long, env = "GATEWAY_ACTIVATE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub activate_timeout_ms: u64,
    /// Bearer token required by the mutating routes (`POST /activate`,
    /// `PUT /nodes/{node}/color`); they are open when unset.
    #[arg(long, env = "GATEWAY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Origins allowed to call the API from browsers (CORS), repeat or comma-separate;
    /// CORS is off when none is given.
    #[arg(
        long = "cors-origin",
        env = "GATEWAY_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Interval of `: keep-alive` comments on idle SSE streams, in milliseconds.
    #[arg(long, env = "SSE_KEEPALIVE_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub sse_keepalive_ms: u64,
    /// Reconnection delay suggested to SSE clients (`retry:`), in milliseconds.
    #[arg(long, env = "SSE_RETRY_MS", default_value_t = 2_000)]
    pub sse_retry_ms: u64,
    /// Most SSE clients at once; more get 503.
    #[arg(long, env = "SSE_MAX_CLIENTS", default_value_t = 20_000)]
    pub sse_max_clients: usize,
    /// Events a client may fall behind before it is told it lagged.
    #[arg(long, env = "SSE_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub sse_buffer: u64,
    /// Events kept in memory for `Last-Event-ID` resumption.
    #[arg(long, env = "SSE_HISTORY", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub sse_history: u64,

    /// JetStream stream keeping status events (created when missing); empty turns
    /// durable history off. Without JetStream the gateway relays live.
    #[arg(long, env = "GATEWAY_STREAM", default_value = "MESH_STATUS")]
    pub stream: String,
    /// Oldest event the stream keeps, in seconds.
    #[arg(long, env = "GATEWAY_STREAM_MAX_AGE_SECS", default_value_t = 3600)]
    pub stream_max_age_secs: u64,
    /// Most bytes the stream keeps.
    #[arg(long, env = "GATEWAY_STREAM_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub stream_max_bytes: u64,

    /// Interval of topology discovery (`$SRV.INFO`), in milliseconds.
    #[arg(long, env = "DISCOVERY_INTERVAL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(50..))]
    pub discovery_interval_ms: u64,
    /// How long one discovery waits for services to answer, in milliseconds.
    #[arg(long, env = "DISCOVERY_WINDOW_MS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub discovery_window_ms: u64,

    /// Log format; `RUST_LOG` sets the filter (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Settings for tests and tools: NATS at `nats_url`, every other value its default.
    pub fn for_nats(nats_url: &str) -> Self {
        use clap::Parser;
        // Parsing a fixed, valid argument list cannot fail.
        Self::try_parse_from(["gateway", "--nats-url", nats_url, "--listen", "127.0.0.1:0"])
            .unwrap_or_else(|e| unreachable!("{e}"))
    }
}
