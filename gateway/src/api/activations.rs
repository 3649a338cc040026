//! `GET /activations` and `GET /activations/{id}`: the activation inspector's reads.

use std::sync::Arc;

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, Object, OpenApi,
};
use schemas::{
    job::{JobRecord, JobState},
    record::{ActivationRecord, ActivationSummary, RecordedRequest},
    ActivationId, ActivationReply, Outcome,
};

use super::{ApiError, ApiTags};
use crate::{
    activations::ReadError,
    auth::{Reader, CHALLENGE},
    state::State,
};

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
    /// For an asynchronous activation: its state and every attempt.
    #[oai(skip_serializing_if_is_none)]
    pub job: Option<JobView>,
}

/// One attempt of an asynchronous activation.
#[derive(Debug, Clone, Object)]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: u32,
    /// The gateway that ran it.
    pub gateway: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How it ended (absent while it runs).
    #[oai(skip_serializing_if_is_none)]
    pub outcome: Option<Outcome>,
    /// Its root code.
    #[oai(skip_serializing_if_is_none)]
    pub code: Option<u16>,
    /// How long it took, in milliseconds.
    #[oai(skip_serializing_if_is_none)]
    pub elapsed_ms: Option<u64>,
    /// Its reply tree.
    #[oai(skip_serializing_if_is_none)]
    pub reply: Option<ActivationReply>,
}

/// An asynchronous activation: where it is and every attempt so far.
#[derive(Debug, Clone, Object)]
pub struct JobView {
    /// Its id.
    pub activation_id: ActivationId,
    /// `queued`, `running`, `done` or `dead`.
    pub state: String,
    /// What was asked.
    pub request: RecordedRequest,
    /// When it was accepted (RFC 3339).
    pub queued_at: String,
    /// Attempts before it is dead.
    pub max_attempts: u32,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<AttemptView>,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        Self {
            activation_id: r.job.activation_id,
            state: r.state.to_string(),
            request: r.job.request,
            queued_at: r.job.queued_at,
            max_attempts: r.job.max_attempts,
            attempts: r
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    gateway: a.gateway,
                    started_at: a.started_at,
                    outcome: a.outcome,
                    code: a.code,
                    elapsed_ms: a.elapsed_ms,
                    reply: a.reply,
                })
                .collect(),
        }
    }
}

/// A dead activation's summary: its last attempt.
fn dead_summary(r: &JobRecord) -> ActivationSummary {
    let last = r.attempts.last();
    ActivationSummary {
        activation_id: r.job.activation_id.clone(),
        node: r.job.request.node.clone(),
        outcome: last.and_then(|a| a.outcome).unwrap_or(Outcome::Unavailable),
        code: last
            .and_then(|a| a.code)
            .unwrap_or(schemas::code::UNAVAILABLE),
        elapsed_ms: last.and_then(|a| a.elapsed_ms).unwrap_or(0),
        started_at: last.map_or_else(|| r.job.queued_at.clone(), |a| a.started_at.clone()),
    }
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
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
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
    /// An asynchronous activation still queued or running: its state and attempts so far.
    #[oai(status = 202)]
    Pending(Json<Box<JobView>>),
    /// The id is not a valid activation id.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// No such activation is kept (unknown, or aged out).
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// The kept activations cannot be read now (JetStream does not answer).
    #[oai(status = 503)]
    Unavailable(Json<ApiError>),
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
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
        reader: Reader,
        /// How many to list (1 to 500; 50 by default).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `dead`: the asynchronous activations whose every attempt said "try again".
        #[oai(validator(pattern = "^dead$"))]
        state: Query<Option<String>>,
    ) -> ListResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return ListResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT) as usize;
        if state.0.is_some() {
            let Some(jobs) = &self.0.jobs else {
                return ListResponse::Ok(Json(ActivationList {
                    activations: Vec::new(),
                    durable: false,
                }));
            };
            return match jobs.dead(limit).await {
                Ok(dead) => ListResponse::Ok(Json(ActivationList {
                    activations: dead.iter().map(dead_summary).collect(),
                    durable: true,
                })),
                Err(e) => ListResponse::Unavailable(Json(ApiError::new("unavailable", e))),
            };
        }
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
    async fn get(&self, reader: Reader, id: Path<ActivationId>) -> GetResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return GetResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let job = match &self.0.jobs {
            Some(jobs) => match jobs.record(&id.0).await {
                Ok(job) => job,
                Err(e) => return GetResponse::Unavailable(Json(ApiError::new("unavailable", e))),
            },
            None => None,
        };
        if let Some(job) = &job {
            if matches!(job.state, JobState::Queued | JobState::Running) {
                return GetResponse::Pending(Json(Box::new(job.clone().into())));
            }
        }
        match self.0.kept.get(&id.0).await {
            Ok(record) => {
                let trace_url = self
                    .0
                    .settings
                    .trace_url
                    .as_deref()
                    .zip(record.trace_id.as_deref().filter(|t| is_trace_id(t)))
                    .map(|(template, trace)| template.replace("{trace_id}", trace));
                GetResponse::Ok(Json(Box::new(ActivationDetail {
                    record,
                    trace_url,
                    job: job.map(Into::into),
                })))
            }
            // Ended, but its last attempt's record is not kept (aged out): the job says it.
            Err(ReadError::NotFound(_)) if job.is_some() => GetResponse::Pending(Json(Box::new(
                job.map(Into::into).unwrap_or_else(|| unreachable!()),
            ))),
            Err(e @ ReadError::NotFound(_)) => {
                GetResponse::NotFound(Json(ApiError::new("unknown_activation", e.to_string())))
            }
            Err(e) => GetResponse::Unavailable(Json(ApiError::new("unavailable", e.to_string()))),
        }
    }
}

/// The answer to a re-run.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "retry_bad_request")]
pub enum RetryResponse {
    /// Queued again with a fresh set of attempts.
    #[oai(status = 202)]
    Accepted(Json<Box<JobView>>, #[oai(header = "Location")] String),
    /// Not an activation id.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token and none or a wrong one was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// No asynchronous activation of that id is kept.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// It is not dead (queued, running or done).
    #[oai(status = 409)]
    Conflict(Json<ApiError>),
    /// JetStream is unavailable: nothing changed.
    #[oai(status = 503)]
    Unavailable(Json<ApiError>),
}

fn retry_bad_request(err: poem::Error) -> RetryResponse {
    RetryResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// Re-running dead activations.
pub struct RetryApi(pub Arc<State>);

#[OpenApi]
impl RetryApi {
    /// Re-run a dead activation
    ///
    /// Queues a dead asynchronous activation again, with as many attempts as a new one;
    /// its earlier attempts stay in its record.
    #[oai(
        path = "/activations/:id/retry",
        method = "post",
        tag = "ApiTags::Activation",
        operation_id = "retry_activation"
    )]
    async fn retry(&self, caller: crate::auth::Caller, id: Path<ActivationId>) -> RetryResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return RetryResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let Some(jobs) = &self.0.jobs else {
            return RetryResponse::NotFound(Json(ApiError::new(
                "unknown_activation",
                "this gateway keeps no asynchronous activations (no JetStream)",
            )));
        };
        use crate::jobs::RetryError;
        match jobs.retry(&id.0).await {
            Ok(record) => {
                self.0
                    .metrics
                    .jobs
                    .get_or_create(&crate::metrics::JobLabels { event: "accepted" })
                    .inc();
                let location = format!("/activations/{}", id.0);
                RetryResponse::Accepted(Json(Box::new(record.into())), location)
            }
            Err(e @ RetryError::NotFound(_)) => {
                RetryResponse::NotFound(Json(ApiError::new("unknown_activation", e.to_string())))
            }
            Err(e @ RetryError::NotDead(..)) => {
                RetryResponse::Conflict(Json(ApiError::new("conflict", e.to_string())))
            }
            Err(e) => RetryResponse::Unavailable(Json(ApiError::new("unavailable", e.to_string()))),
        }
    }
}
