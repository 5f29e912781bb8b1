//! A service that follows a config with instance reports on, for the fleet
//! tests (shylock-cli/tests/fleet.rs): the config's `port` must be at least
//! MIN_PORT, so one instance can reject what others accept.
//!
//! ```text
//! fleet_member ENDPOINT PREFIX INSTANCE MIN_PORT [LABEL=VALUE] [USER:PASSWORD]
//! ```
//! Prints "following" once it follows the config and "port N" after each
//! change it applies; ends on SIGTERM. With SHYLOCK_METRICS_ADDR, serves
//! the library's metrics as Prometheus text there.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use shylock::{Client, ConnectOptions, EtcdConfig, Event, ReportOptions, Reporter};

/// This instance's lowest acceptable port.
static MIN_PORT: AtomicU16 = AtomicU16::new(0);

#[derive(EtcdConfig)]
#[etcd(validate = check)]
struct Web {
    port: u16,
}

fn check(web: &Web) -> Result<(), String> {
    let min = MIN_PORT.load(Ordering::Relaxed);
    if web.port < min {
        return Err(format!("port {} is below {min}", web.port));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> shylock::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, prefix, instance) = (&args[1], &args[2], &args[3]);
    MIN_PORT.store(args[4].parse().expect("MIN_PORT"), Ordering::Relaxed);
    let label = args.get(5).and_then(|l| l.split_once('='));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    // The library's metrics, as `shylock --metrics-addr` serves a daemon's.
    if let Ok(addr) = std::env::var("SHYLOCK_METRICS_ADDR") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr.parse::<std::net::SocketAddr>().expect("an address"))
            .install()
            .expect("the metrics listener");
    }
    let mut options = ConnectOptions::new([endpoint.clone()]);
    if let Some((user, password)) = args.get(6).and_then(|u| u.split_once(':')) {
        options = options.with_user(user, password);
    }
    let client = Client::connect(options).await?;
    let live = client.config::<Web>(prefix).await?;
    // FLEET_NO_REPORT=1: no reports (the fleet benchmark's baseline);
    // FLEET_REPORT_TTL: the lease in seconds (2 by default, for the tests).
    let ttl = std::env::var("FLEET_REPORT_TTL")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let mut report = ReportOptions::new()
        .with_instance(instance)
        .with_program("fleet_member", "1.0")
        .with_ttl(Duration::from_secs(ttl));
    if let Some((key, value)) = label {
        report = report.with_label(key, value);
    }
    let reporter = std::env::var_os("FLEET_NO_REPORT").is_none().then(|| {
        let reporter = Reporter::start(&client, report);
        reporter.follow(&live);
        reporter
    });
    live.on_event(|event, snapshot| {
        if let Event::Changed(_) = event {
            println!("port {}", snapshot.port);
        }
    });
    println!("following");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // A clean stop takes the reports out at once.
    if let Some(reporter) = &reporter {
        reporter.shutdown().await;
    }
    Ok(())
}
