//! The function store on a real nats-server.

use testsupport::NatsServer;

/// A server whose JetStream storage cannot hold the modules bucket's reservation refuses
/// it (error 10047); the error says what to change, not only the server's words.
#[tokio::test]
async fn a_server_without_room_for_the_store_is_told_what_to_change() {
    let conf = std::env::temp_dir().join(format!("mesh-wasm-small-{}.conf", std::process::id()));
    std::fs::write(&conf, "jetstream { max_file_store: 100MB }\n").unwrap();
    let server = NatsServer::start_with(&["-js", "-c", conf.to_str().unwrap()]);
    let client = async_nats::connect(server.url()).await.unwrap();
    let refused = mesh_wasm::store::open(&client, 1)
        .await
        .unwrap_err()
        .to_string();
    std::fs::remove_file(&conf).unwrap();
    assert!(refused.contains("10047"), "{refused}");
    assert!(
        refused.contains("max_file_store") && refused.contains("1024 MiB"),
        "{refused}"
    );
}
