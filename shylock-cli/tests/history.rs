//! `shylock diff`, `shylock rollback` and `shylock mount --revision`
//! against a real etcd's history: puts, deletes and transactions, a
//! rollback restoring deletions, one refused by a concurrent change with
//! nothing written, batches, a mount of a past revision, and a compacted
//! revision's error.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn values(etcd: &mut etcd_client::Client, start: &str) -> Vec<(String, String)> {
    let options = etcd_client::GetOptions::new().with_prefix();
    let response = etcd.get(start, Some(options)).await.unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_and_rollback_across_puts_deletes_and_transactions() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("hist");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a"), "1").await;
    let r0 = put(&mut etcd, &format!("{p}/b"), "2").await;
    put(&mut etcd, &format!("{p}-other"), "not mine").await;
    let r1 = put(&mut etcd, &format!("{p}/a"), "10").await;
    etcd.delete(format!("{p}/b"), None).await.unwrap();
    let txn = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put(format!("{p}/c"), "3", None),
        etcd_client::TxnOp::put(format!("{p}/d"), "x\ny", None),
    ]);
    etcd.txn(txn).await.unwrap();
    put(&mut etcd, &format!("{p}-other"), "changed, not mine").await;

    let diff = run(&ep, &["diff", &p, &r0.to_string()]);
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    let shown = text(&diff.stdout);
    let changed: Vec<&str> = shown
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .collect();
    assert_eq!(
        changed,
        [
            format!("-{p}/a = 1"),
            format!("-{p}/b = 2"),
            format!("+{p}/a = 10"),
            format!("+{p}/c = 3"),
            format!("+{p}/d = x\\ny"),
        ],
        "{shown}"
    );
    assert!(
        shown.starts_with(&format!("--- {p}@{r0}\n+++ {p}@")),
        "{shown}"
    );
    // Between two past revisions; and none between a revision and itself.
    let between = text(&run(&ep, &["diff", &p, &r0.to_string(), &r1.to_string()]).stdout);
    assert!(
        between.contains(&format!("-{p}/a = 1\n+{p}/a = 10")),
        "{between}"
    );
    assert!(!between.contains("/c"), "{between}");
    assert_eq!(
        run(&ep, &["diff", &p, &r1.to_string(), &r1.to_string()]).stdout,
        b""
    );
    // --format: the exported document's diff, keys relative to the prefix.
    let doc = run(
        &ep,
        &[
            "diff",
            &p,
            &r0.to_string(),
            &r1.to_string(),
            "--format",
            "properties",
        ],
    );
    assert!(doc.status.success(), "{}", text(&doc.stderr));
    assert!(
        text(&doc.stdout).ends_with("@@ -1,2 +1,2 @@\n-a=1\n+a=10\n b=2\n"),
        "{}",
        text(&doc.stdout)
    );
    let yaml = text(&run(&ep, &["diff", &p, &r0.to_string(), "--format", "yaml"]).stdout);
    assert!(
        yaml.contains("-a: '1'\n-b: '2'\n+a: '10'\n+c: '3'\n"),
        "{yaml}"
    );

    // A dry run says what it would do and writes nothing.
    let before = values(&mut etcd, &p).await;
    let dry = run(&ep, &["rollback", &p, "--to", &r0.to_string(), "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert_eq!(
        text(&dry.stdout),
        format!("~ {p}/a\n+ {p}/b\n- {p}/c\n- {p}/d\n")
    );
    assert_eq!(values(&mut etcd, &p).await, before);

    // In batches of two: a deleted key back, new ones gone, nothing else.
    let done = run(
        &ep,
        &["rollback", &p, "--to", &r0.to_string(), "--batch", "2"],
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert_eq!(
        values(&mut etcd, &p).await,
        [
            (format!("{p}-other"), "changed, not mine".to_owned()),
            (format!("{p}/a"), "1".to_owned()),
            (format!("{p}/b"), "2".to_owned()),
        ]
    );
    let again = run(&ep, &["diff", &p, &r0.to_string()]);
    let shown = text(&again.stdout);
    assert!(
        !shown
            .lines()
            .any(|l| l.starts_with("-/") || l.starts_with("+/")),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_racing_another_writer_is_refused_naming_the_key_and_writes_nothing() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("hist-race");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a"), "1").await;
    let r0 = put(&mut etcd, &format!("{p}/b"), "2").await;
    etcd.delete(format!("{p}/b"), None).await.unwrap();
    // Another writer changes a without a pause.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, ep, key) = (stop.clone(), ep.clone(), format!("{p}/a"));
        tokio::spawn(async move {
            let mut etcd = etcd_client::Client::connect([ep], None).await.unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                etcd.put(key.as_str(), format!("w{i}"), None).await.unwrap();
            }
        })
    };
    let deadline = Instant::now() + DEADLINE;
    let refused = loop {
        let out = run(&ep, &["rollback", &p, "--to", &r0.to_string()]);
        if out.status.code() == Some(1) {
            break text(&out.stderr);
        }
        assert!(
            out.status.success(),
            "neither written nor refused: {}",
            text(&out.stderr)
        );
        // It won the race: undo it and try again.
        etcd.delete(format!("{p}/b"), None).await.unwrap();
        assert!(Instant::now() < deadline, "never refused in {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        refused.contains(&format!("key {p}/a changed since it was read")),
        "{refused}"
    );
    // b, which the refused rollback would have brought back, is not there.
    assert!(get(&mut etcd, &format!("{p}/b")).await.is_none());
}

/// More changes than three transactions hold, at etcd's default limit of
/// 128 operations and 128 compares: later batches carry two more compares
/// (the prefix unchanged) and each an audit record.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_of_hundreds_of_keys_fits_etcds_limits_in_every_batch() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("hist-many");
    let mut etcd = etcd(&ep).await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("keys.json");
    let write = |value: &str| {
        let keys: serde_json::Map<String, serde_json::Value> = (0..300)
            .map(|i| (format!("k{i:03}"), value.into()))
            .collect();
        std::fs::write(&doc, serde_json::Value::Object(keys).to_string()).unwrap();
        let out = run(&ep, &["import", doc.to_str().unwrap(), "--prefix", &p]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    write("old");
    let r0 = get(&mut etcd, &format!("{p}/k000")).await.unwrap().1;
    let r0 = r0.max(get(&mut etcd, &format!("{p}/k299")).await.unwrap().1);
    write("new");
    let done = run(
        &ep,
        &[
            "rollback",
            &p,
            "--to",
            &r0.to_string(),
            "--reason",
            "all back",
        ],
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    let back = values(&mut etcd, &format!("{p}/")).await;
    assert_eq!(back.len(), 300);
    assert!(back.iter().all(|(_, v)| v == "old"), "{back:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_revision_is_an_error_naming_the_compaction() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut etcd = etcd(&ep).await;
    let r0 = put(&mut etcd, "/c/a", "1").await;
    put(&mut etcd, "/c/a", "2").await;
    let compacted = put(&mut etcd, "/c/a", "3").await;
    etcd.compact(compacted, None).await.unwrap();
    let r0_text = r0.to_string();
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().display().to_string();
    for args in [
        vec!["diff", "/c", &r0_text],
        vec!["rollback", "/c", "--to", &r0_text],
        vec![
            "mount",
            &mountpoint,
            "--prefix",
            "/c",
            "--revision",
            &r0_text,
        ],
    ] {
        let out = run(&ep, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let error = text(&out.stderr);
        assert!(
            error.contains(&format!("revision {r0} of /c was compacted away"))
                && error.contains(&format!("the oldest revision to ask for is {compacted}")),
            "{error}"
        );
    }
    assert_eq!(
        get(&mut etcd, "/c/a").await.unwrap().0,
        b"3",
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mount_at_a_past_revision_shows_it_read_only_and_fixed() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("hist-mount");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a"), "1").await;
    let r0 = put(&mut etcd, &format!("{p}/b/c"), "deep").await;
    put(&mut etcd, &format!("{p}/a"), "2").await;
    etcd.delete(format!("{p}/b/c"), None).await.unwrap();
    put(&mut etcd, &format!("{p}/new"), "later").await;

    let mount = Mount::start(&ep, &p, &["--revision", &r0.to_string()]);
    assert_eq!(std::fs::read_to_string(mount.file("a")).unwrap(), "1");
    assert_eq!(std::fs::read_to_string(mount.file("b/c")).unwrap(), "deep");
    assert_eq!(ls(&mount.path), ["a", "b"]);
    let error = std::fs::write(mount.file("a"), "x").unwrap_err();
    assert_eq!(
        error.raw_os_error(),
        Some(libc::EROFS),
        "a past revision is read-only"
    );
    // It does not follow etcd: once a live mount beside it shows a later
    // change, the past one still shows revision r0's value.
    let live = Mount::start(&ep, &p, &[]);
    put(&mut etcd, &format!("{p}/a"), "3").await;
    wait_until("the live mount to show 3", || {
        std::fs::read_to_string(live.file("a")).is_ok_and(|v| v == "3")
    });
    assert_eq!(std::fs::read_to_string(mount.file("a")).unwrap(), "1");
    live.stop();
    mount.stop();
}
