use shylock::EtcdConfig;

#[derive(EtcdConfig)]
#[etcd(rename_all = "kebab-case")]
struct App {
    listen_port: u16,
    #[etcd(key = "listen-port")]
    port: u16,
}

fn main() {}
