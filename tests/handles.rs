//! Configs come and go on one client: one-shot reads, configs made per
//! request, configs dropped on reload. Regression tests for the watch task
//! panicking ("a watch to serve", "just added") when a config was dropped
//! before its watch was served, which stopped every later config.

use std::time::Duration;

use shylock::{ConnectOptions, EtcdConfig};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct One {
    port: u16,
}

/// A client whose periodic check (a third of the stall timeout) runs often,
/// so dropped configs are cancelled quickly.
async fn quick_client(server: &EtcdServer) -> shylock::Client {
    let options =
        ConnectOptions::new([server.endpoint()]).with_stall_timeout(Duration::from_millis(600));
    shylock::Client::connect(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_used_once_and_dropped_leaves_the_client_working() {
    init_logs();
    let server = shared_server();
    let (once, later) = (unique_prefix("once"), unique_prefix("later"));
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{once}/port"), "1").await;
    put(&mut etcd, &format!("{later}/port"), "1").await;
    let client = quick_client(server).await;
    for round in 0..12u64 {
        let port = client
            .config::<One>(&once)
            .await
            .expect("a one-shot read")
            .load()
            .port;
        assert_eq!(port, 1);
        // Drops land before, during and after the watch task's next turn.
        tokio::time::sleep(Duration::from_millis(round * 25)).await;
    }
    let live = client
        .config::<One>(&later)
        .await
        .expect("a config after configs were dropped");
    put(&mut etcd, &format!("{later}/port"), "2").await;
    wait_config(&live, "the later config follows etcd", |c| c.port == 2).await;
    assert_eq!(live.status().reconnects, 0, "{:?}", live.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_come_and_go_concurrently_and_their_watches_are_cancelled() {
    init_logs();
    // Its own server: the test counts etcd's watchers.
    let server = EtcdServer::start();
    let mut etcd = etcd(&[server.endpoint()]).await;
    for i in 0..8 {
        put(&mut etcd, &format!("/c{i}/port"), "1").await;
    }
    put(&mut etcd, "/keeper/port", "1").await;
    let client = quick_client(&server).await;
    let keeper = client.config::<One>("/keeper").await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..15u64 {
                let live = client.config::<One>(&format!("/c{i}")).await.unwrap();
                assert!(live.load().port >= 1);
                // Held for 0 to 90 ms, as a request or a reload would.
                tokio::time::sleep(Duration::from_millis((round * 7 + i * 13) % 100)).await;
            }
        }));
    }
    let writer = tokio::spawn(async move {
        let mut last = 0;
        for n in 2..60 {
            last = put(&mut etcd, &format!("/c{}/port", n % 8), n.to_string()).await;
            put(&mut etcd, "/keeper/port", n.to_string()).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (last, etcd)
    });
    for task in tasks {
        task.await.expect("a config task");
    }
    let (_, mut etcd) = writer.await.unwrap();
    let last = put(&mut etcd, "/keeper/port", "1000").await;
    applied(&keeper, last).await;
    assert_eq!(keeper.load().port, 1000);
    assert_eq!(keeper.status().reconnects, 0, "{:?}", keeper.status());

    // Every dropped config's watch is cancelled in etcd: the keeper's is left.
    wait_for("etcd to run only the keeper's watch", || {
        let watchers = server.metric("etcd_debugging_mvcc_watcher_total", "");
        async move { (watchers == 1.0).then_some(()) }
    })
    .await;
    assert_eq!(
        server.metric("etcd_debugging_mvcc_watch_stream_total", ""),
        1.0,
        "one watch stream all along"
    );
    // And a new config still works.
    let again = client.config::<One>("/c3").await.unwrap();
    let r = put(&mut etcd, "/c3/port", "77").await;
    assert_eq!(applied(&again, r).await.port, 77);
}
