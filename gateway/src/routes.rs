//! The route table, derived from the OpenAPI document: which path prefixes the router
//! sends to the API, which route label a request gets in metrics, and which methods a
//! path allows (for `Allow` on 405). Operations are added to the API only; nothing here
//! lists them again.

use std::collections::BTreeSet;

use poem::http::Method;
use serde_json::Value;

/// Whether a request path belongs to a route.
type Matcher = fn(&str) -> bool;

/// Routes outside the OpenAPI document: the page, its assets and the documents. Each is
/// `(label, matches)`.
const PAGE_ROUTES: [(&str, Matcher); 4] = [
    ("/", |p| p == "/"),
    ("/assets", |p| p.starts_with("/assets/")),
    ("/openapi.json", |p| p == "/openapi.json"),
    ("/docs", |p| p == "/docs" || p.starts_with("/docs/")),
];

/// Label of a request no route matches.
pub const UNMATCHED: &str = "other";

/// One path of the API.
#[derive(Debug)]
struct ApiPath {
    /// The path template, as in the document (`/nodes/{node}/color`): the metric label.
    template: String,
    /// Its segments; `None` stands for a parameter.
    segments: Vec<Option<String>>,
    /// Its methods, upper case.
    methods: Vec<String>,
}

/// The API's paths and the page's routes.
#[derive(Debug)]
pub struct RouteTable {
    api: Vec<ApiPath>,
}

impl RouteTable {
    /// The table of the API described by `document` (an OpenAPI document as JSON).
    pub fn from_document(document: &str) -> Self {
        let doc: Value = serde_json::from_str(document).unwrap_or_default();
        let api = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(template, item)| {
                let methods = item
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(method, _)| method.to_ascii_uppercase())
                    .collect();
                ApiPath {
                    segments: template
                        .split('/')
                        .skip(1)
                        .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                        .collect(),
                    template: template.clone(),
                    methods,
                }
            })
            .collect();
        Self { api }
    }

    /// First segments of the API's paths (`/activate`, `/nodes`, ...), where the router
    /// sends requests to the API.
    pub fn api_prefixes(&self) -> BTreeSet<String> {
        self.api
            .iter()
            .filter_map(|p| p.segments.first().cloned().flatten())
            .map(|first| format!("/{first}"))
            .collect()
    }

    fn api_path(&self, path: &str) -> Option<&ApiPath> {
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        self.api.iter().find(|p| {
            p.segments.len() == parts.len()
                && p.segments
                    .iter()
                    .zip(&parts)
                    .all(|(s, part)| s.as_deref().is_none_or(|s| s == *part) && !part.is_empty())
        })
    }

    /// The metric label of a request path: the template of the API path it matches (the
    /// one whose operation answers it), else the page route, else [`UNMATCHED`]. Always
    /// one of a fixed set.
    pub fn label(&self, path: &str) -> String {
        if let Some(p) = self.api_path(path) {
            return p.template.clone();
        }
        PAGE_ROUTES
            .iter()
            .find(|(_, matches)| matches(path))
            .map_or(UNMATCHED, |(label, _)| label)
            .to_string()
    }

    /// The methods `path` allows, for an `Allow` header; `None` when no route matches.
    pub fn allowed(&self, path: &str) -> Option<String> {
        if let Some(p) = self.api_path(path) {
            return Some(p.methods.join(", "));
        }
        PAGE_ROUTES
            .iter()
            .any(|(_, matches)| matches(path))
            .then(|| "GET, HEAD".to_string())
    }
}

/// The method as a metric label: the standard ones as they are, anything else `_OTHER` (as the OpenTelemetry conventions name it),
/// so invented methods cannot grow the label set.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"paths":{
        "/activate":{"post":{"operationId":"activate"}},
        "/nodes/{node}/color":{"put":{"operationId":"set_node_color"}},
        "/topology":{"get":{"operationId":"topology"}},
        "/topology/mermaid":{"get":{"operationId":"mermaid"}}}}"#;

    #[test]
    fn derives_prefixes_labels_and_methods() {
        let t = RouteTable::from_document(DOC);
        let prefixes: Vec<_> = t.api_prefixes().into_iter().collect();
        assert_eq!(prefixes, ["/activate", "/nodes", "/topology"]);
        assert_eq!(t.label("/nodes/V/color"), "/nodes/{node}/color");
        assert_eq!(t.label("/nodes//color"), UNMATCHED);
        assert_eq!(t.label("/topology/mermaid"), "/topology/mermaid");
        assert_eq!(t.label("/assets/app.js"), "/assets");
        assert_eq!(t.label("/../../etc/passwd"), UNMATCHED);
        assert_eq!(t.allowed("/activate").as_deref(), Some("POST"));
        assert_eq!(t.allowed("/").as_deref(), Some("GET, HEAD"));
        assert_eq!(t.allowed("/nope"), None);
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }
}
