//! The health of one live config, for logs and metrics.

use std::time::{Duration, SystemTime};

use crate::error::ConfigError;

/// A live config's state, as [`Live::status`](crate::Live::status) reports it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Status {
    /// The revision of the config `load()` returns.
    pub revision: i64,
    /// The newest etcd revision the watch has delivered (≥ `revision`).
    pub applied_revision: i64,
    /// When the last watch response (or the initial read) arrived.
    pub last_event: Option<SystemTime>,
    /// Why the newest values were rejected, while they still are.
    pub last_error: Option<ConfigError>,
    /// Updates rejected since start.
    pub rejected_updates: u64,
    /// Updates accepted since start.
    pub accepted_updates: u64,
    /// How many of the accepted updates were applied by reading again only
    /// the changed keys into the previous copy of the config; the others
    /// built the config whole (see "Running for months" in the README).
    pub patched_updates: u64,
    /// The last watch or connection error, while it lasts.
    pub connection_error: Option<String>,
    /// The etcd member serving the watch (its client URL), while connected.
    pub member: Option<String>,
    /// Times the watch re-read everything after a compaction.
    pub resyncs: u64,
    /// Whether the config holds etcd's values yet: `false` while a config
    /// started on its defaults or a snapshot waits for etcd.
    pub synced: bool,
    /// Times the watch stream serving this config broke (and was reopened).
    pub reconnects: u64,
    /// The client's stall timeout
    /// ([`ConnectOptions::with_stall_timeout`](crate::ConnectOptions::with_stall_timeout)):
    /// the longest [`staleness`](Self::staleness) of a config whose watch works.
    pub stall_timeout: Duration,
}

impl Status {
    /// How stale the config may be: the time since etcd last proved that
    /// this config's watch delivers, by an event for it or by any answer
    /// on the stream that carries it (to a change, a progress request or a
    /// probe; the client asks for one whenever the stream has been silent
    /// for a third of the stall timeout). While the watch works it stays
    /// below the stall timeout; past it the stream is taken as stalled and
    /// reopened. A change made in etcd reaches the config within that time
    /// unless the watch reports an error.
    pub fn staleness(&self) -> Option<Duration> {
        self.last_event.map(|t| t.elapsed().unwrap_or_default())
    }

    /// Whether the config serving now is known to be etcd's: it holds etcd's
    /// values (not a startup fallback), no update is being rejected, the
    /// watch reports no error, and etcd confirmed it within the stall timeout.
    pub fn is_current(&self) -> bool {
        self.synced
            && self.last_error.is_none()
            && self.connection_error.is_none()
            && self.staleness().is_some_and(|s| s <= self.stall_timeout)
    }
}
