//! `shylock mount` over a real etcd, used with ordinary file calls and the
//! programs people use.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_files_and_prefixes_are_directories() {
    let server = shared_server();
    let p = unique_prefix("m-read");
    let mut etcd = etcd(&server.endpoint()).await;
    put(
        &mut etcd,
        &format!("{p}/nginx.conf"),
        "worker_processes 4;\n",
    )
    .await;
    put(&mut etcd, &format!("{p}/db"), "the db key itself").await;
    put(&mut etcd, &format!("{p}/db/url"), "postgres://db").await;
    put(&mut etcd, &format!("{p}/bin"), vec![0u8, 255, 1, 254, 10]).await;
    put(&mut etcd, &format!("{p}le/sibling"), "not mine").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);

    assert_eq!(ls(&mount.path), ["bin", "db", "nginx.conf"]);
    assert_eq!(ls(&mount.file("db")), ["%value", "url"]);
    assert_eq!(
        fs::read_to_string(mount.file("nginx.conf")).unwrap(),
        "worker_processes 4;\n"
    );
    assert_eq!(
        fs::read_to_string(mount.file("db/%value")).unwrap(),
        "the db key itself"
    );
    assert_eq!(
        fs::read(mount.file("bin")).unwrap(),
        [0u8, 255, 1, 254, 10],
        "bytes read back exactly"
    );

    let meta = fs::metadata(mount.file("nginx.conf")).unwrap();
    assert_eq!(meta.len(), 20, "size is right before the file is opened");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(meta.uid(), unsafe { libc::getuid() });
    let dir = fs::metadata(mount.file("db")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.permissions().mode() & 0o777, 0o755);
    let listing = sh(&mount.path, "ls -la");
    assert!(
        listing.contains("nginx.conf") && listing.contains(" 20 "),
        "{listing}"
    );
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_in_etcd_appear_and_cached_data_is_never_stale() {
    changes_appear(&[]).await;
}

/// A read-only mount tells the kernel to stop sending opens (no-open mode):
/// the page cache then lives across opens, and must still never be stale.
#[tokio::test(flavor = "multi_thread")]
async fn changes_appear_on_read_only_mounts_too() {
    changes_appear(&["--read-only"]).await;
}

/// Reading a file again and again on a read-only mount never reaches shylock
/// (no-open mode: one refused open, then no opens, flushes or releases); on
/// a read-write mount every open does, but no flush. FUSE's request log
/// (fuser at debug level) counts them.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_mounts_get_no_open_requests() {
    let server = shared_server();
    let p = unique_prefix("m-noopen");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/f"), "v").await;
    let requests = |log: &str, name: &str| {
        log.lines()
            .filter(|l| l.contains(&format!(" {name} ")))
            .count()
    };
    let log_fuse = [("SHYLOCK_LOG", "fuser=debug")];
    for (flags, read_only) in [(&["--read-only"][..], true), (&[][..], false)] {
        let mount = Mount::start_with(&server.endpoint(), &p, flags, &log_fuse);
        for _ in 0..5 {
            assert_eq!(fs::read_to_string(mount.file("f")).unwrap(), "v");
        }
        let log = mount.stop_logged();
        let (opens, flushes, releases) = (
            requests(&log, "OPEN"),
            requests(&log, "FLUSH"),
            requests(&log, "RELEASE"),
        );
        if read_only {
            assert_eq!((opens, releases), (1, 0), "read-only mount:\n{log}");
            assert!(flushes <= 1, "read-only mount:\n{log}");
        } else {
            assert_eq!((opens, flushes), (5, 0), "read-write mount:\n{log}");
        }
    }
}

/// A listing opened before a delete and read after it must not bring the
/// deleted name back: READDIRPLUS hands the kernel an entry it keeps for an
/// hour, and the delete's invalidation has already been sent. (Found as a
/// rare timeout in `changes_appear`: `ls` opened the root just before the
/// delete and read it just after.)
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_opened_before_a_delete_brings_no_deleted_name_back() {
    let server = shared_server();
    let p = unique_prefix("m-listing");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/f"), "v").await;
    put(&mut etcd, &format!("{p}/g"), "w").await;
    for flags in [&[][..], &["--read-only"][..]] {
        let mount = Mount::start(&server.endpoint(), &p, flags);
        let file = mount.file("f");
        assert_eq!(fs::read_to_string(&file).unwrap(), "v");
        // OPENDIR now; the entries are read (READDIRPLUS) after the delete.
        let listing = fs::read_dir(&mount.path).unwrap();
        etcd.delete(format!("{p}/f"), None).await.unwrap();
        wait_until("the delete reaches the mount", || {
            !ls(&mount.path).contains(&"f".to_owned()) && !file.exists()
        });
        let names: Vec<String> = listing
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"g".to_owned()), "{names:?}");
        assert!(!names.contains(&"f".to_owned()), "{flags:?}: {names:?}");
        assert!(!file.exists(), "{flags:?}: the deleted f came back");
        put(&mut etcd, &format!("{p}/f"), "v").await;
        mount.stop();
    }
}

/// The kernel keeps listings (CACHE_DIR), and one made just before a change
/// must not outlive it. Listers read the directory without pause while keys
/// are added, then deleted, one at a time through etcd; each change must
/// show in a fresh listing (a listing the kernel kept from before it never
/// would), no listing begun after a change showed may miss it, and the
/// directory's mtime moves with each change.
#[tokio::test(flavor = "multi_thread")]
async fn kept_listings_follow_every_change_under_concurrent_listers() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const N: usize = 60;
    let server = shared_server();
    let p = unique_prefix("m-kept");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/d/keep"), "k").await;
    let name = |i: usize| format!("n{i:02}");
    for flags in [&["--read-only"][..], &[][..]] {
        let mount = Mount::start(&server.endpoint(), &p, flags);
        let dir = mount.file("d");
        // Below N: names 0..step shown. From N: names 0..step-N gone.
        let step = AtomicUsize::new(0);
        let done = AtomicBool::new(false);
        let mtime = || fs::metadata(&dir).unwrap().modified().unwrap();
        let mut last = mtime();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        let before = step.load(Ordering::Acquire);
                        let seen = ls(&dir);
                        let after = step.load(Ordering::Acquire);
                        assert!(seen.contains(&"keep".to_owned()), "{flags:?}: {seen:?}");
                        for i in 0..N {
                            let shown = seen.contains(&name(i));
                            // Added and seen by the writer before this
                            // listing began, and its delete not yet begun
                            // when it ended (step s deletes s - N).
                            let added = i < before.min(N);
                            let kept = after < N || i > after - N;
                            if added && kept {
                                assert!(shown, "{flags:?}: n{i} gone: {seen:?}");
                            }
                            // Deleted and seen gone before it began.
                            if before > N && i < before - N {
                                assert!(!shown, "{flags:?}: deleted n{i} back: {seen:?}");
                            }
                        }
                    }
                });
            }
            // The listers stop however the writer ends.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _stop = Stop(&done);
            let runtime = tokio::runtime::Handle::current();
            for s in 0..2 * N {
                let key = format!("{p}/d/{}", name(s % N));
                let adding = s < N;
                tokio::task::block_in_place(|| {
                    runtime.block_on(async {
                        if adding {
                            put(&mut etcd, &key, "v").await;
                        } else {
                            etcd.delete(key, None).await.unwrap();
                        }
                    })
                });
                wait_until("the change in a fresh listing", || {
                    ls(&dir).contains(&name(s % N)) == adding
                });
                step.store(s + 1, Ordering::Release);
                wait_until("the directory's mtime to move", || mtime() > last);
                last = mtime();
            }
        });
        mount.stop();
    }
}

async fn changes_appear(flags: &[&str]) {
    let server = shared_server();
    let p = unique_prefix("m-live");
    let mut etcd = etcd(&server.endpoint()).await;
    let old = "short";
    put(&mut etcd, &format!("{p}/f"), old).await;
    let mount = Mount::start(&server.endpoint(), &p, flags);
    let file = mount.file("f");
    // Fill the kernel's page cache.
    assert_eq!(fs::read_to_string(&file).unwrap(), old);
    assert_eq!(fs::read_to_string(&file).unwrap(), old);

    for new in ["a much longer value than before", "tiny", ""] {
        let previous = fs::read_to_string(&file).unwrap();
        put(&mut etcd, &format!("{p}/f"), new).await;
        wait_until("the new value through the mount", || {
            let seen = fs::read_to_string(&file).unwrap();
            assert!(
                seen == previous || seen == new,
                "stale or cut data: {seen:?}"
            );
            seen == new
        });
        assert_eq!(fs::metadata(&file).unwrap().len(), new.len() as u64);
    }

    put(&mut etcd, &format!("{p}/new/deep"), "x").await;
    wait_until("a new key in ls", || {
        ls(&mount.path).contains(&"new".to_owned())
    });
    assert_eq!(sh(&mount.path, "cat new/deep"), "x");
    etcd.delete(format!("{p}/f"), None).await.unwrap();
    // The listing comes from the daemon's view at once; the kernel's cached
    // entry is invalidated just after (from a thread of its own: doing it
    // under the view's lock could deadlock with the kernel's directory
    // lock), so for a moment `f` can still be looked up. Both converge.
    wait_until("a deleted key leaves ls and lookups", || {
        !ls(&mount.path).contains(&"f".to_owned()) && !file.exists()
    });
    // A file that becomes a directory.
    put(&mut etcd, &format!("{p}/new/deep/er"), "y").await;
    wait_until("file turned directory", || mount.file("new/deep").is_dir());
    assert_eq!(
        fs::read_to_string(mount.file("new/deep/%value")).unwrap(),
        "x"
    );
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_store_the_whole_file_with_one_put() {
    let server = shared_server();
    let p = unique_prefix("m-write");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/existing"), "a long original value").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);

    sh(&mount.path, "echo hello > greeting");
    assert_eq!(
        get(&mut etcd, &format!("{p}/greeting")).await.unwrap().0,
        b"hello\n"
    );
    sh(&mount.path, "echo world >> greeting");
    assert_eq!(
        get(&mut etcd, &format!("{p}/greeting")).await.unwrap().0,
        b"hello\nworld\n"
    );

    fs::write(mount.file("existing"), "short").unwrap();
    assert_eq!(
        get(&mut etcd, &format!("{p}/existing")).await.unwrap().0,
        b"short",
        "no leftover bytes"
    );

    let (_, revision) = get(&mut etcd, &format!("{p}/existing")).await.unwrap();
    let mut reader = fs::File::open(mount.file("existing")).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    drop(reader);
    assert_eq!(
        get(&mut etcd, &format!("{p}/existing")).await.unwrap().1,
        revision,
        "reading never writes"
    );

    sh(&mount.path, "touch empty-file && truncate -s 2 existing");
    // A file created and closed unwritten is stored when its last
    // descriptor is released, which the kernel sends after close returns.
    let stored = wait_for_key(&mut etcd, &format!("{p}/empty-file")).await;
    assert_eq!(stored.0, b"");
    assert_eq!(
        get(&mut etcd, &format!("{p}/existing")).await.unwrap().0,
        b"sh"
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    fs::write(mount.file("blob"), &binary).unwrap();
    assert_eq!(
        get(&mut etcd, &format!("{p}/blob")).await.unwrap().0,
        binary
    );
    assert_eq!(fs::read(mount.file("blob")).unwrap(), binary);
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_write_is_refused_instead_of_lost() {
    let server = shared_server();
    let p = unique_prefix("m-cas");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/k"), "v1").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);

    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(mount.file("k"))
        .unwrap();
    put(&mut etcd, &format!("{p}/k"), "someone else's update").await;
    file.write_all(b"mine").unwrap();
    let error = file
        .sync_all()
        .expect_err("the other update must not be overwritten");
    assert_eq!(error.raw_os_error(), Some(libc::ESTALE), "{error}");
    drop(file);
    assert_eq!(
        get(&mut etcd, &format!("{p}/k")).await.unwrap().0,
        b"someone else's update"
    );
    mount.stop();

    let lww = Mount::start(&server.endpoint(), &p, &["--conflicts", "lww"]);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(lww.file("k"))
        .unwrap();
    put(&mut etcd, &format!("{p}/k"), "another update").await;
    file.write_all(b"last writer").unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(
        get(&mut etcd, &format!("{p}/k")).await.unwrap().0,
        b"last writer"
    );
    lww.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn everyday_programs_work_on_the_mount() {
    let server = shared_server();
    let p = unique_prefix("m-tools");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/app/a.conf"), "a").await;
    put(&mut etcd, &format!("{p}/app/sub/b.conf"), "b").await;
    put(&mut etcd, &format!("{p}/apple"), "keep me").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);
    let outside = tempfile::tempdir().unwrap();

    // A container copying its config on start.
    sh(
        outside.path(),
        &format!("cp -r {}/app copy", mount.path.display()),
    );
    assert_eq!(
        fs::read_to_string(outside.path().join("copy/sub/b.conf")).unwrap(),
        "b"
    );
    let found = sh(&mount.path, "find . | sort");
    assert_eq!(
        found,
        ".\n./app\n./app/a.conf\n./app/sub\n./app/sub/b.conf\n./apple\n"
    );

    // An operator editing it.
    sh(
        outside.path(),
        &format!("cp -r copy {}/restored", mount.path.display()),
    );
    assert_eq!(
        keys(&mut etcd, &p).await,
        [
            "app/a.conf",
            "app/sub/b.conf",
            "apple",
            "restored/a.conf",
            "restored/sub/b.conf"
        ]
    );
    sh(&mount.path, "mv app/a.conf app/renamed.conf");
    assert_eq!(
        get(&mut etcd, &format!("{p}/app/renamed.conf"))
            .await
            .unwrap()
            .0,
        b"a"
    );
    assert!(get(&mut etcd, &format!("{p}/app/a.conf")).await.is_none());

    sh(&mount.path, "mkdir fresh && test -d fresh");
    assert!(
        keys(&mut etcd, &p)
            .await
            .iter()
            .all(|k| !k.starts_with("fresh")),
        "mkdir alone writes nothing"
    );
    let error = fs::remove_dir(mount.file("app")).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOTEMPTY));
    sh(&mount.path, "rmdir fresh");
    assert!(!mount.file("fresh").exists());
    sh(&mount.path, "mkdir -p x/y && echo z > x/y/z && rm x/y/z");
    assert!(keys(&mut etcd, &p)
        .await
        .iter()
        .all(|k| !k.starts_with("x/")));

    // rm -r of a directory deletes its keys one by one, never /app as a
    // prefix without its slash: /apple stays.
    sh(&mount.path, "rm -r app");
    assert_eq!(
        keys(&mut etcd, &p).await,
        ["apple", "restored/a.conf", "restored/sub/b.conf"]
    );
    sh(&mount.path, "mv restored moved");
    assert_eq!(
        keys(&mut etcd, &p).await,
        ["apple", "moved/a.conf", "moved/sub/b.conf"]
    );

    let error = fs::write(mount.file("bad%name"), "x").unwrap_err();
    assert_eq!(
        error.raw_os_error(),
        Some(libc::EINVAL),
        "a % must be written %25"
    );
    fs::write(mount.file("fifty%25off"), "x").unwrap();
    assert!(get(&mut etcd, &format!("{p}/fifty%off")).await.is_some());
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_mounts_refuse_every_write() {
    let server = shared_server();
    let p = unique_prefix("m-ro");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/d/f"), "v").await;
    for mount in [
        Mount::start(
            &server.endpoint(),
            &p,
            &["--read-only", "--uid", "1234", "--gid", "5678"],
        ),
        Mount::start_with(&server.endpoint(), &p, &[], &[("ETC_READ_ONLY", "true")]),
    ] {
        assert_eq!(
            fs::metadata(mount.file("d/f"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o444
        );
        assert_eq!(
            fs::metadata(mount.file("d")).unwrap().permissions().mode() & 0o777,
            0o555
        );
        let erofs = |result: std::io::Result<()>| {
            assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EROFS))
        };
        erofs(fs::write(mount.file("d/f"), "x"));
        erofs(fs::write(mount.file("new"), "x"));
        erofs(fs::remove_file(mount.file("d/f")));
        erofs(fs::create_dir(mount.file("dir")));
        erofs(fs::rename(mount.file("d/f"), mount.file("d/g")));
        assert_eq!(fs::read_to_string(mount.file("d/f")).unwrap(), "v");
        mount.stop();
    }
    assert_eq!(keys(&mut etcd, &p).await, ["d/f"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_keys_are_escaped_and_none_is_invisible() {
    let server = shared_server();
    let p = unique_prefix("m-odd");
    let mut etcd = etcd(&server.endpoint()).await;
    let long = "L".repeat(300);
    let odd = ["a//b", ".", "..", "x/./y", "100%", &long, "/lead", "sp ace"];
    for (i, key) in odd.iter().enumerate() {
        put(&mut etcd, &format!("{p}/{key}"), format!("value {i}")).await;
    }
    let mount = Mount::start(&server.endpoint(), &p, &[]);
    let files = sh(&mount.path, "find . -type f | wc -l");
    assert_eq!(files.trim(), odd.len().to_string(), "every key is a file");
    assert_eq!(fs::read_to_string(mount.file("a/%/b")).unwrap(), "value 0");
    assert_eq!(fs::read_to_string(mount.file("%2E")).unwrap(), "value 1");
    assert_eq!(fs::read_to_string(mount.file("%2E%2E")).unwrap(), "value 2");
    assert_eq!(
        fs::read_to_string(mount.file("x/%2E/y")).unwrap(),
        "value 3"
    );
    assert_eq!(fs::read_to_string(mount.file("100%25")).unwrap(), "value 4");
    assert_eq!(fs::read_to_string(mount.file("%/lead")).unwrap(), "value 6");
    let shortened: Vec<String> = ls(&mount.path)
        .into_iter()
        .filter(|n| n.contains("%~"))
        .collect();
    assert_eq!(shortened.len(), 1);
    assert!(shortened[0].len() <= 255);
    assert_eq!(
        fs::read_to_string(mount.file(&shortened[0])).unwrap(),
        "value 5"
    );
    // etcd allows any bytes in a key; one that is not UTF-8 is not shown,
    // and the log says which (as the README says).
    let mut raw = format!("{p}/bad-").into_bytes();
    raw.extend_from_slice(&[0xff, 0xfe]);
    etcd.put(raw, "x", None).await.unwrap();
    put(&mut etcd, &format!("{p}/after"), "seen").await;
    wait_until("the key after it", || mount.file("after").exists());
    let log = mount.stop_logged();
    assert!(
        log.contains("not UTF-8") && log.contains("bad-"),
        "the skipped key is named in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_100_000_entries_lists_completely() {
    let server = EtcdServer::start_with(EtcdOptions::new().arg("--max-txn-ops=10000"));
    let mut etcd = etcd(&server.endpoint()).await;
    for batch in 0..10 {
        let ops: Vec<etcd_client::TxnOp> = (0..10_000)
            .map(|i| etcd_client::TxnOp::put(format!("/big/k{:06}", batch * 10_000 + i), "v", None))
            .collect();
        etcd.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .unwrap();
    }
    let mount = Mount::start(&server.endpoint(), "/big", &[]);
    let names = ls(&mount.path);
    assert_eq!(names.len(), 100_000);
    assert_eq!(names[99_999], "k099999");
    mount.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_mount_is_cleaned_by_the_next_one() {
    let server = shared_server();
    let p = unique_prefix("m-kill");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/k"), "v").await;
    let mount = Mount::start(&server.endpoint(), &p, &[]);
    assert_eq!(fs::read_to_string(mount.file("k")).unwrap(), "v");
    let (dir, path) = mount.kill();
    let stale = fs::read_dir(&path).unwrap_err();
    assert_eq!(
        stale.raw_os_error(),
        Some(libc::ENOTCONN),
        "a stale mount is left"
    );
    let again = Mount::start_at(dir, path.clone(), &server.endpoint(), &p, &[], &[]);
    assert_eq!(fs::read_to_string(again.file("k")).unwrap(), "v");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at_path = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
        .count();
    assert_eq!(at_path, 1, "the stale mount was removed, not stacked under");

    // A live mount is not taken over.
    let busy = shylock()
        .args(["--endpoints", &server.endpoint(), "mount"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("is busy"));
    again.stop();
}

/// SIGTERM sent the moment the mount appears (before or just after
/// "mounted" is printed) unmounts cleanly: the signal is caught from before
/// the mount is made. (It killed the process, leaving the mount behind,
/// when it came before the handler was installed, just after the print.)
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_as_the_mount_appears_unmounts_cleanly() {
    let server = shared_server();
    let p = unique_prefix("m-early");
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, &format!("{p}/k"), "v").await;
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        let mut child = shylock()
            .args(["--endpoints", &server.endpoint(), "mount"])
            .arg(&path)
            .args(["--prefix", &p])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Polled without a pause, to signal as early as can be seen.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !is_mounted(&path) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no mount"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: mount exited"
            );
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let left = is_mounted(&path);
        if left {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&path)
                .status();
        }
        assert!(status.success(), "round {round}: exited with {status}");
        assert!(!left, "round {round}: the mount was left behind");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_keeps_the_tree_readable_and_writes_fail_with_eio() {
    let server = EtcdServer::start();
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, "/o/k", "before").await;
    let mount = Mount::start(&server.endpoint(), "/o", &[]);
    server.stop();
    assert_eq!(
        fs::read_to_string(mount.file("k")).unwrap(),
        "before",
        "served from memory"
    );
    let error = write_synced(&mount.file("k"), b"during").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    server.restart();
    let mut etcd = support::etcd(&server.endpoint()).await;
    put(&mut etcd, "/o/k", "after").await;
    wait_until("the change after the outage", || {
        fs::read_to_string(mount.file("k")).unwrap() == "after"
    });
    write_synced(&mount.file("k"), b"written").unwrap();
    assert_eq!(get(&mut etcd, "/o/k").await.unwrap().0, b"written");
    mount.stop();
}

/// Writes a whole file and reports the error of the final put (fs::write
/// drops the file and with it the error close(2) returns).
fn write_synced(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

#[test]
fn errors_say_what_to_do() {
    let missing = shylock()
        .args([
            "--endpoints",
            "http://127.0.0.1:1",
            "mount",
            "/nonexistent/shylock-mnt",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("mkdir"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let unreachable = shylock()
        .args([
            "--endpoints",
            "http://127.0.0.1:1",
            "--dial-timeout",
            "500ms",
            "mount",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "exit code 3: etcd unreachable"
    );
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("could not reach etcd at http://127.0.0.1:1"),
        "{stderr}"
    );

    let usage = shylock().args(["mount"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let help = shylock().args(["mount", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--prefix",
        "--read-only",
        "--uid",
        "--gid",
        "--allow-other",
        "--endpoints",
        "--cacert",
        "--user",
        "--dial-timeout",
        "--config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_permission_error_is_eacces() {
    use etcd_client::Permission;
    let server = EtcdServer::start();
    let mut etcd = etcd(&server.endpoint()).await;
    put(&mut etcd, "/ro/k", "v").await;
    etcd.user_add("root", "root-pw", None).await.unwrap();
    etcd.user_grant_role("root", "root").await.unwrap();
    etcd.role_add("reader").await.unwrap();
    etcd.role_grant_permission("reader", Permission::read("/ro/").with_prefix())
        .await
        .unwrap();
    etcd.user_add("reader", "reader-pw", None).await.unwrap();
    etcd.user_grant_role("reader", "reader").await.unwrap();
    etcd.auth_enable().await.unwrap();

    let before = std::time::SystemTime::now();
    let mount = Mount::start(&server.endpoint(), "/ro", &["--user", "reader:reader-pw"]);
    assert_eq!(
        fs::read_to_string(mount.file("k")).unwrap(),
        "v",
        "reading is allowed"
    );
    let mtime = fs::metadata(mount.file("k")).unwrap().modified().unwrap();
    assert!(
        mtime >= before - std::time::Duration::from_secs(1),
        "mtime is when the mount saw the key"
    );
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(mount.file("k"))
        .unwrap();
    file.write_all(b"x").unwrap();
    let error = file.sync_all().unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EACCES), "{error}");
    // Stopping while a file is still open detaches the mount lazily.
    mount.stop();
    drop(file);
}

/// Listings carry attributes (READDIRPLUS): walking a tree needs no LOOKUP
/// per file, and a read-only mount puts a listing's contents in the kernel's
/// cache ahead of the reads, never a stale one.
#[tokio::test(flavor = "multi_thread")]
async fn a_walk_needs_no_lookup_per_file_and_cached_ahead_contents_follow_changes() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("plus");
    let mut etcd = etcd(&ep).await;
    let value = |i: usize, round: &str| format!("{round} {}", "v".repeat(i));
    for i in 0..50 {
        put(&mut etcd, &format!("{p}/d/f{i:02}"), value(i, "first")).await;
    }
    let metrics = free_addr();
    let mount = Mount::start(&ep, &p, &["--read-only", "--metrics-addr", &metrics]);
    let walk = |round: &str| {
        let dir = mount.file("d");
        assert_eq!(ls(&mount.path), ["d"]);
        let mut names = ls(&dir);
        names.sort();
        assert_eq!(names.len(), 50);
        for (i, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let want = value(i, round);
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                want.len() as u64,
                "{name}"
            );
            assert_eq!(fs::read_to_string(&path).unwrap(), want, "{name}");
        }
    };
    walk("first");
    let page = scrape(&metrics);
    let count = |op: &str| {
        sample(
            &page,
            &format!("shylock_fuse_requests_total{{op=\"{op}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("lookup"), 0.0, "{page}");
    assert!(count("readdirplus") >= 2.0, "{page}");
    // Each listing's files were stored before the walk read them: the
    // walk lists a directory whole first, as `cp -r` does.
    assert_eq!(count("read"), 0.0, "{page}");

    // The kernel keeps the listings: a second walk sends an OPENDIR (and a
    // RELEASEDIR) per directory, and nothing else.
    walk("first");
    let again = scrape(&metrics);
    for op in ["readdirplus", "readdir", "lookup", "read"] {
        let key = format!("shylock_fuse_requests_total{{op=\"{op}\"}}");
        assert_eq!(sample(&again, &key), sample(&page, &key), "{op}:\n{again}");
    }

    // Every value changes: what the kernel cached ahead is not served.
    for i in 0..50 {
        put(&mut etcd, &format!("{p}/d/f{i:02}"), value(i, "second")).await;
    }
    wait_until("the last change to show", || {
        fs::read_to_string(mount.file("d/f49")).is_ok_and(|v| v == value(49, "second"))
    });
    walk("second");
    // The new versions were stored ahead too, after the new listing: not a
    // READ per file (50 when stores were lost). The wait's own read of the
    // new f49, before any listing, is the one READ. (A second came when a
    // sibling's change dropped the directory's entry, and with it the old
    // f49's cached page, while the wait was reading it.)
    let last = scrape(&metrics);
    let key = "shylock_fuse_requests_total{op=\"read\"}";
    let reads = sample(&last, key).unwrap_or(0.0);
    assert_eq!(reads, 1.0, "{reads} READs:\n{last}");
    mount.stop();
}

/// A change tells the kernel only what it made stale: the changed file's
/// own entry, and a directory's entry only where the directory appeared or
/// vanished. The rest of the tree stays cached: reading a sibling or a
/// cousin of the changed file afterwards sends no request at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_keeps_the_cached_entries_and_pages_of_the_rest() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("keep");
    let mut etcd = etcd(&ep).await;
    let files: Vec<String> = (0..10)
        .flat_map(|i| [format!("a/b/f{i:02}"), format!("a/c/g{i:02}")])
        .collect();
    for file in &files {
        put(&mut etcd, &format!("{p}/{file}"), format!("v {file}")).await;
    }
    let metrics = free_addr();
    let mount = Mount::start(&ep, &p, &["--read-only", "--metrics-addr", &metrics]);
    let read_all = |skip: &str, dirs: &[&str]| {
        for dir in dirs {
            assert!(!ls(&mount.file(dir)).is_empty(), "{dir}");
        }
        for file in files.iter().filter(|f| *f != skip) {
            assert_eq!(
                fs::read_to_string(mount.file(file)).unwrap(),
                format!("v {file}")
            );
        }
    };
    read_all("", &["a", "a/b", "a/c"]);
    read_all("", &["a", "a/b", "a/c"]);

    put(&mut etcd, &format!("{p}/a/b/f00"), "new").await;
    wait_until("the change to show", || {
        fs::read_to_string(mount.file("a/b/f00")).is_ok_and(|v| v == "new")
    });
    // The listing of a/b goes (f00 is a new inode); those of a and a/c stay.
    // So do all entries and pages. (Dropping a/b's listing drops its
    // attributes too, which the walk through it may ask for again with a
    // GETATTR, if that invalidation lands after the wait saw f00.)
    let before = scrape(&metrics);
    read_all("a/b/f00", &["a", "a/c"]);
    let after = scrape(&metrics);
    for op in ["lookup", "read", "readdirplus"] {
        let key = format!("shylock_fuse_requests_total{{op=\"{op}\"}}");
        assert_eq!(
            sample(&after, &key),
            sample(&before, &key),
            "{op}: siblings and cousins of a changed file were dropped from the cache:\n{after}"
        );
    }

    // Directories that appear and vanish below the top are still told.
    put(&mut etcd, &format!("{p}/a/b/f01/sub"), "s").await;
    wait_until("a file turned directory", || {
        mount.file("a/b/f01").is_dir()
            && fs::read_to_string(mount.file("a/b/f01/%value")).is_ok_and(|v| v == "v a/b/f01")
    });
    etcd.delete(format!("{p}/a/b/f01/sub"), None).await.unwrap();
    wait_until("the directory turned file again", || {
        fs::read_to_string(mount.file("a/b/f01")).is_ok_and(|v| v == "v a/b/f01")
    });
    put(&mut etcd, &format!("{p}/a/d/x"), "x").await;
    wait_until("a new directory", || {
        ls(&mount.file("a")).contains(&"d".to_owned())
            && fs::read_to_string(mount.file("a/d/x")).is_ok_and(|v| v == "x")
    });
    etcd.delete(format!("{p}/a/d/x"), None).await.unwrap();
    wait_until("the directory to go", || {
        !ls(&mount.file("a")).contains(&"d".to_owned()) && !mount.file("a/d").exists()
    });
    mount.stop();
}
