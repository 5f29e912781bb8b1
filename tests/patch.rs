//! Updates patch the previous config instead of building a new one whole.
//! A patched config must equal the config built whole from etcd's keys at the
//! same revision, for every field kind, through rejections and recoveries:
//! checked here over a long run of random writes against a real etcd.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use etcd_client::{GetOptions, Txn, TxnOp};
use shylock::EtcdConfig;
use shylock_e2e::*;

/// Read by every `Pinned` entry, wherever the config's prefix is.
const MODE: &str = "/shylock-patch-test/mode";

#[derive(EtcdConfig)]
#[etcd(validate = not_unlucky)]
struct Whole {
    port: u16,
    #[etcd(default = "info")]
    level: String,
    name: Option<String>,
    #[etcd(validate = short)]
    motd: Option<String>,
    db: Db,
    cache: Option<Db>,
    tags: BTreeMap<String, u32>,
    weights: HashMap<String, u32>,
    hosts: BTreeMap<String, Host>,
    pinned: BTreeMap<String, Pinned>,
    order: Vec<u32>,
    #[etcd(secret)]
    token: Option<String>,
    #[etcd(skip)]
    local: u32,
}

#[derive(EtcdConfig)]
struct Db {
    url: String,
    #[etcd(default = 5)]
    pool: u32,
}

#[derive(EtcdConfig)]
struct Host {
    addr: String,
    #[etcd(default = 80)]
    port: u16,
}

#[derive(EtcdConfig)]
struct Pinned {
    weight: u32,
    #[etcd(key = "/shylock-patch-test/mode", default = "off")]
    mode: String,
}

fn not_unlucky(w: &Whole) -> Result<(), String> {
    if w.port == 13 {
        return Err("port 13 is unlucky".into());
    }
    Ok(())
}

fn short(motd: &Option<String>) -> Result<(), String> {
    match motd {
        Some(m) if m.len() > 10 => Err("too long".into()),
        _ => Ok(()),
    }
}

/// Every field, maps in key order, so two equal configs print the same.
fn canon(w: &Whole) -> String {
    let mut out = format!(
        "{} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {}",
        w.port,
        w.level,
        w.name,
        w.motd,
        w.db,
        w.cache,
        w.tags,
        w.weights.iter().collect::<BTreeMap<_, _>>(),
        w.hosts,
        w.order,
        w.local,
    );
    for (name, pinned) in &w.pinned {
        write!(out, " {name}={}/{}", pinned.weight, pinned.mode).unwrap();
    }
    write!(out, " token={:?}", w.token).unwrap();
    out
}

/// A small deterministic generator, so a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Keys (relative, or absolute when they start with `/`) and the values a
/// random write may give them, the first a good one (a rejection is repaired
/// with it); `None` deletes.
const KEYS: &[(&str, &[Option<&str>])] = &[
    (
        "port",
        &[Some("80"), Some("8080"), Some("x"), Some("13"), None],
    ),
    ("level", &[Some("debug"), Some("warn"), None]),
    ("name", &[Some("a"), Some("b"), None]),
    ("motd", &[Some("hi"), Some("far too long for it"), None]),
    ("db/url", &[Some("u1"), Some("u2"), None]),
    ("db/pool", &[Some("7"), Some("x"), None]),
    ("cache/url", &[Some("c1"), None]),
    ("cache/pool", &[Some("3"), None]),
    ("tags/a", &[Some("1"), Some("2"), Some("x"), None]),
    ("tags/b", &[Some("1"), None]),
    ("tags/a/deep", &[Some("9"), None]),
    ("weights/a", &[Some("1"), Some("2"), None]),
    ("weights/b", &[Some("4"), None]),
    ("hosts/h1/addr", &[Some("10.0.0.1"), None]),
    ("hosts/h1/port", &[Some("81"), Some("x"), None]),
    ("hosts/h2/addr", &[Some("10.0.0.2"), None]),
    ("hosts/h2/port", &[Some("82"), None]),
    ("pinned/x/weight", &[Some("1"), Some("2"), None]),
    ("pinned/y/weight", &[Some("3"), None]),
    (MODE, &[Some("on"), Some("off"), None]),
    ("order/0", &[Some("1"), Some("2"), None]),
    ("order/1", &[Some("3"), None]),
    ("order/2", &[Some("4"), Some("x"), None]),
    ("token", &[Some("s1"), Some("s2"), None]),
];

fn full_key(p: &str, key: &str) -> String {
    if key.starts_with('/') {
        key.to_owned()
    } else {
        format!("{p}/{key}")
    }
}

/// The config built whole from etcd's keys at `revision`.
async fn whole_at(etcd: &mut etcd_client::Client, p: &str, revision: i64) -> Option<String> {
    let mut pairs = Vec::new();
    for prefix in [format!("{p}/"), MODE.to_owned()] {
        let options = GetOptions::new().with_prefix().with_revision(revision);
        let response = etcd.get(prefix, Some(options)).await.expect("get");
        for kv in response.kvs() {
            pairs.push((kv.key_str().unwrap().to_owned(), kv.value().to_vec()));
        }
    }
    Whole::from_pairs(p, pairs).ok().map(|w| canon(&w))
}

/// A `Whole` config at `p` with its required keys set, and a client to write.
async fn start(p: &str, port: &str) -> (shylock::Live<Whole>, etcd_client::Client) {
    let server = shared_server();
    let mut etcd = etcd(&[server.endpoint()]).await;
    put(&mut etcd, &format!("{p}/port"), port).await;
    put(&mut etcd, &format!("{p}/db/url"), "u1").await;
    let client = client(&[server.endpoint()]).await;
    let live = client.config::<Whole>(p).await.expect("initial load");
    (live, etcd)
}

#[tokio::test(flavor = "multi_thread")]
async fn patched_configs_equal_configs_built_whole() {
    let p = unique_prefix("patch");
    let (live, mut etcd) = start(&p, "80").await;
    let mut good = canon(&live.load());

    // Every entry of `pinned` reads MODE, so the config depends on it.
    assert!(live.dependencies().iter().any(|d| d.key == MODE));

    let seed = std::env::var("PATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    let mut rng = Rng(seed);
    let steps = 400;
    for step in 0..steps {
        let mut keys = Vec::new();
        let mut wrote = Vec::new();
        let mut ops = Vec::new();
        let mut write = |key: String, value: Option<&str>| {
            if keys.contains(&key) {
                return;
            }
            ops.push(match value {
                Some(v) => TxnOp::put(key.clone(), v, None),
                None => TxnOp::delete(key.clone(), None),
            });
            wrote.push(format!("{key}={value:?}"));
            keys.push(key);
        };
        if let Some(error) = live.status().last_error {
            // Repair what the rejection names, with each key's first (good) value.
            for problem in error.problems() {
                let relative = problem.key.strip_prefix(&format!("{p}/"));
                let relative = relative.unwrap_or(if problem.key == p {
                    "port"
                } else {
                    &problem.key
                });
                let (key, values) = KEYS
                    .iter()
                    .find(|(k, _)| *k == relative)
                    .unwrap_or_else(|| panic!("no repair for {}", problem.key));
                write(full_key(&p, key), values[0]);
            }
        } else {
            // One to three random keys in one transaction.
            for _ in 0..1 + rng.next() % 3 {
                let (key, values) = KEYS[(rng.next() % KEYS.len() as u64) as usize];
                let value = values[(rng.next() % values.len() as u64) as usize];
                write(full_key(&p, key), value);
            }
        }
        let response = etcd.txn(Txn::new().and_then(ops)).await.expect("txn");
        let revision = response.header().expect("header").revision();
        let serving = live.wait_for_revision(revision).await.expect("applied");
        let expected = whole_at(&mut etcd, &p, revision).await;
        let got = canon(&serving);
        match expected {
            Some(expected) => {
                assert_eq!(
                    got, expected,
                    "seed {seed:#x} step {step}: after {wrote:?} the config differs from one built whole"
                );
                // The snapshot's revision is one at which etcd held exactly
                // this config. It can be later than `revision`: one watch
                // response may also carry later writes of other keys in the
                // watched span (the other test's, on this shared server).
                let at = serving.revision();
                assert_eq!(
                    whole_at(&mut etcd, &p, at).await.as_ref(),
                    Some(&got),
                    "seed {seed:#x} step {step}: the snapshot says revision {at}"
                );
                good = expected;
            }
            None => {
                assert_eq!(
                    got, good,
                    "seed {seed:#x} step {step}: a rejected update {wrote:?} changed the config"
                );
                assert!(live.status().last_error.is_some());
            }
        }
    }
    let status = live.status();
    eprintln!("{status:?}");
    assert!(
        status.rejected_updates > 20 && status.accepted_updates > 100,
        "the run should mix accepted and rejected updates: {status:?}"
    );
    // Nothing holds old snapshots here, so nearly every accepted update after
    // the first should be a patch; a rejection costs the next one a rebuild.
    assert!(
        status.patched_updates * 10 >= status.accepted_updates * 5,
        "too few updates were patched: {} of {}",
        status.patched_updates,
        status.accepted_updates
    );
}

/// A reader holding the previous snapshot keeps it intact: the update is
/// built whole instead of patching what the reader sees.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_snapshot_is_never_patched() {
    let p = unique_prefix("patch-held");
    let (live, mut etcd) = start(&p, "1").await;

    let first = live.load_full();
    let r = put(&mut etcd, &format!("{p}/port"), "2").await;
    let second = live.wait_for_revision(r).await.unwrap();
    let r = put(&mut etcd, &format!("{p}/port"), "3").await;
    let third = live.wait_for_revision(r).await.unwrap();
    let r = put(&mut etcd, &format!("{p}/port"), "4").await;
    let fourth = live.wait_for_revision(r).await.unwrap();
    // `first` and `second` were held: each later update built a new config.
    assert_eq!(
        [first.port, second.port, third.port, fourth.port],
        [1, 2, 3, 4]
    );
    drop(third);
    let r = put(&mut etcd, &format!("{p}/port"), "5").await;
    let fifth = live.wait_for_revision(r).await.unwrap();
    assert_eq!(
        [first.port, second.port, fourth.port, fifth.port],
        [1, 2, 4, 5]
    );
    let status = live.status();
    assert_eq!(status.accepted_updates, 4);
    assert_eq!(
        status.patched_updates, 1,
        "only the update after `third` was released can patch"
    );
}
