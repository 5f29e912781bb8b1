use shylock::EtcdConfig;

fn positive(value: &i64) -> Result<(), String> {
    if *value > 0 { Ok(()) } else { Err("must be positive".into()) }
}

#[derive(EtcdConfig)]
struct App {
    #[etcd(validate = positive)]
    port: u16,
}

fn main() {}
