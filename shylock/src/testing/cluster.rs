//! Several etcd members on loopback, forming one cluster.

use super::process;
use super::server::{EtcdOptions, EtcdServer};

/// A cluster of etcd members on loopback ports. Stopped on drop.
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
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
            let initial = ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let members: Vec<EtcdServer> = ports
                .iter()
                .enumerate()
                .map(|(i, &(client, peer))| {
                    EtcdServer::unstarted(
                        &format!("m{i}"),
                        client,
                        peer,
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
                Ok(()) => return EtcdCluster { members },
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
}
