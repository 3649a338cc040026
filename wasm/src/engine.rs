//! Checking, compiling and running WASI command modules.
//!
//! A function module follows the same contract as a program (`handlers::exec`): it reads the
//! `function-input` document on stdin and prints one JSON value on stdout; exiting with a
//! status other than 0 is a failure (500), output that is not one JSON value or is larger
//! than `max_output_bytes` is a 502, and the activation's budget bounds it (504).
//!
//! It runs in [wasmtime](https://wasmtime.dev) with WASI preview 1 and nothing else: no
//! directory is opened to it (no filesystem), no socket (no network), its environment
//! holds only `MESH_NODE`, `MESH_ACTIVATION_ID`, `MESH_BUDGET_MS` and `TRACEPARENT`, and
//! its argv is its node name. Clocks and randomness are WASI's own.
//!
//! A module is checked and compiled once per version ([`Engine::compile`]: invalid
//! modules, imports outside WASI preview 1 and modules that are not commands are refused
//! there, never at the first call) and instantiated fresh for every activation, so
//! nothing one activation leaves in memory is seen by the next. Running code is
//! interrupted by epochs (one thread ticks every [`TICK`] for every module of the
//! process): at each tick a call yields to the async runtime, and past its deadline it is
//! stopped. A module that grows its memory past its limit fails with a message saying so.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use schemas::code::{BAD_GATEWAY as BAD_OUTPUT, FAILED, TIMEOUT};
use serde_json::Value;
use wasmtime::{
    Config, ExternType, InstancePre, Linker, Module, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::{
    p1::WasiP1Ctx,
    p2::pipe::{MemoryInputPipe, MemoryOutputPipe},
    I32Exit, WasiCtxBuilder,
};

/// The one module a function may import from: WASI preview 1.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// How often running modules are interrupted to yield and to check their deadline.
pub const TICK: Duration = Duration::from_millis(10);
/// Most table elements a module may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Largest memory an instance may grow to (the largest `memory_mib`).
const MAX_MEMORY_BYTES: usize = 4 << 30;
/// What a module may write on stderr; the last lines are quoted in a failure.
const STDERR_CAP: usize = 64 * 1024;

/// What one running instance holds.
struct Host {
    wasi: WasiP1Ctx,
    limits: Limits,
}

/// The memory limit of one instance, and whether the module hit it.
struct Limits {
    memory_max: usize,
    memory_hit: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_max {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Why a module was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Not a valid WebAssembly module (or one this engine cannot compile).
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// It imports something outside WASI preview 1.
    #[error("imports outside WASI preview 1 ({WASI_MODULE}) are not allowed: {}", .0.join(", "))]
    Imports(Vec<String>),
    /// It exports no `_start` function: not a WASI command.
    #[error("exports no `_start` function: a function must be a WASI command (built with `-mexec-model=command`, the default)")]
    NotCommand,
    /// Its initial memory is already over the limit.
    #[error("its initial memory ({needs} bytes) is over its memory limit of {limit} bytes")]
    Memory {
        /// The module's initial memory, in bytes.
        needs: u64,
        /// The limit, in bytes.
        limit: u64,
    },
}

/// Stops the epoch thread when the last engine using it is dropped.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The WebAssembly engine of a process: compiles modules and runs them. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<Host>>,
    allowed: Arc<HashSet<String>>,
    ticker: Option<Arc<Ticker>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("ticking", &self.ticker.is_some())
            .finish()
    }
}

impl Engine {
    /// An engine that checks and compiles modules (the gateway's, at deploy). Modules it
    /// compiles run only on an engine made by [`Engine::running`].
    pub fn checking() -> Result<Self, String> {
        Self::new(Config::new())
    }

    fn new(mut config: Config) -> Result<Self, String> {
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).map_err(|e| format!("{e:#}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi)
            .map_err(|e| format!("{e:#}"))?;
        let mut store = Store::new(&engine, host(WasiCtxBuilder::new().build_p1(), 0));
        let allowed = linker
            .iter(&mut store)
            .filter(|(module, _, _)| *module == WASI_MODULE)
            .map(|(_, name, _)| name.to_string())
            .collect();
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            allowed: Arc::new(allowed),
            ticker: None,
        })
    }

    /// An engine that also runs modules, at most `instances` at once: a thread ticks its
    /// epoch every [`TICK`]. Instances, their memories and their async stacks come from
    /// pools reserved once (wasmtime's pooling allocator), so an activation maps and
    /// unmaps nothing; a run beyond `instances` fails at once (503).
    pub fn running(instances: u32) -> Result<Self, String> {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_core_instances(instances)
            .total_memories(instances)
            .total_tables(instances)
            .total_stacks(instances)
            .max_memory_size(MAX_MEMORY_BYTES)
            .table_elements(MAX_TABLE_ELEMENTS);
        let mut config = Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let mut engine = Self::new(config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticked = engine.engine.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticked.increment_epoch();
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        engine.ticker = Some(Arc::new(Ticker(stop)));
        Ok(engine)
    }

    /// Checks and compiles a module (CPU-bound: milliseconds for small modules, more for
    /// large ones; run it off the async runtime).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, ModuleError> {
        let module =
            Module::new(&self.engine, bytes).map_err(|e| ModuleError::Invalid(root_cause(&e)))?;
        let refused: Vec<String> = module
            .imports()
            .filter(|i| {
                !(i.module() == WASI_MODULE
                    && matches!(i.ty(), ExternType::Func(_))
                    && self.allowed.contains(i.name()))
            })
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect();
        if !refused.is_empty() {
            return Err(ModuleError::Imports(refused));
        }
        if !matches!(module.get_export("_start"), Some(ExternType::Func(_))) {
            return Err(ModuleError::NotCommand);
        }
        let initial_memory = module
            .exports()
            .filter_map(|e| match e.ty() {
                ExternType::Memory(m) => Some(m.minimum().saturating_mul(m.page_size())),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Invalid(root_cause(&e)))?;
        Ok(Compiled {
            pre,
            initial_memory,
        })
    }
}

fn host(wasi: WasiP1Ctx, memory_max: usize) -> Host {
    Host {
        wasi,
        limits: Limits {
            memory_max,
            memory_hit: false,
        },
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    let mut text = format!("{e:#}");
    text.truncate(text.floor_char_boundary(1024));
    text
}

/// A checked, compiled module, ready to be instantiated.
pub struct Compiled {
    pre: InstancePre<Host>,
    initial_memory: u64,
}

impl Compiled {
    /// Refuses the module when its initial memory is over `limit` bytes.
    pub fn fits(&self, limit: u64) -> Result<(), ModuleError> {
        if self.initial_memory > limit {
            return Err(ModuleError::Memory {
                needs: self.initial_memory,
                limit,
            });
        }
        Ok(())
    }
}

/// One activation of a module.
#[derive(Debug)]
pub struct Run<'a> {
    /// Its stdin: the `function-input` document.
    pub stdin: Vec<u8>,
    /// Its argv\[0\] (the node's name).
    pub arg0: &'a str,
    /// Its whole environment.
    pub env: Vec<(&'static str, String)>,
    /// When it is stopped.
    pub deadline: std::time::Instant,
    /// Most memory it may grow to, in bytes.
    pub memory_max: usize,
    /// Most bytes it may print on stdout.
    pub max_output: usize,
}

/// Why a run gave no result: a reply code (500, 502 or 504) and what happened.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RunError {
    /// 500: the module failed; 502: its output is unusable; 504: it ran out of time.
    pub code: u16,
    /// What happened.
    pub message: String,
    /// The end of what it wrote on stderr.
    pub stderr: bytes::Bytes,
}

impl Compiled {
    /// Instantiates the module afresh (on an engine made by [`Engine::running`]) and
    /// runs it once.
    pub async fn run(&self, engine: &Engine, run: Run<'_>) -> Result<Value, RunError> {
        // One byte more than allowed: a module that filled it printed too much.
        let stdout = MemoryOutputPipe::new(run.max_output.saturating_add(1));
        let stderr = MemoryOutputPipe::new(STDERR_CAP);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(run.stdin))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .arg(run.arg0)
            .envs(&run.env);
        let mut store = Store::new(&engine.engine, host(wasi.build_p1(), run.memory_max));
        store.limiter(|h| &mut h.limits);
        let deadline = run.deadline;
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        let ran = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        }
        .await;
        let err = stderr.contents();
        let fail = |code: u16, message: String| RunError {
            code,
            message,
            stderr: err.clone(),
        };
        let out = stdout.contents();
        if out.len() > run.max_output {
            return Err(fail(
                BAD_OUTPUT,
                format!(
                    "the module printed more than {} bytes (the function's max_output_bytes)",
                    run.max_output
                ),
            ));
        }
        let status = match ran {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => {
                    let (code, message) = failure(&e, &store.data().limits);
                    return Err(fail(code, message));
                }
            },
        };
        if status != 0 {
            return Err(fail(
                FAILED,
                format!("the module exited with status {status}"),
            ));
        }
        serde_json::from_slice(&out).map_err(|e| {
            fail(
                BAD_OUTPUT,
                format!(
                    "the module printed something that is not one JSON value ({e}): {:?}",
                    String::from_utf8_lossy(&out[..out.len().min(80)])
                ),
            )
        })
    }
}

/// The code and message of a call that trapped (or could not start).
fn failure(e: &wasmtime::Error, limits: &Limits) -> (u16, String) {
    if limits.memory_hit {
        return (
            FAILED,
            format!(
                "the module needed more memory than its limit of {} MiB ({})",
                limits.memory_max >> 20,
                root_cause(e)
            ),
        );
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return (
            schemas::code::UNAVAILABLE,
            "the runner runs its most WebAssembly instances at once: try again".into(),
        );
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return (
            TIMEOUT,
            "the module ran past its budget and was stopped".into(),
        );
    }
    (FAILED, format!("the module trapped: {}", root_cause(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_checked_at_compile() {
        let engine = Engine::checking().unwrap();
        let wasm = |text: &str| wat::parse_str(text).unwrap();
        let err = |bytes: &[u8]| engine.compile(bytes).err().unwrap().to_string();
        assert!(err(b"not wasm").contains("not a valid WebAssembly module"));
        let imports = wasm(
            r#"(module (import "env" "open" (func)) (import "wasi_snapshot_preview1" "sock_open_x" (func))
                (func (export "_start")))"#,
        );
        let text = err(&imports);
        assert!(
            text.contains("env::open") && text.contains("sock_open_x"),
            "{text}"
        );
        assert!(err(&wasm("(module (func (export \"main\")))")).contains("_start"));
        let ok = wasm(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 20) (func (export "_start")))"#,
        );
        let compiled = engine.compile(&ok).unwrap();
        assert!(compiled.fits(20 * 65536).is_ok());
        assert!(compiled.fits(19 * 65536).is_err());
    }

    /// A module printing `text`, then exiting with `status`.
    fn printing(text: &str, status: i32) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (data (i32.const 64) "{}")
                (func (export "_start")
                  (i32.store (i32.const 0) (i32.const 64))
                  (i32.store (i32.const 4) (i32.const {}))
                  (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                  (call $exit (i32.const {status}))))"#,
            text.replace('"', "\\\""),
            text.len()
        ))
        .unwrap()
    }

    fn run_once(engine: &Engine, module: &[u8], budget: Duration) -> Result<Value, RunError> {
        let compiled = engine.compile(module).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(compiled.run(
            engine,
            Run {
                stdin: br#"{"input":7}"#.to_vec(),
                arg0: "F",
                env: vec![],
                deadline: std::time::Instant::now() + budget,
                memory_max: 2 << 20,
                max_output: 64,
            },
        ))
    }

    #[test]
    fn every_outcome_of_a_run() {
        let engine = Engine::running(4).unwrap();
        let second = Duration::from_secs(1);
        let echo = wat::parse_file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/wasm/echo.wat"
        ))
        .unwrap();
        assert_eq!(
            run_once(&engine, &echo, second).unwrap(),
            serde_json::json!({"input": 7})
        );
        assert_eq!(
            run_once(&engine, &printing("[1,2]", 0), second).unwrap(),
            serde_json::json!([1, 2])
        );
        let exited = run_once(&engine, &printing("{}", 3), second).unwrap_err();
        assert_eq!(
            (exited.code, exited.message.as_str()),
            (500, "the module exited with status 3")
        );
        let junk = run_once(&engine, &printing("not json", 0), second).unwrap_err();
        assert_eq!(junk.code, 502, "{junk}");
        let long = run_once(&engine, &printing(&"x".repeat(100), 0), second).unwrap_err();
        assert_eq!(long.code, 502, "{long}");
        assert!(long.message.contains("more than 64 bytes"), "{long}");
        let spin = wat::parse_str(
            r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let stopped = run_once(&engine, &spin, Duration::from_millis(100)).unwrap_err();
        assert_eq!(stopped.code, 504, "{stopped}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let bomb = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                 (func (export "_start")
                   (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
                   unreachable))"#,
        )
        .unwrap();
        let bombed = run_once(&engine, &bomb, second).unwrap_err();
        assert_eq!(bombed.code, 500, "{bombed}");
        assert!(bombed.message.contains("limit of 2 MiB"), "{bombed}");
        let too_big =
            wat::parse_str(r#"(module (memory (export "memory") 100) (func (export "_start")))"#)
                .unwrap();
        let refused = run_once(&engine, &too_big, second).unwrap_err();
        assert!(refused.message.contains("limit of 2 MiB"), "{refused}");
    }
}
