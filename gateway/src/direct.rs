//! Event streams without hyper: a connection whose first request is `GET /events` is
//! answered here, straight on the socket.
//!
//! The request still goes through every route, middleware and handler (auth, CORS,
//! filters, `Last-Event-ID`, limits, spans, metrics): it is handed to the same endpoint
//! as any other. Only the connection is ours: its head is parsed with `httparse`, the
//! response head is written once, and the event stream's chunks go to the socket as they
//! come, close-delimited (`connection: close`, no chunked framing). That spares each
//! stream hyper's per-connection buffers (8 KiB read, and a write buffer) and a layer of
//! framing per write, and a client that resets its connection is seen at once (the
//! socket is read while the stream is written; hyper does not read a connection while it
//! streams a body). A half-closed client is written on until a write fails.
//!
//! The stream itself is written by the connection's task until it is caught up and
//! idle, then by the [`Hub`], which writes each event to every such client from one
//! task per runtime thread; a client the hub cannot write to comes back to its task (see
//! [`crate::sse::hub`]).
//!
//! Every other connection (and any request that is not exactly `GET /events…`) goes to
//! hyper unchanged, with the bytes already read put back in front
//! ([`Guarded::put_back`]).

use std::{
    io,
    pin::{pin, Pin},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use poem::{
    endpoint::BoxEndpoint,
    http::{self, header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version},
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
    Body, Endpoint, Request, RequestParts,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::TcpStream,
    sync::mpsc,
};

use crate::{
    listener::{Guarded, Limited},
    sse::{
        hub::Hub,
        session::{Handoff, Session},
    },
};

/// The request line's start this module answers.
const EVENTS: &[u8] = b"GET /events";

/// A head longer than this is left to hyper (which answers it within its own limit).
const MAX_HEAD: usize = 64 * 1024;

/// Most headers parsed here; a request with more is left to hyper.
const MAX_HEADERS: usize = 64;

type Io = Guarded<TcpStream>;
type Accepted = (Io, LocalAddr, RemoteAddr, http::uri::Scheme);

/// What answers and writes event streams.
#[derive(Clone)]
pub struct Streams {
    /// Every route (the events operation among them).
    pub endpoint: Arc<BoxEndpoint<'static>>,
    /// Writes the streams that keep up.
    pub hub: Arc<Hub>,
    /// A write that waits longer than this ends the stream.
    pub idle: Duration,
}

/// An acceptor that serves `GET /events` connections itself and yields every other one
/// (see the module documentation).
pub struct EventsFirst {
    rx: mpsc::Receiver<io::Result<Accepted>>,
    local: Vec<LocalAddr>,
}

impl EventsFirst {
    /// Accepts from `inner` in a task of its own; `streams` answers the event streams.
    /// The task ends when this acceptor is dropped.
    pub fn new(inner: Limited<TcpAcceptor>, streams: Streams) -> Self {
        let local = inner.local_addr();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(inner, streams, tx));
        Self { rx, local }
    }
}

impl Acceptor for EventsFirst {
    type Io = Io;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.local.clone()
    }

    async fn accept(&mut self) -> io::Result<Accepted> {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            None => Err(io::Error::other("the accepting task ended")),
        }
    }
}

async fn accept_loop(
    mut inner: Limited<TcpAcceptor>,
    streams: Streams,
    tx: mpsc::Sender<io::Result<Accepted>>,
) {
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
        let (tx, streams) = (tx.clone(), streams.clone());
        tokio::spawn(async move {
            match sniff(io).await {
                Sniffed::Events(io, parts) => {
                    let parts = RequestParts::from((*parts, local, remote, scheme));
                    serve(io, Request::from_parts(parts, Body::empty()), &streams).await;
                }
                Sniffed::Other(mut io, read) => {
                    io.put_back(read);
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
    Other(Io, Vec<u8>),
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
            Ok(0) | Err(_) => return Sniffed::Other(io, read),
            Ok(_) => {}
        }
        match decide(&read) {
            Decision::Events(parts) => return Sniffed::Events(io, parts),
            Decision::Other => return Sniffed::Other(io, read),
            Decision::More if read.len() >= MAX_HEAD => return Sniffed::Other(io, read),
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

/// Answers `request` with the endpoint: an event stream is written as it comes until
/// the stream ends or the client leaves; any other answer is written whole. Then the
/// connection is closed.
async fn serve(io: Io, mut request: Request, streams: &Streams) {
    let handoff = Handoff::default();
    request.extensions_mut().insert(handoff.clone());
    let response = streams.endpoint.get_response(request).await;
    let streaming = response.status() == StatusCode::OK
        && response
            .content_type()
            .is_some_and(|t| t.starts_with("text/event-stream"));
    let (mut parts, body) = response.into_parts();
    let (socket, _permit) = io.into_parts();
    let socket = Arc::new(socket);
    if let (true, Some(cause)) = (streaming, unwritable(&parts.headers)) {
        // A middleware wants the body transformed: this path writes the session's own
        // bytes, so it refuses rather than send them under a wrong header.
        tracing::error!(cause, "an event stream this gateway cannot write as asked");
        let body = format!(r#"{{"error":"internal","message":"{cause}"}}"#);
        parts.headers.clear();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let head = head(
            StatusCode::INTERNAL_SERVER_ERROR,
            &parts.headers,
            Some(body.len()),
        );
        let _ = async {
            write_all(&socket, &head, streams.idle).await?;
            write_all(&socket, body.as_bytes(), streams.idle).await
        }
        .await;
        return;
    }
    if streaming {
        let head = head(parts.status, &parts.headers, None);
        if write_all(&socket, &head, streams.idle).await.is_ok() {
            match handoff.take() {
                Some(session) => drive(session, &socket, streams).await,
                // Not the events operation's stream (a route in front answered).
                None => pump(&socket, pin!(body.into_bytes_stream()), streams.idle).await,
            }
        }
    } else {
        // Refusals (400, 401, 403, 503): a small JSON body.
        let body = body.into_bytes().await.unwrap_or_default();
        let head = head(parts.status, &parts.headers, Some(body.len()));
        let _ = async {
            write_all(&socket, &head, streams.idle).await?;
            write_all(&socket, &body, streams.idle).await
        }
        .await;
    }
    // Closed when the last holder (this task, or a hub shard) lets go of it.
}

/// Why an event stream with these response headers cannot be written here, if it
/// cannot: the session's frames go to the socket as they are, so a response whose
/// body a middleware would encode (`content-encoding`, a transfer coding) is refused.
fn unwritable(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(header::CONTENT_ENCODING) {
        return Some(
            "the event stream would need a content-encoding, which its frames do not have",
        );
    }
    let chunked_only = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    (!chunked_only).then_some("the event stream would need a transfer coding other than chunked")
}

/// Writes `session`'s stream to `socket`: this task writes until the stream is caught
/// up and idle, then the hub does, until it hands the stream back; until the stream
/// ends, the client leaves or a write fails. A client that half-closes (it sent its
/// FIN, and may still read) is probed once, by this task: a client that has really
/// gone answers the first keep-alive with a reset, and the second write fails.
async fn drive(mut session: Session, socket: &Arc<TcpStream>, streams: &Streams) {
    let mut half_closed = false;
    let mut probed = false;
    loop {
        let cursor = loop {
            if half_closed && !probed {
                probed = true;
                if !still_reading(socket, streams.idle).await {
                    return;
                }
            }
            if let Some(parked) = session.park() {
                break parked;
            }
            let chunk = tokio::select! {
                chunk = session.next_chunk() => chunk,
                ended = closed(socket), if !half_closed => match ended {
                    Ended::Failed => return,
                    Ended::HalfClosed => {
                        half_closed = true;
                        continue;
                    }
                },
            };
            let Some(chunk) = chunk else { return };
            if write_all(socket, &chunk, streams.idle).await.is_err() {
                return;
            }
        };
        let Some((membership, mut back)) = streams.hub.join(socket.clone(), cursor) else {
            return;
        };
        let returned = tokio::select! {
            returned = &mut back => returned,
            ended = closed(socket), if !half_closed => match ended {
                Ended::Failed => {
                    membership.leave();
                    return;
                }
                // Back from the hub, to be probed by this task.
                Ended::HalfClosed => {
                    half_closed = true;
                    membership.recall();
                    back.await
                }
            },
            _ = session.stopping().cancelled() => return,
        };
        let Ok(returned) = returned else { return };
        if returned.failed
            || write_all(socket, &returned.unsent, streams.idle)
                .await
                .is_err()
        {
            return;
        }
        session.resume(returned.position);
    }
}

/// Pause between the two keep-alives that tell a half-closed client from a gone one.
const PROBE_GAP: Duration = Duration::from_millis(20);

/// Whether a client that half-closed still takes writes: two keep-alive comments, a
/// moment apart (a peer that has closed answers the first with a reset).
async fn still_reading(socket: &TcpStream, idle: Duration) -> bool {
    for _ in 0..2 {
        if write_all(socket, crate::sse::frame::KEEP_ALIVE, idle)
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    true
}

/// Writes `body`'s chunks to `socket` until the body ends, a write fails, or the client
/// closes its side.
async fn pump<S>(socket: &TcpStream, mut body: Pin<&mut S>, idle: Duration)
where
    S: Stream<Item = io::Result<Bytes>>,
{
    // A half-closed client still gets the whole body; a failed write ends it.
    let mut half_closed = false;
    loop {
        let chunk = tokio::select! {
            biased;
            chunk = body.next() => chunk,
            ended = closed(socket), if !half_closed => match ended {
                Ended::Failed => return,
                Ended::HalfClosed => {
                    half_closed = true;
                    continue;
                }
            },
        };
        match chunk {
            Some(Ok(chunk)) if write_all(socket, &chunk, idle).await.is_ok() => {}
            _ => return,
        }
    }
}

/// How the client ended its side.
enum Ended {
    /// The connection failed (reset).
    Failed,
    /// The client sent its FIN: it sends nothing more, but may still read.
    HalfClosed,
}

/// Completes when the client ends its side; what it sends meanwhile is read and dropped.
async fn closed(socket: &TcpStream) -> Ended {
    let mut scratch = [0u8; 64];
    loop {
        if socket.readable().await.is_err() {
            return Ended::Failed;
        }
        match socket.try_read(&mut scratch) {
            Ok(0) => return Ended::HalfClosed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Ended::Failed,
        }
    }
}

/// Writes all of `bytes`; fails when the socket does, or when it takes nothing for
/// `idle`.
async fn write_all(socket: &TcpStream, mut bytes: &[u8], idle: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(idle, socket.writable())
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client too slow"))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    fn a_stream_that_would_need_encoding_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        assert_eq!(unwritable(&headers), None);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            unwritable(&headers),
            None,
            "chunking is dropped: close-delimited"
        );
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        assert!(unwritable(&headers).is_some());
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(unwritable(&headers).is_some_and(|cause| cause.contains("content-encoding")));
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
}
