//! DNS SRV queries over UDP to the system's nameservers
//! (`/etc/resolv.conf`): etcd discovery (`--discovery-srv`, as etcdctl
//! does it; confd's `-srv-record`) and confd's `lookupSRV` template
//! function.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// One SRV record, as Go's `net.SRV` has it: the target keeps its
/// trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// confd's `lookupSRV`: the records of `_service._proto.name`, sorted as
/// confd sorts them (by target, port, priority and weight printed one
/// after the other); none when the lookup fails.
pub fn lookup_sorted(service: &str, proto: &str, name: &str) -> Vec<Srv> {
    let mut records = lookup(service, proto, name).unwrap_or_default();
    records.sort_by_cached_key(|r| format!("{}{}{}{}", r.target, r.port, r.priority, r.weight));
    records
}

/// etcdctl's `--discovery-srv DOMAIN`: `https://` endpoints from
/// `_etcd-client-ssl._tcp.DOMAIN` and `http://` ones from
/// `_etcd-client._tcp.DOMAIN`, the records of both, in the answers' order.
pub fn discover(domain: &str) -> Result<Vec<String>, String> {
    let domain = domain.trim_end_matches('.');
    let mut endpoints = Vec::new();
    let mut failures = Vec::new();
    for (service, scheme) in [("etcd-client-ssl", "https"), ("etcd-client", "http")] {
        match lookup(service, "tcp", domain) {
            Ok(records) => endpoints.extend(records.iter().map(|r| url(scheme, r))),
            Err(e) => failures.push(format!("_{service}._tcp.{domain}: {e}")),
        }
    }
    if endpoints.is_empty() {
        return Err(format!(
            "--discovery-srv {domain}: no etcd endpoints in DNS ({})",
            if failures.is_empty() {
                "no records".to_owned()
            } else {
                failures.join("; ")
            }
        ));
    }
    Ok(endpoints)
}

/// confd's `getBackendNodesFromSRV`: `scheme://target:port` for each
/// record of `_service._proto.domain`.
pub fn endpoints(record: &str, scheme: &str) -> Result<Vec<String>, String> {
    let expected = || format!("SRV record {record:?}: expected _service._proto.domain");
    let (service, rest) = record
        .strip_prefix('_')
        .and_then(|r| r.split_once("._"))
        .ok_or_else(expected)?;
    let (proto, name) = rest.split_once('.').ok_or_else(expected)?;
    let records = lookup(service, proto, name)
        .map_err(|e| format!("cannot get etcd nodes from SRV record {record}: {e}"))?;
    if records.is_empty() {
        return Err(format!(
            "cannot get etcd nodes from SRV record {record}: no records"
        ));
    }
    Ok(records.iter().map(|r| url(scheme, r)).collect())
}

fn url(scheme: &str, record: &Srv) -> String {
    format!(
        "{scheme}://{}:{}",
        record.target.trim_end_matches('.'),
        record.port
    )
}

/// SRV records of `_service._proto.name`, in the answer's order.
pub fn lookup(service: &str, proto: &str, name: &str) -> Result<Vec<Srv>, String> {
    let servers = nameservers();
    if servers.is_empty() {
        return Err("no nameserver in /etc/resolv.conf".into());
    }
    let mut last = String::new();
    for server in servers {
        match query(server, &format!("_{service}._{proto}.{name}")) {
            Ok(records) => return Ok(records),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// One SRV query to one server.
pub fn query(server: SocketAddr, qname: &str) -> Result<Vec<Srv>, String> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut packet = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    for label in qname.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 33, 0, 1]);
    socket.send_to(&packet, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let (len, _) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer from {server}: {e}"))?;
    parse(&buf[..len], id)
}

fn parse(msg: &[u8], id: u16) -> Result<Vec<Srv>, String> {
    let short = || "truncated DNS answer".to_string();
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id {
        return Err("bad DNS answer".into());
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Err("no such name".into()),
        code => return Err(format!("DNS error code {code}")),
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos).ok_or_else(short)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        pos = skip_name(msg, pos).ok_or_else(short)?;
        let header = msg.get(pos..pos + 10).ok_or_else(short)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let rdlen = u16::from_be_bytes([header[8], header[9]]) as usize;
        let data = pos + 10;
        if kind == 33 {
            let rd = msg.get(data..data + 6).ok_or_else(short)?;
            let priority = u16::from_be_bytes([rd[0], rd[1]]);
            let weight = u16::from_be_bytes([rd[2], rd[3]]);
            let port = u16::from_be_bytes([rd[4], rd[5]]);
            let target = read_name(msg, data + 6).ok_or_else(short)?;
            records.push(Srv {
                target: format!("{target}."),
                port,
                priority,
                weight,
            });
        }
        pos = data + rdlen;
    }
    Ok(records)
}

fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some(pos + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(pos + 2);
        }
        pos += 1 + len;
    }
}

fn read_name(msg: &[u8], mut pos: usize) -> Option<String> {
    let mut labels = Vec::new();
    for _ in 0..64 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some(labels.join("."));
        }
        if len & 0xc0 == 0xc0 {
            pos = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            continue;
        }
        labels.push(String::from_utf8_lossy(msg.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot DNS server on loopback answering with two SRV records.
    #[test]
    fn srv_records_from_a_local_server() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (len, from) = server.recv_from(&mut buf).unwrap();
            let query = &buf[..len];
            let mut answer = query.to_vec();
            answer[2] = 0x81;
            answer[3] = 0x80;
            answer[7] = 2; // two answers
            for (priority, weight, port, host) in [
                (20u16, 5u16, 8080u16, "b.example"),
                (10, 5, 80, "a.example"),
            ] {
                answer.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
                let mut rdata = Vec::new();
                rdata.extend_from_slice(&priority.to_be_bytes());
                rdata.extend_from_slice(&weight.to_be_bytes());
                rdata.extend_from_slice(&port.to_be_bytes());
                for label in host.split('.') {
                    rdata.push(label.len() as u8);
                    rdata.extend_from_slice(label.as_bytes());
                }
                rdata.push(0);
                answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                answer.extend_from_slice(&rdata);
            }
            server.send_to(&answer, from).unwrap();
        });
        let records = query(address, "_http._tcp.example").unwrap();
        responder.join().unwrap();
        let srv = |target: &str, port, priority, weight| Srv {
            target: target.into(),
            port,
            priority,
            weight,
        };
        assert_eq!(
            records,
            [srv("b.example.", 8080, 20, 5), srv("a.example.", 80, 10, 5)],
            "in the answer's order, targets with Go's trailing dot"
        );
    }
}
