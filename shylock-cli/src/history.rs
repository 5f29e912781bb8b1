//! What `diff` and `rollback` share: the keys under a prefix (a path, as
//! `get --prefix` reads it) as they were at a revision, and a clear error
//! when etcd compacted that revision away.

use std::collections::BTreeMap;

use crate::exit::{msg, Error};
use crate::kv::Scope;

/// A key's value and the revision that last changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The keys of a scope at one revision, and that revision.
pub struct State {
    pub keys: BTreeMap<String, Version>,
    pub revision: i64,
}

/// The keys of `scope` at `revision` (now with `None`).
pub async fn read_at(
    client: &shylock::Client,
    scope: &Scope,
    revision: Option<i64>,
) -> Result<State, Error> {
    let mut options = etcd_client::GetOptions::new().with_range(scope.range_end());
    if let Some(revision) = revision {
        options = options.with_revision(revision);
    }
    let from = if scope.key.is_empty() {
        "/"
    } else {
        &scope.key
    }
    .to_owned();
    let what = match revision {
        Some(r) => format!("read {} at revision {r}", scope.key),
        None => format!("read {}", scope.key),
    };
    let response = match client
        .request(&what, |mut etcd| {
            let (from, options) = (from.clone(), options.clone());
            async move { etcd.get(from, Some(options)).await }
        })
        .await
    {
        Ok(response) => response,
        Err(shylock::Error::Etcd { source, .. }) if compacted(&source) => {
            let revision = revision.unwrap_or_default();
            let oldest = oldest_revision(client, &from).await;
            return Err(msg(format!(
                "revision {revision} of {} was compacted away: etcd keeps the history since \
                 its last compaction{}",
                scope.key,
                oldest.map_or(String::new(), |r| format!(
                    " (revision {r}); the oldest revision to ask for is {r}"
                ))
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let keys = response
        .kvs()
        .iter()
        .filter(|kv| scope.covers(kv.key()))
        .filter_map(|kv| {
            Some((
                kv.key_str().ok()?.to_owned(),
                Version {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                },
            ))
        })
        .collect();
    Ok(State {
        keys,
        revision: response.header().map_or(0, |h| h.revision()),
    })
}

/// etcd's ErrCompacted.
fn compacted(error: &etcd_client::Error) -> bool {
    error
        .to_string()
        .contains("required revision has been compacted")
}

/// The compaction revision, as a watch from revision 1 reports it (etcd's
/// KV API does not say it).
async fn oldest_revision(client: &shylock::Client, key: &str) -> Option<i64> {
    let key = key.to_owned();
    let probe = client.request("find the compaction revision", |mut etcd| {
        let key = key.clone();
        async move {
            let options = etcd_client::WatchOptions::new().with_start_revision(1);
            let mut stream = etcd.watch(key, Some(options)).await?;
            while let Some(response) = stream.message().await? {
                if response.compact_revision() > 0 {
                    return Ok(Some(response.compact_revision()));
                }
                if response.canceled() {
                    break;
                }
            }
            Ok(None)
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .ok()?
        .ok()?
}
