//! `GET /events`: Server-Sent Events relaying `status.>` from NATS.

use std::sync::Arc;

use poem::Body;
use poem_openapi::{
    param::{Header, Query},
    payload::{Binary, Json},
    ApiResponse, OpenApi,
};
use schemas::{ActivationId, NodeName};

use super::{ApiError, ApiTags};
use crate::{
    auth::{Reader, CHALLENGE},
    sse::{
        log::ClientGuard,
        session::{self, Filter},
    },
    state::State,
};

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
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
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
    #[oai(
        path = "/events",
        method = "get",
        tag = "ApiTags::Events",
        operation_id = "events"
    )]
    async fn events(
        &self,
        reader: Reader,
        /// Only events of these nodes (repeat the parameter for several).
        #[oai(name = "node", default)]
        node: Query<Vec<NodeName>>,
        /// Only events of this activation.
        activation: Query<Option<ActivationId>>,
        /// Resume after this event id (sent by EventSource on reconnection).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<String>>,
        request: &poem::Request,
    ) -> EventsResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return EventsResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let state = &self.0;
        let max = state.settings.sse.max_clients;
        let Some(guard) = ClientGuard::take(state.ingest.log().clone(), max) else {
            return EventsResponse::TooManyClients(Json(ApiError::new(
                "too_many_clients",
                format!("this gateway already serves {max} event streams; retry later or use another gateway"),
            )));
        };
        let filter = Filter {
            nodes: node.0.into_iter().collect(),
            activation: activation.0,
        };
        let resume = last_event_id.0.and_then(|id| id.trim().parse::<u64>().ok());
        let session = session::open(
            &state.sessions(),
            state.first_frames(),
            filter,
            resume,
            guard,
        )
        .await;
        // On a connection served without hyper, the stream is written by the connection.
        let body = match request.extensions().get::<session::Handoff>() {
            Some(handoff) => {
                handoff.put(session);
                Body::empty()
            }
            None => Body::from_bytes_stream(session.into_stream()),
        };
        EventsResponse::Stream(Binary(body), "no-cache".into(), "no".into())
    }
}
