//! A deployed WebAssembly module as a node's function (see [`mesh_wasm::engine`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use mesh_wasm::{Compiled, Engine, Run};
use serde_json::Value;

use crate::function::{Call, Function, FunctionError};

/// A compiled module run once per activation, in a fresh instance.
pub struct WasmFunction {
    engine: Engine,
    compiled: Arc<Compiled>,
    memory_max: usize,
    max_output: usize,
}

impl WasmFunction {
    /// `compiled` run on `engine` (made by [`Engine::running`]) with at most
    /// `memory_max` bytes of memory and `max_output` bytes of output.
    pub fn new(
        engine: Engine,
        compiled: Arc<Compiled>,
        memory_max: usize,
        max_output: usize,
    ) -> Self {
        Self {
            engine,
            compiled,
            memory_max,
            max_output,
        }
    }
}

impl Function for WasmFunction {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, FunctionError>> {
        let engine = self.engine.clone();
        let compiled = self.compiled.clone();
        let (memory_max, max_output) = (self.memory_max, self.max_output);
        Box::pin(async move {
            let stdin = serde_json::to_vec(&call.document())
                .map_err(|e| FunctionError::failed(format!("cannot encode the input: {e}")))?;
            let mut env = vec![
                ("MESH_NODE", call.node.to_string()),
                ("MESH_ACTIVATION_ID", call.activation_id.to_string()),
                ("MESH_BUDGET_MS", call.budget_ms().to_string()),
            ];
            if let Some(traceparent) = &call.traceparent {
                env.push(("TRACEPARENT", traceparent.clone()));
            }
            let run = Run {
                stdin,
                arg0: call.node.as_str(),
                env,
                deadline: call.deadline.into_std(),
                memory_max,
                max_output,
            };
            compiled.run(&engine, run).await.map_err(|e| FunctionError {
                code: e.code,
                message: e.message + &crate::exec::last_lines(&e.stderr),
            })
        })
    }
}
