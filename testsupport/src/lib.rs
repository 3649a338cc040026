//! Test support: a real `nats-server` per test and condition waits.
//!
//! [`NatsServer::start`] runs the installed server on a free port (found through
//! `--ports_file_dir`, with no log scraping) and kills it on drop, so tests run in
//! parallel and may stop or restart their own server.
#![allow(clippy::unwrap_used, missing_docs)]

pub use nix::sys::signal::Signal;
use std::{
    future::Future,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running nats-server owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
}

/// The nats-server binary: `$NATS_SERVER`, else `nats-server` on `PATH`, else the
/// Debian package's path.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return p.into();
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.exists() {
        return debian;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a server with JetStream on (storage in a temporary directory).
    pub fn start_jetstream() -> Self {
        Self::start_with(&["-js"])
    }

    /// Starts a server with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self {
            child: None,
            dir,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn("-1".into());
        server
    }

    fn spawn(&mut self, port: String) {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args(["-a", "127.0.0.1", "-p", &port, "--ports_file_dir"])
            .arg(self.dir.path())
            .args(["-sd"])
            .arg(self.dir.path().join("js"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (install the nats-server package)",
                nats_server_bin().display()
            )
        });
        let ports_file = self
            .dir
            .path()
            .join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let ports: serde_json::Value = wait_blocking(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&ports_file).ok()?;
            let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
            ports["nats"][0].is_string().then_some(ports)
        })
        .expect("nats-server wrote no ports file within 10 s");
        // nats://127.0.0.1:PORT, or tls://... when the server requires TLS.
        let url = ports["nats"][0].as_str().unwrap();
        self.port = url.rsplit(':').next().unwrap().parse().unwrap();
        let _ = std::fs::remove_file(ports_file);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        self.spawn(port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process in a process group of its own, with its output kept in a file:
/// dropped (also while a test panics) it stops the whole group (SIGTERM, so a runner
/// script can stop what it started, then SIGKILL for what is left) and, when the test
/// failed, prints the output it kept. A passing test prints nothing.
pub struct Proc {
    child: Child,
    what: String,
    log: tempfile::NamedTempFile,
}

impl Proc {
    /// Starts `cmd` in a new process group, its stdout and stderr into a temporary file.
    pub fn spawn(what: &str, cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.to_string(),
            log,
        }
    }

    /// The process id, which is also the id of its process group.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Signals the whole process group.
    pub fn signal(&self, signal: Signal) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, signal);
    }

    /// Waits at most `limit` for the process to exit; its exit status, if it did.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the whole group and reaps the process.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(Signal::SIGTERM);
            wait_blocking(Duration::from_secs(10), || {
                self.child.try_wait().ok().flatten()
            });
        }
        // What is left of the group (the leader may have exited before its children).
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.what, self.output());
        }
    }
}

/// Polls `probe` until it returns `Some`, for at most `limit`.
pub fn wait_blocking<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls the async `probe` until it returns `Some`, for at most `limit`; panics with
/// `what` when the time runs out.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free TCP port on loopback (bound then released: another process could take it in
/// between, which is rare enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `n` servers routed into one cluster on loopback. Clients may connect to any.
pub fn start_cluster(n: usize) -> Vec<NatsServer> {
    start_all(&cluster_args(n, |_| Vec::new()))
}

/// Starts `n` servers with JetStream, named `s0`, `s1`, ..., routed into one cluster
/// on loopback (a JetStream cluster: streams may have up to `n` replicas).
pub fn start_jetstream_cluster(n: usize) -> Vec<NatsServer> {
    start_all(&jetstream_cluster_args(n))
}

/// The command-line arguments of each of `n` servers of a JetStream cluster (as
/// [`start_jetstream_cluster`] starts them), for a test that starts them one by one.
pub fn jetstream_cluster_args(n: usize) -> Vec<Vec<String>> {
    cluster_args(n, |i| {
        vec!["-js".into(), "--server_name".into(), format!("s{i}")]
    })
}

/// A server started with each of `args`.
pub fn start_all(args: &[Vec<String>]) -> Vec<NatsServer> {
    args.iter()
        .map(|a| NatsServer::start_with(&a.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect()
}

fn cluster_args(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Vec<Vec<String>> {
    let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    (0..n)
        .map(|i| {
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect();
            let listen = format!("nats://127.0.0.1:{}", cluster_ports[i]);
            let routes = routes.join(",");
            let mut args = vec![
                "--cluster_name".to_string(),
                "mesh-test".into(),
                "--cluster".into(),
                listen,
                "--routes".into(),
                routes,
            ];
            args.extend(extra(i));
            args
        })
        .collect()
}

/// Node specifications for tests (feature `nodes`).
#[cfg(feature = "nodes")]
pub mod nodes {
    use handlers::NodeSpec;
    use schemas::NodeName;

    /// A valid node name.
    pub fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    /// A simulated node with the given children and work, no failures.
    pub fn spec(n: &str, downstream: &[&str], work_ms: u64) -> NodeSpec {
        NodeSpec {
            work: handlers::Work::simulated(work_ms, 0.0),
            ..NodeSpec::new(name(n)).with_downstream(downstream.iter().map(|d| name(d)).collect())
        }
    }

    /// The seed topology with no work and no failures.
    pub fn seed_zero_work() -> Vec<NodeSpec> {
        handlers::Topology::seed().without_work().nodes
    }
}
