//! A DNS server on a loopback address answering SRV queries from a table
//! (NXDOMAIN for any other name), and a way to run the binary with it as
//! its only nameserver: a private mount namespace (`unshare --mount`) in
//! which a resolv.conf naming it is bound over /etc/resolv.conf.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;

/// One SRV record: priority, weight, port, target (a name, written with
/// its trailing dot).
pub type Record = (u16, u16, u16, &'static str);

pub struct DnsServer {
    pub address: std::net::Ipv4Addr,
    dir: tempfile::TempDir,
    socket: UdpSocket,
}

impl DnsServer {
    /// Serves `records` (name without trailing dot -> its SRV records) on
    /// port 53 of a free 127.53.x.y address.
    pub fn start(records: Vec<(String, Vec<Record>)>) -> DnsServer {
        let (socket, address) = (1..=250u8)
            .flat_map(|x| (1..=250u8).map(move |y| std::net::Ipv4Addr::new(127, 53, x, y)))
            .skip((std::process::id() % 50_000) as usize)
            .find_map(|ip| UdpSocket::bind((ip, 53)).ok().map(|s| (s, ip)))
            .expect("a free 127.53.x.y:53 (the tests run as root)");
        let server = socket.try_clone().unwrap();
        std::thread::spawn(move || serve(&server, &records));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!("nameserver {address}\n"),
        )
        .unwrap();
        DnsServer {
            address,
            dir,
            socket,
        }
    }

    pub fn resolv_conf(&self) -> std::path::PathBuf {
        self.dir.path().join("resolv.conf")
    }

    /// `program args...` in a mount namespace where /etc/resolv.conf names
    /// only this server.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(self.resolv_conf())
            .arg(program);
        command
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Wake the serving thread with a datagram it ignores and ends on.
        let _ = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.send_to(b"stop", self.socket.local_addr().unwrap()));
    }
}

fn serve(socket: &UdpSocket, records: &[(String, Vec<Record>)]) {
    let mut buf = [0u8; 512];
    while let Ok((len, from)) = socket.recv_from(&mut buf) {
        if len < 12 {
            return; // "stop"
        }
        let query = &buf[..len];
        let Some((name, end)) = question(query) else {
            continue;
        };
        let found = records.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name));
        let mut answer = query[..end + 4].to_vec();
        answer[2] = 0x81; // response, recursion desired
        answer[3] = if found.is_some() { 0x80 } else { 0x83 }; // NXDOMAIN
        answer[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        if let Some((_, list)) = found {
            answer[7] = list.len() as u8;
            for (priority, weight, port, target) in list {
                answer.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
                let mut rdata = Vec::new();
                rdata.extend_from_slice(&priority.to_be_bytes());
                rdata.extend_from_slice(&weight.to_be_bytes());
                rdata.extend_from_slice(&port.to_be_bytes());
                for label in target.trim_end_matches('.').split('.') {
                    rdata.push(label.len() as u8);
                    rdata.extend_from_slice(label.as_bytes());
                }
                rdata.push(0);
                answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                answer.extend_from_slice(&rdata);
            }
        }
        let _ = socket.send_to(&answer, from);
    }
}

/// The question's name, and where its labels end (before type and class).
fn question(query: &[u8]) -> Option<(String, usize)> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        if len == 0 {
            return Some((labels.join("."), pos + 1));
        }
        labels.push(String::from_utf8_lossy(query.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
}
