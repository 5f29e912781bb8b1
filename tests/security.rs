//! etcd with authentication: a read-only role, permission errors, an
//! expiring token outlived by a watch, and etcdctl's environment variables.

use std::time::Duration;

use etcd_client::Permission;
use shylock::testing::EtcdOptions;
use shylock::{ConfigOptions, ConnectOptions, EtcdConfig, Startup};
use shylock_e2e::*;

#[derive(EtcdConfig)]
#[allow(dead_code)]
struct App {
    port: u16,
    #[etcd(default = "none")]
    name: String,
}

const ROOT: (&str, &str) = ("root", "root-pw");
const APP: (&str, &str) = ("app", "app-pw");

/// Enables auth with a root user and an `app` user that may only read `/app/`.
async fn enable_auth(server: &EtcdServer) -> etcd_client::Client {
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/app/port", "8080").await;
    put(&mut etcd, "/private/port", "9999").await;
    etcd.user_add(ROOT.0, ROOT.1, None).await.unwrap();
    etcd.user_grant_role(ROOT.0, "root").await.unwrap();
    etcd.role_add("reader").await.unwrap();
    etcd.role_grant_permission("reader", Permission::read("/app/").with_prefix())
        .await
        .unwrap();
    etcd.user_add(APP.0, APP.1, None).await.unwrap();
    etcd.user_grant_role(APP.0, "reader").await.unwrap();
    etcd.auth_enable().await.unwrap();
    let root = etcd_client::ConnectOptions::new()
        .with_user(ROOT.0, ROOT.1)
        .with_auto_token_refresh(true);
    etcd_client::Client::connect([server.endpoint()], Some(root))
        .await
        .unwrap()
}

fn as_app(server: &EtcdServer) -> ConnectOptions {
    ConnectOptions::new([server.endpoint()]).with_user(APP.0, APP.1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_role_follows_its_own_prefix() {
    init_logs();
    let server = EtcdServer::start();
    let mut root = enable_auth(&server).await;
    let client = shylock::Client::connect(as_app(&server)).await.unwrap();
    let live = client
        .config::<App>("/app")
        .await
        .expect("app may read /app/");
    assert_eq!(live.load().port, 8080);
    put(&mut root, "/app/port", "8081").await;
    wait_config(&live, "update seen by the read-only user", |a| {
        a.port == 8081
    })
    .await;
    assert!(
        !format!("{:?}", as_app(&server)).contains(APP.1),
        "no password in Debug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permission_error_names_the_key_and_is_not_retried() {
    let server = EtcdServer::start();
    let _root = enable_auth(&server).await;
    let client = shylock::Client::connect(as_app(&server)).await.unwrap();
    let started = std::time::Instant::now();
    let wait = ConfigOptions::new().with_startup(Startup::Wait);
    let error = client
        .config_with::<App>("/private", wait)
        .await
        .err()
        .expect("app may not read /private/")
        .to_string();
    assert!(error.contains("/private/port"), "{error}");
    assert!(error.contains("permission denied"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "not retried as an outage"
    );

    let wrong = ConnectOptions::new([server.endpoint()]).with_user(APP.0, "wrong-password");
    let client = shylock::Client::connect(wrong).await.unwrap();
    let error = client
        .config::<App>("/app")
        .await
        .err()
        .expect("bad password")
        .to_string();
    assert!(error.contains("authenticating as user \"app\""), "{error}");
    assert!(!error.contains("wrong-password"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_outlives_its_token_and_etcd_restarts() {
    init_logs();
    let server = EtcdServer::start_with(EtcdOptions::new().arg("--auth-token-ttl=1"));
    let mut root = enable_auth(&server).await;
    let client = shylock::Client::connect(as_app(&server)).await.unwrap();
    let live = client.config::<App>("/app").await.unwrap();

    // Outlive the 1 s token: this sleep is the scenario, not a wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rev = put(&mut root, "/app/port", "1").await;
    applied(&live, rev).await;
    assert_eq!(live.load().port, 1);
    let second = client
        .config::<App>("/app")
        .await
        .expect("a new read renews the token");
    assert_eq!(second.load().port, 1);

    server.stop();
    server.restart();
    let mut root = etcd_client::Client::connect(
        [server.endpoint()],
        Some(
            etcd_client::ConnectOptions::new()
                .with_user(ROOT.0, ROOT.1)
                .with_auto_token_refresh(true),
        ),
    )
    .await
    .unwrap();
    put_retrying(&mut root, "/app/port", "2").await;
    wait_config(
        &live,
        "update after a restart that forgot every token",
        |a| a.port == 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_environment_variables_configure_the_client() {
    let server = EtcdServer::start();
    let _root = enable_auth(&server).await;
    let vars = [
        ("ETCDCTL_ENDPOINTS", server.endpoint()),
        ("ETCDCTL_USER", "app".to_owned()),
        ("ETCDCTL_PASSWORD", APP.1.to_owned()),
        ("ETCDCTL_DIAL_TIMEOUT", "3s".to_owned()),
    ];
    let options = ConnectOptions::from_vars(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    assert_eq!(options.endpoints(), [server.endpoint()]);
    let client = shylock::Client::connect(options).await.unwrap();
    let live = client.config::<App>("/app").await.unwrap();
    assert_eq!(live.load().port, 8080);

    let error = ConnectOptions::from_vars(|name| {
        (name == "ETCDCTL_DIAL_TIMEOUT").then(|| "soon".to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("ETCDCTL_DIAL_TIMEOUT"), "{error}");
    let error =
        ConnectOptions::from_vars(|name| (name == "ETCDCTL_USER").then(|| "app".to_owned()))
            .unwrap_err()
            .to_string();
    assert!(error.contains("ETCDCTL_PASSWORD"), "{error}");
}
