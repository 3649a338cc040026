//! Who may change things: a bearer token, required by the mutating operations when the
//! gateway has one (`MESH_GATEWAY_API_TOKEN`), anonymous otherwise. Who may read: with
//! `MESH_GATEWAY_READ_TOKEN`, the reading operations require that token (or the API
//! token), as a bearer token or as the session cookie [`READ_COOKIE`], which `POST
//! /session` sets for browsers: `EventSource` cannot send headers, and a token in a
//! query string would be logged everywhere.
//!
//! The operations that change something take a [`Caller`] parameter and the reading ones
//! a [`Reader`], so the OpenAPI document lists the schemes on exactly those operations
//! (optional, since the schemes have an anonymous fallback), and each of them documents
//! its 401 answer.

use poem_openapi::{
    auth::{ApiKey, Bearer},
    SecurityScheme,
};
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

/// The session cookie of a reader (HttpOnly, SameSite=Strict).
pub const READ_COOKIE: &str = "mesh_read";

/// The read cookie `POST /session` sets.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "mesh_read", key_in = "cookie")]
pub struct ReadCookie(ApiKey);

/// The caller of a reading operation.
#[derive(SecurityScheme)]
pub enum Reader {
    /// Sent a bearer token (the read token or the API token).
    Token(Token),
    /// Sent the session cookie.
    Cookie(ReadCookie),
    /// Sent neither.
    #[oai(fallback)]
    Anonymous,
}

/// The cookie value standing for `token`: a digest, so the token itself is not what
/// travels in every request's cookie header.
pub fn cookie_value(token: &str) -> String {
    mesh_wasm::store::sha256_hex(format!("nats-mesh read session\0{token}").as_bytes())
}

fn same(given: &str, wanted: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(wanted.as_bytes()))
}

impl Reader {
    /// Whether this caller may use the reading operations of a gateway with `settings`.
    pub fn may_read(&self, settings: &crate::settings::Settings) -> Result<(), ApiError> {
        self.authorize(
            settings.read_token.as_deref(),
            settings.api_token.as_deref(),
        )
    }

    /// The session cookie's value for the credential this reader sent (check it with
    /// [`Reader::authorize`] first).
    pub fn session_cookie(&self) -> Option<String> {
        match self {
            Reader::Token(Token(bearer)) => Some(cookie_value(&bearer.token)),
            Reader::Cookie(ReadCookie(key)) => Some(key.key.clone()),
            Reader::Anonymous => None,
        }
    }

    /// Whether this caller may read on a gateway whose read token is `read` and API
    /// token `write`: anyone when there is no read token, else a caller with either
    /// token (bearer) or the cookie of either (compared in constant time).
    pub fn authorize(&self, read: Option<&str>, write: Option<&str>) -> Result<(), ApiError> {
        let Some(read) = read else {
            return Ok(());
        };
        let tokens = std::iter::once(read).chain(write);
        let allowed = match self {
            Reader::Token(Token(bearer)) => tokens
                .map(|t| same(&bearer.token, t))
                .fold(false, |a, b| a | b),
            Reader::Cookie(ReadCookie(key)) => tokens
                .map(|t| same(&key.key, &cookie_value(t)))
                .fold(false, |a, b| a | b),
            Reader::Anonymous => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                "unauthorized",
                "this gateway's reads are private: send `Authorization: Bearer <read token>`, \
                 or open a session with POST /session (the page asks for the token)",
            ))
        }
    }
}

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

    #[test]
    fn reads_open_without_a_read_token_else_by_either_token_or_its_cookie() {
        let bearer = |t: &str| Reader::Token(Token(Bearer { token: t.into() }));
        let cookie = |v: String| Reader::Cookie(ReadCookie(ApiKey { key: v }));
        assert!(Reader::Anonymous.authorize(None, Some("w")).is_ok());
        assert!(Reader::Anonymous.authorize(Some("r"), Some("w")).is_err());
        assert!(bearer("r").authorize(Some("r"), Some("w")).is_ok());
        assert!(bearer("w").authorize(Some("r"), Some("w")).is_ok());
        assert!(bearer("x").authorize(Some("r"), Some("w")).is_err());
        assert!(bearer("w").authorize(Some("r"), None).is_err());
        assert!(cookie(cookie_value("r")).authorize(Some("r"), None).is_ok());
        assert!(cookie(cookie_value("w"))
            .authorize(Some("r"), Some("w"))
            .is_ok());
        assert!(
            cookie("r".into()).authorize(Some("r"), None).is_err(),
            "the raw token is no cookie"
        );
        assert_ne!(cookie_value("r"), cookie_value("s"));
    }
}
