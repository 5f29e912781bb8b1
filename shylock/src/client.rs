//! The connection to etcd, shared by every live config of a process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::EtcdConfig;
use crate::error::{Error, Result};
use crate::hub::{self, Command, Sink};
use crate::live::{Live, Origin};
use crate::load;
use crate::startup::{ConfigOptions, Startup};

/// Largest gRPC response accepted: a big prefix is also read in pages.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    endpoints: Vec<String>,
    startup_timeout: Duration,
    stall_timeout: Duration,
}

impl ConnectOptions {
    /// Options for these endpoints (`http://host:2379` or `host:2379`), with a
    /// startup timeout of 5 seconds.
    pub fn new<E: Into<String>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        ConnectOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            startup_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// How long the watch stream may go without any answer from etcd (the
    /// client asks for a progress report every third of it) before it is
    /// taken as stalled and reopened. Default 30 seconds.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// How long the first read of a config may take before it fails with an
    /// error naming the endpoints.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

/// A connection to etcd and the one watch stream that keeps every config of
/// this client current. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    etcd: etcd_client::Client,
    options: ConnectOptions,
    hub: mpsc::UnboundedSender<Command>,
}

impl Client {
    /// Prepares a connection. It does not wait for etcd: the first
    /// [`config`](Client::config) call does, up to the startup timeout.
    pub async fn connect(options: ConnectOptions) -> Result<Client> {
        let connect = etcd_client::ConnectOptions::new()
            .with_connect_timeout(options.startup_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let etcd = etcd_client::Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| Error::Unreachable {
                endpoints: options.endpoints.join(", "),
                timeout: options.startup_timeout,
                cause: e.to_string(),
            })?;
        let hub = hub::spawn(etcd.clone(), options.stall_timeout);
        Ok(Client {
            inner: Arc::new(Inner { etcd, options, hub }),
        })
    }

    /// Reads config `T` from the keys under `prefix` at one revision, then
    /// keeps it current. Fails if etcd does not answer within the startup
    /// timeout, or if its values do not make a valid `T`.
    pub async fn config<T: EtcdConfig>(&self, prefix: &str) -> Result<Live<T>> {
        self.config_with(prefix, ConfigOptions::new()).await
    }

    /// Like [`config`](Client::config), with a startup policy of choice.
    ///
    /// ```no_run
    /// # async fn run(client: shylock::Client) -> shylock::Result<()> {
    /// # #[derive(shylock::EtcdConfig)] struct App { #[etcd(default = 80)] port: u16 }
    /// use shylock::{ConfigOptions, Startup};
    ///
    /// let snapshot = Startup::LastKnownGood("/var/lib/myapp/config.snapshot".into());
    /// let app = client
    ///     .config_with::<App>("/myapp", ConfigOptions::new().with_startup(snapshot))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn config_with<T: EtcdConfig>(
        &self,
        prefix: &str,
        options: ConfigOptions,
    ) -> Result<Live<T>> {
        let dependencies = T::dependencies(prefix);
        let mut attempt = 0u64;
        let mut last_log: Option<std::time::Instant> = None;
        let failure = loop {
            match self.read(&dependencies).await {
                Ok((tree, revision)) => {
                    let origin = Origin::Etcd;
                    return Live::start(
                        self.clone(),
                        prefix,
                        dependencies,
                        tree,
                        revision,
                        origin,
                        options,
                    );
                }
                Err(error @ Error::Unreachable { .. }) => {
                    if !matches!(options.startup, Startup::Wait) {
                        break error;
                    }
                    attempt += 1;
                    if last_log.map_or(true, |t| t.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(%error, attempt, prefix, "etcd is not answering yet; waiting");
                        last_log = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(other) => return Err(other),
            }
        };
        let (tree, revision, origin) = match &options.startup {
            Startup::Defaults => (crate::tree::Tree::default(), 0, Origin::Defaults),
            Startup::LastKnownGood(path) => match crate::snapshot::read(path, prefix) {
                Ok((tree, revision)) => (tree, revision, Origin::Snapshot),
                Err(snapshot) => {
                    return Err(Error::NoSnapshot {
                        etcd: Box::new(failure),
                        snapshot,
                    })
                }
            },
            _ => return Err(failure),
        };
        tracing::warn!(%failure, prefix, ?origin, "starting without etcd");
        Live::start(
            self.clone(),
            prefix,
            dependencies,
            tree,
            revision,
            origin,
            options,
        )
    }

    /// One read of every dependency, within the startup timeout.
    async fn read(
        &self,
        dependencies: &[crate::config::Dependency],
    ) -> Result<(crate::tree::Tree, i64)> {
        let mut kv = self
            .inner
            .etcd
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let timeout = self.inner.options.startup_timeout;
        tokio::time::timeout(timeout, load::read(&mut kv, dependencies, None))
            .await
            .map_err(|_| self.unreachable("timed out".to_owned()))?
            .map_err(|e| match e {
                Error::Etcd { source, .. } if is_connection_error(&source) => {
                    self.unreachable(source.to_string())
                }
                other => other,
            })
    }

    /// Like [`config`](Client::config), under the struct's
    /// `#[etcd(prefix = "...")]`.
    ///
    /// # Panics
    /// If `T` has no `prefix` attribute.
    pub async fn config_at_default_prefix<T: EtcdConfig>(&self) -> Result<Live<T>> {
        let prefix = T::PREFIX.expect("the config struct has no #[etcd(prefix = \"...\")]");
        self.config(prefix).await
    }

    /// The underlying etcd client, for writes and anything else.
    pub fn etcd(&self) -> etcd_client::Client {
        self.inner.etcd.clone()
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// Reads the keys of `dependencies` as etcd held them at `revision`.
    pub(crate) async fn read_at(
        &self,
        dependencies: &[crate::config::Dependency],
        revision: i64,
    ) -> Result<crate::tree::Tree> {
        let mut kv = self
            .inner
            .etcd
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        Ok(load::read(&mut kv, dependencies, Some(revision)).await?.0)
    }

    pub(crate) fn register(&self, sink: Box<dyn Sink>, next: i64) -> Result<()> {
        self.inner
            .hub
            .send(Command::Register(sink, next))
            .map_err(|_| Error::Closed)
    }

    fn unreachable(&self, cause: String) -> Error {
        Error::Unreachable {
            endpoints: self.inner.options.endpoints.join(", "),
            timeout: self.inner.options.startup_timeout,
            cause,
        }
    }
}

fn is_connection_error(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // gRPC codes Unknown (2), DeadlineExceeded (4) and Unavailable (14).
        etcd_client::Error::GRpcStatus(status) => matches!(status.code() as i32, 2 | 4 | 14),
        _ => false,
    }
}
