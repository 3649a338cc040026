//! Event streams without hyper: a connection whose first request is `GET /events` is
//! answered here, straight on the socket.
//!
//! The request still goes through every route, middleware and handler (auth, CORS,
//! filters, `Last-Event-ID`, limits, spans, metrics): it is handed to the same endpoint
//! as any other. Only the connection is ours: its head is parsed with `httparse`, the
//! response head is written once, and the event stream's chunks go to the socket as they
//! come, close-delimited (`connection: close`, no chunked framing). That spares each
//! stream hyper's per-connection buffers (8 KiB read, and a write buffer) and a layer of
//! framing per write, and a client that closes is seen at once (the socket is read while
//! the stream is written; hyper does not read a connection while it streams a body).
//!
//! Every other connection (and any request that is not exactly `GET /events…`) goes to
//! hyper unchanged, with the bytes already read put back in front.

use std::{
    io,
    pin::{pin, Pin},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use poem::{
    endpoint::BoxEndpoint,
    http::{self, header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version},
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
    Body, Endpoint, Request, RequestParts,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    sync::mpsc,
};

/// The request line's start this module answers.
const EVENTS: &[u8] = b"GET /events";

/// A head longer than this is left to hyper (which answers it within its own limit).
const MAX_HEAD: usize = 64 * 1024;

/// Most headers parsed here; a request with more is left to hyper.
const MAX_HEADERS: usize = 64;

type Accepted<Io> = (Prefixed<Io>, LocalAddr, RemoteAddr, http::uri::Scheme);

/// An acceptor that serves `GET /events` connections itself and yields every other one
/// (see the module documentation).
pub struct EventsFirst<Io> {
    rx: mpsc::Receiver<io::Result<Accepted<Io>>>,
    local: Vec<LocalAddr>,
}

impl<Io> EventsFirst<Io>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    /// Accepts from `inner` in a task of its own; `endpoint` answers the event streams.
    /// The task ends when this acceptor is dropped.
    pub fn new<A>(inner: A, endpoint: Arc<BoxEndpoint<'static>>) -> Self
    where
        A: Acceptor<Io = Io> + 'static,
    {
        let local = inner.local_addr();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(inner, endpoint, tx));
        Self { rx, local }
    }
}

impl<Io> Acceptor for EventsFirst<Io>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Io = Prefixed<Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.local.clone()
    }

    async fn accept(&mut self) -> io::Result<Accepted<Io>> {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            None => Err(io::Error::other("the accepting task ended")),
        }
    }
}

async fn accept_loop<A>(
    mut inner: A,
    endpoint: Arc<BoxEndpoint<'static>>,
    tx: mpsc::Sender<io::Result<Accepted<A::Io>>>,
) where
    A: Acceptor,
    A::Io: Unpin,
{
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = inner.accept() => accepted,
        };
        let (io, local, remote, scheme) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let (tx, endpoint) = (tx.clone(), endpoint.clone());
        tokio::spawn(async move {
            match sniff(io).await {
                Sniffed::Events(io, parts) => {
                    let parts = RequestParts::from((*parts, local, remote, scheme));
                    serve(io, Request::from_parts(parts, Body::empty()), &endpoint).await;
                }
                Sniffed::Other(io) => {
                    let _ = tx.send(Ok((io, local, remote, scheme))).await;
                }
                Sniffed::Gone => {}
            }
        });
    }
}

/// What a connection's first bytes say.
enum Sniffed<Io> {
    /// `GET /events`, with its head.
    Events(Io, Box<http::request::Parts>),
    /// Anything else: for hyper, with what was read.
    Other(Prefixed<Io>),
    /// Closed (or failed, or timed out) before sending anything.
    Gone,
}

/// What the bytes read so far decide.
#[derive(Debug)]
enum Decision {
    Events(Box<http::request::Parts>),
    Other,
    More,
}

async fn sniff<Io: AsyncRead + Unpin>(mut io: Io) -> Sniffed<Io> {
    let mut read = Vec::with_capacity(1024);
    loop {
        if read.len() == read.capacity() {
            read.reserve(read.len());
        }
        match io.read_buf(&mut read).await {
            Ok(0) | Err(_) if read.is_empty() => return Sniffed::Gone,
            Ok(0) | Err(_) => return Sniffed::Other(Prefixed::new(io, read)),
            Ok(_) => {}
        }
        match decide(&read) {
            Decision::Events(parts) => return Sniffed::Events(io, parts),
            Decision::Other => return Sniffed::Other(Prefixed::new(io, read)),
            Decision::More if read.len() >= MAX_HEAD => {
                return Sniffed::Other(Prefixed::new(io, read))
            }
            Decision::More => {}
        }
    }
}

/// Whether `read` (a connection's first bytes) is a complete `GET /events` head, cannot
/// be one, or may still become one.
fn decide(read: &[u8]) -> Decision {
    let start = &read[..read.len().min(EVENTS.len())];
    if !EVENTS.starts_with(start) {
        return Decision::Other;
    }
    match read.get(EVENTS.len()) {
        None => return Decision::More,
        Some(b' ' | b'?') => {}
        Some(_) => return Decision::Other,
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(read) {
        Ok(httparse::Status::Complete(_)) => {
            parts(&request).map_or(Decision::Other, Decision::Events)
        }
        Ok(httparse::Status::Partial) => Decision::More,
        // Malformed, or too many headers: hyper gives its own answer.
        Err(_) => Decision::Other,
    }
}

/// The parsed head as `http` parts; `None` when a part is not valid HTTP.
fn parts(request: &httparse::Request<'_, '_>) -> Option<Box<http::request::Parts>> {
    let version = match request.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut builder = http::Request::builder()
        .method(Method::GET)
        .uri(request.path?)
        .version(version);
    for h in request.headers.iter() {
        builder = builder.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(Box::new(builder.body(()).ok()?.into_parts().0))
}

/// Answers `request` with `endpoint`: an event stream is written as it comes until the
/// stream ends or the client leaves; any other answer is written whole. Then the
/// connection is closed.
async fn serve<Io>(mut io: Io, request: Request, endpoint: &BoxEndpoint<'static>)
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let response = endpoint.get_response(request).await;
    let streaming = response.status() == StatusCode::OK
        && response
            .content_type()
            .is_some_and(|t| t.starts_with("text/event-stream"));
    let (parts, body) = response.into_parts();
    if streaming {
        let head = head(parts.status, &parts.headers, None);
        if io.write_all(&head).await.is_ok() {
            pump(&mut io, pin!(body.into_bytes_stream())).await;
        }
    } else {
        // Refusals (400, 401, 403, 503): a small JSON body.
        let body = body.into_bytes().await.unwrap_or_default();
        let head = head(parts.status, &parts.headers, Some(body.len()));
        let _ = async {
            io.write_all(&head).await?;
            io.write_all(&body).await
        }
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Writes `body`'s chunks to `io` until the body ends, a write fails, or the client
/// closes its side (what it sends meanwhile is read and dropped).
async fn pump<Io, S>(io: &mut Io, mut body: Pin<&mut S>)
where
    Io: AsyncRead + AsyncWrite + Unpin,
    S: Stream<Item = io::Result<Bytes>>,
{
    let mut scratch = [0u8; 64];
    loop {
        let chunk = tokio::select! {
            biased;
            chunk = body.next() => chunk,
            read = io.read(&mut scratch) => match read {
                Ok(n) if n > 0 => continue,
                _ => return,
            },
        };
        match chunk {
            Some(Ok(chunk)) if io.write_all(&chunk).await.is_ok() => {}
            _ => return,
        }
    }
}

/// A response head: status line, `date`, the response's headers, the body's length
/// when known, `connection: close`.
fn head(status: StatusCode, headers: &HeaderMap, content_length: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if [
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ]
        .contains(name)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// A connection with the bytes already read from it put back in front.
pub struct Prefixed<Io> {
    inner: Io,
    prefix: Vec<u8>,
    at: usize,
}

impl<Io> Prefixed<Io> {
    fn new(inner: Io, prefix: Vec<u8>) -> Self {
        Self {
            inner,
            prefix,
            at: 0,
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Prefixed<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Prefixed<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(head: &str) -> &'static str {
        match decide(head.as_bytes()) {
            Decision::Events(_) => "events",
            Decision::Other => "other",
            Decision::More => "more",
        }
    }

    #[test]
    fn only_a_complete_get_events_head_is_taken() {
        assert_eq!(decided("GET /events HTTP/1.1\r\nhost: x\r\n\r\n"), "events");
        assert_eq!(
            decided("GET /events?node=A&node=B HTTP/1.0\r\n\r\n"),
            "events"
        );
        assert_eq!(decided("GET /ev"), "more");
        assert_eq!(decided("GET /events"), "more");
        assert_eq!(decided("GET /events HTTP/1.1\r\nhost: x\r\n"), "more");
        assert_eq!(decided("POST /events HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(decided("GET /eventsx HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(decided("GET /topology HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(decided("HEAD /events HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(decided("G"), "more");
        assert_eq!(decided("X"), "other");
        // Malformed: hyper answers it.
        assert_eq!(decided("GET /events HTTP/9.9\r\n\r\n"), "other");
        assert_eq!(
            decided("GET /events HTTP/1.1\r\nbad header\r\n\r\n"),
            "other"
        );
    }

    #[test]
    fn the_parsed_head_keeps_query_version_and_headers() {
        let Decision::Events(parts) =
            decide(b"GET /events?node=A HTTP/1.0\r\nLast-Event-ID: 7\r\nOrigin: http://x\r\n\r\n")
        else {
            panic!("not taken");
        };
        assert_eq!(parts.uri.path(), "/events");
        assert_eq!(parts.uri.query(), Some("node=A"));
        assert_eq!(parts.version, Version::HTTP_10);
        assert_eq!(parts.headers["last-event-id"], "7");
        assert_eq!(parts.headers["origin"], "http://x");
    }

    #[test]
    fn the_response_head_is_close_delimited_or_sized() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        let text = String::from_utf8(head(StatusCode::OK, &headers, None)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{text}");
        assert!(text.contains("\r\ncontent-type: text/event-stream\r\n"));
        assert!(text.ends_with("\r\nconnection: close\r\n\r\n"));
        assert!(!text.contains("keep-alive"));
        let sized =
            String::from_utf8(head(StatusCode::SERVICE_UNAVAILABLE, &headers, Some(12))).unwrap();
        assert!(sized.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(sized.contains("\r\ncontent-length: 12\r\n"));
    }

    #[tokio::test]
    async fn what_was_read_is_read_again_first() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = Prefixed::new(server, b"hello".to_vec());
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
