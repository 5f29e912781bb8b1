//! What a config needs from etcd, for documentation and for RBAC grants:
//! the keys it reads and the one range its watch covers.

use std::fmt;

use crate::config::{Dependency, EtcdConfig};
use crate::load::covering_range;

/// The keys a config type reads under a prefix, and the key range a role
/// must be allowed to read for it (the first read and the watch both use
/// that range).
///
/// ```
/// use shylock::EtcdConfig;
///
/// #[derive(EtcdConfig)]
/// struct App {
///     port: u16,
///     #[etcd(secret)]
///     token: String,
/// }
///
/// let access = shylock::access::<App>("/app");
/// assert_eq!(
///     access.to_string(),
///     "/app/port\n/app/token (secret)\n\
///      grant: etcdctl role grant-permission ROLE read /app/port /app/tokeo\n"
/// );
/// assert_eq!(access.range, (b"/app/port".to_vec(), b"/app/token\0".to_vec()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Every key or prefix the config reads, in field order.
    pub dependencies: Vec<Dependency>,
    /// The range `[start, end)` the config reads and watches; an `end` of
    /// `"\0"` means every key from `start` on.
    pub range: (Vec<u8>, Vec<u8>),
}

/// What `T` needs from etcd under `prefix`: print it for a program's docs
/// (`--print-etcd-access`, say), or make the role it runs as from it.
pub fn access<T: EtcdConfig>(prefix: &str) -> Access {
    let dependencies = T::dependencies(prefix);
    let range = covering_range(&dependencies);
    Access {
        dependencies,
        range,
    }
}

impl Access {
    /// The etcdctl command that lets `role` read what the config reads and
    /// watch it, as its arguments. A command line cannot hold the NUL byte
    /// that ends a range after one key (`key\0`), so such an end is
    /// widened to the next key that can be typed (`/app/token` becomes
    /// `/app/tokeo`, which also grants `/app/token...`); grant
    /// [`range`](Self::range) through the API for the exact range.
    pub fn etcdctl_grant(&self, role: &str) -> Vec<String> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut command: Vec<String> = ["etcdctl", "role", "grant-permission"]
            .map(String::from)
            .to_vec();
        let (start, end) = &self.range;
        match end.strip_suffix(b"\0") {
            Some([]) => {
                command.extend([role.into(), "--from-key".into(), "read".into(), text(start)]);
            }
            Some(key) => {
                let widened = crate::load::prefix_end(key);
                command.extend([role.into(), "read".into(), text(start), text(&widened)]);
            }
            None => command.extend([role.into(), "read".into(), text(start), text(end)]),
        }
        command
    }
}

/// One dependency per line, then the etcdctl grant (ROLE for the role).
impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for dependency in &self.dependencies {
            writeln!(f, "{dependency}")?;
        }
        writeln!(f, "grant: {}", self.etcdctl_grant("ROLE").join(" "))
    }
}
