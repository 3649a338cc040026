use std::{pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use gateway::{Gateway, Settings as GatewaySettings, State};
use handlers::{runtime::Running, NodeSpec, Settings};
use mesh_core::bus::NatsArgs;
use poem::listener::{Acceptor, Listener, TcpListener};
pub use testsupport::{
    eventually,
    nodes::{name, seed_zero_work, spec},
    NatsServer, Proc, Signal,
};
use tokio::sync::oneshot;

/// The `handlers` binary built beside the gateway's.
pub fn handlers_bin() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_gateway"))
        .parent()
        .unwrap()
        .join("handlers")
}

pub struct App {
    pub server: NatsServer,
    pub _nodes: Option<Running>,
    pub state: Arc<State>,
    pub base: String,
    pub http: reqwest::Client,
    pub nats: async_nats::Client,
    gateway_handle: Gw,
}

/// A gateway serving real HTTP on a free port; dropped, it stops.
pub struct Gw {
    pub base: String,
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Gw {
    /// A gateway on the NATS server at `url` (discovery every 200 ms unless `tweak`
    /// says otherwise).
    pub async fn start(url: &str, tweak: impl FnOnce(&mut GatewaySettings)) -> Self {
        let mut config = GatewaySettings::default();
        config.discovery.interval = Duration::from_millis(200);
        config.discovery.window = Duration::from_millis(100);
        tweak(&mut config);
        let client = NatsArgs::for_url(url)
            .connect("test gateway")
            .await
            .unwrap();
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let gateway = Gateway::start(config, client).await.unwrap();
        let state = gateway.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(gateway.serve(acceptor, async {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            state,
            stop: Some(stop),
        }
    }

    /// Opens `GET /events` with `query` (e.g. `?node=V`), resuming after `last`.
    pub async fn sse(&self, query: &str, last: Option<&str>) -> Sse {
        self.sse_via(Transport::Direct, query, last).await
    }

    /// As [`Gw::sse`], through `transport`; fails unless that transport answered.
    pub async fn sse_via(&self, transport: Transport, query: &str, last: Option<&str>) -> Sse {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        if transport == Transport::Hyper {
            // The connection's first request is another: hyper serves what follows.
            let health = client.get(format!("{}/healthz", self.base)).send().await;
            health.unwrap().bytes().await.unwrap();
        }
        let mut request = client.get(format!("{}/events{query}", self.base));
        if let Some(id) = last {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        // The direct path delimits the stream by closing; hyper chunks it.
        let chunked = response.headers().get("transfer-encoding").is_some();
        assert_eq!(chunked, transport == Transport::Hyper, "{transport:?}");
        Sse::from_response(response)
    }
}

/// A nats-server, `nodes` served on it, and a gateway on a free port; discovery runs
/// every 200 ms. Returns once the gateway has discovered every node.
pub async fn spawn_app(nodes: Vec<NodeSpec>, tweak: impl FnOnce(&mut GatewaySettings)) -> App {
    let server = NatsServer::start();
    spawn_on(server, nodes, tweak).await
}

pub async fn spawn_on(
    server: NatsServer,
    nodes: Vec<NodeSpec>,
    tweak: impl FnOnce(&mut GatewaySettings),
) -> App {
    let url = server.url();
    spawn_on_url(server, &url, nodes, tweak).await
}

/// As [`spawn_on`], with the gateway connecting to `url` (a list of cluster servers).
pub async fn spawn_on_url(
    server: NatsServer,
    url: &str,
    nodes: Vec<NodeSpec>,
    tweak: impl FnOnce(&mut GatewaySettings),
) -> App {
    let expected = nodes.len();
    let running = if nodes.is_empty() {
        None
    } else {
        let client = async_nats::connect(server.url()).await.unwrap();
        Some(
            Running::start(client, nodes, Settings::default())
                .await
                .unwrap(),
        )
    };
    let gateway = Gw::start(url, tweak).await;
    let nats = async_nats::connect(server.url()).await.unwrap();
    let app = App {
        server,
        _nodes: running,
        state: gateway.state.clone(),
        base: gateway.base.clone(),
        http: reqwest::Client::new(),
        nats,
        gateway_handle: gateway,
    };
    if expected > 0 {
        app.wait_for_nodes(expected).await;
    }
    app
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` to /activate; returns the status and JSON body.
    pub async fn activate(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.activate_response(body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// POSTs `body` to /activate; returns the whole response (for its headers).
    pub async fn activate_response(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/activate"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` as JSON (with the read token, when the gateway has one).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = &self.state.settings.read_token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Waits until `GET /topology` lists `count` serving nodes.
    pub async fn wait_for_nodes(&self, count: usize) -> serde_json::Value {
        eventually("topology discovery", Duration::from_secs(30), || async {
            let (_, t) = self.get_json("/topology").await;
            let serving = t["nodes"]
                .as_array()?
                .iter()
                .filter(|n| !n["instances"].as_array().unwrap().is_empty())
                .count();
            (serving == count).then_some(t)
        })
        .await
    }

    /// Opens `GET /events` with `query` (e.g. `?node=V`), resuming after `last`.
    pub async fn sse(&self, query: &str, last: Option<&str>) -> Sse {
        self.gateway_handle.sse(query, last).await
    }

    /// As [`App::sse`], through `transport`.
    pub async fn sse_via(&self, transport: Transport, query: &str, last: Option<&str>) -> Sse {
        self.gateway_handle.sse_via(transport, query, last).await
    }
}

/// Which transport writes an event stream: the gateway's own, on a connection whose
/// first request is `GET /events`, or hyper's, on a kept-alive connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Direct,
    Hyper,
}

/// One SSE frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub comment: Option<String>,
}

impl Frame {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// A reader of a real SSE response.
pub struct Sse {
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl Sse {
    /// Reads the stream of a successful `/events` response.
    pub fn from_response(response: reqwest::Response) -> Self {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Sse {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next frame within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.ok()?).unwrap());
        }
    }

    /// The next `event: <kind>` frame within `limit`, skipping others.
    pub async fn next_of(&mut self, kind: &str, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next(left).await?;
            if frame.event.as_deref() == Some(kind) {
                return Some(frame);
            }
        }
    }

    /// `count` status frames, each within `limit`.
    pub async fn statuses(&mut self, count: usize, limit: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while out.len() < count {
            match self.next_of("status", limit).await {
                Some(f) => out.push(f),
                None => panic!("only {} of {count} status events arrived", out.len()),
            }
        }
        out
    }
}

fn parse(block: &str) -> Frame {
    let mut frame = Frame::default();
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            frame.comment = Some(c.trim().to_string());
        } else if let Some(v) = line.strip_prefix("id: ") {
            frame.id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("event: ") {
            frame.event = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            frame.data.push_str(v);
        } else if let Some(v) = line.strip_prefix("retry: ") {
            frame.retry = v.parse().ok();
        }
    }
    frame
}
