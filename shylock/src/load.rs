//! Reading every key a config needs at one etcd revision, in one round trip.

use etcd_client::{GetOptions, GetResponse, KvClient, Txn, TxnOp, TxnOpResponse};

use crate::config::{Dependency, DependencyKind};
use crate::error::{Error, Result};
use crate::tree::{Entry, Tree};

/// Keys per page when a prefix holds more than fits one response (the
/// client accepts responses of up to 64 MiB).
const PAGE: i64 = 50_000;
/// etcd's default `--max-txn-ops`; past it, one range over all dependencies.
const MAX_TXN_OPS: usize = 128;

/// The key range `[start, end)` that covers one dependency.
pub(crate) fn range_of(dep: &Dependency) -> (Vec<u8>, Vec<u8>) {
    let start = dep.key.as_bytes().to_vec();
    let end = match dep.kind {
        DependencyKind::Key => {
            let mut end = start.clone();
            end.push(0);
            end
        }
        DependencyKind::Prefix => prefix_end(&start),
    };
    (start, end)
}

/// The smallest key range covering every dependency: one watch for them all.
pub(crate) fn covering_range(deps: &[Dependency]) -> (Vec<u8>, Vec<u8>) {
    let mut ranges = deps.iter().map(range_of);
    let Some((mut lo, mut hi)) = ranges.next() else {
        return (b"\0".to_vec(), b"\0\0".to_vec());
    };
    for (start, end) in ranges {
        lo = lo.min(start);
        hi = if hi.is_empty() || end.is_empty() {
            Vec::new()
        } else {
            hi.max(end)
        };
    }
    // An empty end means "to the end of the keyspace"; etcd spells it "\0".
    if hi.is_empty() {
        hi = vec![0];
    }
    (lo, hi)
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefix`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// The ranges of `deps` with overlaps merged, in key order.
fn disjoint_ranges(deps: &[Dependency]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = deps.iter().map(range_of).collect();
    ranges.sort();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            // An empty end runs to the end of the keyspace.
            Some((_, last)) if last.is_empty() || start <= *last => {
                if !last.is_empty() && (end.is_empty() || end > *last) {
                    *last = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out
}

/// Whether etcd's keys of `deps` at revision `at` are the `held` keys a
/// config holds as of revision `since`: none created or changed after
/// `since` (both set a key's mod revision) and as many as before (so none
/// deleted). Two small reads per range, whatever the values weigh.
pub(crate) async fn unchanged_since(
    etcd: &etcd_client::Client,
    deps: &[Dependency],
    since: i64,
    held: usize,
    at: i64,
) -> Result<bool> {
    let mut kv = etcd.kv_client();
    let mut ops = Vec::new();
    for (start, end) in disjoint_ranges(deps) {
        let at_rev = || GetOptions::new().with_range(end.clone()).with_revision(at);
        ops.push(TxnOp::get(start.clone(), Some(at_rev().with_count_only())));
        let changed = at_rev().with_keys_only().with_min_mod_revision(since + 1);
        ops.push(TxnOp::get(start, Some(changed)));
    }
    let mut total = 0;
    for chunk in ops.chunks(MAX_TXN_OPS) {
        let response = kv
            .txn(Txn::new().and_then(chunk.to_vec()))
            .await
            .map_err(|source| Error::Etcd {
                context: format!("comparing {} at revision {at}", describe(deps)),
                source,
            })?;
        // Each range gave its count, then the keys changed since `since`.
        for (i, op) in response.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(page) = op else {
                continue;
            };
            if i % 2 == 0 {
                total += page.count();
            } else if !page.kvs().is_empty() {
                return Ok(false);
            }
        }
    }
    Ok(usize::try_from(total) == Ok(held))
}

/// Largest gRPC response accepted, for reads and watches alike: a page of
/// [`PAGE`] keys must fit in it.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Reads every key of `deps` at one revision (`at`, or the newest). Returns
/// the keys (only those a dependency covers) and that revision.
pub(crate) async fn read(
    etcd: &etcd_client::Client,
    deps: &[Dependency],
    at: Option<i64>,
) -> Result<(Tree, i64)> {
    let mut kv: KvClient = etcd.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = if deps.len() <= MAX_TXN_OPS {
        deps.iter().map(range_of).collect()
    } else {
        vec![covering_range(deps)]
    };
    let options = |end: &Vec<u8>| {
        GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE)
            .with_revision(at.unwrap_or(0))
    };
    let context = || format!("reading {}", describe(deps));
    let failed = |source| Error::Etcd {
        context: context(),
        source,
    };
    // One range is one Range request; several are one Txn: one round trip
    // and one revision either way.
    let (pages, read_at): (Vec<GetResponse>, i64) = if let [(start, end)] = ranges.as_slice() {
        let page = kv
            .get(start.clone(), Some(options(end)))
            .await
            .map_err(failed)?;
        let revision = page.header().map_or(0, |h| h.revision());
        (vec![page], revision)
    } else {
        let ops: Vec<TxnOp> = ranges
            .iter()
            .map(|(start, end)| TxnOp::get(start.clone(), Some(options(end))))
            .collect();
        let response = kv.txn(Txn::new().and_then(ops)).await.map_err(failed)?;
        let revision = response.header().map_or(0, |h| h.revision());
        let pages = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(page) => Some(page),
                _ => None,
            })
            .collect();
        (pages, revision)
    };
    let revision = at.unwrap_or(read_at);
    // Gathered first, then made into the tree in one go: sorted input packs
    // the B-tree's nodes full, where inserting one by one leaves them half empty.
    let mut entries = Vec::new();
    for (mut page, (_, end)) in pages.into_iter().zip(&ranges) {
        loop {
            let more = page.more();
            let kvs = page.take_kvs();
            let last = kvs.last().map(|kv| kv.key().to_vec());
            for kv in kvs {
                let mod_revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                let key = match String::from_utf8(key) {
                    Ok(key) => key,
                    Err(error) => {
                        let key = String::from_utf8_lossy(error.as_bytes());
                        tracing::warn!(%key, "skipping a key that is not UTF-8");
                        continue;
                    }
                };
                if deps.iter().any(|d| d.covers(&key)) {
                    let entry = Entry {
                        value: value.into_boxed_slice(),
                        mod_revision,
                    };
                    entries.push((key, entry));
                }
            }
            let (true, Some(mut next)) = (more, last) else {
                break;
            };
            next.push(0);
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            page = kv
                .get(next, Some(options))
                .await
                .map_err(|source| Error::Etcd {
                    context: context(),
                    source,
                })?;
        }
    }
    let tree = Tree::from_iter(entries);
    crate::memory::release_freed(tree.len());
    Ok((tree, revision))
}

/// `/app/port, /app/db/*` (at most a few, for error messages).
fn describe(deps: &[Dependency]) -> String {
    let mut names: Vec<String> = deps.iter().take(4).map(|d| d.to_string()).collect();
    if deps.len() > 4 {
        names.push(format!("and {} more", deps.len() - 4));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(key: &str, kind: DependencyKind) -> Dependency {
        Dependency {
            key: key.into(),
            kind,
            secret: false,
            required: true,
        }
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/app/"), b"/app0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"");
    }

    #[test]
    fn covering_range_spans_all_dependencies() {
        let deps = [
            dep("/app/port", DependencyKind::Key),
            dep("/app/backends/", DependencyKind::Prefix),
            dep("/global/region", DependencyKind::Key),
        ];
        let (lo, hi) = covering_range(&deps);
        assert_eq!(lo, b"/app/backends/");
        assert_eq!(hi, b"/global/region\0");
    }

    #[test]
    fn disjoint_ranges_merge_overlaps_only() {
        let deps = [
            dep("/app/backends/", DependencyKind::Prefix),
            dep("/app/backends/a/x", DependencyKind::Key),
            dep("/app/port", DependencyKind::Key),
            dep("/app/", DependencyKind::Prefix),
            dep("/global/region", DependencyKind::Key),
        ];
        let ranges = disjoint_ranges(&deps);
        assert_eq!(
            ranges,
            [
                (b"/app/".to_vec(), b"/app0".to_vec()),
                (b"/global/region".to_vec(), b"/global/region\0".to_vec()),
            ]
        );
    }
}
