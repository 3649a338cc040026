//! Durable history of status events: a JetStream stream on `status.>`.
//!
//! When the server has JetStream, the gateway creates the stream if missing (with the
//! configured size and age limits), relays from it (SSE ids are stream sequences, the
//! same on every gateway replica and across restarts) and replays from it for clients
//! that resume with `Last-Event-ID` beyond the in-memory window. Without JetStream the
//! gateway relays live with the in-memory window alone, and says so in its log.

use std::time::Duration;

use async_nats::{
    jetstream::{
        self,
        consumer::{push, AckPolicy, DeliverPolicy},
        stream,
    },
    Client,
};
use futures::StreamExt;
use schemas::subject;

use crate::settings::{ReplayLimits, StreamSettings};

/// Longest a replay for one resuming client may take.
const REPLAY_LIMIT: Duration = Duration::from_secs(5);

/// How long a resuming client waits for a replay slot before it is told what it
/// missed instead.
const REPLAY_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The `Nats-Msg-Id` of a message, when it has one.
pub fn message_id(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str())
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
    pub subject: async_nats::Subject,
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

    /// Every message after sequence `after`, in order (see [`Follow`]).
    pub async fn follow_after(&self, after: u64) -> Result<Follow, async_nats::Error> {
        Follow::start(&self.stream, &self.client, after + 1).await
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
        let Ok(mut follow) = Follow::start(&self.stream, &self.client, from).await else {
            return out;
        };
        let read = async {
            while let Ok(message) = follow.next().await {
                if message.sequence > until {
                    break;
                }
                bytes += message.payload.len();
                let last = message.sequence == until;
                out.push(message);
                if last || out.len() >= self.limits.events || bytes >= self.limits.bytes {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(REPLAY_LIMIT, read).await;
        out
    }
}

/// The delivery (consumer) and stream sequences of a message from its JetStream reply
/// subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or the newer form with a domain and an account hash after `ACK` (and a token at the
/// end).
fn sequences(reply: &str) -> Option<(u64, u64)> {
    // Read from the end with memchr: the consumer and stream sequences are the 3rd and
    // 4th tokens from the end in both forms (4th and 5th when the newer form ends with
    // its extra token). Looking for each '.' afresh (`str::split`) cost more than the
    // rest of reading a status event.
    let b = reply.as_bytes();
    if !b.starts_with(b"$JS.ACK.") {
        return None;
    }
    let skip = match memchr::memchr_iter(b'.', b).count() + 1 {
        9 | 11 => 0,
        12 => 1,
        _ => return None,
    };
    // The dots around the two sequences, from the end: after the consumer's, between
    // the two, before the stream's.
    let mut dots = memchr::memrchr_iter(b'.', b).skip(skip + 1);
    let (after, between, before) = (dots.next()?, dots.next()?, dots.next()?);
    Some((
        decimal(&b[between + 1..after])?,
        decimal(&b[before + 1..between])?,
    ))
}

/// A sequence number written in decimal digits (nothing else).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

/// Idle heartbeat of a [`Follow`]'s consumer: two missed tell that it was lost.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Longest a [`Follow`] waits for its consumer to be made: one placed on a server that
/// is gone (the cluster has not noticed yet) never answers, and a new try lands
/// elsewhere.
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// An ephemeral consumer nobody reads is removed after this long.
const INACTIVE: Duration = Duration::from_secs(10);

/// The stream's messages from one sequence on, in order, through an ephemeral push
/// consumer of one replica (in memory, no acknowledgements, flow controlled).
///
/// Every failure ends it with an error, never a silent stall: its consumer lost with
/// its server (two idle heartbeats missed), a message skipped (a gap in the delivery
/// sequence, also at the tail, told by a heartbeat), the subscription gone. The caller
/// follows anew from the last sequence it has. (async-nats' ordered consumer reports a
/// missed heartbeat but keeps waiting on a consumer that is gone.)
pub struct Follow {
    subscriber: async_nats::Subscriber,
    client: Client,
    delivered: u64,
    /// When something last came from the consumer (a message or a heartbeat).
    last_seen: tokio::time::Instant,
    /// Wakes to check `last_seen`: moved when it fires, not on every message.
    silence: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Follow {
    async fn start(
        stream: &stream::Stream,
        client: &Client,
        start_sequence: u64,
    ) -> Result<Self, async_nats::Error> {
        let deliver_subject = client.new_inbox();
        // Subscribed first: nothing the consumer sends can come before the subscription.
        let subscriber = client.subscribe(deliver_subject.clone()).await?;
        let config = push::Config {
            deliver_subject,
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            flow_control: true,
            idle_heartbeat: HEARTBEAT,
            inactive_threshold: INACTIVE,
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        };
        tokio::time::timeout(CREATE_TIMEOUT, stream.create_consumer(config))
            .await
            .map_err(|_| "the consumer was not made in time")??;
        let now = tokio::time::Instant::now();
        Ok(Self {
            subscriber,
            client: client.clone(),
            delivered: 0,
            last_seen: now,
            silence: Box::pin(tokio::time::sleep_until(now + HEARTBEAT * 2)),
        })
    }

    /// The next stored message; an error when the consumer failed (see [`Follow`]).
    pub async fn next(&mut self) -> Result<Stored, async_nats::Error> {
        loop {
            let message = tokio::select! {
                biased;
                message = self.subscriber.next() => message.ok_or("the subscription ended")?,
                _ = self.silence.as_mut() => {
                    let due = self.last_seen + HEARTBEAT * 2;
                    if tokio::time::Instant::now() >= due {
                        return Err("missed two idle heartbeats: the consumer is gone".into());
                    }
                    self.silence.as_mut().reset(due);
                    continue;
                }
            };
            self.last_seen = tokio::time::Instant::now();
            if message.status.is_some() {
                self.control(&message).await?;
                continue;
            }
            let (delivered, sequence) = message
                .reply
                .as_deref()
                .and_then(sequences)
                .ok_or("a message without a JetStream reply subject")?;
            let message_id = message_id(message.headers.as_ref()).map(String::from);
            if delivered != self.delivered + 1 {
                return Err(format!(
                    "delivery {delivered} after {}: a message was skipped",
                    self.delivered
                )
                .into());
            }
            self.delivered = delivered;
            return Ok(Stored {
                subject: message.subject,
                payload: message.payload,
                sequence,
                message_id,
            });
        }
    }

    /// Answers flow control and checks an idle heartbeat's last delivery.
    async fn control(&self, message: &async_nats::Message) -> Result<(), async_nats::Error> {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        // A flow control request, or a heartbeat telling that the consumer is stalled
        // waiting for the answer to one.
        let answer_to = message
            .reply
            .as_ref()
            .map(|r| r.to_string())
            .or_else(|| header("Nats-Consumer-Stalled"));
        if let Some(subject) = answer_to {
            self.client.publish(subject, bytes::Bytes::new()).await?;
        }
        if let Some(last) = header("Nats-Last-Consumer").and_then(|v| v.parse::<u64>().ok()) {
            if last != self.delivered {
                return Err(format!(
                    "the consumer delivered {last}, {} arrived: the last were lost",
                    self.delivered
                )
                .into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_read_from_both_forms_of_reply_subject() {
        assert_eq!(
            sequences("$JS.ACK.MESH_STATUS.c1.1.42.7.1733000000000000000.0"),
            Some((7, 42))
        );
        assert_eq!(
            sequences("$JS.ACK.hub.ACC.MESH_STATUS.c1.1.42.7.1733000000000000000.0.r4nd"),
            Some((7, 42))
        );
        for bad in [
            "",
            "$JS.ACK",
            "_INBOX.x",
            "$JS.ACK.S.c.1.x.7.0.0",
            "$JS.NAK.S.c.1.42.7.0.0",
            "$JS.ACK.S.c.1..7.0.0",
            "$JS.ACK.S.c.1.+42.7.0.0",
            "$JS.ACK.S.c.1.42.99999999999999999999.0.0",
            "$JS.ACK.S.c.1.42.7.0.0.too.many.tokens.here",
        ] {
            assert_eq!(sequences(bad), None, "{bad}");
        }
    }
}
