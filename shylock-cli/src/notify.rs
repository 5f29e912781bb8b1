//! systemd's notification protocol (sd_notify), for `Type=notify` units:
//! `READY=1` once a daemon serves (mounted, first render or write done),
//! `STOPPING=1` on SIGTERM, and `WATCHDOG=1` every half of
//! `WatchdogSec=` while the runtime runs. Without `NOTIFY_SOCKET` (not
//! under systemd) every call does nothing.
//!
//! The socket is taken out of the environment at start, so check, reload
//! and exec commands cannot send notifications in the daemon's name.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::time::Duration;

struct Systemd {
    socket: std::ffi::OsString,
    watchdog: Option<Duration>,
}

static SYSTEMD: OnceLock<Option<Systemd>> = OnceLock::new();
static READY: OnceLock<()> = OnceLock::new();

/// Reads and removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
/// Call at start, before any thread exists.
pub fn init() {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        // SAFETY: called first thing in main, with one thread.
        std::env::remove_var(name);
    }
    let ours = pid.is_none_or(|pid| pid == std::process::id().to_string());
    let watchdog = usec
        .and_then(|usec| usec.parse::<u64>().ok())
        .filter(|usec| *usec > 0 && ours)
        .map(Duration::from_micros);
    let _ = SYSTEMD.set(socket.map(|socket| Systemd { socket, watchdog }));
}

/// Sends one notification; a failure is logged, never fatal.
fn send(state: &str) {
    let Some(Some(systemd)) = SYSTEMD.get() else {
        return;
    };
    if let Err(error) = send_to(&systemd.socket, state) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

fn send_to(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's default for user managers).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(state.as_bytes(), &address)?;
        }
        None => {
            datagram.send_to(state.as_bytes(), socket)?;
        }
    }
    Ok(())
}

/// The daemon serves: `READY=1` with a status line, once; starts the
/// watchdog pings if systemd asked for them.
pub fn ready(status: &str) {
    if READY.set(()).is_err() {
        return;
    }
    send(&format!("READY=1\nSTATUS={status}"));
    if let Some(Some(Systemd {
        watchdog: Some(every),
        ..
    })) = SYSTEMD.get()
    {
        let every = *every / 2;
        // A ping proves the runtime still runs tasks: a wedged daemon
        // stops pinging and systemd restarts it.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                send("WATCHDOG=1");
            }
        });
    }
}

/// A status line for `systemctl status`.
pub fn status(status: &str) {
    send(&format!("STATUS={status}"));
}

/// SIGTERM or SIGINT came: the daemon is stopping.
pub fn stopping() {
    send("STOPPING=1");
}
