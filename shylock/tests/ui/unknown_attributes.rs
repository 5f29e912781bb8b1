use shylock::EtcdConfig;

#[derive(EtcdConfig)]
#[etcd(prefx = "/app")]
struct App {
    #[etcd(kee = "port")]
    port: u16,
    #[etcd(secrett)]
    token: String,
}

fn main() {}
