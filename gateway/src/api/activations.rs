//! `GET /activations` and `GET /activations/{id}`: the activation inspector's reads.

use std::sync::Arc;

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, Object, OpenApi,
};
use schemas::{
    record::{ActivationRecord, ActivationSummary},
    ActivationId,
};

use super::{ApiError, ApiTags};
use crate::{activations::ReadError, state::State};

/// Activations listed when the query gives no `limit`.
const DEFAULT_LIMIT: u32 = 50;

/// The recent activations.
#[derive(Debug, Clone, Object)]
pub struct ActivationList {
    /// Newest first.
    pub activations: Vec<ActivationSummary>,
    /// Whether they are kept in JetStream (any gateway answers, also after a restart)
    /// rather than in this gateway's memory.
    pub durable: bool,
}

/// A kept activation, with a link to its trace when a tracing UI is configured.
#[derive(Debug, Clone, Object)]
pub struct ActivationDetail {
    /// The record.
    #[oai(flatten)]
    pub record: ActivationRecord,
    /// The trace in the tracing UI (`MESH_GATEWAY_TRACE_URL` with the trace id), when
    /// one is configured and the activation was traced.
    #[oai(skip_serializing_if_is_none)]
    pub trace_url: Option<String>,
}

/// The answer to a list request.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "list_bad_request")]
pub enum ListResponse {
    /// The recent activations.
    #[oai(status = 200)]
    Ok(Json<ActivationList>),
    /// `limit` is not a number from 1 to 500.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The kept activations cannot be read now (JetStream does not answer).
    #[oai(status = 503)]
    Unavailable(Json<ApiError>),
}

fn list_bad_request(err: poem::Error) -> ListResponse {
    ListResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// The answer to a read of one activation.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "get_bad_request")]
pub enum GetResponse {
    /// The activation: what was asked, the reply tree, the status events as received.
    #[oai(status = 200)]
    Ok(Json<Box<ActivationDetail>>),
    /// The id is not a valid activation id.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// No such activation is kept (unknown, or aged out).
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// The kept activations cannot be read now (JetStream does not answer).
    #[oai(status = 503)]
    Unavailable(Json<ApiError>),
}

fn get_bad_request(err: poem::Error) -> GetResponse {
    GetResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// 32 lower-case hex digits: a trace id that is safe in a URL.
fn is_trace_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The inspector's operations.
pub struct ActivationsApi(pub Arc<State>);

#[OpenApi]
impl ActivationsApi {
    /// Recent activations
    ///
    /// The activations gateways ran (`POST /activate`), newest first: id, root node,
    /// outcome, code, elapsed time and start. Kept in the JetStream stream
    /// `MESH_ACTIVATIONS` (bounded by age and size), or in this gateway's memory (the
    /// newest 256) without JetStream.
    #[oai(
        path = "/activations",
        method = "get",
        tag = "ApiTags::Activation",
        operation_id = "list_activations"
    )]
    async fn list(
        &self,
        /// How many to list (1 to 500; 50 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> ListResponse {
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT) as usize;
        match self.0.kept.recent(limit).await {
            Ok(activations) => ListResponse::Ok(Json(ActivationList {
                activations,
                durable: self.0.kept.durable(),
            })),
            Err(e) => ListResponse::Unavailable(Json(ApiError::new("unavailable", e.to_string()))),
        }
    }

    /// One activation
    ///
    /// A kept activation: what was asked (to repeat it), the reply tree, and its status
    /// events in the order this gateway received them, with their offsets from the
    /// start (the inspector's waterfall).
    #[oai(
        path = "/activations/:id",
        method = "get",
        tag = "ApiTags::Activation",
        operation_id = "get_activation"
    )]
    async fn get(&self, id: Path<ActivationId>) -> GetResponse {
        match self.0.kept.get(&id.0).await {
            Ok(record) => {
                let trace_url = self
                    .0
                    .settings
                    .trace_url
                    .as_deref()
                    .zip(record.trace_id.as_deref().filter(|t| is_trace_id(t)))
                    .map(|(template, trace)| template.replace("{trace_id}", trace));
                GetResponse::Ok(Json(Box::new(ActivationDetail { record, trace_url })))
            }
            Err(e @ ReadError::NotFound(_)) => {
                GetResponse::NotFound(Json(ApiError::new("unknown_activation", e.to_string())))
            }
            Err(e) => GetResponse::Unavailable(Json(ApiError::new("unavailable", e.to_string()))),
        }
    }
}
