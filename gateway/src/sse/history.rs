//! Durable history of status events: a JetStream stream on `status.>`.
//!
//! When the server has JetStream, the gateway creates the stream if missing (with the
//! configured size and age limits), relays from it (SSE ids are stream sequences, the
//! same on every gateway replica and across restarts) and replays from it for clients
//! that resume with `Last-Event-ID` beyond the in-memory window. Without JetStream the
//! gateway relays live with the in-memory window alone, and says so in its log.

use std::time::Duration;

use async_nats::{
    jetstream::{self, consumer::DeliverPolicy, stream},
    Client,
};
use futures::StreamExt;
use schemas::subject;

use crate::settings::StreamSettings;

/// Longest a replay for one resuming client may take.
const REPLAY_LIMIT: Duration = Duration::from_secs(5);

/// How long a resuming client waits for a replay slot before it is told what it
/// missed instead.
const REPLAY_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// What one replay may hold.
#[derive(Clone, Copy, Debug)]
pub struct ReplayLimits {
    /// Most events one replay sends.
    pub events: usize,
    /// Most bytes (of stored events) one replay sends.
    pub bytes: usize,
    /// Replays running at once (each holds a JetStream consumer while it reads).
    pub at_once: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            events: 10_000,
            bytes: 1024 * 1024,
            at_once: 8,
        }
    }
}

/// The status stream.
pub struct History {
    stream: stream::Stream,
    client: Client,
    limits: ReplayLimits,
    replays: tokio::sync::Semaphore,
}

/// One message read back from the stream.
pub struct Stored {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: bytes::Bytes,
    /// Its stream sequence.
    pub sequence: u64,
    /// Its `Nats-Msg-Id`, when it has one.
    pub message_id: Option<String>,
}

impl History {
    /// Opens (creating when missing) the stream `settings` describe, or `None` when
    /// history is off or the server has no JetStream.
    /// Limits changed since the stream was made (age, size, largest message) are applied
    /// to it; when that fails, the gateway says so loudly and goes on with the stream as
    /// it is.
    pub async fn open(
        client: &Client,
        settings: Option<&StreamSettings>,
        max_event_bytes: usize,
        limits: ReplayLimits,
    ) -> Option<Self> {
        let Some(settings) = settings else {
            tracing::info!(
                "durable history off (--stream is empty): live relay with an in-memory window"
            );
            return None;
        };
        let context = jetstream::new(client.clone());
        let base = stream::Config {
            max_message_size: i32::try_from(max_event_bytes).unwrap_or(i32::MAX),
            ..Default::default()
        };
        match crate::streams::open(&context, settings, subject::STATUS_ALL, base).await {
            Ok(stream) => {
                tracing::info!(stream = %settings.name, "status events are kept in JetStream");
                Some(Self {
                    stream,
                    client: client.clone(),
                    limits,
                    replays: tokio::sync::Semaphore::new(limits.at_once.max(1)),
                })
            }
            Err(cause) => {
                tracing::warn!(%cause, "no JetStream: relaying live with an in-memory window only");
                None
            }
        }
    }

    /// Sequence of the newest message in the stream.
    pub async fn last_sequence(&self) -> u64 {
        match self.stream.get_info().await {
            Ok(info) => info.state.last_sequence,
            Err(_) => 0,
        }
    }

    /// Every message after sequence `after`, in order, with its sequence; the ordered
    /// consumer recovers by itself after reconnections (the relay consumes anew when it
    /// cannot).
    pub async fn consume_after(
        &self,
        after: u64,
    ) -> Result<jetstream::consumer::push::Ordered, async_nats::Error> {
        self.consume(DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        })
        .await
    }

    /// Messages with sequences from `from` up to `until` (inclusive), oldest first,
    /// within the replay limits (events, bytes, a few seconds); none when too many
    /// replays are running for longer than a client should wait.
    pub async fn replay(&self, from: u64, until: u64) -> Vec<Stored> {
        let mut out = Vec::new();
        if from > until {
            return out;
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(REPLAY_QUEUE_WAIT, self.replays.acquire()).await
        else {
            tracing::debug!("no replay slot: the client is told what it missed");
            return out;
        };
        let mut bytes = 0;
        let Ok(mut messages) = self
            .consume(DeliverPolicy::ByStartSequence {
                start_sequence: from,
            })
            .await
        else {
            return out;
        };
        let read = async {
            while let Some(Ok(message)) = messages.next().await {
                let Ok(sequence) = message.info().map(|i| i.stream_sequence) else {
                    continue;
                };
                if sequence > until {
                    break;
                }
                out.push(Stored {
                    subject: message.subject.to_string(),
                    payload: message.payload.clone(),
                    sequence,
                    message_id: super::relay::message_id(message.headers.as_ref())
                        .map(String::from),
                });
                bytes += message.payload.len();
                if sequence == until
                    || out.len() >= self.limits.events
                    || bytes >= self.limits.bytes
                {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(REPLAY_LIMIT, read).await;
        out
    }

    async fn consume(
        &self,
        deliver_policy: DeliverPolicy,
    ) -> Result<jetstream::consumer::push::Ordered, async_nats::Error> {
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }
}
