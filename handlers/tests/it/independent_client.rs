//! The subjects and JSON are usable from another language: nats-py checks them.

use std::process::Command;

use crate::helpers::*;

#[tokio::test]
#[ignore = "external: needs python3 with nats-py (PyPI); ./scripts/test installs it and runs this"]
async fn nats_py_client_uses_the_mesh() {
    let server = NatsServer::start();
    let _running = serve(&server, seed_zero_work()).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/independent_client.py"
    );
    let url = server.url();
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(url).output())
            .await
            .unwrap()
            .expect("python3 runs (the test command installs nats-py)");
    assert!(
        out.status.success(),
        "nats-py checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
