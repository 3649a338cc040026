//! What one client is owed: its first frames, what it missed (from the log's window or
//! the durable stream), live frames as they come, keep-alives while idle, and the end
//! when the gateway stops. No socket here: a transport writes the chunks
//! ([`Session::next_chunk`]), or the hub takes the stream over while it keeps up
//! ([`Session::park`]).

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::CancellationToken;

pub use super::cursor::Filter;
use super::{
    cursor::{Cursor, Position},
    frame,
    history::History,
    ingest::Ingest,
    log::{ClientGuard, Frame, Log},
};

/// Most frames gathered into one write.
const MAX_BATCH: usize = 256;

/// What every session of a gateway shares.
#[derive(Clone)]
pub struct Context {
    /// The ingest stage (the log, and what a replay needs: rendering, repeats).
    pub ingest: Arc<Ingest>,
    /// The durable stream, when there is one.
    pub history: Option<Arc<History>>,
    /// Interval of keep-alive comments.
    pub keepalive: Duration,
    /// Ends every stream.
    pub stop: CancellationToken,
}

/// One client's stream.
pub struct Session {
    log: Arc<Log>,
    /// The live frames; none while the hub writes the stream.
    live: Option<broadcast::Receiver<Arc<Frame>>>,
    /// What it wants, and what has been sent (or skipped by the filter).
    cursor: Cursor,
    pending: VecDeque<Bytes>,
    keepalive: tokio::time::Interval,
    /// Whether something was written since the last keep-alive tick (the timer is not
    /// reset on every write: that would cost a timer update per event per client).
    wrote: bool,
    stop: CancellationToken,
    _guard: ClientGuard,
}

impl Session {
    /// Queues retained frames after `last_sent`; says so when some are gone.
    fn catch_up(&mut self) {
        let (frames, complete) = self.log.since(self.cursor.position.last_sent);
        if !complete {
            self.report_gap(frames.first().map_or(self.log.last_id() + 1, |f| f.id));
        }
        for frame in frames {
            self.send(&frame);
        }
    }

    /// Takes every frame already waiting in the channel, so that a burst of events
    /// leaves in one write instead of one write (and one wake-up) per event.
    fn drain_ready(&mut self) {
        for _ in 0..MAX_BATCH {
            let Some(live) = &mut self.live else { return };
            match live.try_recv() {
                Ok(frame) => self.send(&frame),
                Err(TryRecvError::Lagged(_)) => self.catch_up(),
                Err(_) => break,
            }
        }
    }

    /// The pending frames as one chunk.
    fn take_pending(&mut self) -> Bytes {
        if self.pending.len() == 1 {
            return self.pending.pop_front().unwrap_or_default();
        }
        let size = self.pending.iter().map(Bytes::len).sum();
        let mut chunk = BytesMut::with_capacity(size);
        for part in self.pending.drain(..) {
            chunk.extend_from_slice(&part);
        }
        chunk.freeze()
    }

    /// Tells the client that the events between what it has and `first_kept` are gone,
    /// and counts them as dropped.
    fn report_gap(&mut self, first_kept: u64) {
        let missed = first_kept.saturating_sub(self.cursor.position.last_sent + 1);
        self.log.metrics.events_dropped.inc_by(missed);
        self.pending
            .push_back(frame::lagged(self.cursor.position.last_sent));
    }

    /// Catches up from the in-memory window and, for what the window no longer holds,
    /// from the durable stream; says so when even the stream has lost some, or when
    /// more is missing than one replay sends (the client resumes from its new last id
    /// to get the rest).
    async fn replay(&mut self, ingest: &Ingest, history: &History, newest: u64) {
        let (frames, complete) = self.log.since(self.cursor.position.last_sent);
        if !complete {
            let from = self.cursor.position.last_sent + 1;
            let until = frames.first().map_or(newest, |f| f.id - 1);
            let stored = history.replay(from, until).await;
            if from <= until {
                // The stream too may have lost some (aged out or over its size), or
                // the replay was refused (too many at once).
                let first_kept = stored.first().map_or(until + 1, |m| m.sequence);
                if first_kept > from {
                    self.report_gap(first_kept);
                }
            }
            let truncated = stored.last().is_some_and(|m| m.sequence < until);
            let mut batch = std::collections::HashSet::new();
            for message in stored {
                if let Some(id) = &message.message_id {
                    // A repeat the relay dropped, or one within this replay.
                    if ingest.relayed_elsewhere(id, message.sequence) || !batch.insert(id.clone()) {
                        continue;
                    }
                }
                if let Ok(frame) =
                    ingest.replayed(&message.subject, &message.payload, message.sequence)
                {
                    self.send(&frame);
                }
            }
            if truncated {
                self.report_gap(until + 1);
            }
        }
        for frame in frames {
            self.send(&frame);
        }
    }

    fn send(&mut self, frame: &Frame) {
        // Control events are live only (no history) and pass every filter.
        if self.cursor.owes(frame) {
            self.pending.push_back(frame.bytes.clone());
        }
    }

    /// The next chunk to write, or `None` when the stream ends (the gateway stops).
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.pending.is_empty() {
                self.wrote = true;
                return Some(self.take_pending());
            }
            let live = self.live.as_mut()?;
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                received = live.recv() => match received {
                    Ok(frame) => {
                        self.send(&frame);
                        self.drain_ready();
                    }
                    Err(RecvError::Lagged(_)) => self.catch_up(),
                    Err(RecvError::Closed) => return None,
                },
                _ = self.keepalive.tick() => {
                    // Idle for a whole interval: a keep-alive (so at most two intervals
                    // pass without a write).
                    if !std::mem::take(&mut self.wrote) {
                        return Some(Bytes::from_static(frame::KEEP_ALIVE));
                    }
                }
            }
        }
    }
}

impl Session {
    /// When nothing is pending and no frame waits: leaves the live channel and returns
    /// where the stream stands, for the hub to go on from there. `None` otherwise.
    pub fn park(&mut self) -> Option<Cursor> {
        if !self.pending.is_empty() {
            return None;
        }
        // Control frames are sent under the lock this holds: with an empty channel,
        // every one up to `sent` has been taken.
        let log = self.log.clone();
        log.between_controls(|sent| {
            if !self.live.as_ref()?.is_empty() {
                return None;
            }
            self.live = None;
            self.cursor.position.controls = self.cursor.position.controls.max(sent);
            Some(Cursor {
                filter: self.cursor.filter.clone(),
                position: self.cursor.position,
            })
        })
    }

    /// Takes the stream back from the hub at `position`: live again, with what was
    /// missed meanwhile (the latest topology and bus, status frames from the window).
    pub fn resume(&mut self, position: Position) {
        let subscription = self.log.subscribe();
        for frame in self
            .log
            .controls_between(position.controls, subscription.controls)
        {
            self.pending.push_back(frame.bytes.clone());
        }
        self.cursor.position = Position {
            last_sent: position.last_sent,
            controls: position.controls.max(subscription.controls),
        };
        self.live = Some(subscription.live);
        self.catch_up();
    }

    /// Whether the gateway is stopping.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// The stream as bytes, written by whoever polls it.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut session| async move {
            let chunk = session.next_chunk().await?;
            Some((Ok(chunk), session))
        })
    }
}

/// A slot for the session of a request whose connection is served without hyper
/// ([`crate::direct`]): put in the request's extensions, the events operation leaves its
/// session there instead of in the response body.
#[derive(Clone, Default)]
pub struct Handoff(Arc<std::sync::Mutex<Option<Session>>>);

impl Handoff {
    /// Leaves `session` here.
    pub fn put(&self, session: Session) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
    }

    /// The session left here, if any.
    pub fn take(&self) -> Option<Session> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// One client's stream: `first` (the retry hint, the topology and bus state), what it
/// missed since `resume` (its `Last-Event-ID`), then live events until the client
/// leaves or the gateway stops.
pub async fn open(
    context: &Context,
    first: Vec<Bytes>,
    filter: Filter,
    resume: Option<u64>,
    guard: ClientGuard,
) -> Session {
    let log = context.ingest.log().clone();
    // Subscribed with the newest id, so no frame falls between live and history.
    let subscription = log.subscribe();
    let newest = subscription.newest;
    let mut session = Session {
        log,
        live: Some(subscription.live),
        cursor: Cursor {
            filter: Arc::new(filter),
            position: Position {
                last_sent: newest,
                controls: subscription.controls,
            },
        },
        pending: first.into(),
        keepalive: tokio::time::interval_at(
            tokio::time::Instant::now() + context.keepalive,
            context.keepalive,
        ),
        wrote: false,
        stop: context.stop.clone(),
        _guard: guard,
    };
    match resume {
        Some(id) if id <= newest => {
            session.cursor.position.last_sent = id;
            match &context.history {
                Some(history) => session.replay(&context.ingest, history, newest).await,
                None => session.catch_up(),
            }
        }
        // With the stream, ids are its sequences, shared by every gateway: an id past
        // what this gateway has relayed yet (the client comes from a gateway ahead of
        // this one) is skipped to, not reported. Past the stream's end, or without the
        // stream (this gateway restarted, or the id is another's), it is a gap.
        Some(id) => match &context.history {
            Some(history) if id <= history.last_sequence().await => {
                session.cursor.position.last_sent = id
            }
            _ => session.pending.push_back(frame::lagged(id)),
        },
        None => {}
    }
    session
}
