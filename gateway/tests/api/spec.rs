//! In-process checks of the routes, the page and the OpenAPI document.

use poem::test::TestClient;

use crate::helpers::*;

type Spec = (
    NatsServer,
    TestClient<poem::endpoint::BoxEndpoint<'static>>,
    gateway::Gateway,
);

async fn client() -> Spec {
    client_with(|_| {}).await
}

async fn client_with(tweak: impl FnOnce(&mut gateway::Settings)) -> Spec {
    let server = NatsServer::start();
    let nats = mesh_core::bus::NatsArgs::for_url(server.url())
        .connect("spec test")
        .await
        .unwrap();
    let mut config = gateway::Settings::default();
    tweak(&mut config);
    let gateway = gateway::Gateway::start(config, nats).await.unwrap();
    let client = TestClient::new(gateway.routes());
    (server, client, gateway)
}

#[tokio::test]
async fn validation_errors_are_400_with_a_json_body() {
    let (_server, cli, _gw) = client().await;
    for body in [
        r#"{"node":"a.b"}"#,
        r#"{"node":"x","unknown":1}"#,
        r#"{"color":"url(javascript:x)"}"#,
        r#"{"timeout_ms":-1}"#,
        r#"{"activation_id":"has space"}"#,
        "[]",
        "",
    ] {
        let resp = cli
            .post("/activate")
            .content_type("application/json")
            .body(body)
            .send()
            .await;
        resp.assert_status(poem::http::StatusCode::BAD_REQUEST);
        let json = resp.json().await;
        json.value()
            .object()
            .get("error")
            .assert_string("bad_request");
    }
    let resp = cli
        .post("/activate")
        .content_type("text/plain")
        .body("{}")
        .send()
        .await;
    assert!(resp.0.status().is_client_error());
}

#[tokio::test]
async fn page_and_assets_are_served_from_the_binary() {
    let (_server, cli, _gw) = client().await;
    // Swagger UI: no framing by other sites, no sniffing; the API too.
    let docs = cli.get("/docs").send().await;
    docs.assert_status_is_ok();
    let csp = docs.0.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    docs.assert_header("x-content-type-options", "nosniff");
    docs.assert_header("x-frame-options", "DENY");
    let api = cli.get("/topology").send().await;
    api.assert_header("x-content-type-options", "nosniff");
    // Errors that no handler answered too: an unknown path, a method not allowed.
    let missing = cli.get("/no-such-path").send().await;
    missing.assert_status(poem::http::StatusCode::NOT_FOUND);
    missing.assert_header("x-content-type-options", "nosniff");
    let refused = cli.delete("/activate").send().await;
    refused.assert_status(poem::http::StatusCode::METHOD_NOT_ALLOWED);
    refused.assert_header("x-content-type-options", "nosniff");
    let page = cli.get("/").send().await;
    page.assert_status_is_ok();
    page.assert_content_type("text/html; charset=utf-8");
    assert!(page.0.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.0.into_body().into_string().await.unwrap();
    assert!(
        html.contains("/assets/mermaid.min.js")
            && !html.contains("http://")
            && !html.contains("https://")
    );
    let mermaid = cli.get("/assets/mermaid.min.js").send().await;
    mermaid.assert_status_is_ok();
    let js = mermaid.0.into_body().into_bytes().await.unwrap();
    assert!(
        js.len() > 1_000_000,
        "the whole Mermaid bundle is compiled in"
    );
    cli.get("/assets/app.js").send().await.assert_status_is_ok();
    cli.get("/assets/style.css")
        .send()
        .await
        .assert_status_is_ok();
    cli.get("/assets/..%2FCargo.toml")
        .send()
        .await
        .assert_status(poem::http::StatusCode::NOT_FOUND);
    cli.get("/docs").send().await.assert_status_is_ok();
}

#[tokio::test]
#[ignore = "external: needs python3 with openapi-spec-validator (PyPI); ./scripts/test installs it and runs this"]
async fn openapi_document_describes_every_route_and_validates() {
    let (_server, cli, _gw) = client().await;
    let resp = cli.get("/openapi.json").send().await;
    resp.assert_status_is_ok();
    let text = resp.0.into_body().into_string().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    for path in [
        "/activate",
        "/nodes/{node}/color",
        "/events",
        "/topology",
        "/topology/mermaid",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    // The route table is derived from the document: every path is routed and labelled
    // by its own template.
    let table = gateway::routes::RouteTable::from_document(&text);
    let prefixes = table.api_prefixes();
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(
            prefixes.iter().any(|p| path.starts_with(p.as_str())),
            "{path}"
        );
        let concrete = path.replace("{node}", "V");
        assert_eq!(&table.label(&concrete), path);
    }
    let responses = doc["paths"]["/activate"]["post"]["responses"]
        .as_object()
        .unwrap();
    for code in [
        "200", "400", "401", "404", "413", "500", "502", "503", "504", "508",
    ] {
        let r = &responses[code];
        let content = r["content"].as_object().unwrap();
        let (media, body) = content.iter().next().unwrap();
        assert!(media.starts_with("application/json"), "{code}: {media}");
        assert!(body["schema"].is_object(), "{code}: {r}");
    }
    assert_eq!(
        doc["components"]["schemas"]["ActivationReply"]["properties"]["children"]["items"]["$ref"],
        "#/components/schemas/ActivationReply"
    );
    // An independent validator (openapi-spec-validator, installed by the test command).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn poem_openapi_json_matches_serde_json() {
    // The gateway writes replies with poem-openapi, nodes with serde: same bytes.
    use poem_openapi::types::ToJSON;
    let reply: schemas::ActivationReply = serde_json::from_str(
        r#"{"node":"V","activation_id":"a","instance":"i","outcome":"timeout","code":504,"elapsed_ms":3,"message":"m","children":[{"node":"T","activation_id":"a","instance":"","outcome":"unavailable","code":503,"elapsed_ms":0,"message":"x","children":[]}]}"#,
    )
    .unwrap();
    assert_eq!(
        reply.to_json().unwrap(),
        serde_json::to_value(&reply).unwrap()
    );
    let mut event = schemas::StatusEvent::new(name("V"), schemas::NodeState::Manual);
    event.color = Some(schemas::Color::new("#abc").unwrap());
    assert_eq!(
        event.to_json().unwrap(),
        serde_json::to_value(&event).unwrap()
    );
}

#[tokio::test]
async fn bearer_token_guards_only_the_mutating_routes() {
    let (_server, cli, _gw) = client_with(|c| c.api_token = Some("t0ken".into())).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("t0ken"),
        Some("Basic t0ken"),
    ] {
        let mut req = cli
            .post("/activate")
            .content_type("application/json")
            .body("{}");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await;
        resp.assert_status(poem::http::StatusCode::UNAUTHORIZED);
        resp.assert_header("www-authenticate", "Bearer");
        resp.json()
            .await
            .value()
            .object()
            .get("error")
            .assert_string("unauthorized");
    }
    let resp = cli
        .put("/nodes/V/color")
        .content_type("application/json")
        .body(r#"{"color":"red"}"#)
        .send()
        .await;
    resp.assert_status(poem::http::StatusCode::UNAUTHORIZED);
    for (method, body) in [("PUT", r#"{"fail_rate":1}"#), ("DELETE", "")] {
        let req = match method {
            "PUT" => cli.put("/nodes/V/config"),
            _ => cli.delete("/nodes/V/config"),
        };
        let resp = req.content_type("application/json").body(body).send().await;
        resp.assert_status(poem::http::StatusCode::UNAUTHORIZED);
    }
    // With the token the request reaches the API (no nodes here: 404).
    let resp = cli
        .post("/activate")
        .header("authorization", "Bearer t0ken")
        .content_type("application/json")
        .body(r#"{"node":"nobody"}"#)
        .send()
        .await;
    resp.assert_status(poem::http::StatusCode::NOT_FOUND);
    cli.get("/topology").send().await.assert_status_is_ok();
    cli.get("/").send().await.assert_status_is_ok();
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_the_allow_list() {
    let (_server, cli, _gw) = client().await;
    let resp = cli
        .get("/topology")
        .header("origin", "http://elsewhere.example")
        .send()
        .await;
    resp.assert_status_is_ok();
    assert!(resp
        .0
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let (_server, cli, _gw) =
        client_with(|c| c.cors_origins = vec!["http://ok.example".into()]).await;
    let allowed = cli
        .get("/topology")
        .header("origin", "http://ok.example")
        .send()
        .await;
    allowed.assert_status_is_ok();
    allowed.assert_header("access-control-allow-origin", "http://ok.example");
    // The answer depends on the Origin: shared caches must not serve one origin's to
    // another.
    let varies = |resp: &poem::test::TestResponse| {
        resp.0
            .headers()
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
    };
    assert!(varies(&allowed), "{:?}", allowed.0.headers());
    let preflight = cli
        .options("/activate")
        .header("origin", "http://ok.example")
        .header("access-control-request-method", "POST")
        .send()
        .await;
    preflight.assert_status_is_ok();
    let denied = cli
        .get("/topology")
        .header("origin", "http://evil.example")
        .send()
        .await;
    assert!(denied
        .0
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(varies(&denied), "{:?}", denied.0.headers());
    let no_origin = cli.get("/topology").send().await;
    assert!(varies(&no_origin), "{:?}", no_origin.0.headers());
    // The page's own requests carry the gateway's own origin: never refused.
    let evil_put = cli
        .put("/nodes/V/color")
        .header("host", "mesh.example:8080")
        .header("origin", "http://evil.example")
        .content_type("application/json")
        .body(r#"{"color":"red"}"#)
        .send()
        .await;
    evil_put.assert_status(poem::http::StatusCode::FORBIDDEN);
    let own_put = cli
        .put("/nodes/V/color")
        .header("host", "mesh.example:8080")
        .header("origin", "http://mesh.example:8080")
        .content_type("application/json")
        .body(r#"{"color":"red"}"#)
        .send()
        .await;
    // Past CORS: the API answers (no node V here: 404).
    own_put.assert_status(poem::http::StatusCode::NOT_FOUND);
}
