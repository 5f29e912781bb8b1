use shylock::EtcdConfig;

struct Opaque;

#[derive(EtcdConfig)]
struct App {
    thing: Opaque,
}

fn main() {}
