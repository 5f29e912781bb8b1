//! `shylock export`, `sync` and `import`, run as the real binary against a
//! real etcd.

mod support;

use std::fs;
use std::process::Stdio;

use support::*;

fn ok(endpoint: &str, args: &[&str]) -> String {
    let output = run(endpoint, args);
    assert!(
        output.status.success(),
        "shylock {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_a_key_raw_and_a_prefix_in_every_format() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-export");
    let mut etcd = etcd(&ep).await;
    let yml = "spring:\n  datasource:\n    url: jdbc:postgresql://db/app\n";
    put(&mut etcd, &format!("{p}/application.yml"), yml).await;
    put(&mut etcd, &format!("{p}/cfg/db/url"), "postgres://db").await;
    put(&mut etcd, &format!("{p}/cfg/db/pool"), "4").await;
    put(&mut etcd, &format!("{p}/cfg/name"), "web's").await;
    let dir = tempfile::tempdir().unwrap();
    let dest = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    ok(
        &ep,
        &[
            "export",
            &format!("{p}/application.yml"),
            "--dest",
            &dest("application.yml"),
        ],
    );
    assert_eq!(
        fs::read_to_string(dest("application.yml")).unwrap(),
        yml,
        "one key, byte for byte"
    );
    // Regression: a one-shot export's watch task panicked at exit
    // ("a watch to serve") in about one run of ten.
    for _ in 0..20 {
        let out = run(
            &ep,
            &["export", &format!("{p}/cfg/name"), "--dest", &dest("name")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{stderr}"
        );
    }

    let prefix = format!("{p}/cfg");
    ok(&ep, &["export", &prefix, "--dest", &dest("c.json")]);
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dest("c.json")).unwrap()).unwrap();
    assert_eq!(json["db"]["url"], "postgres://db");
    ok(
        &ep,
        &[
            "export",
            &prefix,
            "--dest",
            &dest("c.yaml"),
            "--format",
            "yaml",
        ],
    );
    assert!(fs::read_to_string(dest("c.yaml"))
        .unwrap()
        .contains("pool: '4'"));
    ok(
        &ep,
        &[
            "export",
            &prefix,
            "--dest",
            &dest("c.toml"),
            "--format",
            "toml",
        ],
    );
    assert!(fs::read_to_string(dest("c.toml")).unwrap().contains("[db]"));
    ok(
        &ep,
        &[
            "export",
            &prefix,
            "--dest",
            &dest("c.properties"),
            "--format",
            "properties",
            "--mode",
            "0600",
        ],
    );
    assert!(fs::read_to_string(dest("c.properties"))
        .unwrap()
        .contains("db.url=postgres://db\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(dest("c.properties"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    ok(
        &ep,
        &[
            "export",
            &prefix,
            "--dest",
            &dest("c.env"),
            "--format",
            "env",
        ],
    );
    let env = fs::read_to_string(dest("c.env")).unwrap();
    assert!(
        env.contains("DB_POOL='4'\n") && env.contains("NAME='web'\\''s'\n"),
        "{env}"
    );
    let sourced = sh(dir.path(), ". ./c.env && echo \"$NAME $DB_URL\"");
    assert_eq!(sourced, "web's postgres://db\n");

    let missing = run(
        &ep,
        &["export", &format!("{p}/nope"), "--dest", &dest("nope")],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    assert!(!dir.path().join("nope").exists(), "no empty file");
}

#[tokio::test(flavor = "multi_thread")]
async fn export_watch_rewrites_and_runs_the_command() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-watch");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/port"), "80").await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("app.json");
    let log = dir.path().join("reloads");
    let child = Daemon(
        shylock()
            .args([
                "--endpoints",
                &ep,
                "export",
                &p,
                "--format",
                "json",
                "--watch",
                "--dest",
            ])
            .arg(&dest)
            .arg("--exec")
            .arg(format!("echo reload >> {}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the first write", || {
        fs::read_to_string(&dest).is_ok_and(|t| t.contains("\"80\""))
    });
    put(&mut etcd, &format!("{p}/port"), "8080").await;
    wait_until("the rewrite", || {
        fs::read_to_string(&dest).is_ok_and(|t| t.contains("\"8080\""))
    });
    wait_until("two runs of --exec", || {
        fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    });
    // A deletion of every key keeps the last good file instead of an empty one.
    etcd.delete(format!("{p}/port"), None).await.unwrap();
    put(&mut etcd, &format!("{p}-marker"), "x").await;
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(fs::read_to_string(&dest).unwrap().contains("\"8080\""));
    assert!(child.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn export_and_import_round_trip_in_each_format() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-trip");
    let mut etcd = etcd(&ep).await;
    for (k, v) in [
        ("server/port", "8080"),
        ("server/host", "0.0.0.0"),
        ("db/url", "jdbc:x"),
        ("name", "naïve: \"quoted\""),
    ] {
        put(&mut etcd, &format!("{p}/src/{k}"), v).await;
    }
    let dir = tempfile::tempdir().unwrap();
    for format in ["json", "yaml", "toml", "properties"] {
        let file = dir.path().join(format!("doc.{format}"));
        let file = file.to_string_lossy();
        ok(
            &ep,
            &[
                "export",
                &format!("{p}/src"),
                "--dest",
                &file,
                "--format",
                format,
            ],
        );
        let target = format!("{p}/dst-{format}");
        ok(&ep, &["import", &file, "--prefix", &target]);
        assert_eq!(
            keys(&mut etcd, &format!("{p}/src")).await,
            keys(&mut etcd, &target).await,
            "{format}"
        );
        for k in ["server/port", "db/url", "name"] {
            assert_eq!(
                get(&mut etcd, &format!("{p}/src/{k}")).await.unwrap().0,
                get(&mut etcd, &format!("{target}/{k}")).await.unwrap().0,
                "{format} {k}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn import_prunes_dry_runs_and_batches() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-import");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/stale"), "old").await;
    put(&mut etcd, &format!("{p}/keep"), "same").await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.json");
    fs::write(&doc, r#"{"keep": "same", "new": {"a": 1, "b": true}}"#).unwrap();
    let doc = doc.to_string_lossy().into_owned();

    let dry = ok(
        &ep,
        &["import", &doc, "--prefix", &p, "--prune", "--dry-run"],
    );
    assert_eq!(dry, format!("+ {p}/new/a\n+ {p}/new/b\n- {p}/stale\n"));
    assert_eq!(
        keys(&mut etcd, &p).await,
        ["keep", "stale"],
        "dry run writes nothing"
    );
    ok(&ep, &["import", &doc, "--prefix", &p]);
    assert_eq!(
        keys(&mut etcd, &p).await,
        ["keep", "new/a", "new/b", "stale"],
        "no prune: stale stays"
    );
    ok(&ep, &["import", &doc, "--prefix", &p, "--prune"]);
    assert_eq!(keys(&mut etcd, &p).await, ["keep", "new/a", "new/b"]);
    assert_eq!(
        get(&mut etcd, &format!("{p}/new/b")).await.unwrap().0,
        b"true"
    );

    // Larger than one transaction: batches, with progress.
    let big: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (format!("k{i:04}"), serde_json::Value::from(i)))
        .collect();
    let big_file = dir.path().join("big.json");
    fs::write(&big_file, serde_json::to_string(&big).unwrap()).unwrap();
    let output = run(
        &ep,
        &[
            "import",
            &big_file.to_string_lossy(),
            "--prefix",
            &format!("{p}/big"),
            "--batch",
            "100",
        ],
    );
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("imported 1000/1000") && stderr.contains("10 transactions"),
        "{stderr}"
    );
    assert_eq!(keys(&mut etcd, &format!("{p}/big")).await.len(), 1000);

    fs::write(dir.path().join("bad.yaml"), "a: [unclosed").unwrap();
    let bad = run(
        &ep,
        &[
            "import",
            &dir.path().join("bad.yaml").to_string_lossy(),
            "--prefix",
            &p,
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.yaml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_synced_directory_never_shows_half_an_update() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-sync");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a"), "0").await;
    put(&mut etcd, &format!("{p}/nested/b"), "0").await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("config");
    let child = Daemon(
        shylock()
            .args(["--endpoints", &ep, "sync", &p])
            .arg(&target)
            .arg("--watch")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the first version", || target.join("nested/b").exists());

    // A reader that resolves ..data once per read, as Spring's configtree
    // or any program reading a ConfigMap volume does.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(version) = fs::read_link(target.join("..data")) else {
                    continue;
                };
                let root = target.join(version);
                let (Ok(a), Ok(b)) = (
                    fs::read_to_string(root.join("a")),
                    fs::read_to_string(root.join("nested/b")),
                ) else {
                    continue; // That version was replaced and removed meanwhile.
                };
                assert_eq!(a, b, "a mixed state");
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=100 {
        let txn = etcd_client::Txn::new().and_then(vec![
            etcd_client::TxnOp::put(format!("{p}/a"), i.to_string(), None),
            etcd_client::TxnOp::put(format!("{p}/nested/b"), i.to_string(), None),
        ]);
        etcd.txn(txn).await.unwrap();
    }
    wait_until("the last version", || {
        fs::read_to_string(target.join("a")).is_ok_and(|a| a == "100")
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0, "the reader read something");
    assert_eq!(fs::read_to_string(target.join("nested/b")).unwrap(), "100");

    etcd.delete(format!("{p}/a"), None).await.unwrap();
    wait_until("a deleted key leaves", || !target.join("a").exists());
    assert!(child.stop().success());

    // The synced directory imports back (..data internals are skipped).
    ok(
        &ep,
        &[
            "import",
            &target.to_string_lossy(),
            "--prefix",
            &format!("{p}-copy"),
        ],
    );
    assert_eq!(keys(&mut etcd, &format!("{p}-copy")).await, ["nested/b"]);
}

/// Regression: importing a directory followed a symlink out of it and put a
/// root-only file into etcd.
#[tokio::test(flavor = "multi_thread")]
async fn import_refuses_links_out_of_the_directory() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-links");
    let mut etcd = etcd(&ep).await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("shadow");
    fs::write(&secret, "root's secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a"), "1").unwrap();
    fs::write(dir.path().join("inside"), "2").unwrap();
    std::os::unix::fs::symlink(dir.path().join("inside"), dir.path().join("alias")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("stolen")).unwrap();
    let source = dir.path().to_string_lossy().into_owned();

    let out = run(&ep, &["import", &source, "--prefix", &p]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stolen") && stderr.contains("--follow-links"),
        "{stderr}"
    );
    assert!(keys(&mut etcd, &p).await.is_empty(), "nothing was imported");

    fs::remove_file(dir.path().join("stolen")).unwrap();
    ok(&ep, &["import", &source, "--prefix", &p]);
    assert_eq!(
        keys(&mut etcd, &p).await,
        ["a", "alias", "inside"],
        "links inside are followed"
    );
}

/// Regression: top-level keys named like sync's own entries (`..data`,
/// `..v1`) vanished from the synced directory, and `..data_tmp` was
/// overwritten.
#[tokio::test(flavor = "multi_thread")]
async fn sync_shows_keys_named_like_its_own_entries_and_sets_modes() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("w-dots");
    let mut etcd = etcd(&ep).await;
    for (key, value) in [
        ("..data", "d"),
        ("..v1", "v"),
        ("..data_tmp", "t"),
        ("ok", "o"),
    ] {
        put(&mut etcd, &format!("{p}/{key}"), value).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    ok(
        &ep,
        &["sync", &p, &target.to_string_lossy(), "--mode", "0640"],
    );
    for (name, value) in [
        ("%2E.data", "d"),
        ("%2E.v1", "v"),
        ("%2E.data_tmp", "t"),
        ("ok", "o"),
    ] {
        assert_eq!(
            fs::read_to_string(target.join(name)).unwrap(),
            value,
            "{name}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(target.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o640
        );
    }
    ok(
        &ep,
        &[
            "import",
            &target.to_string_lossy(),
            "--prefix",
            &format!("{p}-copy"),
        ],
    );
    assert_eq!(
        keys(&mut etcd, &format!("{p}-copy")).await,
        ["..data", "..data_tmp", "..v1", "ok"],
        "the names round-trip"
    );
}
