//! The read path, side by side with its baselines, while a writer swaps
//! 1,000 times a second: `Live::load`, the cached reader, a bare
//! `ArcSwap::load` and `RwLock<Arc<T>>` read + clone; on 1 and 2 threads.
//! And the cost of one update: building a struct whole from the in-memory
//! keys, against patching the previous copy with the one changed key.
//!
//! `cargo bench -p shylock --bench read_path`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use shylock::{EtcdConfig, Live};

#[derive(Clone, EtcdConfig)]
#[allow(dead_code)]
struct Config {
    port: u16,
    name: String,
    hosts: BTreeMap<String, String>,
}

fn config(i: u16) -> Config {
    Config {
        port: i,
        name: "web".into(),
        hosts: BTreeMap::new(),
    }
}

/// Swaps all three targets every millisecond until dropped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(
        publisher: shylock::Publisher<Config>,
        swap: Arc<ArcSwap<Config>>,
        lock: Arc<RwLock<Arc<Config>>>,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0u16;
            while !flag.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                publisher.publish(config(i));
                swap.store(Arc::new(config(i)));
                *lock.write().unwrap() = Arc::new(config(i));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(|t| t.join());
    }
}

/// Runs `read` `iters` times on each of `threads` threads; the time per read per thread.
fn parallel(threads: usize, iters: u64, read: impl Fn() -> u16 + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    black_box(read());
                }
            });
        }
    });
    start.elapsed()
}

fn read_path(c: &mut Criterion) {
    let (live, publisher) = Live::local(config(0));
    let swap = Arc::new(ArcSwap::from_pointee(config(0)));
    let lock = Arc::new(RwLock::new(Arc::new(config(0))));
    let _writer = Writer::start(publisher, swap.clone(), lock.clone());

    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("read, {threads} thread(s), writer at 1000/s"));
        group.bench_function("shylock Live::load", |b| {
            b.iter_custom(|n| parallel(threads, n, || live.load().port))
        });
        group.bench_function("shylock cached reader", |b| {
            b.iter_custom(|n| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            let mut cached = live.cached();
                            for _ in 0..n {
                                black_box(cached.load().port);
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
        group.bench_function("baseline ArcSwap::load", |b| {
            b.iter_custom(|n| parallel(threads, n, || swap.load().port))
        });
        group.bench_function("baseline RwLock<Arc<T>> read+clone", |b| {
            b.iter_custom(|n| parallel(threads, n, || lock.read().unwrap().clone().port))
        });
        group.finish();
    }
}

fn one_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("rebuild after one update");
    let small: Vec<(String, String)> = vec![
        ("/a/port".into(), "8080".into()),
        ("/a/name".into(), "web".into()),
    ];
    group.bench_function("3-field struct", |b| {
        b.iter(|| Config::from_pairs("/a", small.clone()).unwrap())
    });
    let big: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            (
                format!("/a/hosts/h{i:05}"),
                format!("10.0.{}.{}:80", i / 256, i % 256),
            )
        })
        .chain(small.clone())
        .collect();
    group.sample_size(20);
    group.bench_function("map of 10,000 entries (keys to struct)", |b| {
        b.iter(|| Config::from_pairs("/a", big.clone()).unwrap())
    });
    let mut tree = shylock::Tree::default();
    for (key, value) in &big {
        tree.insert(key.clone(), value.clone().into_bytes(), 1);
    }
    let mut value = Config::from_pairs("/a", big.clone()).unwrap();
    let mut i = 0u64;
    group.sample_size(100);
    group.bench_function("map of 10,000 entries, patch one changed entry", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("/a/hosts/h{:05}", i % 10_000);
            tree.insert(
                key.clone(),
                format!("10.1.0.{}:80", i % 256).into_bytes(),
                1,
            );
            assert!(shylock::__private::patch(
                &mut value,
                &tree,
                "/a",
                vec![key]
            ));
        })
    });
    group.finish();
}

criterion_group!(benches, read_path, one_update);
criterion_main!(benches);
