//! The connection to etcd, shared by every live config of a process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::config::EtcdConfig;
use crate::error::{Error, Result};
use crate::hub::{self, Command, Sink};
use crate::live::{Live, Origin};
use crate::load;
use crate::startup::{ConfigOptions, Startup};
use crate::tls::TlsFiles;

/// How to reach etcd. `Debug` output never shows the password.
#[derive(Clone)]
pub struct ConnectOptions {
    endpoints: Vec<String>,
    startup_timeout: Duration,
    stall_timeout: Duration,
    user: Option<(String, String)>,
    tls: Option<TlsFiles>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("endpoints", &self.endpoints)
            .field("startup_timeout", &self.startup_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Options for these endpoints (`http://host:2379` or `host:2379`), with a
    /// startup timeout of 5 seconds.
    pub fn new<E: Into<String>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        ConnectOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            startup_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
            user: None,
            tls: None,
        }
    }

    /// Options from etcdctl's environment variables: `ETCDCTL_ENDPOINTS`
    /// (comma-separated; default `http://127.0.0.1:2379`), `ETCDCTL_USER`
    /// (`name:password`, or `name` with `ETCDCTL_PASSWORD`),
    /// `ETCDCTL_CACERT`, `ETCDCTL_CERT` and `ETCDCTL_KEY` (PEM files for TLS)
    /// and `ETCDCTL_DIAL_TIMEOUT` (such as `5s`, the startup timeout).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let endpoints = var("ETCDCTL_ENDPOINTS").unwrap_or_else(|| "http://127.0.0.1:2379".into());
        let mut options = ConnectOptions::new(
            endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
        );
        if let Some(user) = var("ETCDCTL_USER") {
            let (name, password) = match user.split_once(':') {
                Some((name, password)) => (name.to_owned(), password.to_owned()),
                None => {
                    let password = var("ETCDCTL_PASSWORD").ok_or_else(|| Error::Option {
                        name: "ETCDCTL_USER".into(),
                        reason: "has no `:password` and ETCDCTL_PASSWORD is not set".into(),
                    })?;
                    (user, password)
                }
            };
            options = options.with_user(name, password);
        }
        let mut tls: Option<TlsFiles> = None;
        if let Some(ca) = var("ETCDCTL_CACERT") {
            tls.get_or_insert_with(TlsFiles::new).set_ca(ca.into());
        }
        if let Some(cert) = var("ETCDCTL_CERT") {
            tls.get_or_insert_with(TlsFiles::new).set_cert(cert.into());
        }
        if let Some(key) = var("ETCDCTL_KEY") {
            tls.get_or_insert_with(TlsFiles::new).set_key(key.into());
        }
        options.tls = tls;
        if let Some(timeout) = var("ETCDCTL_DIAL_TIMEOUT") {
            let timeout = humantime::parse_duration(timeout.trim()).map_err(|e| Error::Option {
                name: "ETCDCTL_DIAL_TIMEOUT".into(),
                reason: format!("{timeout:?} is not a duration such as 5s: {e}"),
            })?;
            options = options.with_startup_timeout(timeout);
        }
        Ok(options)
    }

    /// Connect with TLS (endpoints `https://...`), with these PEM files.
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Authenticate as this etcd user (etcd's RBAC). The token etcd hands
    /// out is renewed whenever it expires, without dropping the watch.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// How long the watch stream may go without any answer from etcd before
    /// it is taken as stalled and reopened. Whenever the stream has been
    /// silent for a third of it, the client asks etcd for a sign of life (a
    /// progress request, or where nothing answers those, such as etcd's
    /// gRPC proxy, a short-lived watch). Default 30 seconds.
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

    /// The etcd user requests are made as, if any (never the password).
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _)| name.as_str())
    }

    /// The client certificate presented to etcd, if any.
    pub fn client_cert(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().and_then(TlsFiles::cert)
    }

    /// The stall timeout (see [`with_stall_timeout`](Self::with_stall_timeout)).
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
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
    auth: Arc<Auth>,
}

impl Client {
    /// Prepares a connection. It does not wait for etcd: the first
    /// [`config`](Client::config) call does, up to the startup timeout.
    pub async fn connect(options: ConnectOptions) -> Result<Client> {
        // Credentials are given on first use (see `authenticate`), so that a
        // client can be made while etcd is down.
        let mut connect = etcd_client::ConnectOptions::new()
            .with_connect_timeout(options.startup_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_auto_token_refresh(true)
            // A member cut off from its quorum refuses requests and cancels
            // the watch stream (after about three election timeouts), so
            // the client moves to a member that has a leader instead of
            // silently waiting on one that cannot get new writes.
            .with_require_leader(true);
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls.load()?);
        }
        let etcd = etcd_client::Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| Error::Unreachable {
                endpoints: options.endpoints.join(", "),
                timeout: options.startup_timeout,
                cause: e.to_string(),
            })?;
        let auth = Arc::new(Auth::new(options.user.clone()));
        let hub = hub::spawn(etcd.clone(), options.stall_timeout, auth.clone());
        Ok(Client {
            inner: Arc::new(Inner {
                etcd,
                options,
                hub,
                auth,
            }),
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
        let (tree, revision, origin) = self.starting_point(&dependencies, prefix, &options).await?;
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

    /// The first keys of a config: etcd's, or per the startup policy the
    /// defaults' or the snapshot file's when etcd does not answer.
    async fn starting_point(
        &self,
        dependencies: &[crate::config::Dependency],
        prefix: &str,
        options: &ConfigOptions,
    ) -> Result<(crate::tree::Tree, i64, Origin)> {
        let mut attempt = 0u64;
        let mut last_log: Option<std::time::Instant> = None;
        let failure = loop {
            match self.read(dependencies).await {
                Ok((tree, revision)) => return Ok((tree, revision, Origin::Etcd)),
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
        let start = match &options.startup {
            Startup::Defaults => (crate::tree::Tree::default(), 0, Origin::Defaults),
            Startup::LastKnownGood(path) => match crate::snapshot::read(path, prefix) {
                Ok((tree, revision)) => (tree, revision, Origin::Snapshot),
                Err(snapshot) => {
                    let etcd = Box::new(failure);
                    return Err(Error::NoSnapshot { etcd, snapshot });
                }
            },
            _ => return Err(failure),
        };
        tracing::warn!(%failure, prefix, origin = ?start.2, "starting without etcd");
        Ok(start)
    }

    /// Authenticates once, if a user is set.
    async fn authenticate(&self) -> Result<()> {
        let auth = &self.inner.auth;
        auth.ensure(&self.inner.etcd)
            .await
            .map(drop)
            .map_err(|source| {
                if is_connection_error(&source) {
                    self.unreachable(source.to_string())
                } else {
                    Error::Etcd {
                        context: format!(
                            "authenticating as user {:?}",
                            auth.name().unwrap_or_default()
                        ),
                        source,
                    }
                }
            })
    }

    /// One read of every dependency, within the startup timeout.
    pub(crate) async fn read(
        &self,
        dependencies: &[crate::config::Dependency],
    ) -> Result<(crate::tree::Tree, i64)> {
        let timeout = self.inner.options.startup_timeout;
        tokio::time::timeout(timeout, self.authenticate())
            .await
            .map_err(|_| self.unreachable("timed out".to_owned()))??;
        let timeout = self.inner.options.startup_timeout;
        let read = self.unsent_retried(|etcd| async move {
            match load::read(&etcd, dependencies, None).await {
                Err(Error::Etcd { source, .. }) if never_sent(&source) => Err(Some(source)),
                other => Ok(other),
            }
        });
        match tokio::time::timeout(timeout, read).await {
            Err(_) | Ok(Err(None)) => Err(self.unreachable("timed out".to_owned())),
            Ok(Err(Some(source))) => Err(self.unreachable(source.to_string())),
            Ok(Ok(result)) => result.map_err(|e| match e {
                Error::Etcd { source, .. } if is_connection_error(&source) => {
                    self.unreachable(source.to_string())
                }
                other => other,
            }),
        }
    }

    /// Runs one etcd request, such as a put or a transaction: `call` gets
    /// the client (authenticated, if a user is set) and makes the request.
    /// A request refused at connect by one member was never sent, so it is
    /// made again (and the client's balancer tries another member) until
    /// the startup timeout: one member down does not fail it. Other errors
    /// are returned at once; none of etcd's connection errors is retried
    /// once a request may have reached etcd.
    ///
    /// ```no_run
    /// # async fn f(client: shylock::Client) -> shylock::Result<()> {
    /// let response = client
    ///     .request("put /app/port", |mut etcd| async move { etcd.put("/app/port", "8080", None).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn request<T, F, Fut>(&self, context: &str, mut call: F) -> Result<T>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let timeout = self.inner.options.startup_timeout;
        tokio::time::timeout(timeout, self.authenticate())
            .await
            .map_err(|_| self.unreachable("timed out".to_owned()))??;
        let attempts = self.unsent_retried(|etcd| {
            let call = call(etcd);
            async move {
                match call.await {
                    Err(source) if never_sent(&source) => Err(Some(source)),
                    other => Ok(other),
                }
            }
        });
        match tokio::time::timeout(timeout, attempts).await {
            Err(_) | Ok(Err(None)) => Err(self.unreachable("timed out".to_owned())),
            Ok(Err(Some(source))) => Err(self.unreachable(source.to_string())),
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(source))) if is_connection_error(&source) => {
                Err(self.unreachable(source.to_string()))
            }
            Ok(Ok(Err(source))) => Err(Error::Etcd {
                context: context.to_owned(),
                source,
            }),
        }
    }

    /// Calls `attempt` until it is not refused at connect (`Err(Some)`: the
    /// refusal, kept to report it), backing off from 5 ms to 200 ms. The
    /// caller bounds it with the startup timeout.
    async fn unsent_retried<T, F, Fut>(
        &self,
        mut attempt: F,
    ) -> std::result::Result<T, Option<etcd_client::Error>>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, Option<etcd_client::Error>>>,
    {
        let mut delay = Duration::from_millis(5);
        loop {
            match attempt(self.inner.etcd.clone()).await {
                Err(Some(refused)) => {
                    tracing::debug!(error = %refused, "a member refused the connection; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
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

    /// Whether the `held` keys of `dependencies`, current as of `since`,
    /// are still etcd's keys at `revision`.
    pub(crate) async fn unchanged_since(
        &self,
        dependencies: &[crate::config::Dependency],
        since: i64,
        held: usize,
        revision: i64,
    ) -> Result<bool> {
        load::unchanged_since(&self.inner.etcd, dependencies, since, held, revision).await
    }

    pub(crate) fn register(&self, sink: Box<dyn Sink>, next: i64) -> Result<()> {
        self.inner
            .hub
            .send(Command::Register(sink, next))
            .map_err(|_| Error::Closed)
    }

    fn unreachable(&self, mut cause: String) -> Error {
        if self.inner.options.tls.is_some() {
            cause.push_str(" (TLS: check the CA certificate, client certificate and key)");
        }
        Error::Unreachable {
            endpoints: self.inner.options.endpoints.join(", "),
            timeout: self.inner.options.startup_timeout,
            cause,
        }
    }
}

/// A request that failed before it was sent: no connection could be made
/// to the member the balancer chose (refused, unroutable, TLS handshake
/// failed). Repeating it cannot apply it twice.
pub(crate) fn never_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        // tonic reports a failed connect as UNAVAILABLE "tcp connect error"
        // (or "error trying to connect: ...").
        etcd_client::Error::GRpcStatus(status) => {
            status.code() as i32 == 14 && status.message().contains("connect")
        }
        _ => false,
    }
}

fn is_connection_error(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // gRPC codes Cancelled (1: the connection closed, as after a refused
        // TLS handshake), Unknown (2), DeadlineExceeded (4), Unavailable (14).
        etcd_client::Error::GRpcStatus(status) => matches!(status.code() as i32, 1 | 2 | 4 | 14),
        _ => false,
    }
}
