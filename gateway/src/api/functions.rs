//! `/functions`: WebAssembly functions deployed at runtime (see `docs/functions.md`).
//!
//! `PUT /functions/{name}` with a module stores it on the bus and makes it the current
//! version; every runner serves it on `activate.<name>` within a moment. Settings come
//! from query parameters; those not given keep the current version's (or the defaults,
//! for a new function). `GET` lists versions, `POST .../rollback` puts an earlier one
//! back, `DELETE` stops the function everywhere.

use std::sync::Arc;

use poem_openapi::{
    param::{Path, Query},
    payload::{Binary, Json},
    ApiRequest, ApiResponse, Object, OpenApi,
};
use schemas::{function::FunctionSettings, NodeName};

use super::{ApiError, ApiTags};
use crate::{
    auth::{Caller, Reader, CHALLENGE},
    state::State,
};
use mesh_wasm::store::{StoreError, Version};

/// Most functions `GET /functions` lists.
const MAX_LISTED: usize = 1000;

/// A module: a WASI command (`_start`), importing from `wasi_snapshot_preview1` only.
#[derive(ApiRequest)]
pub enum ModuleBody {
    /// The module's bytes.
    #[oai(content_type = "application/wasm")]
    Wasm(Binary<Vec<u8>>),
    /// The module's bytes, sent as `application/octet-stream`.
    #[oai(content_type = "application/octet-stream")]
    Bytes(Binary<Vec<u8>>),
}

/// The version to put back.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct RollbackBody {
    /// An earlier version (`GET /functions/{name}` lists them).
    #[oai(validator(minimum(value = "1"), maximum(value = "9007199254740991")))]
    pub version: u64,
}

/// How a version runs.
#[derive(Debug, Clone, Object)]
pub struct SettingsView {
    /// Nodes activated, concurrently, before the module runs.
    pub downstream: Vec<NodeName>,
    /// Budget of an activation that brings none, in milliseconds.
    pub timeout_ms: u64,
    /// Memory the module may grow to, in MiB.
    pub memory_mib: u32,
    /// Activations one runner handles at once.
    pub max_in_flight: u32,
    /// Largest result, in bytes.
    pub max_output_bytes: u64,
    /// What it does.
    pub description: String,
}

/// One version of a function.
#[derive(Debug, Clone, Object)]
pub struct VersionView {
    /// Its number (the record's revision in `MESH_FUNCTIONS`: increasing, not consecutive).
    pub version: u64,
    /// The module's object in `MESH_FUNCTION_MODULES`.
    pub module: String,
    /// The module's digest (`SHA-256=<base64url>`).
    #[oai(skip_serializing_if_is_none)]
    pub digest: Option<String>,
    /// The module's size in bytes.
    #[oai(skip_serializing_if_is_none)]
    pub size: Option<u64>,
    /// When it was deployed (RFC 3339).
    #[oai(skip_serializing_if_is_none)]
    pub deployed_at: Option<String>,
    /// How it runs.
    pub settings: SettingsView,
}

/// A deployed function.
#[derive(Debug, Clone, Object)]
pub struct FunctionView {
    /// Its name: it serves `activate.<name>`.
    pub name: NodeName,
    /// The version served now.
    pub current: VersionView,
    /// Every kept version, oldest first (the last 64).
    pub versions: Vec<VersionView>,
}

/// Every deployed function, with its current version.
#[derive(Debug, Clone, Object)]
pub struct FunctionList {
    /// The functions, by name.
    pub functions: Vec<FunctionSummary>,
}

/// A deployed function's current version.
#[derive(Debug, Clone, Object)]
pub struct FunctionSummary {
    /// Its name.
    pub name: NodeName,
    /// The version served now.
    pub current: VersionView,
}

fn view(v: &Version) -> VersionView {
    let s = &v.record.settings;
    VersionView {
        version: v.version,
        module: v.record.module.clone(),
        digest: v.record.digest.clone(),
        size: v.record.size,
        deployed_at: v.record.deployed_at.clone(),
        settings: SettingsView {
            downstream: s.downstream.clone(),
            timeout_ms: s.timeout_ms,
            memory_mib: s.memory_mib,
            max_in_flight: s.max_in_flight,
            max_output_bytes: s.max_output_bytes,
            description: s.description.clone(),
        },
    }
}

/// The answer to a deploy or a rollback.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "deploy_bad_request")]
pub enum DeployResponse {
    /// A new version of an existing function is current.
    #[oai(status = 200)]
    Updated(Json<FunctionView>),
    /// A new function is deployed.
    #[oai(status = 201)]
    Created(Json<FunctionView>),
    /// The module or a setting is refused: not WebAssembly, not a WASI command, imports
    /// outside WASI preview 1, initial memory over its limit, a value out of range.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token (`MESH_GATEWAY_API_TOKEN`) and none or a wrong
    /// one was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// No such function, or no such version to roll back to.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// Something other than a deployed function serves that name now (a node of a
    /// topology, a service): a function of the same name would share its requests.
    #[oai(status = 409)]
    Conflict(Json<ApiError>),
    /// The module is larger than `MESH_GATEWAY_MAX_MODULE_BYTES`.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ApiError>),
    /// NATS or JetStream is down, or a bucket is full: nothing changed.
    #[oai(status = 503)]
    BusDown(Json<ApiError>),
}

fn deploy_bad_request(err: poem::Error) -> DeployResponse {
    DeployResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// The answer to a read.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "read_bad_request")]
pub enum ReadResponse {
    /// The function.
    #[oai(status = 200)]
    Found(Json<FunctionView>),
    /// Not a function name.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// No function of that name is deployed.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// NATS or JetStream is down.
    #[oai(status = 503)]
    BusDown(Json<ApiError>),
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
}

fn read_bad_request(err: poem::Error) -> ReadResponse {
    ReadResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

/// The answer to a listing.
#[derive(ApiResponse)]
pub enum ListResponse {
    /// Every deployed function (at most 1000).
    #[oai(status = 200)]
    Listed(Json<FunctionList>),
    /// NATS or JetStream is down.
    #[oai(status = 503)]
    BusDown(Json<ApiError>),
    /// Reads are private on this gateway (`MESH_GATEWAY_READ_TOKEN`) and neither its
    /// token, the API token nor a session cookie was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
}

/// The answer to a delete.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "delete_bad_request")]
pub enum DeleteResponse {
    /// The function is no longer served anywhere; its versions and modules are gone.
    #[oai(status = 204)]
    Deleted,
    /// Not a function name.
    #[oai(status = 400)]
    BadRequest(Json<ApiError>),
    /// The gateway requires a bearer token and none or a wrong one was sent.
    #[oai(status = 401)]
    Unauthorized(Json<ApiError>, #[oai(header = "WWW-Authenticate")] String),
    /// No function of that name is deployed.
    #[oai(status = 404)]
    NotFound(Json<ApiError>),
    /// NATS or JetStream is down: nothing changed.
    #[oai(status = 503)]
    BusDown(Json<ApiError>),
}

fn delete_bad_request(err: poem::Error) -> DeleteResponse {
    DeleteResponse::BadRequest(Json(ApiError::bad_request(&err)))
}

fn bus_down(e: &StoreError) -> ApiError {
    ApiError::new("bus_down", format!("nothing changed: {e}"))
}

/// Settings from the query over `base`; the first refusal's message.
#[allow(clippy::too_many_arguments)]
fn settings_from(
    name: &NodeName,
    base: FunctionSettings,
    downstream: Option<String>,
    timeout_ms: Option<u64>,
    memory_mib: Option<u32>,
    max_in_flight: Option<u32>,
    max_output_bytes: Option<u64>,
    description: Option<String>,
) -> Result<FunctionSettings, String> {
    let mut s = base;
    if let Some(list) = downstream {
        s.downstream = list
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| NodeName::new(d).map_err(|e| format!("downstream: {e}")))
            .collect::<Result<_, _>>()?;
    }
    s.timeout_ms = timeout_ms.unwrap_or(s.timeout_ms);
    s.memory_mib = memory_mib.unwrap_or(s.memory_mib);
    s.max_in_flight = max_in_flight.unwrap_or(s.max_in_flight);
    s.max_output_bytes = max_output_bytes.unwrap_or(s.max_output_bytes);
    s.description = description.unwrap_or(s.description);
    s.check(name).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Deployed functions.
pub struct FunctionsApi(pub Arc<State>);

impl FunctionsApi {
    /// The function's view after a change to `version`.
    async fn after(&self, name: &NodeName, version: Version) -> Result<FunctionView, StoreError> {
        let store = self.0.deployments.store().await?;
        let mut versions = store.versions(name).await?;
        if versions.last().map(|v| v.version) != Some(version.version) {
            // A change made meanwhile by someone else: show this one as current anyway.
            versions.retain(|v| v.version != version.version);
            versions.push(version.clone());
        }
        Ok(FunctionView {
            name: name.clone(),
            current: view(&version),
            versions: versions.iter().map(view).collect(),
        })
    }
}

#[OpenApi]
impl FunctionsApi {
    /// Deploy a WebAssembly function
    ///
    /// Stores the module (a WASI command: it reads the `function-input` document on
    /// stdin and prints one JSON value) in the object store `MESH_FUNCTION_MODULES` and a
    /// new version in the key-value bucket `MESH_FUNCTIONS`; every runner
    /// (`handlers --functions`) serves it on `activate.<name>` within a moment, and
    /// activations in flight finish on the version they started with. The module is
    /// checked first: invalid modules, modules that are not commands and modules that
    /// import anything outside WASI preview 1 are refused here, never at the first call.
    /// Settings not given keep the current version's (defaults for a new function).
    ///
    /// `curl -T fn.wasm -H 'content-type: application/wasm' localhost:8080/functions/NAME`
    #[oai(
        path = "/functions/:name",
        method = "put",
        tag = "ApiTags::Functions",
        operation_id = "deploy_function"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn deploy(
        &self,
        caller: Caller,
        name: Path<NodeName>,
        body: ModuleBody,
        /// Downstream nodes, comma-separated (empty: none).
        #[oai(validator(pattern = r"^[A-Za-z0-9_,-]*$", max_length = 4200))]
        downstream: Query<Option<String>>,
        /// Budget of an activation that brings none, in milliseconds (default 5000).
        #[oai(validator(minimum(value = "1"), maximum(value = "600000")))]
        timeout_ms: Query<Option<u64>>,
        /// Memory the module may grow to, in MiB (default 64).
        #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
        memory_mib: Query<Option<u32>>,
        /// Activations one runner handles at once (default 64).
        #[oai(validator(minimum(value = "1"), maximum(value = "100000")))]
        max_in_flight: Query<Option<u32>>,
        /// Largest result, in bytes (default 1048576).
        #[oai(validator(minimum(value = "1"), maximum(value = "67108864")))]
        max_output_bytes: Query<Option<u64>>,
        /// What it does.
        #[oai(validator(max_length = 1024))]
        description: Query<Option<String>>,
    ) -> DeployResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return DeployResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let (ModuleBody::Wasm(module) | ModuleBody::Bytes(module)) = body;
        if let Some(kind) = self.0.view.served_as(&name.0).filter(|k| k != "wasm") {
            return DeployResponse::Conflict(Json(ApiError::new(
                "conflict",
                format!(
                    "{} is served now by a {kind} node or service: a function of that name would share its requests (choose another name)",
                    name.0
                ),
            )));
        }
        let deployments = &self.0.deployments;
        if module.len() > deployments.max_module_bytes {
            return DeployResponse::PayloadTooLarge(Json(ApiError::new(
                "payload_too_large",
                format!(
                    "the module is {} bytes, over the limit of {}",
                    module.len(),
                    deployments.max_module_bytes
                ),
            )));
        }
        let store = match deployments.store().await {
            Ok(store) => store,
            Err(e) => return DeployResponse::BusDown(Json(bus_down(&e))),
        };
        let current = match store.current(&name.0).await {
            Ok(current) => current,
            Err(e) => return DeployResponse::BusDown(Json(bus_down(&e))),
        };
        let base = current
            .as_ref()
            .map(|c| c.record.settings.clone())
            .unwrap_or_default();
        let settings = match settings_from(
            &name.0,
            base,
            downstream.0,
            timeout_ms.0,
            memory_mib.0,
            max_in_flight.0,
            max_output_bytes.0,
            description.0,
        ) {
            Ok(settings) => settings,
            Err(e) => return DeployResponse::BadRequest(Json(ApiError::new("bad_settings", e))),
        };
        let module = match deployments
            .check(module.0, u64::from(settings.memory_mib) << 20)
            .await
        {
            Ok(module) => module,
            Err(e) => {
                return DeployResponse::BadRequest(Json(ApiError::new("bad_module", e.to_string())))
            }
        };
        let deployed = match store.deploy(&name.0, &module, settings).await {
            Ok(deployed) => deployed,
            Err(e) => return DeployResponse::BusDown(Json(bus_down(&e))),
        };
        tracing::info!(function = %name.0, version = deployed.version, bytes = module.len(), "function deployed");
        match self.after(&name.0, deployed).await {
            Ok(v) if current.is_some() => DeployResponse::Updated(Json(v)),
            Ok(v) => DeployResponse::Created(Json(v)),
            Err(e) => DeployResponse::BusDown(Json(bus_down(&e))),
        }
    }

    /// List deployed functions
    #[oai(
        path = "/functions",
        method = "get",
        tag = "ApiTags::Functions",
        operation_id = "list_functions"
    )]
    async fn list(&self, reader: Reader) -> ListResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return ListResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let listed = async {
            let store = self.0.deployments.store().await?;
            let mut functions = Vec::new();
            for name in store.names(MAX_LISTED).await? {
                if let Some(current) = store.current(&name).await? {
                    functions.push(FunctionSummary {
                        name,
                        current: view(&current),
                    });
                }
            }
            Ok::<_, StoreError>(functions)
        };
        match listed.await {
            Ok(functions) => ListResponse::Listed(Json(FunctionList { functions })),
            Err(e) => ListResponse::BusDown(Json(ApiError::new("bus_down", e.to_string()))),
        }
    }

    /// A deployed function and its versions
    #[oai(
        path = "/functions/:name",
        method = "get",
        tag = "ApiTags::Functions",
        operation_id = "get_function"
    )]
    async fn get(&self, reader: Reader, name: Path<NodeName>) -> ReadResponse {
        if let Err(e) = reader.may_read(&self.0.settings) {
            return ReadResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let read = async {
            let store = self.0.deployments.store().await?;
            let versions = store.versions(&name.0).await?;
            Ok::<_, StoreError>(versions)
        };
        match read.await {
            Ok(versions) => match versions.last() {
                Some(current) => ReadResponse::Found(Json(FunctionView {
                    name: name.0.clone(),
                    current: view(current),
                    versions: versions.iter().map(view).collect(),
                })),
                None => ReadResponse::NotFound(Json(ApiError::new(
                    "unknown_function",
                    format!("no function {} is deployed", name.0),
                ))),
            },
            Err(e) => ReadResponse::BusDown(Json(ApiError::new("bus_down", e.to_string()))),
        }
    }

    /// Roll a function back to an earlier version
    ///
    /// Makes the earlier version's module and settings current again, as a new version.
    #[oai(
        path = "/functions/:name/rollback",
        method = "post",
        tag = "ApiTags::Functions",
        operation_id = "roll_back_function"
    )]
    async fn roll_back(
        &self,
        caller: Caller,
        name: Path<NodeName>,
        body: Json<RollbackBody>,
    ) -> DeployResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return DeployResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let rolled = async {
            let store = self.0.deployments.store().await?;
            store.roll_back(&name.0, body.0.version).await
        };
        match rolled.await {
            Ok(version) => {
                tracing::info!(function = %name.0, to = body.0.version, version = version.version, "function rolled back");
                match self.after(&name.0, version).await {
                    Ok(v) => DeployResponse::Updated(Json(v)),
                    Err(e) => DeployResponse::BusDown(Json(bus_down(&e))),
                }
            }
            Err(StoreError::NotFound(e)) => {
                DeployResponse::NotFound(Json(ApiError::new("unknown_version", e)))
            }
            Err(e) => DeployResponse::BusDown(Json(bus_down(&e))),
        }
    }

    /// Delete a function
    ///
    /// Stops it on every runner and forgets its versions and modules.
    #[oai(
        path = "/functions/:name",
        method = "delete",
        tag = "ApiTags::Functions",
        operation_id = "delete_function"
    )]
    async fn delete(&self, caller: Caller, name: Path<NodeName>) -> DeleteResponse {
        if let Err(e) = caller.authorize(self.0.settings.api_token.as_deref()) {
            return DeleteResponse::Unauthorized(Json(e), CHALLENGE.into());
        }
        let deleted = async {
            let store = self.0.deployments.store().await?;
            store.delete(&name.0).await
        };
        match deleted.await {
            Ok(()) => {
                tracing::info!(function = %name.0, "function deleted");
                DeleteResponse::Deleted
            }
            Err(StoreError::NotFound(e)) => {
                DeleteResponse::NotFound(Json(ApiError::new("unknown_function", e)))
            }
            Err(e) => DeleteResponse::BusDown(Json(bus_down(&e))),
        }
    }
}
