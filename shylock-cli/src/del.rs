//! `shylock del`: delete a key, or a key and every key under `KEY/`, in
//! one transaction.

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::Error;
use crate::kv::{emit, json_line, KeyArgs};

#[derive(Debug, clap::Args)]
pub struct DelArgs {
    #[command(flatten)]
    pub target: KeyArgs,

    /// Print JSON ({"deleted": N, "revision": R}) instead of the count.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(connect: &ConnectArgs, args: DelArgs) -> Result<(), Error> {
    let scope = args.target.scope()?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let mut ops = Vec::new();
    if !scope.key.is_empty() {
        ops.push(etcd_client::TxnOp::delete(scope.key.as_bytes(), None));
    }
    if scope.prefix {
        ops.push(etcd_client::TxnOp::delete(
            scope.children(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        ));
    }
    let txn = etcd_client::Txn::new().and_then(ops);
    let response = client
        .request(&format!("delete {}", args.target.key), |mut etcd| {
            let txn = txn.clone();
            async move { etcd.txn(txn).await }
        })
        .await?;
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
