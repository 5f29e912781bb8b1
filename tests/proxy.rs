//! Through etcd's gRPC proxy (`etcd grpc-proxy start`), which numbers
//! watches itself from 0, ignores requested watch ids and progress
//! requests. Regression tests for configs that never saw a put, events of
//! one prefix landing in another config, and a stall declared every ~35 s.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::{Txn, TxnOp};
use shylock::{ConnectOptions, EtcdConfig, Event};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Pair {
    x: u32,
    #[etcd(default)]
    y: u32,
}

async fn through(endpoint: String, stall: Duration) -> shylock::Client {
    let options = ConnectOptions::new([endpoint]).with_stall_timeout(stall);
    shylock::Client::connect(options).await.unwrap()
}

/// Every key named by the change events received so far.
fn keys_seen(events: &mut tokio::sync::broadcast::Receiver<Event>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Changed(change) = event {
            keys.extend(change.keys.into_iter().map(|k| k.key));
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_through_the_proxy_follow_their_own_keys() {
    init_logs();
    let server = EtcdServer::start();
    let proxy = GrpcProxy::start(&[server.endpoint()]);
    let mut etcd = etcd(&[server.endpoint()]).await;
    for p in ["/pa", "/pb", "/pc"] {
        put(&mut etcd, &format!("{p}/x"), "1").await;
    }
    let client = through(proxy.endpoint(), Duration::from_secs(30)).await;
    let a = client.config::<Pair>("/pa").await.unwrap();
    let b = client.config::<Pair>("/pb").await.unwrap();
    let (mut a_events, mut b_events) = (a.events(), b.events());

    put(&mut etcd, "/pa/x", "2").await;
    wait_config(&a, "a put through the proxy", |c| c.x == 2).await;
    put(&mut etcd, "/pb/x", "3").await;
    wait_config(&b, "the second config's put", |c| c.x == 3).await;
    assert_eq!(a.load().x, 2, "b's event did not land in a");

    // A config made later, one dropped: creates and cancels stay matched.
    let c = client.config::<Pair>("/pc").await.unwrap();
    drop(b);
    let txn = Txn::new().and_then([
        TxnOp::put("/pa/y", "5", None),
        TxnOp::put("/pb/y", "6", None),
        TxnOp::put("/pc/y", "7", None),
    ]);
    let r = etcd.txn(txn).await.unwrap().header().unwrap().revision();
    assert_eq!(applied(&a, r).await.y, 5);
    assert_eq!(applied(&c, r).await.y, 7);
    let c_again = client.config::<Pair>("/pc").await.unwrap();
    put(&mut etcd, "/pc/x", "9").await;
    wait_config(&c_again, "a second config of the same prefix", |c| c.x == 9).await;
    wait_config(&c, "the first one too", |c| c.x == 9).await;

    assert_eq!(
        keys_seen(&mut a_events),
        BTreeSet::from(["/pa/x".to_owned(), "/pa/y".to_owned()]),
        "a saw only its own keys"
    );
    assert_eq!(
        keys_seen(&mut b_events),
        BTreeSet::from(["/pb/x".to_owned()])
    );
    assert_eq!(a.status().reconnects, 0, "{:?}", a.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_keeps_a_quiet_stream_alive_and_a_stall_is_still_found() {
    init_logs();
    let server = EtcdServer::start();
    let proxy = GrpcProxy::start(&[server.endpoint()]);
    // A TCP relay between the client and the proxy, to black-hole it later.
    let relay = Proxy::start(&proxy.endpoint());
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/q/x", "1").await;
    let stall = Duration::from_millis(900);
    let client = through(relay.endpoint(), stall).await;
    let live = client.config::<Pair>("/q").await.unwrap();

    // The proxy never answers a progress request: the client must find
    // another sign of life, not reconnect every stall timeout.
    let watched = Instant::now();
    while watched.elapsed() < stall * 4 {
        let status = live.status();
        assert!(status.connection_error.is_none(), "{status:?}");
        assert!(status.is_current(), "{status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live.status().reconnects, 0);
    put(&mut etcd, "/q/x", "2").await;
    wait_config(&live, "a put after a quiet while", |c| c.x == 2).await;

    relay.freeze();
    put(&mut etcd, "/q/x", "3").await;
    wait_status(&live, "the stall to be reported", |s| {
        let stalled = s
            .connection_error
            .as_deref()
            .is_some_and(|e| e.contains("stalled"));
        stalled && !s.is_current()
    })
    .await;
    assert_eq!(live.load().x, 2, "the last good config serves meanwhile");
    relay.restore();
    wait_config(&live, "the write made during the stall", |c| c.x == 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_behind_the_proxy_resyncs() {
    init_logs();
    let server = EtcdServer::start();
    let proxy = GrpcProxy::start(&[server.endpoint()]);
    let relay = Proxy::start(&proxy.endpoint());
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/cp/x", "1").await;
    put(&mut etcd, "/cp/y", "1").await;
    let client = through(relay.endpoint(), Duration::from_secs(30)).await;
    let live = client.config::<Pair>("/cp").await.unwrap();

    relay.cut();
    wait_status(&live, "the cut to be noticed", |s| {
        s.connection_error.is_some()
    })
    .await;
    put(&mut etcd, "/cp/x", "2").await;
    delete(&mut etcd, "/cp/y").await;
    let last = put(&mut etcd, "/cp/x", "3").await;
    etcd.compact(last, None).await.unwrap();
    relay.restore();
    let now = applied(&live, last).await;
    assert_eq!((now.x, now.y), (3, 0));
    put(&mut etcd, "/cp/x", "4").await;
    wait_config(&live, "the watch goes on after the resync", |c| c.x == 4).await;
}
