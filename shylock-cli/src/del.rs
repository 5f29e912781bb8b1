//! `shylock del`: delete a key, or a key and every key under `KEY/`, in
//! one transaction.

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::Error;
use crate::guard::{Change, Guard, WriteArgs};
use crate::history::read_at;
use crate::kv::{emit, json_line, KeyArgs};

#[derive(Debug, clap::Args)]
pub struct DelArgs {
    #[command(flatten)]
    pub target: KeyArgs,

    /// Print JSON ({"deleted": N, "revision": R}) instead of the count.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub write: WriteArgs,
}

pub async fn run(connect: &ConnectArgs, args: DelArgs) -> Result<(), Error> {
    let scope = args.target.scope()?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let guard = Guard::new(&client, &args.write, "del").await?;
    // The keys that go, to check (a required key may not) and to record.
    let doomed = read_at(&client, &scope, None).await?;
    let keys: Vec<&str> = doomed.keys.keys().map(String::as_str).collect();
    let changes: Vec<Change<'_>> = keys.iter().map(|k| Change::Delete(k)).collect();
    guard.check(&changes)?;
    // The key itself only if it was there: with --prefix, a role granted
    // only `KEY/` may delete what it may read.
    let own = !scope.key.is_empty() && (!scope.prefix || doomed.keys.contains_key(&scope.key));
    let mut ops = Vec::new();
    if own {
        ops.push(etcd_client::TxnOp::delete(scope.key.as_bytes(), None));
    }
    if scope.prefix {
        ops.push(etcd_client::TxnOp::delete(
            scope.children(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ));
    }
    if !keys.is_empty() {
        ops.extend(guard.audit_op(&keys));
    }
    // Only if what was checked is still what goes.
    let mut compares = Vec::new();
    if own {
        compares.push(etcd_client::Compare::mod_revision(
            scope.key.as_bytes(),
            etcd_client::CompareOp::Less,
            doomed.revision + 1,
        ));
    }
    if scope.prefix {
        compares.push(
            etcd_client::Compare::mod_revision(
                scope.children(),
                etcd_client::CompareOp::Less,
                doomed.revision + 1,
            )
            .with_prefix(),
        );
    }
    let txn = etcd_client::Txn::new().when(compares).and_then(ops);
    let response = client
        .request(&format!("delete {}", args.target.key), |mut etcd| {
            let txn = txn.clone();
            async move { etcd.txn(txn).await }
        })
        .await?;
    if !response.succeeded() {
        return Err(crate::exit::msg(format!(
            "keys under {} changed while deleting; nothing was deleted, run it again",
            args.target.key
        )));
    }
    let deleted: i64 = response
        .op_responses()
        .iter()
        .map(|r| match r {
            etcd_client::TxnOpResponse::Delete(d) => d.deleted(),
            _ => 0,
        })
        .sum();
    let revision = response.header().map_or(0, |h| h.revision());
    let line = if args.json {
        json_line(&json!({ "deleted": deleted, "revision": revision }))
    } else {
        format!("{deleted}\n").into_bytes()
    };
    emit(&mut std::io::stdout().lock(), &line)?;
    Ok(())
}
