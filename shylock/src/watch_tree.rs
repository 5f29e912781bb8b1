//! Following every key under one or more prefixes as raw bytes, for
//! programs that need the keys themselves rather than a typed struct (the
//! `shylock` CLI's mount and file writer). Resume, resync and stall handling
//! are the hub's, as for typed configs: several prefixes are read at one
//! revision and followed by one watch, so a transaction that spans them
//! arrives as one change.

use std::sync::{Arc, Mutex};

use crate::client::Client;
use crate::config::{Dependency, DependencyKind};
use crate::error::Result;
use crate::hub::{Connection, RawChange, Sink};
use crate::tree::Tree;

/// What a [`Client::watch_tree`] handler is told, on the watch task.
#[derive(Debug)]
#[non_exhaustive]
pub enum TreeEvent<'a> {
    /// The keys of one watch response, all at once (`None`: deleted); only
    /// keys under the watched prefixes.
    Changed {
        /// The revision of the last change.
        revision: i64,
        /// Each changed key with its new value and revision.
        changes: &'a [(String, Option<Vec<u8>>, i64)],
    },
    /// Every key as read at `revision`: first, before any change, then
    /// again whenever everything was re-read (after a compaction). The
    /// handler replaces its copy with `tree`.
    Replaced {
        /// The revision of the read.
        revision: i64,
        /// Every key under the watched prefixes.
        tree: &'a Tree,
    },
    /// The watch stream broke (with the reason) or works again (`None`).
    Connection(Option<&'a str>),
    /// etcd answered, at this time, on the stream serving the watch (a
    /// change, a progress answer or a probe): the keys were current then.
    /// Comes every third of the stall timeout on a quiet stream.
    Alive(std::time::SystemTime),
}

/// Keeps a [`Client::watch_tree`] watch alive; dropping it ends the watch.
pub struct TreeWatch {
    _alive: Arc<()>,
    _client: Client,
}

type Handler = Box<dyn FnMut(TreeEvent<'_>) + Send>;

struct TreeSink {
    dependencies: Vec<Dependency>,
    handler: Mutex<Handler>,
    alive: std::sync::Weak<()>,
}

impl TreeSink {
    fn call(&self, event: TreeEvent<'_>) {
        let mut handler = self
            .handler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let run = std::panic::AssertUnwindSafe(|| handler(event));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("a watch_tree handler panicked; the watch goes on");
        }
    }
}

impl Sink for TreeSink {
    fn dependencies(&self) -> &[Dependency] {
        &self.dependencies
    }

    fn apply(&mut self, revision: i64, changes: Vec<RawChange>) {
        // One watch covers the span of every prefix: keep what they cover.
        let changes: Vec<(String, Option<Vec<u8>>, i64)> = changes
            .into_iter()
            .filter(|c| self.dependencies.iter().any(|d| d.covers(&c.key)))
            .map(|c| (c.key, c.value, c.mod_revision))
            .collect();
        if changes.is_empty() {
            return;
        }
        self.call(TreeEvent::Changed {
            revision,
            changes: &changes,
        });
    }

    fn replace(&mut self, tree: Tree, revision: i64, _from: i64) {
        self.call(TreeEvent::Replaced {
            revision,
            tree: &tree,
        });
    }

    fn progress(&mut self, _revision: i64) {
        self.call(TreeEvent::Alive(std::time::SystemTime::now()));
    }

    fn alive(&mut self, at: std::time::SystemTime) {
        self.call(TreeEvent::Alive(at));
    }

    fn connection(&mut self, state: Connection) {
        match state {
            Connection::Up(_) => self.call(TreeEvent::Connection(None)),
            Connection::Down(error) | Connection::Refused(error) => {
                self.call(TreeEvent::Connection(Some(&error)))
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.alive.strong_count() == 0
    }
}

impl Client {
    /// Reads every key under `prefix/` at one revision (within the startup
    /// timeout) and hands them to `handler` as [`TreeEvent::Replaced`], then
    /// calls it on the watch task for every later change, resync and
    /// connection change, in order: the handler's copy never misses a change
    /// made between the read and the watch. Returns the revision read. Keep
    /// the returned [`TreeWatch`] as long as the watch should run. `handler`
    /// must be quick; it must not block on the caller.
    pub async fn watch_tree(
        &self,
        prefix: &str,
        handler: impl FnMut(TreeEvent<'_>) + Send + 'static,
    ) -> Result<(i64, TreeWatch)> {
        self.watch_trees(&[prefix], false, handler).await
    }

    /// Like [`watch_tree`](Client::watch_tree), and the key `key` itself too
    /// (for a key that may hold a value, children, or both).
    pub async fn watch_key_and_tree(
        &self,
        key: &str,
        handler: impl FnMut(TreeEvent<'_>) + Send + 'static,
    ) -> Result<(i64, TreeWatch)> {
        self.watch_trees(&[key], true, handler).await
    }

    /// Like [`watch_tree`](Client::watch_tree) for several prefixes at once
    /// (each with its own key too when `with_keys`): read at one revision
    /// and followed by one watch over the span of them all, so a
    /// transaction touching several arrives as one [`TreeEvent::Changed`].
    /// A user must be allowed to watch that whole span.
    pub async fn watch_trees(
        &self,
        prefixes: &[&str],
        with_keys: bool,
        handler: impl FnMut(TreeEvent<'_>) + Send + 'static,
    ) -> Result<(i64, TreeWatch)> {
        let dependency = |key: String, kind| Dependency {
            key,
            kind,
            secret: false,
            required: false,
        };
        let mut dependencies = Vec::new();
        for prefix in prefixes {
            let base = prefix.trim_end_matches('/');
            dependencies.push(dependency(format!("{base}/"), DependencyKind::Prefix));
            if with_keys && !base.is_empty() {
                dependencies.push(dependency(base.to_owned(), DependencyKind::Key));
            }
        }
        let handler: Handler = Box::new(handler);
        let (tree, revision) = self.read(&dependencies).await?;
        let alive = Arc::new(());
        let mut sink = TreeSink {
            dependencies,
            handler: Mutex::new(handler),
            alive: Arc::downgrade(&alive),
        };
        // Before the watch exists, so nothing can overtake it.
        sink.replace(tree, revision, 0);
        self.register(Box::new(sink), revision + 1)?;
        let watch = TreeWatch {
            _alive: alive,
            _client: self.clone(),
        };
        Ok((revision, watch))
    }
}
