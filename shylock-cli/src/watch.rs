//! `shylock watch`: print every change of a key, or of the keys under a
//! prefix, as it arrives, through the same watch the other commands use
//! (after a compaction, the keys are read again and the differences
//! printed, so no change is silently skipped).

use serde_json::json;

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::feed::Feed;
use crate::kv::{bytes_json, emit, json_line, KeyArgs};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: KeyArgs,

    /// One JSON object per change: {"type": "PUT" or "DELETE", "key",
    /// "value" (PUT only), "revision"}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(connect: &ConnectArgs, args: WatchArgs) -> Result<(), Error> {
    let scope = args.target.scope()?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let mut feed = Feed::follow(&client, &scope).await?;
    tracing::info!(revision = feed.revision, key = %args.target.key, "watching");
    let mut stop = crate::signals::Stop::new()?;
    let mut out = std::io::stdout().lock();
    loop {
        let batch = tokio::select! {
            batch = feed.next() => batch.ok_or_else(|| msg("the watch ended"))?,
            () = stop.wait() => return Ok(()),
        };
        for change in batch.changes {
            let (key, value, revision) = (change.key, change.value, change.revision);
            let line = match (&value, args.json) {
                (Some(value), true) => json_line(&json!({
                    "type": "PUT", "key": key, "value": bytes_json(value), "revision": revision,
                })),
                (None, true) => json_line(&json!({
                    "type": "DELETE", "key": key, "revision": revision,
                })),
                (Some(value), false) => [b"PUT\n", key.as_bytes(), b"\n", value, b"\n"].concat(),
                (None, false) => [b"DELETE\n", key.as_bytes(), b"\n"].concat(),
            };
            if !emit(&mut out, &line)? {
                return Ok(());
            }
        }
    }
}
