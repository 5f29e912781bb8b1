use shylock::EtcdConfig;

#[derive(EtcdConfig)]
#[etcd(prefix = "app", rename_all = "kebab")]
struct App {
    #[etcd(key = "")]
    a: u16,
    #[etcd(key = "db/")]
    b: u16,
    #[etcd(key = "db//url")]
    c: u16,
}

fn main() {}
