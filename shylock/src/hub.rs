//! One watch stream per client, shared by every live config: each config is
//! one watch (one covering key range) on it. The hub applies each watch
//! response to its config's sink, resumes from the last applied revision after
//! a broken stream, and re-reads everything when that revision was compacted.
//!
//! Watches are matched to etcd's replies the way etcd's own Go client does
//! it: creates are sent one at a time and each `created` reply belongs to the
//! oldest create not yet answered. etcd (and its gRPC proxy, which numbers
//! watches itself) chooses the watch ids; an event is routed only by an id
//! etcd gave in a `created` reply, never by an id the client guessed.
//!
//! A refused create says why. An expired token (etcd 3.4.22+ and 3.5.6+
//! answer `invalid auth token`; older 3.5 answer `permission denied`) is
//! renewed and the stream reopened, since a stream keeps the token it was
//! opened with. A refusal that persists with a fresh token is permanent.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchRequestSender, WatchResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    /// etcd answered, at `at`, on the stream that serves this sink's watch:
    /// the config was current then.
    fn alive(&mut self, at: std::time::SystemTime);
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
    /// etcd refused this watch for good (permission denied with a fresh
    /// token): the config no longer follows etcd.
    Refused(String),
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
        next_key: 0,
        stall_timeout,
        auth,
    };
    tokio::spawn(hub.run());
    tx
}

/// One config's watch, under the hub's own key for it.
struct Watch {
    start: Vec<u8>,
    end: Vec<u8>,
    /// The first revision not yet applied: where a new stream resumes.
    next: i64,
    sink: Box<dyn Sink>,
    /// The token generation of a stream that refused this watch with
    /// "permission denied", until a create succeeds.
    denied: Option<u64>,
}

struct Hub {
    etcd: etcd_client::Client,
    cmds: mpsc::UnboundedReceiver<Command>,
    watches: BTreeMap<u64, Watch>,
    next_key: u64,
    /// A stream silent for this long (probes unanswered) is broken.
    stall_timeout: Duration,
    auth: Arc<Auth>,
}

/// What one create on the stream is for.
enum Create {
    /// A config's watch, by the hub's key.
    Watch(u64),
    /// A watch made only to see etcd answer, then cancelled: the liveness
    /// probe where progress requests go unanswered (etcd's gRPC proxy).
    Probe { start: Vec<u8>, end: Vec<u8> },
}

/// One watch stream's bookkeeping.
struct Stream {
    tx: WatchRequestSender,
    /// Creates not answered yet, oldest first. Only the oldest has been
    /// sent: etcd answers creates in order, and each answer belongs to it.
    creates: VecDeque<Create>,
    /// etcd's watch id on this stream → the hub's key of the watch.
    ids: HashMap<i64, u64>,
    /// Ids cancelled (or to ignore) whose `canceled` reply has not come.
    cancelling: HashSet<i64>,
    /// The generation of the token the stream was opened with.
    token: u64,
    /// Whether etcd answered a progress request on this stream.
    progress_answered: bool,
    /// Whether a progress request went unanswered while nothing else came:
    /// the stream is served by something that ignores them (etcd's proxy).
    progress_ignored: bool,
    progress_asked: bool,
}

enum Stop {
    /// Every client handle is gone.
    Done,
    /// No watch is left: wait for the next one.
    Idle,
    /// The stream, opened with this token generation, failed; reconnect.
    Broken(Failure, u64),
}

/// Why a stream was given up.
enum Failure {
    /// Reconnect after the backoff.
    Retry(String),
    /// The stream's token no longer serves: renew it, then reconnect.
    Token(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Retry(text) | Failure::Token(text) => text,
        }
    }
}

type Flow = Result<(), Failure>;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How soon to reconnect: both reset once a stream has every watch running.
struct Retry {
    backoff: Duration,
    /// Token renewals since then: the first reconnects at once.
    renewals: u32,
}

impl Retry {
    fn new() -> Self {
        Retry {
            backoff: BACKOFF_MIN,
            renewals: 0,
        }
    }
}

/// etcd's cancel reasons for a token that expired or predates an auth change
/// (`rpctypes.ErrGRPCInvalidAuthToken`, `ErrGRPCAuthOldRevision`).
fn is_token_refusal(reason: &str) -> bool {
    reason.contains("invalid auth token") || reason.contains("revision of auth store is old")
}

fn is_permission_refusal(reason: &str) -> bool {
    reason.contains("permission denied")
}

fn failed(error: etcd_client::Error) -> Failure {
    Failure::Retry(error.to_string())
}

impl Hub {
    async fn run(mut self) {
        let mut retry = Retry::new();
        loop {
            self.watches.retain(|_, w| !w.sink.is_closed());
            if self.watches.is_empty() {
                match self.cmds.recv().await {
                    Some(cmd) => _ = self.add(cmd),
                    None => return,
                }
                continue;
            }
            let (failure, token) = match self.serve(&mut retry).await {
                Stop::Done => return,
                Stop::Idle => continue,
                Stop::Broken(failure, token) => (failure, token),
            };
            let mut delay = jitter(retry.backoff);
            let mut error = failure.text().to_owned();
            if let Failure::Token(_) = failure {
                // The first renewal reconnects at once; a token refused again
                // right after one is retried with the backoff.
                retry.renewals += 1;
                if retry.renewals == 1 {
                    delay = Duration::ZERO;
                }
                if let Err(e) = self.auth.renew(&self.etcd, token).await {
                    error = format!("{error}; renewing the token failed: {e}");
                    delay = jitter(retry.backoff);
                }
            }
            tracing::warn!(%error, retry_in = ?delay, "etcd watch stream broke; resuming from the last applied revision");
            for watch in self.watches.values_mut() {
                watch.sink.connection(Connection::Down(error.clone()));
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    cmd = self.cmds.recv() => match cmd {
                        Some(cmd) => _ = self.add(cmd),
                        None => return,
                    },
                }
            }
            if delay > Duration::ZERO {
                retry.backoff = (retry.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Adds a watch; returns its key.
    fn add(&mut self, command: Command) -> u64 {
        let Command::Register(sink, next) = command;
        let (start, end) = load::covering_range(sink.dependencies());
        let key = self.next_key;
        self.next_key += 1;
        self.watches.insert(
            key,
            Watch {
                start,
                end,
                next,
                sink,
                denied: None,
            },
        );
        key
    }

    /// The create request of a watch or probe.
    fn request(&self, create: &Create) -> Option<(Vec<u8>, WatchOptions)> {
        match create {
            Create::Watch(key) => {
                let watch = self.watches.get(key)?;
                let options = WatchOptions::new()
                    .with_range(watch.end.clone())
                    .with_start_revision(watch.next)
                    .with_progress_notify();
                Some((watch.start.clone(), options))
            }
            Create::Probe { start, end } => {
                Some((start.clone(), WatchOptions::new().with_range(end.clone())))
            }
        }
    }

    /// Reads every key of the watches that started without etcd (`next` 0),
    /// so they can watch from the revision after.
    async fn catch_up(&mut self) -> Result<(), String> {
        for watch in self.watches.values_mut().filter(|w| w.next == 0) {
            let (tree, revision) = load::read(&self.etcd, watch.sink.dependencies(), None)
                .await
                .map_err(|e| e.to_string())?;
            watch.sink.replace(tree, revision, 0);
            watch.next = revision + 1;
        }
        Ok(())
    }

    /// Runs one stream until it breaks, no watch is left, or the hub is done.
    async fn serve(&mut self, retry: &mut Retry) -> Stop {
        let token = match self.auth.ensure(&self.etcd).await {
            Ok(token) => token,
            Err(error) => {
                let error = format!("authentication failed: {error}");
                return Stop::Broken(Failure::Retry(error), 0);
            }
        };
        let broken = |failure| Stop::Broken(failure, token);
        if let Err(error) = self.catch_up().await {
            return broken(Failure::Retry(error));
        }
        let creates: VecDeque<Create> = self.watches.keys().map(|&k| Create::Watch(k)).collect();
        // etcd-client opens a stream with its first create.
        let Some((key, options)) = creates.front().and_then(|c| self.request(c)) else {
            return Stop::Idle;
        };
        let mut client = self
            .etcd
            .watch_client()
            .max_decoding_message_size(load::MAX_MESSAGE);
        let open = client.watch(key, Some(options));
        let (tx, mut rx) = match tokio::time::timeout(self.stall_timeout, open).await {
            Ok(Ok(stream)) => stream.split(),
            Ok(Err(e)) => return broken(failed(e)),
            Err(_) => {
                let error = "opening the watch stream timed out".to_owned();
                return broken(Failure::Retry(error));
            }
        };
        let mut stream = Stream {
            tx,
            creates,
            ids: HashMap::new(),
            cancelling: HashSet::new(),
            token,
            progress_answered: false,
            progress_ignored: false,
            progress_asked: false,
        };
        let mut members = self.members(self.stall_timeout).await;
        // A zero period would make the interval panic.
        let period = (self.stall_timeout / 3).max(Duration::from_millis(1));
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_message = Instant::now();
        let mut last_tick = Instant::now();
        let mut member = None;
        loop {
            let flow = tokio::select! {
                biased;
                cmd = self.cmds.recv() => match cmd {
                    None => return Stop::Done,
                    Some(cmd) => {
                        let key = self.add(cmd);
                        match self.catch_up().await {
                            Ok(()) => self.queue(&mut stream, Create::Watch(key)).await,
                            Err(error) => Err(Failure::Retry(error)),
                        }
                    }
                },
                message = rx.message() => match message {
                    Ok(Some(response)) => {
                        last_message = Instant::now();
                        let from = response.header().map(|h| h.member_id());
                        if from.is_some() && from != member {
                            member = from;
                            let id = from.unwrap_or_default();
                            // A member the list read at the stream's start
                            // did not name (that read failed, or the member
                            // is new): read the list again.
                            if !members.contains_key(&id) {
                                // Briefly: the changes wait meanwhile.
                                let limit = self.stall_timeout.min(Duration::from_secs(1));
                                members = self.members(limit).await;
                            }
                            let name = members.get(&id).cloned().unwrap_or_else(|| format!("member {id:x}"));
                            for watch in self.watches.values_mut() {
                                watch.sink.connection(Connection::Up(name.clone()));
                            }
                        }
                        let flow = self.dispatch(response, &mut stream).await;
                        if flow.is_ok() && stream.creates.is_empty() && !stream.ids.is_empty() {
                            // Every watch is established: this stream works.
                            *retry = Retry::new();
                        }
                        flow
                    }
                    Ok(None) => Err(Failure::Retry("etcd closed the watch stream".to_owned())),
                    Err(e) => Err(failed(e)),
                },
                _ = tick.tick() => {
                    if last_message > last_tick {
                        self.alive(&stream, last_message);
                    }
                    last_tick = Instant::now();
                    self.on_tick(&mut stream, last_message.elapsed()).await
                }
            };
            if let Err(failure) = flow {
                return broken(failure);
            }
            if self.watches.is_empty() {
                // Dropping the stream cancels whatever etcd still runs on it.
                return Stop::Idle;
            }
        }
    }

    /// The periodic check: closed watches are cancelled, a silent stream is
    /// probed, and a stream silent past the stall timeout is given up.
    async fn on_tick(&mut self, stream: &mut Stream, silent: Duration) -> Flow {
        if silent > self.stall_timeout {
            return Err(Failure::Retry(format!(
                "the watch stream stalled: no answer from etcd for {silent:.1?}"
            )));
        }
        self.sweep(stream).await?;
        if silent < self.stall_timeout / 3 {
            return Ok(());
        }
        let long = silent >= self.stall_timeout * 2 / 3;
        if long && stream.progress_asked && !stream.progress_answered {
            // Never answered: etcd's gRPC proxy ignores progress requests
            // (and logs each one), so this stream gets probes instead.
            stream.progress_ignored = true;
        }
        if !stream.progress_ignored {
            stream.progress_asked = true;
            stream.tx.request_progress().await.map_err(failed)?;
        }
        if (long || stream.progress_ignored) && stream.creates.is_empty() {
            // A create is always answered; the answer to an earlier one,
            // still awaited, serves as well.
            let Some(watch) = stream.ids.values().find_map(|k| self.watches.get(k)) else {
                return Ok(());
            };
            let probe = Create::Probe {
                start: watch.start.clone(),
                end: watch.end.clone(),
            };
            self.queue(stream, probe).await?;
        }
        Ok(())
    }

    /// Tells the sinks of every established watch that etcd answered at `at`.
    fn alive(&mut self, stream: &Stream, at: Instant) {
        let at = std::time::SystemTime::now() - at.elapsed();
        for key in stream.ids.values() {
            if let Some(watch) = self.watches.get_mut(key) {
                watch.sink.alive(at);
            }
        }
    }

    /// Queues a create; sends it at once if no other create awaits its answer.
    async fn queue(&mut self, stream: &mut Stream, create: Create) -> Flow {
        stream.creates.push_back(create);
        if stream.creates.len() == 1 {
            self.send_head(stream).await?;
        }
        Ok(())
    }

    /// Sends the oldest queued create, dropping those whose watch is gone.
    async fn send_head(&mut self, stream: &mut Stream) -> Flow {
        while let Some(create) = stream.creates.front() {
            if let Some((key, options)) = self.request(create) {
                return stream.tx.watch(key, Some(options)).await.map_err(failed);
            }
            stream.creates.pop_front();
        }
        Ok(())
    }

    /// Member ids and client URLs, to name the member serving the stream.
    /// A list the balancer sent to a member it could not connect to was
    /// never sent: it is asked again (a failure after that leaves the
    /// members unnamed, shown by id).
    async fn members(&mut self, limit: Duration) -> HashMap<u64, String> {
        let etcd = &mut self.etcd;
        let list = tokio::time::timeout(limit, async {
            let mut delay = Duration::from_millis(5);
            loop {
                match etcd.member_list().await {
                    Err(error) if crate::client::never_sent(&error) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_millis(200));
                    }
                    other => return other,
                }
            }
        })
        .await;
        let Ok(Ok(list)) = list else {
            return Default::default();
        };
        list.members()
            .iter()
            .filter_map(|m| Some((m.id(), m.client_urls().first()?.clone())))
            .collect()
    }

    /// Cancels the watches whose handles are all gone.
    async fn sweep(&mut self, stream: &mut Stream) -> Flow {
        let closed: Vec<u64> = self
            .watches
            .iter()
            .filter(|(_, w)| w.sink.is_closed())
            .map(|(&k, _)| k)
            .collect();
        if closed.is_empty() {
            return Ok(());
        }
        for key in &closed {
            self.watches.remove(key);
        }
        // A create in flight keeps its place: its answer is still to come,
        // and the watch it makes is cancelled then.
        let mut first = true;
        stream.creates.retain(|c| {
            let keep = first || !matches!(c, Create::Watch(k) if closed.contains(k));
            first = false;
            keep
        });
        let ids: Vec<i64> = stream
            .ids
            .iter()
            .filter(|(_, k)| closed.contains(k))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            stream.ids.remove(&id);
            cancel(stream, id).await?;
        }
        Ok(())
    }

    async fn dispatch(&mut self, response: WatchResponse, stream: &mut Stream) -> Flow {
        tracing::trace!(
            id = response.watch_id(),
            created = response.created(),
            canceled = response.canceled(),
            compacted = response.compact_revision(),
            events = response.events().len(),
            revision = response.header().map_or(0, |h| h.revision()),
            "watch response"
        );
        if response.created() {
            return self.created(response, stream).await;
        }
        let id = response.watch_id();
        if id == -1 {
            // The answer to a progress request. etcd 3.4 sends it on a control
            // channel that can overtake queued events, so it proves the stream
            // is alive, but not that every event up to its revision arrived.
            stream.progress_answered = true;
            self.alive(stream, Instant::now());
            return Ok(());
        }
        let Some(&key) = stream.ids.get(&id) else {
            // A probe's, or a cancelled watch's last words; anything else
            // is cancelled once.
            if response.canceled() {
                stream.cancelling.remove(&id);
            } else if stream.cancelling.insert(id) {
                stream.tx.cancel(id).await.map_err(failed)?;
            }
            return Ok(());
        };
        let Some(watch) = self.watches.get_mut(&key).filter(|w| !w.sink.is_closed()) else {
            // Every handle is gone: nothing may act on its behalf any more.
            self.watches.remove(&key);
            stream.ids.remove(&id);
            return cancel(stream, id).await;
        };
        if response.canceled() {
            stream.ids.remove(&id);
            if response.compact_revision() > 0 {
                // Cancelled all the same, as etcd's Go client does: etcd 3.4
                // keeps the id taken, and etcd's gRPC proxy keeps the watcher
                // in its upstream watch, which died with the compaction; a
                // new watch of the same range would join it and hear nothing.
                cancel(stream, id).await?;
                return self.resync(key, response.compact_revision(), stream).await;
            }
            let reason = format!("etcd cancelled the watch: {}", response.cancel_reason());
            if is_token_refusal(&reason) {
                return Err(Failure::Token(reason));
            }
            // A new stream resumes the watch where it was.
            return Err(Failure::Retry(reason));
        }
        let events = response.events();
        if events.is_empty() {
            let revision = response.header().map_or(0, |h| h.revision());
            watch.next = watch.next.max(revision + 1);
            watch.sink.progress(revision);
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

    /// The answer to the oldest create: the watch is established under the
    /// id etcd gave, or refused with a reason.
    async fn created(&mut self, response: WatchResponse, stream: &mut Stream) -> Flow {
        let Some(create) = stream.creates.pop_front() else {
            tracing::warn!(
                id = response.watch_id(),
                "etcd confirmed a watch nobody asked for"
            );
            return Ok(());
        };
        let refused = response.canceled() || response.watch_id() == -1;
        match (create, refused) {
            (Create::Watch(key), true) => self.refused(key, response.cancel_reason(), stream)?,
            (Create::Probe { .. }, true) => {
                // A probe watches a range a config was allowed to watch: a
                // refusal means the stream's token no longer serves.
                let reason = format!("etcd refused a watch: {}", response.cancel_reason());
                return Err(Failure::Token(reason));
            }
            (Create::Watch(key), false) => {
                let id = response.watch_id();
                match self.watches.get_mut(&key).filter(|w| !w.sink.is_closed()) {
                    Some(watch) => {
                        watch.denied = None;
                        stream.ids.insert(id, key);
                    }
                    None => {
                        self.watches.remove(&key);
                        cancel(stream, id).await?;
                    }
                }
            }
            (Create::Probe { .. }, false) => {
                self.alive(stream, Instant::now());
                cancel(stream, response.watch_id()).await?;
            }
        }
        self.send_head(stream).await
    }

    /// A create refused by etcd. An expired token is renewed; "permission
    /// denied" is taken for an expired token once (etcd 3.5 before 3.5.6
    /// says so for both), and for good when a fresh token gets it again.
    fn refused(&mut self, key: u64, reason: &str, stream: &Stream) -> Flow {
        let reason = format!("etcd refused the watch: {reason}");
        if is_token_refusal(&reason) {
            return Err(Failure::Token(reason));
        }
        let Some(watch) = self.watches.get_mut(&key) else {
            return Ok(());
        };
        if !is_permission_refusal(&reason) {
            return Err(Failure::Retry(reason));
        }
        let renewed_since = watch.denied.is_some_and(|g| g < stream.token);
        if self.auth.has_user() && !renewed_since {
            watch.denied = Some(stream.token);
            return Err(Failure::Token(reason));
        }
        let range = format!(
            "{}..{}",
            String::from_utf8_lossy(&watch.start),
            String::from_utf8_lossy(&watch.end)
        );
        let reason = format!("{reason} (the range {range}; grant the user read access to it)");
        tracing::error!(%reason, "watch refused for good; the config will not follow etcd");
        watch.sink.connection(Connection::Refused(reason));
        self.watches.remove(&key);
        Ok(())
    }

    /// The history after the watch's `next` is gone: re-read everything,
    /// apply the difference as one update, and watch again from there.
    async fn resync(&mut self, key: u64, compacted: i64, stream: &mut Stream) -> Flow {
        let Some(watch) = self.watches.get_mut(&key) else {
            return Ok(());
        };
        tracing::warn!(
            from = watch.next,
            compacted,
            "watch history compacted; re-reading all keys"
        );
        // On failure the watch keeps its old revision for the next stream.
        let (tree, revision) = load::read(&self.etcd, watch.sink.dependencies(), None)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        watch.sink.replace(tree, revision, watch.next);
        watch.next = revision + 1;
        self.queue(stream, Create::Watch(key)).await
    }
}

/// Asks etcd to cancel a watch; its `canceled` reply is then ignored.
async fn cancel(stream: &mut Stream, id: i64) -> Flow {
    stream.cancelling.insert(id);
    stream.tx.cancel(id).await.map_err(failed)
}

/// A delay between 50% and 100% of `d`, so clients do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(fraction)
}
