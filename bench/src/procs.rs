//! The processes under test: release builds of `handlers` and `gateway` beside this
//! binary, killed on drop, and their resident memory.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// A child process killed on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `binary` (from the directory of this executable) with `args` and `env`.
    pub fn start(binary: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_under(&[], binary, args, env)
    }

    /// As [`Proc::start`], run by `wrapper` (a program and its arguments, such as
    /// valgrind) when it is not empty.
    pub fn start_under(
        wrapper: &[&str],
        binary: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let path = bin_dir()?.join(binary);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: build it with `cargo build --release -p handlers -p gateway` (scripts/bench does)",
            path.display()
        );
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self { child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Proc {
    /// CPU time (user + system) the process has used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }
}

/// CPU time (user + system) of the process whose `stat` file is `path`, in seconds
/// (clock ticks of 1/100 s, as on Linux).
pub fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no directory for {}", exe.display()))?
        .to_path_buf())
}
