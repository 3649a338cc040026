//! What ingest spends on one status event, measured in one run, interleaved over 5
//! rounds: a node's event read in place, framed and kept in the window (no durable
//! stream), the same event decoded and completed first (a trailing space makes ingest
//! decode it), and the event with the stream as the history (nothing rendered or kept
//! for nobody).
//!
//! `cargo run --release -p gateway --example relay_cost`
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use std::sync::Arc;

use gateway::{
    metrics::Metrics,
    sse::{
        ingest::Ingest,
        log::{Limits, Log},
        states::{Latest, UNKNOWN_NODES},
    },
};
use schemas::{ActivationId, NodeName, NodeState, StatusEvent};

const EVENTS: usize = 200_000;

/// Ingest as a gateway has it: its log (the default limits), the node metrics and the
/// latest states as observers.
fn ingest() -> Arc<Ingest> {
    let metrics = Arc::new(Metrics::default());
    let limits = Limits {
        history: 4096,
        history_bytes: 8 * 1024 * 1024,
        buffer: 1024,
    };
    let log = Log::new(limits, metrics.clone());
    let latest = Arc::new(Latest::new(UNKNOWN_NODES));
    Ingest::new(
        "gw-bench".into(),
        4096,
        log,
        vec![metrics.clone(), latest],
        metrics,
    )
}

fn main() {
    let relay = ingest();
    let durable = ingest();
    durable.log().start_after(0);
    let mut event = StatusEvent::new(NodeName::new("TM").unwrap(), NodeState::Ok);
    event.code = Some(200);
    event.elapsed_ms = Some(12);
    event.instance = Some("S3CcbXKcfvCEl0kRmUN6Zx".into());
    event.activation_id = Some(ActivationId::new("kasBrhwBNRimmBb5wcVsgW").unwrap());
    event.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    let as_sent = serde_json::to_vec(&event).unwrap();
    let mut padded = as_sent.clone();
    padded.push(b' ');
    let run = |payload: &[u8]| {
        let started = Instant::now();
        for _ in 0..EVENTS {
            relay.accept_status("status.TM", payload).unwrap();
        }
        started.elapsed().as_nanos() as f64 / EVENTS as f64
    };
    let mut sequence = 0;
    let as_sent_bytes = bytes::Bytes::from(as_sent.clone());
    let mut run_durable = |payload: &bytes::Bytes| {
        let started = Instant::now();
        for _ in 0..EVENTS {
            sequence += 1;
            durable
                .accept("status.TM", payload, Some(sequence), |_| true)
                .unwrap();
        }
        started.elapsed().as_nanos() as f64 / EVENTS as f64
    };
    let (mut sent, mut encoded, mut streamed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        sent.push(run(&as_sent));
        encoded.push(run(&padded));
        streamed.push(run_durable(&as_sent_bytes));
    }
    for v in [&mut sent, &mut encoded, &mut streamed] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "relay, one {}-byte status event, no client (medians of 5): read in place, framed and kept {:.0} ns; decoded, framed and kept {:.0} ns ({:.2}x); stream-backed, nothing rendered {:.0} ns ({:.2}x)",
        as_sent.len(),
        sent[2],
        encoded[2],
        encoded[2] / sent[2],
        streamed[2],
        streamed[2] / sent[2]
    );
}
