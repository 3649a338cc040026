//! The log of frames every stream reads: status frames numbered and kept in a bounded
//! window (for `Last-Event-ID`), control frames (topology, bus) numbered apart with the
//! latest of each kind, and one bounded broadcast channel for live readers. It also
//! counts the connected clients, so that it keeps nothing while nobody reads and the
//! durable stream holds the history.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use schemas::{sse::SseEvent, ActivationId, NodeName};
use tokio::sync::broadcast;

use crate::{metrics::Metrics, sync::lock};

/// One event, rendered once and shared by every client.
#[derive(Debug)]
pub struct Frame {
    /// Sequence number, the SSE `id:`, for status events. For live-only control
    /// events (topology, bus), which carry no `id:` and are not retained, their own
    /// sequence ([`Log::controls_between`]), 0 for one not relayed.
    pub id: u64,
    /// The kind of event.
    pub kind: SseEvent,
    /// The node a status event is about.
    pub node: Option<NodeName>,
    /// The activation a status event belongs to.
    pub activation: Option<ActivationId>,
    /// The whole SSE frame: `id:`, `event:`, `data:` and the blank line.
    pub bytes: Bytes,
}

/// What a log holds at most.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Frames kept for `Last-Event-ID` resumption.
    pub history: usize,
    /// Bytes of frames kept for resumption.
    pub history_bytes: usize,
    /// Frames a client may fall behind before it is caught up from history.
    pub buffer: usize,
}

struct Window {
    next_id: u64,
    /// Every id up to this one is no longer in `frames` (evicted, or from before this
    /// gateway started).
    gone_upto: u64,
    frames: VecDeque<Arc<Frame>>,
    /// Bytes of the frames held.
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
    /// The durable stream is the history (ids are its sequences): with no client
    /// connected, frames are neither rendered nor kept.
    durable: bool,
}

/// The control events sent so far: how many, and the latest of each kind.
#[derive(Default)]
struct Controls {
    sent: u64,
    topology: Option<Arc<Frame>>,
    bus: Option<Arc<Frame>>,
}

/// Live frames from a point on, and where that point is.
pub struct Subscription {
    /// Every frame sent from now on.
    pub live: broadcast::Receiver<Arc<Frame>>,
    /// Id of the newest status frame before them.
    pub newest: u64,
    /// Sequence of the newest control frame before them.
    pub controls: u64,
}

/// The log (see the module documentation).
pub struct Log {
    window: Mutex<Window>,
    controls: Mutex<Controls>,
    live: broadcast::Sender<Arc<Frame>>,
    /// Connected SSE clients (their sessions, whoever writes them).
    clients: AtomicUsize,
    /// Counters of dropped events and handed-back streams.
    pub metrics: Arc<Metrics>,
}

impl Log {
    /// A log within `limits`.
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        let (live, _) = broadcast::channel(limits.buffer.max(1));
        Arc::new(Self {
            window: Mutex::new(Window {
                next_id: 1,
                gone_upto: 0,
                frames: VecDeque::with_capacity(limits.history.min(65_536)),
                bytes: 0,
                capacity: limits.history.max(1),
                max_bytes: limits.history_bytes.max(1),
                durable: false,
            }),
            controls: Mutex::default(),
            live,
            clients: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Receives live frames from now on, with the newest status and control frames
    /// before them: taken together (under the window's and the controls' locks), so
    /// that no frame falls between, also when frames are not kept while nobody listens.
    pub fn subscribe(&self) -> Subscription {
        let window = lock(&self.window);
        let controls = lock(&self.controls);
        Subscription {
            live: self.live.subscribe(),
            newest: window.next_id - 1,
            controls: controls.sent,
        }
    }

    /// Runs `f` while no control frame is sent, with the sequence of the newest one.
    pub fn between_controls<R>(&self, f: impl FnOnce(u64) -> R) -> R {
        let controls = lock(&self.controls);
        f(controls.sent)
    }

    /// The latest control frame of each kind, when its sequence is after `after` and
    /// up to `upto`: what a client that missed some needs to be current again (those
    /// after `upto` still come through its live channel).
    pub fn controls_between(&self, after: u64, upto: u64) -> Vec<Arc<Frame>> {
        let controls = lock(&self.controls);
        [&controls.topology, &controls.bus]
            .into_iter()
            .flatten()
            .filter(|f| f.id > after && f.id <= upto)
            .cloned()
            .collect()
    }

    /// Counts a connected client; `false` (nothing counted) when `max` are.
    pub fn add_client(&self, max: usize) -> bool {
        let before = self.clients.fetch_add(1, Ordering::SeqCst);
        if before >= max {
            self.clients.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Counts a client gone.
    pub fn remove_client(&self) {
        self.clients.fetch_sub(1, Ordering::SeqCst);
    }

    /// Connected SSE clients.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Retained frames with an id above `after`, oldest first, and whether the window
    /// still reaches back to `after` (false: some frames after it were dropped).
    pub fn since(&self, after: u64) -> (Vec<Arc<Frame>>, bool) {
        let window = lock(&self.window);
        let complete = after >= window.gone_upto;
        let frames = window
            .frames
            .iter()
            .filter(|f| f.id > after)
            .cloned()
            .collect();
        (frames, complete)
    }

    /// Id of the newest frame (0 when none yet).
    pub fn last_id(&self) -> u64 {
        lock(&self.window).next_id - 1
    }

    /// Continues numbering after `last` (the stream's last sequence): everything up to
    /// it is history this gateway never held. From now on the stream is the history:
    /// while no client is connected, frames are neither rendered nor kept (a client
    /// resuming later is replayed from the stream).
    pub fn start_after(&self, last: u64) {
        let mut window = lock(&self.window);
        window.durable = true;
        window.next_id = window.next_id.max(last + 1);
        window.gone_upto = window.gone_upto.max(last);
    }

    /// Sends a live-only control event (`bytes` rendered by [`super::frame`]) to
    /// connected clients.
    pub fn push_control(&self, kind: SseEvent, bytes: Bytes) -> Arc<Frame> {
        let mut controls = lock(&self.controls);
        controls.sent += 1;
        let frame = Arc::new(Frame {
            id: controls.sent,
            kind,
            node: None,
            activation: None,
            bytes,
        });
        match kind {
            SseEvent::Topology => controls.topology = Some(frame.clone()),
            SseEvent::Bus => controls.bus = Some(frame.clone()),
            _ => {}
        }
        // Sent under the lock: a client between controls has seen them all.
        let _ = self.live.send(frame.clone());
        frame
    }

    /// Numbers a status frame (`id`, or the next number), renders it with `render`,
    /// keeps it and sends it; `None` when nobody listens and the stream keeps it
    /// (nothing rendered; the window restarts after it).
    pub fn append<E>(
        &self,
        id: Option<u64>,
        render: impl FnOnce(u64) -> Result<Frame, E>,
    ) -> Result<Option<Arc<Frame>>, E> {
        let mut window = lock(&self.window);
        let id = id.unwrap_or(window.next_id);
        window.next_id = id + 1;
        if window.durable && self.clients() == 0 {
            window.frames.clear();
            window.bytes = 0;
            window.gone_upto = id;
            return Ok(None);
        }
        let frame = Arc::new(render(id)?);
        while window.frames.len() >= window.capacity
            || (window.bytes + frame.bytes.len() > window.max_bytes && !window.frames.is_empty())
        {
            let Some(evicted) = window.frames.pop_front() else {
                break;
            };
            window.bytes -= evicted.bytes.len();
            window.gone_upto = evicted.id;
        }
        window.bytes += frame.bytes.len();
        window.frames.push_back(frame.clone());
        // Sent under the lock so that live order matches id order.
        let _ = self.live.send(frame.clone());
        Ok(Some(frame))
    }
}

/// Counts a connected client while it lives.
pub struct ClientGuard(Arc<Log>);

impl ClientGuard {
    /// Takes a client slot, or `None` when `max` clients are connected.
    pub fn take(log: Arc<Log>, max: usize) -> Option<Self> {
        log.add_client(max).then_some(Self(log))
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.remove_client();
    }
}
