//! The reaper between a node and an exec function's program: no process the program
//! starts outlives its activation, whatever it does (new sessions, double forks).
//!
//! The `handlers` binary runs itself as `handlers __reap <program> <args>…` for every
//! exec activation. The reaper makes itself a child subreaper (Linux's
//! `PR_SET_CHILD_SUBREAPER`), so every descendant of the program whose parent dies is
//! re-parented to it rather than to init, however it detached (`setsid`, double forks).
//! It starts the program on its own stdio, lets go of that stdio itself, and waits. When
//! the program exits, or when the node sends SIGTERM (the activation's budget ran out),
//! it kills every descendant it has left and exits with the program's status. The
//! node's read of the program's stdout ends at the program's exit, not when the last
//! holder of the pipe lets go.

use std::{ffi::OsString, process::Command, time::Duration};

use nix::{
    errno::Errno,
    sys::{
        signal::{self, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{getpid, Pid},
};
use signal_hook::{consts::SIGTERM, iterator::Signals};

/// The first argument that runs the reaper.
pub const ARG: &str = "__reap";

/// Runs `argv` (program and arguments) under the reaper; the exit code for the process
/// (the program's; a program killed by a signal makes the reaper die by it too).
pub fn run(argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("handlers {ARG}: no program to run");
        return 2;
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("handlers {ARG}: cannot become a child subreaper: {e}");
        return 126;
    }
    // SIGTERM (the budget ran out) is taken before the program starts, so the reaper
    // never dies of it: a thread kills everything below it, and the wait ends.
    let mut term = match Signals::new([SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("handlers {ARG}: cannot catch SIGTERM: {e}");
            return 126;
        }
    };
    let child = match Command::new(program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("cannot start {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    std::thread::spawn(move || {
        if term.forever().next().is_some() {
            kill_descendants();
        }
    });
    let program_pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // Only the program (and what it starts) holds the node's pipes from now on.
    release_stdio();
    let status = wait_for(program_pid);
    kill_descendants();
    match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, signal, _)) => {
            // Die the same way, so the node reports the signal.
            let _ = signal_hook::low_level::emulate_default_handler(signal as i32);
            let _ = signal::raise(signal);
            128 + signal as i32
        }
        _ => 128 + SIGTERM,
    }
}

/// Points stdin, stdout and stderr at /dev/null.
fn release_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&null);
    let _ = nix::unistd::dup2_stderr(&null);
}

/// Waits until `program` ends, reaping any orphan that ends meanwhile.
fn wait_for(program: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(program) => return Some(status),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

/// Kills every descendant until none is left: a process whose parent is killed comes
/// to this subreaper, so the loop ends only when the whole tree is gone.
fn kill_descendants() {
    // No child at all (the usual case: the program started nothing that outlived it):
    // nothing can be below, and /proc need not be read.
    if waitpid(None, Some(WaitPidFlag::WNOHANG)) == Err(Errno::ECHILD) {
        return;
    }
    let me = getpid();
    loop {
        let left = descendants(me);
        for pid in &left {
            let _ = signal::kill(*pid, Signal::SIGKILL);
        }
        // Reap whatever ended.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(_) => {
                    if left.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        if left.is_empty() && descendants(me).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every process below `root`, read from /proc.
fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(Pid, Pid)> = entries
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((Pid::from_raw(pid), Pid::from_raw(parent_in_stat(&stat)?)))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    found.remove(0);
    found
}

/// The parent pid in a `/proc/<pid>/stat` line (after the command, which may hold
/// spaces and parentheses).
fn parent_in_stat(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_any_command_name() {
        assert_eq!(parent_in_stat("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(parent_in_stat("42 (a) b (c)) R 9 1 1"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
    }
}
