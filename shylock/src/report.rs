//! Instance reports: each consumer of a config publishes, under a reporting
//! prefix of its own, which revision it applied and which it rejected and
//! why, bound to a lease so that a dead process's report disappears. Opt-in.
//!
//! Layout: `<root>/<prefix without its leading and trailing />@<instance>`,
//! by default `_shylock/status/apps/web@host-1234` for the config prefix
//! `/apps/web`. The root does not start with `/`, so no config prefix and no
//! mount of `/` covers it, and a role can be granted it alone
//! (`etcdctl role grant-permission ROLE --prefix=true readwrite _shylock/status/`).
//! `@` ends the prefix, so `/apps` and `/apps/web` have separate ranges.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::client::Client;
use crate::config::Dependency;
use crate::event::Event;
use crate::live::Live;

/// The reporting root used unless [`ReportOptions::with_root`] says otherwise.
pub const DEFAULT_ROOT: &str = "_shylock/status";

/// What one instance says about one config prefix: the value stored at its
/// report key, as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Who reports: `host-pid` unless given.
    pub instance: String,
    /// Labels given by the program (`role=web`, `zone=b`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The program and its version.
    pub program: String,
    /// The program's version.
    pub version: String,
    /// The config prefix this report is about.
    pub prefix: String,
    /// The etcd revision of the config the instance runs.
    pub applied_revision: i64,
    /// The newest revision whose values the instance rejected, if any.
    #[serde(default)]
    pub rejected_revision: Option<i64>,
    /// Why (secret values are never in it).
    #[serde(default)]
    pub rejected: Option<String>,
    /// A hash of what the config reads (its dependencies), to tell
    /// instances running different versions of a config type apart.
    pub schema: String,
    /// When this document last changed (RFC 3339, UTC).
    pub updated: String,
}

impl Document {
    /// Whether the instance rejected a revision newer than the one it runs.
    pub fn is_rejecting(&self) -> bool {
        self.rejected_revision
            .is_some_and(|r| r > self.applied_revision)
    }
}

/// The key of one instance's report on `prefix`.
pub fn report_key(root: &str, prefix: &str, instance: &str) -> String {
    format!("{}{instance}", report_range(root, prefix))
}

/// The start of every report key on `prefix` (a prefix range: every key
/// that starts with it).
pub fn report_range(root: &str, prefix: &str) -> String {
    format!(
        "{}/{}@",
        root.trim_end_matches('/'),
        prefix.trim_matches('/')
    )
}

/// How an instance reports.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    root: String,
    instance: String,
    labels: BTreeMap<String, String>,
    program: String,
    version: String,
    ttl: Duration,
}

impl Default for ReportOptions {
    fn default() -> Self {
        let program = std::env::args_os()
            .next()
            .and_then(|p| {
                std::path::Path::new(&p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        ReportOptions {
            root: DEFAULT_ROOT.into(),
            instance: format!("{}-{}", crate::__private::hostname(), std::process::id()),
            labels: BTreeMap::new(),
            program,
            version: String::new(),
            ttl: Duration::from_secs(30),
        }
    }
}

impl ReportOptions {
    /// Reports under `_shylock/status`, as `host-pid`, for this program,
    /// bound to a 30 s lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another reporting root.
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Another instance name (one per process: a pod's name, say).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// A label, for `shylock wait --label k=v` and dashboards.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The program's name and version (default: the executable's name).
    pub fn with_program(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.program = name.into();
        self.version = version.into();
        self
    }

    /// The lease's time to live: a process that dies stops reporting this
    /// long after (at least 2 s).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(2));
        self
    }
}

/// Publishes this process's reports: one lease, kept alive, and a write
/// only when a report changes. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
    client: Client,
}

/// What the writer shares with the reporter's handles without keeping
/// them alive.
struct Shared {
    wake: Arc<Notify>,
    lease: Arc<std::sync::atomic::AtomicI64>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

struct Inner {
    options: ReportOptions,
    /// Each report key's document, `None` once its config is dropped.
    wanted: Mutex<BTreeMap<String, Option<Document>>>,
    wake: Arc<Notify>,
    /// The lease the writer holds (0: none), for `shutdown`.
    lease: Arc<std::sync::atomic::AtomicI64>,
    /// `shutdown` ran: the writer grants no lease and writes nothing more.
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Inner {
    /// The last handle went: the writer revokes the lease and ends.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl Reporter {
    /// Starts reporting through `client`. It never fails: if etcd refuses
    /// the lease or the writes (a role that may read the config but not
    /// write reports), a warning says so and the configs work as before.
    /// The reporter stops when every clone of it and every [`Report`] is
    /// dropped.
    pub fn start(client: &Client, options: ReportOptions) -> Reporter {
        let inner = Arc::new(Inner {
            options,
            wanted: Mutex::default(),
            wake: Arc::new(Notify::new()),
            lease: Arc::default(),
            stopped: Arc::default(),
        });
        tokio::spawn(publish(
            client.clone(),
            Arc::downgrade(&inner),
            Shared {
                wake: inner.wake.clone(),
                lease: inner.lease.clone(),
                stopped: inner.stopped.clone(),
            },
        ));
        Reporter {
            inner,
            client: client.clone(),
        }
    }

    /// Takes this process's reports out of etcd now (revokes the lease),
    /// for a clean stop: without it they go when the lease expires. Reports
    /// are not written again afterwards. Waits at most 2 s.
    pub async fn shutdown(&self) {
        use std::sync::atomic::Ordering;
        self.inner.stopped.store(true, Ordering::SeqCst);
        let id = self.inner.lease.swap(0, Ordering::SeqCst);
        if id == 0 {
            return;
        }
        let revoke = self
            .client
            .request("revoke the report lease", |mut etcd| async move {
                etcd.lease_revoke(id).await
            });
        match tokio::time::timeout(Duration::from_secs(2), revoke).await {
            Ok(Ok(_)) => tracing::debug!(lease = id, "status reports removed"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "status reports not removed; they expire with their lease")
            }
            Err(_) => {
                tracing::warn!("status reports not removed in 2 s; they expire with their lease")
            }
        }
    }

    /// Reports on `live`: the revision it applies, and each rejection,
    /// until `live` is dropped.
    pub fn follow<T: Send + Sync + 'static>(&self, live: &Live<T>) {
        let report = self.report(live.prefix(), live.dependencies());
        report.applied(live.load().revision());
        live.on_event(move |event, snapshot| match event {
            Event::Changed(change) => report.applied(change.revision),
            Event::Rejected(error) => {
                report.rejected(error.revision(), &error.to_string());
                report.applied(snapshot.revision());
            }
            _ => {}
        });
    }

    /// A report on `prefix`, for a program that applies revisions itself
    /// (the CLI's daemons). Removed from etcd when dropped.
    pub fn report(&self, prefix: &str, dependencies: &[Dependency]) -> Report {
        let options = &self.inner.options;
        let key = report_key(&options.root, prefix, &options.instance);
        let document = Document {
            instance: options.instance.clone(),
            labels: options.labels.clone(),
            program: options.program.clone(),
            version: options.version.clone(),
            prefix: prefix.to_owned(),
            schema: schema_hash(dependencies),
            updated: now(),
            ..Document::default()
        };
        self.set(&key, Some(document));
        Report {
            reporter: self.clone(),
            key,
        }
    }

    fn set(&self, key: &str, document: Option<Document>) {
        lock(&self.inner.wanted).insert(key.to_owned(), document);
        self.inner.wake.notify_one();
    }

    fn update(&self, key: &str, change: impl FnOnce(&mut Document)) {
        let mut wanted = lock(&self.inner.wanted);
        let Some(Some(document)) = wanted.get_mut(key) else {
            return;
        };
        let before = document.clone();
        change(document);
        if *document != before {
            document.updated = now();
            drop(wanted);
            self.inner.wake.notify_one();
        }
    }
}

/// One config's report; see [`Reporter::report`].
pub struct Report {
    reporter: Reporter,
    key: String,
}

impl Report {
    /// The instance now runs the config of `revision`.
    pub fn applied(&self, revision: i64) {
        self.reporter.update(&self.key, |d| {
            d.applied_revision = d.applied_revision.max(revision);
        });
    }

    /// The instance refused the values of `revision`, for `problem`
    /// (which must not hold secret values).
    pub fn rejected(&self, revision: i64, problem: &str) {
        self.reporter.update(&self.key, |d| {
            d.rejected_revision = Some(revision);
            d.rejected = Some(problem.to_owned());
        });
    }

    /// The key this report is written at.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.reporter.set(&self.key, None);
    }
}

/// A changed report is written this long after the change, plus up to
/// [`WRITE_DELAY_SPREAD`] ms chosen by the process id.
const WRITE_DELAY_MIN: Duration = Duration::from_millis(50);
const WRITE_DELAY_SPREAD: u64 = 250;

/// The writer: keeps one lease alive and writes what changed.
async fn publish(client: Client, inner: std::sync::Weak<Inner>, shared: Shared) {
    use std::sync::atomic::Ordering;
    let wake = shared.wake;
    let mut lease = Lease::default();
    let mut written: BTreeMap<String, Document> = BTreeMap::new();
    let jitter = WRITE_DELAY_MIN
        + Duration::from_millis(
            u64::from(std::process::id()).wrapping_mul(7919) % WRITE_DELAY_SPREAD,
        );
    let mut warned = false;
    loop {
        let Some(strong) = inner.upgrade() else {
            break;
        };
        if shared.stopped.load(Ordering::SeqCst) {
            // shutdown revoked the lease.
            return;
        }
        let ttl = strong.options.ttl;
        let wanted: Vec<(String, Option<Document>)> = lock(&strong.wanted)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let result = step(&client, ttl, &mut lease, &mut written, &wanted).await;
        shared.lease.store(lease.id.unwrap_or(0), Ordering::SeqCst);
        match result {
            Ok(()) => {
                if warned {
                    tracing::info!("status reports are written again");
                }
                warned = false;
                // Forget the keys whose reports are gone.
                let mut map = lock(&strong.wanted);
                map.retain(|k, v| v.is_some() || written.contains_key(k));
            }
            Err(error) if lease_gone(&error) => {
                // Revoked or expired between the keep-alive and a write.
                lease = Lease::default();
                written.clear();
                strong.wake.notify_one();
            }
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(
                    %error,
                    root = %strong.options.root,
                    "cannot write status reports (the config works as before); retrying every {:?}",
                    ttl / 3
                );
            }
            Err(error) => tracing::debug!(%error, "status reports still not written"),
        }
        drop(strong);
        tokio::select! {
            () = wake.notified() => {
                // A report changed, as it does on every instance at once
                // when a change rolls out: wait a little (as long as the
                // instance's own jitter) so the fleet's writes spread out
                // and do not slow the change reaching the others, and
                // changes in a burst make one write.
                tokio::time::sleep(jitter).await;
            }
            () = tokio::time::sleep(ttl / 3) => {}
        }
    }
    if let Some(id) = lease.id {
        // Our reports go with the lease.
        let _ = client
            .request("revoke the report lease", |mut etcd| async move {
                etcd.lease_revoke(id).await
            })
            .await;
    }
}

/// Keeps the lease alive (or gets a new one, rewriting every report),
/// then writes each changed report and deletes each dropped one.
async fn step(
    client: &Client,
    ttl: Duration,
    lease: &mut Lease,
    written: &mut BTreeMap<String, Document>,
    wanted: &[(String, Option<Document>)],
) -> crate::Result<()> {
    let due = lease.kept.map_or(true, |kept| kept.elapsed() >= ttl / 3);
    if let (Some(id), true) = (lease.id, due) {
        let alive = client
            .request("keep the report lease alive", |mut etcd| async move {
                let (mut keeper, mut stream) = etcd.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |m| m.ttl()))
            })
            .await?;
        if alive <= 0 {
            // Expired (etcd was away longer than the TTL): start over.
            tracing::info!(lease = id, "the report lease expired; reporting again");
            *lease = Lease::default();
            written.clear();
        } else {
            lease.kept = Some(std::time::Instant::now());
        }
    }
    let id = match lease.id {
        Some(id) => id,
        None => {
            let seconds = ttl.as_secs().max(2) as i64;
            let granted = client
                .request("grant the report lease", |mut etcd| async move {
                    etcd.lease_grant(seconds, None).await
                })
                .await?;
            written.clear();
            *lease = Lease {
                id: Some(granted.id()),
                kept: Some(std::time::Instant::now()),
            };
            granted.id()
        }
    };
    for (key, document) in wanted {
        match document {
            Some(document) if written.get(key) != Some(document) => {
                let value = serde_json::to_vec(document).expect("a report serializes");
                client
                    .request(&format!("write the report {key}"), |mut etcd| {
                        let (key, value) = (key.clone(), value.clone());
                        let options = etcd_client::PutOptions::new().with_lease(id);
                        async move { etcd.put(key, value, Some(options)).await }
                    })
                    .await?;
                written.insert(key.clone(), document.clone());
            }
            None if written.contains_key(key) => {
                client
                    .request(&format!("delete the report {key}"), |mut etcd| {
                        let key = key.clone();
                        async move { etcd.delete(key, None).await }
                    })
                    .await?;
                written.remove(key);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The report lease, and when etcd last renewed it.
#[derive(Default)]
struct Lease {
    id: Option<i64>,
    kept: Option<std::time::Instant>,
}

/// etcd's answer to a write bound to a lease it no longer has.
fn lease_gone(error: &crate::Error) -> bool {
    matches!(error, crate::Error::Etcd { source, .. } if source.to_string().contains("lease not found"))
}

/// A short, stable hash of what a config reads (FNV-1a, 64 bits, hex).
fn schema_hash(dependencies: &[Dependency]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for dependency in dependencies {
        for byte in dependency.to_string().bytes().chain([b'\n']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_keys_keep_prefixes_apart() {
        assert_eq!(
            report_key(DEFAULT_ROOT, "/apps/web", "h-1"),
            "_shylock/status/apps/web@h-1"
        );
        assert_eq!(
            report_range(DEFAULT_ROOT, "/apps/"),
            "_shylock/status/apps@"
        );
        assert_eq!(report_range("_r/", "/"), "_r/@");
        assert!(!report_key(DEFAULT_ROOT, "/apps/web", "h")
            .starts_with(&report_range(DEFAULT_ROOT, "/apps")));
    }
}
