//! The HTTP API, described by OpenAPI (poem-openapi): one module per group of routes.

mod activate;
mod activations;
mod encoded;
mod error;
mod events;
mod functions;
mod health;
mod nodes;
mod session;
mod topology;
mod triggers;

use std::sync::Arc;

use poem_openapi::{OpenApiService, Tags};

pub use activate::ActivateBody;
pub use error::ApiError;
pub use nodes::ColorBody;

use crate::state::State;

/// Groups of operations in the OpenAPI document.
#[derive(Tags)]
enum ApiTags {
    /// Activate nodes of the mesh.
    Activation,
    /// Act on one node.
    Nodes,
    /// WebAssembly functions deployed at runtime.
    Functions,
    /// What activates a node besides a request: a subject, a schedule.
    Triggers,
    /// The live stream of status events.
    Events,
    /// The graph discovered from the bus.
    Topology,
    /// Liveness and readiness.
    Health,
    /// A read session for browsers, when reads are private.
    Session,
}

/// Every group of operations.
pub type Operations = (
    activate::ActivateApi,
    activations::ActivationsApi,
    activations::RetryApi,
    nodes::NodesApi,
    functions::FunctionsApi,
    triggers::TriggersApi,
    events::EventsApi,
    topology::TopologyApi,
    health::HealthApi,
    session::SessionApi,
);

/// The OpenAPI service of every route.
pub fn service(state: Arc<State>) -> OpenApiService<Operations, ()> {
    OpenApiService::new(
        (
            activate::ActivateApi(state.clone()),
            activations::ActivationsApi(state.clone()),
            activations::RetryApi(state.clone()),
            nodes::NodesApi(state.clone()),
            functions::FunctionsApi(state.clone()),
            triggers::TriggersApi(state.clone()),
            events::EventsApi(state.clone()),
            topology::TopologyApi(state.clone()),
            health::HealthApi(state.clone()),
            session::SessionApi(state),
        ),
        "nats-mesh gateway",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Activate a graph of NATS request-reply service nodes and watch their status \
         events live. Every node is a NATS service on `activate.<node>` publishing on \
         `status.<node>`; this gateway is one HTTP door onto that bus.",
    )
}

/// Request bodies that refuse unknown fields. poem-openapi enforces
/// `#[oai(deny_unknown_fields)]` but does not say so in the document, and reads `null`
/// as an absent optional field without saying so either; [`document`] adds
/// `additionalProperties: false` and `nullable: true` (on optional fields) so that the
/// spec matches the behaviour.
const CLOSED_BODIES: [&str; 5] = [
    "ActivateBody",
    "ColorBody",
    "ConfigBody",
    "RollbackBody",
    "TriggerBody",
];

/// The OpenAPI document as served on `/openapi.json`.
pub fn document<T>(service: &OpenApiService<T, ()>) -> String
where
    T: poem_openapi::OpenApi,
{
    let text = service.spec();
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text;
    };
    for name in CLOSED_BODIES {
        if let Some(schema) = doc["components"]["schemas"].get_mut(name) {
            schema["additionalProperties"] = serde_json::Value::Bool(false);
            let required: Vec<String> = schema["required"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(properties) = schema["properties"].as_object_mut() {
                for (field, property) in properties.iter_mut() {
                    if !required.contains(field) {
                        property["nullable"] = serde_json::Value::Bool(true);
                    }
                }
            }
        }
    }
    doc.to_string()
}
