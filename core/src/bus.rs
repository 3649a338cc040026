//! NATS connection settings shared by every nats-mesh binary.

use std::{path::PathBuf, time::Duration};

use async_nats::{Client, ConnectOptions, Event};

/// How to reach and authenticate to NATS. Every flag can also come from the
/// environment variable named beside it.
#[derive(Clone, Debug, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// User name (with --nats-password).
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// Password (with --nats-user).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        requires = "nats_user",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// Authentication token.
    #[arg(
        long,
        env = "NATS_TOKEN",
        hide_env_values = true,
        conflicts_with = "nats_user"
    )]
    pub nats_token: Option<String>,
    /// Credentials file (JWT and NKey seed), as made by `nsc`.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server's TLS certificate.
    #[arg(long = "nats-ca", alias = "nats-tls-ca", env = "NATS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(
        long = "nats-cert",
        alias = "nats-tls-cert",
        env = "NATS_CERT",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS (with --nats-tls-cert).
    #[arg(
        long = "nats-key",
        alias = "nats-tls-key",
        env = "NATS_KEY",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to the server without TLS.
    #[arg(long, env = "NATS_REQUIRE_TLS")]
    pub nats_require_tls: bool,
}

impl NatsArgs {
    /// Settings for a server at `url` with no credentials (used by tests and tools).
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            nats_url: url.into(),
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_require_tls: false,
        }
    }

    /// Connection options from these settings; `name` is the client name the server
    /// shows in its connection list.
    pub async fn options(&self, name: &str) -> std::io::Result<ConnectOptions> {
        let mut options = match &self.nats_creds {
            Some(path) => ConnectOptions::with_credentials_file(path).await?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.nats_token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let url = self.nats_url.clone();
        Ok(options
            .require_tls(self.nats_require_tls)
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(move |event| {
                let url = url.clone();
                async move { log_event(&url, event) }
            }))
    }

    /// Connects, waiting for the first connection (a clear error when it fails).
    pub async fn connect(&self, name: &str) -> Result<Client, ConnectError> {
        self.connect_with(name, false).await
    }

    /// Connects, retrying the first connection until a server answers when `retry`.
    async fn connect_with(&self, name: &str, retry: bool) -> Result<Client, ConnectError> {
        let fail = |cause: String| ConnectError {
            url: self.nats_url.clone(),
            cause,
        };
        let mut options = self
            .options(name)
            .await
            .map_err(|e| fail(format!("reading credentials or certificates: {e}")))?;
        if retry {
            options = options.retry_on_initial_connect();
        }
        options
            .connect(self.servers())
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// The servers of `--nats-url`, split at commas.
    pub fn servers(&self) -> Vec<&str> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Connects in the background: returns at once and keeps trying until a server
    /// answers, so processes may start before NATS does.
    pub async fn connect_eventually(&self, name: &str) -> Result<Client, ConnectError> {
        self.connect_with(name, true).await
    }
}

/// Publishes `body` on `subject`, with `headers` when there are any (a trace context
/// that is only there when tracing is on).
pub async fn publish(
    client: &Client,
    subject: String,
    headers: Option<async_nats::HeaderMap>,
    body: bytes::Bytes,
) -> Result<(), async_nats::PublishError> {
    match headers {
        Some(headers) => client.publish_with_headers(subject, headers, body).await,
        None => client.publish(subject, body).await,
    }
}

/// Waits until the server has processed everything sent on `client` so far (its
/// subscriptions included). `flush` only writes the socket; this makes a round trip: the
/// server handles one connection's commands in order, so a message to a fresh inbox
/// coming back means every earlier subscription is in place.
pub async fn sync(client: &Client) -> Result<(), async_nats::Error> {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    match tokio::time::timeout(Duration::from_secs(10), echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("connection closed while syncing with the server".into()),
        Err(_) => Err("no round trip with the NATS server within 10 s".into()),
    }
}

/// Drains `client` (flushes what it buffered, closes subscriptions), giving up after
/// `limit` when the server is unreachable.
pub async fn drain(client: &Client, limit: Duration) {
    match tokio::time::timeout(limit, client.drain()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(cause = %e, "draining the NATS connection"),
        Err(_) => tracing::warn!(?limit, "NATS unreachable: closed without draining"),
    }
}

/// NATS could not be reached or the settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {cause}")]
pub struct ConnectError {
    /// The URL tried.
    pub url: String,
    /// What went wrong.
    pub cause: String,
}

fn log_event(url: &str, event: Event) {
    match event {
        Event::Connected => tracing::info!(%url, "connected to NATS"),
        Event::Disconnected => tracing::warn!(%url, "disconnected from NATS, reconnecting"),
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer: messages dropped"),
        other => tracing::info!(%url, event = %other, "NATS connection event"),
    }
}

/// `error`, from making a stream or bucket that reserves `max_bytes`, with what to do
/// when the server had less room left than the reservation (JetStream error 10047).
pub fn storage_hint(error: impl std::fmt::Display, max_bytes: i64) -> String {
    let error = error.to_string();
    if !error.contains("10047") {
        return error;
    }
    format!(
        "{error}: the NATS server has less JetStream storage left than the {} MiB this \
         reserves; give it more (max_file_store in its jetstream block: without one a server \
         takes 75% of the disk free when it starts; see deploy/nats/nats-server.conf)",
        max_bytes / (1024 * 1024)
    )
}

/// A JetStream key-value bucket as [`key_value`] opens or makes it.
#[derive(Clone, Debug)]
pub struct Bucket<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it holds, for `nats stream info`.
    pub description: &'a str,
    /// Values kept per key (1: the latest only).
    pub history: i64,
    /// Oldest value kept (zero: no limit).
    pub max_age: Duration,
    /// Most bytes kept (-1: no limit); a write beyond is refused, nothing is evicted.
    pub max_bytes: i64,
    /// Copies in a cluster.
    pub replicas: usize,
}

/// The bucket, opened, or made when missing. It is made as the stream async-nats'
/// `create_key_value` would make, directly: async-nats cannot read nats-server 2.9's
/// answer to that request.
pub async fn key_value(
    js: &async_nats::jetstream::Context,
    bucket: Bucket<'_>,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::stream;
    if let Ok(store) = js.get_key_value(bucket.name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{}", bucket.name),
        description: Some(bucket.description.into()),
        subjects: vec![format!("$KV.{}.>", bucket.name)],
        max_messages_per_subject: bucket.history,
        max_age: bucket.max_age,
        max_bytes: bucket.max_bytes,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: bucket.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| storage_hint(e, bucket.max_bytes))?;
    js.get_key_value(bucket.name)
        .await
        .map_err(|e| e.to_string())
}
