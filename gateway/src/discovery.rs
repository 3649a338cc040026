//! Topology discovered from the bus through `$SRV.INFO`: never hard-coded.
//!
//! Discovery asks every service for its info and its stats. nats-mesh nodes (see
//! [`NodeMeta::from_metadata`]) are read for what they say of themselves; any other
//! Services API service is shown too, as a plain service with its endpoints. Replicas
//! are grouped by name and their stats summed. It runs periodically and at once when a
//! node it does not know publishes a status event.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::Client;
use futures::StreamExt;
use schemas::{
    graph::{NodeKind, ServiceStats},
    service::{self, NodeMeta, Verb},
    sse::{SseEvent, TopologyEvent},
    NodeName,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    graph::{
        Discovered, GraphView, LeftOut, MAX_DOWNSTREAM, MAX_EDGES, MAX_ENDPOINTS,
        MAX_ENDPOINTS_PER_NODE, MAX_NODES, MAX_REPLICAS, MAX_REPLICAS_PER_NODE, MAX_SUBJECT_LEN,
    },
    settings::DiscoverySettings,
    sse::{frame, ingest::Ingest, states::Latest},
};

/// What one discovery round found: the nodes, and the names whose replicas disagree
/// about what the node is (its downstream, work or function).
#[derive(Default)]
struct Round {
    nodes: BTreeMap<NodeName, Discovered>,
    conflicts: std::collections::BTreeSet<NodeName>,
    /// Per node, the instance whose description is kept (the smallest id: the same
    /// choice every round, so the graph does not flap between two descriptions).
    described_by: BTreeMap<NodeName, String>,
    /// `$SRV.STATS` summed over each name's replicas.
    stats: BTreeMap<NodeName, ServiceStats>,
    /// What was heard past the graph's bounds.
    left_out: LeftOut,
    /// Replicas, endpoints and downstream names kept, over every node.
    replicas: usize,
    endpoints: usize,
    downstream: usize,
    /// Per node, how many downstream names it keeps (fixed at its first answer, so its
    /// replicas are cut alike and do not look as if they disagreed).
    downstream_kept: BTreeMap<NodeName, usize>,
}

/// A `$SRV.INFO` answer, read leniently: services written with any client library.
#[derive(Deserialize)]
struct Info {
    name: String,
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    metadata: std::collections::HashMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    endpoints: Vec<EndpointInfo>,
}

#[derive(Deserialize)]
struct EndpointInfo {
    #[serde(default)]
    subject: String,
}

/// A `$SRV.STATS` answer, read leniently.
#[derive(Deserialize)]
struct Stats {
    name: String,
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    endpoints: Vec<EndpointStats>,
}

#[derive(Deserialize)]
struct EndpointStats {
    #[serde(default)]
    num_requests: u64,
    #[serde(default)]
    num_errors: u64,
    /// Nanoseconds.
    #[serde(default)]
    processing_time: u64,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Largest count or time believed from one `$SRV.STATS` answer: 2^53 - 1, the largest
/// integer a browser holds exactly (a replica serving a million requests a second would
/// take 285 years to get there).
const MAX_PLAUSIBLE: u64 = (1 << 53) - 1;

/// One replica's totals over its endpoints, when they are plausible: no count or time
/// beyond [`MAX_PLAUSIBLE`], no more errors than requests. Anyone on the bus may answer
/// `$SRV.STATS`; an implausible answer is left out, never summed into an overflow.
fn replica_totals(endpoints: &[EndpointStats]) -> Option<(u64, u64, u64)> {
    let mut total = (0u64, 0u64, 0u64);
    for e in endpoints {
        if e.num_errors > e.num_requests {
            return None;
        }
        total.0 = total.0.checked_add(e.num_requests)?;
        total.1 = total.1.checked_add(e.num_errors)?;
        total.2 = total.2.checked_add(e.processing_time)?;
    }
    (total.0 <= MAX_PLAUSIBLE && total.2 <= MAX_PLAUSIBLE).then_some(total)
}

/// Sums the stats of each name's replicas (each replica counted once, implausible ones
/// left out: [`replica_totals`]).
fn sum_stats(answers: Vec<Stats>) -> BTreeMap<NodeName, ServiceStats> {
    let mut seen = std::collections::BTreeSet::new();
    let mut totals: BTreeMap<NodeName, (u64, u64, u64)> = BTreeMap::new();
    for answer in answers {
        let Ok(name) = NodeName::new(answer.name.as_str()) else {
            continue;
        };
        if !seen.insert((name.clone(), answer.id)) {
            continue;
        }
        let Some(replica) = replica_totals(&answer.endpoints) else {
            tracing::debug!(node = %name, "implausible $SRV.STATS answer left out");
            continue;
        };
        // Each replica is at most 2^53: a sum of them overflows only past 2^11 replicas
        // of one name; saturating is then the honest answer.
        let total = totals.entry(name).or_default();
        total.0 = total.0.saturating_add(replica.0);
        total.1 = total.1.saturating_add(replica.1);
        total.2 = total.2.saturating_add(replica.2);
    }
    totals
        .into_iter()
        .map(|(name, (requests, errors, nanos))| {
            let average_ms = if requests == 0 {
                0.0
            } else {
                nanos as f64 / requests as f64 / 1e6
            };
            (
                name,
                ServiceStats {
                    requests,
                    errors,
                    average_ms,
                },
            )
        })
        .collect()
}

impl Round {
    /// Adds one replica's answer, within the graph's bounds (what is past them is
    /// counted in `left_out`).
    fn add(
        &mut self,
        name: NodeName,
        instance: String,
        mut meta: NodeMeta,
        kind: NodeKind,
        endpoints: impl IntoIterator<Item = String>,
    ) {
        if !self.nodes.contains_key(&name) && self.nodes.len() >= MAX_NODES {
            self.left_out.services += 1;
            return;
        }
        let room = match self.downstream_kept.get(&name) {
            Some(kept) => *kept,
            None => {
                let room = meta
                    .downstream
                    .len()
                    .min(MAX_DOWNSTREAM)
                    .min(MAX_EDGES.saturating_sub(self.downstream));
                self.downstream += room;
                self.downstream_kept.insert(name.clone(), room);
                room
            }
        };
        if meta.downstream.len() > room {
            self.left_out.downstream += meta.downstream.len() - room;
            meta.downstream.truncate(room);
        }
        let entry = self.nodes.entry(name.clone()).or_default();
        if !entry.instances.contains(&instance) {
            if entry.instances.len() >= MAX_REPLICAS_PER_NODE || self.replicas >= MAX_REPLICAS {
                self.left_out.replicas += 1;
                return;
            }
            self.replicas += 1;
        }
        if !entry.instances.is_empty() && (entry.meta != meta || entry.kind != kind) {
            self.conflicts.insert(name.clone());
        }
        entry.instances.insert(instance.clone());
        for subject in endpoints {
            if entry.endpoints.contains(&subject) {
                continue;
            }
            if entry.endpoints.len() >= MAX_ENDPOINTS_PER_NODE || self.endpoints >= MAX_ENDPOINTS {
                self.left_out.endpoints += 1;
                continue;
            }
            self.endpoints += 1;
            entry.endpoints.insert(subject);
        }
        let keep = self
            .described_by
            .get(&name)
            .is_none_or(|current| instance < *current);
        if keep {
            entry.meta = meta;
            entry.kind = kind;
            self.described_by.insert(name, instance);
        }
    }
}

/// Asks every service for its info and its stats. Waits at most `window`, and stops
/// early once answers have stopped arriving for a short while.
async fn discover(client: &Client, window: Duration) -> Result<Round, async_nats::Error> {
    let info_inbox = client.new_inbox();
    let stats_inbox = client.new_inbox();
    let mut infos = client.subscribe(info_inbox.clone()).await?;
    let mut stats = client.subscribe(stats_inbox.clone()).await?;
    client
        .publish_with_reply(service::all(Verb::Info), info_inbox, "".into())
        .await?;
    client
        .publish_with_reply(service::all(Verb::Stats), stats_inbox, "".into())
        .await?;
    let quiet = (window / 4).min(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + window;
    let mut found = Round::default();
    let mut stat_answers = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = if found.nodes.is_empty() {
            left
        } else {
            quiet.min(left)
        };
        let next = async {
            tokio::select! {
                Some(m) = infos.next() => Some((true, m)),
                Some(m) = stats.next() => Some((false, m)),
                else => None,
            }
        };
        let Ok(Some((is_info, message))) = tokio::time::timeout(wait, next).await else {
            break;
        };
        if !is_info {
            if let Ok(answer) = serde_json::from_slice::<Stats>(&message.payload) {
                stat_answers.push(answer);
            }
            continue;
        }
        let Ok(info) = serde_json::from_slice::<Info>(&message.payload) else {
            continue;
        };
        let Ok(name) = NodeName::new(info.name.as_str()) else {
            continue;
        };
        let (meta, kind) = match NodeMeta::from_metadata(&info.metadata) {
            Some(meta) => (meta, NodeKind::Node),
            None => (NodeMeta::default(), NodeKind::Service),
        };
        let endpoints = info
            .endpoints
            .into_iter()
            .map(|e| e.subject.chars().take(MAX_SUBJECT_LEN).collect::<String>())
            .filter(|s| !s.is_empty());
        found.add(
            name,
            info.id.chars().take(64).collect(),
            meta,
            kind,
            endpoints,
        );
    }
    found.stats = sum_stats(stat_answers);
    Ok(found)
}

/// Pause after a discovery round that found nothing.
const EMPTY_ROUND_RETRY: Duration = Duration::from_secs(1);

/// Least time between two discoveries triggered by unknown publishers.
const MIN_TRIGGER_GAP: Duration = Duration::from_millis(500);

/// Keeps `view` current until `stop` is cancelled, announcing each change in the log
/// of `ingest` (with the `latest` states); a node unknown to ingest starts a round.
pub async fn run(
    client: Client,
    view: Arc<GraphView>,
    ingest: Arc<Ingest>,
    latest: Arc<Latest>,
    settings: DiscoverySettings,
    stop: CancellationToken,
) {
    let mut conflicts = std::collections::BTreeSet::new();
    loop {
        // A round that heard from no one (a busy machine answers after the window, or
        // nothing runs yet) is tried again soon, not after the whole interval.
        let mut next = EMPTY_ROUND_RETRY.min(settings.interval);
        match discover(&client, settings.window).await {
            Ok(round) => {
                if !round.nodes.is_empty() {
                    next = settings.interval;
                }
                for name in round.conflicts.difference(&conflicts) {
                    tracing::warn!(node = %name, "replicas of one node describe it differently (downstream, work or function): the one with the smallest service id is shown");
                }
                conflicts = round.conflicts;
                view.set_stats(round.stats);
                view.set_left_out(round.left_out);
                if view.replace(round.nodes) {
                    let graph = latest.with(|states| view.snapshot(states));
                    tracing::info!(nodes = graph.nodes.len(), "topology changed");
                    let mermaid = crate::mermaid::render(&graph);
                    ingest.log().push_control(
                        SseEvent::Topology,
                        frame::topology(&TopologyEvent { graph, mermaid }),
                    );
                }
            }
            Err(e) => tracing::debug!(cause = %e, "discovery failed"),
        }
        let last = tokio::time::Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {},
            _ = ingest.unknown_node.notified() => {
                // A burst of events from unknown publishers costs one discovery.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(last + MIN_TRIGGER_GAP) => {},
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, id: &str, endpoints: &[(u64, u64, u64)]) -> Stats {
        Stats {
            name: name.into(),
            id: id.into(),
            endpoints: endpoints
                .iter()
                .map(
                    |&(num_requests, num_errors, processing_time)| EndpointStats {
                        num_requests,
                        num_errors,
                        processing_time,
                    },
                )
                .collect(),
        }
    }

    #[test]
    fn implausible_stats_are_left_out_not_summed_into_overflow() {
        let totals = sum_stats(vec![
            stats("UI", "a", &[(10, 1, 20_000_000)]),
            stats("UI", "b", &[(u64::MAX, u64::MAX, u64::MAX)]),
            stats("UI", "c", &[(MAX_PLAUSIBLE, 0, 0), (1, 0, 0)]),
            stats("UI", "d", &[(5, 6, 0)]),
            stats("UI", "e", &[(u64::MAX, 0, 0), (1, 0, 0)]),
            stats("UI", "a", &[(1_000, 0, 0)]),
            stats("UI", "f", &[(30, 2, 20_000_000)]),
        ]);
        let ui = &totals[&NodeName::new("UI").unwrap()];
        assert_eq!((ui.requests, ui.errors), (40, 3), "only a and f count");
        assert!((ui.average_ms - 1.0).abs() < 1e-9, "{}", ui.average_ms);
    }

    fn meta(downstream: &[&str]) -> NodeMeta {
        NodeMeta {
            downstream: downstream
                .iter()
                .map(|d| NodeName::new(*d).unwrap())
                .collect(),
            work_ms: 0,
            fail_rate: 0.0,
            function: "simulated".into(),
        }
    }

    #[test]
    fn disagreeing_replicas_are_reported_and_one_description_is_kept_whatever_the_order() {
        let a = NodeName::new("A").unwrap();
        for order in [["i1", "i2"], ["i2", "i1"]] {
            let mut round = Round::default();
            for instance in order {
                let m = if instance == "i1" {
                    meta(&["B"])
                } else {
                    meta(&["C"])
                };
                round.add(a.clone(), instance.into(), m, NodeKind::Node, []);
            }
            assert!(round.conflicts.contains(&a));
            assert_eq!(round.nodes[&a].meta, meta(&["B"]), "i1's, in either order");
            assert_eq!(round.nodes[&a].instances.len(), 2);
        }
        let mut agreeing = Round::default();
        agreeing.add(a.clone(), "i1".into(), meta(&["B"]), NodeKind::Node, []);
        agreeing.add(a.clone(), "i2".into(), meta(&["B"]), NodeKind::Node, []);
        assert!(agreeing.conflicts.is_empty());
    }
}
