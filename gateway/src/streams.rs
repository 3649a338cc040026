//! The gateway's JetStream streams (status history, kept activations): opened, or made
//! when missing, with the configured limits, which are applied to a stream made earlier
//! with other ones.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::settings::StreamSettings;

/// How long the server may take to answer one request.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times the stream is asked for while JetStream does not answer yet (a cluster
/// still electing its leaders), and the pause between two asks: about 30 s in all.
const OPEN_ATTEMPTS: u32 = 10;
const OPEN_PAUSE: Duration = Duration::from_millis(500);

/// The stream of `settings` on `subjects`, made from `base` (whose name, subjects and
/// limits are set here), or why there is none: no JetStream, or no answer. While
/// JetStream does not answer, or answers that it is not available yet, it is asked
/// again (for about 30 s): a gateway started with a cluster that is still electing
/// its leaders relays from the stream, as the other gateways do, not live.
pub async fn open(
    context: &jetstream::Context,
    settings: &StreamSettings,
    subjects: &str,
    base: stream::Config,
) -> Result<stream::Stream, String> {
    let mut attempt = 1;
    loop {
        match open_once(context, settings, subjects, base.clone()).await {
            Err(Failure::NotYet(cause)) if attempt < OPEN_ATTEMPTS => {
                tracing::warn!(stream = %settings.name, %cause, attempt, "JetStream not ready; asking again");
                attempt += 1;
                tokio::time::sleep(OPEN_PAUSE).await;
            }
            Err(Failure::NotYet(cause) | Failure::Final(cause)) => return Err(cause),
            Ok(stream) => return Ok(stream),
        }
    }
}

/// Why a stream could not be opened.
enum Failure {
    /// JetStream did not answer, or is not available yet: worth asking again.
    NotYet(String),
    /// Anything else (no JetStream at all, a stream that cannot be made).
    Final(String),
}

/// Whether a JetStream error says to ask again later (`503`: no leader yet, say).
fn not_yet(e: &async_nats::jetstream::context::CreateStreamError) -> bool {
    use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
    match e.kind() {
        Kind::TimedOut => true,
        Kind::JetStream(e) => e.code() == 503,
        _ => false,
    }
}

async fn open_once(
    context: &jetstream::Context,
    settings: &StreamSettings,
    subjects: &str,
    base: stream::Config,
) -> Result<stream::Stream, Failure> {
    let wanted = stream::Config {
        name: settings.name.clone(),
        subjects: vec![subjects.to_string()],
        max_age: settings.max_age,
        max_bytes: i64::try_from(settings.max_bytes).unwrap_or(i64::MAX),
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        discard: stream::DiscardPolicy::Old,
        ..base
    };
    let limits = (wanted.max_age, wanted.max_bytes, wanted.max_message_size);
    let stream =
        match tokio::time::timeout(OPEN_TIMEOUT, context.get_or_create_stream(wanted)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if not_yet(&e) => return Err(Failure::NotYet(e.to_string())),
            Ok(Err(e)) => return Err(Failure::Final(mesh_core::bus::storage_hint(e, limits.1))),
            Err(_) => return Err(Failure::NotYet("JetStream did not answer".into())),
        };
    // The stream as the server has it (made now, or long ago with other limits).
    let had = &stream.cached_info().config;
    if (had.max_age, had.max_bytes, had.max_message_size) != limits {
        let mut config = had.clone();
        (config.max_age, config.max_bytes, config.max_message_size) = limits;
        match context.update_stream(config).await {
            Ok(_) => tracing::info!(
                stream = %settings.name, ?limits,
                "stream limits updated to the configured ones"
            ),
            Err(e) => tracing::error!(
                stream = %settings.name, cause = %e,
                "CANNOT APPLY THE CONFIGURED LIMITS to the existing stream: it keeps its old ones"
            ),
        }
    }
    Ok(stream)
}
