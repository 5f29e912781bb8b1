//! `shylock put`: write one key, the value from the command line or from
//! standard input (exactly its bytes: no newline is added or removed),
//! checked against a published schema, with its audit record if asked for.

use std::io::Read;

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::{usage, Error};
use crate::guard::{Change, Guard, WriteArgs};
use crate::kv::{emit, json_line};

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// The key.
    #[arg(id = "KEY")]
    pub key: String,

    /// The value; without it (or with `-`), standard input is read to its
    /// end: `shylock put /app/cert < cert.pem`.
    pub value: Option<String>,

    /// Print the revision of the write as JSON ({"revision": N}); without
    /// it, nothing is printed.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub write: WriteArgs,
}

pub async fn run(connect: &ConnectArgs, args: PutArgs) -> Result<(), Error> {
    if args.key.is_empty() {
        return Err(usage("the key is empty"));
    }
    let value = match args.value.as_deref() {
        Some("-") | None => {
            let mut value = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut value)
                .map_err(|e| format!("cannot read the value from standard input: {e}"))?;
            value
        }
        Some(value) => value.as_bytes().to_vec(),
    };
    let client = shylock::Client::connect(connect.options()?).await?;
    let guard = Guard::new(&client, &args.write, "put").await?;
    guard.check(&[Change::Put(&args.key, &value)])?;
    let mut ops = vec![etcd_client::TxnOp::put(args.key.as_str(), value, None)];
    ops.extend(guard.audit_op(&[&args.key]));
    let txn = etcd_client::Txn::new().and_then(ops);
    let response = client
        .request(&format!("put {}", args.key), |mut etcd| {
            let txn = txn.clone();
            async move { etcd.txn(txn).await }
        })
        .await?;
    if args.json {
        let revision = response.header().map_or(0, |h| h.revision());
        emit(
            &mut std::io::stdout().lock(),
            &json_line(&json!({ "revision": revision })),
        )?;
    }
    Ok(())
}
