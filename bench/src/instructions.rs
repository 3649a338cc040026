//! The gateway's instructions per seed activation through `POST /activate`, counted by
//! callgrind: a figure the machine's noise does not move, where CPU time on 2 shared
//! cores spreads by more than most changes to the gateway (see #29 in
//! docs/benchmark.md). It counts user-space instructions only, not the kernel's share.
//! Skipped when valgrind is not installed.

use std::{path::Path, process::Command, time::Duration};

use testsupport::{eventually, free_port};

use crate::procs::Proc;

/// Activations counted, after [`WARM_UP`] that are not.
const COUNTED: usize = 1_000;
const WARM_UP: usize = 200;
/// Requests in flight: few, as callgrind runs the gateway on one thread at a time.
const CONCURRENCY: usize = 4;

/// Whether `program` runs here.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A gateway started with `env` under callgrind (instrumenting nothing until told to), on
/// the bus the seed serves: instructions per activation of [`COUNTED`] seed activations
/// after [`WARM_UP`]; `None` when valgrind is missing.
pub async fn gateway_per_activation(
    env: &[(&str, String)],
    dir: &Path,
) -> anyhow::Result<Option<f64>> {
    if !installed("valgrind") || !installed("callgrind_control") {
        eprintln!("valgrind is not installed: no instruction count of the gateway");
        return Ok(None);
    }
    let port = free_port();
    let mut env = env.to_vec();
    env.push(("MESH_GATEWAY_LISTEN", format!("127.0.0.1:{port}")));
    let out = dir.join("gateway.callgrind");
    let gateway = Proc::start_under(
        &[
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            &format!("--callgrind-out-file={}", out.display()),
        ],
        "gateway",
        &[],
        &env,
    )?;
    let base = format!("http://127.0.0.1:{port}");
    crate::wait_answers(&base).await;
    crate::http_scenario_of(&base, CONCURRENCY, WARM_UP).await;
    let pid = gateway.pid().to_string();
    control(&["-i", "on", &pid])?;
    crate::http_scenario_of(&base, CONCURRENCY, COUNTED).await;
    control(&["-d", &pid])?;
    // The dump is written by the gateway's process, after the command returns.
    let dump = dir.join("gateway.callgrind.1");
    let total = eventually(
        "callgrind writes the gateway's counts",
        Duration::from_secs(60),
        || async { summary(&std::fs::read_to_string(&dump).ok()?) },
    )
    .await;
    Ok(Some(total as f64 / COUNTED as f64))
}

/// Runs `callgrind_control` with `args`.
fn control(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "callgrind_control {args:?} failed");
    Ok(())
}

/// The instructions a callgrind dump counted (its `summary:` line).
fn summary(dump: &str) -> Option<u64> {
    dump.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_summary_line() {
        let dump =
            "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 606090653\n\nfl=(1)\n";
        assert_eq!(super::summary(dump), Some(606_090_653));
        assert_eq!(super::summary("events: Ir\n"), None);
    }
}
