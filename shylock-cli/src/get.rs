//! `shylock get`: a key's value, or the keys under a prefix, as etcd holds
//! them now (or at a revision), for debugging without etcdctl.

use std::io::Write;

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::kv::{bytes_json, emit, json_line, text_entry, KeyArgs};

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub target: KeyArgs,

    /// Print JSON: the revision read, and each key with its value and
    /// revisions (a value that is not UTF-8 as {"base64": ...}).
    #[arg(long)]
    pub json: bool,

    /// Read the keys as they were at this revision.
    #[arg(long)]
    pub revision: Option<i64>,
}

pub async fn run(connect: &ConnectArgs, args: GetArgs) -> Result<(), Error> {
    let scope = args.target.scope()?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let mut options = etcd_client::GetOptions::new();
    if scope.prefix {
        options = options.with_range(scope.range_end());
    }
    if let Some(revision) = args.revision {
        options = options.with_revision(revision);
    }
    // The root's range starts at `/` (etcd refuses an empty key).
    let from = if scope.key.is_empty() {
        "/"
    } else {
        &scope.key
    };
    let response = client
        .request(&format!("get {}", args.target.key), |mut etcd| {
            let (from, options) = (from.to_owned(), options.clone());
            async move { etcd.get(from, Some(options)).await }
        })
        .await?;
    let revision = response.header().map_or(0, |h| h.revision());
    let kvs: Vec<_> = response
        .kvs()
        .iter()
        .filter(|kv| scope.covers(kv.key()))
        .collect();
    if kvs.is_empty() && !scope.prefix {
        return Err(msg(format!("no key {} in etcd", args.target.key)));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let kvs: Vec<_> = kvs
            .iter()
            .map(|kv| {
                json!({
                    "key": bytes_json(kv.key()),
                    "value": bytes_json(kv.value()),
                    "create_revision": kv.create_revision(),
                    "mod_revision": kv.mod_revision(),
                    "version": kv.version(),
                    "lease": kv.lease(),
                })
            })
            .collect();
        emit(
            &mut out,
            &json_line(&json!({ "revision": revision, "kvs": kvs })),
        )?;
    } else if scope.prefix {
        for kv in &kvs {
            if !emit(&mut out, &text_entry(kv.key(), kv.value()))? {
                break;
            }
        }
    } else {
        // One key: its value exactly, as `cat` of the file would show it.
        emit(&mut out, kvs[0].value())?;
    }
    out.flush().ok();
    Ok(())
}
