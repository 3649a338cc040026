//! A node whose work is Rust code: `UPPER` upper-cases `input.text` and counts its words.
//!
//! ```sh
//! cargo run -p handlers --example upper                      # NATS at nats://127.0.0.1:4222
//! cargo run -p handlers --example upper -- nats://host:4222  # or elsewhere
//! nats req activate.UPPER '{"input":{"text":"hello mesh"}}'
//! ```
//!
//! It is served like every node: Services API registration (`nats micro info UPPER`),
//! status events on `status.UPPER`, deadlines, in-flight limit, graceful shutdown.

use handlers::{function, runtime, Call, FunctionError, NodeSpec, Settings};
use schemas::NodeName;
use serde_json::{json, Value};

/// The function: input in, result or error out.
async fn upper(call: Call) -> Result<Value, FunctionError> {
    let text = call
        .input
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| FunctionError::failed("input.text must be a string"))?;
    Ok(json!({
        "upper": text.to_uppercase(),
        "words": text.split_whitespace().count(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let _telemetry = mesh_core::telemetry::init(
        mesh_core::telemetry::Services::One("node-UPPER"),
        Default::default(),
    )?;
    let client = async_nats::connect(&url).await?;
    let node = NodeSpec::function(NodeName::new("UPPER")?, function(upper));
    tracing::info!(%url, "serving UPPER; Ctrl-C stops");
    runtime::run(
        client,
        vec![node],
        Settings::default(),
        mesh_core::shutdown::signal(),
    )
    .await?;
    Ok(())
}
