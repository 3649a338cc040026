//! NATS credentials and TLS, through the `handlers` binary.

use std::{process::Command, time::Duration};

use schemas::{ActivationRequest, Outcome};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_handlers");

async fn wait_served(client: &async_nats::Client, node: &str) {
    eventually("the node serves", Duration::from_secs(10), || async {
        let r = activate(client, node, ActivationRequest::default()).await;
        (r.outcome == Outcome::Ok).then_some(())
    })
    .await;
}

#[tokio::test]
async fn user_and_password_from_the_environment() {
    let server = NatsServer::start_with(&["--user", "mesh", "--pass", "s3cret"]);
    let _node = Proc::spawn(
        "handlers",
        std::process::Command::new(BIN)
            .args(["--nats-url", &server.url(), "-n", "A"])
            .env("NATS_USER", "mesh")
            .env("NATS_PASSWORD", "s3cret"),
    );
    let client = async_nats::ConnectOptions::new()
        .user_and_password("mesh".into(), "s3cret".into())
        .connect(server.url())
        .await
        .unwrap();
    wait_served(&client, "A").await;
    // Without the password nobody gets in.
    assert!(async_nats::connect(server.url()).await.is_err());
    let out = Command::new(BIN)
        .args(["--nats-url", &server.url(), "-n", "A", "--ping"])
        .env("NATS_USER", "mesh")
        .env("NATS_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("cannot connect to nats") && err.contains("author"),
        "{err}"
    );
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    // A private CA, and a server certificate it signs.
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mesh-test-ca",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.pem"),
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &path("key.pem"),
            "-out",
            &path("leaf.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &path("leaf.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &path("leaf.ext"),
            "-out",
            &path("cert.pem"),
        ],
    ] {
        let made = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    let server = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let url = format!("tls://127.0.0.1:{}", server.port());
    let _node = Proc::spawn(
        "handlers",
        std::process::Command::new(BIN)
            .args(["--nats-url", &url, "-n", "S", "--nats-require-tls"])
            .env("NATS_CA", &ca),
    );
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .unwrap();
    wait_served(&client, "S").await;
    // Without the CA the server's certificate is refused.
    let out = Command::new(BIN)
        .args(["--nats-url", &url, "-n", "S", "--ping"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
