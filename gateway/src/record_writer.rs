//! The writer of activation records to their stream, in bursts.
//!
//! A record is a plain publish on `mesh.activations.<id>`, which the stream captures: no
//! acknowledgement is asked for, so a record costs the server one stored message and
//! the gateway one write. The writer gathers the records of up to [`BURST_WINDOW`]
//! (at most [`MAX_BURST`]) and publishes them together: the server then takes them in
//! one read and stores them in one pass, where a record at a time woke its stream's
//! store for each one (on this project's 2-core machine, JetStream's CPU per stored
//! message is several times higher for messages that come one by one than for the same
//! messages in bursts).
//!
//! A record is on its way (in `writing`) until the connection has it. A read of this
//! gateway's records first [`Writer::flush`]es: every record kept before the read is
//! then on the connection, and the read goes out after it, so this gateway always reads
//! what it kept. Other gateways see a record at most a burst window later.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::Client;
use schemas::{record, ActivationId};
use tokio::sync::{mpsc, oneshot};

use crate::{
    finished::{Finished, KeptReply},
    sync::lock,
};

/// Longest a record waits for others to go with it.
pub const BURST_WINDOW: Duration = Duration::from_millis(10);
/// Most records published together.
pub const MAX_BURST: usize = 64;
/// Longest a read waits for the records on their way (NATS not taking them).
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Records waiting for the writer; past that (NATS not taking writes for a while) a
/// record is not kept, and the drop is logged.
const WAITING_RECORDS: usize = 4096;

/// Ids whose records are on their way to the stream.
type Writing = Arc<Mutex<HashSet<ActivationId>>>;

/// What the writer is asked to do.
enum Order {
    /// Write a record (boxed: a flush order stays small).
    Write(Box<Finished>),
    /// Publish every record gathered so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// The handle of the writer task, which runs until the last handle is dropped (and
/// then publishes what it gathered).
pub struct Writer {
    orders: mpsc::Sender<Order>,
    writing: Writing,
}

impl Writer {
    /// Starts the writer on `client`.
    pub fn start(client: Client) -> Self {
        let writing = Writing::default();
        let (orders, rx) = mpsc::channel(WAITING_RECORDS);
        tokio::spawn(run(client, rx, writing.clone()));
        Self { orders, writing }
    }

    /// Writes the record of `finished` (a reply tree given as JSON is put in as it
    /// is); the record is on its way until the connection has it.
    pub fn write(&self, finished: Finished) {
        let id = finished.summary.activation_id.clone();
        lock(&self.writing).insert(id.clone());
        if let Err(e) = self.orders.try_send(Order::Write(Box::new(finished))) {
            lock(&self.writing).remove(&id);
            tracing::warn!(activation = %id, cause = %e, "activation not kept: records wait for NATS");
        }
    }

    /// Whether the record of `id` is on its way.
    pub fn writing(&self, id: &ActivationId) -> bool {
        lock(&self.writing).contains(id)
    }

    /// Returns once every record written before is on the connection (at once when
    /// none is on its way), or after [`FLUSH_WAIT`] when NATS does not take them.
    pub async fn flush(&self) {
        if lock(&self.writing).is_empty() {
            return;
        }
        let flush = async {
            let (done, flushed) = oneshot::channel();
            if self.orders.send(Order::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        let _ = tokio::time::timeout(FLUSH_WAIT, flush).await;
    }
}

/// Gathers records into bursts and publishes them, until every [`Writer`] is dropped.
async fn run(client: Client, mut orders: mpsc::Receiver<Order>, writing: Writing) {
    let mut burst = Vec::with_capacity(MAX_BURST);
    while let Some(first) = orders.recv().await {
        let mut flushed = take(first, &mut burst);
        let deadline = tokio::time::Instant::now() + BURST_WINDOW;
        while flushed.is_none() && burst.len() < MAX_BURST {
            match tokio::time::timeout_at(deadline, orders.recv()).await {
                Ok(Some(order)) => flushed = take(order, &mut burst),
                // The window is over, or every writer is gone: publish what there is.
                Ok(None) | Err(_) => break,
            }
        }
        publish(&client, &mut burst, &writing).await;
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// Puts a record of `order` in `burst`; a flush's answer is returned.
fn take(order: Order, burst: &mut Vec<Finished>) -> Option<oneshot::Sender<()>> {
    match order {
        Order::Write(record) => {
            burst.push(*record);
            None
        }
        Order::Flush(done) => Some(done),
    }
}

/// Publishes every record of `burst` on its subject, in order, and empties it.
async fn publish(client: &Client, burst: &mut Vec<Finished>, writing: &Writing) {
    for finished in burst.drain(..) {
        let id = &finished.summary.activation_id;
        match encode(&finished) {
            Ok(body) => {
                if let Err(e) = client.publish(record::subject(id), body.into()).await {
                    tracing::debug!(activation = %id, cause = %e, "activation not kept");
                }
            }
            Err(e) => tracing::debug!(activation = %id, cause = %e, "activation not encoded"),
        }
        lock(writing).remove(id);
    }
}

/// The record of `finished` as JSON: its fields but the timeline and the reply tree, then
/// the timeline's marks as they were noted, then the tree (a tree given as JSON put in as
/// it is).
fn encode(finished: &Finished) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4096);
    serde_json::to_writer(&mut out, finished)?;
    // An object with fields (the summary's at least): `{...}` becomes
    // `{...,"timeline":[...],"reply":...}`.
    out.pop();
    out.extend_from_slice(b",\"timeline\":");
    finished.timeline.write_array(&mut out);
    out.extend_from_slice(b",\"reply\":");
    match &finished.reply {
        KeptReply::Json(json) => out.extend_from_slice(json),
        KeptReply::Tree(reply) => serde_json::to_writer(&mut out, reply)?,
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use schemas::{
        record::{ActivationRecord, ActivationSummary, RecordedRequest, TimelineMark},
        ActivationReply, NodeName, NodeState, Outcome,
    };

    use super::*;
    use crate::timeline::Timeline;

    fn record(trace_id: Option<String>) -> ActivationRecord {
        let node = NodeName::new("UI").unwrap();
        let id = ActivationId::new("a1").unwrap();
        let mut reply = ActivationReply::new(node.clone(), id.clone(), Outcome::Ok, "ok \"q\"");
        reply.children = vec![ActivationReply::new(
            NodeName::new("D").unwrap(),
            id.clone(),
            Outcome::Failed,
            "no",
        )];
        ActivationRecord {
            summary: ActivationSummary {
                activation_id: id,
                node: node.clone(),
                outcome: Outcome::Ok,
                code: 200,
                elapsed_ms: 3,
                started_at: "2026-12-03T08:00:00Z".into(),
            },
            request: RecordedRequest {
                node: node.clone(),
                color: None,
                timeout_ms: 1000,
                input: Some(serde_json::json!({"x": [1, 2]})),
            },
            reply,
            timeline: vec![TimelineMark {
                node,
                state: NodeState::Running,
                offset_us: 12,
                instance: Some("i1".into()),
            }],
            trace_id,
            gateway: "gw-1".into(),
        }
    }

    /// The record written is the record, whether its tree is given decoded or as JSON
    /// (put in as it is).
    #[test]
    fn a_record_is_written_as_the_record() {
        for trace_id in [None, Some("0af7651916cd43dd8448eb211c80319c".to_string())] {
            let record = record(trace_id);
            let json = serde_json::to_vec(&record.reply).unwrap();
            let finished = |reply| Finished {
                summary: record.summary.clone(),
                request: record.request.clone(),
                timeline: Timeline::from(record.timeline.as_slice()),
                trace_id: record.trace_id.clone(),
                gateway: record.gateway.clone(),
                reply,
            };
            let as_json = finished(KeptReply::Json(json.into()));
            let as_tree = finished(KeptReply::Tree(record.reply.clone()));
            for finished in [as_json, as_tree] {
                let written = encode(&finished).unwrap();
                let back: ActivationRecord = serde_json::from_slice(&written).unwrap();
                assert_eq!(back, record);
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&written).unwrap(),
                    serde_json::to_value(&record).unwrap()
                );
            }
        }
    }
}
