//! Startup policies with etcd down at start and coming up later.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use shylock::{ConfigOptions, ConnectOptions, EtcdConfig, Event, Startup};
use shylock_e2e::*;

#[derive(EtcdConfig)]
struct Conf {
    #[etcd(default = 1)]
    level: u32,
    #[etcd(default = "anon")]
    name: String,
    #[etcd(secret, default)]
    token: String,
}

#[derive(EtcdConfig)]
#[allow(dead_code)]
struct Strict {
    required: u32,
}

/// A server that has run once (so it has data) and is now stopped.
fn stopped_server() -> EtcdServer {
    let server = EtcdServer::start();
    server.stop();
    server
}

async fn quick_client(server: &EtcdServer) -> shylock::Client {
    let options =
        ConnectOptions::new([server.endpoint()]).with_startup_timeout(Duration::from_millis(500));
    shylock::Client::connect(options).await.unwrap()
}

fn with(startup: Startup) -> ConfigOptions {
    ConfigOptions::new().with_startup(startup)
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_blocks_until_etcd_answers() {
    init_logs();
    let server = stopped_server();
    let client = quick_client(&server).await;
    let pending =
        tokio::spawn(async move { client.config_with::<Conf>("/w", with(Startup::Wait)).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pending.is_finished(), "returned while etcd was down");
    server.restart();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/w/level", "7").await;
    let live = tokio::time::timeout(DEADLINE, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_config(&live, "etcd's value", |c| c.level == 7).await;
    assert!(live.status().synced);
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_serve_until_etcd_answers() {
    init_logs();
    let server = stopped_server();
    let client = quick_client(&server).await;
    let live = client
        .config_with::<Conf>("/d", with(Startup::Defaults))
        .await
        .unwrap();
    let mut events = live.events();
    assert_eq!((live.load().level, live.load().name.as_str()), (1, "anon"));
    assert!(!live.status().synced);

    server.restart();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/d/name", "from-etcd").await;
    wait_config(&live, "switch to etcd", |c| c.name == "from-etcd").await;
    assert!(live.status().synced);
    let first = next_event(&mut events).await;
    assert!(
        matches!(first, Event::Resynced { from: 0, .. }),
        "{first:?}"
    );

    // A struct with a required key cannot start on defaults: a clear error.
    let error = client
        .config_with::<Strict>("/nothing-here", with(Startup::Defaults))
        .await
        .err()
        .expect("required key missing")
        .to_string();
    assert!(error.contains("/nothing-here/required"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn last_known_good_snapshot_starts_a_config_without_etcd() {
    init_logs();
    let dir = tempfile_dir();
    let path = dir.path().join("conf.snapshot");
    let server = EtcdServer::start();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/l/level", "3").await;
    put(&mut etcd, "/l/token", "top-secret-value").await;
    {
        let client = quick_client(&server).await;
        let live = client
            .config_with::<Conf>("/l", with(Startup::LastKnownGood(path.clone())))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).expect("snapshot written at start");
        assert!(text.contains("\"revision\""), "{text}");
        assert!(
            !text.contains("top-secret-value"),
            "secrets stay out of the file: {text}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let rev = put(&mut etcd, "/l/name", "refreshed").await;
        applied(&live, rev).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("refreshed"),
            "refreshed before the change is announced: {text}"
        );
    }
    server.stop();

    let client = quick_client(&server).await;
    let live = client
        .config_with::<Conf>("/l", with(Startup::LastKnownGood(path.clone())))
        .await
        .expect("starts from the snapshot");
    let now = live.load();
    assert_eq!(
        (now.level, now.name.as_str(), now.token.as_str()),
        (3, "refreshed", "")
    );
    assert!(!live.status().synced);

    server.restart();
    let mut etcd = shylock_e2e::etcd(&[server.endpoint()]).await;
    let rev = put(&mut etcd, "/l/level", "4").await;
    let now = applied(&live, rev).await;
    assert_eq!(
        (now.level, now.token.as_str()),
        (4, "top-secret-value"),
        "etcd's values after the outage"
    );

    // A snapshot never replaces a newer revision already on disk.
    let newer = std::fs::read_to_string(&path).unwrap().replacen(
        "\"revision\":",
        "\"revision\":999999999,\"old\":",
        1,
    );
    std::fs::write(&path, &newer).unwrap();
    let rev = put(&mut etcd, "/l/level", "5").await;
    applied(&live, rev).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), newer);
}

#[tokio::test(flavor = "multi_thread")]
async fn last_known_good_without_a_usable_file_names_both_causes() {
    let server = stopped_server();
    let client = quick_client(&server).await;
    let dir = tempfile_dir();
    let path = dir.path().join("missing.snapshot");
    let error = client
        .config_with::<Conf>("/m", with(Startup::LastKnownGood(path.clone())))
        .await
        .err()
        .expect("neither etcd nor a file")
        .to_string();
    assert!(error.contains(&server.endpoint()), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
}

/// A temporary directory, removed when the test ends.
fn tempfile_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shylock-startup-")
        .tempdir()
        .unwrap()
}

#[derive(EtcdConfig)]
struct Many {
    items: std::collections::BTreeMap<String, String>,
}

/// The read after etcd comes back goes through the watch task; with more
/// than gRPC's default 4 MB under the prefix it must still succeed.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_prefix_is_read_once_etcd_comes_back() {
    init_logs();
    let server = EtcdServer::start();
    let mut etcd = etcd(&[server.endpoint()]).await;
    let value = "v".repeat(1024);
    for batch in 0..40 {
        let ops: Vec<etcd_client::TxnOp> = (0..128)
            .map(|i| {
                etcd_client::TxnOp::put(
                    format!("/big/items/k{:05}", batch * 128 + i),
                    value.clone(),
                    None,
                )
            })
            .collect();
        etcd.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .unwrap();
    }
    server.stop();
    let client = quick_client(&server).await;
    let live = client
        .config_with::<Many>("/big", with(Startup::Defaults))
        .await
        .unwrap();
    assert!(live.load().items.is_empty());
    server.restart();
    wait_config(
        &live,
        "5,120 keys of 1 KiB (5 MiB) read after the restart",
        |m| m.items.len() == 5_120,
    )
    .await;
}
