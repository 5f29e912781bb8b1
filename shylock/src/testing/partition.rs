//! Relays in front of each cluster member's peer port, so that a test can
//! cut one member off from the others (a network partition) while every
//! process keeps running and clients still reach every member.
//!
//! etcd members talk to each other over HTTP/1.1 and name themselves in
//! each request (`X-Server-From`, and `X-Raft-To` for the member dialled).
//! A relay reads the head of each connection's first request to learn who
//! is talking, then only copies bytes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One relay per member: it listens on the port the member advertises to
/// its peers and forwards to the port the member really listens on.
pub(crate) struct PeerRelays {
    ports: Vec<u16>,
    /// The member cut off from the others, if any.
    isolated: watch::Sender<Option<usize>>,
    /// Each member's id as its peers' requests spell it (lower-case hex),
    /// learned from the `X-Raft-To` header of requests sent to it.
    ids: Arc<Mutex<Vec<Option<String>>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl PeerRelays {
    /// Binds one relay per member; `targets` are the members' own peer ports.
    pub(crate) fn start(targets: &[u16]) -> PeerRelays {
        let listeners: Vec<std::net::TcpListener> = targets
            .iter()
            .map(|_| {
                let listener =
                    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a peer relay");
                listener.set_nonblocking(true).expect("nonblocking relay");
                listener
            })
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().expect("relay address").port())
            .collect();
        let (isolated, watching) = watch::channel(None);
        let ids = Arc::new(Mutex::new(vec![None; targets.len()]));
        let (shared, targets) = (ids.clone(), targets.to_vec());
        let thread = std::thread::Builder::new()
            .name("etcd-peer-relays".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("peer relay runtime");
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for (index, (listener, target)) in
                        listeners.into_iter().zip(targets).enumerate()
                    {
                        let relay = Relay {
                            index,
                            target,
                            ids: shared.clone(),
                            isolated: watching.clone(),
                        };
                        tasks.push(tokio::spawn(relay.serve(listener)));
                    }
                    let mut closed = watching;
                    // Runs until the PeerRelays is dropped.
                    while closed.changed().await.is_ok() {}
                    for task in tasks {
                        task.abort();
                    }
                });
            })
            .expect("start the peer relay thread");
        PeerRelays {
            ports,
            isolated,
            ids,
            _thread: thread,
        }
    }

    /// The port member `index` advertises to its peers.
    pub(crate) fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// Cuts member `index` off from every other member, both ways.
    ///
    /// # Panics
    /// If no peer has talked to that member yet (its id is unknown).
    pub(crate) fn isolate(&self, index: usize) {
        let known = lock(&self.ids)[index].is_some();
        assert!(known, "member {index} has not been reached by a peer yet");
        self.isolated.send_replace(Some(index));
    }

    /// Lets every member reach every other again.
    pub(crate) fn heal(&self) {
        self.isolated.send_replace(None);
    }
}

struct Relay {
    index: usize,
    target: u16,
    ids: Arc<Mutex<Vec<Option<String>>>>,
    isolated: watch::Receiver<Option<usize>>,
}

impl Relay {
    async fn serve(self, listener: std::net::TcpListener) {
        let listener = TcpListener::from_std(listener).expect("tokio relay listener");
        let relay = Arc::new(self);
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(relay.clone().forward(client));
        }
    }

    /// Whether a connection to this relay's member from `from` is cut.
    fn blocked(&self, isolated: Option<usize>, from: Option<&str>) -> bool {
        match isolated {
            None => false,
            Some(member) if member == self.index => true,
            Some(member) => from.is_some() && lock(&self.ids)[member].as_deref() == from,
        }
    }

    async fn forward(self: Arc<Self>, mut client: TcpStream) {
        let mut head = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), read_head(&mut client, &mut head)).await;
        let from = header(&head, "x-server-from");
        if let Some(to) = header(&head, "x-raft-to") {
            lock(&self.ids)[self.index] = Some(to);
        }
        let mut isolated = self.isolated.clone();
        if self.blocked(*isolated.borrow_and_update(), from.as_deref()) {
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", self.target)).await else {
            return;
        };
        if upstream.write_all(&head).await.is_err() {
            return;
        }
        let cut = isolated.wait_for(|i| self.blocked(*i, from.as_deref()));
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = cut => {}
        }
    }
}

/// Reads until the end of the first request's head (or 16 KiB, or EOF).
async fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// One header's value from a request head, by lower-case name.
fn header(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    text[..end].lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_ascii_lowercase())
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_are_found_by_name_in_the_head_only() {
        let head = b"GET /raft/stream/msgapp/1 HTTP/1.1\r\nX-Server-From: AB12\r\nX-Raft-To: cd\r\n\r\nX-Raft-To: body";
        assert_eq!(
            super::header(head, "x-server-from").as_deref(),
            Some("ab12")
        );
        assert_eq!(super::header(head, "x-raft-to").as_deref(), Some("cd"));
        assert_eq!(super::header(b"GET / HTTP/1.1\r\n\r\n", "x-raft-to"), None);
    }
}
