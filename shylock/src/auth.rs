//! Lazy authentication: credentials are given to etcd on first use, so a
//! client can be made while etcd is down. etcd-client then renews the token
//! on every expiry, for the client and all its clones (the watch stream too).

use tokio::sync::Mutex;

pub(crate) struct Auth {
    user: Option<(String, String)>,
    done: Mutex<bool>,
}

impl Auth {
    pub(crate) fn new(user: Option<(String, String)>) -> Self {
        Auth {
            user,
            done: Mutex::new(false),
        }
    }

    /// The user name, for error messages (never the password).
    pub(crate) fn name(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _)| name.as_str())
    }

    /// Authenticates once, if a user is set.
    pub(crate) async fn ensure(
        &self,
        etcd: &etcd_client::Client,
    ) -> Result<(), etcd_client::Error> {
        let Some((name, password)) = &self.user else {
            return Ok(());
        };
        let mut done = self.done.lock().await;
        if !*done {
            etcd.clone()
                .update_user(Some((name.clone(), password.clone())))
                .await?;
            *done = true;
        }
        Ok(())
    }
}
