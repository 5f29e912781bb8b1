//! A loopback TCP proxy between a client and etcd, to cut the network while
//! etcd itself keeps running (for compaction during an outage, stalls).

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forward bytes both ways.
    Open,
    /// Close every connection and refuse new ones, like a dead host.
    Cut,
    /// Keep connections open but forward nothing, like a black hole.
    Frozen,
}

/// A TCP proxy on a free loopback port, forwarding to one etcd member. Runs on
/// a thread of its own, whatever runtime the test uses; stops on drop.
pub struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    _thread: std::thread::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `target`, an endpoint such as `http://127.0.0.1:2379`.
    pub fn start(target: &str) -> Proxy {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .parse()
            .expect("a proxy target of the form http://127.0.0.1:PORT");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking proxy listener");
        let address = std_listener.local_addr().expect("proxy address");
        let (mode, modes) = watch::channel(Mode::Open);
        let thread = std::thread::Builder::new()
            .name("etcd-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(serve(std_listener, target, modes));
            })
            .expect("start the proxy thread");
        Proxy {
            address,
            mode,
            _thread: thread,
        }
    }

    /// The endpoint clients should use, such as `http://127.0.0.1:40001`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Closes every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but forwards nothing (a silent stall) until
    /// [`restore`](Self::restore), which then closes them.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
    }
}

async fn serve(listener: std::net::TcpListener, target: SocketAddr, modes: watch::Receiver<Mode>) {
    let listener = TcpListener::from_std(listener).expect("tokio proxy listener");
    let mut closed = modes.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = closed.changed() => {
                if changed.is_err() {
                    return; // The Proxy was dropped.
                }
                continue;
            }
        };
        let Ok((client, _)) = accepted else { continue };
        if *modes.borrow() != Mode::Open {
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, target, modes.clone()));
    }
}

/// Forwards one connection until it ends or the mode leaves `Open`.
async fn forward(mut client: TcpStream, target: SocketAddr, mut modes: watch::Receiver<Mode>) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
        _ = modes.wait_for(|m| *m != Mode::Open) => {}
    }
    // Frozen: hold both sockets, silent, until the mode changes again.
    if *modes.borrow() == Mode::Frozen {
        let _ = modes.wait_for(|m| *m != Mode::Frozen).await;
    }
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
}
