//! Latency samples, percentiles and the result rows.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use serde::Serialize;

/// One measured scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Median latency, ms (the median of the rounds' when compared in rounds).
    pub p50_ms: f64,
    /// The smallest round's median latency, ms.
    pub p50_min_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Completed operations per second (the median of the rounds').
    pub per_second: f64,
    /// The best round's operations per second.
    pub per_second_max: f64,
    /// A ratio against the baseline, with what it compares.
    pub note: String,
}

/// Sorted latencies of one run.
pub struct Sample {
    sorted: Vec<Duration>,
    wall: Duration,
}

impl Sample {
    /// From unsorted latencies over `wall` time.
    pub fn new(mut latencies: Vec<Duration>, wall: Duration) -> Self {
        latencies.sort_unstable();
        Self {
            sorted: latencies,
            wall,
        }
    }

    /// The `p` quantile (0 to 1), in milliseconds.
    pub fn ms(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let index = ((self.sorted.len() - 1) as f64 * p).round() as usize;
        self.sorted[index].as_secs_f64() * 1e3
    }

    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.sorted.len() as f64 / self.wall.as_secs_f64()
    }

    /// A result row.
    pub fn row(&self, scenario: &str, concurrency: usize, note: String) -> Row {
        Row {
            scenario: scenario.to_string(),
            concurrency,
            p50_ms: self.ms(0.5),
            p50_min_ms: self.ms(0.5),
            p99_ms: self.ms(0.99),
            per_second: self.rate(),
            per_second_max: self.rate(),
            note,
        }
    }
}

/// Runs `op` `total` times with `concurrency` in flight (after a short warm-up) and
/// returns the latencies.
pub async fn measure<F, Fut>(total: usize, concurrency: usize, op: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    for _ in 0..100 {
        op().await;
    }
    let per_worker = total.div_ceil(concurrency);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t = Instant::now();
                    op().await;
                    out.push(t.elapsed());
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for w in futures::future::join_all(workers).await {
        match w {
            Ok(worker) => latencies.extend(worker),
            // A failed correctness check fails the bench, never just shrinks the sample.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a load worker was cancelled: {e}"),
        }
    }
    Sample::new(latencies, started.elapsed())
}
