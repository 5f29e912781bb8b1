//! One watch stream per client, shared by every live config: each config is
//! one watch (one covering key range) on it. The hub applies each watch
//! response to its config's sink, resumes from the last applied revision after
//! a broken stream, and re-reads everything when that revision was compacted.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchRequestSender, WatchResponse};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::auth::Auth;

use crate::config::Dependency;
use crate::load;
use crate::tree::Tree;

/// One key's new state from a watch event: `None` when it was deleted.
pub(crate) struct RawChange {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub mod_revision: i64,
}

/// The receiving end of one watch: a live config's state.
pub(crate) trait Sink: Send + Sync + 'static {
    /// The keys and prefixes this sink reads.
    fn dependencies(&self) -> &[Dependency];
    /// The key changes of one watch response, all at once.
    fn apply(&mut self, revision: i64, changes: Vec<RawChange>);
    /// Everything as re-read at `revision`, after the history from `from`
    /// on was compacted away.
    fn replace(&mut self, tree: Tree, revision: i64, from: i64);
    /// etcd reports no change in this sink's range up to `revision`.
    fn progress(&mut self, revision: i64);
    /// etcd answered on the stream: the config is not stale.
    fn alive(&mut self);
    /// The stream broke, or works again through a member.
    fn connection(&mut self, state: Connection);
    /// Every handle is gone: the watch can be cancelled.
    fn is_closed(&self) -> bool;
}

/// The state of the watch stream, as sinks are told it.
pub(crate) enum Connection {
    /// Served by this member (its client URL, or its id when unknown).
    Up(String),
    /// Broken, with the reason; reconnecting.
    Down(String),
}

pub(crate) enum Command {
    /// Watch for a sink, from this revision on.
    Register(Box<dyn Sink>, i64),
}

/// Starts the hub task; it ends when every sender is dropped.
pub(crate) fn spawn(
    etcd: etcd_client::Client,
    stall_timeout: Duration,
    auth: Arc<Auth>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, cmds) = mpsc::unbounded_channel();
    let hub = Hub {
        etcd,
        cmds,
        watches: BTreeMap::new(),
        next_id: 1,
        stall_timeout,
        auth,
    };
    tokio::spawn(hub.run());
    tx
}

struct Watch {
    start: Vec<u8>,
    end: Vec<u8>,
    /// The first revision not yet applied: where a new stream resumes.
    next: i64,
    sink: Box<dyn Sink>,
}

struct Hub {
    etcd: etcd_client::Client,
    cmds: mpsc::UnboundedReceiver<Command>,
    watches: BTreeMap<i64, Watch>,
    next_id: i64,
    /// A stream silent for this long (progress requests unanswered) is broken.
    stall_timeout: Duration,
    auth: Arc<Auth>,
}

enum Stop {
    /// Every client handle is gone.
    Done,
    /// The stream failed; reconnect.
    Broken(String),
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Hub {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.watches.is_empty() {
                match self.cmds.recv().await {
                    Some(cmd) => {
                        self.add(cmd);
                    }
                    None => return,
                }
                continue;
            }
            let error = match self.serve(&mut backoff).await {
                Stop::Done => return,
                Stop::Broken(error) => error,
            };
            tracing::warn!(%error, retry_in = ?backoff, "etcd watch stream broke; resuming from the last applied revision");
            for watch in self.watches.values_mut() {
                watch.sink.connection(Connection::Down(error.clone()));
            }
            let sleep = tokio::time::sleep(jitter(backoff));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    cmd = self.cmds.recv() => match cmd {
                        Some(cmd) => {
                            self.add(cmd);
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Adds a watch.
    fn add(&mut self, command: Command) {
        let Command::Register(sink, next) = command;
        let (start, end) = load::covering_range(sink.dependencies());
        let id = self.next_id;
        self.next_id += 1;
        self.watches.insert(
            id,
            Watch {
                start,
                end,
                next,
                sink,
            },
        );
    }

    fn options(id: i64, watch: &Watch) -> WatchOptions {
        WatchOptions::new()
            .with_range(watch.end.clone())
            .with_start_revision(watch.next)
            .with_watch_id(id)
            .with_progress_notify()
    }

    /// Reads every key of the watches that started without etcd (`next` 0),
    /// so they can watch from the revision after.
    async fn catch_up(&mut self) -> Result<(), String> {
        self.watches.retain(|_, w| !w.sink.is_closed());
        for watch in self.watches.values_mut().filter(|w| w.next == 0) {
            let (tree, revision) = load::read(&self.etcd, watch.sink.dependencies(), None)
                .await
                .map_err(|e| e.to_string())?;
            watch.sink.replace(tree, revision, 0);
            watch.next = revision + 1;
        }
        Ok(())
    }

    /// Runs one stream until it breaks or the hub is done.
    async fn serve(&mut self, backoff: &mut Duration) -> Stop {
        if let Err(error) = self.auth.ensure(&self.etcd).await {
            return Stop::Broken(format!("authentication failed: {error}"));
        }
        if let Err(error) = self.catch_up().await {
            return Stop::Broken(error);
        }
        let (&first_id, first) = self.watches.iter().next().expect("a watch to serve");
        let mut client = self
            .etcd
            .watch_client()
            .max_decoding_message_size(load::MAX_MESSAGE);
        let open = client.watch(first.start.clone(), Some(Self::options(first_id, first)));
        let (mut tx, mut rx) = match tokio::time::timeout(self.stall_timeout, open).await {
            Ok(Ok(stream)) => stream.split(),
            Ok(Err(e)) => return Stop::Broken(e.to_string()),
            Err(_) => return Stop::Broken("opening the watch stream timed out".to_owned()),
        };
        for (&id, watch) in self.watches.iter().skip(1) {
            if let Err(e) = tx
                .watch(watch.start.clone(), Some(Self::options(id, watch)))
                .await
            {
                return Stop::Broken(e.to_string());
            }
        }
        let members = self.members().await;
        let mut tick = tokio::time::interval(self.stall_timeout / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_message = tokio::time::Instant::now();
        let mut member = None;
        loop {
            let result = tokio::select! {
                biased;
                cmd = self.cmds.recv() => match cmd {
                    None => return Stop::Done,
                    Some(cmd) => {
                        self.add(cmd);
                        if let Err(error) = self.catch_up().await {
                            return Stop::Broken(error);
                        }
                        let (&id, watch) = self.watches.iter().next_back().expect("just added");
                        tx.watch(watch.start.clone(), Some(Self::options(id, watch)))
                            .await
                            .map_err(|e| e.to_string())
                    }
                },
                message = rx.message() => match message {
                    Ok(Some(response)) => {
                        last_message = tokio::time::Instant::now();
                        let from = response.header().map(|h| h.member_id());
                        if from.is_some() && from != member {
                            member = from;
                            *backoff = BACKOFF_MIN;
                            let id = from.unwrap_or_default();
                            let name = members.get(&id).cloned().unwrap_or_else(|| format!("member {id:x}"));
                            for watch in self.watches.values_mut() {
                                watch.sink.connection(Connection::Up(name.clone()));
                            }
                        }
                        self.dispatch(response, &mut tx).await
                    }
                    Ok(None) => Err("etcd closed the watch stream".to_owned()),
                    Err(e) => Err(e.to_string()),
                },
                _ = tick.tick() => {
                    let silent = last_message.elapsed();
                    if silent > self.stall_timeout {
                        Err(format!("the watch stream stalled: no answer from etcd for {silent:.1?}"))
                    } else {
                        match self.sweep(&mut tx).await {
                            Ok(()) => tx.request_progress().await.map_err(|e| e.to_string()),
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            if let Err(error) = result {
                return Stop::Broken(error);
            }
        }
    }

    /// Member ids and client URLs, to name the member serving the stream.
    async fn members(&mut self) -> std::collections::HashMap<u64, String> {
        let list = tokio::time::timeout(self.stall_timeout, self.etcd.member_list()).await;
        let Ok(Ok(list)) = list else {
            return Default::default();
        };
        list.members()
            .iter()
            .filter_map(|m| Some((m.id(), m.client_urls().first()?.clone())))
            .collect()
    }

    /// Cancels the watches whose handles are all gone.
    async fn sweep(&mut self, tx: &mut WatchRequestSender) -> Result<(), String> {
        let closed: Vec<i64> = self
            .watches
            .iter()
            .filter(|(_, w)| w.sink.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in closed {
            self.watches.remove(&id);
            tx.cancel(id).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn dispatch(
        &mut self,
        response: WatchResponse,
        tx: &mut WatchRequestSender,
    ) -> Result<(), String> {
        let id = response.watch_id();
        if id == -1 {
            // The answer to a progress request. etcd 3.4 sends it on a control
            // channel that can overtake queued events, so it proves the stream
            // is alive, but not that every event up to its revision arrived.
            for watch in self.watches.values_mut() {
                watch.sink.alive();
            }
            return Ok(());
        }
        let Some(watch) = self.watches.get_mut(&id) else {
            return Ok(());
        };
        if watch.sink.is_closed() {
            // Every handle is gone: nothing may act on its behalf any more.
            self.watches.remove(&id);
            return tx.cancel(id).await.map_err(|e| e.to_string());
        }
        if response.canceled() {
            if response.compact_revision() > 0 {
                return self.resync(id, response.compact_revision(), tx).await;
            }
            let reason = format!("etcd cancelled the watch: {}", response.cancel_reason());
            tracing::error!(%reason, "watch cancelled");
            watch.sink.connection(Connection::Down(reason));
            self.watches.remove(&id);
            return Ok(());
        }
        let events = response.events();
        if events.is_empty() {
            if !response.created() {
                let revision = response.header().map_or(0, |h| h.revision());
                watch.next = watch.next.max(revision + 1);
                watch.sink.progress(revision);
            }
            return Ok(());
        }
        let mut revision = 0;
        let mut changes = Vec::with_capacity(events.len());
        for event in events {
            let Some(kv) = event.kv() else { continue };
            revision = revision.max(kv.mod_revision());
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "skipping a key that is not UTF-8");
                continue;
            };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            changes.push(RawChange {
                key: key.to_owned(),
                value,
                mod_revision: kv.mod_revision(),
            });
        }
        watch.next = watch.next.max(revision + 1);
        watch.sink.apply(revision, changes);
        Ok(())
    }

    /// The history after `watch.next` is gone: re-read everything, apply the
    /// difference as one update, and watch again from there under a new id
    /// (etcd keeps a compacted watch's id taken until it is cancelled).
    async fn resync(
        &mut self,
        id: i64,
        compacted: i64,
        tx: &mut WatchRequestSender,
    ) -> Result<(), String> {
        let mut watch = self.watches.remove(&id).expect("resync of a known watch");
        tx.cancel(id).await.map_err(|e| e.to_string())?;
        tracing::warn!(
            from = watch.next,
            compacted,
            "watch history compacted; re-reading all keys"
        );
        let read = load::read(&self.etcd, watch.sink.dependencies(), None).await;
        let (tree, revision) = match read {
            Ok(read) => read,
            Err(e) => {
                // Keep the watch (still at its old revision) for the next stream.
                self.watches.insert(id, watch);
                return Err(e.to_string());
            }
        };
        watch.sink.replace(tree, revision, watch.next);
        watch.next = revision + 1;
        let id = self.next_id;
        self.next_id += 1;
        let created = tx
            .watch(watch.start.clone(), Some(Self::options(id, &watch)))
            .await;
        self.watches.insert(id, watch);
        created.map_err(|e| e.to_string())
    }
}

/// A delay between 50% and 100% of `d`, so clients do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(fraction)
}
