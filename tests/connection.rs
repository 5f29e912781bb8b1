//! Startup errors, one-round-trip loads, and outages of a real etcd.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use shylock::{ConnectOptions, EtcdConfig};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Small {
    a: u32,
    b: Option<u32>,
    c: std::collections::BTreeMap<String, u32>,
    #[etcd(key = "/elsewhere/d", default)]
    d: u32,
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_etcd_fails_fast_naming_the_endpoints() {
    // A port that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let options =
        ConnectOptions::new([endpoint.clone()]).with_startup_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let result = match shylock::Client::connect(options).await {
        Ok(client) => client.config::<Small>("/x").await.map(|_| ()),
        Err(e) => Err(e),
    };
    let elapsed = started.elapsed();
    let error = result.expect_err("no etcd there").to_string();
    assert!(error.contains(&endpoint), "{error}");
    assert!(error.contains("could not reach etcd"), "{error}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_endpoint_in_the_list_is_skipped_not_reported() {
    let server = shared_server();
    let p = unique_prefix("dead-endpoint");
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/a"), "1").await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // A client that knows a member that is down (first or last) starts and
    // answers every request: a request refused at connect was never sent,
    // so it goes to another member, within the startup timeout.
    for endpoints in [
        [dead.clone(), server.endpoint()],
        [server.endpoint(), dead.clone()],
    ] {
        for _ in 0..10 {
            let client = shylock::Client::connect(ConnectOptions::new(endpoints.clone()))
                .await
                .unwrap();
            let live = client
                .config::<Small>(&p)
                .await
                .unwrap_or_else(|e| panic!("{endpoints:?}: {e}"));
            assert_eq!(live.load().a, 1);
            let key = format!("{p}/a");
            let value = client
                .request("get", |mut etcd| {
                    let key = key.clone();
                    async move { etcd.get(key, None).await }
                })
                .await
                .unwrap_or_else(|e| panic!("{endpoints:?}: {e}"));
            assert_eq!(value.kvs()[0].value(), b"1");
        }
    }
}

/// The sum of one of etcd's own metrics over the series whose labels
/// contain `labels`, from its `/metrics` page.
fn metric(endpoint: &str, name: &str, labels: &str) -> u64 {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// etcd's count of finished gRPC calls of one method.
fn grpc_calls(endpoint: &str, method: &str) -> u64 {
    metric(
        endpoint,
        "grpc_server_handled_total",
        &format!("grpc_method=\"{method}\""),
    )
}

#[derive(EtcdConfig)]
struct Other {
    z: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_of_one_client_share_one_watch_stream() {
    let server = EtcdServer::start();
    let endpoints = [server.endpoint()];
    let endpoint = &endpoints[0];
    let mut etcd = etcd(&endpoints).await;
    put(&mut etcd, "/s1/a", "1").await;
    put(&mut etcd, "/s2/z", "z").await;
    let client = client(&endpoints).await;
    let small = client.config::<Small>("/s1").await.unwrap();
    let other = client.config::<Other>("/s2").await.unwrap();
    let handles: Vec<_> = (0..10).map(|_| small.clone()).collect();
    put(&mut etcd, "/s1/a", "2").await;
    put(&mut etcd, "/s2/z", "y").await;
    wait_config(&handles[9], "update through a cloned handle", |s| s.a == 2).await;
    wait_config(&other, "second type", |o| o.z == "y").await;
    let streams = metric(endpoint, "etcd_debugging_mvcc_watch_stream_total", "");
    let watchers = metric(endpoint, "etcd_debugging_mvcc_watcher_total", "");
    assert_eq!(streams, 1, "one watch stream for the whole client");
    assert_eq!(watchers, 2, "one watch per config, none per handle");
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_load_is_one_round_trip() {
    // Its own server, so no other test's calls are counted.
    let server = EtcdServer::start();
    let mut etcd = etcd(&[server.endpoint()]).await;
    for (k, v) in [
        ("/p/a", "1"),
        ("/p/b", "2"),
        ("/p/c/x", "3"),
        ("/p/c/y", "4"),
        ("/elsewhere/d", "5"),
    ] {
        put(&mut etcd, k, v).await;
    }
    let client = client(&[server.endpoint()]).await;
    let (txns, ranges) = (
        grpc_calls(&server.endpoint(), "Txn"),
        grpc_calls(&server.endpoint(), "Range"),
    );
    let live = client.config::<Small>("/p").await.unwrap();
    assert_eq!(grpc_calls(&server.endpoint(), "Txn"), txns + 1, "one Txn");
    assert_eq!(
        grpc_calls(&server.endpoint(), "Range"),
        ranges,
        "no extra Range"
    );
    let s = live.load();
    assert_eq!((s.a, s.b, s.c.len(), s.d), (1, Some(2), 2, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumes_after_etcd_restarts_without_losing_writes() {
    init_logs();
    let server = EtcdServer::start();
    let endpoints = [server.endpoint()];
    let mut etcd = etcd(&endpoints).await;
    put(&mut etcd, "/r/a", "1").await;
    let client = client(&endpoints).await;
    let live = client.config::<Small>("/r").await.unwrap();
    put(&mut etcd, "/r/a", "2").await;
    wait_config(&live, "write before the stop", |s| s.a == 2).await;

    server.stop();
    wait_for("status reports the broken stream", || {
        let broken = live.status().connection_error.is_some();
        async move { broken.then_some(()) }
    })
    .await;
    assert_eq!(
        live.load().a,
        2,
        "the last good config serves during the outage"
    );
    server.restart();

    let mut etcd = etcd_client::Client::connect(endpoints, None).await.unwrap();
    put(&mut etcd, "/r/b", "3").await;
    let last = put(&mut etcd, "/r/a", "4").await;
    wait_config(&live, "writes after the restart", |s| {
        s.a == 4 && s.b == Some(3)
    })
    .await;
    assert_eq!(live.load().revision(), last);
    wait_for("status recovers", || {
        let ok = live.status().connection_error.is_none();
        async move { ok.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_member_cluster_serves_configs() {
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    let mut etcd = etcd(&endpoints[2..]).await;
    put_retrying(&mut etcd, "/c/a", "1").await;
    let client = client(&endpoints[..1]).await;
    let live = client.config::<Small>("/c").await.unwrap();
    put_retrying(&mut etcd, "/c/a", "2").await;
    wait_config(&live, "write through another member", |s| s.a == 2).await;

    cluster.member(2).kill();
    assert!(!cluster.member(2).is_running());
    let mut etcd = etcd_client::Client::connect(&endpoints[1..2], None)
        .await
        .unwrap();
    put_retrying(&mut etcd, "/c/a", "3").await;
    wait_config(&live, "write with one member down", |s| s.a == 3).await;
    cluster.member(2).restart();
    assert!(cluster.member(2).is_running());
}
