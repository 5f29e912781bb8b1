//! Several etcd members on loopback, forming one cluster, with their peer
//! traffic relayed so that a member can be partitioned from the others.

use super::partition::PeerRelays;
use super::process;
use super::server::{EtcdOptions, EtcdServer};

/// A cluster of etcd members on loopback ports. Stopped on drop.
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
    relays: PeerRelays,
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one serves clients.
    ///
    /// # Panics
    /// If the cluster does not come up.
    pub fn start(size: usize) -> EtcdCluster {
        Self::start_with(size, EtcdOptions::new())
    }

    /// Starts `size` members with extra options.
    pub fn start_with(size: usize, options: EtcdOptions) -> EtcdCluster {
        let mut last = String::new();
        for _ in 0..3 {
            let ports: Vec<(u16, u16)> = (0..size)
                .map(|_| (process::free_port(), process::free_port()))
                .collect();
            let peers: Vec<u16> = ports.iter().map(|&(_, peer)| peer).collect();
            let relays = PeerRelays::start(&peers);
            let initial = (0..size)
                .map(|i| format!("m{i}=http://127.0.0.1:{}", relays.port(i)))
                .collect::<Vec<_>>()
                .join(",");
            let members: Vec<EtcdServer> = ports
                .iter()
                .enumerate()
                .map(|(i, &(client, peer))| {
                    EtcdServer::unstarted(
                        &format!("m{i}"),
                        client,
                        (peer, relays.port(i)),
                        Some(initial.clone()),
                        &options,
                    )
                })
                .collect();
            let started = members
                .iter()
                .try_for_each(|m| m.spawn().map_err(|e| format!("could not run etcd: {e}")))
                .and_then(|()| members.iter().try_for_each(EtcdServer::wait_ready));
            match started {
                Ok(()) => return EtcdCluster { members, relays },
                Err(log) => last = log,
            }
        }
        panic!("etcd cluster did not start (three tries):\n{last}");
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdServer::endpoint).collect()
    }

    /// One member, to stop, kill or restart.
    pub fn member(&self, index: usize) -> &EtcdServer {
        &self.members[index]
    }

    /// All members.
    pub fn members(&self) -> &[EtcdServer] {
        &self.members
    }

    /// Cuts member `index` off from the other members, both ways, as a
    /// network partition would: it keeps running and clients still reach
    /// it, but it loses its quorum. Until [`heal`](Self::heal).
    pub fn isolate(&self, index: usize) {
        self.relays.isolate(index);
    }

    /// Ends a partition made by [`isolate`](Self::isolate).
    pub fn heal(&self) {
        self.relays.heal();
    }
}
