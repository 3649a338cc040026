//! Who may change things: a bearer token, required by the mutating operations when the
//! gateway has one (`MESH_GATEWAY_API_TOKEN`), anonymous otherwise.
//!
//! The operations that change something take a [`Caller`] parameter, so the OpenAPI
//! document lists the bearer scheme on exactly those operations (optional, since the
//! scheme has an anonymous fallback), and each of them documents its 401 answer.

use poem_openapi::{auth::Bearer, SecurityScheme};
use subtle::ConstantTimeEq;

use crate::api::ApiError;

/// `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct Token(Bearer);

/// The caller of a mutating operation.
#[derive(SecurityScheme)]
pub enum Caller {
    /// Sent a bearer token (not yet compared with the gateway's).
    Token(Token),
    /// Sent none.
    #[oai(fallback)]
    Anonymous,
}

impl Caller {
    /// Whether this caller may act on a gateway whose token is `required`: anyone when
    /// there is none, else only a caller with the same token (compared in constant time).
    pub fn authorize(&self, required: Option<&str>) -> Result<(), ApiError> {
        let Some(required) = required else {
            return Ok(());
        };
        let given = match self {
            Caller::Token(Token(bearer)) => bearer.token.as_str(),
            Caller::Anonymous => "",
        };
        if bool::from(given.as_bytes().ct_eq(required.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::new(
                "unauthorized",
                "this gateway requires `Authorization: Bearer <token>` to activate or colour nodes",
            ))
        }
    }
}

/// The `WWW-Authenticate` value of a 401 answer.
pub const CHALLENGE: &str = "Bearer";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_a_token_closed_with_one() {
        let with = |t: &str| Caller::Token(Token(Bearer { token: t.into() }));
        assert!(Caller::Anonymous.authorize(None).is_ok());
        assert!(with("x").authorize(None).is_ok());
        assert!(Caller::Anonymous.authorize(Some("s3cret")).is_err());
        assert!(with("s3cre").authorize(Some("s3cret")).is_err());
        assert!(with("s3cret").authorize(Some("s3cret")).is_ok());
    }
}
