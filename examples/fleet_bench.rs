//! The fleet benchmark: N consumer processes (shylock-cli's
//! examples/fleet_member, release build) each follow one config on one
//! etcd, with instance reports on, against the same fleet with reports off
//! (the baseline). Put-to-applied across the fleet, etcd's memory and CPU
//! per consumer, and the writes the reports cost at rest and per change.
//! `BENCH_FLEET=N` sets the fleet's size (200 by default).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shylock::testing::EtcdServer;

use crate::{ms, percentile, Row};

/// How long the fleet is watched at rest.
const REST: Duration = Duration::from_secs(10);
/// Changes rolled out per fleet.
const ROLLOUTS: u16 = 5;

fn member_binary() -> PathBuf {
    // target/release/examples/bench -> target/release/examples/fleet_member
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("fleet_member")
}

/// One fleet's figures.
struct Figures {
    latencies: Vec<Duration>,
    memory_per_consumer: f64,
    cpu_per_consumer: f64,
    puts_per_second_at_rest: f64,
    puts_per_change: f64,
}

struct Fleet {
    children: Vec<Child>,
    /// (instance, port) for each "port N" line, when it was read.
    lines: mpsc::Receiver<(usize, u16, Instant)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn start(server: &EtcdServer, prefix: &str, n: usize, reports: bool) -> Fleet {
    let binary = member_binary();
    assert!(
        binary.exists(),
        "{} is missing: make bench builds it",
        binary.display()
    );
    let (tx, lines) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let mut children = Vec::new();
    for i in 0..n {
        let mut command = Command::new(&binary);
        command
            .args([&server.endpoint(), prefix, &format!("bench-{i}"), "1"])
            .env("FLEET_REPORT_TTL", "30")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !reports {
            command.env("FLEET_NO_REPORT", "1");
        }
        let mut child = command.spawn().expect("start a fleet member");
        let stdout = child.stdout.take().unwrap();
        let (tx, ready_tx) = (tx.clone(), ready_tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "following" {
                    let _ = ready_tx.send(i);
                } else if let Some(port) = line.strip_prefix("port ") {
                    let _ = tx.send((i, port.parse().unwrap_or(0), Instant::now()));
                }
            }
        });
        children.push(child);
    }
    for _ in 0..n {
        ready
            .recv_timeout(Duration::from_secs(120))
            .expect("every fleet member follows its config");
    }
    Fleet { children, lines }
}

async fn measure(n: usize, reports: bool) -> Figures {
    // An etcd of its own: its memory and CPU are this fleet's alone.
    let server = &EtcdServer::start();
    let prefix = format!("/bench/fleet-{}", if reports { "reports" } else { "plain" });
    let mut etcd = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    etcd.put(format!("{prefix}/port"), "1000", None)
        .await
        .unwrap();
    let memory_before = server.metric("process_resident_memory_bytes", "");
    let fleet = start(server, &prefix, n, reports);
    // Let the reports land (one write each) before measuring rest.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let memory_after = server.metric("process_resident_memory_bytes", "");
    let (cpu0, puts0) = (
        server.metric("process_cpu_seconds_total", ""),
        server.metric("etcd_mvcc_put_total", ""),
    );
    tokio::time::sleep(REST).await;
    let (cpu1, puts1) = (
        server.metric("process_cpu_seconds_total", ""),
        server.metric("etcd_mvcc_put_total", ""),
    );
    let mut latencies = Vec::new();
    let mut puts_during_rollouts = 0.0;
    for round in 0..ROLLOUTS {
        // The previous change's report writes settle first: this measures
        // a change reaching a fleet at rest (their cost is the next row).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let port = 2000 + round;
        let puts_before = server.metric("etcd_mvcc_put_total", "");
        let start = Instant::now();
        etcd.put(format!("{prefix}/port"), port.to_string(), None)
            .await
            .unwrap();
        let mut seen = vec![false; n];
        let mut count = 0;
        while count < n {
            let (i, p, at) = fleet
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("every member applies the change");
            if p == port && !seen[i] {
                seen[i] = true;
                count += 1;
                latencies.push(at - start);
            }
        }
        // The reports of the change are written just after it applies.
        tokio::time::sleep(Duration::from_secs(1)).await;
        puts_during_rollouts += server.metric("etcd_mvcc_put_total", "") - puts_before;
    }
    drop(fleet);
    Figures {
        latencies,
        memory_per_consumer: (memory_after - memory_before) / n as f64,
        cpu_per_consumer: (cpu1 - cpu0) / REST.as_secs_f64() / n as f64,
        puts_per_second_at_rest: (puts1 - puts0) / REST.as_secs_f64(),
        puts_per_change: puts_during_rollouts / f64::from(ROLLOUTS),
    }
}

pub async fn fleet() -> Vec<Row> {
    let n: usize = std::env::var("BENCH_FLEET")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let plain = measure(n, false).await;
    let reported = measure(n, true).await;
    let (mut ours, mut theirs) = (reported.latencies, plain.latencies);
    let (o50, t50) = (percentile(&mut ours, 0.5), percentile(&mut theirs, 0.5));
    let (o99, t99) = (percentile(&mut ours, 0.99), percentile(&mut theirs, 0.99));
    let kb = |bytes: f64| format!("{:.1} KB", bytes / 1024.0);
    let cpu = |seconds: f64| format!("{:.3} ms/s", seconds * 1000.0);
    vec![
        Row {
            figure: format!("fleet put-to-applied, {n} processes x {ROLLOUTS} changes (p50; p99)"),
            shylock: format!("{}; {} (reports on)", ms(o50), ms(o99)),
            baseline: format!("{}; {} (reports off)", ms(t50), ms(t99)),
            ratio: o50.as_secs_f64() / t50.as_secs_f64(),
            target: "p50 <= 1.2x".into(),
            met: o50.as_secs_f64() <= t50.as_secs_f64() * 1.2,
        },
        Row {
            figure: format!("etcd resident memory per consumer ({n} processes)"),
            shylock: kb(reported.memory_per_consumer),
            baseline: kb(plain.memory_per_consumer),
            ratio: reported.memory_per_consumer / plain.memory_per_consumer.max(1.0),
            target: "reported".into(),
            met: true,
        },
        Row {
            figure: format!("etcd CPU per consumer at rest ({n} processes)"),
            shylock: cpu(reported.cpu_per_consumer),
            baseline: cpu(plain.cpu_per_consumer),
            ratio: reported.cpu_per_consumer / plain.cpu_per_consumer.max(1e-9),
            target: "reported".into(),
            met: true,
        },
        Row {
            figure: format!("etcd puts per second at rest ({n} processes)"),
            shylock: format!("{:.2}", reported.puts_per_second_at_rest),
            baseline: format!("{:.2}", plain.puts_per_second_at_rest),
            ratio: 1.0 + reported.puts_per_second_at_rest,
            target: "0 (reports are written on change only)".into(),
            met: reported.puts_per_second_at_rest == 0.0,
        },
        Row {
            figure: format!("etcd puts per change rolled out ({n} processes)"),
            shylock: format!("{:.1}", reported.puts_per_change),
            baseline: format!("{:.1}", plain.puts_per_change),
            ratio: reported.puts_per_change / plain.puts_per_change.max(1.0),
            target: "<= 1 + one per consumer".into(),
            met: reported.puts_per_change <= 1.0 + n as f64,
        },
    ]
}
