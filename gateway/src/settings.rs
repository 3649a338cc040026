//! What the gateway library is configured with: typed values, built by the binary from
//! its command line (see `src/bin/gateway.rs`) or by tests directly.

use std::time::Duration;

use schemas::NodeName;

/// Every setting of a gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Node activated by `POST /activate` when the body names none.
    pub entry_node: NodeName,
    /// Id of this gateway in relayed events (`relayed_by`); random when absent.
    pub gateway_id: Option<String>,
    /// Budget of an activation whose body gives none.
    pub activate_timeout: Duration,
    /// Bearer token the mutating operations require; open when absent.
    pub api_token: Option<String>,
    /// Token the reading operations (`/events`, `/activations`, `/topology`, the
    /// functions and triggers) require, as a bearer token or the session cookie `POST
    /// /session` sets; the API token is accepted too. Open when absent.
    pub read_token: Option<String>,
    /// Origins allowed by CORS; CORS is off when empty.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest module accepted by `PUT /functions/{name}`, in bytes (413 beyond).
    pub max_module_bytes: usize,
    /// Asynchronous activations (`None`: refused with 503).
    pub asynchronous: Option<AsyncSettings>,
    /// HTTP connections.
    pub http: HttpSettings,
    /// Event streams.
    pub sse: SseSettings,
    /// Durable history in JetStream; `None` relays live only.
    pub stream: Option<StreamSettings>,
    /// The JetStream stream keeping finished activations for the inspector; `None`
    /// keeps the newest in memory.
    pub activations: Option<StreamSettings>,
    /// Link to a trace in the tracing UI, `{trace_id}` replaced by the trace id (for
    /// example `http://localhost:16686/trace/{trace_id}`); no links when absent.
    pub trace_url: Option<String>,
    /// Topology discovery.
    pub discovery: DiscoverySettings,
}

/// HTTP connection limits.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// Most connections at once (keep it below the file descriptor limit); more are
    /// answered 503 and closed.
    pub max_connections: usize,
    /// Longest a new connection may take to send its first request head.
    pub header_timeout: Duration,
    /// A connection with nothing read or written this long is closed (event streams
    /// write a keep-alive comment more often).
    pub idle_timeout: Duration,
}

/// Event stream settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SseSettings {
    /// Interval of `: keep-alive` comments on idle streams.
    pub keepalive: Duration,
    /// Reconnection delay suggested to clients (`retry:`).
    pub retry: Duration,
    /// Most clients at once; more get 503.
    pub max_clients: usize,
    /// Events a client may fall behind before it is caught up from history.
    pub buffer: usize,
    /// Events kept in memory for `Last-Event-ID`.
    pub history: usize,
    /// Bytes of events kept in memory for `Last-Event-ID`.
    pub history_bytes: usize,
    /// Largest status message relayed, in bytes; larger ones are refused and counted
    /// (and the stream refuses to store them).
    pub max_event_bytes: usize,
    /// What one replay from the stream (for `Last-Event-ID`) may send, and how many
    /// run at once.
    pub replay: ReplayLimits,
}

/// The JetStream stream keeping status events.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSettings {
    /// Its name (created when missing).
    pub name: String,
    /// Oldest event it keeps.
    pub max_age: Duration,
    /// Most bytes it keeps.
    pub max_bytes: u64,
    /// Copies kept in a NATS cluster (1 on a single server; 3 survives losing a server).
    pub replicas: usize,
}

/// Topology discovery settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoverySettings {
    /// Interval between two `$SRV.INFO` rounds.
    pub interval: Duration,
    /// How long one round waits for answers.
    pub window: Duration,
}

impl Default for Settings {
    /// The defaults of the `gateway` command line (a test in `src/bin/gateway.rs` holds
    /// the two together).
    fn default() -> Self {
        Self {
            // "UI" is a valid name.
            entry_node: NodeName::new("UI").unwrap_or_else(|_| unreachable!()),
            gateway_id: None,
            activate_timeout: Duration::from_millis(5_000),
            api_token: None,
            read_token: None,
            cors_origins: Vec::new(),
            max_body_bytes: 16 * 1024,
            max_module_bytes: 16 * 1024 * 1024,
            asynchronous: Some(AsyncSettings::default()),
            http: HttpSettings {
                max_connections: 10_000,
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
            },
            sse: SseSettings {
                keepalive: Duration::from_secs(15),
                retry: Duration::from_secs(2),
                max_clients: 20_000,
                buffer: 1024,
                history: 4096,
                history_bytes: 8 * 1024 * 1024,
                max_event_bytes: 4096,
                replay: Default::default(),
            },
            stream: Some(StreamSettings {
                name: "MESH_STATUS".into(),
                max_age: Duration::from_secs(3600),
                max_bytes: 64 * 1024 * 1024,
                replicas: 1,
            }),
            activations: Some(StreamSettings {
                name: "MESH_ACTIVATIONS".into(),
                max_age: Duration::from_secs(3600),
                max_bytes: 64 * 1024 * 1024,
                replicas: 1,
            }),
            trace_url: None,
            discovery: DiscoverySettings {
                interval: Duration::from_millis(5_000),
                window: Duration::from_millis(300),
            },
        }
    }
}

/// What one replay may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Most events one replay sends.
    pub events: usize,
    /// Most bytes (of stored events) one replay sends.
    pub bytes: usize,
    /// Replays running at once (each holds a JetStream consumer while it reads).
    pub at_once: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            events: 10_000,
            bytes: 1024 * 1024,
            at_once: 8,
        }
    }
}

/// Asynchronous activations: the queue's limits, retries, and this gateway's share of
/// the work.
#[derive(Clone, Debug, PartialEq)]
pub struct AsyncSettings {
    /// Most activations waiting at once (more: 503).
    pub max_queued: i64,
    /// Most bytes waiting, and most bytes of records kept.
    pub max_bytes: i64,
    /// How long an activation may wait, and how long its record is kept.
    pub max_age: Duration,
    /// Attempts before an activation is dead.
    pub max_attempts: u32,
    /// The pause before the second attempt; doubled for each further one.
    pub backoff: Duration,
    /// The longest pause between two attempts.
    pub backoff_max: Duration,
    /// Activations this gateway runs at once (0: it takes none).
    pub workers: usize,
    /// How long a running attempt goes without a sign of life from its gateway before
    /// another gateway gets it.
    pub ack_wait: Duration,
    /// Activations running at once across every gateway.
    pub max_ack_pending: i64,
    /// How long an `Idempotency-Key` names its activation.
    pub idempotency_window: Duration,
    /// Copies of the queue and buckets in a cluster.
    pub replicas: usize,
    /// URL prefixes an `X-Callback-Url` may start with (none: callbacks are refused).
    pub callback_allow: Vec<String>,
    /// Asynchronous activations of one node this gateway runs at once; more wait in the
    /// queue (without counting an attempt).
    pub node_concurrency: usize,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            max_queued: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            workers: 256,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1024,
            idempotency_window: Duration::from_secs(24 * 3600),
            replicas: 1,
            callback_allow: Vec::new(),
            node_concurrency: 64,
        }
    }
}
