//! `shylock import`: a JSON/YAML/TOML/properties document, or a directory
//! of files, written into keys under a prefix; in one transaction when it
//! fits in one, otherwise in batches with progress. `--prune` deletes keys
//! the document no longer has; `--dry-run` only prints the changes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::connect::ConnectArgs;
use crate::document::{self, Format};
use crate::exit::{msg, Error};
use crate::guard::{refused_error, Change, Guard, WriteArgs};
use crate::names::{self, VALUE_FILE};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A JSON, YAML, TOML or properties document, or a directory of files
    /// (such as one made by `shylock sync`).
    pub file: PathBuf,

    /// The etcd prefix to write under.
    #[arg(long)]
    pub prefix: String,

    /// The document's format [default: from the file's extension].
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Delete keys under the prefix that the document does not have.
    #[arg(long)]
    pub prune: bool,

    /// Print the changes; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Operations per transaction (etcd's --max-txn-ops, 128 by default).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,

    /// In a directory, also follow symlinks that lead out of it (by
    /// default such a link is an error: it could bring any file the
    /// importing user may read into etcd).
    #[arg(long)]
    pub follow_links: bool,

    #[command(flatten)]
    pub write: WriteArgs,
}

/// One change to make (the key relative to the prefix).
enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }
}

pub async fn run(connect: &ConnectArgs, args: ImportArgs) -> Result<(), Error> {
    let desired = read_source(&args.file, args.format, args.follow_links)?;
    let base = args.prefix.trim_end_matches('/').to_owned();
    let client = shylock::Client::connect(connect.options()?).await?;
    let current = client
        .request(&format!("read {base}/"), |mut etcd| {
            let prefix = format!("{base}/");
            async move {
                etcd.get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
            }
        })
        .await?;
    let revision = current.header().map_or(0, |h| h.revision());
    let current: BTreeMap<String, Vec<u8>> = current
        .kvs()
        .iter()
        .filter_map(|kv| {
            Some((
                kv.key_str().ok()?[base.len() + 1..].to_owned(),
                kv.value().to_vec(),
            ))
        })
        .collect();

    let mut ops = Vec::new();
    let mut out = std::io::stdout().lock();
    for (key, value) in &desired {
        match current.get(key) {
            Some(old) if old == value => {}
            Some(_) => {
                writeln!(out, "~ {base}/{key}")?;
                ops.push(Op::Put(key.clone(), value.clone()));
            }
            None => {
                writeln!(out, "+ {base}/{key}")?;
                ops.push(Op::Put(key.clone(), value.clone()));
            }
        }
    }
    if args.prune {
        for key in current.keys().filter(|k| !desired.contains_key(*k)) {
            writeln!(out, "- {base}/{key}")?;
            ops.push(Op::Delete(key.clone()));
        }
    }
    drop(out);
    // The prefix as it will be, checked whole against its schema.
    let full = |key: &str| format!("{base}/{key}");
    let mut after: BTreeMap<String, Vec<u8>> = if args.prune {
        BTreeMap::new()
    } else {
        current.iter().map(|(k, v)| (full(k), v.clone())).collect()
    };
    after.extend(desired.iter().map(|(k, v)| (full(k), v.clone())));
    let full_keys: Vec<String> = ops.iter().map(|op| full(op.key())).collect();
    let changes: Vec<Change<'_>> = ops
        .iter()
        .zip(&full_keys)
        .map(|(op, key)| match op {
            Op::Put(_, value) => Change::Put(key, value),
            Op::Delete(_) => Change::Delete(key),
        })
        .collect();
    let guard = Guard::new(&client, &args.write, "import").await?;
    refused_error(guard.refusals_of_state(&base, &changes, &after))?;
    if args.dry_run || ops.is_empty() {
        eprintln!(
            "{} change(s){}",
            ops.len(),
            if args.dry_run {
                "; dry run, nothing written"
            } else {
                ""
            }
        );
        return Ok(());
    }

    let txn_ops = |chunk: &[Op]| -> Vec<TxnOp> {
        let mut txn: Vec<TxnOp> = chunk
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => TxnOp::put(full(key), value.clone(), None),
                Op::Delete(key) => TxnOp::delete(full(key), None),
            })
            .collect();
        let keys: Vec<String> = chunk.iter().map(|op| full(op.key())).collect();
        txn.extend(guard.audit_op(&keys.iter().map(String::as_str).collect::<Vec<_>>()));
        txn
    };
    // etcd's limit counts the audit record too.
    let batch = args.batch.max(2) - usize::from(guard.audits());
    if ops.len() <= batch {
        // One transaction, and only if nothing under the prefix changed since it was read.
        let unchanged =
            Compare::mod_revision(format!("{base}/"), CompareOp::Less, revision + 1).with_prefix();
        let txn = Txn::new().when([unchanged]).and_then(txn_ops(&ops));
        let response = client
            .request(&format!("import into {base}/"), |mut etcd| {
                let txn = txn.clone();
                async move { etcd.txn(txn).await }
            })
            .await?;
        if !response.succeeded() {
            return Err(msg(format!(
                "keys under {base}/ changed while importing; nothing was written, run it again"
            )));
        }
        let revision = response.header().map_or(0, |h| h.revision());
        eprintln!(
            "{} change(s) written in one transaction (revision {revision})",
            ops.len()
        );
        return Ok(());
    }
    let total = ops.len();
    for (i, chunk) in ops.chunks(batch).enumerate() {
        let txn = Txn::new().and_then(txn_ops(chunk));
        let written = client
            .request(&format!("import into {base}/"), |mut etcd| {
                let txn = txn.clone();
                async move { etcd.txn(txn).await }
            })
            .await;
        if let Err(error) = written {
            if i == 0 {
                return Err(error.into());
            }
            // Some batches are in etcd: exit code 4 says so.
            return Err(Box::new(crate::exit::Partial(format!(
                "import into {base}/ failed after {} of {total} changes: {error}",
                i * batch
            ))));
        }
        eprint!("\rimported {}/{total}", (i * batch + chunk.len()));
    }
    eprintln!(
        "\n{total} change(s) written in {} transactions",
        total.div_ceil(batch)
    );
    Ok(())
}

/// The keys (relative to the prefix) a file or directory stands for.
fn read_source(
    path: &Path,
    format: Option<Format>,
    follow_links: bool,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let meta =
        std::fs::metadata(path).map_err(|e| msg(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_dir() {
        let root = path
            .canonicalize()
            .map_err(|e| msg(format!("cannot read {}: {e}", path.display())))?;
        let mut keys = BTreeMap::new();
        let walk = Walk { root, follow_links };
        walk.read_dir(path, "", &mut keys)?;
        return Ok(keys);
    }
    let format = match format {
        Some(format) => format,
        None => match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            Some("toml") => Format::Toml,
            Some("properties") => Format::Properties,
            _ => {
                return Err(msg(format!(
                    "cannot tell the format of {}; give --format",
                    path.display()
                )))
            }
        },
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| msg(format!("cannot read {}: {e}", path.display())))?;
    let document =
        document::parse(&text, format).map_err(|e| msg(format!("{}: {e}", path.display())))?;
    Ok(document::flatten(&document))
}

/// A directory read as keys.
struct Walk {
    /// The directory, resolved: links must stay inside it.
    root: PathBuf,
    follow_links: bool,
}

impl Walk {
    /// Files as keys: names are decoded by the mount's rules; `..`-names (a
    /// synced directory's internals) are skipped; symlinks are followed while
    /// they stay inside the directory (a synced directory is made of them).
    fn read_dir(
        &self,
        dir: &Path,
        prefix: &str,
        keys: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), Error> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| msg(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = entry.path();
            if name.to_string_lossy().starts_with("..") {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_symlink()) && !self.follow_links {
                let target = path
                    .canonicalize()
                    .map_err(|e| msg(format!("cannot follow the link {}: {e}", path.display())))?;
                if !target.starts_with(&self.root) {
                    return Err(msg(format!(
                        "{} is a link out of the directory (to {}); nothing was imported. \
                     Give --follow-links to import what it points to",
                        path.display(),
                        target.display()
                    )));
                }
            }
            let meta = std::fs::metadata(&path)
                .map_err(|e| msg(format!("cannot read {}: {e}", path.display())))?;
            if name == VALUE_FILE {
                let own = prefix.trim_end_matches('/').to_owned();
                keys.insert(own, std::fs::read(&path)?);
                continue;
            }
            let segment = names::decode(&name)
                .ok()
                .and_then(|s| String::from_utf8(s).ok())
                .ok_or_else(|| {
                    msg(format!(
                        "{} is not a key name (a % must be written %25)",
                        path.display()
                    ))
                })?;
            let key = format!("{prefix}{segment}");
            if meta.is_dir() {
                self.read_dir(&path, &format!("{key}/"), keys)?;
            } else {
                keys.insert(key, std::fs::read(&path)?);
            }
        }
        Ok(())
    }
}
