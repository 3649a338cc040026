//! Event streams that keep up, written from one place.
//!
//! A client whose stream is caught up and idle joins the hub. One task per shard (one
//! shard per runtime thread) receives each batch of frames once and writes it to every
//! member's socket with one non-blocking `write` (or `writev`) per member: no task is
//! woken and nothing is copied per client. A member whose socket cannot take the whole batch at
//! once (a slow client), or that the hub cannot catch up from the window, is handed
//! back to its own task with what it did not get; that task writes it, catches up like
//! any session and joins again once it is idle. The hub also writes the keep-alive
//! comments of its members.
//!
//! The hub writes to a [`Sink`]: anything that takes a non-blocking vectored write
//! (a TCP socket here; a TLS or HTTP/2 stream would be another implementation).

use std::{
    io::{self, IoSlice},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::{
    net::TcpStream,
    sync::{
        broadcast::error::{RecvError, TryRecvError},
        mpsc, oneshot,
    },
};
use tokio_util::sync::CancellationToken;

pub use super::cursor::Position;
use super::{
    cursor::Cursor,
    frame,
    log::{Frame, Log, Subscription},
};

/// Where the hub writes a member's stream: one non-blocking write of several buffers,
/// which takes what it can at once (`WouldBlock` when nothing).
pub trait Sink: Send + Sync + 'static {
    /// Writes what it can of `parts` now; how many bytes it took.
    fn try_write_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl Sink for TcpStream {
    fn try_write_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        match parts {
            [one] => self.try_write(one),
            _ => TcpStream::try_write_vectored(self, parts),
        }
    }
}

/// Most frames written to a member in one call.
const MAX_BATCH: usize = 256;

/// A client handed back by the hub.
#[derive(Debug)]
pub struct Returned {
    /// Where its stream stands.
    pub position: Position,
    /// Bytes it was owed and has not been sent: to be written first.
    pub unsent: Bytes,
    /// Its socket failed: the stream is over.
    pub failed: bool,
}

/// A client in the hub.
struct Member {
    key: u64,
    sink: Arc<dyn Sink>,
    cursor: Cursor,
    /// Whether something was written since the last keep-alive tick.
    wrote: bool,
    back: oneshot::Sender<Returned>,
}

enum Command {
    Join(Member),
    Leave(u64),
    Recall(u64),
}

/// The hub: its shards' command channels.
pub struct Hub {
    shards: Vec<mpsc::UnboundedSender<Command>>,
    next: AtomicUsize,
}

/// A client's place in the hub, to leave it.
pub struct Membership {
    shard: mpsc::UnboundedSender<Command>,
    key: u64,
}

impl Membership {
    /// Leaves the hub (the client is gone); nothing is handed back.
    pub fn leave(self) {
        let _ = self.shard.send(Command::Leave(self.key));
    }

    /// Asks for the client back: its task writes to it again (the hub hands it back).
    pub fn recall(self) {
        let _ = self.shard.send(Command::Recall(self.key));
    }
}

impl Hub {
    /// Starts `shards` shard tasks on `log`'s frames, writing a keep-alive to members
    /// idle for `keepalive`, until `stop`.
    pub fn start(
        log: Arc<Log>,
        shards: usize,
        keepalive: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                // Subscribed now: a member never joins a shard behind its own stream.
                let subscription = log.subscribe();
                tokio::spawn(run_shard(
                    log.clone(),
                    subscription,
                    rx,
                    keepalive,
                    stop.clone(),
                ));
                tx
            })
            .collect();
        Arc::new(Self {
            shards,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands a client to the hub: where to write, and its cursor. The receiver gets it
    /// back when the hub cannot write to it; `None` when the hub has stopped.
    pub fn join(
        &self,
        sink: Arc<dyn Sink>,
        cursor: Cursor,
    ) -> Option<(Membership, oneshot::Receiver<Returned>)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let shard = &self.shards[n % self.shards.len()];
        let (back, returned) = oneshot::channel();
        let key = n as u64;
        let member = Member {
            key,
            sink,
            cursor,
            wrote: false,
            back,
        };
        shard.send(Command::Join(member)).ok()?;
        Some((
            Membership {
                shard: shard.clone(),
                key,
            },
            returned,
        ))
    }
}

async fn run_shard(
    log: Arc<Log>,
    subscription: Subscription,
    mut commands: mpsc::UnboundedReceiver<Command>,
    keepalive: Duration,
    stop: CancellationToken,
) {
    let mut live = subscription.live;
    let mut shard = Shard {
        log,
        members: Vec::new(),
        seen: Position {
            last_sent: subscription.newest,
            controls: subscription.controls,
        },
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            command = commands.recv() => match command {
                Some(Command::Join(member)) => shard.join(member),
                Some(Command::Leave(key)) => shard.leave(key),
                Some(Command::Recall(key)) => shard.recall(key),
                None => return,
            },
            received = live.recv() => match received {
                Ok(frame) => {
                    batch.push(frame);
                    let mut lagged = false;
                    while batch.len() < MAX_BATCH {
                        match live.try_recv() {
                            Ok(frame) => batch.push(frame),
                            Err(TryRecvError::Lagged(_)) => {
                                lagged = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    shard.deliver(&batch);
                    batch.clear();
                    if lagged {
                        shard.hand_back_all();
                    }
                }
                // Frames this shard never saw: every member catches up on its own.
                Err(RecvError::Lagged(_)) => shard.hand_back_all(),
                Err(RecvError::Closed) => return,
            },
            _ = ticks.tick() => shard.keep_alive(),
        }
    }
}

struct Shard {
    log: Arc<Log>,
    members: Vec<Member>,
    /// The newest status and control frames this shard has delivered.
    seen: Position,
}

impl Shard {
    /// Takes a member in, first sending it what it missed between leaving its own
    /// stream and this shard's position (or handing it back when the window no longer
    /// has it).
    fn join(&mut self, mut member: Member) {
        let mut missed = self
            .log
            .controls_between(member.cursor.position.controls, self.seen.controls);
        if member.cursor.position.last_sent < self.seen.last_sent {
            let (frames, complete) = self.log.since(member.cursor.position.last_sent);
            // Much to catch up on: its own task does it, a chunk at a time.
            if !complete || frames.len() > MAX_BATCH {
                return hand_back(&self.log, member, Bytes::new(), false);
            }
            missed.extend(frames.into_iter().filter(|f| f.id <= self.seen.last_sent));
        }
        match send(&mut member, &missed) {
            Sent::All => self.members.push(member),
            Sent::Part(unsent) => hand_back(&self.log, member, unsent, false),
            Sent::Failed => hand_back(&self.log, member, Bytes::new(), true),
        }
    }

    fn leave(&mut self, key: u64) {
        if let Some(i) = self.members.iter().position(|m| m.key == key) {
            self.members.swap_remove(i);
        }
    }

    fn recall(&mut self, key: u64) {
        if let Some(i) = self.members.iter().position(|m| m.key == key) {
            hand_back(&self.log, self.members.swap_remove(i), Bytes::new(), false);
        }
    }

    /// Writes `batch` to every member; hands back those that could not take it whole.
    fn deliver(&mut self, batch: &[Arc<Frame>]) {
        for frame in batch {
            self.seen.advance(frame);
        }
        let mut i = 0;
        while i < self.members.len() {
            match send(&mut self.members[i], batch) {
                Sent::All => i += 1,
                Sent::Part(unsent) => {
                    hand_back(&self.log, self.members.swap_remove(i), unsent, false)
                }
                Sent::Failed => {
                    hand_back(&self.log, self.members.swap_remove(i), Bytes::new(), true)
                }
            }
        }
    }

    /// A keep-alive to each member that was sent nothing for a whole interval.
    fn keep_alive(&mut self) {
        let mut i = 0;
        while i < self.members.len() {
            let member = &mut self.members[i];
            if member.back.is_closed() {
                // Its task is gone without leaving (it ended at shutdown).
                self.members.swap_remove(i);
                continue;
            }
            if std::mem::take(&mut member.wrote) {
                i += 1;
                continue;
            }
            match member
                .sink
                .try_write_vectored(&[IoSlice::new(frame::KEEP_ALIVE)])
            {
                Ok(n) if n == frame::KEEP_ALIVE.len() => i += 1,
                Ok(n) => hand_back(
                    &self.log,
                    self.members.swap_remove(i),
                    Bytes::from_static(&frame::KEEP_ALIVE[n..]),
                    false,
                ),
                // Not writable: its own task waits, and writes the next keep-alive.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    hand_back(&self.log, self.members.swap_remove(i), Bytes::new(), false)
                }
                Err(_) => hand_back(&self.log, self.members.swap_remove(i), Bytes::new(), true),
            }
        }
    }

    fn hand_back_all(&mut self) {
        for member in self.members.drain(..) {
            hand_back(&self.log, member, Bytes::new(), false);
        }
    }
}

fn hand_back(log: &Log, member: Member, unsent: Bytes, failed: bool) {
    log.metrics.sse_handed_back.inc();
    let _ = member.back.send(Returned {
        position: member.cursor.position,
        unsent,
        failed,
    });
}

enum Sent {
    All,
    /// Some bytes (these) were not written.
    Part(Bytes),
    Failed,
}

/// Writes to `member` the frames of `batch` it has not had and its filter passes, in
/// one call; moves its position past every frame of the batch.
fn send(member: &mut Member, batch: &[Arc<Frame>]) -> Sent {
    let mut parts: Vec<IoSlice<'_>> = Vec::new();
    for frame in batch {
        if member.cursor.owes(frame) {
            parts.push(IoSlice::new(&frame.bytes));
        }
    }
    if parts.is_empty() {
        return Sent::All;
    }
    member.wrote = true;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    match member.sink.try_write_vectored(&parts) {
        Ok(n) if n == total => Sent::All,
        Ok(n) => Sent::Part(rest(&parts, n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Part(rest(&parts, 0)),
        Err(_) => Sent::Failed,
    }
}

/// What follows the first `written` bytes of `parts`.
fn rest(parts: &[IoSlice<'_>], mut written: usize) -> Bytes {
    let mut out = BytesMut::new();
    for part in parts {
        if written >= part.len() {
            written -= part.len();
            continue;
        }
        out.extend_from_slice(&part[written..]);
        written = 0;
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_short_write_left_is_kept_in_order() {
        let parts = [
            IoSlice::new(b"abc"),
            IoSlice::new(b"de"),
            IoSlice::new(b"f"),
        ];
        assert_eq!(rest(&parts, 0), Bytes::from_static(b"abcdef"));
        assert_eq!(rest(&parts, 2), Bytes::from_static(b"cdef"));
        assert_eq!(rest(&parts, 3), Bytes::from_static(b"def"));
        assert_eq!(rest(&parts, 5), Bytes::from_static(b"f"));
        assert_eq!(rest(&parts, 6), Bytes::new());
    }
}
