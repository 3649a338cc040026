//! A program as a function (the "classic watchdog" model): one process per activation.
//!
//! The program is started from its argv (never through a shell) in its own process
//! group, with a clean environment, gets the [`schemas::FunctionInput`] document on
//! stdin, and its stdout (one JSON value) becomes the result. Exit 0 is success; another
//! exit status fails with 500 and the last lines of stderr; output that is not JSON, or
//! larger than the limit, fails with 502. When the activation's budget runs out the call
//! is dropped and the whole process group is killed. stdout is read up to the limit and
//! stderr keeps only its tail, so a chatty program costs bounded memory.
//!
//! The program runs under the [reaper](crate::reap) (the `handlers` binary itself, see
//! [`use_reaper`]): nothing it starts outlives the activation, in a new session or not,
//! and its result is taken when it exits. Without a reaper (the library embedded in
//! another program that never named one) only the program's process group is killed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::Arc,
};

use futures::future::BoxFuture;
use nix::{sys::signal, unistd::Pid};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::function::{Call, Function, FunctionError};

/// Bytes of stderr kept for the failure message.
const STDERR_TAIL: usize = 4096;
/// Lines of stderr quoted in the failure message.
const STDERR_LINES: usize = 5;
/// Environment variables passed through from the node process; everything else is
/// withheld (the node's NATS credentials among them).
const PASS_ENV: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

/// The reaper program, once named (see [`use_reaper`]).
static REAPER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Runs every exec function under `handlers` (the binary at `path`) in its reaper mode
/// ([`crate::reap`]). The `handlers` binary names itself at start; a test or another
/// program embedding the library names the `handlers` binary it built. The first call
/// wins.
pub fn use_reaper(path: PathBuf) {
    let _ = REAPER.set(path);
}

/// How to run a program.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecSpec {
    /// The program and its arguments; the first is looked up on `PATH`.
    pub argv: Vec<String>,
    /// Working directory (a topology file's own directory by default).
    pub dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Largest stdout accepted, in bytes.
    pub max_output_bytes: usize,
}

/// A program as a [`Function`].
#[derive(Clone, Debug)]
pub struct Exec(Arc<ExecSpec>);

impl Exec {
    /// Runs `spec`'s program once per call.
    pub fn new(spec: ExecSpec) -> Self {
        Self(Arc::new(spec))
    }
}

impl Function for Exec {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn call(&self, call: Call) -> BoxFuture<'static, Result<Value, FunctionError>> {
        let spec = self.0.clone();
        Box::pin(async move { run(&spec, call).await })
    }
}

/// Kills the process group when dropped (the call ended, or was dropped at the
/// deadline), so that nothing the program started outlives it. Under the reaper (whose
/// pid is the group's id) the reaper is asked first, so it can kill what left the group;
/// the group is killed a moment later whatever happens.
struct Group {
    pgid: Option<Pid>,
    reaped: bool,
}

/// How long the reaper has to clean up before its group is killed.
const REAPER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Group {
    /// Ends the program and everything it started: the reaper is asked (SIGTERM), or
    /// the group killed.
    fn end(&self) {
        let Some(pgid) = self.pgid else { return };
        if self.reaped {
            let _ = signal::kill(pgid, signal::Signal::SIGTERM);
        } else {
            // ESRCH (the group is gone already) is the usual case after a normal exit.
            let _ = signal::killpg(pgid, signal::Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(pgid) = self.pgid else { return };
        if !self.reaped {
            self.end();
            return;
        }
        if signal::kill(pgid, signal::Signal::SIGTERM).is_err() {
            return; // Gone already: it cleaned up when the program ended.
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(REAPER_GRACE).await;
                let _ = signal::killpg(pgid, signal::Signal::SIGKILL);
            });
        } else {
            let _ = signal::killpg(pgid, signal::Signal::SIGKILL);
        }
    }
}

async fn run(spec: &ExecSpec, call: Call) -> Result<Value, FunctionError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(FunctionError::failed("exec has an empty argv"));
    };
    let document = serde_json::to_vec(&call.document())
        .map_err(|e| FunctionError::failed(format!("cannot encode the input: {e}")))?;
    let reaper = REAPER.get();
    let mut command = match reaper {
        Some(reaper) => {
            let mut command = tokio::process::Command::new(reaper);
            command.arg(crate::reap::ARG).arg(program);
            command
        }
        None => tokio::process::Command::new(program),
    };
    command
        .args(args)
        .env_clear()
        .envs(
            PASS_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .envs(&spec.env)
        .env("MESH_NODE", call.node.as_str())
        .env("MESH_ACTIVATION_ID", call.activation_id.as_str())
        .env("MESH_BUDGET_MS", call.budget_ms().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The reaper is told to end (SIGTERM) and cleans up; the group is killed later.
        .kill_on_drop(reaper.is_none());
    if let Some(traceparent) = &call.traceparent {
        command.env("TRACEPARENT", traceparent);
    }
    if let Some(dir) = &spec.dir {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .map_err(|e| FunctionError::failed(format!("cannot start {program}: {e}")))?;
    let group = Group {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
        reaped: reaper.is_some(),
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(FunctionError::failed("the program's pipes are missing"));
    };
    let write = async move {
        // A program may exit without reading its input: a broken pipe is not an error.
        let _ = stdin.write_all(&document).await;
        drop(stdin);
    };
    let read_out = async {
        let out = read_bounded(stdout, spec.max_output_bytes).await;
        if out.is_none() {
            group.end();
        }
        out
    };
    let wait = async {
        let status = child.wait().await;
        // Whatever the program left behind in its group goes with it (the reaper has
        // killed it all already).
        if !group.reaped {
            group.end();
        }
        status
    };
    let ((), out, err, status) = tokio::join!(write, read_out, read_tail(stderr), wait);
    let Some(out) = out else {
        return Err(FunctionError::bad_output(format!(
            "{program} printed more than {} bytes (the node's max_output_bytes)",
            spec.max_output_bytes
        )));
    };
    let status =
        status.map_err(|e| FunctionError::failed(format!("waiting for {program}: {e}")))?;
    if !status.success() {
        return Err(FunctionError::failed(format!(
            "{program} {}{}",
            describe(status),
            last_lines(&err)
        )));
    }
    serde_json::from_slice(&out).map_err(|e| {
        FunctionError::bad_output(format!(
            "{program} printed something that is not one JSON value ({e}): {:?}",
            String::from_utf8_lossy(&out[..out.len().min(80)])
        ))
    })
}

/// Reads everything, or `None` as soon as there is more than `limit` bytes.
async fn read_bounded(mut from: impl AsyncRead + Unpin, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return Some(out),
            Ok(n) if out.len() + n > limit => return None,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads everything, keeping only the last [`STDERR_TAIL`] bytes.
async fn read_tail(mut from: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = from.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
    tail
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended abnormally".into(),
    }
}

/// `: line; line; ...` of the last lines of stderr, or nothing when it is empty.
pub(crate) fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(STDERR_LINES);
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines[start..].join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_quotes_the_last_lines() {
        assert_eq!(last_lines(b""), "");
        assert_eq!(last_lines(b"a\n\nb\nc\nd\ne\nf\n"), ": b | c | d | e | f");
    }

    #[tokio::test]
    async fn bounded_reads() {
        assert_eq!(
            read_bounded(&b"12345"[..], 5).await,
            Some(b"12345".to_vec())
        );
        assert_eq!(read_bounded(&b"123456"[..], 5).await, None);
        let long = vec![b'x'; STDERR_TAIL * 3];
        assert_eq!(read_tail(&long[..]).await.len(), STDERR_TAIL);
    }
}
