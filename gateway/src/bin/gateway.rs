//! `gateway`: the nats-mesh HTTP gateway.

use std::process::ExitCode;

use clap::Parser;
use gateway::{Config, Gateway};
use handlers::{runtime::shutdown_signal, telemetry};
use poem::listener::{Acceptor, Listener, TcpListener};

fn main() -> ExitCode {
    let config = Config::parse();
    // Telemetry outlives the runtime: its exporter thread is flushed after the last span.
    let _telemetry = telemetry::init("gateway", config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let client = config.nats.connect_eventually("nats-mesh gateway").await?;
    let acceptor = TcpListener::bind(listen)
        .into_acceptor()
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let gateway = Gateway::start(config, client.clone()).await?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .map_or_else(|| listen.to_string(), |a| a.to_string());
    tracing::info!(
        "gateway on http://{addr}/ (page), http://{addr}/docs (Swagger UI), http://{addr}/events (SSE)"
    );
    gateway.serve(acceptor, shutdown_signal()).await?;
    handlers::bus::drain(&client, std::time::Duration::from_secs(3)).await;
    tracing::info!("stopped");
    Ok(())
}
