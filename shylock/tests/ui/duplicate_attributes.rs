use shylock::EtcdConfig;

#[derive(EtcdConfig)]
#[etcd(prefix = "/a", prefix = "/b")]
struct App {
    #[etcd(key = "p", key = "q")]
    port: u16,
    #[etcd(secret)]
    #[etcd(secret)]
    token: String,
}

fn main() {}
