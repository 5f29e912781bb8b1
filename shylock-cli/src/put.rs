//! `shylock put`: write one key, the value from the command line or from
//! standard input (exactly its bytes: no newline is added or removed).

use std::io::Read;

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::{usage, Error};
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
    let response = client
        .request(&format!("put {}", args.key), |mut etcd| {
            let (key, value) = (args.key.clone(), value.clone());
            async move { etcd.put(key, value, None).await }
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
