//! Garbage in: binary values, a 1 MiB value, thousands of keys changed in
//! one transaction. Errors are clear, nothing panics, memory stays bounded.

use std::collections::BTreeMap;

use etcd_client::{Txn, TxnOp};
use shylock::testing::EtcdOptions;
use shylock::{EtcdConfig, Event};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Bulk {
    #[etcd(default)]
    blob: String,
    #[etcd(default)]
    #[allow(dead_code)]
    count: u64,
    items: BTreeMap<String, String>,
}

const KEYS: usize = 5_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn bulk_update(etcd: &mut etcd_client::Client, round: usize) -> i64 {
    let ops: Vec<TxnOp> = (0..KEYS)
        .map(|i| {
            TxnOp::put(
                format!("/g/items/k{i:05}"),
                format!("round {round} value {i} {}", "x".repeat(64)),
                None,
            )
        })
        .collect();
    etcd.txn(Txn::new().and_then(ops))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_values_are_clear_errors_and_big_updates_stay_bounded() {
    init_logs();
    let server = EtcdServer::start_with(EtcdOptions::new().arg("--max-txn-ops=10000"));
    let mut etcd = etcd(&[server.endpoint()]).await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<Bulk>("/g").await.unwrap();
    let mut events = live.events();

    // Invalid UTF-8 and binary values: rejected with the key named.
    put(&mut etcd, "/g/blob", vec![0xff, 0xfe, 0x00, 0x80]).await;
    let Event::Rejected(error) = next_event(&mut events).await else {
        panic!("binary text accepted")
    };
    let text = error.to_string();
    assert!(
        text.contains("/g/blob") && text.contains("not valid UTF-8"),
        "{text}"
    );
    put(&mut etcd, "/g/count", vec![0x00, 0x01]).await;
    let Event::Rejected(error) = next_event(&mut events).await else {
        panic!("binary number accepted")
    };
    assert!(error.to_string().contains("/g/count"), "{error}");
    delete(&mut etcd, "/g/count").await;
    next_event(&mut events).await;

    // A 1 MiB value.
    let big = "v".repeat(1024 * 1024);
    let rev = put(&mut etcd, "/g/blob", big.as_str()).await;
    let config = applied(&live, rev).await;
    assert_eq!(config.blob.len(), big.len());

    // Thousands of keys in one transaction: one update.
    let mut events = live.events();
    let rev = bulk_update(&mut etcd, 0).await;
    let change = loop {
        match next_event(&mut events).await {
            Event::Changed(change) if change.revision == rev => break change,
            Event::Rejected(error) if error.revision() == rev => {
                panic!("bulk update rejected: {error}")
            }
            _ => {}
        }
    };
    assert_eq!((change.revision, change.keys.len()), (rev, KEYS));
    assert_eq!(live.load().items.len(), KEYS);

    // Memory stays bounded over many such updates, even with a subscriber
    // that never reads its events: once its buffer (16 events) is full,
    // further updates add nothing.
    let _idle = live.events();
    let start = resident_bytes();
    let mut at = Vec::new();
    for round in 1..=48 {
        let rev = bulk_update(&mut etcd, round).await;
        applied(&live, rev).await;
        if round % 8 == 0 {
            at.push((round, resident_bytes().saturating_sub(start) / 1024));
        }
    }
    assert!(live.load().items["k00000"].starts_with("round 48 "));
    println!("resident growth (round, KiB) with {KEYS}-key updates: {at:?}");
    let after_full = at[2].1; // round 24
    let last = at[5].1; // round 48
    assert!(
        last.saturating_sub(after_full) < 16 * 1024,
        "memory kept growing after the event buffer was full: {at:?}"
    );
}
