//! `shylock schema`: publish the schema a program printed
//! (`shylock::schema::<T>(prefix).to_json()`) beside its prefix, show it,
//! and check what the prefix holds now against it. Writers (put, del,
//! import, rollback, read-write mounts) check their values against it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use shylock::{schema_key, Schema};

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::history::read_at;
use crate::kv::{emit, Scope};

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    pub action: SchemaAction,

    /// Where schemas are published.
    #[arg(long, global = true, value_name = "PREFIX", default_value = shylock::SCHEMA_ROOT)]
    pub schema_root: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchemaAction {
    /// Publish a schema document (a program's `--print-schema`, say) for
    /// the prefix it names; `-` reads standard input.
    Publish {
        /// The schema document.
        file: PathBuf,
    },
    /// Print the schema published for a prefix.
    Show {
        /// The config prefix.
        prefix: String,
    },
    /// Check the keys under a prefix against its published schema: every
    /// value decodes, no required key is missing; unknown keys are listed.
    Check {
        /// The config prefix.
        prefix: String,
    },
}

pub async fn run(connect: &ConnectArgs, args: SchemaArgs) -> Result<(), Error> {
    let root = args.schema_root.as_str();
    let client = shylock::Client::connect(connect.options()?).await?;
    match args.action {
        SchemaAction::Publish { file } => {
            let mut text = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin().lock().read_to_end(&mut text)?;
            } else {
                text = std::fs::read(&file)
                    .map_err(|e| msg(format!("cannot read {}: {e}", file.display())))?;
            }
            let schema =
                Schema::from_json(&text).map_err(|e| msg(format!("{}: {e}", file.display())))?;
            let key = schema_key(root, &schema.prefix);
            let revision = schema.publish_under(&client, root).await?;
            eprintln!(
                "published the schema of {} for {} ({} keys) at {key}, revision {revision}",
                schema.config,
                schema.prefix,
                schema.keys.len()
            );
            Ok(())
        }
        SchemaAction::Show { prefix } => {
            let schema = published(&client, root, &prefix).await?;
            let mut text = schema.to_json().into_bytes();
            text.push(b'\n');
            emit(&mut std::io::stdout().lock(), &text)?;
            Ok(())
        }
        SchemaAction::Check { prefix } => {
            let schema = published(&client, root, &prefix).await?;
            let scope = Scope::new(&prefix, true)?;
            let now = read_at(&client, &scope, None).await?;
            let mut refused = Vec::new();
            for (key, version) in &now.keys {
                match schema.check_value(key, &version.value) {
                    Err(refusal) if refusal.is_unknown() => {
                        eprintln!("unknown key (the config does not read it): {key}");
                    }
                    Err(refusal) => refused.push(refusal),
                    Ok(()) => {}
                }
            }
            let have: BTreeMap<&str, ()> = now.keys.keys().map(|k| (k.as_str(), ())).collect();
            for key in schema.required_keys() {
                if !have.contains_key(key) {
                    refused.push(shylock::Refusal::Missing { key: key.into() });
                }
            }
            if refused.is_empty() {
                eprintln!(
                    "{} key(s) under {prefix} agree with the schema of {} (revision {})",
                    now.keys.len(),
                    schema.config,
                    now.revision
                );
                return Ok(());
            }
            let lines: Vec<String> = refused.iter().map(|r| format!("  {r}")).collect();
            Err(msg(format!(
                "{prefix} does not agree with its schema:\n{}",
                lines.join("\n")
            )))
        }
    }
}

/// The schema published for `prefix`.
async fn published(client: &shylock::Client, root: &str, prefix: &str) -> Result<Schema, Error> {
    let key = schema_key(root, prefix);
    let response = client
        .request(&format!("read {key}"), |mut etcd| {
            let key = key.clone();
            async move { etcd.get(key, None).await }
        })
        .await?;
    let kv = response.kvs().first().ok_or_else(|| {
        msg(format!(
            "no schema is published for {prefix} (at {key}); publish one with `shylock schema publish`"
        ))
    })?;
    Schema::from_json(kv.value()).map_err(|e| msg(format!("{key}: {e}")))
}
