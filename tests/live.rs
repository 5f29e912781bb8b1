//! Live updates against a real etcd: every field kind, transactions as one
//! update, rejected values, deleted keys, events, and shared connections.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Txn, TxnOp};
use shylock::{EtcdConfig, Event, KeyChange};
use shylock_e2e::*;

#[derive(EtcdConfig, Clone, PartialEq)]
struct Upstream {
    host: String,
    #[etcd(default = 80)]
    port: u16,
}

#[derive(EtcdConfig)]
#[etcd(rename_all = "kebab-case")]
struct Service {
    port: u16,
    name: Option<String>,
    #[etcd(default = "5s")]
    timeout: Duration,
    #[etcd(default = 10)]
    retries: u32,
    upstreams: BTreeMap<String, Upstream>,
    tags: BTreeMap<String, String>,
    order: Vec<u32>,
    #[etcd(secret)]
    token: String,
}

fn key_change(key: String, old: &str, new: &str) -> KeyChange {
    KeyChange {
        key,
        old: Some(old.into()),
        new: Some(new.into()),
    }
}

async fn service(p: &str) -> (shylock::Live<Service>, etcd_client::Client) {
    init_logs();
    let server = shared_server();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/port"), "8080").await;
    put(&mut etcd, &format!("{p}/token"), "first-secret").await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<Service>(p).await.expect("initial load");
    (live, etcd)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_field_kind_follows_etcd() {
    let p = unique_prefix("live-kinds");
    let (live, mut etcd) = service(&p).await;
    assert_eq!(live.load().port, 8080);

    put(&mut etcd, &format!("{p}/port"), "9090").await;
    wait_config(&live, "plain field update", |s| s.port == 9090).await;

    put(&mut etcd, &format!("{p}/name"), "api").await;
    wait_config(&live, "optional field appears", |s| {
        s.name.as_deref() == Some("api")
    })
    .await;

    put(&mut etcd, &format!("{p}/timeout"), "250ms").await;
    wait_config(&live, "duration", |s| {
        s.timeout == Duration::from_millis(250)
    })
    .await;

    put(&mut etcd, &format!("{p}/upstreams/a/host"), "10.0.0.1").await;
    wait_config(&live, "nested map entry", |s| {
        s.upstreams.get("a")
            == Some(&Upstream {
                host: "10.0.0.1".into(),
                port: 80,
            })
    })
    .await;
    put(&mut etcd, &format!("{p}/upstreams/a/port"), "8443").await;
    wait_config(&live, "nested map field", |s| s.upstreams["a"].port == 8443).await;

    put(&mut etcd, &format!("{p}/tags/env"), "prod").await;
    wait_config(&live, "leaf map entry", |s| {
        s.tags.get("env").map(String::as_str) == Some("prod")
    })
    .await;

    put(&mut etcd, &format!("{p}/order/b"), "2").await;
    put(&mut etcd, &format!("{p}/order/a"), "1").await;
    wait_config(&live, "list in key order", |s| s.order == [1, 2]).await;

    put(&mut etcd, &format!("{p}/token"), "second-secret").await;
    wait_config(&live, "secret field", |s| s.token == "second-secret").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_keys_leave_the_next_snapshot() {
    let p = unique_prefix("live-delete");
    let (live, mut etcd) = service(&p).await;
    for (key, value) in [
        ("name", "api"),
        ("retries", "3"),
        ("upstreams/a/host", "h1"),
        ("upstreams/b/host", "h2"),
        ("tags/env", "prod"),
        ("order/1", "7"),
    ] {
        put(&mut etcd, &format!("{p}/{key}"), value).await;
    }
    wait_config(&live, "all keys", |s| {
        s.order == [7] && s.upstreams.len() == 2
    })
    .await;

    delete(&mut etcd, &format!("{p}/name")).await;
    delete(&mut etcd, &format!("{p}/retries")).await;
    etcd.delete(
        format!("{p}/upstreams/b/"),
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    delete(&mut etcd, &format!("{p}/tags/env")).await;
    delete(&mut etcd, &format!("{p}/order/1")).await;
    wait_config(&live, "deletions applied", |s| {
        s.name.is_none()
            && s.retries == 10
            && s.upstreams.keys().eq(["a"])
            && s.tags.is_empty()
            && s.order.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_is_one_update() {
    let p = unique_prefix("live-txn");
    let (live, mut etcd) = service(&p).await;
    let mut events = live.events();
    let mut snapshots = live.subscribe();
    let txn = Txn::new().and_then(vec![
        TxnOp::put(format!("{p}/port"), "1111", None),
        TxnOp::put(format!("{p}/name"), "txn", None),
        TxnOp::put(format!("{p}/tags/a"), "x", None),
    ]);
    let revision = etcd.txn(txn).await.unwrap().header().unwrap().revision();

    let event = next_event(&mut events).await;
    let Event::Changed(change) = event else {
        panic!("expected a change, got {event:?}")
    };
    assert_eq!(change.revision, revision);
    let keys: Vec<&str> = change.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys.len(), 3, "three keys in one event: {keys:?}");
    tokio::time::timeout(DEADLINE, snapshots.changed())
        .await
        .unwrap()
        .unwrap();
    let seen = snapshots.borrow_and_update().clone();
    assert_eq!(
        (seen.port, seen.name.as_deref(), seen.revision()),
        (1111, Some("txn"), revision)
    );
    assert!(
        !snapshots.has_changed().unwrap(),
        "no intermediate snapshots"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_values_are_rejected_and_the_last_good_config_serves() {
    let p = unique_prefix("live-bad");
    let (live, mut etcd) = service(&p).await;
    let mut events = live.events();
    let good = live.load().revision();

    put(&mut etcd, &format!("{p}/port"), "not-a-port").await;
    let event = next_event(&mut events).await;
    let Event::Rejected(error) = event else {
        panic!("expected a rejection, got {event:?}")
    };
    assert!(error.to_string().contains(&format!("{p}/port")), "{error}");
    assert_eq!(live.load().port, 8080, "last good config keeps serving");
    assert_eq!(live.load().revision(), good);
    let status = live.status();
    assert_eq!(status.rejected_updates, 1);
    assert!(status.last_error.is_some());
    assert!(!status.is_current());

    delete(&mut etcd, &format!("{p}/port")).await;
    let event = next_event(&mut events).await;
    let Event::Rejected(error) = event else {
        panic!("expected a rejection, got {event:?}")
    };
    assert!(
        error
            .to_string()
            .contains(&format!("key `{p}/port` is missing")),
        "{error}"
    );

    put(&mut etcd, &format!("{p}/token"), vec![0xff]).await;
    let event = next_event(&mut events).await;
    assert!(matches!(event, Event::Rejected(_)));
    assert!(!format!("{event:?}").contains("first-secret"));

    put(&mut etcd, &format!("{p}/token"), "ok").await;
    let event = next_event(&mut events).await;
    assert!(matches!(event, Event::Rejected(_)), "port is still missing");
    put(&mut etcd, &format!("{p}/port"), "7070").await;
    let event = next_event(&mut events).await;
    let Event::Changed(change) = event else {
        panic!("expected recovery, got {event:?}")
    };
    assert_eq!(live.load().port, 7070);
    assert_eq!(live.load().token, "ok");
    assert!(live.status().last_error.is_none());
    // The recovering event names everything that differs from the last good
    // config, not only the last write.
    assert_eq!(
        change.keys,
        [
            key_change(format!("{p}/port"), "8080", "7070"),
            key_change(format!("{p}/token"), "<redacted>", "<redacted>"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn change_events_name_keys_with_old_and_new_values_after_the_swap() {
    let p = unique_prefix("live-events");
    let (live, mut etcd) = service(&p).await;
    type Seen = Vec<(Vec<KeyChange>, u16)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = seen.clone();
    let reader = live.clone();
    live.on_event(move |event, snapshot| {
        if let Event::Changed(change) = event {
            // The callback runs after the swap: loads see the new config.
            assert_eq!(reader.load().revision(), change.revision);
            record
                .lock()
                .unwrap()
                .push((change.keys.clone(), snapshot.port));
        }
    });
    put(&mut etcd, &format!("{p}/port"), "8081").await;
    put(&mut etcd, &format!("{p}/token"), "rotated").await;
    // etcd may deliver both puts in one watch response (one update), or in two.
    wait_for("both key changes", || {
        let n: usize = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(keys, _)| keys.len())
            .sum();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let seen = seen.lock().unwrap();
    let keys: Vec<KeyChange> = seen.iter().flat_map(|(keys, _)| keys.clone()).collect();
    assert_eq!(
        keys,
        [
            key_change(format!("{p}/port"), "8080", "8081"),
            key_change(format!("{p}/token"), "<redacted>", "<redacted>")
        ]
    );
    assert!(
        seen.iter().all(|(_, port)| *port == 8081),
        "each snapshot given to the callback is the new one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_waits_for_the_next_config() {
    let p = unique_prefix("live-changed");
    let (mut live, mut etcd) = service(&p).await;
    let waiter = tokio::spawn(async move {
        let next = live.changed().await.unwrap();
        next.port
    });
    put(&mut etcd, &format!("{p}/port"), "4242").await;
    let port = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(port, 4242);
}

#[derive(EtcdConfig)]
struct Flags {
    beta: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn two_config_types_share_one_connection() {
    init_logs();
    let server = shared_server();
    let p = unique_prefix("live-two");
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/svc/port"), "1").await;
    put(&mut etcd, &format!("{p}/svc/token"), "t").await;
    put(&mut etcd, &format!("{p}/flags/beta"), "off").await;
    let client = client(&[server.endpoint()]).await;
    let svc = client.config::<Service>(&format!("{p}/svc")).await.unwrap();
    let flags = client.config::<Flags>(&format!("{p}/flags")).await.unwrap();
    let flags2 = flags.clone();

    let txn = Txn::new().and_then(vec![
        TxnOp::put(format!("{p}/svc/port"), "2", None),
        TxnOp::put(format!("{p}/flags/beta"), "on", None),
    ]);
    etcd.txn(txn).await.unwrap();
    wait_config(&svc, "service", |s| s.port == 2).await;
    wait_config(&flags, "flags", |f| f.beta).await;
    assert!(flags2.load().beta, "clones share the config");
    assert_eq!(svc.load().revision(), flags.load().revision());
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_reader_sees_updates() {
    let p = unique_prefix("live-cached");
    let (live, mut etcd) = service(&p).await;
    let mut cached = live.cached();
    assert_eq!(cached.load().port, 8080);
    put(&mut etcd, &format!("{p}/port"), "8181").await;
    wait_for("cached reader update", || {
        let port = cached.load().port;
        async move { (port == 8181).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unrelated_keys_under_the_prefix_do_not_rebuild() {
    let p = unique_prefix("live-unrelated");
    let (live, mut etcd) = service(&p).await;
    let before = live.status().accepted_updates;
    put(&mut etcd, &format!("{p}/not-a-field"), "x").await;
    let rev = put(&mut etcd, &format!("{p}/port"), "8082").await;
    wait_config(&live, "port", |s| s.port == 8082).await;
    assert_eq!(live.load().revision(), rev);
    assert_eq!(live.status().accepted_updates, before + 1);
}

/// Whoever sees a value and then asks for the status sees that value
/// counted. Regression: the value was swapped in before the status was
/// updated, so `accepted_updates` could lag a value already served (the
/// test above failed once in a few full runs).
#[tokio::test(flavor = "multi_thread")]
async fn the_status_never_lags_the_value_served() {
    let p = unique_prefix("live-status-order");
    let (live, mut etcd) = service(&p).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let served = live.load().revision();
                let status = live.status();
                assert!(
                    status.revision >= served,
                    "status at revision {} while revision {served} is served",
                    status.revision
                );
                checks += 1;
            }
            checks
        })
    };
    for port in 1..=300 {
        put(&mut etcd, &format!("{p}/port"), port.to_string()).await;
    }
    wait_config(&live, "the last update", |s| s.port == 300).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = reader.join().expect("the status lagged the value");
    assert!(checks > 1000, "the reader ran: {checks} checks");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_callback_does_not_stop_updates() {
    let p = unique_prefix("live-panic");
    let (live, mut etcd) = service(&p).await;
    live.on_event(|_, _| panic!("a bug in a user's callback"));
    put(&mut etcd, &format!("{p}/port"), "1").await;
    wait_config(&live, "first update", |s| s.port == 1).await;
    put(&mut etcd, &format!("{p}/port"), "2").await;
    wait_config(&live, "update after the panic", |s| s.port == 2).await;
}

fn no_thirteen(n: &u32) -> Result<(), String> {
    assert!(*n != 13, "a bug in a user's validator");
    Ok(())
}

#[derive(EtcdConfig)]
struct Fragile {
    #[etcd(validate = no_thirteen)]
    n: u32,
}

/// Regression: a panic while building a config ended the watch task that
/// serves every config of the client.
#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_validator_rejects_the_update_and_the_watch_goes_on() {
    let p = unique_prefix("live-fragile");
    let other = unique_prefix("live-fragile-other");
    let server = shared_server();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/n"), "1").await;
    put(&mut etcd, &format!("{other}/n"), "1").await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<Fragile>(&p).await.unwrap();
    let bystander = client.config::<Fragile>(&other).await.unwrap();
    let mut events = live.events();

    let r = put(&mut etcd, &format!("{p}/n"), "13").await;
    let Event::Rejected(error) = next_event(&mut events).await else {
        panic!("the panic is a rejection")
    };
    assert!(error.to_string().contains("panicked"), "{error}");
    assert!(
        error.to_string().contains("a bug in a user's validator"),
        "{error}"
    );
    assert_eq!(applied(&live, r).await.n, 1, "the last good config serves");

    put(&mut etcd, &format!("{p}/n"), "14").await;
    wait_config(&live, "the next good value", |c| c.n == 14).await;
    let r = put(&mut etcd, &format!("{other}/n"), "2").await;
    assert_eq!(applied(&bystander, r).await.n, 2, "other configs go on");
}
