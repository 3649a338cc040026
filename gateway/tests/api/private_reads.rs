//! Private reads (`MESH_GATEWAY_READ_TOKEN`): every reading operation answers 401 to
//! anonymous callers and serves the read token, the API token, or the session cookie
//! `POST /session` sets (what the page and `EventSource` use), on both transports of the
//! event stream. Health, metrics and the page itself stay open.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::helpers::*;

const READ: &str = "r3ad-t0ken";
const WRITE: &str = "wr1te-t0ken";

/// The first bytes of an event stream at `path` sent with `headers`, once it answers.
async fn first_frame(http: &reqwest::Client, url: &str, cookie: &str) -> (u16, String) {
    let r = http.get(url).header("cookie", cookie).send().await.unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        return (status, r.text().await.unwrap_or_default());
    }
    let chunk = tokio::time::timeout(Duration::from_secs(10), r.bytes_stream().next())
        .await
        .expect("a first frame")
        .unwrap()
        .unwrap();
    (status, String::from_utf8_lossy(&chunk).into_owned())
}

#[tokio::test]
async fn reads_need_the_read_token_the_api_token_or_the_session_cookie() {
    let app = spawn_on(
        NatsServer::start_jetstream(),
        vec![spec("A", &[], 0)],
        |c| {
            c.read_token = Some(READ.into());
            c.api_token = Some(WRITE.into());
        },
    )
    .await;
    let http = reqwest::Client::new();
    let reply: serde_json::Value = http
        .post(app.url("/activate"))
        .bearer_auth(WRITE)
        .json(&json!({"activation_id": "secret-1", "node": "A", "input": {"password": "hunter2"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["code"], 200, "{reply}");

    let reads = [
        "/activations/secret-1",
        "/activations",
        "/topology",
        "/topology/mermaid",
        "/functions",
        "/triggers",
    ];
    for path in reads {
        let r = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{path}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("hunter2") && !body.contains("secret-1"),
            "{body}"
        );
        for wrong in ["nope", "r3ad-t0ke"] {
            let r = http
                .get(app.url(path))
                .bearer_auth(wrong)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{path} with {wrong}");
        }
    }
    // Either token reads; the record is there once kept.
    eventually("the record kept", Duration::from_secs(20), || async {
        let r = http
            .get(app.url("/activations/secret-1"))
            .bearer_auth(READ)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    for token in [READ, WRITE] {
        for path in reads {
            let r = http
                .get(app.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    }
    let r = http.get(app.url("/events")).send().await.unwrap();
    assert_eq!(r.status(), 401, "anonymous event stream");

    // The session cookie: set by POST /session with a token, never the token itself.
    let r = http.post(app.url("/session")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(app.url("/session"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("mesh_read="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(READ), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let r = http
        .get(app.url("/activations/secret-1"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("hunter2"));
    let r = http
        .get(app.url("/activations"))
        .header("cookie", "mesh_read=0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a forged cookie");

    // The event stream with the cookie, on a fresh connection (the direct path) and on a
    // kept-alive one (hyper's).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (status, frame) = first_frame(&fresh, &app.url("/events"), &cookie).await;
    assert_eq!(status, 200, "{frame}");
    assert!(
        frame.contains("retry:") || frame.contains("event:"),
        "{frame}"
    );
    let kept = reqwest::Client::new();
    assert_eq!(
        kept.get(app.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let (status, _) = first_frame(&kept, &app.url("/events"), &cookie).await;
    assert_eq!(status, 200);
    let (status, _) = first_frame(&fresh, &app.url("/events"), "mesh_read=0123").await;
    assert_eq!(status, 401);

    // Closing clears it; health, metrics and the page stay open.
    let r = http.delete(app.url("/session")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    for open in ["/healthz", "/readyz", "/metrics", "/"] {
        let r = http.get(app.url(open)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
}
