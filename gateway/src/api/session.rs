//! `POST /session` and `DELETE /session`: the read cookie, for browsers. `EventSource`
//! cannot send an `Authorization` header, so the page trades the read token for an
//! HttpOnly, SameSite=Strict cookie once, and every read (the event stream included)
//! carries it.

use std::sync::Arc;

use poem_openapi::{payload::Json, ApiResponse, OpenApi};

use super::{ApiError, ApiTags};
use crate::{
    auth::{Reader, CHALLENGE, READ_COOKIE},
    state::State,
};

/// The answer to a session request.
#[derive(ApiResponse)]
pub enum SessionResponse {
    /// Done: the cookie is set (opened), cleared (closed), or not needed (reads are
    /// open on this gateway).
    #[oai(status = 204)]
    Done(#[oai(header = "Set-Cookie")] Option<String>),
    /// Reads are private and the token is neither the read token nor the API token.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
}

/// Session operations.
pub struct SessionApi(pub Arc<State>);

#[OpenApi]
impl SessionApi {
    /// Open a read session
    ///
    /// With `Authorization: Bearer <read token>` (or the API token), sets the cookie
    /// `mesh_read` (HttpOnly, SameSite=Strict, for this browser session) that the reading
    /// operations accept: what the page does when reads are private
    /// (`MESH_GATEWAY_READ_TOKEN`).
    #[oai(
        path = "/session",
        method = "post",
        tag = "ApiTags::Session",
        operation_id = "open_session"
    )]
    async fn open(&self, reader: Reader) -> SessionResponse {
        if self.0.settings.read_token.is_none() {
            return SessionResponse::Done(None);
        }
        if let Err(e) = reader.may_read(&self.0.settings) {
            return SessionResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        SessionResponse::Done(
            reader
                .session_cookie()
                .map(|value| format!("{READ_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict")),
        )
    }

    /// Close the read session
    ///
    /// Clears the `mesh_read` cookie.
    #[oai(
        path = "/session",
        method = "delete",
        tag = "ApiTags::Session",
        operation_id = "close_session"
    )]
    async fn close(&self) -> SessionResponse {
        SessionResponse::Done(Some(format!(
            "{READ_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        )))
    }
}
