//! Finished activations kept for the inspector (`GET /activations`,
//! `GET /activations/{id}`).
//!
//! Every activation the gateway runs is kept as an [`ActivationRecord`] on
//! `mesh.activations.<id>` in a JetStream stream (bounded by age and bytes, one message
//! per id), so any gateway answers for it, also after a restart. Without JetStream the
//! newest [`MEMORY_RECORDS`] stay in this gateway's memory. While an activation runs, the
//! events ingested for it are noted as they arrive ([`Watches`], an observer of ingest):
//! they become its timeline.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use async_nats::{
    jetstream::{self, stream},
    Client,
};
use prometheus_client::metrics::counter::Counter;
use schemas::{
    record::{self, ActivationRecord, ActivationSummary},
    ActivationId, NodeState,
};

/// Records kept in memory without JetStream.
pub const MEMORY_RECORDS: usize = 256;
/// Status events noted per running activation (a few per node).
const MAX_MARKS: usize = 4096;
/// Activations watched at once; more run without a timeline.
const MAX_WATCHED: usize = 10_000;
/// Most stream messages read to list the recent activations, per listed activation.
const READS_PER_LISTED: usize = 4;
/// Stream messages a listing reads beyond that, so junk on `mesh.activations.>` (which
/// only a publisher the NATS permissions allow can put there) does not empty it.
pub const JUNK_READS: usize = 4096;
/// Stream messages read at once while listing.
const READ_BATCH: usize = 64;

use crate::{
    finished::Finished, record_writer::Writer, settings::StreamSettings, sync::lock,
    timeline::Timeline,
};

/// The running activations' timelines, by id: looked up for every status event, hashed
/// with foldhash's keyed quality hasher (ids may come from clients; the map is bounded).
type Running = HashMap<ActivationId, (Instant, Timeline), foldhash::quality::RandomState>;

/// Status events of the activations this gateway is running, as they arrive.
#[derive(Default)]
pub struct Watches {
    count: AtomicUsize,
    running: Mutex<Running>,
}

impl Watches {
    /// Notes a mark of `node` in `state` when activation `id` is watched (costs an
    /// atomic load when none is).
    fn mark(&self, id: &str, node: &str, state: NodeState, instance: Option<&str>) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some((started, timeline)) = lock(&self.running).get_mut(id) {
            if timeline.len() < MAX_MARKS {
                let offset_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                timeline.note(node, state, offset_us, instance);
            }
        }
    }

    /// Starts noting the events of `id`, from now; the marks are handed over by
    /// [`Watch::finish`] (or dropped with the watch).
    pub fn watch(self: &Arc<Self>, id: &ActivationId) -> Watch {
        self.claim(id).unwrap_or(Watch {
            watches: self.clone(),
            id: None,
        })
    }

    /// As [`Watches::watch`], but `None` when `id` is running here already: an id names
    /// one activation.
    pub fn claim(self: &Arc<Self>, id: &ActivationId) -> Option<Watch> {
        let mut running = lock(&self.running);
        if running.contains_key(id) {
            return None;
        }
        let watched = running.len() < MAX_WATCHED;
        if watched {
            running.insert(id.clone(), (Instant::now(), Timeline::new()));
            self.count.store(running.len(), Ordering::Relaxed);
        }
        Some(Watch {
            watches: self.clone(),
            id: watched.then(|| id.clone()),
        })
    }

    fn remove(&self, id: &ActivationId) -> Timeline {
        let mut running = lock(&self.running);
        let marks = running.remove(id).map(|(_, m)| m).unwrap_or_default();
        self.count.store(running.len(), Ordering::Relaxed);
        marks
    }
}

/// The watched activations' events, as an observer of ingest.
impl crate::sse::ingest::Observer for Watches {
    fn observe(&self, event: &crate::sse::ingest::Accepted<'_>) {
        if let Some(id) = event.activation {
            self.mark(id, event.node, event.state, event.instance());
        }
    }
}

/// One watched activation.
pub struct Watch {
    watches: Arc<Watches>,
    id: Option<ActivationId>,
}

impl Watch {
    /// The events noted so far, oldest first; the watch ends.
    pub fn finish(mut self) -> Timeline {
        match self.id.take() {
            Some(id) => self.watches.remove(&id),
            None => Timeline::default(),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.watches.remove(&id);
        }
    }
}

/// Why a kept activation cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Never kept, or aged out.
    #[error("no activation {0} is kept (unknown, or older than the kept ones)")]
    NotFound(ActivationId),
    /// The stream did not answer.
    #[error("the kept activations cannot be read now: {0}")]
    Unavailable(String),
}

/// Where finished activations are kept.
pub struct Kept {
    stream: Option<(jetstream::Context, stream::Stream)>,
    /// The writer of records to the stream (see [`Kept::keep`]).
    writer: Option<Writer>,
    /// Without a stream: the newest activations, their records made when read.
    memory: Mutex<VecDeque<Finished>>,
    /// Messages read from the stream that were no valid record of their subject's id.
    refused: Counter,
}

impl Kept {
    /// Opens (creating when missing) the stream `settings` describe, or keeps records
    /// in memory when `settings` is `None` or the server has no JetStream.
    /// Junk read from the stream is skipped and counted in `refused`.
    pub async fn open(
        client: &Client,
        settings: Option<&StreamSettings>,
        refused: Counter,
    ) -> Self {
        let Some(settings) = settings else {
            tracing::info!("activations kept in memory only (--activations-stream is empty)");
            return Self::with(client, None, refused);
        };
        let context = jetstream::new(client.clone());
        let base = stream::Config {
            max_messages_per_subject: 1,
            ..Default::default()
        };
        match crate::streams::open(&context, settings, record::SUBJECT_ALL, base).await {
            Ok(stream) => {
                tracing::info!(stream = %settings.name, "finished activations are kept in JetStream");
                Self::with(client, Some((context, stream)), refused)
            }
            Err(cause) => {
                tracing::warn!(%cause, "no JetStream: finished activations kept in this gateway's memory only");
                Self::with(client, None, refused)
            }
        }
    }

    /// Kept in `stream` when there is one (written by a task started here), else in
    /// memory.
    fn with(
        client: &Client,
        stream: Option<(jetstream::Context, stream::Stream)>,
        refused: Counter,
    ) -> Self {
        let writer = stream.as_ref().map(|_| Writer::start(client.clone()));
        Self {
            stream,
            writer,
            memory: Mutex::new(VecDeque::new()),
            refused,
        }
    }

    /// The record in a message on `subject`, when it is one and names the subject's id;
    /// anything else is counted and skipped.
    fn decode(&self, subject: &str, payload: &[u8]) -> Option<ActivationRecord> {
        let record = serde_json::from_slice::<ActivationRecord>(payload)
            .ok()
            .filter(|r| record::subject(&r.summary.activation_id) == subject);
        if record.is_none() {
            self.refused.inc();
            tracing::debug!(subject, "junk on the kept activations' stream skipped");
        }
        record
    }

    /// Whether records outlive this gateway (kept in JetStream).
    pub fn durable(&self) -> bool {
        self.stream.is_some()
    }

    /// Keeps the record of `finished`: in memory at once, or in the stream by the
    /// writer task, in bursts ([`crate::record_writer`]; whoever waits for the answer
    /// does not wait for the stream). A reply tree given as JSON (the bytes the client
    /// was answered with) goes into the stream's record as it is, not encoded again.
    pub fn keep(self: &Arc<Self>, finished: Finished) {
        match &self.writer {
            Some(writer) => writer.write(finished),
            None => {
                let mut memory = lock(&self.memory);
                if memory.len() >= MEMORY_RECORDS {
                    memory.pop_front();
                }
                memory.push_back(finished);
            }
        }
    }

    /// Returns once every record kept so far is on its way to the stream (on the
    /// connection): before a read, and before the gateway stops.
    pub async fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.flush().await;
        }
    }

    /// Whether a record of `id` is kept, or on its way.
    pub async fn holds(&self, id: &ActivationId) -> bool {
        self.writer.as_ref().is_some_and(|w| w.writing(id)) || self.get(id).await.is_ok()
    }

    /// The kept record of `id`.
    pub async fn get(&self, id: &ActivationId) -> Result<ActivationRecord, ReadError> {
        let Some((_, stream)) = &self.stream else {
            let kept = lock(&self.memory)
                .iter()
                .rev()
                .find(|r| &r.summary.activation_id == id)
                .cloned();
            return kept
                .and_then(Finished::into_record)
                .ok_or_else(|| ReadError::NotFound(id.clone()));
        };
        if let Some(writer) = self.writer.as_ref().filter(|w| w.writing(id)) {
            writer.flush().await;
        }
        use jetstream::stream::LastRawMessageErrorKind as Kind;
        match stream
            .get_last_raw_message_by_subject(&record::subject(id))
            .await
        {
            Ok(message) => self
                .decode(&message.subject, &message.payload)
                .ok_or_else(|| ReadError::NotFound(id.clone())),
            Err(e) if e.kind() == Kind::NoMessageFound => Err(ReadError::NotFound(id.clone())),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// The newest `limit` kept activations, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<ActivationSummary>, ReadError> {
        let Some((_, stream)) = &self.stream else {
            return Ok(lock(&self.memory)
                .iter()
                .rev()
                .take(limit)
                .map(|r| r.summary.clone())
                .collect());
        };
        self.flush().await;
        let info = stream
            .get_info()
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        let (first, mut next) = (info.state.first_sequence, info.state.last_sequence);
        let mut out = Vec::new();
        let mut reads = limit * READS_PER_LISTED + JUNK_READS;
        // Sequences newest first, read a batch at a time; a repeated id left holes where
        // its older messages were.
        while out.len() < limit && next >= first.max(1) && reads > 0 {
            let batch = (limit - out.len()).min(reads).min(READ_BATCH) as u64;
            let low = next.saturating_sub(batch - 1).max(first.max(1));
            let read = futures::future::join_all(
                (low..=next).rev().map(|seq| stream.get_raw_message(seq)),
            )
            .await;
            reads = reads.saturating_sub(read.len());
            out.extend(read.into_iter().filter_map(|m| {
                let m = m.ok()?;
                self.decode(&m.subject, &m.payload).map(|r| r.summary)
            }));
            if low == 0 {
                break;
            }
            next = low - 1;
        }
        out.truncate(limit);
        Ok(out)
    }
}
