//! Running the real `shylock` binary against real etcd, and waiting on
//! conditions with a deadline.

#![allow(dead_code, unused_imports)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod dns;

pub use shylock::testing::{shared_server, unique_prefix, EtcdOptions, EtcdServer};

pub const DEADLINE: Duration = Duration::from_secs(10);
/// How long a mount may take to serve.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn shylock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shylock"))
}

/// One of shylock-cli's examples, built beside the binary under test.
pub fn example(name: &str) -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_shylock"))
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        binary.exists(),
        "{} not built (cargo test builds examples)",
        binary.display()
    );
    binary
}

/// Runs `shylock --endpoints endpoint ARGS` to its end.
pub fn run(endpoint: &str, args: &[&str]) -> std::process::Output {
    shylock()
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .unwrap()
}

/// Waits until `check` holds, or fails the test naming `what`.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*path))
}

/// A running `shylock mount`, unmounted on drop.
pub struct Mount {
    child: Option<Child>,
    /// What the mount logged so far, read as it comes (a full pipe would
    /// block the daemon).
    log: std::sync::Arc<std::sync::Mutex<String>>,
    uid: bool,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Mount {
    pub fn start(endpoint: &str, prefix: &str, extra: &[&str]) -> Mount {
        Self::start_with(endpoint, prefix, extra, &[])
    }

    pub fn start_with(endpoint: &str, prefix: &str, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        Self::start_at(dir, path, endpoint, prefix, extra, env)
    }

    pub fn start_at(
        dir: tempfile::TempDir,
        path: PathBuf,
        endpoint: &str,
        prefix: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Mount {
        let mut command = shylock();
        command
            .args(["--endpoints", endpoint, "mount"])
            .arg(&path)
            .args(["--prefix", prefix])
            .args(extra)
            .envs(env.iter().copied());
        Self::spawn(command, dir, path, extra.contains(&"--uid"))
    }

    /// Runs a mount command line of the caller's, and waits until it serves.
    pub fn spawn(mut command: Command, dir: tempfile::TempDir, path: PathBuf, uid: bool) -> Mount {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("run shylock");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // shylock prints "shylock: mounted ..." once the filesystem serves.
        let stdout = child.stdout.take().unwrap();
        let (tx, mounted) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("shylock: mounted") {
                    let _ = tx.send(());
                }
            }
        });
        // Mounting reads the whole prefix first (100,000 keys in one test),
        // in a debug build on a loaded machine: a longer deadline than a
        // change's.
        let deadline = Instant::now() + MOUNT_DEADLINE;
        while mounted.try_recv().is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "shylock mount exited with {status}:\n{}",
                    log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not mounted after {MOUNT_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Mount {
            child: Some(child),
            log,
            uid,
            dir,
            path,
        }
    }

    /// Whether the mount was started with `--uid`.
    pub fn args_had_uid(&self) -> bool {
        self.uid
    }

    pub fn file(&self, relative: &str) -> PathBuf {
        self.path.join(relative)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for a clean exit and the unmount.
    pub fn stop(self) {
        self.stop_logged();
    }

    /// Like [`stop`](Self::stop); returns what the mount wrote to stderr.
    pub fn stop_logged(mut self) -> String {
        let mut child = self.child.take().unwrap();
        signal(&child, libc::SIGTERM);
        let status = wait_exit(&mut child);
        // The reader thread sees the pipe close once the process is gone.
        let deadline = Instant::now() + DEADLINE;
        while std::sync::Arc::strong_count(&self.log) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stderr = self.log.lock().unwrap().clone();
        if !status.success() {
            panic!("shylock mount exited with {status}:\n{stderr}");
        }
        assert!(!is_mounted(&self.path), "still mounted after exit");
        stderr
    }

    /// SIGKILL: leaves a stale mount behind, as a crash would.
    pub fn kill(mut self) -> (tempfile::TempDir, PathBuf) {
        let mut child = self.child.take().unwrap();
        signal(&child, libc::SIGKILL);
        wait_exit(&mut child);
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        // Leave the stale mount for the caller: Drop must not clean it.
        let path = std::mem::take(&mut self.path);
        (dir, path)
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "shylock did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            let _ = child.wait();
        }
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.path)
                .status();
        }
    }
}

/// A `shylock` child process, stopped (SIGTERM, then SIGKILL) when dropped,
/// so a failing test leaves no daemon behind.
pub struct Daemon(pub Child);

impl Daemon {
    /// Runs `shylock --endpoints endpoint ARGS`, its stderr into `log`.
    pub fn spawn(endpoint: &str, args: &[&str], log: &Path) -> Daemon {
        Daemon(
            shylock()
                .args(["--endpoints", endpoint])
                .args(args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.0, libc::SIGTERM);
        wait_exit(&mut self.0)
    }

    /// SIGKILL, as a crash or the OOM killer would; waits for the exit.
    pub fn kill(mut self) {
        signal(&self.0, libc::SIGKILL);
        wait_exit(&mut self.0);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            signal(&self.0, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A raw etcd client for the test's own reads and writes.
pub async fn etcd(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap()
}

pub async fn put(etcd: &mut etcd_client::Client, key: &str, value: impl Into<Vec<u8>>) -> i64 {
    etcd.put(key, value, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

pub async fn get(etcd: &mut etcd_client::Client, key: &str) -> Option<(Vec<u8>, i64)> {
    let response = etcd.get(key, None).await.unwrap();
    response
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision()))
}

/// Waits until etcd holds `key`; its value and revision.
pub async fn wait_for_key(etcd: &mut etcd_client::Client, key: &str) -> (Vec<u8>, i64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = get(etcd, key).await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{key} not in etcd after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every key (relative to `prefix/`) under a prefix, sorted.
pub async fn keys(etcd: &mut etcd_client::Client, prefix: &str) -> Vec<String> {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let response = etcd.get(format!("{prefix}/"), Some(options)).await.unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key()[prefix.len() + 1..]).into_owned())
        .collect()
}

/// A loopback address nothing listens on (for --metrics-addr).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The Prometheus text served at `addr`, once it answers.
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut page = String::new();
    wait_until(&format!("metrics on {addr}"), || {
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        page.clear();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut page).is_ok()
            && page.starts_with("HTTP/1.1 200")
    });
    page
}

/// One sample of a scraped page: the value of `name{labels}` exactly.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Names in a directory, sorted.
pub fn ls(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs a shell command line in `dir`; panics with its output if it fails.
pub fn sh(dir: &Path, script: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{script}` failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A confdir with templates, resources and helper scripts, in a temp dir.
pub struct Confdir {
    pub dir: tempfile::TempDir,
}

impl Confdir {
    pub fn new() -> Confdir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        Confdir { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn template(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.path("templates").join(name), text).unwrap();
        self
    }

    pub fn resource(&self, name: &str, toml: &str) -> &Self {
        std::fs::write(self.path("conf.d").join(format!("{name}.toml")), toml).unwrap();
        self
    }

    /// A resource `name` rendering `template` from the keys under
    /// `prefix` + `key` into `<confdir>/<name>.out`; returns that path.
    pub fn single(&self, name: &str, template: &str, prefix: &str, key: &str) -> PathBuf {
        let dest = self.path(&format!("{name}.out"));
        self.template(&format!("{name}.tmpl"), template).resource(
            name,
            &format!(
                "[template]\nsrc = \"{name}.tmpl\"\ndest = \"{}\"\nprefix = \"{prefix}\"\nkeys = [\"{key}\"]\n",
                dest.display()
            ),
        );
        dest
    }

    /// A script that appends a line to `log` and exits with `code`.
    pub fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path.display().to_string()
    }

    pub fn lines(&self, name: &str) -> usize {
        std::fs::read_to_string(self.path(name)).map_or(0, |t| t.lines().count())
    }

    pub fn render(&self, endpoint: &str, extra: &[&str]) -> std::process::Output {
        shylock()
            .args(["--endpoints", endpoint, "render", "--confdir"])
            .arg(self.dir.path())
            .args(extra)
            .output()
            .unwrap()
    }

    pub fn spawn(&self, endpoint: &str, extra: &[&str]) -> Daemon {
        Daemon(
            shylock()
                .args(["--endpoints", endpoint, "render", "--confdir"])
                .arg(self.dir.path())
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(self.path("render.log")).unwrap())
                .spawn()
                .unwrap(),
        )
    }
}

/// The log of a `spawn`ed render, for failure messages.
pub fn log(c: &Confdir) -> String {
    text(&c.path("render.log"))
}

pub fn stop(child: Daemon) {
    assert!(child.stop().success());
}

pub fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Writes `value` as `echo > file` does (open with O_TRUNC, write, close),
/// and returns what close(2) said.
pub fn write_and_close(path: &Path, value: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    std::io::Write::write_all(&mut file, value)?;
    // close(2)'s answer is the commit's: Rust's drop would ignore it.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(file);
    // SAFETY: closes the descriptor this function owns, once.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
