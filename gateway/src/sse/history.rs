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

/// The status stream.
pub struct History {
    stream: stream::Stream,
    client: Client,
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
    pub async fn open(client: &Client, settings: Option<&StreamSettings>) -> Option<Self> {
        let Some(settings) = settings else {
            tracing::info!(
                "durable history off (--stream is empty): live relay with an in-memory window"
            );
            return None;
        };
        let context = jetstream::new(client.clone());
        let wanted = stream::Config {
            name: settings.name.clone(),
            subjects: vec![subject::STATUS_ALL.to_string()],
            max_age: settings.max_age,
            max_bytes: i64::try_from(settings.max_bytes).unwrap_or(i64::MAX),
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let opened =
            tokio::time::timeout(Duration::from_secs(3), context.get_or_create_stream(wanted))
                .await;
        match opened {
            Ok(Ok(stream)) => {
                tracing::info!(stream = %settings.name, "status events are kept in JetStream");
                Some(Self {
                    stream,
                    client: client.clone(),
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(cause = %e, "no JetStream: relaying live with an in-memory window only");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "JetStream did not answer: relaying live with an in-memory window only"
                );
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

    /// Messages with sequences from `from` up to `until` (inclusive), oldest first, at
    /// most `limit` of them and for at most a few seconds.
    pub async fn replay(&self, from: u64, until: u64, limit: usize) -> Vec<Stored> {
        let mut out = Vec::new();
        if from > until {
            return out;
        }
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
                if sequence == until || out.len() >= limit {
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
