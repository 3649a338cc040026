//! The runner pool: every function deployed on the bus, served by this process.
//!
//! A runner watches the bucket of deployed functions ([`schemas::function`]). For each
//! version it fetches the module, checks and compiles it once (off the async runtime),
//! and serves it on `activate.<name>` in queue group `mesh`, registered with the Services
//! API like any node (its service metadata adds `mesh.version`), so any number of runners
//! share the load and discovery draws it. A new version is registered before the old one
//! is stopped: activations in flight finish on the version they started with, new ones
//! get the new one. A deleted function stops being served.
//!
//! A version that cannot be served (a module missing from the store, over the size
//! limit, refused by the checks) is logged and skipped: the version before it, if any,
//! keeps serving.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use async_nats::{jetstream::kv, Client};
use futures::StreamExt;
use mesh_wasm::{
    store::{self, Functions, Version},
    Engine,
};
use schemas::NodeName;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    runtime::{self, Registration, Served, Settings, StartError},
    topology::Work,
    wasm::WasmFunction,
    NodeSpec,
};

/// Settings of a runner, beyond the runtime's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerSettings {
    /// Largest module a runner loads, in bytes.
    pub max_module_bytes: usize,
    /// Most functions one runner serves; more are logged and left to other runners.
    pub max_functions: usize,
    /// Copies of each bucket when a runner makes them (3 on a three-server cluster).
    pub replicas: usize,
    /// WebAssembly instances running at once in this runner, over every function (their
    /// memories and stacks are reserved up front); more answer 503 at once.
    pub instances: u32,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            max_module_bytes: mesh_wasm::store::MAX_MODULE_BYTES,
            max_functions: 1000,
            replicas: 1,
            instances: 1000,
        }
    }
}

/// The service metadata key holding a function's version.
pub const VERSION_KEY: &str = "mesh.version";

/// Pause before opening or watching the store again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One function served here.
struct Serving {
    version: u64,
    served: Served,
    stop: CancellationToken,
}

impl Serving {
    /// Stops taking its requests (those in flight finish, tracked elsewhere).
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.served.service.stop().await;
        let _ = self.served.accept.await;
    }
}

/// The functions of one runner.
struct Pool {
    client: Client,
    engine: Engine,
    store: Functions,
    settings: Settings,
    runner: RunnerSettings,
    tracker: TaskTracker,
    token: CancellationToken,
    serving: HashMap<NodeName, Serving>,
}

impl Pool {
    /// Applies one change of the bucket.
    async fn apply(&mut self, entry: kv::Entry) {
        let Ok(name) = NodeName::new(&entry.key) else {
            return tracing::warn!(key = %entry.key, "a function key that is not a node name: skipped");
        };
        match entry.operation {
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(old) = self.serving.remove(&name) {
                    tracing::info!(function = %name, "function deleted: no longer served");
                    tokio::spawn(old.stop());
                }
            }
            kv::Operation::Put => {
                let Some(version) = store::read(&name, &entry) else {
                    return;
                };
                if self
                    .serving
                    .get(&name)
                    .is_some_and(|s| s.version == version.version)
                {
                    return;
                }
                if !self.serving.contains_key(&name)
                    && self.serving.len() >= self.runner.max_functions
                {
                    return tracing::warn!(function = %name, max = self.runner.max_functions, "this runner serves its most functions: not served here");
                }
                match self.load(&name, version).await {
                    Ok(new) => {
                        tracing::info!(function = %name, version = new.version, "serving");
                        if let Some(old) = self.serving.insert(name, new) {
                            // In the background: the bucket's next change need not wait.
                            tokio::spawn(old.stop());
                        }
                    }
                    Err(e) => {
                        tracing::warn!(function = %name, version = entry.revision, cause = %e, "version not served")
                    }
                }
            }
        }
    }

    /// Fetches, compiles and registers one version.
    async fn load(&self, name: &NodeName, version: Version) -> Result<Serving, String> {
        let settings = &version.record.settings;
        let bytes = self
            .store
            .module(&version.record, self.runner.max_module_bytes)
            .await
            .map_err(|e| e.to_string())?;
        let engine = self.engine.clone();
        let memory_max =
            usize::try_from(u64::from(settings.memory_mib) << 20).unwrap_or(usize::MAX);
        let compiled = tokio::task::spawn_blocking(move || {
            let compiled = engine.compile(&bytes)?;
            compiled.fits(memory_max as u64)?;
            Ok::<_, mesh_wasm::ModuleError>(compiled)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let max_output = usize::try_from(settings.max_output_bytes).unwrap_or(usize::MAX);
        let function = WasmFunction::new(
            self.engine.clone(),
            Arc::new(compiled),
            memory_max,
            max_output,
        );
        let spec = NodeSpec {
            timeout_ms: settings.timeout_ms,
            work: Work::Rust(Arc::new(function)),
            ..NodeSpec::new(name.clone()).with_downstream(settings.downstream.clone())
        };
        let stop = self.token.child_token();
        let description = Some(settings.description.clone()).filter(|d| !d.is_empty());
        let served = runtime::serve_node(
            &self.client,
            spec,
            &self.settings,
            Registration {
                max_in_flight: settings.max_in_flight as usize,
                live: None,
                description,
                metadata: vec![(VERSION_KEY.to_string(), version.version.to_string())],
            },
            &self.tracker,
            &stop,
        )
        .await
        .map_err(|e: StartError| e.to_string())?;
        Ok(Serving {
            version: version.version,
            served,
            stop,
        })
    }

    /// Follows the bucket until `token` is cancelled.
    async fn follow(&mut self) {
        loop {
            match self.store.records.watch_with_history(">").await {
                Ok(mut watch) => loop {
                    tokio::select! {
                        _ = self.token.cancelled() => return,
                        entry = watch.next() => match entry {
                            Some(Ok(entry)) => self.apply(entry).await,
                            Some(Err(e)) => {
                                tracing::warn!(cause = %e, "watching deployed functions");
                                break;
                            }
                            None => break,
                        },
                    }
                },
                Err(e) => tracing::warn!(cause = %e, "cannot watch deployed functions"),
            }
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
}

/// Serves every deployed function until `shutdown` completes, then stops taking
/// activations and waits (at most `settings.grace`) for those in flight.
pub async fn run(
    client: Client,
    settings: Settings,
    runner: RunnerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let engine = Engine::running(runner.instances)?;
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let store = loop {
        match store::open(&client, runner.replicas).await {
            Ok(store) => break store,
            Err(e) => tracing::warn!(cause = %e, "waiting for the function store"),
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    };
    tracing::info!("runner: serving every deployed function");
    let grace = settings.grace;
    let mut pool = Pool {
        client: client.clone(),
        engine,
        store,
        settings,
        runner,
        tracker: tracker.clone(),
        token: token.clone(),
        serving: HashMap::new(),
    };
    {
        let follow = pool.follow();
        tokio::pin!(follow);
        tokio::select! {
            _ = &mut follow => {}
            _ = &mut shutdown => token.cancel(),
        }
    }
    tracing::info!("shutting down: finishing activations in flight");
    for (_, serving) in pool.serving.drain() {
        serving.stop().await;
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "activations still in flight at the end of the grace period"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    Ok(())
}
