//! The live page and its assets, compiled into the binary (no CDN: works offline).

use poem::{handler, http::StatusCode, web::Path, IntoResponse, Response};

/// Version of the vendored Mermaid bundle (`assets/vendor/mermaid.min.js`).
pub const MERMAID_VERSION: &str = "12.3.0";

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const MERMAID_JS: &[u8] = include_bytes!("../assets/vendor/mermaid.min.js");

/// Content Security Policy of the page: everything from this origin, nothing inline
/// but Mermaid's generated styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// Content-Security-Policy of Swagger UI (`/docs`): its page carries inline script
/// and style; nothing is loaded from elsewhere and no other site may frame it.
pub const DOCS_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
                            style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                            connect-src 'self'; object-src 'none'; base-uri 'none'; \
                            frame-ancestors 'none'";

/// `GET /`: the live page.
#[handler]
pub fn index() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("Content-Security-Policy", CSP)
        .header("X-Content-Type-Options", "nosniff")
        .header("Cache-Control", "no-cache")
        .body(INDEX)
}

/// `GET /assets/:file`: the page's script, style sheet and Mermaid.
#[handler]
pub fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type, cache): (&'static [u8], _, _) = match file.as_str() {
        "app.js" => (
            APP_JS.as_bytes(),
            "text/javascript; charset=utf-8",
            "no-cache",
        ),
        "style.css" => (STYLE_CSS.as_bytes(), "text/css; charset=utf-8", "no-cache"),
        "protocol.js" => {
            return Response::builder()
                .content_type("text/javascript; charset=utf-8")
                .header("Cache-Control", "no-cache")
                .header("X-Content-Type-Options", "nosniff")
                .body(schemas::sse::SseEvent::javascript())
        }
        "mermaid.min.js" => (
            MERMAID_JS,
            "text/javascript; charset=utf-8",
            "public, max-age=86400",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    Response::builder()
        .content_type(content_type)
        .header("Cache-Control", cache)
        .header("X-Content-Type-Options", "nosniff")
        .body(body)
}
