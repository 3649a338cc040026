//! The gateway's activation path against the bus: seed activations sent through
//! `POST /activate` and the same activations sent over NATS, in interleaved rounds, with
//! the CPU each one cost every process on the machine. The ratios are issue #29's
//! targets (throughput at c=64, p50 at c=1); the CPU split says where the difference goes,
//! and the floor (an HTTP hop in front of NATS that does nothing else) what the machine
//! allows any HTTP front.

use serde::Serialize;

use crate::{
    median, median_ratio,
    procs::{cpu_seconds, Proc},
    stats::Sample,
};

/// Rounds of each side, interleaved.
pub const ROUNDS: usize = 7;

/// The processes whose CPU is split per activation, in the table's order.
pub const PROCESSES: [&str; 4] = ["gateway", "nats-server", "seed nodes", "load generator"];

/// One side of one round.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Activations per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// CPU µs per activation of each of [`PROCESSES`].
    pub cpu_us: [f64; 4],
}

/// Every round at one concurrency.
#[derive(Debug, Default, Serialize)]
pub struct Rounds {
    /// Requests in flight.
    pub concurrency: usize,
    /// Over NATS, one per round.
    pub nats: Vec<Side>,
    /// Over NATS, each activation in a trace of its own (as the gateway starts one per
    /// request, carried over every hop), one per round.
    pub traced: Vec<Side>,
    /// Through `POST /activate`, one per round (each right after its NATS sides).
    pub http: Vec<Side>,
    /// Through the floor ([`crate::activate_floor`]), one per round (right after its
    /// gateway side); its `cpu_us[0]` is the floor process's.
    pub floor: Vec<Side>,
    /// p50 ms of one raw NATS request-reply and of one `GET /healthz`, per round: what a
    /// hop of each kind costs by itself.
    pub hops: Vec<(f64, f64)>,
}

/// CPU clocks of the processes under test, read before and after a side.
pub struct Clocks<'a> {
    /// The process in front of the bus: the gateway, or the floor.
    pub front: &'a Proc,
    /// `/proc/<pid>/stat` of the NATS server.
    pub server_stat: String,
    /// The seed nodes' process.
    pub seed: &'a Proc,
}

impl Clocks<'_> {
    fn now(&self) -> [f64; 4] {
        [
            self.front.cpu_seconds(),
            cpu_seconds(&self.server_stat),
            self.seed.cpu_seconds(),
            cpu_seconds("/proc/self/stat"),
        ]
    }

    /// Runs `side` (which completes `activations`) and returns its figures.
    pub async fn measure(
        &self,
        activations: usize,
        side: impl std::future::Future<Output = Sample>,
    ) -> Side {
        let before = self.now();
        let sample = side.await;
        let after = self.now();
        // The warm-up's 100 activations are in the CPU figures too.
        let n = (activations + 100) as f64;
        Side {
            per_second: sample.rate(),
            p50_ms: sample.ms(0.5),
            cpu_us: std::array::from_fn(|i| (after[i] - before[i]) * 1e6 / n),
        }
    }
}

impl Rounds {
    /// `http` over `nats`, the median of the rounds' ratios, of `f`.
    fn ratio(&self, f: fn(&Side) -> f64) -> f64 {
        Self::ratio_of(&self.http, &self.nats, f)
    }

    /// `a` over `b`, the median of the rounds' ratios, of `f`.
    fn ratio_of(a: &[Side], b: &[Side], f: fn(&Side) -> f64) -> f64 {
        let (a, b): (Vec<f64>, Vec<f64>) = (a.iter().map(f).collect(), b.iter().map(f).collect());
        median_ratio(&a, &b)
    }

    fn cpu(sides: &[Side], i: usize) -> f64 {
        median(&sides.iter().map(|s| s.cpu_us[i]).collect::<Vec<_>>())
    }

    /// The report's paragraph and table.
    pub fn markdown(&self) -> String {
        let c = self.concurrency;
        let mut out = format!(
            "\nSeed activations through `POST /activate` against the same over NATS, c={c}, {} interleaved rounds: \
             throughput {:.2}x (median {:.0}/s against {:.0}/s), p50 {:.2}x ({:.3} ms against {:.3} ms); \
             medians of the rounds' ratios.\n\n\
             | CPU µs per activation, c={c} | over NATS | through POST /activate | difference |\n|---|---|---|---|\n",
            self.http.len(),
            self.ratio(|s| s.per_second),
            median(&self.http.iter().map(|s| s.per_second).collect::<Vec<_>>()),
            median(&self.nats.iter().map(|s| s.per_second).collect::<Vec<_>>()),
            self.ratio(|s| s.p50_ms),
            median(&self.http.iter().map(|s| s.p50_ms).collect::<Vec<_>>()),
            median(&self.nats.iter().map(|s| s.p50_ms).collect::<Vec<_>>()),
        );
        if !self.hops.is_empty() {
            let raw = median(&self.hops.iter().map(|h| h.0).collect::<Vec<_>>());
            let get = median(&self.hops.iter().map(|h| h.1).collect::<Vec<_>>());
            let nats = median(&self.nats.iter().map(|s| s.p50_ms).collect::<Vec<_>>());
            out = out.replacen(
                "\n\n|",
                &format!(
                    " One HTTP round trip to the gateway (`GET /healthz`) p50 {get:.3} ms, one raw NATS request-reply {raw:.3} ms: \
                     an activation through the gateway takes the same NATS hops plus that HTTP round trip: {:.2}x the NATS p50 by that hop alone.\n\n|",
                    (nats + get) / nats
                ),
                1,
            );
        }
        if !self.traced.is_empty() {
            let all = |s: &Side| s.cpu_us.iter().sum::<f64>();
            out = out.replacen(
                "\n\n|",
                &format!(
                    " Against the same over NATS with a trace context each (as the gateway starts for every request, carried over all 7 hops): \
                     throughput {:.2}x, p50 {:.2}x; the trace context alone costs the bus side {:.2}x its throughput, {:.2}x its p50, {:.2}x its CPU.\n\n|",
                    Self::ratio_of(&self.http, &self.traced, |s| s.per_second),
                    Self::ratio_of(&self.http, &self.traced, |s| s.p50_ms),
                    Self::ratio_of(&self.traced, &self.nats, |s| s.per_second),
                    Self::ratio_of(&self.traced, &self.nats, |s| s.p50_ms),
                    Self::ratio_of(&self.traced, &self.nats, all),
                ),
                1,
            );
        }
        if !self.floor.is_empty() {
            out = out.replacen(
                "\n\n|",
                &format!(
                    " The floor (an HTTP hop in front of NATS that does nothing else, a process of its own) against the same over NATS: \
                     throughput {:.2}x, p50 {:.2}x, with {:.1} µs of its own CPU per activation (the gateway: {:.1}); \
                     `POST /activate` against the floor: throughput {:.2}x, p50 {:.2}x.\n\n|",
                    Self::ratio_of(&self.floor, &self.nats, |s| s.per_second),
                    Self::ratio_of(&self.floor, &self.nats, |s| s.p50_ms),
                    Self::cpu(&self.floor, 0),
                    Self::cpu(&self.http, 0),
                    Self::ratio_of(&self.http, &self.floor, |s| s.per_second),
                    Self::ratio_of(&self.http, &self.floor, |s| s.p50_ms),
                ),
                1,
            );
        }
        let mut totals = (0.0, 0.0);
        for (i, process) in PROCESSES.iter().enumerate() {
            let (n, h) = (Self::cpu(&self.nats, i), Self::cpu(&self.http, i));
            totals = (totals.0 + n, totals.1 + h);
            out.push_str(&format!(
                "| {process} | {n:.1} | {h:.1} | {:+.1} |\n",
                h - n
            ));
        }
        out.push_str(&format!(
            "| all four | {:.1} | {:.1} | {:+.1} |\n",
            totals.0,
            totals.1,
            totals.1 - totals.0
        ));
        out
    }
}
