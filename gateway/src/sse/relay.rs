//! The status relay: one subscription on `status.>` per gateway, fanned out to every
//! SSE client.
//!
//! Each event is validated, stamped with this gateway's id, given the next sequence
//! number and rendered as an SSE frame once; clients share the frame. A bounded window
//! of recent frames serves `Last-Event-ID` resumption, and a bounded broadcast channel
//! feeds live clients, so a slow client costs a fixed amount of memory and never slows
//! the others: when it falls behind it is resumed from the window or told it lagged.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use futures::StreamExt;
use schemas::{sse::SseEvent, subject, ActivationId, NodeName, NodeState, StatusEvent};

use super::states::LatestStates;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::frame;
use crate::metrics::Metrics;

/// One event, rendered once and shared by every client.
#[derive(Debug)]
pub struct Frame {
    /// Sequence number, the SSE `id:`, for status events. For live-only control
    /// events (topology, bus), which carry no `id:` and are not retained, their own
    /// sequence ([`Relay::controls_between`]), 0 for one not relayed.
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

/// What a relay holds at most.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Frames kept for `Last-Event-ID` resumption.
    pub history: usize,
    /// Bytes of frames kept for resumption.
    pub history_bytes: usize,
    /// Frames a client may fall behind before it is caught up from history.
    pub buffer: usize,
    /// Largest status message accepted, in bytes (larger ones are refused and counted).
    pub max_event_bytes: usize,
    /// Nodes unknown to discovery whose latest state is kept.
    pub unknown_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            history: 4096,
            history_bytes: 8 * 1024 * 1024,
            buffer: 1024,
            max_event_bytes: 4096,
            unknown_nodes: 256,
        }
    }
}

/// What the relay needs of a status event besides its JSON.
#[derive(Clone, Copy)]
struct About<'a> {
    node: &'a str,
    activation: Option<&'a str>,
    state: NodeState,
    code: Option<u16>,
    elapsed_ms: Option<u64>,
}

/// Whether `payload` is one line holding one JSON object (from `{` to `}`): what a
/// frame's `data:` line can carry as it is.
fn one_line_object(payload: &[u8]) -> bool {
    payload.first() == Some(&b'{')
        && payload.last() == Some(&b'}')
        && memchr::memchr2(b'\n', b'\r', payload).is_none()
}

/// A status event's JSON, to be framed.
enum Json<'a> {
    /// To be encoded by the gateway.
    Encode(&'a StatusEvent),
    /// The payload as it came: one line, a complete event (`relayed_by` is added).
    AsSent(&'a [u8]),
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

/// Shared state of the relay.
pub struct Relay {
    window: Mutex<Window>,
    controls: Mutex<Controls>,
    live: broadcast::Sender<Arc<Frame>>,
    /// Connected SSE clients (their sessions, whoever writes them).
    clients: AtomicUsize,
    gateway_id: String,
    /// The gateway id as a JSON string, for `relayed_by`.
    relayed_by: String,
    max_event_bytes: usize,
    last_state: Mutex<LatestStates>,
    /// Woken when a node that discovery does not know publishes.
    pub unknown_node: Notify,
    /// Message ids of stream messages relayed, to drop repeats.
    pub dedup: Mutex<Dedup>,
    /// Counters of relayed, refused and dropped events.
    pub metrics: Arc<Metrics>,
    /// Activations this gateway runs, whose events become their timelines.
    pub watches: Arc<crate::activations::Watches>,
}

impl Relay {
    /// A relay within `limits`.
    pub fn new(gateway_id: String, limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
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
            relayed_by: serde_json::Value::String(gateway_id.clone()).to_string(),
            gateway_id,
            max_event_bytes: limits.max_event_bytes,
            last_state: Mutex::new(LatestStates::new(limits.unknown_nodes)),
            unknown_node: Notify::new(),
            dedup: Mutex::new(Dedup::default()),
            metrics,
            watches: Default::default(),
        })
    }

    /// This gateway's id.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
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

    /// Runs `f` on the latest states (under a lock: keep it short).
    pub fn with_states<R>(&self, f: impl FnOnce(&LatestStates) -> R) -> R {
        f(&lock(&self.last_state))
    }

    /// Accepts a message received on `subject` about a known node; returns the frame
    /// (none when it was not rendered: see [`Relay::start_after`]), or why it was
    /// refused.
    pub fn accept_status(
        &self,
        subject: &str,
        payload: &[u8],
    ) -> Result<Option<Arc<Frame>>, String> {
        self.accept_numbered(subject, &Bytes::copy_from_slice(payload), None, |_| true)
    }

    /// Accepts a message that has its own sequence number `id` (its stream sequence),
    /// or the next local number when `None`; `known` says whether discovery knows a
    /// node (the states of unknown ones are bounded).
    ///
    /// A node's event (complete, one line, relayed by no one) is read in place and
    /// framed and kept as it came; anything else is decoded, completed and re-encoded.
    pub fn accept_numbered(
        &self,
        subject: &str,
        payload: &Bytes,
        id: Option<u64>,
        known: impl Fn(&str) -> bool,
    ) -> Result<Option<Arc<Frame>>, String> {
        self.check_size(payload)?;
        if let Ok(event) = StatusEvent::read_complete(subject, payload) {
            if event.relayed_by.is_none() && one_line_object(payload) {
                if self.watches.watching() {
                    self.watches.note(&event.to_owned_event());
                }
                let about = About {
                    node: &event.node,
                    activation: event.activation_id,
                    state: event.state,
                    code: event.code,
                    elapsed_ms: event.elapsed_ms,
                };
                return self.relay(id, about, Json::AsSent(payload), payload.clone(), known);
            }
        }
        let event = self.decode(subject, payload)?;
        self.watches.note(&event);
        let about = About {
            node: event.node.as_str(),
            activation: event.activation_id.as_ref().map(|a| a.as_str()),
            state: event.state,
            code: event.code,
            elapsed_ms: event.elapsed_ms,
        };
        let latest = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        self.relay(id, about, Json::Encode(&event), latest.into(), known)
    }

    /// What every accepted event goes through: its node's metrics, then numbered,
    /// framed, kept and sent ([`Relay::push`]), and `latest` (its JSON) kept as the
    /// node's latest state.
    fn relay(
        &self,
        id: Option<u64>,
        about: About<'_>,
        data: Json<'_>,
        latest: Bytes,
        known: impl Fn(&str) -> bool,
    ) -> Result<Option<Arc<Frame>>, String> {
        let is_known = known(about.node);
        if is_known && matches!(about.state, NodeState::Ok | NodeState::Failed) {
            self.metrics
                .node_finished(about.node, about.code, about.elapsed_ms);
        }
        let frame = self.push(id, about, data)?;
        lock(&self.last_state).record(about.node, latest, is_known);
        Ok(frame)
    }

    /// Renders a message from history as the frame with id `id`, without relaying it.
    pub fn replayed(&self, subject: &str, payload: &[u8], id: u64) -> Result<Frame, String> {
        let event = self.decode(subject, payload)?;
        let data = serde_json::to_string(&event).map_err(|e| e.to_string())?;
        Ok(Frame {
            id,
            kind: SseEvent::Status,
            node: Some(event.node),
            activation: event.activation_id,
            bytes: frame::status(id, &data),
        })
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

    /// Refuses a payload over the size limit of a status event.
    fn check_size(&self, payload: &[u8]) -> Result<(), String> {
        if payload.len() > self.max_event_bytes {
            return Err(format!(
                "{} bytes, over the {}-byte limit of a status event",
                payload.len(),
                self.max_event_bytes
            ));
        }
        Ok(())
    }

    /// The event, decoded (leniently: a hand-written one is completed), relayed by
    /// this gateway.
    fn decode(&self, subject: &str, payload: &[u8]) -> Result<StatusEvent, String> {
        self.check_size(payload)?;
        let mut event = StatusEvent::decode(subject, payload).map_err(|e| e.to_string())?;
        event.relayed_by = Some(self.gateway_id.clone());
        Ok(event)
    }

    /// Sends a live-only control event (`bytes` rendered by [`frame`]) to connected
    /// clients.
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

    /// Numbers, renders, keeps and sends a status frame; `None` when nobody listens and
    /// the stream keeps it (nothing rendered; the window restarts after it).
    fn push(
        &self,
        id: Option<u64>,
        about: About<'_>,
        data: Json<'_>,
    ) -> Result<Option<Arc<Frame>>, String> {
        let mut window = lock(&self.window);
        let id = id.unwrap_or(window.next_id);
        window.next_id = id + 1;
        if window.durable && self.clients() == 0 {
            window.frames.clear();
            window.bytes = 0;
            window.gone_upto = id;
            return Ok(None);
        }
        let frame = Arc::new(Frame {
            id,
            kind: SseEvent::Status,
            node: Some(NodeName::new(about.node).map_err(|e| e.to_string())?),
            activation: about
                .activation
                .map(ActivationId::new)
                .transpose()
                .map_err(|e| e.to_string())?,
            bytes: match data {
                Json::Encode(event) => {
                    let json = serde_json::to_string(event).map_err(|e| e.to_string())?;
                    frame::status(id, &json)
                }
                Json::AsSent(payload) => frame::status_relayed(id, payload, &self.relayed_by),
            },
        });
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

/// Sends `event: bus` to every client whenever the NATS connection goes down or comes
/// back, until `stop` is cancelled.
pub async fn watch_bus(client: async_nats::Client, relay: Arc<Relay>, stop: CancellationToken) {
    let mut was = true;
    loop {
        let now = client.connection_state() == async_nats::connection::State::Connected;
        if now != was {
            tracing::warn!(connected = now, "NATS connection state changed");
            relay.push_control(SseEvent::Bus, frame::bus(now, relay.gateway_id()));
            was = now;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {},
        }
    }
}

/// Subscribes to every status subject.
pub async fn subscribe(
    client: &async_nats::Client,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client.subscribe(subject::STATUS_ALL).await
}

/// Where status events come from.
pub enum Source {
    /// The core subscription from [`subscribe`]: ids are this gateway's own numbers.
    Live(async_nats::Subscriber),
    /// The JetStream stream: ids are stream sequences.
    Stream(Arc<super::history::History>),
}

/// Message ids remembered to drop repeats.
const DEDUP_CAPACITY: usize = 65_536;

/// The `Nats-Msg-Id` of recently relayed messages and the sequence each was first stored
/// at (live, its arrival). A node that publishes with acknowledgements retries with the
/// same id: while a clustered stream's new leader is slow to commit, a retry can be
/// stored twice, and a live subscription gets every attempt. Only the first is relayed
/// or replayed.
#[derive(Default)]
pub struct Dedup {
    first: std::collections::HashMap<String, u64>,
    order: VecDeque<String>,
}

impl Dedup {
    /// Whether the message `id` stored at `sequence` repeats one seen at another
    /// sequence; remembers it when it is new.
    pub fn repeats(&mut self, id: &str, sequence: u64) -> bool {
        if let Some(first) = self.first.get(id) {
            return *first != sequence;
        }
        if self.order.len() == DEDUP_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.first.remove(&old);
            }
        }
        self.first.insert(id.to_string(), sequence);
        self.order.push_back(id.to_string());
        false
    }

    /// The sequence `id` was first seen at, when it is remembered.
    pub fn first_sequence(&self, id: &str) -> Option<u64> {
        self.first.get(id).copied()
    }
}

/// The `Nats-Msg-Id` of a message, when it has one.
pub fn message_id(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str())
}

/// Pause before consuming the stream anew.
const RECONSUME_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Relays `source` into `relay` until the task is dropped. `known` says whether
/// discovery has seen a node serving; events of other nodes wake discovery through
/// [`Relay::unknown_node`].
///
/// From the stream, the relay follows from the sequence after the last it relayed;
/// when the consumer fails (its server was lost: two idle heartbeats missed, a message
/// skipped), it follows anew from there, so nothing stored is skipped or repeated.
pub async fn run(source: Source, relay: Arc<Relay>, known: impl Fn(&str) -> bool) {
    let relay_one = |subject: &str, payload: &Bytes, sequence: Option<u64>| match relay
        .accept_numbered(subject, payload, sequence, |node| {
            let is_known = known(node);
            if !is_known {
                relay.unknown_node.notify_one();
            }
            is_known
        }) {
        Ok(_) => {
            relay.metrics.events_relayed.inc();
        }
        Err(cause) => {
            relay.metrics.events_refused.inc();
            tracing::debug!(%subject, %cause, "status message refused");
        }
    };
    let history = match source {
        Source::Live(mut subscriber) => {
            // Numbered by arrival: an id seen at another arrival is a node's retry (with
            // acknowledgements on, every attempt reaches core subscribers, even when the
            // stream stored it once).
            let mut arrival = 0u64;
            while let Some(m) = subscriber.next().await {
                arrival += 1;
                if let Some(id) = message_id(m.headers.as_ref()) {
                    if lock(&relay.dedup).repeats(id, arrival) {
                        tracing::debug!(id, "repeated status event dropped");
                        continue;
                    }
                }
                relay_one(&m.subject, &m.payload, None);
            }
            return;
        }
        Source::Stream(history) => history,
    };
    loop {
        let after = relay.last_id();
        match history.follow_after(after).await {
            Ok(mut follow) => loop {
                let m = match follow.next().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(cause = %e, after = relay.last_id(), "following the status stream anew");
                        break;
                    }
                };
                // A consumer made anew may repeat what was relayed already.
                if m.sequence <= relay.last_id() {
                    continue;
                }
                if let Some(id) = &m.message_id {
                    if lock(&relay.dedup).repeats(id, m.sequence) {
                        tracing::debug!(id, sequence = m.sequence, "repeated status event dropped");
                        continue;
                    }
                }
                relay_one(&m.subject, &m.payload, Some(m.sequence));
            },
            Err(e) => tracing::warn!(cause = %e, "cannot follow the status stream; retrying"),
        }
        tokio::time::sleep(RECONSUME_PAUSE).await;
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(history: usize) -> Limits {
        Limits {
            history,
            ..Limits::default()
        }
    }

    #[test]
    fn events_over_the_size_limit_are_refused_and_the_window_is_bounded_in_bytes() {
        let relay = Relay::new(
            "g".into(),
            Limits {
                history: 1000,
                history_bytes: 2_000,
                max_event_bytes: 300,
                ..Limits::default()
            },
            Default::default(),
        );
        let big = format!(r#"{{"state":"ok","instance":"{}"}}"#, "a".repeat(400));
        let refused = relay.accept_status("status.V", big.as_bytes()).unwrap_err();
        assert!(refused.contains("over the 300-byte limit"), "{refused}");
        assert_eq!(relay.last_id(), 0);
        let event = format!(r#"{{"state":"ok","instance":"{}"}}"#, "a".repeat(100));
        for _ in 0..100 {
            relay
                .accept_status("status.V", event.as_bytes())
                .unwrap()
                .unwrap();
        }
        let (frames, complete) = relay.since(0);
        let held: usize = frames.iter().map(|f| f.bytes.len()).sum();
        assert!(held <= 2_000, "{held} bytes held");
        assert!(frames.len() > 5 && !complete);
        assert_eq!(frames.last().unwrap().id, 100);
    }

    #[test]
    fn dedup_keeps_the_first_sequence_of_an_id() {
        let mut d = Dedup::default();
        assert!(!d.repeats("a", 5));
        assert!(!d.repeats("a", 5), "the same message again is not a repeat");
        assert!(d.repeats("a", 9));
        assert!(!d.repeats("b", 9));
        assert_eq!(d.first_sequence("a"), Some(5));
    }

    #[test]
    fn window_keeps_the_newest_and_reports_gaps() {
        let relay = Relay::new("g".into(), limits(3), Default::default());
        for _ in 0..5 {
            relay
                .accept_status("status.V", br#"{"state":"ok"}"#)
                .unwrap();
        }
        let (frames, complete) = relay.since(0);
        assert_eq!(frames.iter().map(|f| f.id).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(!complete, "ids 1 and 2 are gone");
        let (frames, complete) = relay.since(2);
        assert_eq!(frames.len(), 3);
        assert!(complete);
        let (frames, complete) = relay.since(5);
        assert!(frames.is_empty() && complete);
    }

    #[test]
    fn frames_are_stamped_and_rendered_once() {
        let relay = Relay::new("gw-1".into(), limits(8), Default::default());
        let frame = relay
            .accept_status("status.T", br#"{"state":"running","activation_id":"a1"}"#)
            .unwrap()
            .unwrap();
        let text = std::str::from_utf8(&frame.bytes).unwrap();
        assert!(text.starts_with("id: 1\nevent: status\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert!(text.contains(r#""relayed_by":"gw-1""#));
        assert_eq!(
            frame.activation.as_ref().map(ActivationId::as_str),
            Some("a1")
        );
        assert!(relay.accept_status("status.T", b"{").is_err());
        assert!(relay
            .accept_status("status.T.x", br#"{"state":"ok"}"#)
            .is_err());
        assert_eq!(relay.last_id(), 1, "refused messages take no id");
    }

    #[test]
    fn backed_by_the_stream_nothing_is_rendered_or_kept_for_nobody() {
        let relay = Relay::new("gw-1".into(), limits(8), Default::default());
        let event = &Bytes::from_static(br#"{"state":"ok","activation_id":"a1"}"#);
        assert!(relay.add_client(1));
        relay
            .accept_numbered("status.T", event, Some(10), |_| true)
            .unwrap();
        relay.start_after(10);
        // A client listens: frames are kept and sent.
        let kept = relay.accept_numbered("status.T", event, Some(11), |_| true);
        assert_eq!(kept.unwrap().map(|f| f.id), Some(11));
        let (frames, complete) = relay.since(10);
        assert!(complete && frames.len() == 1);
        // Nobody listens: nothing is rendered, the window restarts after it, and the
        // event still counts (latest state, ids).
        relay.remove_client();
        let dropped = relay.accept_numbered("status.T", event, Some(12), |_| true);
        assert!(dropped.unwrap().is_none());
        let (frames, complete) = relay.since(10);
        assert!(
            frames.is_empty() && !complete,
            "resuming before it is a replay"
        );
        assert!(relay.since(12).1);
        assert_eq!(relay.last_id(), 12);
        assert_eq!(relay.with_states(|s| s.len()), 1);
        // A client subscribing gets the newest id with its receiver: what follows is
        // kept and sent again.
        let mut listener = relay.subscribe();
        assert!(relay.add_client(1));
        assert!(!relay.add_client(1), "one at most");
        assert_eq!(listener.newest, 12);
        relay
            .accept_numbered("status.T", event, Some(13), |_| true)
            .unwrap();
        assert_eq!(listener.live.try_recv().unwrap().id, 13);
    }

    #[test]
    fn a_nodes_event_is_framed_as_sent_and_anything_else_re_encoded() {
        let relay = Relay::new("gw-1".into(), limits(8), Default::default());
        let mut event = StatusEvent::new(NodeName::new("T").unwrap(), NodeState::Ok);
        event.code = Some(200);
        event.activation_id = Some(ActivationId::new("a1").unwrap());
        event.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        let sent = serde_json::to_vec(&event).unwrap();
        assert!(one_line_object(&sent));
        let decoded = relay.decode("status.T", &sent).unwrap();
        // Byte for byte what re-encoding would write.
        let framed = relay.accept_status("status.T", &sent).unwrap().unwrap();
        let encoded = frame::status(framed.id, &serde_json::to_string(&decoded).unwrap());
        assert_eq!(framed.bytes, encoded);
        // Hand-written, multi-line, relayed already, or padded: re-encoded, one line.
        for odd in [
            &br#"{"state":"ok"}"#[..],
            b"{\"node\":\"T\",\"state\":\"ok\",\n\"at\":\"x\"}",
            br#"{"node":"T","state":"ok","at":"x","relayed_by":"gw-forged"}"#,
            br#"{"node":"T","state":"ok","at":"x"} "#,
        ] {
            let framed = relay.accept_status("status.T", odd).unwrap().unwrap();
            let text = std::str::from_utf8(&framed.bytes).unwrap();
            assert_eq!(text.matches('\n').count(), 4, "{text:?}");
            assert!(text.contains(r#""relayed_by":"gw-1""#) && !text.contains("forged"));
        }
    }
}
