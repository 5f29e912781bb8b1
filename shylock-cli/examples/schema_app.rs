//! A program that publishes what its config reads, for the safe-write
//! tests (shylock-cli/tests/safe_writes.rs) and the README.
//!
//! ```text
//! schema_app PREFIX                 print the schema (as --print-schema would)
//! schema_app PREFIX ENDPOINT        publish it, then build the config once:
//!                                   prints "built port N" or the problems
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use shylock::{Client, ConnectOptions, EtcdConfig};

#[derive(EtcdConfig)]
#[etcd(rename_all = "kebab-case")]
#[allow(dead_code)]
struct App {
    port: u16,
    #[etcd(default = "30s")]
    timeout: Duration,
    hosts: Vec<String>,
    databases: BTreeMap<String, Database>,
    #[etcd(secret)]
    api_token: String,
    #[etcd(json)]
    limits: Option<serde_json::Value>,
}

#[derive(EtcdConfig)]
#[allow(dead_code)]
struct Database {
    url: String,
    #[etcd(default = "10")]
    pool: u32,
}

#[tokio::main]
async fn main() -> shylock::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let prefix = &args[1];
    let schema = shylock::schema::<App>(prefix);
    let Some(endpoint) = args.get(2) else {
        println!("{}", schema.to_json());
        return Ok(());
    };
    let client = Client::connect(ConnectOptions::new([endpoint.clone()])).await?;
    schema.publish(&client).await?;
    match client.config::<App>(prefix).await {
        Ok(app) => println!("built port {}", app.load().port),
        Err(error) => println!("{error}"),
    }
    Ok(())
}
