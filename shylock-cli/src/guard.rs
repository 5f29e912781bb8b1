//! Safe writes, shared by every command that writes (put, del, import,
//! rollback, read-write mounts): values are checked against the schemas
//! programs published (`shylock schema publish`) before anything is
//! written, and an audit record (who, why, when, which keys) can go into
//! etcd in the same transaction as the change.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{GetOptions, TxnOp};
use serde_json::json;
use shylock::__private::hostname;
use shylock::{Refusal, Schema};

use crate::exit::{msg, Error};

/// Where audit records go unless `--audit-root` says otherwise.
pub const AUDIT_ROOT: &str = "_shylock/audit";

/// Most keys an audit record names; more are counted.
const AUDIT_KEYS: usize = 1000;

#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Safe writes")]
pub struct WriteArgs {
    /// Refuse keys under a schema's prefix that the schema does not have
    /// (by default they are written, with a warning).
    #[arg(long)]
    pub strict: bool,

    /// Write without checking values against published schemas.
    #[arg(long, conflicts_with = "strict")]
    pub no_schema: bool,

    /// Where programs publish their schemas.
    #[arg(long, value_name = "PREFIX", default_value = shylock::SCHEMA_ROOT)]
    pub schema_root: String,

    /// Write an audit record (user, time, keys, reason) in the same
    /// transaction as each change [env: SHYLOCK_AUDIT=1]
    #[arg(long)]
    pub audit: bool,

    /// Why the change is made, kept in its audit record (implies --audit).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Where audit records go.
    #[arg(long, value_name = "PREFIX", default_value = AUDIT_ROOT)]
    pub audit_root: String,
}

impl WriteArgs {
    fn auditing(&self) -> bool {
        self.audit
            || self.reason.is_some()
            || std::env::var("SHYLOCK_AUDIT").is_ok_and(|v| !v.is_empty() && v != "0")
    }
}

/// One change a command means to make (keys are full keys).
pub enum Change<'a> {
    Put(&'a str, &'a [u8]),
    Delete(&'a str),
}

/// The checks and the audit record of one command's writes.
pub struct Guard {
    schemas: Vec<Schema>,
    strict: bool,
    audit: Option<Auditor>,
}

/// Who writes, and what the records say about it.
struct Auditor {
    root: String,
    user: String,
    reason: Option<String>,
    command: String,
}

impl Guard {
    /// Reads the published schemas (unless `--no-schema`) and who the
    /// writer is, for `command` (`put`, `import`…).
    pub async fn new(
        client: &shylock::Client,
        args: &WriteArgs,
        command: &str,
    ) -> Result<Guard, Error> {
        let schemas = if args.no_schema {
            Vec::new()
        } else {
            load_schemas(client, &args.schema_root).await?
        };
        let audit = args.auditing().then(|| Auditor {
            root: args.audit_root.trim_end_matches('/').to_owned(),
            user: identity(client.options()),
            reason: args.reason.clone(),
            command: command.to_owned(),
        });
        Ok(Guard {
            schemas,
            strict: args.strict,
            audit,
        })
    }

    /// Every refusal of `changes` by a schema that governs their keys.
    /// Unknown keys are warnings (printed here) unless strict.
    pub fn refusals(&self, changes: &[Change<'_>]) -> Vec<Refusal> {
        let mut refused = Vec::new();
        for change in changes {
            for schema in &self.schemas {
                let verdict = match change {
                    Change::Put(key, _) | Change::Delete(key) if !schema.governs(key) => continue,
                    Change::Put(key, value) => schema.check_value(key, value),
                    Change::Delete(key) => schema.check_delete(key),
                };
                match verdict {
                    Err(refusal) if refusal.is_unknown() && !self.strict => {
                        tracing::warn!(key = refusal.key(), schema = %schema.prefix,
                            "writing a key the published schema does not have");
                    }
                    Err(refusal) => refused.push(refusal),
                    Ok(()) => {}
                }
            }
        }
        refused
    }

    /// Refusals of a prefix's whole new content: its changes, and every
    /// required key of a schema for exactly this prefix that it lacks.
    pub fn refusals_of_state(
        &self,
        prefix: &str,
        changes: &[Change<'_>],
        after: &BTreeMap<String, Vec<u8>>,
    ) -> Vec<Refusal> {
        let mut refused = self.refusals(changes);
        let base = prefix.trim_end_matches('/');
        for schema in self.schemas.iter().filter(|s| s.prefix == base) {
            for key in schema.required_keys() {
                let under = key.strip_prefix(base).is_some_and(|r| r.starts_with('/'));
                if under && !after.contains_key(key) && !refused.iter().any(|r| r.key() == key) {
                    refused.push(Refusal::Missing { key: key.into() });
                }
            }
        }
        refused
    }

    /// Whether each transaction carries an audit record (one more operation).
    pub fn audits(&self) -> bool {
        self.audit.is_some()
    }

    /// `Err` naming every refused key, for a command that writes nothing then.
    pub fn check(&self, changes: &[Change<'_>]) -> Result<(), Error> {
        refused_error(self.refusals(changes))
    }

    /// The put of an audit record naming `keys`, to go into the
    /// transaction that changes them (its create revision is the change's).
    pub fn audit_op(&self, keys: &[&str]) -> Option<TxnOp> {
        let audit = self.audit.as_ref()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = hostname();
        let mut record = json!({
            "user": audit.user,
            "host": host,
            "command": audit.command,
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "keys": keys.iter().take(AUDIT_KEYS).collect::<Vec<_>>(),
        });
        if keys.len() > AUDIT_KEYS {
            record["more_keys"] = json!(keys.len() - AUDIT_KEYS);
        }
        if let Some(reason) = &audit.reason {
            record["reason"] = json!(reason);
        }
        let key = format!(
            "{}/{:020}-{host}-{}",
            audit.root,
            now.as_nanos(),
            std::process::id()
        );
        Some(TxnOp::put(key, record.to_string(), None))
    }
}

/// `Ok` when nothing is refused; otherwise an error listing each refusal.
pub fn refused_error(refused: Vec<Refusal>) -> Result<(), Error> {
    if refused.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = refused.iter().map(|r| format!("  {r}")).collect();
    Err(msg(format!(
        "refused by the published schema; nothing was written:\n{}",
        lines.join("\n")
    )))
}

/// Every schema published under `root`. A role that may not read them
/// writes unchecked, with a warning.
pub async fn load_schemas(client: &shylock::Client, root: &str) -> Result<Vec<Schema>, Error> {
    let range = format!("{}/", root.trim_end_matches('/'));
    let response = match client
        .request(&format!("read the schemas under {range}"), |mut etcd| {
            let range = range.clone();
            async move { etcd.get(range, Some(GetOptions::new().with_prefix())).await }
        })
        .await
    {
        Ok(response) => response,
        Err(shylock::Error::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        }) if status.code() as i32 == 7 => {
            tracing::warn!(
                root = %range,
                "may not read the published schemas: writes are not checked"
            );
            return Ok(Vec::new());
        }
        Err(error) => return Err(error.into()),
    };
    let mut schemas = Vec::new();
    for kv in response.kvs() {
        match Schema::from_json(kv.value()) {
            Ok(schema) => schemas.push(schema),
            Err(error) => tracing::warn!(
                key = %String::from_utf8_lossy(kv.key()),
                %error,
                "ignoring a published schema"
            ),
        }
    }
    Ok(schemas)
}

/// Who is writing: the etcd user, else the client certificate's common
/// name, else the local user at this host.
fn identity(options: &shylock::ConnectOptions) -> String {
    if let Some(user) = options.user_name() {
        return format!("etcd:{user}");
    }
    if let Some(name) = options.client_cert().and_then(common_name) {
        return format!("cert:{name}");
    }
    let local = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid cannot fail and touches no memory of ours.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    format!("local:{local}@{}", hostname())
}

/// The subject's CN of the first certificate in a PEM file.
fn common_name(path: &std::path::Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_the_etcd_user_else_the_certificates_cn() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/O=ops/CN=deployer"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl makes the test's certificate");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let tls = shylock::TlsFiles::new().with_identity(&cert, &key);
        let options = shylock::ConnectOptions::new(["http://127.0.0.1:1"]).with_tls(tls);
        assert_eq!(identity(&options), "cert:deployer");
        let options = options.with_user("alice", "pw");
        assert_eq!(identity(&options), "etcd:alice");
        assert!(identity(&shylock::ConnectOptions::new(["x:1"])).starts_with("local:"));
    }
}
