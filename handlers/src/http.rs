//! An HTTP endpoint as a function: the [`schemas::FunctionInput`] document is POSTed as
//! JSON (with the trace's `traceparent`); a 2xx JSON body is the result; any other
//! status fails with that status as the code; no answer within the budget is a timeout.
//! One pooled client per node reuses connections; redirects are not followed.

use std::time::Duration;

use futures::future::BoxFuture;
use schemas::code;
use serde_json::Value;

use crate::function::{Call, Function, FunctionError};

/// Where the endpoint is.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Largest response body accepted, in bytes.
    pub max_output_bytes: usize,
}

/// An HTTP endpoint as a [`Function`].
#[derive(Clone, Debug)]
pub struct HttpEndpoint {
    url: reqwest::Url,
    client: reqwest::Client,
    max_output_bytes: usize,
}

impl HttpEndpoint {
    /// A client for `spec`'s endpoint; the URL must be `http://` (put a local proxy in
    /// front of an `https://` endpoint).
    pub fn new(spec: &HttpSpec) -> Result<Self, EndpointError> {
        let url = check_url(&spec.url)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(EndpointError::Client)?;
        Ok(Self {
            url,
            client,
            max_output_bytes: spec.max_output_bytes,
        })
    }
}

/// Why an HTTP endpoint cannot be a node's function.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error("http = {url:?}: {cause}")]
    Url {
        /// What was given.
        url: String,
        /// Why it is not a URL.
        cause: url::ParseError,
    },
    /// A URL, but not `http://host[:port]/path`.
    #[error("http = {0:?}: only http://host[:port]/path URLs are supported")]
    Scheme(String),
    /// The HTTP client could not be built.
    #[error("cannot build an HTTP client: {0}")]
    Client(reqwest::Error),
}

/// `url` if it is a usable `http://` URL.
pub fn check_url(url: &str) -> Result<reqwest::Url, EndpointError> {
    let parsed = reqwest::Url::parse(url).map_err(|cause| EndpointError::Url {
        url: url.to_string(),
        cause,
    })?;
    if parsed.scheme() != "http" || parsed.host_str().is_none() {
        return Err(EndpointError::Scheme(url.to_string()));
    }
    Ok(parsed)
}

impl Function for HttpEndpoint {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, FunctionError>> {
        let this = self.clone();
        Box::pin(async move { this.post(call).await })
    }
}

impl HttpEndpoint {
    async fn post(&self, call: Call) -> Result<Value, FunctionError> {
        let body = serde_json::to_vec(&call.document())
            .map_err(|e| FunctionError::failed(format!("cannot encode the input: {e}")))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(Duration::from_millis(call.budget_ms().max(1)))
            .body(body);
        if let Some(traceparent) = &call.traceparent {
            request = request.header("traceparent", traceparent);
        }
        let mut response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if out.len() + chunk.len() > self.max_output_bytes {
                return Err(FunctionError::bad_output(format!(
                    "{} answered more than {} bytes (the node's max_output_bytes)",
                    self.url, self.max_output_bytes
                )));
            }
            out.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let code = Some(status.as_u16())
                .filter(|c| (400..=599).contains(c))
                .unwrap_or(code::BAD_GATEWAY);
            return Err(FunctionError {
                code,
                message: format!(
                    "{} answered {status}: {}",
                    self.url,
                    String::from_utf8_lossy(&out[..out.len().min(200)]).trim()
                ),
            });
        }
        serde_json::from_slice(&out).map_err(|e| {
            FunctionError::bad_output(format!(
                "{} answered a body that is not JSON: {e}",
                self.url
            ))
        })
    }

    fn transport(&self, e: &reqwest::Error) -> FunctionError {
        if e.is_timeout() {
            FunctionError {
                code: code::TIMEOUT,
                message: format!("{} did not answer within the budget", self.url),
            }
        } else {
            FunctionError::bad_output(format!("cannot reach {}: {e}", self.url))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls() {
        assert!(check_url("http://127.0.0.1:8000/count").is_ok());
        for bad in [
            "https://x/",
            "ftp://x/",
            "x",
            "http://",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
