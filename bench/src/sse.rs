//! SSE fan-out: many clients on one gateway, each counting what it receives and how
//! long each event took from the node's publish (`at`) to the client.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// What one client saw.
#[derive(Default)]
pub struct Seen {
    /// Status events received.
    pub received: u64,
    /// `event: lagged` notices.
    pub lagged: u64,
    /// Whether ids only increased.
    pub in_order: bool,
    /// Publish-to-receive latencies, microseconds.
    pub latencies_us: Vec<u32>,
}

/// Connects to `addr`'s `/events`, counts into `connected` once the stream is open,
/// then reads until `expected` status events arrived or `deadline` passes.
pub async fn client(
    addr: std::net::SocketAddr,
    connected: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    expected: Arc<AtomicUsize>,
    deadline: Arc<std::sync::Mutex<Instant>>,
) -> Seen {
    let mut seen = Seen {
        in_order: true,
        ..Seen::default()
    };
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        failed.fetch_add(1, Ordering::Relaxed);
        return seen;
    };
    // HTTP/1.0: the body is close-delimited, so the bytes are the SSE stream itself.
    if stream
        .write_all(b"GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .is_err()
    {
        failed.fetch_add(1, Ordering::Relaxed);
        return seen;
    }
    let mut buffer = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    let mut open = false;
    let mut last_id = 0u64;
    // One timer per client, not one per read: when it fires, the deadline may have
    // moved (the run started late, or is over).
    let first = *deadline.lock().unwrap_or_else(|p| p.into_inner());
    let timer = tokio::time::sleep_until(first);
    tokio::pin!(timer);
    loop {
        let want = expected.load(Ordering::Relaxed) as u64;
        if want > 0 && seen.received >= want {
            break;
        }
        let read = tokio::select! {
            read = stream.read(&mut chunk) => match read {
                Ok(n) if n > 0 => n,
                _ => break,
            },
            () = &mut timer => {
                let limit = *deadline.lock().unwrap_or_else(|p| p.into_inner());
                if limit > Instant::now() {
                    timer.as_mut().reset(limit);
                } else if want > 0 {
                    break; // the run is over
                } else {
                    // Still waiting for the run to start.
                    timer.as_mut().reset(Instant::now() + std::time::Duration::from_secs(1));
                }
                continue;
            }
        };
        let received_at = OffsetDateTime::now_utc();
        buffer.extend_from_slice(&chunk[..read]);
        // Every whole frame in the buffer, read in place; the rest waits for more.
        let mut from = 0;
        while let Some(end) = find(&buffer[from..], b"\n\n") {
            let frame = &buffer[from..from + end + 2];
            from += end + 2;
            if !open {
                open = true;
                connected.fetch_add(1, Ordering::Relaxed);
            }
            if find(frame, b"event: status\n").is_some() {
                seen.received += 1;
                if let Some(id) = field(frame, b"id: ", b"\n").and_then(|v| v.parse::<u64>().ok()) {
                    seen.in_order &= id > last_id;
                    last_id = id;
                }
                if let Some(at) = field(frame, b"\"at\":\"", b"\"") {
                    if let Ok(at) = OffsetDateTime::parse(at, &Rfc3339) {
                        let us = (received_at - at).whole_microseconds().max(0);
                        seen.latencies_us
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                }
            } else if find(frame, b"event: lagged\n").is_some() {
                seen.lagged += 1;
            }
        }
        buffer.drain(..from);
    }
    if !open {
        // Closed (or refused with an HTTP error) before the stream opened.
        failed.fetch_add(1, Ordering::Relaxed);
    }
    seen
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The text between `start` and `end` in `frame`, read in place.
fn field<'a>(frame: &'a [u8], start: &[u8], end: &[u8]) -> Option<&'a str> {
    let from = find(frame, start)? + start.len();
    let len = find(&frame[from..], end)?;
    std::str::from_utf8(&frame[from..from + len]).ok()
}
