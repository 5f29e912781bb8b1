//! Real faults: a client cut off while etcd compacts its history, a silent
//! stall, and the member in use killed in a 3-member cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shylock::testing::Proxy;
use shylock::{ConnectOptions, EtcdConfig, Event};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Conf {
    a: u32,
    b: Option<String>,
    hosts: BTreeMap<String, String>,
}

async fn through(proxy: &Proxy, stall: Duration) -> shylock::Client {
    let options = ConnectOptions::new([proxy.endpoint()]).with_stall_timeout(stall);
    shylock::Client::connect(options)
        .await
        .expect("connect through the proxy")
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_while_cut_off_resyncs_everything() {
    init_logs();
    let server = EtcdServer::start();
    let proxy = Proxy::start(&server.endpoint());
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/k/a", "1").await;
    put(&mut etcd, "/k/b", "here").await;
    put(&mut etcd, "/k/hosts/x", "10.0.0.1").await;
    put(&mut etcd, "/k/hosts/y", "10.0.0.2").await;
    let client = through(&proxy, Duration::from_secs(30)).await;
    let live = client.config::<Conf>("/k").await.unwrap();
    let mut events = live.events();

    proxy.cut();
    wait_status(&live, "the cut is noticed", |s| {
        s.connection_error.is_some()
    })
    .await;
    put(&mut etcd, "/k/a", "2").await;
    delete(&mut etcd, "/k/b").await;
    delete(&mut etcd, "/k/hosts/x").await;
    put(&mut etcd, "/k/hosts/z", "10.0.0.3").await;
    let last = put(&mut etcd, "/k/a", "3").await;
    etcd.compact(last, None).await.unwrap();
    proxy.restore();

    let resynced = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Resynced { from, revision } = next_event(&mut events).await {
                return (from, revision);
            }
        }
    })
    .await
    .expect("a resync event");
    assert!(resynced.0 <= last && resynced.1 >= last, "{resynced:?}");
    let Event::Changed(change) = next_event(&mut events).await else {
        panic!("the difference follows")
    };
    let mut keys: Vec<&str> = change.keys.iter().map(|k| k.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["/k/a", "/k/b", "/k/hosts/x", "/k/hosts/z"]);
    let now = live.load();
    assert_eq!(now.a, 3);
    assert_eq!(now.b, None, "deleted during the outage");
    assert_eq!(now.hosts.keys().collect::<Vec<_>>(), ["y", "z"]);
    assert_eq!(live.status().resyncs, 1);

    put(&mut etcd, "/k/a", "4").await;
    wait_config(&live, "the watch goes on after the resync", |c| c.a == 4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_stall_is_detected_and_healed() {
    init_logs();
    let server = EtcdServer::start();
    let proxy = Proxy::start(&server.endpoint());
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/s/a", "1").await;
    let client = through(&proxy, Duration::from_millis(900)).await;
    let live = client.config::<Conf>("/s").await.unwrap();
    wait_status(&live, "a member serves the stream", |s| s.member.is_some()).await;
    wait_status(&live, "progress keeps the config fresh", |s| {
        s.staleness()
            .is_some_and(|d| d < Duration::from_millis(900))
    })
    .await;

    proxy.freeze();
    put(&mut etcd, "/s/a", "2").await;
    wait_status(&live, "the stall is reported", |s| {
        s.connection_error
            .as_deref()
            .is_some_and(|e| e.contains("stalled"))
    })
    .await;
    assert_eq!(
        live.load().a,
        1,
        "the last good config serves during the stall"
    );
    assert!(live.status().staleness().unwrap() >= Duration::from_millis(900));

    proxy.restore();
    wait_config(&live, "the write made during the stall", |c| c.a == 2).await;
    wait_status(&live, "healthy again", |s| {
        s.connection_error.is_none() && s.member.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_member_in_use_moves_to_another() {
    init_logs();
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let mut etcd = etcd(&endpoints).await;
    put_retrying(&mut etcd, "/f/a", "0").await;
    let client = client(&endpoints).await;
    let live = client.config::<Conf>("/f").await.unwrap();
    wait_status(&live, "a member serves the stream", |s| s.member.is_some()).await;
    let in_use = live.status().member.unwrap();
    let index = endpoints
        .iter()
        .position(|e| *e == in_use)
        .unwrap_or_else(|| panic!("member {in_use} is not one of the endpoints {endpoints:?}"));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    live.on_event(move |_, snapshot| record.lock().unwrap().push(snapshot.revision()));

    // A writer keeps updating through the other members.
    let others: Vec<String> = endpoints
        .iter()
        .filter(|e| **e != in_use)
        .cloned()
        .collect();
    let writer = tokio::spawn(async move {
        let mut etcd = etcd_client::Client::connect(others, None).await.unwrap();
        let mut last = 0;
        for i in 1..=60u32 {
            last = put_retrying(&mut etcd, "/f/a", &i.to_string()).await;
            if i % 5 == 0 {
                put_retrying(&mut etcd, &format!("/f/hosts/h{i}"), "up").await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        last
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.member(index).kill();
    let last = writer.await.unwrap();

    let config = applied(&live, last).await;
    assert_eq!(config.a, 60);
    assert_eq!(config.hosts.len(), 12);
    let status = live.status();
    assert!(
        status.member.is_some_and(|m| m != in_use),
        "moved off the killed member"
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "revisions only increase: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_revision_covers_writes_inside_and_outside_the_config() {
    let server = shared_server();
    let p = unique_prefix("wait-rev");
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/a"), "1").await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<Conf>(&p).await.unwrap();

    let inside = put(&mut etcd, &format!("{p}/a"), "2").await;
    let config = applied(&live, inside).await;
    assert_eq!(
        (config.a, config.revision()),
        (2, inside),
        "the write is visible on return"
    );

    let outside = put(&mut etcd, &format!("{p}-elsewhere/x"), "1").await;
    applied(&live, outside).await;
    assert!(live.status().applied_revision >= outside);
}
