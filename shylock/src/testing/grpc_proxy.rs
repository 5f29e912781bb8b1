//! etcd's own gRPC proxy (`etcd grpc-proxy start`), the usual way to fan
//! watches out to many clients, in front of a server or cluster.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process;
use super::server::http_get;

/// A running `etcd grpc-proxy start` on a free loopback port. Stopped on drop.
pub struct GrpcProxy {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl GrpcProxy {
    /// Starts a proxy in front of these client URLs and waits until it
    /// answers its `/health` page.
    ///
    /// # Panics
    /// If it does not come up; the message holds its log.
    pub fn start(endpoints: &[String]) -> GrpcProxy {
        let dir = tempfile::Builder::new()
            .prefix("shylock-grpc-proxy-")
            .tempdir()
            .expect("create a temporary directory for the proxy");
        let log_path = dir.path().join("proxy.log");
        let upstream: Vec<&str> = endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        let mut last = String::new();
        for _ in 0..3 {
            let port = process::free_port();
            let log = File::create(&log_path).expect("create the proxy log");
            let mut command = Command::new(process::etcd_binary());
            command
                .args(["grpc-proxy", "start"])
                .arg(format!("--endpoints={}", upstream.join(",")))
                .arg(format!("--listen-addr=127.0.0.1:{port}"))
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("proxy log"))
                .stderr(log);
            let mut child = process::spawn(command).expect("run etcd grpc-proxy");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if http_get(port, "/health").is_ok_and(|b| b.contains("\"health\":\"true\"")) {
                    return GrpcProxy {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                if exited || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = std::fs::read_to_string(&log_path).unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("etcd grpc-proxy did not start (three tries):\n{last}");
    }

    /// The endpoint clients use, such as `http://127.0.0.1:40001`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
