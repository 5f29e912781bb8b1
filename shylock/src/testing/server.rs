//! One etcd member process.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::process;

/// How long a member may take to serve clients after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// One etcd member: a process on loopback ports with its own data directory.
/// Stopped and its data removed on drop.
pub struct EtcdServer {
    name: String,
    dir: tempfile::TempDir,
    client_port: u16,
    /// Where the member listens for peers.
    peer_port: u16,
    /// Where other members reach it: `peer_port`, or a relay in front of it.
    advertised_peer_port: u16,
    /// Plain-HTTP `/health` and `/metrics`, whatever the client scheme.
    metrics_port: u16,
    initial_cluster: String,
    extra_args: Vec<String>,
    scheme: &'static str,
    child: Mutex<Option<Child>>,
}

/// Settings for a server or cluster before it starts.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    pub(crate) extra_args: Vec<String>,
    pub(crate) tls: bool,
}

impl EtcdOptions {
    /// Default settings: plain HTTP, no auth.
    pub fn new() -> Self {
        Self::default()
    }

    /// Passes one more command-line flag to etcd, such as `--auth-token-ttl=5`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Clients connect with `https://` (pass the certificate flags with [`arg`](Self::arg)).
    pub fn https(mut self) -> Self {
        self.tls = true;
        self
    }
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it serves clients.
    ///
    /// # Panics
    /// If `etcd` is not installed or does not come up; the message holds the
    /// end of etcd's log.
    pub fn start() -> EtcdServer {
        Self::start_with(EtcdOptions::new())
    }

    /// Starts a single-member etcd with extra options.
    pub fn start_with(options: EtcdOptions) -> EtcdServer {
        let mut last = String::new();
        for _ in 0..3 {
            let peer = process::free_port();
            let server =
                Self::unstarted("solo", process::free_port(), (peer, peer), None, &options);
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) => last = log,
            }
        }
        panic!("etcd did not start (three tries, fresh ports each):\n{last}");
    }

    /// A member not yet running. `peer` is the port it listens on for peers
    /// and the one it advertises to them (the same, or a relay's).
    pub(crate) fn unstarted(
        name: &str,
        client_port: u16,
        (peer_port, advertised_peer_port): (u16, u16),
        initial_cluster: Option<String>,
        options: &EtcdOptions,
    ) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("shylock-etcd-")
            .tempdir()
            .expect("create a temporary etcd data directory");
        EtcdServer {
            name: name.to_owned(),
            dir,
            client_port,
            peer_port,
            advertised_peer_port,
            metrics_port: process::free_port(),
            initial_cluster: initial_cluster
                .unwrap_or_else(|| format!("{name}=http://127.0.0.1:{advertised_peer_port}")),
            extra_args: options.extra_args.clone(),
            scheme: if options.tls { "https" } else { "http" },
            child: Mutex::new(None),
        }
    }

    /// The client URL, such as `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    /// The peer URL other members reach this one at.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.advertised_peer_port)
    }

    /// The plain-HTTP URL of the member's `/health` and `/metrics` pages
    /// (served apart from the client URL, so also for TLS servers).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The sum of one of etcd's own metrics over the series whose labels
    /// contain `labels` (empty: all), read from its `/metrics` page.
    ///
    /// # Panics
    /// If the page cannot be read.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let body = http_get(self.metrics_port, "/metrics")
            .unwrap_or_else(|e| panic!("read etcd {}'s metrics: {e}", self.name));
        body.lines()
            .filter(|l| {
                l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Whether the member reports itself healthy: it runs, has a leader
    /// and serves reads (etcd's `/health`).
    pub fn is_healthy(&self) -> bool {
        http_get(self.metrics_port, "/health").is_ok_and(|b| b.contains("\"health\":\"true\""))
    }

    /// The member's name in its cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data directory (removed on drop).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child();
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// Stops etcd gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Kills etcd (SIGKILL), as a crash would.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Starts the same member again on the same ports and data, and waits
    /// until it serves clients (which, in a cluster, needs a quorum).
    ///
    /// # Panics
    /// If it does not come up.
    pub fn restart(&self) {
        assert!(!self.is_running(), "restart of a running etcd member");
        if let Err(log) = self.spawn_and_wait() {
            panic!("etcd member {} did not come back:\n{log}", self.name);
        }
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn signal(&self, signal: i32) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub(crate) fn spawn(&self) -> std::io::Result<()> {
        let log = File::create(self.log_path())?;
        let mut command = Command::new(process::etcd_binary());
        let client = self.endpoint();
        command
            .arg(format!("--name={}", self.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                self.peer_port
            ))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url()))
            .arg(format!("--listen-metrics-urls={}", self.metrics_url()))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-token=shylock-test")
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = process::spawn(command)?;
        *self.child() = Some(child);
        Ok(())
    }

    /// Waits until etcd reports itself healthy (whatever it logs: some
    /// `--logger` settings print no "ready" line); on failure returns the
    /// log's end.
    pub(crate) fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if self.is_healthy() {
                return Ok(());
            }
            let log = || std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if !self.is_running() {
                let log = log();
                return Err(format!("etcd {} exited:\n{}", self.name, tail(&log)));
            }
            if Instant::now() > deadline {
                self.kill();
                let log = log();
                return Err(format!(
                    "etcd {} not ready after {READY_DEADLINE:?}:\n{}",
                    self.name,
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn_and_wait(&self) -> Result<(), String> {
        self.spawn()
            .map_err(|e| format!("could not run etcd: {e}"))?;
        self.wait_ready()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of `GET path` from a plain-HTTP listener on loopback.
pub(crate) fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!(
            "not an HTTP response from port {port}"
        ))),
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
