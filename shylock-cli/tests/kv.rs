//! `shylock get`, `put`, `del` and `watch`, run as the real binary against a
//! real etcd: the keys as shylock's tools see them, without etcdctl.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;

use support::*;

fn ok(endpoint: &str, args: &[&str]) -> Vec<u8> {
    let output = run(endpoint, args);
    assert!(
        output.status.success(),
        "shylock {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_and_del_with_path_prefixes_json_and_stdin() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("kv");
    let mut etcd = etcd(&ep).await;

    // A value from the command line, and one from stdin, bytes exactly.
    assert!(ok(&ep, &["put", &format!("{p}/port"), "8080"]).is_empty());
    let pem = "-----BEGIN CERT-----\nAAAA\n-----END CERT-----\n";
    let mut child = shylock()
        .args(["--endpoints", &ep, "put", &format!("{p}/cert")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        get(&mut etcd, &format!("{p}/cert")).await.unwrap().0,
        pem.as_bytes()
    );
    let written: serde_json::Value =
        serde_json::from_slice(&ok(&ep, &["put", &p, "self", "--json"])).unwrap();
    let revision = written["revision"].as_i64().unwrap();
    assert_eq!(get(&mut etcd, &p).await.unwrap().1, revision);
    // Not under the prefix as a path, though under it as a string.
    put(&mut etcd, &format!("{p}-other"), "x").await;
    put(&mut etcd, &format!("{p}other"), "x").await;

    assert_eq!(ok(&ep, &["get", &format!("{p}/cert")]), pem.as_bytes());
    assert_eq!(
        text(ok(&ep, &["get", "--prefix", &format!("{p}/")])),
        format!("{p}\nself\n{p}/cert\n{pem}\n{p}/port\n8080\n"),
        "etcdctl's layout: key, then value"
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&ok(&ep, &["get", "--prefix", &p, "--json"])).unwrap();
    let keys: Vec<&str> = listed["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [p.clone(), format!("{p}/cert"), format!("{p}/port")]);
    assert_eq!(listed["kvs"][2]["value"], "8080");
    assert_eq!(listed["kvs"][0]["mod_revision"].as_i64(), Some(revision));
    assert!(listed["revision"].as_i64().unwrap() >= revision);
    // At a past revision: the key as it was.
    put(&mut etcd, &format!("{p}/port"), "9090").await;
    assert_eq!(
        ok(
            &ep,
            &[
                "get",
                &format!("{p}/port"),
                "--revision",
                &revision.to_string()
            ]
        ),
        b"8080"
    );

    // A missing key is an error naming it (exit 1), not empty output.
    let missing = run(&ep, &["get", &format!("{p}/nope")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains(&format!("{p}/nope")));

    // A value that is not UTF-8 prints as base64 in JSON, raw otherwise.
    put(&mut etcd, &format!("{p}/bin"), vec![0xff, 0x00, 0x01]).await;
    assert_eq!(ok(&ep, &["get", &format!("{p}/bin")]), [0xff, 0x00, 0x01]);
    let bin: serde_json::Value =
        serde_json::from_slice(&ok(&ep, &["get", &format!("{p}/bin"), "--json"])).unwrap();
    assert_eq!(
        bin["kvs"][0]["value"],
        serde_json::json!({"base64": "/wAB"})
    );

    assert_eq!(text(ok(&ep, &["del", &format!("{p}/bin")])), "1\n");
    let deleted: serde_json::Value =
        serde_json::from_slice(&ok(&ep, &["del", "--prefix", &p, "--json"])).unwrap();
    assert_eq!(deleted["deleted"], 3, "{deleted}");
    assert_eq!(
        keys_with(&mut etcd, &p).await,
        [format!("{p}-other"), format!("{p}other")]
    );
}

async fn keys_with(etcd: &mut etcd_client::Client, start: &str) -> Vec<String> {
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let response = etcd.get(start, Some(options)).await.unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect()
}

/// A running `shylock watch`, its stdout lines on a channel.
struct Watch {
    daemon: Daemon,
    lines: mpsc::Receiver<String>,
    log: tempfile::NamedTempFile,
}

impl Watch {
    fn start(endpoint: &str, args: &[&str]) -> Watch {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = shylock()
            .args(["--endpoints", endpoint, "watch"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let watch = Watch {
            daemon: Daemon(child),
            lines,
            log,
        };
        // It logs "watching" once the watch is registered.
        wait_until("shylock watch to start", || {
            watch.log().contains("watching")
        });
        watch
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    fn next(&self) -> String {
        self.lines.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "no line from shylock watch in {DEADLINE:?}:\n{}",
                self.log()
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_each_change_under_the_path_and_nothing_else() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("kv-watch");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/before"), "old").await;

    let watch = Watch::start(&ep, &["--prefix", &p, "--json"]);
    put(&mut etcd, &format!("{p}-other"), "not mine").await;
    let r1 = put(&mut etcd, &format!("{p}/a"), "1").await;
    // One transaction: both changes, one revision.
    let txn = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put(format!("{p}/b"), "2", None),
        etcd_client::TxnOp::delete(format!("{p}/before"), None),
    ]);
    let r2 = etcd.txn(txn).await.unwrap().header().unwrap().revision();
    let line = |l: String| serde_json::from_str::<serde_json::Value>(&l).unwrap();
    assert_eq!(
        line(watch.next()),
        serde_json::json!({"type": "PUT", "key": format!("{p}/a"), "value": "1", "revision": r1}),
        "the first line is the first change after the start (not the initial keys, \
         not {p}-other)"
    );
    let mut batch = [line(watch.next()), line(watch.next())];
    batch.sort_by_key(|v| v["key"].as_str().unwrap().to_owned());
    assert_eq!(
        batch,
        [
            serde_json::json!({"type": "PUT", "key": format!("{p}/b"), "value": "2", "revision": r2}),
            serde_json::json!({"type": "DELETE", "key": format!("{p}/before"), "revision": r2}),
        ]
    );
    assert!(
        watch.daemon.stop().success(),
        "SIGTERM ends the watch cleanly"
    );

    // One key, etcdctl's text layout; the key's children are not it.
    let watch = Watch::start(&ep, &[&format!("{p}/a")]);
    put(&mut etcd, &format!("{p}/a/child"), "no").await;
    put(&mut etcd, &format!("{p}/a"), "two\nlines").await;
    etcd.delete(format!("{p}/a"), None).await.unwrap();
    let got: Vec<String> = (0..5).map(|_| watch.next()).collect();
    assert_eq!(
        got,
        ["PUT", &format!("{p}/a"), "two", "lines", "DELETE"],
        "{}",
        watch.log()
    );
    assert_eq!(watch.next(), format!("{p}/a"));
    assert!(watch.daemon.stop().success());
}
