//! The HTTP listener's limits: a connection limit kept below the process's file
//! descriptor limit, a deadline for a new connection's first request head, an idle
//! timeout, and a back-off instead of a busy loop when accepting fails (out of
//! descriptors).
//!
//! Connections over the limit are answered `503` and closed at once, so the listener
//! keeps taking the backlog instead of leaving clients hanging in it.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use poem::{
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Sent on connections over the limit.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 72\r\n\r\n{\"error\":\"too_many_connections\",\"message\":\"too many connections; retry\"}";

/// Longest pause between two failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// An acceptor within limits (see the module documentation).
pub struct Limited<A> {
    inner: A,
    permits: Arc<Semaphore>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl<A> Limited<A> {
    /// At most `max_connections` connections at once; a new connection's first request
    /// head must arrive within `header_timeout`; a connection with nothing read or
    /// written for `idle_timeout` is closed.
    pub fn new(
        inner: A,
        max_connections: usize,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            header_timeout,
            idle_timeout,
        }
    }
}

impl<A> Acceptor for Limited<A>
where
    A: Acceptor,
    A::Io: AsyncWrite + Unpin,
{
    type Io = Guarded<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.inner.accept().await {
                Ok((mut io, local, remote, scheme)) => {
                    let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                        tracing::debug!(%remote, "connection over the limit: 503");
                        tokio::spawn(async move {
                            let answer = io.write_all(OVER_LIMIT);
                            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
                            let _ = io.shutdown().await;
                        });
                        continue;
                    };
                    let io = Guarded::new(io, permit, self.header_timeout, self.idle_timeout);
                    return Ok((io, local, remote, scheme));
                }
                Err(e) => {
                    // Out of file descriptors (or memory): accepting again at once would
                    // spin. Connections in the backlog wait meanwhile.
                    tracing::warn!(cause = %e, pause_ms = backoff.as_millis() as u64, "cannot accept a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// A connection holding its place under the limit, with the deadline of its first
/// request head, then an idle timeout.
///
/// The idle timeout costs one clock read per read or write: the timer is only looked at
/// when the connection waits (a read or write pending), and moved then to the last
/// activity plus the timeout. (A timer reset, or a task woken, on every write would cost
/// as much again as the write itself when thousands of event streams are written.)
pub struct Guarded<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    /// Until the first request head has been read.
    head_pending: bool,
    /// The head deadline, then the idle deadline (moved lazily).
    timer: Pin<Box<Sleep>>,
    idle: Duration,
    last_activity: Instant,
    /// The last bytes read, to find the end of the head across reads.
    tail: [u8; 3],
    /// Bytes read already and put back: read again first.
    unread: Vec<u8>,
}

impl<T> Guarded<T> {
    fn new(
        inner: T,
        permit: OwnedSemaphorePermit,
        header_timeout: Duration,
        idle: Duration,
    ) -> Self {
        Self {
            inner,
            _permit: permit,
            head_pending: true,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            idle,
            last_activity: Instant::now(),
            tail: [0; 3],
            unread: Vec::new(),
        }
    }

    /// Puts `read` (bytes read from the connection) back in front: the next reads
    /// return them first.
    pub fn put_back(&mut self, mut read: Vec<u8>) {
        read.append(&mut self.unread);
        self.unread = read;
    }

    /// The connection and its place under the limit (kept as long as the connection).
    pub fn into_parts(self) -> (T, OwnedSemaphorePermit) {
        (self.inner, self._permit)
    }

    /// Looks for the blank line ending the head in `read`; ends the head deadline there.
    fn scan(&mut self, read: &[u8]) {
        let mut window = Vec::with_capacity(3 + read.len().min(64 * 1024));
        window.extend_from_slice(&self.tail);
        window.extend_from_slice(read);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.head_pending = false;
            return;
        }
        let keep = window.len().min(3);
        self.tail = [0; 3];
        self.tail[3 - keep..].copy_from_slice(&window[window.len() - keep..]);
    }

    /// Whether the connection has waited too long: for its head, or idle. Registers the
    /// timer with `cx` when not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.head_pending {
                return true;
            }
            let due = self.last_activity + self.idle;
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
    }

    fn timed_out(&self) -> io::Error {
        let what = if self.head_pending {
            "no request head in time"
        } else {
            "connection idle too long"
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.drain(..n);
            if this.unread.is_empty() {
                this.unread = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.last_activity = Instant::now();
                if this.head_pending {
                    let read = buf.filled()[before..].to_vec();
                    this.scan(&read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> Guarded<T> {
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                self.last_activity = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(self.timed_out())),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, written)
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
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_idle_connection_times_out_and_activity_keeps_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let permits = Arc::new(Semaphore::new(2));
        let (secs, idle) = (Duration::from_secs(1), Duration::from_secs(5));

        // No head at all: closed at the head deadline.
        let (_client, server) = tokio::io::duplex(64);
        let mut silent = Guarded::new(
            server,
            permits.clone().try_acquire_owned().unwrap(),
            secs,
            idle,
        );
        let started = Instant::now();
        let e = silent.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(e.to_string(), "no request head in time");
        assert_eq!(started.elapsed().as_secs(), 1);

        // A head, then a write 3 s later: closed 5 s after that write, not before.
        let (mut client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(server, permits.try_acquire_owned().unwrap(), secs, idle);
        let started = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0; 64];
        assert!(g.read(&mut buf).await.unwrap() > 0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        g.write_all(b"x").await.unwrap();
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.to_string(), "connection idle too long");
        assert_eq!(started.elapsed().as_secs(), 8);
    }

    #[tokio::test]
    async fn bytes_put_back_are_read_again_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = Guarded::new(
            server,
            permit,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        io.put_back(b"hello".to_vec());
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn the_head_is_found_across_reads() {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let mut g = Guarded::new((), permit, Duration::from_secs(1), Duration::from_secs(60));
        g.scan(b"GET / HTTP/1.1\r\nhost: x\r");
        assert!(g.head_pending);
        g.scan(b"\n\r");
        assert!(g.head_pending);
        g.scan(b"\n");
        assert!(!g.head_pending);
    }
}
