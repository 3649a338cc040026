//! The optional bearer token of the mutating routes.

use poem::{
    http::{header, Method, StatusCode},
    Endpoint, IntoResponse, Request, Response, Result,
};
use subtle::ConstantTimeEq;

use crate::api::ApiError;

/// Whether a request changes something: `POST /activate`, `PUT /nodes/{node}/color`.
pub fn is_mutating(req: &Request) -> bool {
    let path = req.uri().path();
    (req.method() == Method::POST && path == "/activate")
        || (req.method() == Method::PUT && path.starts_with("/nodes/"))
}

/// Lets a mutating request through only with `Authorization: Bearer <token>`.
pub async fn require_token<E: Endpoint>(
    endpoint: E,
    req: Request,
    token: String,
) -> Result<Response> {
    if is_mutating(&req) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let body = ApiError::new(
                "unauthorized",
                "this gateway requires `Authorization: Bearer <token>` to activate or colour nodes",
            );
            return Ok(Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, "Bearer")
                .content_type("application/json; charset=utf-8")
                .body(poem_openapi::types::ToJSON::to_json_string(&body)));
        }
    }
    endpoint.call(req).await.map(IntoResponse::into_response)
}
