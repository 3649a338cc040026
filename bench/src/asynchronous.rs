//! Asynchronous activations in the bench: how many per second at c=64 against the same
//! activations answered synchronously in the same run, and the queue delay (from the
//! 202 to the attempt's start) with the dispatcher idle and with a burst waiting.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Activations per burst.
const BURST: usize = 2000;
/// Activations sent one at a time for the idle delay.
const IDLE: usize = 200;
/// Concurrency of the bursts.
const CONCURRENCY: usize = 64;

/// What was measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Synchronous `POST /activate` of node E at c=64, per second.
    pub sync_per_second: f64,
    /// Asynchronous ones of node E at c=64, from the first request to the last done.
    pub async_per_second: f64,
    /// Queue delay with the dispatcher idle: p50 and p99 in ms.
    pub idle_delay_ms: (f64, f64),
    /// Queue delay within a burst of [`BURST`]: p50 and p99 in ms.
    pub burst_delay_ms: (f64, f64),
}

impl Report {
    /// The report's paragraph.
    pub fn markdown(&self) -> String {
        format!(
            "\nAsynchronous activations of node E (zero work) through the gateway, c={CONCURRENCY}, {BURST} each: {:.0}/s from the first request to the last done, against {:.0}/s answered synchronously in the same run ({:.2}x). Queue delay, from the 202's arrival to the attempt's start: p50 {:.2} ms, p99 {:.2} ms with the dispatcher idle (one at a time, {IDLE}); p50 {:.1} ms, p99 {:.1} ms within a burst of {BURST}.\n",
            self.async_per_second,
            self.sync_per_second,
            self.async_per_second / self.sync_per_second,
            self.idle_delay_ms.0,
            self.idle_delay_ms.1,
            self.burst_delay_ms.0,
            self.burst_delay_ms.1,
        )
    }
}

/// `count` activations of `node` at `concurrency`, synchronous or not; returns the
/// wall time and, for asynchronous ones, each id with the moment its 202 arrived.
async fn send(
    http: &reqwest::Client,
    base: &str,
    node: &str,
    count: usize,
    concurrency: usize,
    asynchronous: bool,
) -> (Duration, Vec<(String, OffsetDateTime)>) {
    let accepted = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let started = Instant::now();
    let per_worker = count.div_ceil(concurrency);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, accepted) =
                (http.clone(), format!("{base}/activate"), accepted.clone());
            let body = format!("{{\"node\":\"{node}\"}}");
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    let mut r = http.post(&url).header("content-type", "application/json");
                    if asynchronous {
                        r = r.header("prefer", "respond-async");
                    }
                    let r = r.body(body.clone()).send().await.expect("POST /activate");
                    let now = OffsetDateTime::now_utc();
                    let status = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    if asynchronous {
                        assert_eq!(status, 202, "{v}");
                        let id = v["activation_id"].as_str().unwrap_or_default().to_string();
                        if let Ok(mut a) = accepted.lock() {
                            a.push((id, now));
                        }
                    } else {
                        assert_eq!(status, 200, "{v}");
                    }
                }
            })
        })
        .collect();
    for w in futures::future::join_all(workers).await {
        if let Err(e) = w {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let elapsed = started.elapsed();
    let accepted = std::mem::take(&mut *accepted.lock().unwrap_or_else(|p| p.into_inner()));
    (elapsed, accepted)
}

async fn done_count(http: &reqwest::Client, base: &str) -> u64 {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .find(|l| l.starts_with("mesh_gateway_async_activations_total{event=\"done\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until `target` asynchronous activations are done.
async fn until_done(http: &reqwest::Client, base: &str, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while done_count(http, base).await < target {
        assert!(
            Instant::now() < deadline,
            "asynchronous activations never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each activation's queue delay in ms (0 when it started before its 202 arrived).
async fn delays(
    http: &reqwest::Client,
    base: &str,
    accepted: &[(String, OffsetDateTime)],
) -> Vec<f64> {
    let mut out = Vec::with_capacity(accepted.len());
    for (id, at) in accepted {
        let Ok(r) = http.get(format!("{base}/activations/{id}")).send().await else {
            continue;
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        let Some(started) = v["job"]["attempts"][0]["started_at"]
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
        else {
            continue;
        };
        out.push(((started - *at).as_seconds_f64() * 1e3).max(0.0));
    }
    out.sort_by(f64::total_cmp);
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Measures asynchronous activations of `node` against synchronous ones.
pub async fn measure(http: &reqwest::Client, base: &str, node: &str) -> Report {
    let before = done_count(http, base).await;
    let (sync_wall, _) = send(http, base, node, BURST, CONCURRENCY, false).await;
    let started = Instant::now();
    let (_, burst) = send(http, base, node, BURST, CONCURRENCY, true).await;
    until_done(http, base, before + burst.len() as u64).await;
    let async_wall = started.elapsed();
    let burst_delays = delays(http, base, &burst).await;
    let (_, idle) = send(http, base, node, IDLE, 1, true).await;
    until_done(http, base, before + (burst.len() + idle.len()) as u64).await;
    let idle_delays = delays(http, base, &idle).await;
    Report {
        sync_per_second: BURST as f64 / sync_wall.as_secs_f64(),
        async_per_second: burst.len() as f64 / async_wall.as_secs_f64(),
        idle_delay_ms: (
            percentile(&idle_delays, 0.5),
            percentile(&idle_delays, 0.99),
        ),
        burst_delay_ms: (
            percentile(&burst_delays, 0.5),
            percentile(&burst_delays, 0.99),
        ),
    }
}
