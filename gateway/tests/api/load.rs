//! Under load: thousands of activations, every status event reaches every SSE client
//! that keeps up, exactly once and in order; a client that stalls is told it lagged and
//! costs no more than its bounded buffer.

use std::time::Duration;

use futures::StreamExt;
use schemas::{ActivationRequest, Outcome};

use crate::helpers::*;

const ACTIVATIONS: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_every_client_that_keeps_up() {
    let app = spawn_app(seed_zero_work(), |c| {
        c.sse.buffer = 4096;
        c.sse.history = 1024;
    })
    .await;
    let readers: Vec<Sse> = futures::future::join_all((0..3).map(|_| app.sse("", None))).await;
    // A client that never reads.
    let stalled = app.http.get(app.url("/events")).send().await.unwrap();

    let expected = ACTIVATIONS * 16;
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut sse| {
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(expected);
                while ids.len() < expected {
                    match sse.next_of("status", Duration::from_secs(20)).await {
                        Some(f) => ids.push(f.id.unwrap().parse::<u64>().unwrap()),
                        None => break,
                    }
                }
                ids
            })
        })
        .collect();

    let ui = name("UI");
    futures::stream::iter(0..ACTIVATIONS)
        .for_each_concurrent(16, |_| {
            let client = app.nats.clone();
            let ui = ui.clone();
            async move {
                let r = mesh_core::call::activate(
                    &client,
                    &ui,
                    &ActivationRequest::default(),
                    Duration::from_secs(10),
                )
                .await;
                assert_eq!(r.outcome, Outcome::Ok);
            }
        })
        .await;

    for reader in reading {
        let ids = reader.await.unwrap();
        assert_eq!(
            ids.len(),
            expected,
            "a reader that keeps up gets every event"
        );
        assert!(
            ids.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gap, no duplicate"
        );
    }
    // The stalled client fell behind by far more than its buffer: reading now, it is
    // told so instead of receiving a backlog without bound.
    let mut late = Sse::from_response(stalled);
    assert!(late
        .next_of("lagged", Duration::from_secs(10))
        .await
        .is_some());
    assert!(app.state.metrics.events_dropped.get() > 0);
}
