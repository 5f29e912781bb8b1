//! `shylock rollback PREFIX --to REV`: writes the keys under a prefix back
//! as they were at a revision: changed keys get their old values, deleted
//! ones come back, new ones go. One transaction, guarded by a compare on
//! the current revision of every key it touches, so a change made by
//! someone else since the read fails it, naming the key. More changes than
//! fit one transaction (`--batch`, etcd's `--max-txn-ops`) go in batches,
//! each guarded by the prefix not having changed since the previous one.

use std::io::Write;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error, Partial};
use crate::guard::{refused_error, Change, Guard, WriteArgs};
use crate::history::{read_at, State};
use crate::kv::Scope;

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The prefix (a path: the key and the keys under PREFIX/).
    pub prefix: String,

    /// The revision to go back to.
    #[arg(long, value_name = "REV")]
    pub to: i64,

    /// Print what would change (+ back, ~ changed, - removed); write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Most changes in one transaction (etcd's --max-txn-ops, 128 by
    /// default).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,

    #[command(flatten)]
    pub write: WriteArgs,
}

/// One key to write back.
enum Step {
    /// Put the old value; the key is now at this revision (0: absent).
    Put(String, Vec<u8>, i64),
    /// Delete the key, now at this revision.
    Delete(String, i64),
}

impl Step {
    fn key(&self) -> &str {
        match self {
            Step::Put(key, _, _) | Step::Delete(key, _) => key,
        }
    }

    /// The compare that fails if the key changed since it was read.
    fn unchanged(&self) -> Compare {
        match self {
            Step::Put(key, _, 0) => Compare::version(key.as_str(), CompareOp::Equal, 0),
            Step::Put(key, _, revision) | Step::Delete(key, revision) => {
                Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
            }
        }
    }

    fn op(&self) -> TxnOp {
        match self {
            Step::Put(key, value, _) => TxnOp::put(key.as_str(), value.clone(), None),
            Step::Delete(key, _) => TxnOp::delete(key.as_str(), None),
        }
    }
}

/// What to write so that `now` becomes `then`.
fn steps(then: &State, now: &State) -> Vec<(char, Step)> {
    let mut steps = Vec::new();
    for (key, old) in &then.keys {
        match now.keys.get(key) {
            Some(current) if current.value == old.value => {}
            Some(current) => steps.push((
                '~',
                Step::Put(key.clone(), old.value.clone(), current.mod_revision),
            )),
            None => steps.push(('+', Step::Put(key.clone(), old.value.clone(), 0))),
        }
    }
    for (key, current) in &now.keys {
        if !then.keys.contains_key(key) {
            steps.push(('-', Step::Delete(key.clone(), current.mod_revision)));
        }
    }
    steps.sort_by(|a, b| a.1.key().cmp(b.1.key()));
    steps
}

pub async fn run(connect: &ConnectArgs, args: RollbackArgs) -> Result<(), Error> {
    let scope = Scope::new(&args.prefix, true)?;
    let client = shylock::Client::connect(connect.options()?).await?;
    let then = read_at(&client, &scope, Some(args.to)).await?;
    let now = read_at(&client, &scope, None).await?;
    let steps = steps(&then, &now);
    let mut out = std::io::stdout().lock();
    for (sign, step) in &steps {
        writeln!(out, "{sign} {}", step.key())?;
    }
    drop(out);
    // The prefix as it was is checked whole against today's schema.
    let guard = Guard::new(&client, &args.write, "rollback").await?;
    let changes: Vec<Change<'_>> = steps
        .iter()
        .map(|(_, step)| match step {
            Step::Put(key, value, _) => Change::Put(key, value),
            Step::Delete(key, _) => Change::Delete(key),
        })
        .collect();
    let after = then
        .keys
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    refused_error(guard.refusals_of_state(&scope.key, &changes, &after))?;
    if args.dry_run || steps.is_empty() {
        eprintln!(
            "{} change(s) back to revision {}{}",
            steps.len(),
            args.to,
            if args.dry_run {
                "; dry run, nothing written"
            } else {
                ""
            }
        );
        return Ok(());
    }
    // etcd's limit (--batch) counts compares and operations apart: a batch
    // after the first has two more compares (the prefix unchanged), and
    // each may carry an audit record.
    let room = args.batch.max(3);
    let audit = usize::from(guard.audits());
    let batch = if steps.len() + audit <= room {
        steps.len()
    } else {
        room - 2
    };
    let mut since = now.revision;
    let total = steps.len();
    for (i, chunk) in steps.chunks(batch).enumerate() {
        let mut compares: Vec<Compare> = chunk.iter().map(|(_, s)| s.unchanged()).collect();
        if i > 0 {
            // Between batches: nothing else changed under the prefix.
            compares.push(
                Compare::mod_revision(scope.children(), CompareOp::Less, since + 1).with_prefix(),
            );
            if !scope.key.is_empty() {
                compares.push(Compare::mod_revision(
                    scope.key.as_str(),
                    CompareOp::Less,
                    since + 1,
                ));
            }
        }
        let mut ops: Vec<TxnOp> = chunk.iter().map(|(_, s)| s.op()).collect();
        let keys: Vec<&str> = chunk.iter().map(|(_, s)| s.key()).collect();
        ops.extend(guard.audit_op(&keys));
        let txn = Txn::new().when(compares).and_then(ops);
        let response = client
            .request(&format!("roll {} back", args.prefix), |mut etcd| {
                let txn = txn.clone();
                async move { etcd.txn(txn).await }
            })
            .await?;
        if !response.succeeded() {
            let changed = changed_key(&client, &scope, chunk, &now).await;
            let text = format!(
                "{changed} changed since it was read; {} of {total} change(s) written, run it again",
                i * batch
            );
            return Err(if i == 0 {
                msg(format!("rollback of {} refused: {text}", args.prefix))
            } else {
                Box::new(Partial(format!(
                    "rollback of {} stopped: {text}",
                    args.prefix
                )))
            });
        }
        since = response.header().map_or(since, |h| h.revision());
    }
    eprintln!(
        "{total} change(s) written: {} is as it was at revision {} (now revision {since})",
        args.prefix, args.to
    );
    Ok(())
}

/// Which key someone else changed, to name it.
async fn changed_key(
    client: &shylock::Client,
    scope: &Scope,
    chunk: &[(char, Step)],
    before: &State,
) -> String {
    let Ok(current) = read_at(client, scope, None).await else {
        return "a key".into();
    };
    for (_, step) in chunk {
        let key = step.key();
        if current.keys.get(key) != before.keys.get(key) {
            return format!("key {key}");
        }
    }
    current
        .keys
        .iter()
        .find(|(k, v)| before.keys.get(*k) != Some(*v))
        .map_or("a key under the prefix".into(), |(k, _)| format!("key {k}"))
}
