//! Lazy, renewable authentication. Credentials are given to etcd on first
//! use, so a client can be made while etcd is down. etcd-client renews the
//! token when a unary call is refused with an expired one; a watch stream
//! keeps the token it was opened with, so the hub renews it here when etcd
//! refuses a watch, and opens a new stream.

use tokio::sync::Mutex;

pub(crate) struct Auth {
    user: Option<(String, String)>,
    /// How many tokens this client obtained: 0 before the first.
    generation: Mutex<u64>,
}

impl Auth {
    pub(crate) fn new(user: Option<(String, String)>) -> Self {
        Auth {
            user,
            generation: Mutex::new(0),
        }
    }

    /// The user name, for error messages (never the password).
    pub(crate) fn name(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _)| name.as_str())
    }

    /// Authenticates once, if a user is set. Returns the generation of the
    /// token in use (0 without a user).
    pub(crate) async fn ensure(
        &self,
        etcd: &etcd_client::Client,
    ) -> Result<u64, etcd_client::Error> {
        let mut generation = self.generation.lock().await;
        if *generation == 0 {
            self.authenticate(etcd, &mut generation).await?;
        }
        Ok(*generation)
    }

    /// A new token, unless one newer than generation `stale` was obtained
    /// meanwhile. Returns the generation now in use.
    pub(crate) async fn renew(
        &self,
        etcd: &etcd_client::Client,
        stale: u64,
    ) -> Result<u64, etcd_client::Error> {
        let mut generation = self.generation.lock().await;
        if *generation <= stale {
            self.authenticate(etcd, &mut generation).await?;
        }
        Ok(*generation)
    }

    async fn authenticate(
        &self,
        etcd: &etcd_client::Client,
        generation: &mut u64,
    ) -> Result<(), etcd_client::Error> {
        let Some((name, password)) = &self.user else {
            return Ok(());
        };
        // The token is shared by every clone of the client (its watch
        // streams pick it up when they open).
        etcd.clone()
            .update_user(Some((name.clone(), password.clone())))
            .await?;
        *generation += 1;
        Ok(())
    }

    /// Whether watches can be refused for an expired token at all.
    pub(crate) fn has_user(&self) -> bool {
        self.user.is_some()
    }
}
