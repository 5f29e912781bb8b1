//! `make bench`: every speed claim measured side by side with its baseline
//! on this machine, printed as one table (figure, shylock, baseline, ratio,
//! target). Starts its own etcd. Not part of `make test`.
//!
//! `cargo run --release -p shylock-examples --example bench [-- FIGURE...]`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use etcd_client::{GetOptions, Txn, TxnOp, WatchOptions};
use shylock::testing::{EtcdOptions, EtcdServer};
use shylock::{Client, ConnectOptions, EtcdConfig, Live};

mod fleet_bench;
mod fuse_render;

#[derive(Clone, EtcdConfig)]
#[allow(dead_code)]
struct Small {
    port: u16,
    name: String,
}

#[derive(EtcdConfig)]
struct Big {
    items: BTreeMap<String, String>,
}

/// One row of the table.
pub struct Row {
    pub figure: String,
    pub shylock: String,
    pub baseline: String,
    pub ratio: f64,
    pub target: String,
    pub met: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("callgrind-child") {
        return callgrind_child(&args[1], args[2].parse().unwrap());
    }
    if args.first().map(String::as_str) == Some("memory-child") {
        return tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(memory_child(&args[1]));
    }
    if args.first().map(String::as_str) == Some("baseline-render") {
        return fuse_render::baseline_render_child(&args[1..]);
    }
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    if wanted("read") {
        rows.extend(read_path());
    }
    if wanted("callgrind") {
        rows.extend(instructions());
    }
    let server = EtcdServer::start_with(
        EtcdOptions::new()
            .arg("--max-txn-ops=10000")
            .arg("--quota-backend-bytes=8000000000"),
    );
    if wanted("visible") {
        rows.extend(runtime.block_on(put_to_visible(&server)));
    }
    if wanted("load") {
        rows.extend(runtime.block_on(initial_load(&server)));
    }
    if wanted("memory") {
        rows.extend(runtime.block_on(memory(&server)));
    }
    if wanted("fuse") {
        rows.extend(runtime.block_on(fuse_render::fuse(&server)));
    }
    if wanted("render") {
        rows.extend(runtime.block_on(fuse_render::render(&server)));
    }
    if wanted("fleet") {
        rows.extend(runtime.block_on(fleet_bench::fleet()));
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    println!("\n| figure | shylock | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2}x | {} | {} |",
            r.figure,
            r.shylock,
            r.baseline,
            r.ratio,
            r.target,
            if r.met { "yes" } else { "**no**" }
        );
    }
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

// ---- read path ----------------------------------------------------------

fn read_path() -> Vec<Row> {
    let small = |i: u16| Small {
        port: i,
        name: "web".into(),
    };
    let (live, publisher) = Live::local(small(0));
    let swap = Arc::new(ArcSwap::from_pointee(small(0)));
    let lock = Arc::new(RwLock::new(Arc::new(small(0))));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (swap, lock, stop) = (swap.clone(), lock.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u16;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                publisher.publish(small(i));
                swap.store(Arc::new(small(i)));
                *lock.write().unwrap() = Arc::new(small(i));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    const N: u64 = 20_000_000;
    let per_read = |threads: usize, read: &(dyn Fn() -> u16 + Sync)| -> f64 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..N {
                        black_box(read());
                    }
                });
            }
        });
        start.elapsed().as_nanos() as f64 / N as f64
    };
    let mut rows = Vec::new();
    for threads in [1, 2] {
        // Rounds alternate the three readers, so a noisy moment of the
        // machine hits them alike; each keeps its best round.
        let (mut ours, mut rwlock, mut bare) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..5 {
            ours = ours.min(per_read(threads, &|| live.load().port));
            bare = bare.min(per_read(threads, &|| swap.load().port));
            rwlock = rwlock.min(per_read(threads, &|| lock.read().unwrap().clone().port));
        }
        rows.push(Row {
            figure: format!(
                "read `load()`, {threads} thread(s), writer 1000/s, vs RwLock<Arc<T>> read+clone"
            ),
            shylock: format!("{ours:.1} ns"),
            baseline: format!("{rwlock:.1} ns"),
            ratio: ours / rwlock,
            target: if threads == 2 {
                "<= 0.33x (3x faster)".into()
            } else {
                "reported".into()
            },
            met: threads == 1 || ours * 3.0 <= rwlock,
        });
        rows.push(Row {
            figure: format!(
                "read `load()`, {threads} thread(s), writer 1000/s, vs bare ArcSwap::load"
            ),
            shylock: format!("{ours:.1} ns"),
            baseline: format!("{bare:.1} ns"),
            ratio: ours / bare,
            target: "<= 1.10x (no slower; noise)".into(),
            met: ours <= bare * 1.10,
        });
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    rows
}

/// `bench callgrind-child MODE N`: N reads of one kind, to be counted by callgrind.
fn callgrind_child(mode: &str, n: u64) {
    let small = Small {
        port: 1,
        name: "web".into(),
    };
    let (live, _publisher) = Live::local(small.clone());
    let swap = ArcSwap::from_pointee(small);
    let mut cached = live.cached();
    // One loop per kind, so no kind pays for choosing.
    match mode {
        "load" => {
            for _ in 0..n {
                black_box(live.load().port);
            }
        }
        "cached" => {
            for _ in 0..n {
                black_box(cached.load().port);
            }
        }
        _ => {
            for _ in 0..n {
                black_box(swap.load().port);
            }
        }
    }
}

/// Instructions per read: callgrind's totals for 1M and 2M reads, differenced.
fn instructions() -> Vec<Row> {
    let exe = std::env::current_exe().unwrap();
    let count = |mode: &str, n: u64| -> Option<f64> {
        let out = std::env::temp_dir().join(format!(
            "shylock-callgrind-{mode}-{n}-{}",
            std::process::id()
        ));
        let status = std::process::Command::new("valgrind")
            .args(["--tool=callgrind", "--quiet"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&exe)
            .args(["callgrind-child", mode, &n.to_string()])
            .status()
            .ok()?;
        let text = std::fs::read_to_string(&out).ok()?;
        let _ = std::fs::remove_file(&out);
        status.success().then_some(())?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.trim().parse().ok())
    };
    let per = |mode: &str| -> Option<f64> {
        Some((count(mode, 2_000_000)? - count(mode, 1_000_000)?) / 1_000_000.0)
    };
    let (Some(bare), Some(load), Some(cached)) = (per("arcswap"), per("load"), per("cached"))
    else {
        return vec![Row {
            figure: "instructions per read (callgrind)".into(),
            shylock: "valgrind not available".into(),
            baseline: "-".into(),
            ratio: 0.0,
            target: "-".into(),
            met: false,
        }];
    };
    vec![
        Row {
            figure: "instructions per `load()` (callgrind)".into(),
            shylock: format!("{load:.1}"),
            baseline: format!("{bare:.1} (bare ArcSwap::load)"),
            ratio: load / bare,
            target: "<= 1.10x".into(),
            met: load <= bare * 1.10,
        },
        Row {
            figure: "instructions per cached read (callgrind)".into(),
            shylock: format!("{cached:.1}"),
            baseline: format!("{bare:.1} (bare ArcSwap::load)"),
            ratio: cached / bare,
            target: "<= 15 instructions".into(),
            met: cached <= 15.0,
        },
    ]
}

// ---- put to visible -----------------------------------------------------

async fn fill(etcd: &mut etcd_client::Client, prefix: &str, n: usize, value_len: usize) {
    let value = "v".repeat(value_len);
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}/items/k{i:06}")).collect();
    for chunk in keys.chunks(5_000) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|k| TxnOp::put(k.clone(), value.clone(), None))
            .collect();
        etcd.txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

/// Raw etcd-client watch of a prefix: the instant each revision arrived.
pub async fn raw_watcher(
    endpoint: &str,
    prefix: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(i64, Instant)> {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(64 << 20)
        .watch(
            format!("{prefix}/"),
            Some(WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(Some(response)) = stream.message().await {
            let now = Instant::now();
            if let Some(kv) = response.events().last().and_then(|e| e.kv()) {
                let _ = tx.send((kv.mod_revision(), now));
            }
        }
    });
    rx
}

/// How long after `start` the raw watch saw `revision`.
pub async fn raw_arrival(
    raw: &mut tokio::sync::mpsc::UnboundedReceiver<(i64, Instant)>,
    revision: i64,
    start: Instant,
) -> Duration {
    loop {
        let (rev, at) = raw.recv().await.unwrap();
        if rev >= revision {
            return at - start;
        }
    }
}

async fn put_to_visible(server: &EtcdServer) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut etcd = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    for size in [10usize, 10_000] {
        let prefix = format!("/bench/visible{size}");
        fill(&mut etcd, &prefix, size, 20).await;
        let client = Client::connect(ConnectOptions::new([server.endpoint()]))
            .await
            .unwrap();
        let live = client.config::<Big>(&prefix).await.unwrap();
        let mut raw = raw_watcher(&server.endpoint(), &prefix).await;
        let mut seen = live.subscribe();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for i in 0..500 {
            let key = format!("{prefix}/items/k{:06}", i % size);
            let value = format!("value {i}");
            let start = Instant::now();
            let revision = etcd
                .put(key.clone(), value, None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
            loop {
                if seen.borrow_and_update().revision() >= revision {
                    break;
                }
                seen.changed().await.unwrap();
            }
            ours.push(start.elapsed());
            theirs.push(raw_arrival(&mut raw, revision, start).await);
        }
        let (o50, t50) = (percentile(&mut ours, 0.5), percentile(&mut theirs, 0.5));
        let (o99, t99) = (percentile(&mut ours, 0.99), percentile(&mut theirs, 0.99));
        rows.push(Row {
            figure: format!(
                "put-to-visible in the struct, {size} keys under the prefix (p50; p99)"
            ),
            shylock: format!("{}; {}", ms(o50), ms(o99)),
            baseline: format!("{}; {} (raw watch)", ms(t50), ms(t99)),
            ratio: o50.as_secs_f64() / t50.as_secs_f64(),
            target: "p50 <= 1.2x".into(),
            met: o50.as_secs_f64() <= t50.as_secs_f64() * 1.2,
        });
    }
    rows
}

// ---- initial load and memory ----------------------------------------------

async fn initial_load(server: &EtcdServer) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut etcd = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    for size in [1_000usize, 10_000, 100_000] {
        let prefix = format!("/bench/load{size}");
        fill(&mut etcd, &prefix, size, 20).await;
        let client = Client::connect(ConnectOptions::new([server.endpoint()]))
            .await
            .unwrap();
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..9 {
            let start = Instant::now();
            let live = client.config::<Big>(&prefix).await.unwrap();
            ours.push(start.elapsed());
            assert_eq!(live.load().items.len(), size);
            let mut kv = etcd.kv_client().max_decoding_message_size(256 << 20);
            let start = Instant::now();
            let response = kv
                .get(format!("{prefix}/"), Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            theirs.push(start.elapsed());
            assert_eq!(response.kvs().len(), size);
        }
        let (o, t) = (percentile(&mut ours, 0.5), percentile(&mut theirs, 0.5));
        rows.push(Row {
            figure: format!("initial load of {size} keys into a map field (median of 9)"),
            shylock: ms(o),
            baseline: format!("{} (one raw range read)", ms(t)),
            ratio: o.as_secs_f64() / t.as_secs_f64(),
            target: "<= 1.5x".into(),
            met: o.as_secs_f64() <= t.as_secs_f64() * 1.5,
        });
    }
    rows
}

fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

async fn memory(server: &EtcdServer) -> Vec<Row> {
    let mut etcd = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    let prefix = "/bench/memory";
    fill(&mut etcd, prefix, 100_000, 100).await;
    let raw: u64 = (0..100_000u64)
        .map(|i| format!("{prefix}/items/k{i:06}").len() as u64 + 100)
        .sum();
    // A fresh process, so that memory freed by other figures does not hide the cost.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["memory-child", &server.endpoint()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let used: Vec<u64> = stdout
        .split_whitespace()
        .map(|n| n.parse().expect("memory-child output"))
        .collect();
    let mib = |n: u64| n as f64 / 1048576.0;
    vec![
        Row {
            figure: "resident memory, 100,000 keys of 100 bytes loaded (fresh process)".into(),
            shylock: format!("{:.1} MiB", mib(used[0])),
            baseline: format!("{:.1} MiB (raw keys + values)", mib(raw)),
            ratio: used[0] as f64 / raw as f64,
            target: "< 4x".into(),
            met: (used[0] as f64) < raw as f64 * 4.0,
        },
        Row {
            figure: "resident memory, the same after 10 updates (a spare copy kept for patching)"
                .into(),
            shylock: format!("{:.1} MiB", mib(used[1])),
            baseline: format!("{:.1} MiB (raw keys + values)", mib(raw)),
            ratio: used[1] as f64 / raw as f64,
            target: "reported".into(),
            met: true,
        },
    ]
}

/// Loads /bench/memory and prints how much resident memory that took, then
/// how much after ten updates.
async fn memory_child(endpoint: &str) {
    let client = Client::connect(ConnectOptions::new([endpoint]))
        .await
        .unwrap();
    let before = resident();
    let live = client.config::<Big>("/bench/memory").await.unwrap();
    let after = resident();
    assert_eq!(live.load().items.len(), 100_000);
    let mut etcd = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    for i in 0..10 {
        let key = format!("/bench/memory/items/k{i:06}");
        let revision = etcd.put(key, "u".repeat(100), None).await.unwrap();
        let revision = revision.header().unwrap().revision();
        live.wait_for_revision(revision).await.unwrap();
    }
    let updated = resident();
    println!(
        "{} {}",
        after.saturating_sub(before),
        updated.saturating_sub(before)
    );
}
