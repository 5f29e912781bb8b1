use shylock::EtcdConfig;
use std::collections::BTreeMap;

#[derive(EtcdConfig)]
struct App {
    #[etcd(json, toml)]
    limits: BTreeMap<String, u32>,
    #[etcd(skip, key = "x", secret)]
    local: u32,
    #[etcd(default)]
    name: Option<String>,
    #[etcd(default)]
    hosts: BTreeMap<String, String>,
    #[etcd(default = "x")]
    servers: Vec<String>,
}

fn main() {}
