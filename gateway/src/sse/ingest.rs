//! Ingest: a status message from the bus becomes a validated, numbered frame in the
//! [`Log`], once. Each message is checked (size, subject, fields), repeats of a node's
//! retried publish are dropped ([`Dedup`]), and the event is numbered (its stream
//! sequence, or the next local number when relaying live), encoded once and appended.
//! Whoever needs every accepted event (the latest states, the node metrics, the
//! inspector's watches) subscribes as an [`Observer`].

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use futures::StreamExt;
use schemas::{
    sse::SseEvent,
    status::{StatusDecodeError, StatusEventRef},
    subject, ActivationId, NodeName, NodeState, StatusEvent,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    frame,
    history::{message_id, History},
    log::{Frame, Log},
};
use crate::{metrics::Metrics, sync::lock};

/// Why a status message was not relayed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Over the size limit of a status event.
    #[error("{size} bytes, over the {limit}-byte limit of a status event")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a status event of a valid node.
    #[error(transparent)]
    Invalid(#[from] StatusDecodeError),
    /// A name in it cannot be part of a frame.
    #[error("{0}")]
    Name(String),
    /// It cannot be encoded.
    #[error("cannot encode it: {0}")]
    Encode(#[from] serde_json::Error),
}

/// An event accepted from the bus, as observers see it.
pub struct Accepted<'a> {
    /// Its node (a valid name).
    pub node: &'a str,
    /// Whether discovery knows the node.
    pub known: bool,
    /// Its state.
    pub state: NodeState,
    /// Its code, on final states.
    pub code: Option<u16>,
    /// The node's time on the activation, on final states.
    pub elapsed_ms: Option<u64>,
    /// Its activation.
    pub activation: Option<&'a str>,
    /// The event's JSON, complete (as the node sent it, or completed by the gateway).
    pub json: &'a Bytes,
    event: Event<'a>,
}

#[derive(Clone, Copy)]
enum Event<'a> {
    Read(&'a StatusEventRef<'a>),
    Decoded(&'a StatusEvent),
}

impl Accepted<'_> {
    /// The replica that published it.
    pub fn instance(&self) -> Option<&str> {
        match self.event {
            Event::Read(event) => event.instance,
            Event::Decoded(event) => event.instance.as_deref(),
        }
    }
}

/// Something that sees every accepted status event, right after it is in the log.
pub trait Observer: Send + Sync {
    /// Called once per accepted event, on the ingesting task: keep it short.
    fn observe(&self, event: &Accepted<'_>);
}

/// Each discovered node's activations, from its final events.
impl Observer for Metrics {
    fn observe(&self, event: &Accepted<'_>) {
        if event.known && matches!(event.state, NodeState::Ok | NodeState::Failed) {
            self.node_finished(event.node, event.code, event.elapsed_ms);
        }
    }
}

/// The ingest stage (see the module documentation).
pub struct Ingest {
    gateway_id: String,
    max_event_bytes: usize,
    log: Arc<Log>,
    observers: Vec<Arc<dyn Observer>>,
    dedup: std::sync::Mutex<Dedup>,
    /// Woken when a node that discovery does not know publishes.
    pub unknown_node: Notify,
    metrics: Arc<Metrics>,
}

impl Ingest {
    /// Ingest into `log` for the gateway `gateway_id`, refusing events over
    /// `max_event_bytes`; `observers` see every accepted event.
    pub fn new(
        gateway_id: String,
        max_event_bytes: usize,
        log: Arc<Log>,
        observers: Vec<Arc<dyn Observer>>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway_id,
            max_event_bytes,
            log,
            observers,
            dedup: Default::default(),
            unknown_node: Notify::new(),
            metrics,
        })
    }

    /// This gateway's id, `relayed_by` in every frame.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// The log it appends to.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Accepts a message received on `subject` about a known node, numbered next;
    /// returns its frame (none when nobody listens and the stream keeps it).
    pub fn accept_status(
        &self,
        subject: &str,
        payload: &[u8],
    ) -> Result<Option<Arc<Frame>>, Refused> {
        self.accept(subject, &Bytes::copy_from_slice(payload), None, |_| true)
    }

    /// Accepts a message that has its own sequence number `id` (its stream sequence),
    /// or the next local number when `None`; `known` says whether discovery knows a
    /// node. A node's complete event is read in place; anything else (a hand-written
    /// one) is decoded and completed. Either way the frame holds the one encoding of
    /// the event ([`StatusEvent`]'s), stamped `relayed_by` this gateway.
    pub fn accept(
        &self,
        subject: &str,
        payload: &Bytes,
        id: Option<u64>,
        known: impl Fn(&str) -> bool,
    ) -> Result<Option<Arc<Frame>>, Refused> {
        self.check_size(payload)?;
        if let Ok(event) = StatusEvent::read_complete(subject, payload) {
            let accepted = Accepted {
                node: &event.node,
                known: known(&event.node),
                state: event.state,
                code: event.code,
                elapsed_ms: event.elapsed_ms,
                activation: event.activation_id,
                json: payload,
                event: Event::Read(&event),
            };
            return self.append(id, &accepted);
        }
        let event = StatusEvent::decode(subject, payload)?;
        let json = Bytes::from(serde_json::to_vec(&event)?);
        let accepted = Accepted {
            node: event.node.as_str(),
            known: known(event.node.as_str()),
            state: event.state,
            code: event.code,
            elapsed_ms: event.elapsed_ms,
            activation: event.activation_id.as_ref().map(ActivationId::as_str),
            json: &json,
            event: Event::Decoded(&event),
        };
        self.append(id, &accepted)
    }

    /// Appends `event` to the log (rendered only when someone listens), then shows it
    /// to every observer.
    fn append(&self, id: Option<u64>, event: &Accepted<'_>) -> Result<Option<Arc<Frame>>, Refused> {
        let frame = self.log.append(id, |id| self.render(id, event))?;
        for observer in &self.observers {
            observer.observe(event);
        }
        Ok(frame)
    }

    /// The frame of `event` with id `id`.
    fn render(&self, id: u64, event: &Accepted<'_>) -> Result<Frame, Refused> {
        let relayed_by = Some(self.gateway_id.as_str());
        let bytes = match event.event {
            Event::Read(read) => frame::status_of(
                id,
                &StatusEventRef {
                    relayed_by,
                    node: std::borrow::Cow::Borrowed(&read.node),
                    at: std::borrow::Cow::Borrowed(&read.at),
                    ..*read
                },
            )?,
            Event::Decoded(decoded) => frame::status_of(
                id,
                &StatusEvent {
                    relayed_by: relayed_by.map(String::from),
                    ..decoded.clone()
                },
            )?,
        };
        Ok(Frame {
            id,
            kind: SseEvent::Status,
            node: Some(NodeName::new(event.node).map_err(|e| Refused::Name(e.to_string()))?),
            activation: event
                .activation
                .map(ActivationId::new)
                .transpose()
                .map_err(|e| Refused::Name(e.to_string()))?,
            bytes,
        })
    }

    /// Renders a message from history as the frame with id `id`, without relaying it:
    /// the same bytes [`Ingest::accept`] would have framed.
    pub fn replayed(&self, subject: &str, payload: &[u8], id: u64) -> Result<Frame, Refused> {
        self.check_size(payload)?;
        let mut event = StatusEvent::decode(subject, payload)?;
        event.relayed_by = Some(self.gateway_id.clone());
        let bytes = frame::status_of(id, &event)?;
        Ok(Frame {
            id,
            kind: SseEvent::Status,
            node: Some(event.node),
            activation: event.activation_id,
            bytes,
        })
    }

    /// Whether the stored message `id` at `sequence` repeats one relayed at another
    /// sequence (a node's retried publish the relay dropped).
    pub fn relayed_elsewhere(&self, id: &str, sequence: u64) -> bool {
        lock(&self.dedup)
            .first_sequence(id)
            .is_some_and(|first| first != sequence)
    }

    /// Refuses a payload over the size limit of a status event.
    fn check_size(&self, payload: &[u8]) -> Result<(), Refused> {
        if payload.len() > self.max_event_bytes {
            return Err(Refused::TooLarge {
                size: payload.len(),
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Relays one message, counting it relayed or refused.
    fn relay_one(
        &self,
        subject: &str,
        payload: &Bytes,
        sequence: Option<u64>,
        known: &impl Fn(&str) -> bool,
    ) {
        let known = |node: &str| {
            let is_known = known(node);
            if !is_known {
                self.unknown_node.notify_one();
            }
            is_known
        };
        match self.accept(subject, payload, sequence, known) {
            Ok(_) => {
                self.metrics.events_relayed.inc();
            }
            Err(cause) => {
                self.metrics.events_refused.inc();
                tracing::debug!(%subject, %cause, "status message refused");
            }
        }
    }
}

/// Sends `event: bus` to every client whenever the NATS connection goes down or comes
/// back, until `stop` is cancelled.
pub async fn watch_bus(
    client: async_nats::Client,
    log: Arc<Log>,
    gateway_id: String,
    stop: CancellationToken,
) {
    let mut was = true;
    loop {
        let now = client.connection_state() == async_nats::connection::State::Connected;
        if now != was {
            tracing::warn!(connected = now, "NATS connection state changed");
            log.push_control(SseEvent::Bus, frame::bus(now, &gateway_id));
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
    Stream(Arc<History>),
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

/// Pause before consuming the stream anew.
const RECONSUME_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Ingests `source` until the task is dropped. `known` says whether discovery has seen
/// a node serving; events of other nodes wake discovery through
/// [`Ingest::unknown_node`].
///
/// From the stream, it follows from the sequence after the last it relayed; when the
/// consumer fails (its server was lost: two idle heartbeats missed, a message
/// skipped), it follows anew from there, so nothing stored is skipped or repeated.
pub async fn run(source: Source, ingest: Arc<Ingest>, known: impl Fn(&str) -> bool) {
    let history = match source {
        Source::Live(mut subscriber) => {
            // Numbered by arrival: an id seen at another arrival is a node's retry (with
            // acknowledgements on, every attempt reaches core subscribers, even when the
            // stream stored it once).
            let mut arrival = 0u64;
            while let Some(m) = subscriber.next().await {
                arrival += 1;
                if let Some(id) = message_id(m.headers.as_ref()) {
                    if lock(&ingest.dedup).repeats(id, arrival) {
                        tracing::debug!(id, "repeated status event dropped");
                        continue;
                    }
                }
                ingest.relay_one(&m.subject, &m.payload, None, &known);
            }
            return;
        }
        Source::Stream(history) => history,
    };
    let log = ingest.log.clone();
    loop {
        let after = log.last_id();
        match history.follow_after(after).await {
            Ok(mut follow) => loop {
                let m = match follow.next().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(cause = %e, after = log.last_id(), "following the status stream anew");
                        break;
                    }
                };
                // A consumer made anew may repeat what was relayed already.
                if m.sequence <= log.last_id() {
                    continue;
                }
                if let Some(id) = &m.message_id {
                    if lock(&ingest.dedup).repeats(id, m.sequence) {
                        tracing::debug!(id, sequence = m.sequence, "repeated status event dropped");
                        continue;
                    }
                }
                ingest.relay_one(&m.subject, &m.payload, Some(m.sequence), &known);
            },
            Err(e) => tracing::warn!(cause = %e, "cannot follow the status stream; retrying"),
        }
        tokio::time::sleep(RECONSUME_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sse::log::Limits;

    fn ingest_with(history: usize, history_bytes: usize, max_event_bytes: usize) -> Arc<Ingest> {
        let metrics = Arc::new(Metrics::default());
        let log = Log::new(
            Limits {
                history,
                history_bytes,
                buffer: 1024,
            },
            metrics.clone(),
        );
        Ingest::new("gw-1".into(), max_event_bytes, log, vec![], metrics)
    }

    fn ingest(history: usize) -> Arc<Ingest> {
        ingest_with(history, 8 * 1024 * 1024, 4096)
    }

    #[test]
    fn events_over_the_size_limit_are_refused_and_the_window_is_bounded_in_bytes() {
        let ingest = ingest_with(1000, 2_000, 300);
        let big = format!(r#"{{"state":"ok","instance":"{}"}}"#, "a".repeat(400));
        let refused = ingest
            .accept_status("status.V", big.as_bytes())
            .unwrap_err();
        assert!(
            refused.to_string().contains("over the 300-byte limit"),
            "{refused}"
        );
        assert_eq!(ingest.log().last_id(), 0);
        let event = format!(r#"{{"state":"ok","instance":"{}"}}"#, "a".repeat(100));
        for _ in 0..100 {
            ingest
                .accept_status("status.V", event.as_bytes())
                .unwrap()
                .unwrap();
        }
        let (frames, complete) = ingest.log().since(0);
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
        let ingest = ingest(3);
        for _ in 0..5 {
            ingest
                .accept_status("status.V", br#"{"state":"ok"}"#)
                .unwrap();
        }
        let log = ingest.log();
        let (frames, complete) = log.since(0);
        assert_eq!(frames.iter().map(|f| f.id).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(!complete, "ids 1 and 2 are gone");
        let (frames, complete) = log.since(2);
        assert_eq!(frames.len(), 3);
        assert!(complete);
        let (frames, complete) = log.since(5);
        assert!(frames.is_empty() && complete);
    }

    #[test]
    fn frames_are_stamped_and_rendered_once() {
        let ingest = ingest(8);
        let frame = ingest
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
        assert!(ingest.accept_status("status.T", b"{").is_err());
        assert!(ingest
            .accept_status("status.T.x", br#"{"state":"ok"}"#)
            .is_err());
        assert_eq!(ingest.log().last_id(), 1, "refused messages take no id");
    }

    /// Counts what it observes.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl Observer for Count {
        fn observe(&self, _: &Accepted<'_>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn backed_by_the_stream_nothing_is_rendered_or_kept_for_nobody() {
        let metrics = Arc::new(Metrics::default());
        let log = Log::new(
            Limits {
                history: 8,
                history_bytes: 1 << 20,
                buffer: 8,
            },
            metrics.clone(),
        );
        let seen = Arc::new(Count::default());
        let ingest = Ingest::new(
            "gw-1".into(),
            4096,
            log.clone(),
            vec![seen.clone()],
            metrics,
        );
        let event = &Bytes::from_static(br#"{"state":"ok","activation_id":"a1"}"#);
        assert!(log.add_client(1));
        ingest
            .accept("status.T", event, Some(10), |_| true)
            .unwrap();
        log.start_after(10);
        // A client listens: frames are kept and sent.
        let kept = ingest.accept("status.T", event, Some(11), |_| true);
        assert_eq!(kept.unwrap().map(|f| f.id), Some(11));
        let (frames, complete) = log.since(10);
        assert!(complete && frames.len() == 1);
        // Nobody listens: nothing is rendered, the window restarts after it, and the
        // event still counts (observers, ids).
        log.remove_client();
        let dropped = ingest.accept("status.T", event, Some(12), |_| true);
        assert!(dropped.unwrap().is_none());
        let (frames, complete) = log.since(10);
        assert!(
            frames.is_empty() && !complete,
            "resuming before it is a replay"
        );
        assert!(log.since(12).1);
        assert_eq!(log.last_id(), 12);
        assert_eq!(seen.0.load(std::sync::atomic::Ordering::SeqCst), 3);
        // A client subscribing gets the newest id with its receiver: what follows is
        // kept and sent again.
        let mut listener = log.subscribe();
        assert!(log.add_client(1));
        assert!(!log.add_client(1), "one at most");
        assert_eq!(listener.newest, 12);
        ingest
            .accept("status.T", event, Some(13), |_| true)
            .unwrap();
        assert_eq!(listener.live.try_recv().unwrap().id, 13);
    }

    /// The one encoding of a status event: what `StatusEvent` serialises to, stamped
    /// `relayed_by` this gateway.
    fn encoded(subject: &str, payload: &[u8], id: u64) -> Bytes {
        let mut event = StatusEvent::decode(subject, payload).unwrap();
        event.relayed_by = Some("gw-1".into());
        frame::status(id, &serde_json::to_string(&event).unwrap())
    }

    fn any_event() -> impl Strategy<Value = StatusEvent> {
        let text = "[a-zA-Z0-9 _\\-\"\\\\é\\n]{0,12}";
        (
            prop_oneof![
                Just(NodeState::Running),
                Just(NodeState::Ok),
                Just(NodeState::Failed),
                Just(NodeState::Manual),
                Just(NodeState::Idle)
            ],
            prop::option::of(prop_oneof![
                Just("#FF00aa"),
                Just("#0f0"),
                Just("orange"),
                Just("#ABCDEF12")
            ]),
            prop::option::of(100u16..600),
            prop::option::of("[A-Za-z0-9_-]{1,22}"),
            prop::option::of(text),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            prop::option::of("[0-9a-f]{32}"),
            text,
            prop::option::of(text),
        )
            .prop_map(
                |(state, color, code, activation, instance, elapsed, bytes, trace, at, by)| {
                    let mut event = StatusEvent::new(NodeName::new("T").unwrap(), state);
                    event.color = color.map(|c| schemas::Color::new(c).unwrap());
                    event.code = code;
                    event.activation_id = activation.map(|a| ActivationId::new(a).unwrap());
                    event.instance = instance;
                    event.elapsed_ms = elapsed;
                    event.result_bytes = bytes;
                    event.trace_id = trace;
                    event.at = at;
                    event.relayed_by = by;
                    event
                },
            )
    }

    proptest! {
        /// Whatever a publisher sends (a node's own event, upper-case colours, a
        /// `relayed_by` of its own, unknown fields, other key orders, spaces, lines),
        /// the bytes sent to browsers, live or replayed, are the one encoding.
        #[test]
        fn every_event_is_sent_in_one_encoding(
            event in any_event(),
            extra in prop::option::of("[a-z]{1,8}"),
            reorder in any::<bool>(),
            pretty in any::<bool>(),
            shout in any::<bool>(),
        ) {
            let ingest = ingest(8);
            let mut value = serde_json::to_value(&event).unwrap();
            let hex = value.get("color").and_then(|c| c.as_str()).filter(|c| c.starts_with('#'));
            if let (true, Some(color)) = (shout, hex) {
                // Hex colours are accepted in any case and stored in lower case.
                value["color"] = color.to_ascii_uppercase().into();
            }
            if let Some(name) = extra {
                value.as_object_mut().unwrap().insert(format!("x_{name}"), serde_json::json!([1, {"a": "b"}]));
            }
            let payload = match (reorder, pretty) {
                (true, _) => {
                    let object = value.as_object().unwrap();
                    let reversed: serde_json::Map<_, _> =
                        object.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
                    serde_json::to_vec(&reversed).unwrap()
                }
                (false, true) => serde_json::to_vec_pretty(&value).unwrap(),
                (false, false) => serde_json::to_vec(&value).unwrap(),
            };
            let framed = ingest.accept_status("status.T", &payload).unwrap().unwrap();
            prop_assert_eq!(&framed.bytes, &encoded("status.T", &payload, framed.id));
            let replayed = ingest.replayed("status.T", &payload, framed.id).unwrap();
            prop_assert_eq!(&replayed.bytes, &framed.bytes);
        }
    }
}
