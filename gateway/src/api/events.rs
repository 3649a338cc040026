//! `GET /events`: Server-Sent Events relaying `status.>` from NATS.

use std::{
    collections::{HashSet, VecDeque},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use poem::Body;
use poem_openapi::{
    param::{Header, Query},
    payload::{Binary, Json},
    ApiResponse, OpenApi,
};
use schemas::{activation::ActivationId, NodeName};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{ApiError, ApiTags};
use crate::{
    history::History,
    relay::{bus_json, control_frame, Frame, Kind, Relay},
    State,
};

/// Most frames gathered into one write.
const MAX_BATCH: usize = 256;
/// Most events replayed from the stream for one resuming client.
const MAX_REPLAY: usize = 100_000;

/// The answer to a stream request.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum EventsResponse {
    /// An endless `text/event-stream`. Frames:
    /// `event: status` with an `id:` and a StatusEvent as JSON `data:`;
    /// `event: topology` with the graph (`nodes`, `edges`, `mermaid`) first and whenever
    /// nodes come or go; `event: bus` (`{connected, gateway}`) first and whenever the
    /// gateway's NATS connection goes down or comes back; `event: lagged` when the client
    /// fell behind further than the retained history; `: keep-alive` comments while
    /// idle; a `retry:` hint first.
    #[oai(status = 200, content_type = "text/event-stream")]
    Stream(
        Binary<Body>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "X-Accel-Buffering")] String,
    ),
    /// Invalid filter (node name or activation id).
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway already serves its maximum number of SSE clients.
    #[oai(status = 503)]
    TooManyClients(Json<ApiError>),
}

fn bad_request(err: poem::Error) -> EventsResponse {
    EventsResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// Event stream operations.
pub struct EventsApi(pub Arc<State>);

#[OpenApi]
impl EventsApi {
    /// Stream status events
    ///
    /// Relays every status event published on `status.>` as Server-Sent Events, each
    /// stamped with `relayed_by` (this gateway). Filter with `node` (repeatable) and
    /// `activation`. Reconnect with `Last-Event-ID` to receive what was missed from the
    /// retained history. Try `curl -N localhost:8080/events`.
    #[oai(path = "/events", method = "get", tag = "ApiTags::Events")]
    async fn events(
        &self,
        /// Only events of these nodes (repeat the parameter for several).
        #[oai(name = "node", default)]
        node: Query<Vec<NodeName>>,
        /// Only events of this activation.
        activation: Query<Option<ActivationId>>,
        /// Resume after this event id (sent by EventSource on reconnection).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
    ) -> EventsResponse {
        let state = &self.0;
        let max = state.config.sse_max_clients;
        let Some(guard) = ClientGuard::take(state.clone(), max) else {
            return EventsResponse::TooManyClients(Json(ApiError::new(
                "too_many_clients",
                format!("this gateway already serves {max} event streams; retry later or use another gateway"),
            )));
        };
        let filter = Filter {
            nodes: node.0.into_iter().collect(),
            activation: activation.0.map(|a| a.to_string()),
        };
        let resume = last_event_id.0.and_then(|id| id.trim().parse::<u64>().ok());
        let stream = client_stream(state, filter, resume, guard).await;
        EventsResponse::Stream(
            Binary(Body::from_bytes_stream(stream)),
            "no-cache".into(),
            "no".into(),
        )
    }
}

/// Counts a connected client while it lives.
struct ClientGuard(Arc<State>);

impl ClientGuard {
    fn take(state: Arc<State>, max: usize) -> Option<Self> {
        let before = state.sse_clients.fetch_add(1, Ordering::SeqCst);
        if before >= max {
            state.sse_clients.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self(state))
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Filter {
    nodes: HashSet<NodeName>,
    activation: Option<String>,
}

impl Filter {
    fn matches(&self, frame: &Frame) -> bool {
        if frame.kind != Kind::Status {
            return true;
        }
        let node_ok =
            self.nodes.is_empty() || frame.node.as_ref().is_some_and(|n| self.nodes.contains(n));
        let activation_ok = self.activation.is_none() || frame.activation == self.activation;
        node_ok && activation_ok
    }
}

struct Client {
    relay: Arc<Relay>,
    live: tokio::sync::broadcast::Receiver<Arc<Frame>>,
    filter: Filter,
    last_sent: u64,
    pending: VecDeque<Bytes>,
    keepalive: tokio::time::Interval,
    _guard: ClientGuard,
}

impl Client {
    /// Queues retained frames after `last_sent`; says so when some are gone.
    fn catch_up(&mut self) {
        let (frames, complete) = self.relay.since(self.last_sent);
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
            match self.live.try_recv() {
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
        let missed = first_kept.saturating_sub(self.last_sent + 1);
        self.relay.metrics.events_dropped.inc_by(missed);
        self.pending.push_back(lagged(self.last_sent));
    }

    /// Catches up from the in-memory window and, for what the window no longer holds,
    /// from the durable stream; says so when even the stream has lost some.
    async fn replay(&mut self, history: &History, newest: u64) {
        let (frames, complete) = self.relay.since(self.last_sent);
        if !complete {
            let from = self.last_sent + 1;
            let until = frames.first().map_or(newest, |f| f.id - 1);
            let stored = history.replay(from, until, MAX_REPLAY).await;
            if from <= until {
                // The stream too may have lost some (aged out or over its size).
                let first_kept = stored.first().map_or(until + 1, |m| m.sequence);
                if first_kept > from {
                    self.report_gap(first_kept);
                }
            }
            for message in stored {
                if let Ok(frame) =
                    self.relay
                        .replayed(&message.subject, &message.payload, message.sequence)
                {
                    self.send(&frame);
                }
            }
        }
        for frame in frames {
            self.send(&frame);
        }
    }

    fn send(&mut self, frame: &Frame) {
        if frame.kind != Kind::Status {
            // Control events are live only: no id, no history, no filter.
            self.pending.push_back(frame.bytes.clone());
        } else if frame.id > self.last_sent {
            self.last_sent = frame.id;
            if self.filter.matches(frame) {
                self.pending.push_back(frame.bytes.clone());
            }
        }
    }
}

fn lagged(after: u64) -> Bytes {
    Bytes::from(format!(
        "event: lagged\ndata: {{\"after\":{after},\"message\":\"events after id {after} are no longer retained; state may be stale\"}}\n\n"
    ))
}

async fn client_stream(
    state: &Arc<State>,
    filter: Filter,
    resume: Option<u64>,
    guard: ClientGuard,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let relay = state.relay.clone();
    // Subscribe before reading the history, so no frame falls between the two.
    let live = relay.subscribe();
    let newest = relay.last_id();
    let period = Duration::from_millis(state.config.sse_keepalive_ms);
    let mut client = Client {
        relay,
        live,
        filter,
        last_sent: newest,
        pending: VecDeque::new(),
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        _guard: guard,
    };
    client.pending.push_back(Bytes::from(format!(
        "retry: {}\n\n",
        state.config.sse_retry_ms
    )));
    let topology = serde_json::to_string(&crate::topology::TopologyEvent::from(&state.topology()))
        .unwrap_or_default();
    client
        .pending
        .push_back(control_frame(Kind::Topology, &topology));
    client.pending.push_back(control_frame(
        Kind::Bus,
        &bus_json(state.bus_connected(), state.relay.gateway_id()),
    ));
    match resume {
        Some(id) if id <= newest => {
            client.last_sent = id;
            match &state.history {
                Some(history) => client.replay(history, newest).await,
                None => client.catch_up(),
            }
        }
        // An id this gateway never issued (it restarted, or the id is another's).
        Some(id) => client.pending.push_back(lagged(id)),
        None => {}
    }
    futures::stream::unfold(client, |mut client| async move {
        loop {
            if !client.pending.is_empty() {
                return Some((Ok(client.take_pending()), client));
            }
            tokio::select! {
                received = client.live.recv() => match received {
                    Ok(frame) => {
                        client.send(&frame);
                        client.keepalive.reset();
                        client.drain_ready();
                    }
                    Err(RecvError::Lagged(_)) => client.catch_up(),
                    Err(RecvError::Closed) => return None,
                },
                _ = client.keepalive.tick() => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), client));
                }
            }
        }
    })
}
