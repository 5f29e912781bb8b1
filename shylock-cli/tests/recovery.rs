//! The file writers on a full disk (a real, tiny tmpfs): nothing half
//! written is left to fill it, the last good files keep serving, and they
//! converge once space returns, without a new change in etcd. Regression
//! tests: failed `..v*` versions were never removed (even a restart then
//! failed), `sync --watch` and `export --watch` never retried a failed
//! write, and `export --watch` exited when its first write failed.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// A tmpfs of a few hundred KiB, unmounted on drop.
struct TinyDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TinyDisk {
    fn new(size: &str) -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs (the tests run as root)");
        TinyDisk { _dir: dir, path }
    }

    /// Fills the disk with a file of its own; returns that file.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut file, &block).is_ok() {}
        filler
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The `..v*` version directories in a synced directory.
fn versions(dir: &Path) -> Vec<String> {
    ls(dir)
        .into_iter()
        .filter(|n| n.starts_with("..v"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_on_a_full_disk_keeps_its_version_and_converges_when_space_returns() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("rc-sync");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a"), vec![b'a'; 20_000]).await;
    let disk = TinyDisk::new("256k");
    let out = disk.path.join("out");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sync.log");
    let child = Daemon::spawn(
        &ep,
        &[
            "sync",
            &p,
            &out.to_string_lossy(),
            "--watch",
            "--retry-min",
            "100ms",
            "--retry-max",
            "200ms",
        ],
        &log,
    );
    wait_until("the first version", || out.join("a").exists());

    let filler = disk.fill();
    put(&mut etcd, &format!("{p}/b"), vec![b'b'; 20_000]).await;
    wait_until("a failed version, retried", || {
        fs::read_to_string(&log).is_ok_and(|l| l.matches("sync failed").count() >= 3)
    });
    // A retry's version exists while it is written and is removed when it
    // fails: between attempts only the last good one is there.
    wait_until("no half-written version left between retries", || {
        versions(&out).len() == 1
    });
    assert_eq!(
        fs::read(out.join("a")).unwrap().len(),
        20_000,
        "the last version serves"
    );
    assert!(!out.join("b").exists());

    // Space returns; no change in etcd: the retry converges.
    fs::remove_file(filler).unwrap();
    // The old version goes just after the new one is published.
    wait_until("b once space returned, and the old version gone", || {
        fs::read(out.join("b")).is_ok_and(|b| b.len() == 20_000) && versions(&out).len() == 1
    });
    assert!(child.stop().success());

    // A crash mid-version: the next start cleans it up before writing.
    fs::create_dir(out.join("..v0.1.1")).unwrap();
    fs::write(out.join("..v0.1.1/half"), vec![0u8; 1000]).unwrap();
    let status = shylock()
        .args(["--endpoints", &ep, "sync", &p])
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(versions(&out).len(), 1, "{:?}", ls(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn export_watch_survives_a_full_disk_at_start_and_writes_once_space_returns() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("rc-export");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/value"), vec![b'v'; 50_000]).await;
    let disk = TinyDisk::new("256k");
    let filler = disk.fill();
    let dest = disk.path.join("value");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("export.log");
    let key = format!("{p}/value");
    let mut child = Daemon::spawn(
        &ep,
        &[
            "export",
            &key,
            "--dest",
            &dest.to_string_lossy(),
            "--watch",
            "--retry-min",
            "100ms",
            "--retry-max",
            "200ms",
        ],
        &log,
    );
    wait_until("the first write to fail and be retried", || {
        fs::read_to_string(&log).is_ok_and(|l| l.matches("not written").count() >= 3)
    });
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
    assert!(!dest.exists(), "no partial file");
    let staged: Vec<String> = ls(&disk.path)
        .into_iter()
        .filter(|n| n.starts_with(".value"))
        .collect();
    assert!(staged.is_empty(), "no staged file left: {staged:?}");

    fs::remove_file(filler).unwrap();
    wait_until("the file once space returned", || {
        fs::read(&dest).is_ok_and(|v| v.len() == 50_000)
    });
    assert!(child.stop().success());
}
