//! `make demo`: a throwaway etcd, the `service` example following its config,
//! and an operator changing keys: plain updates, a transaction, a bad value
//! that is rejected, a deletion and a secret rotation.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Client, Txn, TxnOp};
use shylock::testing::EtcdServer;

const PREFIX: &str = "/demo/app";

struct Demo {
    etcd: Client,
    output: mpsc::Receiver<String>,
}

impl Demo {
    /// Waits until the service has printed a line that mentions `revision`.
    fn wait_for_service(&self, revision: i64) {
        let wanted = format!("revision {revision}");
        loop {
            match self.output.recv_timeout(Duration::from_secs(15)) {
                Ok(line) if line.contains(&wanted) => break,
                Ok(_) => {}
                Err(_) => panic!("the service did not report revision {revision}"),
            }
        }
        // A pause for the reader, not for correctness.
        std::thread::sleep(Duration::from_millis(600));
    }

    async fn put(&mut self, key: &str, value: &str) {
        println!("\n$ etcdctl put {PREFIX}/{key} {value:?}");
        let response = self
            .etcd
            .put(format!("{PREFIX}/{key}"), value, None)
            .await
            .unwrap();
        self.wait_for_service(response.header().unwrap().revision());
    }
}

/// The same keys as files, through `shylock mount`.
async fn mount_demo(etcd: &mut Client, endpoint: &str) {
    println!("\n== the same keys as files, for programs not written in Rust (shylock mount)");
    if !std::path::Path::new("/dev/fuse").exists() {
        println!("   (skipped: /dev/fuse is not available on this machine)");
        return;
    }
    let shylock = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .with_file_name("shylock");
    let dir = std::env::temp_dir().join(format!("shylock-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "$ shylock --endpoints {endpoint} mount {} --prefix {PREFIX} --read-only",
        dir.display()
    );
    let mut mount = Command::new(&shylock)
        .args(["--endpoints", endpoint, "mount"])
        .arg(&dir)
        .args(["--prefix", PREFIX, "--read-only"])
        .env("SHYLOCK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run shylock (cargo build -p shylock-cli)");
    let mut lines = BufReader::new(mount.stdout.take().unwrap()).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("shylock: mounted") => {}
        other => panic!("shylock mount did not start: {other:?}"),
    }
    let show = |command: &str| {
        println!("$ {command}");
        let output = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&dir)
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&output.stdout));
    };
    show("ls -l");
    show("cat port; echo");
    println!("$ etcdctl put {PREFIX}/port \"9092\"");
    etcd.put(format!("{PREFIX}/port"), "9092", None)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(dir.join("port")).unwrap_or_default() != "9092" {
        assert!(
            std::time::Instant::now() < deadline,
            "the mount did not show the change"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    show("cat port; echo");
    println!("$ echo 1 > port   # a read-only mount refuses writes");
    let refused = Command::new("sh")
        .arg("-c")
        .arg("echo 1 > port")
        .current_dir(&dir)
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&refused.stderr));
    // SAFETY: kill(2) on our own child: SIGTERM makes shylock unmount.
    unsafe {
        libc::kill(mount.id() as i32, libc::SIGTERM);
    }
    let _ = mount.wait();
    let _ = std::fs::remove_dir(&dir);
}

#[tokio::main]
async fn main() {
    println!("== starting a throwaway etcd (temporary data directory, free loopback ports)");
    let server = EtcdServer::start();
    println!("   etcd serves at {}", server.endpoint());
    let mut etcd = Client::connect([server.endpoint()], None).await.unwrap();
    for (key, value) in [
        ("port", "8080"),
        ("backends/a/host", "10.0.0.1"),
        ("api-token", "first-token"),
    ] {
        etcd.put(format!("{PREFIX}/{key}"), value, None)
            .await
            .unwrap();
        println!("$ etcdctl put {PREFIX}/{key} {value:?}");
    }

    println!("\n== starting the service (examples/service.rs)");
    let service_bin = std::env::current_exe().unwrap().with_file_name("service");
    let mut service = Command::new(service_bin)
        .env("SHYLOCK_ENDPOINTS", server.endpoint())
        .env("SHYLOCK_PREFIX", PREFIX)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the service example (cargo build -p shylock-examples --examples)");
    let stdout = service.stdout.take().unwrap();
    let (tx, output) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            let _ = tx.send(line);
        }
    });
    let mut demo = Demo { etcd, output };
    let first = demo
        .etcd
        .get(PREFIX, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    demo.wait_for_service(first);

    println!("\n== a plain update arrives in the typed struct");
    demo.put("port", "9090").await;

    println!("\n== three keys in one transaction arrive as one update");
    println!("$ etcdctl txn: put backends/b/host, backends/b/port, log-level");
    let txn = Txn::new().and_then(vec![
        TxnOp::put(format!("{PREFIX}/backends/b/host"), "10.0.0.2", None),
        TxnOp::put(format!("{PREFIX}/backends/b/port"), "8443", None),
        TxnOp::put(format!("{PREFIX}/log-level"), "debug", None),
    ]);
    let revision = demo
        .etcd
        .txn(txn)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    demo.wait_for_service(revision);

    println!("\n== a bad value is rejected; the last good config keeps serving");
    demo.put("port", "ninety").await;
    demo.put("log-level", "loud").await;

    println!("\n== fixing the values brings the config current again");
    demo.put("port", "9091").await;
    demo.put("log-level", "warn").await;

    println!("\n== a deleted key really disappears");
    println!("$ etcdctl del --prefix {PREFIX}/backends/a/");
    let response = demo
        .etcd
        .delete(
            format!("{PREFIX}/backends/a/"),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    demo.wait_for_service(response.header().unwrap().revision());

    println!("\n== secrets change too, but never show up in output");
    demo.put("api-token", "second-token-rotated").await;

    println!("\n== stopping the service");
    let _ = service.kill();
    let _ = service.wait();

    mount_demo(&mut demo.etcd, &server.endpoint()).await;

    println!("\n== stopping etcd");
    drop(server);
    println!("done: the typed config and the mounted files followed every change; bad values were refused.");
}
