//! Where deployed functions are kept: the key-value bucket of records
//! ([`schemas::function::BUCKET`], one key per function, its revisions the versions) and
//! the object store bucket of modules ([`schemas::function::MODULES_BUCKET`]).
//!
//! Both buckets are bounded: the records by [`RECORDS_MAX_BYTES`], the modules by
//! [`MODULES_MAX_BYTES`]; a deploy past either is refused by the server (the bucket
//! discards new writes), never by evicting another function.

use std::time::Duration;

use async_nats::{
    jetstream::{self, kv, object_store::ObjectStore},
    Client,
};
use futures::StreamExt;
use schemas::{
    function::{self, FunctionRecord},
    NodeName,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Most bytes the records bucket holds (every version of every function).
pub const RECORDS_MAX_BYTES: i64 = 64 * 1024 * 1024;
/// Most bytes the modules bucket holds.
pub const MODULES_MAX_BYTES: i64 = 1024 * 1024 * 1024;
/// Largest module, by default, in bytes (the gateway refuses larger ones with 413).
pub const MAX_MODULE_BYTES: usize = 16 * 1024 * 1024;
/// Longest wait for JetStream to open or make a bucket.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// JetStream did not answer or refused.
    #[error("the function store is unavailable: {0}")]
    Unavailable(String),
    /// No such function, or no such version.
    #[error("{0}")]
    NotFound(String),
    /// The stored record or module is unusable.
    #[error("{0}")]
    Unusable(String),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// One version of a function.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    /// Its number: the record's revision in the bucket (increasing, not consecutive).
    pub version: u64,
    /// Its record.
    pub record: FunctionRecord,
}

/// The two buckets.
#[derive(Clone)]
pub struct Functions {
    /// Records, one key per function.
    pub records: kv::Store,
    /// Modules.
    pub modules: ObjectStore,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Functions")
    }
}

/// Opens both buckets, making them when missing (with `replicas` copies of each).
pub async fn open(client: &Client, replicas: usize) -> Result<Functions, StoreError> {
    let js = jetstream::new(client.clone());
    let opened = async {
        let records = mesh_core::bus::key_value(
            &js,
            mesh_core::bus::Bucket {
                name: function::BUCKET,
                description:
                    "nats-mesh: deployed functions, one key per function, a revision per version",
                history: function::HISTORY,
                max_age: Duration::ZERO,
                max_bytes: RECORDS_MAX_BYTES,
                replicas,
            },
        )
        .await
        .map_err(StoreError::Unavailable)?;
        let modules = match js.get_object_store(function::MODULES_BUCKET).await {
            Ok(store) => store,
            // Made directly, as async-nats would make it (as `key_value` does for a bucket).
            Err(_) => {
                let bucket = function::MODULES_BUCKET;
                js.get_or_create_stream(jetstream::stream::Config {
                    name: format!("OBJ_{bucket}"),
                    description: Some("nats-mesh: modules of deployed functions".into()),
                    subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
                    max_bytes: MODULES_MAX_BYTES,
                    allow_rollup: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    StoreError::Unavailable(mesh_core::bus::storage_hint(e, MODULES_MAX_BYTES))
                })?;
                js.get_object_store(bucket).await.map_err(unavailable)?
            }
        };
        Ok(Functions { records, modules })
    };
    tokio::time::timeout(OPEN_WAIT, opened)
        .await
        .map_err(|_| StoreError::Unavailable("JetStream did not answer".into()))?
}

/// The SHA-256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Functions {
    /// Stores `module` (once per content) and a new version of `name` with `settings`;
    /// returns the new version.
    pub async fn deploy(
        &self,
        name: &NodeName,
        module: &[u8],
        settings: function::FunctionSettings,
    ) -> Result<Version, StoreError> {
        let object = function::module_object(name, &sha256_hex(module));
        let info = match self.modules.info(&object).await {
            Ok(info) if info.size == module.len() => info,
            _ => self
                .modules
                .put(object.as_str(), &mut &module[..])
                .await
                .map_err(unavailable)?,
        };
        let record = FunctionRecord {
            module: object,
            digest: info.digest,
            size: Some(module.len() as u64),
            deployed_at: Some(schemas::now_rfc3339()),
            settings,
        };
        self.put(name, record).await
    }

    /// Stores `record` as the new version of `name`.
    async fn put(&self, name: &NodeName, record: FunctionRecord) -> Result<Version, StoreError> {
        let version = self
            .records
            .put(name.as_str(), record.encode().into())
            .await
            .map_err(unavailable)?;
        Ok(Version { version, record })
    }

    /// The current version of `name`, if it is deployed.
    pub async fn current(&self, name: &NodeName) -> Result<Option<Version>, StoreError> {
        let entry = self
            .records
            .entry(name.as_str())
            .await
            .map_err(unavailable)?;
        Ok(entry.and_then(|e| read(name, &e)))
    }

    /// Every kept version of `name`, oldest first (since it was last deleted).
    pub async fn versions(&self, name: &NodeName) -> Result<Vec<Version>, StoreError> {
        // A history of a key with no messages would wait forever: ask for the last first.
        let last = self
            .records
            .entry(name.as_str())
            .await
            .map_err(unavailable)?;
        if last.is_none_or(|e| e.operation != kv::Operation::Put) {
            return Ok(Vec::new());
        }
        let read_all = async {
            let mut history = self
                .records
                .history(name.as_str())
                .await
                .map_err(unavailable)?;
            let mut versions = Vec::new();
            while let Some(entry) = history.next().await {
                let entry = entry.map_err(unavailable)?;
                match entry.operation {
                    kv::Operation::Put => versions.extend(read(name, &entry)),
                    kv::Operation::Delete | kv::Operation::Purge => versions.clear(),
                }
                if entry.delta == 0 {
                    break;
                }
            }
            Ok(versions)
        };
        tokio::time::timeout(OPEN_WAIT, read_all)
            .await
            .map_err(|_| StoreError::Unavailable("JetStream did not send the history".into()))?
    }

    /// Makes an earlier version the current one again, as a new version.
    pub async fn roll_back(&self, name: &NodeName, to: u64) -> Result<Version, StoreError> {
        let earlier = self
            .versions(name)
            .await?
            .into_iter()
            .find(|v| v.version == to)
            .ok_or_else(|| StoreError::NotFound(format!("{name} has no version {to}")))?;
        let mut record = earlier.record;
        record.deployed_at = Some(schemas::now_rfc3339());
        self.put(name, record).await
    }

    /// Stops `name` everywhere and forgets it: its versions and its modules.
    pub async fn delete(&self, name: &NodeName) -> Result<(), StoreError> {
        if self.current(name).await?.is_none() {
            return Err(StoreError::NotFound(format!("no function {name}")));
        }
        self.records
            .purge(name.as_str())
            .await
            .map_err(unavailable)?;
        let prefix = format!("{name}/");
        let mut list = self.modules.list().await.map_err(unavailable)?;
        let mut objects = Vec::new();
        while let Some(Ok(info)) = list.next().await {
            if info.name.starts_with(&prefix) {
                objects.push(info.name);
            }
        }
        for object in objects {
            if let Err(e) = self.modules.delete(&object).await {
                tracing::warn!(%object, cause = %e, "cannot delete a module of a deleted function");
            }
        }
        Ok(())
    }

    /// The names of every deployed function, at most `max`.
    pub async fn names(&self, max: usize) -> Result<Vec<NodeName>, StoreError> {
        let listed = async {
            let keys = self.records.keys().await.map_err(unavailable)?;
            Ok::<_, StoreError>(
                keys.filter_map(|k| async move { k.ok().and_then(|k| NodeName::new(&k).ok()) })
                    .take(max)
                    .collect::<Vec<NodeName>>()
                    .await,
            )
        };
        // async-nats' key listing can wait for a heartbeat when the bucket changes under
        // it: bounded, so a listing answers.
        let mut names = tokio::time::timeout(OPEN_WAIT, listed)
            .await
            .map_err(|_| {
                StoreError::Unavailable("JetStream did not list the functions".into())
            })??;
        names.sort();
        Ok(names)
    }

    /// The module of `record`, at most `max_bytes`, checked against its digest.
    pub async fn module(
        &self,
        record: &FunctionRecord,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let info = self
            .modules
            .info(&record.module)
            .await
            .map_err(|e| StoreError::NotFound(format!("module {}: {e}", record.module)))?;
        if info.size > max_bytes {
            return Err(StoreError::Unusable(format!(
                "module {} is {} bytes, over the limit of {max_bytes}",
                record.module, info.size
            )));
        }
        if let (Some(want), Some(have)) = (&record.digest, &info.digest) {
            if want != have {
                return Err(StoreError::Unusable(format!(
                    "module {} has digest {have}, the record says {want}",
                    record.module
                )));
            }
        }
        let mut object = self
            .modules
            .get(&record.module)
            .await
            .map_err(unavailable)?;
        let mut bytes = Vec::with_capacity(info.size);
        // The object checks its digest as it is read to the end.
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| StoreError::Unusable(format!("module {}: {e}", record.module)))?;
        Ok(bytes)
    }
}

/// The version an entry holds, if it is a usable record.
pub fn read(name: &NodeName, entry: &kv::Entry) -> Option<Version> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    match FunctionRecord::decode(name, &entry.value) {
        Ok(record) => Some(Version {
            version: entry.revision,
            record,
        }),
        Err(e) => {
            tracing::warn!(function = %name, version = entry.revision, cause = %e, "unusable function record skipped");
            None
        }
    }
}
