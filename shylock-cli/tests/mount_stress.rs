//! The mount under stress: concurrent writers counted against etcd's full
//! revision history, torn-read hunters during length-changing puts, huge
//! writes, a stalled etcd, renames, and modes. Regression tests for values
//! corrupted by another writer's O_TRUNC, writes lost after a successful
//! close, `echo v > f` storing an empty value first, reads of a new value cut
//! to the old length, a 1 TB truncate killing the daemon, readers blocked by
//! a slow commit, ENOENT right after rename, and chmod that did nothing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shylock::testing::Proxy;
use support::*;

/// Every value a key held, oldest first, from etcd's own history.
async fn history(etcd: &mut etcd_client::Client, key: &str) -> Vec<Vec<u8>> {
    let (_, last) = get(etcd, key).await.expect("the key exists");
    let options = etcd_client::WatchOptions::new().with_start_revision(1);
    let mut stream = etcd.watch(key, Some(options)).await.unwrap();
    let mut values = Vec::new();
    loop {
        let response = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("the history within the deadline")
            .unwrap()
            .expect("the watch is open");
        for event in response.events() {
            let kv = event.kv().unwrap();
            if event.event_type() == etcd_client::EventType::Put {
                values.push(kv.value().to_vec());
            }
            if kv.mod_revision() == last {
                return values;
            }
        }
    }
}

async fn concurrent_writers(conflicts: &str) {
    let server = shared_server();
    let p = unique_prefix("ms-writers");
    let key = format!("{p}/shared");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &key, "start").await;
    let mount = Mount::start(&server.endpoint(), &p, &["--conflicts", conflicts]);
    let path = mount.file("shared");
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut results = Vec::new();
                for i in 0..150 {
                    // Lengths change all the time, so a mix would show.
                    let pad = "xyz".repeat((i * 37 + w * 11) % 200);
                    let value = format!("writer{w}-{i}-{pad}").into_bytes();
                    let result = write_and_close(&path, &value);
                    if let Err(error) = &result {
                        assert_eq!(
                            error.raw_os_error(),
                            Some(libc::ESTALE),
                            "a losing write fails with ESTALE: {error}"
                        );
                    }
                    results.push((value, result.is_ok()));
                }
                results
            })
        })
        .collect();
    let results: Vec<(Vec<u8>, bool)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer thread"))
        .collect();
    let stored = history(&mut etcd, &key).await;
    let committed: BTreeSet<&Vec<u8>> = results
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(v, _)| v)
        .collect();
    let written: BTreeSet<&Vec<u8>> = results.iter().map(|(v, _)| v).collect();
    // The first stored value is the test's own "start".
    let stored_by_writers = &stored[1..];
    for value in stored_by_writers {
        assert!(
            written.contains(value),
            "etcd holds a value nobody wrote: {:?}",
            String::from_utf8_lossy(value)
        );
        assert!(
            committed.contains(value),
            "etcd holds a write whose close failed: {:?}",
            String::from_utf8_lossy(value)
        );
    }
    let stored_set: BTreeSet<&Vec<u8>> = stored_by_writers.iter().collect();
    for value in &committed {
        assert!(
            stored_set.contains(value),
            "a write whose close succeeded never reached etcd: {:?}",
            String::from_utf8_lossy(value)
        );
    }
    assert_eq!(
        stored_by_writers.len(),
        committed.len(),
        "one put per successful close"
    );
    eprintln!(
        "{conflicts}: {} writes, {} committed, {} refused",
        results.len(),
        committed.len(),
        results.len() - committed.len()
    );
    if conflicts == "lww" {
        assert_eq!(
            committed.len(),
            results.len(),
            "last writer wins: none refused"
        );
    }
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_store_whole_values_or_fail_with_estale() {
    concurrent_writers("cas").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_last_writer_wins_and_loses_nothing() {
    concurrent_writers("lww").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_into_a_file_is_one_put() {
    let server = shared_server();
    let p = unique_prefix("ms-echo");
    let key = format!("{p}/f");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &key, "old value").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);
    for i in 0..10 {
        sh(&mount.path, &format!("echo v{i} > f"));
    }
    let stored = history(&mut etcd, &key).await;
    let expected: Vec<Vec<u8>> = std::iter::once(b"old value".to_vec())
        .chain((0..10).map(|i| format!("v{i}\n").into_bytes()))
        .collect();
    assert_eq!(stored, expected, "no empty value before each write");
    mount.stop();
}

/// The value of round `i`: one letter, repeated a length of its own
/// (26 letters, each with one length, the lengths jumping up and down).
fn hunted_value(i: usize) -> Vec<u8> {
    let lengths = [3, 5000, 17, 70_000, 1, 9000, 300];
    let n = i % 26;
    vec![b'a' + n as u8; lengths[n % lengths.len()] + n]
}

/// Whether `read` is one of the values written whole.
fn is_whole(read: &[u8], written: &BTreeMap<u8, usize>) -> bool {
    let Some(&first) = read.first() else {
        return false;
    };
    written.get(&first) == Some(&read.len()) && read.iter().all(|&b| b == first)
}

async fn hunt_torn_reads(flags: &[&str]) {
    let server = shared_server();
    let p = unique_prefix("ms-torn");
    let key = format!("{p}/v");
    let mut etcd = etcd(&server.endpoint()).await;
    let rounds = 400;
    // Letters map to one length each over the run (26 letters, 7 lengths).
    let written: BTreeMap<u8, usize> = (0..26)
        .map(|i| (hunted_value(i)[0], hunted_value(i).len()))
        .collect();
    put(&mut etcd, &key, hunted_value(0)).await;
    let mount = Mount::start(&server.endpoint(), &p, flags);
    let path = mount.file("v");
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (path, done, written) = (path.clone(), done.clone(), written.clone());
            std::thread::spawn(move || {
                let (mut reads, mut torn) = (0u64, Vec::new());
                while !done.load(Ordering::Relaxed) {
                    let content = match r {
                        // One read(2) into a buffer larger than any value.
                        0 => {
                            let mut buf = vec![0u8; 128 * 1024];
                            let mut file = fs::File::open(&path).unwrap();
                            let n = file.read(&mut buf).unwrap();
                            buf.truncate(n);
                            buf
                        }
                        // cat: small reads until EOF.
                        1 => {
                            let mut file = fs::File::open(&path).unwrap();
                            let mut out = Vec::new();
                            let mut buf = [0u8; 4096];
                            loop {
                                let n = file.read(&mut buf).unwrap();
                                if n == 0 {
                                    break out;
                                }
                                out.extend_from_slice(&buf[..n]);
                            }
                        }
                        // fstat the open file, then read as much as it says.
                        _ => {
                            let file = fs::File::open(&path).unwrap();
                            let size = file.metadata().unwrap().len();
                            let mut buf = Vec::new();
                            file.take(size + 1).read_to_end(&mut buf).unwrap();
                            buf
                        }
                    };
                    reads += 1;
                    if !is_whole(&content, &written) && torn.len() < 5 {
                        torn.push(format!(
                            "{} bytes starting {:?}",
                            content.len(),
                            String::from_utf8_lossy(&content[..content.len().min(20)])
                        ));
                    }
                }
                (reads, torn)
            })
        })
        .collect();
    for i in 1..=rounds {
        put(&mut etcd, &key, hunted_value(i)).await;
    }
    wait_until("the last value in the mount", || {
        fs::read(&path).is_ok_and(|v| v == hunted_value(rounds))
    });
    // Never print the values themselves: some are 70 KB.
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for reader in readers {
        let (reads, torn) = reader.join().unwrap();
        assert!(torn.is_empty(), "torn reads ({flags:?}): {torn:?}");
        total += reads;
    }
    eprintln!("{flags:?}: {total} whole reads during {rounds} puts");
    assert!(total > 300, "the readers read during the puts: {total}");
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_during_length_changing_puts_are_whole_on_a_read_write_mount() {
    hunt_torn_reads(&[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_during_length_changing_puts_are_whole_on_a_read_only_mount() {
    hunt_torn_reads(&["--read-only"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_too_large_for_etcd_is_refused_at_once() {
    let server = shared_server();
    let p = unique_prefix("ms-big");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/f"), "small").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);

    let out = std::process::Command::new("truncate")
        .args(["-s", "1T"])
        .arg(mount.file("f"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A 2 MB write fails while writing, not at close, and stores nothing.
    let mut file = fs::File::create(mount.file("big")).unwrap();
    let error = file.write_all(&vec![b'x'; 2 << 20]).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");
    let fd = file.into_raw_fd();
    // SAFETY: closes the descriptor this test owns, once.
    assert_ne!(
        unsafe { libc::close(fd) },
        0,
        "close reports the failed file"
    );
    assert!(
        get(&mut etcd, &format!("{p}/big")).await.is_none(),
        "nothing stored"
    );

    // The daemon is alive and the old value intact.
    assert_eq!(fs::read_to_string(mount.file("f")).unwrap(), "small");
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_etcd_does_not_block_readers_of_other_files() {
    let server = EtcdServer::start();
    let relay = Proxy::start(&server.endpoint());
    let p = "/ms-stall";
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/a"), "a").await;
    put(&mut etcd, &format!("{p}/b"), "b").await;
    let mount = Mount::start(&relay.endpoint(), p, &[]);
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .open(mount.file("a"))
        .unwrap();
    writer.write_all(b"new").unwrap();

    relay.freeze();
    let closing = std::thread::spawn(move || {
        let fd = writer.into_raw_fd();
        // SAFETY: closes the descriptor this thread owns, once.
        unsafe { libc::close(fd) }
    });
    // The commit now waits for etcd (up to 5 s); other files still read.
    for _ in 0..20 {
        assert_eq!(fs::read_to_string(mount.file("b")).unwrap(), "b");
        assert!(fs::metadata(mount.file("a")).is_ok());
    }
    assert!(
        !closing.is_finished(),
        "the reads finished while the commit still waited for etcd"
    );
    assert_ne!(
        closing.join().unwrap(),
        0,
        "the commit failed: etcd stalled"
    );
    relay.restore();
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_file_opens_at_once_under_its_new_name() {
    let server = shared_server();
    let p = unique_prefix("ms-rename");
    let mount = Mount::start(&server.endpoint(), &p, &[]);
    for i in 0..200 {
        let (from, to) = (mount.file(&format!("x{i}")), mount.file(&format!("y{i}")));
        fs::write(&from, format!("value {i}")).unwrap();
        fs::rename(&from, &to).unwrap();
        assert_eq!(
            fs::read_to_string(&to).unwrap_or_else(|e| panic!("round {i}: {e}")),
            format!("value {i}")
        );
        assert!(!from.exists());
    }
    mount.stop();
}

/// Runs `cat` on a file as another user; whether it could read it.
fn can_read_as(uid: u32, gid: u32, path: &PathBuf) -> bool {
    std::process::Command::new("cat")
        .arg(path)
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn modes_come_from_umask_and_chmod_or_chown_is_refused() {
    let server = shared_server();
    let p = unique_prefix("ms-mode");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/secret"), "s3cr3t").await;
    put(&mut etcd, &format!("{p}/dir/x"), "x").await;
    let mount = Mount::start(
        &server.endpoint(),
        &p,
        &["--umask", "027", "--gid", "65534", "--allow-other"],
    );
    let file = mount.file("secret");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o640, 65534));
    assert_eq!(
        fs::metadata(mount.file("dir")).unwrap().mode() & 0o777,
        0o750
    );
    assert!(can_read_as(65534, 65534, &file), "the group may read");
    assert!(!can_read_as(65533, 65533, &file), "others may not");

    let chmod = fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap_err();
    assert_eq!(chmod.raw_os_error(), Some(libc::EPERM), "{chmod}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("the same mode is fine");
    let chown = std::os::unix::fs::chown(&file, Some(65534), None).unwrap_err();
    assert_eq!(chown.raw_os_error(), Some(libc::EPERM), "{chown}");
    assert_eq!(
        fs::metadata(&file).unwrap().mode() & 0o777,
        0o640,
        "nothing changed"
    );
    sh(&mount.path, "touch secret");
    mount.stop();
}
