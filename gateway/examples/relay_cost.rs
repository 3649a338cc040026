//! What the relay spends on one status event with no SSE client, measured in one run:
//! a node's event framed as it came, against the same event re-encoded (a trailing
//! space makes the relay re-encode it), interleaved over 5 rounds.
//!
//! `cargo run --release -p gateway --example relay_cost`
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use gateway::sse::relay::{Limits, Relay};
use schemas::{ActivationId, NodeName, NodeState, StatusEvent};

const EVENTS: usize = 200_000;

fn main() {
    let relay = Relay::new("gw-bench".into(), Limits::default(), Default::default());
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
    let (mut sent, mut encoded) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        sent.push(run(&as_sent));
        encoded.push(run(&padded));
    }
    sent.sort_by(f64::total_cmp);
    encoded.sort_by(f64::total_cmp);
    println!(
        "relay, one {}-byte status event, no client: framed as sent {:.0} ns (median of 5), re-encoded {:.0} ns: {:.2}x",
        as_sent.len(),
        sent[2],
        encoded[2],
        encoded[2] / sent[2]
    );
}
