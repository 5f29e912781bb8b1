//! etcd with authentication: a read-only role, permission errors, expiring
//! tokens (a watch created or re-created after its token expired), a watch
//! refused for good, and etcdctl's environment variables.

use std::time::Duration;

use etcd_client::Permission;
use shylock::{ConfigOptions, ConnectOptions, EtcdConfig, Startup};
use shylock_e2e::*;

#[derive(EtcdConfig)]
#[allow(dead_code)]
struct App {
    port: u16,
    #[etcd(default = "none")]
    name: String,
}

/// A config whose keys the `app` user may read one by one, but whose
/// covering watch range (`/app/port` to `/zz/flag`) it may not watch.
#[derive(EtcdConfig)]
#[allow(dead_code)]
struct Span {
    port: u16,
    #[etcd(key = "/zz/flag", default)]
    flag: String,
}

/// etcd's token lifetime in the expiry tests, in seconds.
const TTL: u64 = 1;

fn with_short_tokens() -> EtcdServer {
    EtcdServer::start_with(EtcdOptions::new().arg(format!("--auth-token-ttl={TTL}")))
}

/// Outlives the client's token: this sleep is the scenario, not a wait.
async fn let_the_token_expire() {
    tokio::time::sleep(Duration::from_secs(TTL * 3)).await;
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
    etcd.role_grant_permission("reader", Permission::read("/zz/flag"))
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
async fn a_config_created_after_the_token_expired_follows_etcd() {
    init_logs();
    let server = with_short_tokens();
    let mut root = enable_auth(&server).await;
    put(&mut root, "/app/other/port", "1").await;
    let client = shylock::Client::connect(as_app(&server)).await.unwrap();
    let first = client.config::<App>("/app").await.unwrap();
    let_the_token_expire().await;

    // Its read renews the token; its watch goes on the stream opened with
    // the old one, which etcd now refuses.
    let second = client.config::<App>("/app/other").await.unwrap();
    let r = put(&mut root, "/app/other/port", "2").await;
    assert_eq!(applied(&second, r).await.port, 2);
    let r = put(&mut root, "/app/port", "3").await;
    assert_eq!(applied(&first, r).await.port, 3);
    wait_status(&first, "the first config healthy", |s| s.is_current()).await;
    wait_status(&second, "the second config healthy", |s| s.is_current()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_recreated_after_the_token_expired_follows_etcd() {
    init_logs();
    let server = with_short_tokens();
    let mut root = enable_auth(&server).await;
    let relay = Proxy::start(&server.endpoint());
    let options = ConnectOptions::new([relay.endpoint()]).with_user(APP.0, APP.1);
    let client = shylock::Client::connect(options).await.unwrap();
    let live = client.config::<App>("/app").await.unwrap();
    let_the_token_expire().await;

    // A network blip: the new stream carries the expired token.
    relay.cut();
    wait_status(&live, "the cut to be noticed", |s| {
        s.connection_error.is_some()
    })
    .await;
    let r = put(&mut root, "/app/port", "4").await;
    relay.restore();
    assert_eq!(applied(&live, r).await.port, 4);
    let r = put(&mut root, "/app/port", "5").await;
    assert_eq!(applied(&live, r).await.port, 5);
    wait_status(&live, "the config healthy again", |s| s.is_current()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_refused_for_good_is_reported_and_not_retried() {
    init_logs();
    let server = EtcdServer::start();
    let mut root = enable_auth(&server).await;
    put(&mut root, "/zz/flag", "on").await;
    let client = shylock::Client::connect(as_app(&server)).await.unwrap();
    let live = client
        .config::<Span>("/app")
        .await
        .expect("each key may be read");
    assert_eq!(live.load().flag, "on");
    // Refused once with the first token, then again with a fresh one: for good.
    let status = wait_for("the refusal in the status", || {
        let status = live.status();
        let refused = status
            .connection_error
            .as_deref()
            .is_some_and(|e| e.contains("permission denied") && e.contains("/app/port"));
        async move { refused.then_some(status) }
    })
    .await;
    assert!(!status.is_current(), "{status:?}");
    // Given up, not retried: nothing changes over a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = live.status();
    assert_eq!(later.reconnects, status.reconnects, "{later:?}");
    assert_eq!(later.connection_error, status.connection_error);
    assert_eq!(live.load().port, 8080, "the loaded config keeps serving");

    // The same client's other configs are not affected.
    let app = client.config::<App>("/app").await.unwrap();
    let r = put(&mut root, "/app/port", "8081").await;
    assert_eq!(applied(&app, r).await.port, 8081);
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

#[tokio::test(flavor = "multi_thread")]
async fn the_grant_shylock_prints_lets_a_role_follow_the_config() {
    let server = EtcdServer::start();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/app/port", "8080").await;
    put(&mut etcd, "/zz/flag", "on").await;
    put(&mut etcd, "/a/secret", "no").await;
    put(&mut etcd, "/zzz/secret", "no").await;
    etcd.user_add(ROOT.0, ROOT.1, None).await.unwrap();
    etcd.user_grant_role(ROOT.0, "root").await.unwrap();
    etcd.role_add("span").await.unwrap();
    etcd.user_add(APP.0, APP.1, None).await.unwrap();
    etcd.user_grant_role(APP.0, "span").await.unwrap();
    etcd.auth_enable().await.unwrap();

    // The command as printed, run by the real etcdctl as root.
    let access = shylock::access::<Span>("/app");
    let text = access.to_string();
    assert!(
        text.starts_with("/app/port\n/zz/flag (optional)\ngrant: etcdctl role grant-permission ROLE read /app/port /zz/flah\n"),
        "{text}"
    );
    let grant = access.etcdctl_grant("span");
    let output = std::process::Command::new(&grant[0])
        .args(&grant[1..])
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", server.endpoint())
        .env("ETCDCTL_USER", format!("{}:{}", ROOT.0, ROOT.1))
        .output()
        .expect("etcdctl (Debian's etcd-client; make deps installs it)");
    assert!(
        output.status.success(),
        "{grant:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let client = shylock::Client::connect(as_app(&server)).await.unwrap();
    let live = client
        .config::<Span>("/app")
        .await
        .expect("the grant covers the read");
    assert_eq!(live.load().flag, "on");
    let mut root = etcd_client::Client::connect(
        [server.endpoint()],
        Some(etcd_client::ConnectOptions::new().with_user(ROOT.0, ROOT.1)),
    )
    .await
    .unwrap();
    let r = put(&mut root, "/zz/flag", "off").await;
    assert_eq!(
        applied(&live, r).await.flag,
        "off",
        "the grant covers the watch"
    );
    // And nothing outside the range (keys between /app/port and /zz/flag
    // are inside it: one watch covers them all).
    let mut app = etcd_client::Client::connect(
        [server.endpoint()],
        Some(etcd_client::ConnectOptions::new().with_user(APP.0, APP.1)),
    )
    .await
    .unwrap();
    for outside in ["/a/secret", "/zzz/secret"] {
        assert!(app.get(outside, None).await.is_err(), "{outside} readable");
    }
}
