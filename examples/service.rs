//! A service whose typed config lives in etcd and changes while it runs.
//!
//! ```text
//! SHYLOCK_ENDPOINTS=http://127.0.0.1:2379 SHYLOCK_PREFIX=/demo/app \
//!     cargo run -p shylock-examples --example service
//! ```
//! It prints its config at start, then every change (with the keys that
//! changed) and every rejected update, until stopped.

use std::collections::BTreeMap;
use std::time::Duration;

use shylock::{Client, ConnectOptions, EtcdConfig, Event};

#[derive(EtcdConfig)]
struct Backend {
    host: String,
    #[etcd(default = 80)]
    port: u16,
}

fn known_level(level: &str) -> Result<(), String> {
    match level {
        "debug" | "info" | "warn" | "error" => Ok(()),
        other => Err(format!(
            "log level must be debug, info, warn or error, not {other:?}"
        )),
    }
}

#[derive(EtcdConfig)]
#[etcd(rename_all = "kebab-case")]
struct AppConfig {
    port: u16,
    #[etcd(default = "info", validate = known_level)]
    log_level: String,
    #[etcd(default = "30s")]
    request_timeout: Duration,
    backends: BTreeMap<String, Backend>,
    #[etcd(secret)]
    api_token: String,
}

fn show(config: &AppConfig) -> String {
    let backends: Vec<String> = config
        .backends
        .iter()
        .map(|(name, b)| format!("{name}={}:{}", b.host, b.port))
        .collect();
    format!(
        "port={} log_level={} request_timeout={:?} backends=[{}] api_token=<{} chars>",
        config.port,
        config.log_level,
        config.request_timeout,
        backends.join(", "),
        config.api_token.len()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let endpoints =
        std::env::var("SHYLOCK_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let prefix = std::env::var("SHYLOCK_PREFIX").unwrap_or_else(|_| "/demo/app".into());

    let client = Client::connect(ConnectOptions::new(endpoints.split(','))).await?;
    let config = client.config::<AppConfig>(&prefix).await?;
    println!(
        "[service] reads {} keys and prefixes:",
        config.dependencies().len()
    );
    for dependency in config.dependencies() {
        println!("[service]   {dependency}");
    }
    let now = config.load();
    println!("[service] revision {}: {}", now.revision(), show(&now));

    let mut events = config.events();
    loop {
        match events.recv().await? {
            Event::Changed(change) => {
                for key in &change.keys {
                    let old = key.old.as_deref().unwrap_or("(none)");
                    let new = key.new.as_deref().unwrap_or("(deleted)");
                    println!("[service]   {}: {old:?} -> {new:?}", key.key);
                }
                let now = config.load();
                println!("[service] revision {}: {}", change.revision, show(&now));
            }
            Event::Rejected(error) => {
                let serving = config.load();
                println!(
                    "[service] REJECTED revision {}: {error}; still serving revision {}",
                    error.revision(),
                    serving.revision()
                );
            }
            _ => {}
        }
    }
}
