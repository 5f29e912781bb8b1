//! Helpers shared by the end-to-end tests: a client for the test's etcd,
//! writes, and waiting on a condition with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

pub use shylock::testing::{
    shared_server, unique_prefix, EtcdCluster, EtcdOptions, EtcdServer, GrpcProxy, Proxy,
};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A raw etcd client for writes the tests make.
pub async fn etcd(endpoints: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(endpoints, None)
        .await
        .expect("connect the test's etcd client")
}

/// A shylock client for these endpoints.
pub async fn client(endpoints: &[String]) -> shylock::Client {
    shylock::Client::connect(shylock::ConnectOptions::new(endpoints.iter().cloned()))
        .await
        .expect("connect shylock")
}

/// Puts `key = value`; returns the revision of the write.
pub async fn put(etcd: &mut etcd_client::Client, key: &str, value: impl Into<Vec<u8>>) -> i64 {
    let response = etcd.put(key, value, None).await.expect("put");
    response.header().expect("header").revision()
}

/// Puts `key = value`, retrying while the cluster is electing a leader or a
/// member is down, as a real writer would; returns the revision.
pub async fn put_retrying(etcd: &mut etcd_client::Client, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match etcd.put(key, value, None).await {
            Ok(response) => return response.header().expect("header").revision(),
            Err(error) => {
                assert!(Instant::now() < deadline, "put {key} kept failing: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Deletes one key; returns the revision.
pub async fn delete(etcd: &mut etcd_client::Client, key: &str) -> i64 {
    let response = etcd.delete(key, None).await.expect("delete");
    response.header().expect("header").revision()
}

/// Waits until `check` returns `Some`, polling, or fails the test with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next event of a config, or the test fails after the deadline.
pub async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<shylock::Event>,
) -> shylock::Event {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {DEADLINE:?}"))
        .expect("the event channel is open")
}

/// Waits until the config has applied every change up to `revision`, or
/// fails the test after the deadline.
pub async fn applied<T>(
    live: &shylock::Live<T>,
    revision: i64,
) -> std::sync::Arc<shylock::Snapshot<T>> {
    tokio::time::timeout(DEADLINE, live.wait_for_revision(revision))
        .await
        .unwrap_or_else(|_| panic!("revision {revision} not applied within {DEADLINE:?}"))
        .expect("wait_for_revision")
}

/// Waits until the live config satisfies `check`.
pub async fn wait_config<T>(live: &shylock::Live<T>, what: &str, check: impl Fn(&T) -> bool) {
    wait_for(what, || {
        let ok = check(&live.load());
        async move { ok.then_some(()) }
    })
    .await
}

/// Waits until the config's status satisfies `check`.
pub async fn wait_status<T>(
    live: &shylock::Live<T>,
    what: &str,
    check: impl Fn(&shylock::Status) -> bool,
) {
    wait_for(what, || {
        let ok = check(&live.status());
        async move { ok.then_some(()) }
    })
    .await
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
