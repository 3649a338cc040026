//! The error body shared by every operation.

use poem_openapi::Object;

/// What went wrong, for a request that could not be served.
#[derive(Debug, Clone, Object)]
pub struct ApiError {
    /// A short machine-readable kind: `bad_request`, `bus_down`, `too_many_clients`, ...
    pub error: String,
    /// A sentence for humans.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            error: kind.to_string(),
            message: message.into(),
        }
    }

    /// The body of a request the OpenAPI layer refused (malformed JSON, wrong types,
    /// invalid names or colours).
    pub fn bad_request(err: &poem::Error) -> Self {
        Self::new("bad_request", err.to_string())
    }
}
