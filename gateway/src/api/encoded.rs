//! A JSON body encoded once with serde, documented as the type it encodes.
//!
//! poem-openapi's `Json<T>` answers by building a `serde_json::Value` of `T` and then
//! encoding that: a map and a string per field, on every answer. [`Encoded`] encodes
//! `T` straight to bytes: the same JSON, since the types' serde and OpenAPI forms are
//! one (the test below holds them to it).

use std::marker::PhantomData;

use bytes::Bytes;
use poem::{http::header, IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::Type,
    ApiResponse,
};
use serde::Serialize;

/// `T` as JSON bytes.
pub struct Encoded<T> {
    bytes: Bytes,
    of: PhantomData<fn() -> T>,
}

impl<T: Serialize> Encoded<T> {
    /// Encodes `value`.
    pub fn new(value: &T) -> Self {
        // Types made of strings, numbers and maps with string keys always encode.
        let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Self {
            bytes: bytes.into(),
            of: PhantomData,
        }
    }

    /// `json` as it is: the caller knows it to be the JSON of a `T` (a reply tree read
    /// by [`schemas::reply_in_place::ReplyRoot::read`], say).
    pub fn of_json(json: Bytes) -> Self {
        Self {
            bytes: json,
            of: PhantomData,
        }
    }

    /// The JSON, shared (not copied).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }
}

/// The content type of every [`Encoded`] body.
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

impl<T: Type> Payload for Encoded<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for Encoded<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(self.bytes)
    }
}

impl<T: Type> ApiResponse for Encoded<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;
    use schemas::{ActivationId, ActivationReply, NodeName, Outcome};

    use super::*;

    /// The bytes are the JSON poem-openapi would have answered with.
    #[test]
    fn encodes_what_json_would() {
        let node = |n: &str| NodeName::new(n).unwrap();
        let id = ActivationId::new("a1").unwrap();
        let mut reply = ActivationReply::new(node("UI"), id.clone(), Outcome::Ok, "ok");
        reply.result = Some(serde_json::json!({"z": [1, "two", null], "a": {"b": 1.5}}));
        reply.children = vec![
            ActivationReply::new(node("D"), id.clone(), Outcome::Timeout, "late \"quoted\" ü"),
            ActivationReply::new(node("E"), id, Outcome::Unavailable, "gone"),
        ];
        let encoded = Encoded::new(&reply);
        let ours: serde_json::Value = serde_json::from_slice(&encoded.bytes).unwrap();
        assert_eq!(Some(ours), reply.to_json());
    }
}
