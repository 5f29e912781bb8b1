//! A live config's status as metrics, through the `metrics` facade: a
//! program that installs a recorder (such as metrics-exporter-prometheus)
//! gets them, labelled with the config's prefix; one that does not pays a
//! no-op call. The names are in the README.

use std::time::SystemTime;

use metrics::{counter, gauge};

/// A config was made from etcd's keys (or a snapshot) at `revision`.
pub(crate) fn started(prefix: &str, revision: i64) {
    gauge!("shylock_config_revision", "prefix" => prefix.to_owned()).set(revision as f64);
    applied(prefix, revision, SystemTime::now());
}

/// A new config is in place at `revision`.
pub(crate) fn accepted(prefix: &str, revision: i64, patched: bool) {
    let prefix = prefix.to_owned();
    counter!("shylock_config_updates_total", "prefix" => prefix.clone(), "result" => "accepted")
        .increment(1);
    if patched {
        counter!("shylock_config_patched_updates_total", "prefix" => prefix.clone()).increment(1);
    }
    gauge!("shylock_config_revision", "prefix" => prefix).set(revision as f64);
}

/// The values of `revision` were rejected.
pub(crate) fn rejected(prefix: &str, revision: i64) {
    let prefix = prefix.to_owned();
    counter!("shylock_config_updates_total", "prefix" => prefix.clone(), "result" => "rejected")
        .increment(1);
    gauge!("shylock_config_rejected_revision", "prefix" => prefix).set(revision as f64);
}

/// etcd's keys of the config are applied (or confirmed) up to `revision`,
/// as of `at`.
pub(crate) fn applied(prefix: &str, revision: i64, at: SystemTime) {
    let prefix = prefix.to_owned();
    gauge!("shylock_config_applied_revision", "prefix" => prefix.clone()).set(revision as f64);
    alive(&prefix, at);
}

/// etcd answered on the config's stream at `at` (staleness is
/// `time() - shylock_config_last_event_timestamp_seconds`).
pub(crate) fn alive(prefix: &str, at: SystemTime) {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    gauge!("shylock_config_last_event_timestamp_seconds", "prefix" => prefix.to_owned())
        .set(seconds);
}

/// The watch stream is up (`true`) or down; a break counts as a reconnect.
pub(crate) fn connection(prefix: &str, up: bool, broke: bool) {
    let prefix = prefix.to_owned();
    gauge!("shylock_config_connected", "prefix" => prefix.clone()).set(f64::from(u8::from(up)));
    if broke {
        counter!("shylock_config_reconnects_total", "prefix" => prefix).increment(1);
    }
}

/// Everything was read again after a compaction.
pub(crate) fn resynced(prefix: &str) {
    counter!("shylock_config_resyncs_total", "prefix" => prefix.to_owned()).increment(1);
}
