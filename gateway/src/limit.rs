//! Request body size limit: 413 with a JSON error beyond `max` bytes, whether the body
//! declares its length or streams without one. Requests without a body pass untouched.

use poem::{
    http::{header, StatusCode},
    Body, Endpoint, IntoResponse, Request, Response, Result,
};

use crate::api::ApiError;

/// Refuses bodies larger than `max` bytes before the endpoint sees them.
pub async fn limit_body<E: Endpoint>(
    endpoint: E,
    mut req: Request,
    max: usize,
) -> Result<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => return Ok(too_large(max)),
        Some(_) => {}
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            match req.take_body().into_bytes_limit(max).await {
                Ok(bytes) => req.set_body(Body::from_bytes(bytes)),
                Err(_) => return Ok(too_large(max)),
            }
        }
        None => {}
    }
    endpoint.call(req).await.map(IntoResponse::into_response)
}

fn too_large(max: usize) -> Response {
    let body = ApiError::new(
        "payload_too_large",
        format!("request body is larger than {max} bytes"),
    );
    let json = poem_openapi::types::ToJSON::to_json_string(&body);
    Response::builder()
        .status(StatusCode::PAYLOAD_TOO_LARGE)
        .content_type("application/json; charset=utf-8")
        .body(json)
}
