//! The floor of SSE fan-out: a process that does nothing but one blocking `write` per
//! client per status event. It takes the same clients and the same events as a gateway
//! (it relays `status.>` from NATS), with no HTTP server, no task per client and no
//! history: what a delivery costs the kernel on this machine, the baseline a gateway's
//! CPU per delivery is compared with. It also says how long the writes of one event
//! take (to every client, one after the other), on `bench.floor.writes` in microseconds.

use std::{
    io::Write,
    net::TcpStream,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use tokio::io::AsyncReadExt;

/// Where the floor says how long the writes of each event took (µs, decimal).
pub const WRITES: &str = "bench.floor.writes";

/// Serves `127.0.0.1:port` until killed.
pub async fn serve(nats_url: &str, port: u16) -> anyhow::Result<()> {
    let clients: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let accepted = clients.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                // The request head (one read is enough for the bench's clients).
                let mut head = [0u8; 1024];
                if socket.read(&mut head).await.is_err() {
                    return;
                }
                let Ok(mut socket) = socket.into_std() else {
                    return;
                };
                if socket.set_nonblocking(false).is_err()
                    || socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n: ok\n\n")
                        .is_err()
                {
                    return;
                }
                accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(socket);
            });
        }
    });
    let client = async_nats::connect(nats_url).await?;
    let mut events = client.subscribe("status.>").await?;
    let mut id = 0u64;
    while let Some(event) = events.next().await {
        id += 1;
        let mut frame = format!("id: {id}\nevent: status\ndata: ").into_bytes();
        frame.extend_from_slice(&event.payload);
        frame.extend_from_slice(b"\n\n");
        let started = std::time::Instant::now();
        clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain_mut(|socket| socket.write_all(&frame).is_ok());
        let took = started.elapsed().as_micros().to_string();
        client.publish(WRITES, took.into()).await?;
    }
    Ok(())
}
