//! `bench`: measures nats-mesh against raw NATS request-reply in the same run.
//!
//! Starts its own nats-server on a free port, a trivial responder as the baseline and
//! the seed topology with zero work, then prints latency percentiles and throughput.

use std::time::{Duration, Instant};

use async_nats::Client;
use futures::StreamExt;
use handlers::{call, runtime::Running, NodeSpec, Settings, Topology};
use schemas::{ActivationRequest, NodeName, Outcome};
use testsupport::NatsServer;

/// Latency samples of one scenario.
struct Sample {
    name: String,
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Sample {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

async fn measure<F, Fut>(name: &str, total: usize, concurrency: usize, op: F) -> Sample
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    // Warm-up.
    for _ in 0..50 {
        op().await;
    }
    let started = Instant::now();
    let per_worker = total / concurrency;
    let workers = (0..concurrency).map(|_| {
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
    });
    let mut latencies = Vec::with_capacity(total);
    for w in futures::future::join_all(workers).await {
        latencies.extend(w.expect("worker"));
    }
    Sample {
        name: name.to_string(),
        latencies,
        wall: started.elapsed(),
    }
}

async fn echo_responder(client: Client) -> anyhow::Result<()> {
    let mut sub = client.subscribe("bench.echo").await?;
    client.flush().await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = client.publish(reply, msg.payload).await;
            }
        }
    });
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await?;
    echo_responder(async_nats::connect(server.url()).await?).await?;
    let seed: Vec<NodeSpec> = Topology::seed()
        .nodes
        .into_iter()
        .map(|n| NodeSpec {
            work_ms: 0,
            fail_rate: 0.0,
            ..n
        })
        .collect();
    let _running = Running::start(
        async_nats::connect(server.url()).await?,
        seed,
        Settings::default(),
    )
    .await?;

    let mut samples = Vec::new();
    for concurrency in [1, 64] {
        let c = client.clone();
        samples.push(
            measure(
                &format!("raw NATS request-reply, c={concurrency}"),
                5_000,
                concurrency,
                move || {
                    let c = c.clone();
                    async move {
                        c.request("bench.echo", "{}".into()).await.expect("echo");
                    }
                },
            )
            .await,
        );
        let c = client.clone();
        let ui = NodeName::new("UI")?;
        samples.push(
            measure(
                &format!("seed activation of UI (8 nodes), c={concurrency}"),
                5_000,
                concurrency,
                move || {
                    let c = c.clone();
                    let ui = ui.clone();
                    async move {
                        let r = call::activate(
                            &c,
                            &ui,
                            &ActivationRequest::default(),
                            Duration::from_secs(5),
                        )
                        .await;
                        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
                    }
                },
            )
            .await,
        );
    }
    println!("| scenario | p50 | p99 | per second |\n|---|---|---|---|");
    for s in &samples {
        println!(
            "| {} | {:.3} ms | {:.3} ms | {:.0} |",
            s.name,
            s.percentile(0.5).as_secs_f64() * 1e3,
            s.percentile(0.99).as_secs_f64() * 1e3,
            s.rate()
        );
    }
    let raw = samples[0].percentile(0.5).as_secs_f64();
    let seed = samples[1].percentile(0.5).as_secs_f64();
    // The seed's critical path is 5 sequential round trips: client->UI->D->P->V->leaf.
    println!(
        "\nseed activation p50 = {:.2}x the sum of its 5 raw round trips on the critical path",
        seed / (5.0 * raw)
    );
    Ok(())
}
