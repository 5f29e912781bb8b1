//! A member cut off from its quorum by a network partition (not killed):
//! with etcd's require-leader metadata it cancels the watch stream, and the
//! config moves to a member that still gets writes. Without it the watch
//! stalls silently while the member answers every probe.

use std::time::{Duration, Instant};

use shylock::EtcdConfig;
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Conf {
    a: u32,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_member_hands_the_watch_to_the_majority() {
    init_logs();
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let mut etcd = etcd(&endpoints).await;
    put_retrying(&mut etcd, "/part/a", "1").await;
    let client = client(&endpoints).await;
    let live = client.config::<Conf>("/part").await.unwrap();
    wait_for("a member to serve the stream", || {
        let member = live.status().member;
        async move { member }
    })
    .await;
    let serving = live.status().member.unwrap();
    let index = endpoints.iter().position(|e| *e == serving).unwrap();

    cluster.isolate(index);
    let partitioned = Instant::now();
    // Writes go through the two members that keep the quorum.
    let others: Vec<String> = (0..3)
        .filter(|&i| i != index)
        .map(|i| endpoints[i].clone())
        .collect();
    let mut majority = etcd_client::Client::connect(&others, None).await.unwrap();
    put_retrying(&mut majority, "/part/a", "2").await;

    // The cut-off member notices after about three election timeouts (1 s
    // each in these clusters); the client then finds a member with a leader.
    let deadline = Duration::from_secs(20);
    let mut saw_error = false;
    loop {
        let status = live.status();
        saw_error |= status.connection_error.is_some();
        if live.load().a == 2 {
            break;
        }
        assert!(
            partitioned.elapsed() < deadline,
            "the write made on the majority side never arrived: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = live.status();
    assert!(saw_error || status.reconnects > 0, "{status:?}");
    assert_ne!(status.member.as_deref(), Some(serving.as_str()));
    eprintln!(
        "moved off the partitioned member {:.1?} after the cut",
        partitioned.elapsed()
    );

    cluster.heal();
    put_retrying(&mut majority, "/part/a", "3").await;
    wait_config(&live, "writes after the partition healed", |c| c.a == 3).await;
}
