//! The last-known-good snapshot file: the keys of a config at one revision,
//! written atomically with mode 0600, read at startup when etcd is not there.

use std::fs;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::config::Dependency;
use crate::tree::Tree;

const FORMAT: &str = "shylock-snapshot-1";

/// Why a snapshot file could not be used; names the path.
#[derive(Debug, thiserror::Error)]
#[error("snapshot file {path}: {reason}")]
pub struct SnapshotError {
    path: String,
    reason: String,
}

fn error(path: &Path, reason: impl ToString) -> SnapshotError {
    SnapshotError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads a snapshot: the keys and the revision they were read at.
pub(crate) fn read(path: &Path, prefix: &str) -> Result<(Tree, i64), SnapshotError> {
    let text = fs::read_to_string(path).map_err(|e| error(path, e))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| error(path, e))?;
    if doc["format"] != FORMAT {
        return Err(error(path, format!("not a {FORMAT} file")));
    }
    if doc["prefix"] != prefix {
        return Err(error(
            path,
            format!("holds prefix {} instead of {prefix:?}", doc["prefix"]),
        ));
    }
    let revision = doc["revision"]
        .as_i64()
        .ok_or_else(|| error(path, "no revision"))?;
    let keys = doc["keys"]
        .as_object()
        .ok_or_else(|| error(path, "no keys"))?;
    let mut tree = Tree::default();
    for (key, entry) in keys {
        let value = match (&entry["text"], &entry["bytes"]) {
            (Value::String(text), _) => text.clone().into_bytes(),
            (_, Value::Array(bytes)) => bytes
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| error(path, format!("bad bytes for key {key}")))?,
            _ => return Err(error(path, format!("no value for key {key}"))),
        };
        let mod_revision = entry["mod_revision"].as_i64().unwrap_or(revision);
        tree.insert(key.clone(), value, mod_revision);
    }
    Ok((tree, revision))
}

/// The revision a snapshot file holds, if it is readable.
fn revision_of(path: &Path) -> Option<i64> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["revision"].as_i64()
}

/// Writes a snapshot atomically (temporary file, fsync, rename, fsync of the
/// directory) with mode 0600, unless the file already holds a newer revision.
/// Secret keys are left out unless `secrets` is set.
pub(crate) fn write(
    path: &Path,
    prefix: &str,
    revision: i64,
    tree: &Tree,
    dependencies: &[Dependency],
    secrets: bool,
) -> Result<(), SnapshotError> {
    if revision_of(path).is_some_and(|on_disk| on_disk > revision) {
        tracing::debug!(path = %path.display(), revision, "snapshot on disk is newer; not replaced");
        return Ok(());
    }
    tracing::debug!(path = %path.display(), revision, "writing snapshot");
    let mut keys = Map::new();
    for (key, entry) in tree.iter() {
        let secret = dependencies.iter().any(|d| d.secret && d.covers(key));
        if secret && !secrets {
            continue;
        }
        let mut item = match std::str::from_utf8(&entry.value) {
            Ok(text) => json!({ "text": text }),
            Err(_) => json!({ "bytes": entry.value }),
        };
        item["mod_revision"] = json!(entry.mod_revision);
        keys.insert(key.to_owned(), item);
    }
    let doc = json!({ "format": FORMAT, "prefix": prefix, "revision": revision, "keys": keys });
    let mut staged = crate::__private::staged::stage(path).map_err(|e| error(path, e))?;
    let copy = staged.path().to_owned();
    serde_json::to_writer(&mut *staged.file(), &doc).map_err(|e| error(&copy, e))?;
    staged.file().sync_all().map_err(|e| error(&copy, e))?;
    staged.install().map_err(|e| error(path, e))?;
    Ok(())
}
