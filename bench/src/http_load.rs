//! The HTTP load generator: HTTP/1.1 over kept-alive connections, one per request in
//! flight, straight on hyper's client connection (no pool lookups, no redirect or
//! decompression layers). On 2 shared cores the load generator's CPU is taken from the
//! processes under test: this one costs about what the NATS client costs for the same
//! activations, so a ratio of the two compares the gateway with the bus, not two clients.

use std::{net::SocketAddr, sync::Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{client::conn::http1, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Connections to one server, each used by one request at a time.
pub struct Connections {
    addr: SocketAddr,
    host: String,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
}

impl Connections {
    /// Connections to the server at `base`, `http://host:port` (made as needed).
    pub fn to(base: &str) -> Self {
        let addr: SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("{base} is not http://host:port: {e}"));
        Self {
            addr,
            host: addr.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `method` `path` with `body` (JSON when not empty) and reads the whole
    /// answer: its status and body.
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        body: &'static [u8],
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut sender = match idle {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if !body.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::from_static(body)))?)
            .await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sender);
        Ok((status, bytes))
    }

    async fn connect(&self) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }
}
