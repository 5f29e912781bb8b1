//! A config kept current by the watch: [`Live`] handles and their [`Snapshot`]s.

use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{broadcast, watch};

use crate::__private::Changed;
use crate::client::Client;
use crate::config::{build, patch, Dependency, EtcdConfig};
use crate::error::{Error, Result};
use crate::event::{Change, Event, KeyChange};
use crate::hub::{Connection, RawChange, Sink};
use crate::startup::ConfigOptions;
use crate::status::Status;
use crate::tree::Tree;

/// One immutable version of a config, with the etcd revision it reflects.
/// Dereferences to the config.
#[derive(Debug)]
pub struct Snapshot<T> {
    value: T,
    revision: i64,
}

impl<T> Snapshot<T> {
    /// An etcd revision whose values this snapshot holds: the newest
    /// revision of the watch response it was built from. That response can
    /// also carry later changes of keys the config does not read, so the
    /// revision can be later than the write that changed the config.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The config itself (also reachable through `Deref`).
    pub fn value(&self) -> &T {
        &self.value
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// Events kept for subscribers that fall behind; older ones are dropped
/// (the subscriber sees `Lagged`) so memory stays bounded.
const EVENT_BUFFER: usize = 16;

type Callback<T> = Box<dyn Fn(&Event, &Snapshot<T>) + Send + Sync>;

/// What every handle of one live config shares with its watch.
struct Shared<T> {
    current: ArcSwap<Snapshot<T>>,
    prefix: String,
    dependencies: Vec<Dependency>,
    /// Bumped after every swap of `current`, for cached readers.
    generation: AtomicU64,
    status: Mutex<Status>,
    /// The in-memory copy of the keys: written by the watch, read by rebuilds
    /// and by `wait_for_revision`. Never touched by `load()`.
    tree: Mutex<Tree>,
    notify: watch::Sender<Arc<Snapshot<T>>>,
    /// The newest revision the watch has confirmed, for `wait_for_revision`.
    applied: watch::Sender<i64>,
    events: broadcast::Sender<Event>,
    callbacks: Mutex<Vec<Callback<T>>>,
}

/// A config that follows etcd. Cheap to clone; every clone sees the same
/// config. Reads never lock: [`load`](Live::load) is one atomic load.
///
/// ```no_run
/// # async fn run() -> shylock::Result<()> {
/// use shylock::{Client, ConnectOptions, EtcdConfig};
///
/// #[derive(EtcdConfig)]
/// struct App {
///     port: u16,
/// }
///
/// let client = Client::connect(ConnectOptions::new(["http://127.0.0.1:2379"])).await?;
/// let mut app = client.config::<App>("/myapp/production").await?;
/// println!("port {} at revision {}", app.load().port, app.load().revision());
/// let next = app.changed().await?;
/// println!("now port {}", next.port);
/// # Ok(()) }
/// ```
pub struct Live<T> {
    shared: Arc<Shared<T>>,
    seen: watch::Receiver<Arc<Snapshot<T>>>,
    /// The connection, for configs that follow etcd.
    client: Option<Client>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live {
            shared: self.shared.clone(),
            seen: self.shared.notify.subscribe(),
            client: self.client.clone(),
        }
    }
}

impl<T: EtcdConfig> Live<T> {
    /// Builds the first snapshot from keys read at `revision` and registers
    /// the watch that keeps it current.
    pub(crate) fn start(
        client: Client,
        prefix: &str,
        dependencies: Vec<Dependency>,
        tree: Tree,
        revision: i64,
        origin: Origin,
        options: ConfigOptions,
    ) -> Result<Self> {
        let value = build::<T>(&tree, prefix, revision)?;
        crate::memory::release_freed(tree.len());
        let snapshot = options
            .snapshot_path()
            .map(|path| (path.to_owned(), options.snapshot_secrets));
        if let (Origin::Etcd, Some((path, secrets))) = (origin, &snapshot) {
            save_snapshot(path, prefix, revision, &tree, &dependencies, *secrets);
        }
        let (shared, seen) = Shared::new(
            value,
            prefix,
            dependencies,
            tree,
            revision,
            origin == Origin::Etcd,
            client.options().stall_timeout(),
        );
        let sink = LiveSink {
            shared: shared.clone(),
            pending: Vec::new(),
            snapshot,
            retired: None,
            warned: None,
        };
        // A config that started without etcd is read whole once etcd answers.
        let next = if origin == Origin::Etcd {
            revision + 1
        } else {
            0
        };
        client.register(Box::new(sink), next)?;
        Ok(Live {
            shared,
            seen,
            client: Some(client),
        })
    }
}

impl<T> Shared<T> {
    /// Puts a new snapshot in place for every reader; returns the one it replaced.
    fn swap_in(&self, snapshot: Arc<Snapshot<T>>) -> Arc<Snapshot<T>> {
        let old = self.current.swap(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
        old
    }

    fn new(
        value: T,
        prefix: &str,
        dependencies: Vec<Dependency>,
        tree: Tree,
        revision: i64,
        synced: bool,
        stall_timeout: std::time::Duration,
    ) -> (Arc<Self>, watch::Receiver<Arc<Snapshot<T>>>) {
        let first = Arc::new(Snapshot { value, revision });
        let (notify, seen) = watch::channel(first.clone());
        let shared = Arc::new(Shared {
            current: ArcSwap::new(first),
            generation: AtomicU64::new(0),
            prefix: prefix.to_owned(),
            dependencies,
            status: Mutex::new(Status {
                revision,
                applied_revision: revision,
                last_event: Some(SystemTime::now()),
                synced,
                stall_timeout,
                ..Status::default()
            }),
            tree: Mutex::new(tree),
            notify,
            applied: watch::channel(revision).0,
            events: broadcast::channel(EVENT_BUFFER).0,
            callbacks: Mutex::new(Vec::new()),
        });
        crate::telemetry::started(prefix, revision);
        (shared, seen)
    }
}

impl<T: Send + Sync + 'static> Live<T> {
    /// A live config that the program feeds itself, without etcd: for unit
    /// tests of code that takes a `Live<T>`. Every [`Publisher::publish`]
    /// swaps in a new snapshot and notifies handles as an etcd update would.
    ///
    /// ```
    /// let (live, publisher) = shylock::Live::local(8080u16);
    /// assert_eq!(*live.load().value(), 8080);
    /// publisher.publish(9090);
    /// assert_eq!(*live.load().value(), 9090);
    /// assert_eq!(live.load().revision(), 2);
    /// ```
    pub fn local(value: T) -> (Live<T>, Publisher<T>) {
        // Nothing can go stale: only `publish` changes it.
        let forever = std::time::Duration::MAX;
        let (shared, seen) = Shared::new(value, "", Vec::new(), Tree::default(), 1, true, forever);
        let publisher = Publisher {
            shared: shared.clone(),
        };
        (
            Live {
                shared,
                seen,
                client: None,
            },
            publisher,
        )
    }
}

/// Feeds a [`Live::local`] config.
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Publisher<T> {
    /// Swaps in a new value; returns its revision (one more each time).
    pub fn publish(&self, value: T) -> i64 {
        let shared = &*self.shared;
        let revision = shared.current.load().revision + 1;
        let snapshot = Arc::new(Snapshot { value, revision });
        {
            // As in a rebuild: the status is never behind the value served.
            let mut status = lock(&shared.status);
            shared.swap_in(snapshot.clone());
            status.revision = revision;
            status.accepted_updates += 1;
            status.last_event = Some(SystemTime::now());
        }
        shared.notify.send_replace(snapshot);
        shared.confirm(revision);
        let _ = shared.events.send(Event::Changed(Change {
            revision,
            keys: Vec::new(),
        }));
        revision
    }
}

impl<T> Live<T> {
    /// The current config. One atomic load; keep the guard for one unit of
    /// work and never across an `.await`.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot<T>>> {
        self.shared.current.load()
    }

    /// The current config as an owned `Arc`, to keep across `.await`s.
    pub fn load_full(&self) -> Arc<Snapshot<T>> {
        self.shared.current.load_full()
    }

    /// A reader for hot loops: a read costs one load and compare of a
    /// counter until the config changes, then one `load_full`.
    pub fn cached(&self) -> Cached<'_, T> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        Cached {
            shared: &self.shared,
            generation,
            snapshot: self.shared.current.load_full(),
        }
    }

    /// Waits until a newer config than this handle has seen is in place.
    pub async fn changed(&mut self) -> Result<Arc<Snapshot<T>>> {
        self.seen.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.seen.borrow_and_update().clone())
    }

    /// Waits until this config has applied every change up to `revision`,
    /// such as the revision of a write this program made, and returns the
    /// config then serving. If that change was rejected, the last good config
    /// is returned and [`status`](Live::status) holds the error.
    pub async fn wait_for_revision(&self, revision: i64) -> Result<Arc<Snapshot<T>>> {
        let mut applied = self.shared.applied.subscribe();
        let mut compared = false;
        loop {
            if *applied.borrow_and_update() >= revision {
                return Ok(self.load_full());
            }
            if !compared {
                // A write outside this config's keys sends it no event: if
                // its keys at `revision` are what it holds, it is current.
                compared = true;
                let Some(client) = &self.client else {
                    // A local config: only publish moves it.
                    applied.changed().await.map_err(|_| Error::Closed)?;
                    continue;
                };
                // Read together: the watch raises `applied` while it holds the tree.
                let (held, since) = {
                    let tree = lock(&self.shared.tree);
                    (tree.len(), *self.shared.applied.borrow())
                };
                let deps = &self.shared.dependencies;
                if let Ok(true) = client.unchanged_since(deps, since, held, revision).await {
                    self.shared.confirm(revision);
                    continue;
                }
            }
            applied.changed().await.map_err(|_| Error::Closed)?;
        }
    }

    /// A `tokio::sync::watch` receiver of snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot<T>>> {
        self.shared.notify.subscribe()
    }

    /// A receiver of every [`Event`]: accepted changes and rejected updates.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Runs `callback` after each event, once the new snapshot is visible
    /// (for a rejection, with the snapshot that keeps serving). It runs on
    /// the watch task: keep it short, and hand slow work to a task of yours.
    pub fn on_event(&self, callback: impl Fn(&Event, &Snapshot<T>) + Send + Sync + 'static) {
        lock(&self.shared.callbacks).push(Box::new(callback));
    }

    /// The config's health: revisions, last error, rejected updates.
    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// The prefix this config's relative keys live under.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Every key and prefix this config reads.
    pub fn dependencies(&self) -> &[Dependency] {
        &self.shared.dependencies
    }
}

impl<T> Shared<T> {
    /// Records that etcd's keys of this config are applied up to `revision`.
    fn confirm(&self, revision: i64) {
        {
            let mut status = lock(&self.status);
            status.applied_revision = status.applied_revision.max(revision);
        }
        self.applied.send_if_modified(|r| raise(r, revision));
    }
}

/// A per-thread reader made by [`Live::cached`].
pub struct Cached<'a, T> {
    shared: &'a Shared<T>,
    /// The swap count when `snapshot` was taken.
    generation: u64,
    snapshot: Arc<Snapshot<T>>,
}

impl<T> Cached<'_, T> {
    /// The current config; cheaper than [`Live::load`] in hot loops.
    #[inline]
    pub fn load(&mut self) -> &Snapshot<T> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.refresh(generation);
        }
        &self.snapshot
    }

    #[cold]
    #[inline(never)]
    fn refresh(&mut self, generation: u64) {
        // The counter was read first: the snapshot is at least that new.
        self.generation = generation;
        self.snapshot = self.shared.current.load_full();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watch side of a live config: the key copy and the rebuild.
/// Where a config's first values came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Etcd,
    Defaults,
    Snapshot,
}

fn save_snapshot(
    path: &std::path::Path,
    prefix: &str,
    revision: i64,
    tree: &Tree,
    dependencies: &[Dependency],
    secrets: bool,
) {
    if let Err(error) = crate::snapshot::write(path, prefix, revision, tree, dependencies, secrets)
    {
        tracing::warn!(%error, "could not refresh the last-known-good snapshot");
    }
}

struct LiveSink<T> {
    shared: Arc<Shared<T>>,
    /// The last-known-good file and whether secrets go in it.
    snapshot: Option<(std::path::PathBuf, bool)>,
    /// Key changes since the last accepted config, while updates are rejected.
    pending: Vec<KeyChange>,
    /// The config replaced last and the keys changed since it was built.
    /// Once no reader holds it, the next update patches it into the new
    /// config instead of building one whole (double buffering).
    retired: Option<(Arc<Snapshot<T>>, Vec<String>)>,
    /// The last rejection logged, when, and how many identical ones since.
    warned: Option<(String, std::time::Instant, u64)>,
}

/// An identical rejection is logged again at most this often.
const REPEAT_WARNING: std::time::Duration = std::time::Duration::from_secs(30);

impl<T: EtcdConfig> LiveSink<T> {
    fn is_secret(&self, key: &str) -> bool {
        self.shared
            .dependencies
            .iter()
            .any(|d| d.secret && d.covers(key))
    }

    /// Rebuilds from the key copy; publishes the new config or the rejection.
    fn rebuild(&mut self, tree: &Tree, revision: i64, mut keys: Vec<KeyChange>) {
        if !self.pending.is_empty() {
            self.pending.append(&mut keys);
            keys = coalesce(std::mem::take(&mut self.pending));
        }
        let changed: Vec<String> = keys.iter().map(|k| k.key.clone()).collect();
        // A panicking validator (or FromValue) rejects the update; it must
        // not end the watch task that serves every config of the client.
        let build = std::panic::AssertUnwindSafe(|| self.next_value(tree, revision, &changed));
        let (next, patched) = std::panic::catch_unwind(build).unwrap_or_else(|panic| {
            // A message could quote a secret value: kept out if any key is.
            let secret = self.shared.dependencies.iter().any(|d| d.secret);
            let reason = match secret {
                false => format!("building the config panicked: {}", panic_text(&*panic)),
                true => {
                    "building the config panicked (message withheld: the config has secret keys)"
                        .to_owned()
                }
            };
            let problem = crate::error::Problem {
                key: self.shared.prefix.clone(),
                kind: crate::error::ProblemKind::Rejected { reason },
            };
            (Err(crate::ConfigError::new(revision, vec![problem])), false)
        });
        let shared = &*self.shared;
        let now = SystemTime::now();
        let event = match next {
            Ok(value) => {
                let snapshot = Arc::new(Snapshot { value, revision });
                {
                    // Swapped under the status lock: whoever sees the new
                    // value and then asks for the status finds it counted.
                    let mut status = lock(&shared.status);
                    self.retired = Some((shared.swap_in(snapshot.clone()), changed));
                    status.patched_updates += u64::from(patched);
                    status.revision = revision;
                    status.applied_revision = status.applied_revision.max(revision);
                    status.last_event = Some(now);
                    status.last_error = None;
                    status.accepted_updates += 1;
                }
                crate::telemetry::accepted(&shared.prefix, revision, patched);
                crate::telemetry::applied(&shared.prefix, revision, now);
                // The file is refreshed before anyone is told of the change.
                if let Some((path, secrets)) = &self.snapshot {
                    let deps = &shared.dependencies;
                    save_snapshot(path, &shared.prefix, revision, tree, deps, *secrets);
                }
                shared.notify.send_replace(snapshot);
                Event::Changed(Change { revision, keys })
            }
            Err(error) => {
                self.pending = keys;
                warn_rejected(&mut self.warned, &shared.prefix, revision, &error);
                {
                    let mut status = lock(&shared.status);
                    status.applied_revision = status.applied_revision.max(revision);
                    status.last_event = Some(now);
                    status.last_error = Some(error.clone());
                    status.rejected_updates += 1;
                }
                crate::telemetry::rejected(&shared.prefix, revision);
                crate::telemetry::applied(&shared.prefix, revision, now);
                Event::Rejected(error)
            }
        };
        self.publish(event);
        // Last: once wait_for_revision returns, the change has been announced.
        self.shared.applied.send_if_modified(|r| raise(r, revision));
    }

    /// The config for the keys in `tree`: the retired config patched with
    /// the keys changed since, when no reader holds it any more, else built
    /// whole. Also says whether it was patched.
    fn next_value(
        &mut self,
        tree: &Tree,
        revision: i64,
        changed: &[String],
    ) -> (std::result::Result<T, crate::ConfigError>, bool) {
        let prefix = &self.shared.prefix;
        if let Some((retired, mut since)) = self.retired.take() {
            if let Ok(retired) = Arc::try_unwrap(retired) {
                since.extend_from_slice(changed);
                let mut value = retired.value;
                if patch(&mut value, tree, prefix, &Changed::new(since)) {
                    return (Ok(value), true);
                }
            }
        }
        (build::<T>(tree, prefix, revision), false)
    }

    /// Runs the callbacks, then tells subscribers.
    fn publish(&self, event: Event) {
        let shared = &*self.shared;
        let current = shared.current.load();
        for callback in lock(&shared.callbacks).iter() {
            let run = std::panic::AssertUnwindSafe(|| callback(&event, &current));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!(prefix = %shared.prefix, "an on_event callback panicked; the watch goes on");
            }
        }
        let _ = shared.events.send(event);
    }
}

impl<T: EtcdConfig> Sink for LiveSink<T> {
    fn dependencies(&self) -> &[Dependency] {
        &self.shared.dependencies
    }

    fn apply(&mut self, revision: i64, changes: Vec<RawChange>) {
        let shared = self.shared.clone();
        let mut tree = lock(&shared.tree);
        let mut keys = Vec::new();
        for change in changes {
            if !self
                .shared
                .dependencies
                .iter()
                .any(|d| d.covers(&change.key))
            {
                continue;
            }
            let secret = self.is_secret(&change.key);
            let old = match &change.value {
                Some(value) => tree.insert(change.key.clone(), value.clone(), change.mod_revision),
                None => tree.remove(&change.key),
            };
            keys.push(KeyChange::new(
                &change.key,
                old.as_ref().map(|e| &*e.value),
                change.value.as_deref(),
                secret,
            ));
        }
        if keys.is_empty() {
            drop(tree);
            self.progress(revision);
        } else {
            self.rebuild(&tree, revision, keys);
        }
    }

    fn replace(&mut self, tree: Tree, revision: i64, from: i64) {
        {
            let mut status = lock(&self.shared.status);
            if status.synced {
                crate::telemetry::resynced(&self.shared.prefix);
            }
            status.resyncs += u64::from(status.synced);
            status.synced = true;
        }
        self.publish(Event::Resynced { from, revision });
        let shared = self.shared.clone();
        let mut current = lock(&shared.tree);
        let mut keys = Vec::new();
        for (key, old) in current.iter() {
            if tree.get(key).is_none() {
                let secret = self.is_secret(key);
                keys.push(KeyChange::new(key, Some(&old.value), None, secret));
            }
        }
        for (key, new) in tree.iter() {
            let old = current.get(key).map(|e| &*e.value);
            if old != Some(&*new.value) {
                let secret = self.is_secret(key);
                keys.push(KeyChange::new(key, old, Some(&new.value), secret));
            }
        }
        *current = tree;
        self.rebuild(&current, revision, keys);
    }

    fn progress(&mut self, revision: i64) {
        let now = SystemTime::now();
        lock(&self.shared.status).last_event = Some(now);
        self.shared.confirm(revision);
        crate::telemetry::applied(&self.shared.prefix, revision, now);
    }

    fn alive(&mut self, at: SystemTime) {
        let mut status = lock(&self.shared.status);
        status.last_event = status.last_event.max(Some(at));
        crate::telemetry::alive(&self.shared.prefix, status.last_event.unwrap_or(at));
    }

    fn connection(&mut self, state: Connection) {
        let mut status = lock(&self.shared.status);
        match state {
            Connection::Up(member) => {
                status.member = Some(member);
                status.connection_error = None;
                crate::telemetry::connection(&self.shared.prefix, true, false);
            }
            Connection::Down(error) => {
                status.member = None;
                status.connection_error = Some(error);
                status.reconnects += 1;
                crate::telemetry::connection(&self.shared.prefix, false, true);
            }
            Connection::Refused(error) => {
                status.member = None;
                status.connection_error = Some(error);
                crate::telemetry::connection(&self.shared.prefix, false, false);
            }
        }
    }

    fn is_closed(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

/// One change per key, from its first old value to its last new value, in
/// the order keys first changed; keys that ended where they started drop out.
fn coalesce(changes: Vec<KeyChange>) -> Vec<KeyChange> {
    let mut out: Vec<KeyChange> = Vec::with_capacity(changes.len());
    let mut index = std::collections::HashMap::new();
    for change in changes {
        match index.get(&change.key) {
            Some(&i) => {
                let merged: &mut KeyChange = &mut out[i];
                merged.new = change.new;
            }
            None => {
                index.insert(change.key.clone(), out.len());
                out.push(change);
            }
        }
    }
    out.retain(|c| c.old != c.new || c.old.as_deref() == Some(crate::event::REDACTED));
    out
}

/// Logs a rejection, unless the same problems were logged less than
/// [`REPEAT_WARNING`] ago (a config that stays invalid under a stream of
/// updates would otherwise fill the log); those are counted, and the count
/// is logged with the next one.
fn warn_rejected(
    warned: &mut Option<(String, std::time::Instant, u64)>,
    prefix: &str,
    revision: i64,
    error: &crate::ConfigError,
) {
    let text = error.to_string();
    let now = std::time::Instant::now();
    let repeated = match warned {
        Some((last, at, count)) if *last == text && now - *at < REPEAT_WARNING => {
            *count += 1;
            return;
        }
        Some((_, _, count)) => *count,
        None => 0,
    };
    tracing::warn!(
        prefix,
        revision,
        %error,
        repeated,
        "rejected a config update; the last good config keeps serving"
    );
    *warned = Some((text, now, 0));
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Raises a revision watermark; reports whether it moved.
fn raise(current: &mut i64, revision: i64) -> bool {
    let moved = revision > *current;
    *current = (*current).max(revision);
    moved
}
