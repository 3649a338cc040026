//! Functions deployed through the gateway: the bus's function store (opened on first
//! use, so a gateway that started before JetStream was ready still deploys) and the
//! engine that checks a module before it is stored.

use async_nats::Client;
use mesh_wasm::{
    store::{self, Functions, StoreError},
    Compiled, Engine, ModuleError,
};
use tokio::sync::OnceCell;

/// The gateway's door onto deployed functions.
pub struct Deployments {
    client: Client,
    replicas: usize,
    store: OnceCell<Functions>,
    engine: Engine,
    /// Largest module accepted at deploy, in bytes.
    pub max_module_bytes: usize,
}

impl Deployments {
    /// Deployments over `client`, making the buckets with `replicas` copies when missing.
    pub fn new(client: Client, replicas: usize, max_module_bytes: usize) -> Result<Self, String> {
        Ok(Self {
            client,
            replicas,
            store: OnceCell::new(),
            engine: Engine::checking()?,
            max_module_bytes,
        })
    }

    /// The function store, opened now if it was not yet.
    pub async fn store(&self) -> Result<&Functions, StoreError> {
        self.store
            .get_or_try_init(|| store::open(&self.client, self.replicas))
            .await
    }

    /// Checks and compiles `module` off the async runtime (as a runner will), and checks
    /// that its initial memory fits in `memory_limit` bytes.
    pub async fn check(&self, module: Vec<u8>, memory_limit: u64) -> Result<Vec<u8>, ModuleError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let compiled: Compiled = engine.compile(&module)?;
            compiled.fits(memory_limit)?;
            Ok(module)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ModuleError::Invalid(format!(
                "the check did not finish: {e}"
            )))
        })
    }
}
