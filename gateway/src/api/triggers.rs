//! `/triggers`: what activates a node besides a request (`schemas::trigger`).

use std::sync::Arc;

use poem_openapi::{param::Path, payload::Json, ApiResponse, Object, OpenApi};
use schemas::{trigger::Trigger, NodeName};

use super::{ApiError, ApiTags};
use crate::{
    auth::{Caller, Reader, CHALLENGE},
    state::State,
};

/// A trigger: exactly one of `subject` and `cron`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct TriggerBody {
    /// The node it activates.
    pub node: NodeName,
    /// A NATS subject (no wildcards, not one of the mesh's own): one activation per
    /// message, its payload as input; a message with a reply subject gets the reply tree.
    #[oai(validator(max_length = 256))]
    pub subject: Option<String>,
    /// A cron schedule with seconds, UTC (`sec min hour day month weekday [year]`): one
    /// asynchronous activation per tick, once across all gateways.
    #[oai(validator(max_length = 256))]
    pub cron: Option<String>,
    /// The input of a cron trigger's activations.
    pub input: Option<serde_json::Value>,
    /// Each activation's budget in milliseconds.
    #[oai(validator(minimum(value = "1"), maximum(value = "600000")))]
    pub timeout_ms: Option<u64>,
}

/// A trigger, named.
#[derive(Debug, Clone, Object)]
pub struct TriggerView {
    /// Its name.
    pub name: NodeName,
    /// The node it activates.
    pub node: NodeName,
    /// Its subject, for a subject trigger.
    #[oai(skip_serializing_if_is_none)]
    pub subject: Option<String>,
    /// Its schedule, for a cron trigger.
    #[oai(skip_serializing_if_is_none)]
    pub cron: Option<String>,
    /// The input of a cron trigger's activations.
    #[oai(skip_serializing_if_is_none)]
    pub input: Option<serde_json::Value>,
    /// Each activation's budget in milliseconds.
    #[oai(skip_serializing_if_is_none)]
    pub timeout_ms: Option<u64>,
}

fn view(name: NodeName, t: Trigger) -> TriggerView {
    TriggerView {
        name,
        node: t.node,
        subject: t.subject,
        cron: t.cron,
        input: t.input,
        timeout_ms: t.timeout_ms,
    }
}

/// Every trigger this gateway runs.
#[derive(Debug, Clone, Object)]
pub struct TriggerList {
    /// By name.
    pub triggers: Vec<TriggerView>,
}

/// The answer to a change.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ChangeResponse {
    /// Stored: every gateway runs it within a moment.
    #[oai(status = 200)]
    Stored(Json<Box<TriggerView>>),
    /// Removed: no gateway runs it any longer.
    #[oai(status = 204)]
    Removed,
    /// Not a trigger: a wrong field, both or neither of subject and cron, a reserved or
    /// wildcard subject, a schedule that does not parse.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token and none or a wrong one was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// No trigger of that name.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// JetStream is unavailable: nothing changed.
    #[oai(status = 503)]
    Unavailable(Json<ApiError>),
}

fn bad_request(err: poem::Error) -> ChangeResponse {
    ChangeResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// Triggers.
pub struct TriggersApi(pub Arc<State>);

impl TriggersApi {
    fn store(&self) -> Result<&async_nats::jetstream::kv::Store, ChangeResponse> {
        self.0.trigger_store.as_ref().ok_or_else(|| {
            ChangeResponse::Unavailable(Json(ApiError::new(
                "unavailable",
                "triggers need JetStream, which this gateway does not have",
            )))
        })
    }
}

/// The answer to a listing.
#[derive(ApiResponse)]
pub enum ListResponse {
    /// Every trigger.
    #[oai(status = 200)]
    Listed(Json<TriggerList>),
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
}

#[OpenApi]
impl TriggersApi {
    /// List triggers
    ///
    /// The triggers this gateway runs (every gateway runs the same ones, from the
    /// key-value bucket `MESH_TRIGGERS`).
    #[oai(
        path = "/triggers",
        method = "get",
        tag = "ApiTags::Triggers",
        operation_id = "list_triggers"
    )]
    async fn list(&self, reader: Reader) -> ListResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return ListResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        ListResponse::Listed(Json(TriggerList {
            triggers: self
                .0
                .triggers
                .list()
                .into_iter()
                .map(|(n, t)| view(n, t))
                .collect(),
        }))
    }

    /// Set a trigger
    ///
    /// Stores the trigger in `MESH_TRIGGERS`; every gateway runs it within a moment,
    /// replacing an earlier one of the same name.
    #[oai(
        path = "/triggers/:name",
        method = "put",
        tag = "ApiTags::Triggers",
        operation_id = "set_trigger"
    )]
    async fn set(
        &self,
        caller: Caller,
        name: Path<NodeName>,
        body: Json<TriggerBody>,
    ) -> ChangeResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return ChangeResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let store = match self.store() {
            Ok(s) => s,
            Err(r) => return r,
        };
        let b = body.0;
        let trigger = Trigger {
            node: b.node,
            subject: b.subject,
            cron: b.cron,
            input: b.input,
            timeout_ms: b.timeout_ms,
        };
        if let Err(e) = crate::triggers::check(&trigger) {
            return ChangeResponse::BadRequest(Json(ApiError::new("bad_trigger", e)));
        }
        let body = serde_json::to_vec(&trigger).unwrap_or_default();
        match store.put(name.0.as_str(), body.into()).await {
            Ok(_) => ChangeResponse::Stored(Json(Box::new(view(name.0, trigger)))),
            Err(e) => ChangeResponse::Unavailable(Json(ApiError::new(
                "unavailable",
                format!("nothing changed: {e}"),
            ))),
        }
    }

    /// Remove a trigger
    #[oai(
        path = "/triggers/:name",
        method = "delete",
        tag = "ApiTags::Triggers",
        operation_id = "remove_trigger"
    )]
    async fn remove(&self, caller: Caller, name: Path<NodeName>) -> ChangeResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return ChangeResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let store = match self.store() {
            Ok(s) => s,
            Err(r) => return r,
        };
        match store.get(name.0.as_str()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return ChangeResponse::NotFound(Json(ApiError::new(
                    "unknown_trigger",
                    format!("no trigger {}", name.0),
                )))
            }
            Err(e) => {
                return ChangeResponse::Unavailable(Json(ApiError::new(
                    "unavailable",
                    e.to_string(),
                )))
            }
        }
        match store.purge(name.0.as_str()).await {
            Ok(()) => ChangeResponse::Removed,
            Err(e) => ChangeResponse::Unavailable(Json(ApiError::new(
                "unavailable",
                format!("nothing changed: {e}"),
            ))),
        }
    }
}
