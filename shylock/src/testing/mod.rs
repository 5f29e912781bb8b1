//! Real etcd servers for tests: yours and ours. Enabled by the `testing`
//! feature.
//!
//! [`EtcdServer::start`] runs the `etcd` binary (from `$SHYLOCK_ETCD_BIN`, else
//! `PATH`) on free loopback ports with a temporary data directory, and stops
//! it on drop. It can be stopped, killed and started again on the same data.
//! [`EtcdCluster::start`] runs several members as one cluster. Processes die
//! with the test process, even when it is killed.
//!
//! Most tests can share one server per test binary, each under its own key
//! prefix; tests that stop or break the server start their own.
//!
//! ```no_run
//! use shylock::testing::{shared_server, unique_prefix};
//!
//! let etcd = shared_server();
//! let prefix = unique_prefix("my_test");
//! println!("etcd at {} under {prefix}", etcd.endpoint());
//! ```

mod cluster;
mod grpc_proxy;
mod partition;
mod process;
mod proxy;
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub use cluster::EtcdCluster;
pub use grpc_proxy::GrpcProxy;
pub use proxy::Proxy;
pub use server::{EtcdOptions, EtcdServer};

/// One server for the whole test binary, started on first use. Do not stop
/// it: tests that break the server start their own with [`EtcdServer::start`].
pub fn shared_server() -> &'static EtcdServer {
    static SHARED: OnceLock<EtcdServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = EtcdServer::start();
        process::remove_at_exit(server.data_dir());
        server
    })
}

/// A key prefix no other test of this process uses: `/{name}-{n}`.
pub fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("/{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
