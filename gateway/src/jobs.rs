//! Asynchronous activations (`schemas::job`): the queue they wait in, the record kept
//! of each, idempotency keys, and the dispatcher that runs them.
//!
//! A job is accepted once it is stored: its record is created in `MESH_ASYNC_STATE`
//! (refused when its id is taken), then the job is published to the work-queue stream
//! `MESH_ASYNC` with a JetStream acknowledgement. Every gateway with workers takes jobs
//! from the stream's one durable consumer, so each delivery goes to one gateway; while an
//! attempt runs the gateway tells the server it is in progress, so a gateway that dies
//! leaves the job to another after the ack wait. An attempt whose outcome says "try
//! again" (`schemas::job::retryable`) is redelivered after an exponential back-off with
//! jitter until the job's attempts are spent; then the job is dead, kept with every
//! attempt, until someone re-runs it.

use std::{sync::Arc, time::Duration};

use async_nats::{
    jetstream::{self, consumer, kv, stream, AckKind},
    Client, HeaderMap,
};
use futures::StreamExt;
use schemas::{
    job::{self, Accepted, Attempt, Job, JobRecord, JobState},
    ActivationId, ActivationRequest, Outcome,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::settings::AsyncSettings;

/// Longest wait for JetStream while opening.
const OPEN_WAIT: Duration = Duration::from_secs(5);
/// Most records read to list dead jobs.
const MAX_SCANNED: usize = 10_000;
/// Largest record kept: replies beyond it keep no results.
const MAX_RECORD_BYTES: usize = 512 * 1024;

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The activation id names another activation.
    #[error("activation id {0} is taken: choose another, or send none")]
    Taken(ActivationId),
    /// The queue is full, or JetStream refused or did not answer: nothing was stored.
    #[error("the activation was not queued: {0}")]
    Unavailable(String),
}

/// Why a job could not be re-run.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No job of that id.
    #[error("no asynchronous activation {0} is kept")]
    NotFound(ActivationId),
    /// Only a dead job is re-run.
    #[error("activation {0} is {1}: only a dead one is re-run")]
    NotDead(ActivationId, JobState),
    /// JetStream refused or did not answer.
    #[error("{0}")]
    Unavailable(String),
}

/// The queue, the records and the keys.
pub struct Jobs {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    state: kv::Store,
    keys: kv::Store,
    settings: AsyncSettings,
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A key-value bucket of the queue's (see [`mesh_core::bus::key_value`]).
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    max_bytes: i64,
    replicas: usize,
) -> Result<kv::Store, String> {
    mesh_core::bus::key_value(
        js,
        mesh_core::bus::Bucket {
            name,
            description,
            history: 1,
            max_age,
            max_bytes,
            replicas,
        },
    )
    .await
}

impl Jobs {
    /// Opens (or makes) the stream, its consumer and both buckets.
    pub async fn open(client: &Client, settings: AsyncSettings) -> Result<Self, String> {
        let js = jetstream::new(client.clone());
        let opened = async {
            let stream = js
                .get_or_create_stream(stream::Config {
                    name: job::STREAM.into(),
                    description: Some("nats-mesh: asynchronous activations waiting to run".into()),
                    subjects: vec![format!("{}>", job::QUEUE_PREFIX)],
                    retention: stream::RetentionPolicy::WorkQueue,
                    max_messages: settings.max_queued,
                    max_bytes: settings.max_bytes,
                    max_age: settings.max_age,
                    discard: stream::DiscardPolicy::New,
                    num_replicas: settings.replicas,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| mesh_core::bus::storage_hint(e, settings.max_bytes))?;
            stream
                .get_or_create_consumer(
                    job::CONSUMER,
                    consumer::pull::Config {
                        durable_name: Some(job::CONSUMER.into()),
                        description: Some("nats-mesh gateways take jobs here".into()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: settings.ack_wait,
                        max_ack_pending: settings.max_ack_pending,
                        ..Default::default()
                    },
                )
                .await
                .map_err(text)?;
            let state = bucket(
                &js,
                job::STATE_BUCKET,
                "nats-mesh: asynchronous activations, one record per id",
                settings.max_age,
                settings.max_bytes,
                settings.replicas,
            )
            .await?;
            let keys = bucket(
                &js,
                job::KEYS_BUCKET,
                "nats-mesh: idempotency keys of asynchronous activations",
                settings.idempotency_window,
                settings.max_bytes,
                settings.replicas,
            )
            .await?;
            Ok::<_, String>((stream, state, keys))
        };
        let (stream, state, keys) = tokio::time::timeout(OPEN_WAIT, opened)
            .await
            .map_err(|_| "JetStream did not answer".to_string())??;
        Ok(Self {
            jetstream: js,
            stream,
            state,
            keys,
            settings,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &AsyncSettings {
        &self.settings
    }

    /// Stores `job` (once per idempotency key within the window) and returns where it
    /// is; the job is in the queue when this returns.
    pub async fn submit(&self, job: Job, key: Option<&str>) -> Result<Accepted, SubmitError> {
        let id = job.activation_id.clone();
        let accepted = |activation_id: ActivationId, duplicate| Accepted {
            location: format!("/activations/{activation_id}"),
            activation_id,
            duplicate,
        };
        let key = key.map(|k| sha256_hex(k.as_bytes()));
        if let Some(key) = &key {
            if let Err(e) = self.keys.create(key, id.to_string().into()).await {
                if e.kind() != kv::CreateErrorKind::AlreadyExists {
                    return Err(SubmitError::Unavailable(e.to_string()));
                }
                let earlier = self
                    .keys
                    .get(key)
                    .await
                    .map_err(|e| SubmitError::Unavailable(e.to_string()))?
                    .and_then(|v| ActivationId::new(String::from_utf8_lossy(&v)).ok());
                return match earlier {
                    Some(earlier) => Ok(accepted(earlier, true)),
                    None => Err(SubmitError::Unavailable(
                        "the idempotency key's activation is unreadable".into(),
                    )),
                };
            }
        }
        let undo_key = || async {
            if let Some(key) = &key {
                let _ = self.keys.purge(key).await;
            }
        };
        let record = JobRecord {
            job: job.clone(),
            state: JobState::Queued,
            attempts: Vec::new(),
        };
        if let Err(e) = self.state.create(id.as_str(), encode(&record).into()).await {
            undo_key().await;
            return Err(if e.kind() == kv::CreateErrorKind::AlreadyExists {
                SubmitError::Taken(id)
            } else {
                SubmitError::Unavailable(e.to_string())
            });
        }
        if let Err(e) = self.enqueue(&job, id.as_str()).await {
            let _ = self.state.purge(id.as_str()).await;
            undo_key().await;
            return Err(SubmitError::Unavailable(e));
        }
        Ok(accepted(id, false))
    }

    /// Publishes `job` to the queue and waits until the stream has stored it.
    async fn enqueue(&self, job: &Job, message_id: &str) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id);
        let body = serde_json::to_vec(job).map_err(text)?;
        self.jetstream
            .publish_with_headers(job::queue_subject(&job.request.node), headers, body.into())
            .await
            .map_err(text)?
            .await
            .map_err(text)?;
        Ok(())
    }

    /// The record of `id`, if it is an asynchronous activation.
    pub async fn record(&self, id: &ActivationId) -> Result<Option<JobRecord>, String> {
        let value = self.state.get(id.as_str()).await.map_err(text)?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    async fn put(&self, record: &JobRecord) -> Result<(), String> {
        self.state
            .put(record.job.activation_id.as_str(), encode(record).into())
            .await
            .map(|_| ())
            .map_err(text)
    }

    /// Dead jobs, at most `limit` (of the records kept, the first [`MAX_SCANNED`] read).
    /// The records are read by an ephemeral consumer of the bucket's latest values,
    /// bounded in count and time.
    pub async fn dead(&self, limit: usize) -> Result<Vec<JobRecord>, String> {
        let stream = self
            .jetstream
            .get_stream(format!("KV_{}", job::STATE_BUCKET))
            .await
            .map_err(text)?;
        let pending = stream.cached_info().state.messages;
        if pending == 0 {
            return Ok(Vec::new());
        }
        let reader = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                filter_subject: format!("$KV.{}.>", job::STATE_BUCKET),
                ..Default::default()
            })
            .await
            .map_err(text)?;
        let wanted = usize::try_from(pending)
            .unwrap_or(MAX_SCANNED)
            .min(MAX_SCANNED);
        let mut batch = reader
            .batch()
            .max_messages(wanted)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(text)?;
        let mut dead = Vec::new();
        while let Some(Ok(message)) = batch.next().await {
            if let Ok(record) = serde_json::from_slice::<JobRecord>(&message.payload) {
                if record.state == JobState::Dead && dead.len() < limit {
                    dead.push(record);
                }
            }
        }
        Ok(dead)
    }

    /// Queues a dead job again, with a fresh set of attempts.
    pub async fn retry(&self, id: &ActivationId) -> Result<JobRecord, RetryError> {
        let mut record = self
            .record(id)
            .await
            .map_err(RetryError::Unavailable)?
            .ok_or_else(|| RetryError::NotFound(id.clone()))?;
        if record.state != JobState::Dead {
            return Err(RetryError::NotDead(id.clone(), record.state));
        }
        let runs = record.attempts.len() as u32;
        record.job.max_attempts = runs + self.settings.max_attempts;
        record.state = JobState::Queued;
        self.put(&record).await.map_err(RetryError::Unavailable)?;
        self.enqueue(&record.job, &format!("{id}-rerun-{runs}"))
            .await
            .map_err(RetryError::Unavailable)?;
        Ok(record)
    }
}

/// The record as stored: replies lose their results when it would be too large.
fn encode(record: &JobRecord) -> Vec<u8> {
    let body = serde_json::to_vec(record).unwrap_or_default();
    if body.len() <= MAX_RECORD_BYTES {
        return body;
    }
    let mut lean = record.clone();
    for attempt in &mut lean.attempts {
        if let Some(reply) = &mut attempt.reply {
            reply.strip_results();
        }
    }
    let body = serde_json::to_vec(&lean).unwrap_or_default();
    if body.len() <= MAX_RECORD_BYTES {
        return body;
    }
    lean.attempts.iter_mut().for_each(|a| a.reply = None);
    serde_json::to_vec(&lean).unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    mesh_wasm::store::sha256_hex(bytes)
}

/// The pause before attempt `attempt + 1`: `base` doubled per attempt, at most `max`,
/// with up to half of it drawn at random (so retries of many jobs spread out).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let jitter = full / 2;
    full - jitter + jitter.mul_f64(rand_unit())
}

fn rand_unit() -> f64 {
    // nuid's random bytes are enough for jitter.
    let n = nuid::next();
    let b = n.as_bytes();
    f64::from(u16::from_le_bytes([b[20], b[21]])) / f64::from(u16::MAX)
}

/// What the dispatcher needs of the gateway.
pub struct Dispatch {
    /// The queue.
    pub jobs: Arc<Jobs>,
    /// The gateway's connection.
    pub client: Client,
    /// This gateway's id (in each attempt).
    pub gateway: String,
    /// Where each attempt's record goes, for the inspector (the last one stays).
    pub kept: Arc<crate::activations::Kept>,
    /// The events of running activations, for their timelines.
    pub watches: Arc<crate::activations::Watches>,
    /// Counts jobs done, retried and dead.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Calls callbacks back (no redirect followed, bounded in time).
    pub http: reqwest::Client,
    /// Asynchronous activations running here, by node (an entry only while some run).
    pub running: std::sync::Mutex<std::collections::HashMap<schemas::NodeName, usize>>,
}

/// One running activation of a node, counted until dropped.
struct NodeSlot<'a> {
    running: &'a std::sync::Mutex<std::collections::HashMap<schemas::NodeName, usize>>,
    node: schemas::NodeName,
}

impl Drop for NodeSlot<'_> {
    fn drop(&mut self) {
        let mut running = crate::sync::lock(self.running);
        if let Some(n) = running.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.node);
            }
        }
    }
}

impl Dispatch {
    /// Counts one event of an asynchronous activation.
    pub fn count(&self, event: &'static str) {
        self.metrics
            .jobs
            .get_or_create(&crate::metrics::JobLabels { event })
            .inc();
    }
}

/// Takes jobs from the queue and runs them until `stop`.
pub async fn dispatch(d: Arc<Dispatch>, stop: CancellationToken) {
    let workers = d.jobs.settings.workers;
    if workers == 0 {
        return;
    }
    let permits = Arc::new(Semaphore::new(workers));
    loop {
        let consumer: Result<consumer::PullConsumer, _> =
            d.jobs.stream.get_consumer(job::CONSUMER).await;
        let messages = match consumer {
            Ok(c) => c.stream().max_messages_per_batch(workers).messages().await,
            Err(e) => {
                tracing::warn!(cause = %e, "the job queue's consumer is not there");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(cause = %e, "cannot take jobs");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let d = d.clone();
                    tokio::spawn(async move {
                        run(&d, message).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(cause = %e, "taking jobs");
                }
                None => break,
            }
        }
    }
}

/// Runs one delivery of a job.
async fn run(d: &Dispatch, message: jetstream::Message) {
    let jobs = &d.jobs;
    let Ok(job) = serde_json::from_slice::<Job>(&message.payload) else {
        tracing::warn!(subject = %message.subject, "junk in the job queue: dropped");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let id = job.activation_id.clone();
    let mut record = match jobs.record(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => JobRecord {
            job: job.clone(),
            state: JobState::Queued,
            attempts: Vec::new(),
        },
        Err(e) => {
            tracing::warn!(activation = %id, cause = %e, "cannot read the job's record: later");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    };
    if matches!(record.state, JobState::Done | JobState::Dead) {
        // Delivered again after it ended (its acknowledgement was lost).
        let _ = message.ack().await;
        return;
    }
    // At most `node_concurrency` of one node here: the others wait in the queue.
    let slot = {
        let mut running = crate::sync::lock(&d.running);
        let n = running.entry(job.request.node.clone()).or_insert(0);
        if *n < jobs.settings.node_concurrency {
            *n += 1;
            Some(NodeSlot {
                running: &d.running,
                node: job.request.node.clone(),
            })
        } else {
            None
        }
    };
    let Some(_slot) = slot else {
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_millis(100))))
            .await;
        return;
    };
    // An attempt left running by a gateway that stopped.
    if let Some(last) = record.attempts.last_mut() {
        if last.outcome.is_none() {
            last.outcome = Some(Outcome::Unavailable);
            last.code = Some(schemas::code::UNAVAILABLE);
        }
    }
    let attempt = record.attempts.len() as u32 + 1;
    record.job = job.clone();
    record.state = JobState::Running;
    record.attempts.push(Attempt {
        attempt,
        gateway: d.gateway.clone(),
        started_at: schemas::now_rfc3339(),
        outcome: None,
        code: None,
        elapsed_ms: None,
        reply: None,
    });
    if let Err(e) = jobs.put(&record).await {
        tracing::warn!(activation = %id, cause = %e, "cannot mark the job running: later");
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    }
    let started_at = record.attempts[record.attempts.len() - 1]
        .started_at
        .clone();
    let request = ActivationRequest {
        activation_id: Some(id.clone()),
        color: job.request.color.clone(),
        timeout_ms: Some(job.request.timeout_ms),
        path: Vec::new(),
        input: job.request.input.clone(),
    };
    let started = std::time::Instant::now();
    let watch = d.watches.watch(&id);
    let wait = Duration::from_millis(job.request.timeout_ms) + Duration::from_millis(500);
    let call = mesh_core::call::activate(&d.client, &job.request.node, &request, wait);
    tokio::pin!(call);
    // In progress: the server waits another ack wait before it redelivers.
    let beat = (jobs.settings.ack_wait / 3).max(Duration::from_millis(100));
    let reply = loop {
        tokio::select! {
            reply = &mut call => break reply,
            _ = tokio::time::sleep(beat) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    let elapsed = started.elapsed();
    d.kept.keep(crate::finished::Finished {
        summary: schemas::record::ActivationSummary {
            activation_id: id.clone(),
            node: reply.node.clone(),
            outcome: reply.outcome,
            code: reply.code,
            elapsed_ms: mesh_core::call::millis(elapsed),
            started_at,
        },
        request: job.request.clone(),
        reply: crate::finished::KeptReply::Tree(reply.clone()),
        timeline: watch.finish(),
        trace_id: None,
        gateway: d.gateway.clone(),
    });
    let last = record.attempts.len() - 1;
    let a = &mut record.attempts[last];
    a.outcome = Some(reply.outcome);
    a.code = Some(reply.code);
    a.elapsed_ms = Some(mesh_core::call::millis(elapsed));
    a.reply = Some(reply.clone());
    let again = job::retryable(reply.outcome);
    let (state, ack) = if again && attempt < job.max_attempts {
        let pause = backoff(attempt, jobs.settings.backoff, jobs.settings.backoff_max);
        (JobState::Queued, AckKind::Nak(Some(pause)))
    } else if again {
        (JobState::Dead, AckKind::Ack)
    } else {
        (JobState::Done, AckKind::Ack)
    };
    record.state = state;
    if let Err(e) = jobs.put(&record).await {
        tracing::warn!(activation = %id, cause = %e, "cannot keep the job's attempt");
    }
    d.count(match state {
        JobState::Queued => "retried",
        JobState::Dead => "dead",
        _ => "done",
    });
    if let (JobState::Done | JobState::Dead, Some(url)) = (state, &job.callback_url) {
        tokio::spawn(call_back(d.http.clone(), url.clone(), record.clone()));
    }
    if state == JobState::Dead {
        tracing::warn!(activation = %id, node = %job.request.node, attempts = attempt, "asynchronous activation dead: every attempt said try again");
    }
    if let Err(e) = message.ack_with(ack).await {
        tracing::warn!(activation = %id, cause = %e, "cannot acknowledge the job");
    }
}

/// The queue group of gateways answering [`job::SUBMIT`].
pub const SUBMIT_GROUP: &str = "mesh-gateways";
/// Longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Checks a callback URL against the allow-list of prefixes; the URL as it will be
/// called (normalized, so a prefix is compared with what is really called).
pub fn check_callback(url: &str, allowed: &[String]) -> Result<String, String> {
    if allowed.is_empty() {
        return Err("callbacks are off on this gateway (MESH_ASYNC_CALLBACK_ALLOW)".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("X-Callback-Url {url:?}: {e}"))?;
    if parsed.scheme() != "http" || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "X-Callback-Url {url:?}: an http:// URL without credentials"
        ));
    }
    let normal = parsed.to_string();
    if !allowed
        .iter()
        .any(|prefix| normal.starts_with(prefix.as_str()))
    {
        return Err(format!(
            "X-Callback-Url {normal} is not under an allowed prefix (MESH_ASYNC_CALLBACK_ALLOW)"
        ));
    }
    Ok(normal)
}

/// Attempts of one callback.
const CALLBACK_ATTEMPTS: u32 = 4;

/// POSTs `record`'s final state and last reply to its callback URL, retried with
/// back-off on a failure or an answer other than 2xx.
async fn call_back(http: reqwest::Client, url: String, record: JobRecord) {
    let body = serde_json::json!({
        "activation_id": record.job.activation_id,
        "state": record.state,
        "attempts": record.attempts.len(),
        "reply": record.attempts.last().and_then(|a| a.reply.clone()),
    });
    for attempt in 1..=CALLBACK_ATTEMPTS {
        match http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::debug!(%url, status = %r.status(), attempt, "callback refused"),
            Err(e) => tracing::debug!(%url, cause = %e, attempt, "callback failed"),
        }
        tokio::time::sleep(backoff(
            attempt,
            Duration::from_millis(500),
            Duration::from_secs(10),
        ))
        .await;
    }
    tracing::warn!(%url, activation = %record.job.activation_id, "callback given up after {CALLBACK_ATTEMPTS} attempts");
}

/// Checks an idempotency key: 1 to [`MAX_KEY_BYTES`] printable ASCII characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.len() > MAX_KEY_BYTES
        || !key.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err(format!(
            "an idempotency key is 1 to {MAX_KEY_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// A job for `request`, with this gateway's attempts.
pub fn job_for(jobs: &Jobs, id: ActivationId, request: schemas::record::RecordedRequest) -> Job {
    Job {
        activation_id: id,
        request,
        max_attempts: jobs.settings.max_attempts,
        callback_url: None,
        queued_at: schemas::now_rfc3339(),
    }
}

/// Answers [`job::SUBMIT`] (in queue group [`SUBMIT_GROUP`]: one gateway per request)
/// until `stop`: a [`schemas::job::Submit`] is queued and answered with an
/// [`Accepted`], or with `{"error", "message"}`.
pub async fn serve_submissions(
    d: Arc<Dispatch>,
    entry: schemas::NodeName,
    default_budget: Duration,
    stop: CancellationToken,
) {
    let mut requests = match d
        .client
        .queue_subscribe(job::SUBMIT, SUBMIT_GROUP.into())
        .await
    {
        Ok(s) => s,
        Err(e) => return tracing::warn!(cause = %e, "cannot answer {}", job::SUBMIT),
    };
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            m = requests.next() => match m { Some(m) => m, None => return },
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let answer = match serde_json::from_slice::<job::Submit>(&message.payload) {
            Err(e) => serde_json::json!({"error": "bad_request", "message": e.to_string()}),
            Ok(submit) => {
                let checked = match &submit.idempotency_key {
                    Some(key) => check_key(key),
                    None => Ok(()),
                }
                .and_then(|()| match submit.timeout_ms {
                    Some(t) if t == 0 || t > schemas::activation::MAX_TIMEOUT_MS => Err(format!(
                        "timeout_ms must be between 1 and {}",
                        schemas::activation::MAX_TIMEOUT_MS
                    )),
                    _ => Ok(()),
                });
                match checked {
                    Err(e) => serde_json::json!({"error": "bad_request", "message": e}),
                    Ok(()) => {
                        let request = schemas::record::RecordedRequest {
                            node: submit.node.unwrap_or_else(|| entry.clone()),
                            color: None,
                            timeout_ms: submit
                                .timeout_ms
                                .unwrap_or(mesh_core::call::millis(default_budget)),
                            input: submit.input,
                        };
                        let id = submit.activation_id.unwrap_or_else(ActivationId::generate);
                        let job = job_for(&d.jobs, id, request);
                        match d.jobs.submit(job, submit.idempotency_key.as_deref()).await {
                            Ok(accepted) => {
                                if !accepted.duplicate {
                                    d.count("accepted");
                                }
                                serde_json::to_value(&accepted).unwrap_or_default()
                            }
                            Err(e @ SubmitError::Taken(_)) => {
                                serde_json::json!({"error": "conflict", "message": e.to_string()})
                            }
                            Err(e) => {
                                serde_json::json!({"error": "unavailable", "message": e.to_string()})
                            }
                        }
                    }
                }
            }
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        if let Err(e) = d.client.publish(reply_to, body.into()).await {
            tracing::warn!(cause = %e, "cannot answer a submission");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..30 {
            let full = (base * 2u32.pow((attempt - 1).min(20))).min(max);
            let b = backoff(attempt, base, max);
            assert!(b >= full / 2 && b <= full, "{attempt}: {b:?} of {full:?}");
        }
    }
}
