//! Triggers (`schemas::trigger`): every gateway follows the bucket `MESH_TRIGGERS` and
//! runs each trigger in it. A subject trigger is a subscription in queue group
//! `mesh-triggers` (one gateway per message): a message with a reply subject is answered
//! with the reply tree, one without is queued as an asynchronous activation. A cron
//! trigger queues one asynchronous activation per tick, whose id is the trigger's name
//! and the tick: every gateway tries, the first stores it, the others find the id taken.

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::kv;
use futures::StreamExt;
use schemas::{
    record::RecordedRequest,
    trigger::{self, Trigger},
    ActivationId, ActivationRequest, NodeName,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    jobs::{self, Dispatch, SubmitError},
    sync::lock,
};

/// Messages of one subject trigger handled at once by one gateway.
const IN_FLIGHT: usize = 256;
/// Pause before watching the bucket again.
const REWATCH: Duration = Duration::from_secs(1);

/// The triggers this gateway runs, by name (for `GET /triggers` and the page).
#[derive(Default)]
pub struct Running {
    triggers: Mutex<BTreeMap<NodeName, (Trigger, CancellationToken)>>,
}

impl Running {
    /// Every trigger run here, by name.
    pub fn list(&self) -> Vec<(NodeName, Trigger)> {
        lock(&self.triggers)
            .iter()
            .map(|(n, (t, _))| (n.clone(), t.clone()))
            .collect()
    }
}

/// Checks a trigger fully: its fields and its schedule.
pub fn check(t: &Trigger) -> Result<(), String> {
    t.check().map_err(|e| e.to_string())?;
    if let Some(cron) = &t.cron {
        cron::Schedule::from_str(cron).map_err(|e| format!("cron {cron:?}: {e}"))?;
    }
    Ok(())
}

/// Follows the bucket and runs its triggers until `stop`.
pub async fn run(
    d: Arc<Dispatch>,
    store: kv::Store,
    running: Arc<Running>,
    default_budget: Duration,
    stop: CancellationToken,
) {
    loop {
        match store.watch_with_history(">").await {
            Ok(mut watch) => loop {
                let entry = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = watch.next() => e,
                };
                match entry {
                    Some(Ok(entry)) => apply(&d, &running, entry, default_budget, &stop),
                    _ => break,
                }
            },
            Err(e) => tracing::warn!(cause = %e, "cannot watch the triggers"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REWATCH) => {}
        }
    }
}

fn apply(
    d: &Arc<Dispatch>,
    running: &Running,
    entry: kv::Entry,
    default_budget: Duration,
    stop: &CancellationToken,
) {
    let Ok(name) = NodeName::new(&entry.key) else {
        return tracing::warn!(key = %entry.key, "a trigger key that is not a name: skipped");
    };
    let mut triggers = lock(&running.triggers);
    if let Some((_, old)) = triggers.remove(&name) {
        old.cancel();
    }
    if entry.operation != kv::Operation::Put {
        return tracing::info!(trigger = %name, "trigger removed");
    }
    let trigger = match Trigger::decode(&entry.value)
        .map_err(|e| e.to_string())
        .and_then(|t| check(&t).map(|()| t))
    {
        Ok(t) => t,
        Err(e) => return tracing::warn!(trigger = %name, cause = %e, "trigger refused"),
    };
    if triggers.len() >= trigger::MAX_TRIGGERS {
        return tracing::warn!(trigger = %name, max = trigger::MAX_TRIGGERS, "this gateway runs its most triggers: not run");
    }
    let token = stop.child_token();
    let budget = trigger
        .timeout_ms
        .unwrap_or(mesh_core::call::millis(default_budget));
    match (&trigger.subject, &trigger.cron) {
        (Some(subject), _) => {
            tokio::spawn(on_subject(
                d.clone(),
                name.clone(),
                subject.clone(),
                trigger.node.clone(),
                budget,
                token.clone(),
            ));
        }
        (_, Some(cron)) => {
            let Ok(schedule) = cron::Schedule::from_str(cron) else {
                return;
            };
            tokio::spawn(on_schedule(
                d.clone(),
                name.clone(),
                schedule,
                trigger.clone(),
                budget,
                token.clone(),
            ));
        }
        _ => return,
    }
    tracing::info!(trigger = %name, node = %trigger.node, "trigger running");
    triggers.insert(name, (trigger, token));
}

/// The input a message carries: its JSON, else its text, else none.
fn input_of(payload: &[u8]) -> serde_json::Value {
    if payload.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(payload).into()))
}

async fn on_subject(
    d: Arc<Dispatch>,
    name: NodeName,
    subject: String,
    node: NodeName,
    budget: u64,
    stop: CancellationToken,
) {
    let mut messages = match d
        .client
        .queue_subscribe(subject.clone(), trigger::QUEUE_GROUP.into())
        .await
    {
        Ok(s) => s,
        Err(e) => return tracing::warn!(trigger = %name, cause = %e, "cannot subscribe"),
    };
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            m = messages.next() => match m { Some(m) => m, None => break },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (d, node) = (d.clone(), node.clone());
        tokio::spawn(async move {
            let input = input_of(&message.payload);
            let id = ActivationId::generate();
            match message.reply {
                Some(reply_to) => {
                    let request = ActivationRequest {
                        activation_id: Some(id),
                        timeout_ms: Some(budget),
                        input: Some(input),
                        ..Default::default()
                    };
                    let wait = Duration::from_millis(budget) + Duration::from_millis(250);
                    let reply = mesh_core::call::activate(&d.client, &node, &request, wait).await;
                    let body = serde_json::to_vec(&reply).unwrap_or_default();
                    let _ = d.client.publish(reply_to, body.into()).await;
                }
                None => {
                    let request = RecordedRequest {
                        node,
                        color: None,
                        timeout_ms: budget,
                        input: Some(input),
                    };
                    let job = jobs::job_for(&d.jobs, id, request);
                    match d.jobs.submit(job, None).await {
                        Ok(_) => d.count("accepted"),
                        Err(e) => {
                            tracing::warn!(cause = %e, "a triggered activation was not queued")
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    let _ = messages.unsubscribe().await;
}

async fn on_schedule(
    d: Arc<Dispatch>,
    name: NodeName,
    schedule: cron::Schedule,
    trigger: Trigger,
    budget: u64,
    stop: CancellationToken,
) {
    // The id must fit in 64 characters with the tick's seconds.
    let prefix: String = name.as_str().chars().take(40).collect();
    loop {
        let Some(tick) = schedule.upcoming(chrono::Utc).next() else {
            return;
        };
        let wait = (tick - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Ok(id) = ActivationId::new(format!("{prefix}-{}", tick.timestamp())) else {
            return;
        };
        let request = RecordedRequest {
            node: trigger.node.clone(),
            color: None,
            timeout_ms: budget,
            input: trigger.input.clone(),
        };
        let job = jobs::job_for(&d.jobs, id, request);
        match d.jobs.submit(job, None).await {
            Ok(_) => d.count("accepted"),
            // Another gateway stored this tick's activation first.
            Err(SubmitError::Taken(_)) => {}
            Err(e) => {
                tracing::warn!(trigger = %name, cause = %e, "a tick's activation was not queued")
            }
        }
    }
}
