//! One client's event stream: what it asked for, what it has been sent, catching up
//! from the in-memory window or the durable stream, and ending when the gateway stops.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use bytes::{Bytes, BytesMut};
use schemas::{
    sse::{SseEvent, TopologyEvent},
    ActivationId, NodeName,
};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::CancellationToken;

use super::{
    frame,
    history::History,
    hub::Position,
    relay::{Frame, Relay},
};
use crate::State;

/// Most frames gathered into one write.
const MAX_BATCH: usize = 256;

/// Counts a connected client while it lives.
pub struct ClientGuard(Arc<Relay>);

impl ClientGuard {
    /// Takes a client slot, or `None` when `max` clients are connected.
    pub fn take(relay: Arc<Relay>, max: usize) -> Option<Self> {
        relay.add_client(max).then_some(Self(relay))
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.remove_client();
    }
}

/// Which status events a client wants (control events always pass).
pub struct Filter {
    /// Only these nodes (all when empty).
    pub nodes: HashSet<NodeName>,
    /// Only this activation.
    pub activation: Option<ActivationId>,
}

impl Filter {
    /// Whether `frame` is for this client.
    pub fn matches(&self, frame: &Frame) -> bool {
        if frame.kind != SseEvent::Status {
            return true;
        }
        let node_ok =
            self.nodes.is_empty() || frame.node.as_ref().is_some_and(|n| self.nodes.contains(n));
        let activation_ok = self.activation.is_none() || frame.activation == self.activation;
        node_ok && activation_ok
    }
}

/// One client's stream.
pub struct Session {
    relay: Arc<Relay>,
    /// The live frames; none while the hub writes the stream.
    live: Option<broadcast::Receiver<Arc<Frame>>>,
    filter: Arc<Filter>,
    /// What has been sent (or skipped by the filter).
    position: Position,
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
        let (frames, complete) = self.relay.since(self.position.last_sent);
        if !complete {
            self.report_gap(frames.first().map_or(self.relay.last_id() + 1, |f| f.id));
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
        let missed = first_kept.saturating_sub(self.position.last_sent + 1);
        self.relay.metrics.events_dropped.inc_by(missed);
        self.pending
            .push_back(frame::lagged(self.position.last_sent));
    }

    /// Catches up from the in-memory window and, for what the window no longer holds,
    /// from the durable stream; says so when even the stream has lost some, or when
    /// more is missing than one replay sends (the client resumes from its new last id
    /// to get the rest).
    async fn replay(&mut self, history: &History, newest: u64) {
        let (frames, complete) = self.relay.since(self.position.last_sent);
        if !complete {
            let from = self.position.last_sent + 1;
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
                    let relayed_elsewhere = super::relay::lock(&self.relay.dedup)
                        .first_sequence(id)
                        .is_some_and(|first| first != message.sequence);
                    if relayed_elsewhere || !batch.insert(id.clone()) {
                        continue;
                    }
                }
                if let Ok(frame) =
                    self.relay
                        .replayed(&message.subject, &message.payload, message.sequence)
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
        if self.position.advance(frame) && self.filter.matches(frame) {
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
    pub fn park(&mut self) -> Option<(Arc<Filter>, Position)> {
        if !self.pending.is_empty() {
            return None;
        }
        // Control frames are sent under the lock this holds: with an empty channel,
        // every one up to `sent` has been taken.
        let relay = self.relay.clone();
        relay.between_controls(|sent| {
            if !self.live.as_ref()?.is_empty() {
                return None;
            }
            self.live = None;
            self.position.controls = self.position.controls.max(sent);
            Some((self.filter.clone(), self.position))
        })
    }

    /// Takes the stream back from the hub at `position`: live again, with what was
    /// missed meanwhile (the latest topology and bus, status frames from the window).
    pub fn resume(&mut self, position: Position) {
        let subscription = self.relay.subscribe();
        for frame in self
            .relay
            .controls_between(position.controls, subscription.controls)
        {
            self.pending.push_back(frame.bytes.clone());
        }
        self.position = Position {
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

/// One client's stream: the retry hint, the topology and bus state, what it missed
/// since `resume` (its `Last-Event-ID`), then live events until the client leaves or
/// the gateway stops.
pub async fn open(
    state: &Arc<State>,
    filter: Filter,
    resume: Option<u64>,
    guard: ClientGuard,
) -> Session {
    let relay = state.relay.clone();
    // Subscribed with the newest id, so no frame falls between live and history.
    let subscription = relay.subscribe();
    let newest = subscription.newest;
    let sse = &state.settings.sse;
    let mut session = Session {
        relay,
        live: Some(subscription.live),
        filter: Arc::new(filter),
        position: Position {
            last_sent: newest,
            controls: subscription.controls,
        },
        pending: VecDeque::new(),
        keepalive: tokio::time::interval_at(
            tokio::time::Instant::now() + sse.keepalive,
            sse.keepalive,
        ),
        wrote: false,
        stop: state.stop.clone(),
        _guard: guard,
    };
    session
        .pending
        .push_back(frame::retry(sse.retry.as_millis()));
    let graph = state.topology();
    let mermaid = crate::mermaid::render(&graph);
    session
        .pending
        .push_back(frame::topology(&TopologyEvent { graph, mermaid }));
    session
        .pending
        .push_back(frame::bus(state.bus_connected(), state.relay.gateway_id()));
    match resume {
        Some(id) if id <= newest => {
            session.position.last_sent = id;
            match &state.history {
                Some(history) => session.replay(history, newest).await,
                None => session.catch_up(),
            }
        }
        // With the stream, ids are its sequences, shared by every gateway: an id past
        // what this gateway has relayed yet (the client comes from a gateway ahead of
        // this one) is skipped to, not reported. Past the stream's end, or without the
        // stream (this gateway restarted, or the id is another's), it is a gap.
        Some(id) => match &state.history {
            Some(history) if id <= history.last_sequence().await => session.position.last_sent = id,
            _ => session.pending.push_back(frame::lagged(id)),
        },
        None => {}
    }
    session
}
