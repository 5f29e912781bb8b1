//! Safe writes against a real etcd: a program's schema
//! (examples/schema_app.rs) published beside its prefix, and every writer
//! (put, del, import, rollback, a read-write mount) refusing what it does
//! not allow with nothing written; audit records on every write path; and
//! `shylock log` across puts, deletes, transactions and compaction.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the example with `args` to its end; its stdout.
fn schema_app(args: &[&str]) -> String {
    let out = Command::new(example("schema_app"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Publishes the example's schema for `prefix` through the CLI, from the
/// document the program printed.
fn publish(ep: &str, prefix: &str, dir: &Path) {
    let file = dir.join("schema.json");
    std::fs::write(&file, schema_app(&[prefix])).unwrap();
    let out = run(ep, &["schema", "publish", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A command that must fail; its stderr.
fn refused(ep: &str, args: &[&str]) -> String {
    let out = run(ep, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} was not refused");
    text(&out.stderr)
}

fn ok(ep: &str, args: &[&str]) -> String {
    let out = run(ep, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread")]
async fn writers_refuse_what_the_published_schema_does_not_allow_and_write_nothing() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("schema");
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = etcd(&ep).await;
    publish(&ep, &p, dir.path());
    let shown: Value = serde_json::from_str(&ok(&ep, &["schema", "show", &p])).unwrap();
    assert_eq!(shown["config"], "App");
    assert_eq!(shown["keys"][0]["key"], format!("{p}/port"));
    assert_eq!(shown["keys"][0]["json_schema"]["maximum"], 65535);

    // put: a bad number, a bad number in a map entry, a bad secret (its
    // value never shown), each refused naming the full key.
    let error = refused(&ep, &["put", &format!("{p}/port"), "eighty"]);
    assert!(
        error.contains(&format!("{p}/port: expected u16: \"eighty\"")),
        "{error}"
    );
    let error = refused(&ep, &["put", &format!("{p}/databases/main/pool"), "many"]);
    assert!(
        error.contains(&format!("{p}/databases/main/pool: expected u32")),
        "{error}"
    );
    let secret = Command::new(env!("CARGO_BIN_EXE_shylock"))
        .args(["--endpoints", &ep, "put", &format!("{p}/api-token")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut secret = secret;
    std::io::Write::write_all(secret.stdin.as_mut().unwrap(), b"s3cr\xffet").unwrap();
    drop(secret.stdin.take());
    let out = secret.wait_with_output().unwrap();
    let error = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error.contains("secret value not shown") && !error.contains("s3cr"),
        "{error}"
    );
    let error = refused(&ep, &["put", &format!("{p}/limits"), "{not json"]);
    assert!(error.contains("a JSON document"), "{error}");
    assert!(keys(&mut etcd, &p).await.is_empty(), "nothing was written");

    // An unknown key is a warning, and with --strict a refusal.
    let error = refused(&ep, &["put", "--strict", &format!("{p}/colour"), "red"]);
    assert!(error.contains(&format!("{p}/colour: not a key")), "{error}");
    let out = run(&ep, &["put", &format!("{p}/colour"), "red"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("does not have"));

    // import: one bad value among good ones writes none of them; a
    // document without a required key is refused.
    let doc = dir.path().join("app.json");
    std::fs::write(
        &doc,
        r#"{"port": "8080", "api-token": "t", "hosts": {"0": "a"}, "databases": {"main": {"url": "db", "pool": "lots"}}}"#,
    )
    .unwrap();
    let error = refused(&ep, &["import", doc.to_str().unwrap(), "--prefix", &p]);
    assert!(
        error.contains(&format!("{p}/databases/main/pool: expected u32")),
        "{error}"
    );
    std::fs::write(&doc, r#"{"port": "8080", "hosts": {"0": "a"}}"#).unwrap();
    let error = refused(&ep, &["import", doc.to_str().unwrap(), "--prefix", &p]);
    assert!(
        error.contains(&format!("{p}/api-token: required, and would be missing")),
        "{error}"
    );
    assert_eq!(keys(&mut etcd, &p).await, ["colour"]);
    std::fs::write(
        &doc,
        r#"{"port": "8080", "api-token": "t", "databases": {"main": {"url": "db", "pool": "20"}}}"#,
    )
    .unwrap();
    ok(&ep, &["import", doc.to_str().unwrap(), "--prefix", &p]);
    assert_eq!(schema_app(&[&p, &ep]).trim(), "built port 8080");

    // del: a required key may not go.
    let error = refused(&ep, &["del", &format!("{p}/port")]);
    assert!(error.contains("required"), "{error}");
    let error = refused(&ep, &["del", "--prefix", &p]);
    assert!(
        error.contains(&format!("{p}/api-token: required")),
        "{error}"
    );
    assert!(get(&mut etcd, &format!("{p}/port")).await.is_some());

    // A read-write mount: a bad value fails the close with EINVAL and is
    // not written; a good one is.
    let mount = Mount::start(&ep, &p, &[]);
    let error = write_and_close(&mount.file("port"), b"99999\n").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(
        get(&mut etcd, &format!("{p}/port")).await.unwrap().0,
        b"8080"
    );
    let error = std::fs::remove_file(mount.file("port")).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
    write_and_close(&mount.file("port"), b"9090\n").unwrap();
    assert_eq!(
        get(&mut etcd, &format!("{p}/port")).await.unwrap().0,
        b"9090\n"
    );
    let log = mount.stop_logged();
    assert!(log.contains(&format!("{p}/port: expected u16")), "{log}");

    // rollback: back to a value written past the schema is refused.
    let bad = put(&mut etcd, &format!("{p}/port"), "http").await;
    ok(&ep, &["put", &format!("{p}/port"), "7070"]);
    let error = refused(&ep, &["rollback", &p, "--to", &bad.to_string()]);
    assert!(
        error.contains(&format!("{p}/port: expected u16")),
        "{error}"
    );
    assert_eq!(
        get(&mut etcd, &format!("{p}/port")).await.unwrap().0,
        b"7070"
    );

    // `schema check` finds what got past it, and agrees once it is gone.
    put(&mut etcd, &format!("{p}/hosts/0"), "\u{0}ok").await;
    put(&mut etcd, &format!("{p}/timeout"), "30").await;
    let error = refused(&ep, &["schema", "check", &p]);
    assert!(
        error.contains(&format!("{p}/timeout: expected Duration")),
        "{error}"
    );
    ok(&ep, &["put", &format!("{p}/timeout"), "30s"]);
    ok(&ep, &["del", &format!("{p}/colour")]);
    ok(&ep, &["schema", "check", &p]);
    // --no-schema writes unchecked.
    ok(
        &ep,
        &["put", "--no-schema", &format!("{p}/port"), "unchecked"],
    );
    assert_eq!(
        get(&mut etcd, &format!("{p}/port")).await.unwrap().0,
        b"unchecked"
    );
}

/// The JSON lines of `shylock log`.
fn log_json(ep: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["log", "--json"];
    all.extend_from_slice(args);
    ok(ep, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_write_path_leaves_an_audit_record_in_its_own_transaction() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("audit");
    let root = format!("{p}-audit");
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = etcd(&ep).await;
    let audit = ["--audit-root", root.as_str()];
    let with = |args: &[&str], reason: &str| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--reason".into(), reason.into()]);
        all.extend(audit.iter().map(|s| s.to_string()));
        all
    };
    let go = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&ep, &args)
    };
    go(with(&["put", &format!("{p}/a"), "1"], "put a"));
    let first = get(&mut etcd, &format!("{p}/a")).await.unwrap().1;
    let doc = dir.path().join("x.json");
    std::fs::write(&doc, r#"{"b": "2", "c": "3"}"#).unwrap();
    go(with(
        &["import", doc.to_str().unwrap(), "--prefix", &p],
        "import b c",
    ));
    go(with(&["del", &format!("{p}/c")], "del c"));
    go(with(
        &["rollback", &p, "--to", &first.to_string()],
        "back to a",
    ));
    let mount = Mount::start(
        &ep,
        &p,
        &["--reason", "through the mount", "--audit-root", &root],
    );
    write_and_close(&mount.file("m"), b"from the mount").unwrap();
    mount.stop();

    let log = log_json(&ep, &[&p, "--audit-root", &root]);
    let seen: Vec<(String, String, Vec<String>)> = log
        .iter()
        .map(|entry| {
            let audit = &entry["audit"];
            assert!(
                audit["user"].as_str().unwrap().starts_with("local:"),
                "{entry}"
            );
            assert!(audit["time"].as_str().unwrap().ends_with('Z'), "{entry}");
            let changed: Vec<String> = entry["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["key"].as_str().unwrap().to_owned())
                .collect();
            let recorded: Vec<String> = audit["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(changed, recorded, "the record names the keys changed");
            (
                audit["command"].as_str().unwrap().to_owned(),
                audit["reason"].as_str().unwrap().to_owned(),
                changed,
            )
        })
        .collect();
    let k = |name: &str| format!("{p}/{name}");
    assert_eq!(
        seen,
        [
            ("mount".into(), "through the mount".into(), vec![k("m")]),
            ("rollback".into(), "back to a".into(), vec![k("b")]),
            ("del".into(), "del c".into(), vec![k("c")]),
            ("import".into(), "import b c".into(), vec![k("b"), k("c")]),
            ("put".into(), "put a".into(), vec![k("a")]),
        ]
    );
    // The text form shows who and why on the revision's line.
    let shown = ok(&ep, &["log", &p, "--audit-root", &root, "--limit", "1"]);
    assert!(
        shown.starts_with("revision ") && shown.contains("(mount): through the mount\n  + "),
        "{shown}"
    );
}

/// Puts, a transaction and a delete under /app, with writes beside it
/// (`/app-other`, `/apple`, `/elsewhere`); the revisions of the four
/// that change /app.
async fn app_history(etcd: &mut etcd_client::Client) -> [i64; 4] {
    let r1 = put(etcd, "/app/a", "1").await;
    put(etcd, "/app-other/x", "not mine").await;
    let r2 = put(etcd, "/app/b", "2").await;
    put(etcd, "/apple", "not mine either").await;
    let txn = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::put("/app/a", "10", None),
        etcd_client::TxnOp::delete("/app/b", None),
        etcd_client::TxnOp::put("/elsewhere", "x", None),
    ]);
    let r3 = etcd.txn(txn).await.unwrap().header().unwrap().revision();
    let deleted = etcd.delete("/app/a", None).await.unwrap();
    [r1, r2, r3, deleted.header().unwrap().revision()]
}

/// What `shylock log /app` shows for `app_history`.
fn app_log([r1, r2, r3, r4]: [i64; 4]) -> String {
    format!(
        "revision {r4}\n  - /app/a\nrevision {r3}\n  ~ /app/a\n  - /app/b\n\
         revision {r2}\n  + /app/b\nrevision {r1}\n  + /app/a\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn log_shows_puts_deletes_and_transactions_newest_first_and_names_a_compaction() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut etcd = etcd(&ep).await;
    let [r1, r2, r3, r4] = app_history(&mut etcd).await;
    assert_eq!(ok(&ep, &["log", "/app"]), app_log([r1, r2, r3, r4]));
    let window = log_json(
        &ep,
        &[
            "/app",
            "--since",
            &r2.to_string(),
            "--until",
            &r3.to_string(),
        ],
    );
    let revisions: Vec<i64> = window
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions, [r3, r2]);
    assert_eq!(window[0]["changes"][1]["change"], "deleted");
    assert_eq!(log_json(&ep, &["/app", "--limit", "1"])[0]["revision"], r4);

    // Compacted history: asking for it names the compaction; without
    // --since the log starts there.
    etcd.compact(r3, None).await.unwrap();
    let error = refused(&ep, &["log", "/app", "--since", &r1.to_string()]);
    assert!(
        error.contains(&format!("revision {r1} was compacted away"))
            && error.contains(&format!("the oldest revision to ask for is {r3}")),
        "{error}"
    );
    let kept: Vec<i64> = log_json(&ep, &["/app"])
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [r4, r3]);
}

/// The journal's record keys, oldest first, as revisions.
async fn journaled(etcd: &mut etcd_client::Client) -> Vec<i64> {
    keys(etcd, "/journal/app")
        .await
        .iter()
        .map(|k| k.parse().unwrap())
        .collect()
}

/// Starts `shylock journal /app --into /journal/app` and waits until it
/// serves (it caught up first).
fn journal(ep: &str, dir: &Path, run: &str, extra: &[&str]) -> Daemon {
    let log = dir.join(format!("journal-{run}.log"));
    let mut args = vec!["journal", "/app", "--into", "/journal/app"];
    args.extend_from_slice(extra);
    let daemon = Daemon::spawn(ep, &args, &log);
    wait_until("the journal to serve", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("journaling")
    });
    daemon
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_keeps_history_past_compaction_across_restarts_within_its_bounds() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = etcd(&ep).await;
    let daemon = journal(&ep, dir.path(), "first", &[]);
    let [r1, r2, r3, r4] = app_history(&mut etcd).await;
    let whole = app_log([r1, r2, r3, r4]);
    let mut seen = Vec::new();
    for _ in 0..1000 {
        seen = journaled(&mut etcd).await;
        if seen.last() == Some(&r4) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(seen, [r1, r2, r3, r4]);
    let record: Value = serde_json::from_slice(
        &get(&mut etcd, &format!("/journal/app/{r3:020}"))
            .await
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(record["changes"][0]["value"], "10");

    // etcd compacts: its own history is gone, the journal's is not.
    etcd.compact(r4, None).await.unwrap();
    assert!(!ok(&ep, &["log", "/app"]).contains(&format!("revision {r1}")));
    assert_eq!(
        ok(&ep, &["log", "/app", "--journal", "/journal/app"]),
        whole
    );
    let old = ok(
        &ep,
        &[
            "log",
            "/app",
            "--journal",
            "/journal/app",
            "--since",
            &r2.to_string(),
            "--until",
            &r3.to_string(),
        ],
    );
    assert_eq!(
        old,
        format!("revision {r3}\n  ~ /app/a\n  - /app/b\nrevision {r2}\n  + /app/b\n")
    );

    // Changes made while no journal ran are replayed from etcd at start.
    assert!(daemon.stop().success());
    let r5 = put(&mut etcd, "/app/c", "1").await;
    let r6 = put(&mut etcd, "/app/c", "2").await;
    let daemon = journal(&ep, dir.path(), "second", &["--keep", "4"]);
    assert_eq!(
        journaled(&mut etcd).await,
        [r3, r4, r5, r6],
        "caught up, kept to 4"
    );
    let record: Value = serde_json::from_slice(
        &get(&mut etcd, &format!("/journal/app/{r6:020}"))
            .await
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(record["changes"][0]["change"], "changed");

    // ... unless etcd compacted them away: a record names the gap.
    assert!(daemon.stop().success());
    put(&mut etcd, "/app/d", "1").await;
    let r8 = put(&mut etcd, "/elsewhere", "x").await;
    etcd.compact(r8, None).await.unwrap();
    let daemon = journal(&ep, dir.path(), "third", &["--keep", "4"]);
    let record: Value = serde_json::from_slice(
        &get(&mut etcd, &format!("/journal/app/{r8:020}"))
            .await
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(record["gap_since"], r6 + 1);
    assert!(daemon.stop().success());

    // Records older than --max-age go.
    let daemon = journal(&ep, dir.path(), "fourth", &["--max-age", "1ms"]);
    assert_eq!(journaled(&mut etcd).await, Vec::<i64>::new());
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_auth_the_record_names_the_user_and_limited_roles_get_clear_answers() {
    use etcd_client::Permission;
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut etcd = etcd(&ep).await;
    etcd.user_add("root", "root-pw", None).await.unwrap();
    etcd.user_grant_role("root", "root").await.unwrap();
    etcd.role_add("app").await.unwrap();
    etcd.role_grant_permission("app", Permission::read_write("/app/").with_prefix())
        .await
        .unwrap();
    etcd.user_add("app", "app-pw", None).await.unwrap();
    etcd.user_grant_role("app", "app").await.unwrap();
    etcd.auth_enable().await.unwrap();
    let as_root = ["--user", "root:root-pw"];
    let as_app = ["--user", "app:app-pw"];
    let with = |user: &[&str], args: &[&str]| -> Vec<String> {
        user.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let call = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&ep, &args)
    };

    let out = call(with(
        &as_root,
        &["put", "/app/a", "1", "--reason", "because"],
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = call(with(&as_root, &["log", "/app"]));
    assert!(
        text(&shown.stdout).contains("by etcd:root at ")
            && text(&shown.stdout).contains("(put): because"),
        "{}",
        text(&shown.stdout)
    );

    // A role that may not read the schemas writes unchecked, warned.
    let out = call(with(&as_app, &["put", "/app/b", "2"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("may not read the published schemas"));
    // Nor write audit records: asked for one, it writes nothing.
    let out = call(with(&as_app, &["put", "/app/c", "3", "--reason", "r"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    // It may diff and delete what it may read: the keys under /app/.
    let out = call(with(&as_app, &["del", "--prefix", "/app"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2\n");
    // Nor replay every key for a log: the error says why.
    let out = call(with(&as_app, &["log", "/app"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("needs read permission on all keys"),
        "{}",
        text(&out.stderr)
    );
    let mut root = etcd_client::Client::connect(
        [ep.as_str()],
        Some(etcd_client::ConnectOptions::new().with_user("root", "root-pw")),
    )
    .await
    .unwrap();
    assert!(get(&mut root, "/app/c").await.is_none());
}
