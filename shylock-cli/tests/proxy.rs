//! Every command of the real binary through etcd's gRPC proxy, and a
//! render over two keys that never writes a state etcd never held.
//! Regression tests: through a proxy, watches were matched to the wrong
//! replies (`render` wrote `a=a0 b=b1`), and keys of several prefixes were
//! read and watched separately, so a transaction across them could be
//! rendered half applied.

mod support;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shylock::testing::GrpcProxy;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn mount_export_sync_and_render_work_through_the_proxy() {
    let server = EtcdServer::start();
    let proxy = GrpcProxy::start(&[server.endpoint()]);
    let ep = proxy.endpoint();
    let mut etcd = etcd(&server.endpoint()).await;
    for p in ["/m", "/e", "/s", "/r"] {
        put(&mut etcd, &format!("{p}/port"), "1").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::start(&ep, "/m", &[]);
    let export = dir.path().join("e.json");
    let synced = dir.path().join("synced");
    let _export = Daemon::spawn(
        &ep,
        &[
            "export",
            "/e",
            "--watch",
            "--dest",
            &export.to_string_lossy(),
        ],
        &dir.path().join("export.log"),
    );
    let _sync = Daemon::spawn(
        &ep,
        &["sync", "/s", &synced.to_string_lossy(), "--watch"],
        &dir.path().join("sync.log"),
    );
    let c = Confdir::new();
    let rendered = c.path("r.conf");
    c.template("r.tmpl", "port {{getv \"/port\"}}\n").resource(
        "r",
        &format!(
            "[template]\nsrc = \"r.tmpl\"\ndest = \"{}\"\nprefix = \"/r\"\nkeys = [\"/port\"]\n",
            rendered.display()
        ),
    );
    let render = c.spawn(&ep, &[]);

    wait_until("the first export", || text(&export).contains("\"1\""));
    wait_until("the first sync", || text(&synced.join("port")) == "1");
    wait_until("the first render", || text(&rendered) == "port 1\n");
    assert_eq!(text(&mount.file("port")), "1");

    for p in ["/m", "/e", "/s", "/r"] {
        put(&mut etcd, &format!("{p}/port"), "2").await;
    }
    wait_until("the mount to follow", || text(&mount.file("port")) == "2");
    wait_until("the export to follow", || text(&export).contains("\"2\""));
    wait_until("the sync to follow", || text(&synced.join("port")) == "2");
    wait_until("the render to follow", || text(&rendered) == "port 2\n");

    // Writes through the mount go through the proxy too.
    fs::write(mount.file("port"), "3").unwrap();
    assert_eq!(get(&mut etcd, "/m/port").await.unwrap().0, b"3");
    stop(render);
    mount.stop();
}

/// Renders `a=.. b=..` from two keys while transactions set both to the
/// same number; no rendered file may show them apart.
async fn render_two_keys_in_step(endpoint: &str, etcd_endpoint: &str) {
    let p = unique_prefix("step");
    let mut etcd = etcd(etcd_endpoint).await;
    put(&mut etcd, &format!("{p}/a"), "0").await;
    put(&mut etcd, &format!("{p}/b"), "0").await;
    let c = Confdir::new();
    let dest = c.path("step.conf");
    c.template("step.tmpl", "a={{getv \"/a\"}} b={{getv \"/b\"}}\n")
        .resource(
            "step",
            &format!(
                "[template]\nsrc = \"step.tmpl\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/a\", \"/b\"]\n",
                dest.display()
            ),
        );
    let render = c.spawn(endpoint, &[]);
    wait_until("the first render", || text(&dest) == "a=0 b=0\n");

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dest, done) = (dest.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(Ordering::Relaxed) {
                let content = text(&dest);
                let (a, b) = content
                    .trim_end()
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("unexpected content {content:?}"));
                assert_eq!(
                    a.trim_start_matches("a="),
                    b.trim_start_matches("b="),
                    "a state etcd never held: {content:?}"
                );
                seen.insert(content);
            }
            seen.len()
        })
    };
    for i in 1..=150 {
        let txn = etcd_client::Txn::new().and_then(vec![
            etcd_client::TxnOp::put(format!("{p}/a"), i.to_string(), None),
            etcd_client::TxnOp::put(format!("{p}/b"), i.to_string(), None),
        ]);
        etcd.txn(txn).await.unwrap();
    }
    wait_until("the last transaction", || text(&dest) == "a=150 b=150\n");
    done.store(true, Ordering::Relaxed);
    let versions = reader.join().expect("the reader saw only whole states");
    assert!(versions > 1, "the reader saw the file change");
    stop(render);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_render_over_two_keys_only_writes_states_etcd_held() {
    let server = shared_server();
    render_two_keys_in_step(&server.endpoint(), &server.endpoint()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn through_the_proxy_a_render_over_two_keys_only_writes_states_etcd_held() {
    let server = EtcdServer::start();
    let proxy = GrpcProxy::start(&[server.endpoint()]);
    render_two_keys_in_step(&proxy.endpoint(), &server.endpoint()).await;
}
