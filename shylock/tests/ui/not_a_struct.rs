use shylock::EtcdConfig;

#[derive(EtcdConfig)]
enum Mode {
    Fast,
    Slow,
}

#[derive(EtcdConfig)]
struct Tuple(u16, String);

#[derive(EtcdConfig)]
struct Generic<T> {
    value: T,
}

fn main() {}
