//! The gateway's JetStream streams (status history, kept activations): opened, or made
//! when missing, with the configured limits, which are applied to a stream made earlier
//! with other ones.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::settings::StreamSettings;

/// How long the server may take to answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);

/// The stream of `settings` on `subjects`, made from `base` (whose name, subjects and
/// limits are set here), or why there is none: no JetStream, or no answer.
pub async fn open(
    context: &jetstream::Context,
    settings: &StreamSettings,
    subjects: &str,
    base: stream::Config,
) -> Result<stream::Stream, String> {
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
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("JetStream did not answer".into()),
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
