//! Every `#[etcd(...)]` attribute and value type, read from a real etcd.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shylock::{DependencyKind, EtcdConfig, ProblemKind};
use shylock_e2e::*;

#[derive(EtcdConfig, Clone, PartialEq)]
struct Db {
    url: String,
    #[etcd(secret)]
    password: String,
    #[etcd(default = 4)]
    pool: u32,
}

#[derive(EtcdConfig, Clone, PartialEq)]
struct Backend {
    host: String,
    port: u16,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Limits {
    rps: u32,
    burst: u32,
}

fn known_level(level: &str) -> Result<(), String> {
    match level {
        "debug" | "info" | "warn" | "error" => Ok(()),
        other => Err(format!("unknown log level {other:?}")),
    }
}

fn ports_differ(app: &App) -> Result<(), &'static str> {
    if app.admin_port == Some(app.listen_port) {
        return Err("admin-port must differ from listen-port");
    }
    Ok(())
}

#[derive(EtcdConfig)]
#[etcd(rename_all = "kebab-case", validate = ports_differ)]
struct App {
    listen_port: u16,
    admin_port: Option<u16>,
    #[etcd(default)]
    workers: usize,
    #[etcd(default = "30s")]
    request_timeout: Duration,
    #[etcd(default = 1.5)]
    backoff_factor: f64,
    debug: bool,
    data_dir: PathBuf,
    bind_ip: IpAddr,
    peer: SocketAddr,
    #[etcd(key = "log/level", validate = known_level)]
    log_level: String,
    db: Db,
    backends: BTreeMap<String, Backend>,
    weights: HashMap<String, u8>,
    servers: Vec<String>,
    #[etcd(json)]
    limits: Limits,
    #[etcd(toml)]
    features: BTreeMap<String, bool>,
    #[etcd(json)]
    tags: Option<Vec<String>>,
    #[etcd(secret)]
    api_token: String,
    #[etcd(key = "/shared-region")]
    region: String,
    #[etcd(skip)]
    local_only: Vec<u8>,
}

async fn seed(etcd: &mut etcd_client::Client, p: &str, region_key: &str) {
    for (key, value) in [
        ("listen-port", "8080"),
        ("debug", "yes"),
        ("data-dir", "/var/lib/app"),
        ("bind-ip", "::1"),
        ("peer", "10.0.0.2:7000"),
        ("log/level", "info"),
        ("db/url", "postgres://db/app"),
        ("db/password", "hunter2"),
        ("backends/a/host", "10.0.0.10"),
        ("backends/a/port", "80"),
        ("backends/b/host", "10.0.0.11"),
        ("backends/b/port", "81"),
        ("weights/a", "3"),
        ("weights/b", "7"),
        ("servers/02", "two"),
        ("servers/01", "one"),
        ("servers/03", "three"),
        ("limits", r#"{"rps": 100, "burst": 20}"#),
        ("features", "beta = true\nlegacy = false\n"),
        ("api-token", "s3cr3t-t0ken"),
    ] {
        put(etcd, &format!("{p}/{key}"), value).await;
    }
    put(etcd, region_key, "eu-west").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attribute_reads_its_key() {
    let server = shared_server();
    let p = unique_prefix("attrs");
    let mut etcd = etcd(&[server.endpoint()]).await;
    seed(&mut etcd, &p, "/shared-region").await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<App>(&p).await.expect("load App");
    let app = live.load();

    assert_eq!(app.listen_port, 8080);
    assert_eq!(app.admin_port, None, "a missing Option key is None");
    assert_eq!(app.workers, 0, "#[etcd(default)] is Default::default()");
    assert_eq!(
        app.request_timeout,
        Duration::from_secs(30),
        "text default decoded"
    );
    assert_eq!(app.backoff_factor, 1.5, "expression default");
    assert!(app.debug);
    assert_eq!(app.data_dir, PathBuf::from("/var/lib/app"));
    assert_eq!(app.bind_ip, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(app.peer, "10.0.0.2:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(app.log_level, "info");
    assert_eq!(app.db.url, "postgres://db/app");
    assert_eq!(app.db.password, "hunter2");
    assert_eq!(app.db.pool, 4);
    assert_eq!(app.backends.len(), 2);
    assert_eq!(
        app.backends["b"],
        Backend {
            host: "10.0.0.11".into(),
            port: 81
        }
    );
    assert_eq!(app.weights["a"], 3);
    assert_eq!(app.weights["b"], 7);
    assert_eq!(app.servers, ["one", "two", "three"], "Vec in key order");
    assert_eq!(
        app.limits,
        Limits {
            rps: 100,
            burst: 20
        }
    );
    assert!(app.features["beta"]);
    assert_eq!(app.tags, None);
    assert_eq!(app.api_token, "s3cr3t-t0ken");
    assert_eq!(app.region, "eu-west", "absolute key");
    assert!(app.local_only.is_empty(), "skip takes Default");
    assert!(app.revision() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_output_redacts_secrets() {
    let app = Db::from_pairs(
        "/x",
        [("/x/url", "postgres://db"), ("/x/password", "hunter2")],
    )
    .unwrap();
    let debug = format!("{app:?}");
    assert!(debug.contains("postgres://db"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(
        !debug.contains("hunter2"),
        "secret leaked into Debug: {debug}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_full_key_and_hide_secrets() {
    let server = shared_server();
    let p = unique_prefix("attrs-bad");
    let mut etcd = etcd(&[server.endpoint()]).await;
    seed(&mut etcd, &p, &format!("{p}-region")).await;
    put(&mut etcd, &format!("{p}/listen-port"), "eighty").await;
    put(&mut etcd, &format!("{p}/db/password"), "").await;
    put(&mut etcd, &format!("{p}/log/level"), "loud").await;
    put(&mut etcd, &format!("{p}/api-token"), vec![0xff, 0xfe]).await;
    etcd.delete(format!("{p}/debug"), None).await.unwrap();

    #[derive(EtcdConfig)]
    #[allow(dead_code)]
    struct Probe {
        #[etcd(key = "listen-port")]
        port: u16,
        debug: bool,
        #[etcd(key = "log/level", validate = known_level)]
        level: String,
        #[etcd(key = "api-token", secret)]
        token: String,
    }
    let client = client(&[server.endpoint()]).await;
    let error = match client.config::<Probe>(&p).await {
        Err(shylock::Error::Config(e)) => e,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("a bad config loaded"),
    };
    let text = error.to_string();
    let kinds: Vec<(String, &ProblemKind)> = error
        .problems()
        .iter()
        .map(|p| (p.key.clone(), &p.kind))
        .collect();
    assert_eq!(kinds.len(), 4, "all problems reported at once: {text}");
    assert!(
        text.contains(&format!(
            "key `{p}/listen-port` is not a valid u16: \"eighty\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("key `{p}/debug` is missing")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "key `{p}/log/level` rejected: unknown log level \"loud\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "key `{p}/api-token` is not a valid String (value is secret"
        )),
        "{text}"
    );
    assert!(
        !text.contains('\u{fffd}'),
        "no part of the secret value is shown: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn struct_validator_rejects_the_whole_config() {
    let server = shared_server();
    let p = unique_prefix("attrs-struct");
    let mut etcd = etcd(&[server.endpoint()]).await;
    seed(&mut etcd, &p, "/shared-region").await;
    put(&mut etcd, &format!("{p}/admin-port"), "8080").await;
    let client = client(&[server.endpoint()]).await;
    let error = client
        .config::<App>(&p)
        .await
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        error.contains(&format!("key `{p}` rejected: admin-port must differ")),
        "{error}"
    );
}

#[derive(EtcdConfig)]
#[etcd(prefix = "/defaults-test/app")]
struct WithPrefix {
    name: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn struct_prefix_is_the_default_prefix() {
    let server = shared_server();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, "/defaults-test/app/name", "from-attribute").await;
    let client = client(&[server.endpoint()]).await;
    let live = client
        .config_at_default_prefix::<WithPrefix>()
        .await
        .unwrap();
    assert_eq!(live.load().name, "from-attribute");
    assert_eq!(live.prefix(), "/defaults-test/app");
}

#[test]
fn dependencies_list_every_key_and_prefix() {
    let deps = App::dependencies("/svc");
    let listed: Vec<String> = deps.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "/svc/listen-port",
            "/svc/admin-port (optional)",
            "/svc/workers (optional)",
            "/svc/request-timeout (optional)",
            "/svc/backoff-factor (optional)",
            "/svc/debug",
            "/svc/data-dir",
            "/svc/bind-ip",
            "/svc/peer",
            "/svc/log/level",
            "/svc/db/url",
            "/svc/db/password (secret)",
            "/svc/db/pool (optional)",
            "/svc/backends/* (optional)",
            "/svc/weights/* (optional)",
            "/svc/servers/* (optional)",
            "/svc/limits",
            "/svc/features",
            "/svc/tags (optional)",
            "/svc/api-token (secret)",
            "/shared-region",
        ]
    );
    assert_eq!(deps[13].kind, DependencyKind::Prefix);
}
