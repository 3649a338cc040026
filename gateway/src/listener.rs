//! The HTTP listener's limits: a connection limit kept below the process's file
//! descriptor limit, a deadline for a new connection's first request head, and a
//! back-off instead of a busy loop when accepting fails (out of descriptors).
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
    time::Sleep,
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
}

impl<A> Limited<A> {
    /// At most `max_connections` connections at once; a new connection's first request
    /// head must arrive within `header_timeout`.
    pub fn new(inner: A, max_connections: usize, header_timeout: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            header_timeout,
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
                    let io = Guarded::new(io, permit, self.header_timeout);
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
/// request head.
pub struct Guarded<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
    /// Until the first request head has been read.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find the end of the head across reads.
    tail: [u8; 3],
}

impl<T> Guarded<T> {
    fn new(inner: T, permit: OwnedSemaphorePermit, header_timeout: Duration) -> Self {
        Self {
            inner,
            _permit: permit,
            deadline: Some(Box::pin(tokio::time::sleep(header_timeout))),
            tail: [0; 3],
        }
    }

    /// Looks for the blank line ending the head in `read`; ends the deadline there.
    fn scan(&mut self, read: &[u8]) {
        let mut window = Vec::with_capacity(3 + read.len().min(64 * 1024));
        window.extend_from_slice(&self.tail);
        window.extend_from_slice(read);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.deadline = None;
            return;
        }
        let keep = window.len().min(3);
        self.tail = [0; 3];
        self.tail[3 - keep..].copy_from_slice(&window[window.len() - keep..]);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() {
                    let read = buf.filled()[before..].to_vec();
                    this.scan(&read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request head in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
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

    #[tokio::test]
    async fn the_head_is_found_across_reads() {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let mut g = Guarded::new((), permit, Duration::from_secs(1));
        g.scan(b"GET / HTTP/1.1\r\nhost: x\r");
        assert!(g.deadline.is_some());
        g.scan(b"\n\r");
        assert!(g.deadline.is_some());
        g.scan(b"\n");
        assert!(g.deadline.is_none());
    }
}
