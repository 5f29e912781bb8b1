//! Staged files of the file writers, under kill -9 and under a second
//! local user (`nobody`) who can write the destination's directory.
//! Regression tests: staged files were named `.<name>.shylock-<pid>`,
//! opened with create+truncate (following a planted link), renamed without
//! a check, left behind by a killed writer, and a resource without `mode`
//! turned an existing 0600 file into 0644.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const NOBODY: u32 = 65534;

/// Runs a shell script as `nobody`, the other local user.
fn as_nobody(script: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(status.success(), "`{script}` as nobody failed");
}

/// Staged files of `name` in `dir`.
fn staged(dir: &Path, name: &str) -> Vec<PathBuf> {
    let start = format!(".{name}.shylock-");
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&start))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// A confdir rendering `{p}/v` into `dest`, with an optional check script.
fn confdir(p: &str, dest: &Path, extra: &str) -> Confdir {
    let c = Confdir::new();
    c.template("t", "value {{getv \"/v\"}}\n").resource(
        "app",
        &format!(
            "[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\n{extra}",
            dest.display()
        ),
    );
    c
}

/// A directory every local user may write (no sticky bit), as a careless
/// shared config directory would be.
fn open_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_mid_render_leaves_no_staged_file_behind() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("st-kill");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "0").await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("app.conf");
    let flags = tempfile::tempdir().unwrap();
    let go = flags.path().join("go");
    // The check holds each render at its staged file until `go` exists.
    let c = Confdir::new();
    let check = c.script(
        "check.sh",
        &format!(
            // At most 30 s, so a failed test leaves nothing running.
            "i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done",
            go = go.display()
        ),
    );
    let c2 = confdir(
        &p,
        &dest,
        &format!("check_cmd = \"{check} {{{{.src}}}}\"\n"),
    );
    for round in 0..8 {
        let daemon = c2.spawn(&ep, &[]);
        let mine = format!(".app.conf.shylock-{}", daemon.id());
        let ours = |path: &PathBuf| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&mine)
        };
        wait_until("this writer's staged file under check", || {
            staged(out.path(), "app.conf").iter().any(ours)
        });
        // The earlier rounds' staged files are gone: only this one is left.
        let found = staged(out.path(), "app.conf");
        assert!(
            found.len() == 1 && ours(&found[0]),
            "round {round}: {found:?}"
        );
        daemon.kill();
    }
    fs::write(&go, "").unwrap();
    let daemon = c2.spawn(&ep, &[]);
    wait_until("the render installed", || text(&dest) == "value 0\n");
    assert_eq!(staged(out.path(), "app.conf"), Vec::<PathBuf>::new());
    let names = ls(out.path());
    assert_eq!(names, ["app.conf"], "only the destination is left");
    stop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn links_planted_by_another_user_are_never_followed() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("st-link");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "first").await;
    let out = open_directory();
    let dest = out.path().join("app.conf");
    // A file only root may read or write, elsewhere.
    let private = tempfile::tempdir().unwrap();
    let secret = private.path().join("shadow");
    fs::write(&secret, "root's own\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();

    let c = confdir(&p, &dest, "mode = \"0600\"\n");
    let daemon = c.spawn(&ep, &[]);
    wait_until("the first render", || text(&dest) == "value first\n");
    // Seeing the writer's pid, nobody plants links at every name the old
    // scheme would use next, and one at the destination's staged name.
    let pid = daemon.id();
    for name in [
        format!(".app.conf.shylock-{pid}"),
        format!(".app.conf.{pid}.0.tmp"),
    ] {
        as_nobody(&format!(
            "ln -s {} {}",
            secret.display(),
            out.path().join(name).display()
        ));
    }
    put(&mut etcd, &format!("{p}/v"), "second").await;
    wait_until("the next render", || text(&dest) == "value second\n");

    assert_eq!(fs::read_to_string(&secret).unwrap(), "root's own\n");
    let meta = fs::symlink_metadata(&dest).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the destination is a file, not a link"
    );
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    stop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_staged_file_swapped_during_the_check_is_not_installed() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("st-swap");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "secret-value").await;
    let out = open_directory();
    let dest = out.path().join("app.conf");
    fs::write(&dest, "old\n").unwrap();
    let flags = tempfile::tempdir().unwrap();
    fs::set_permissions(flags.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let (checking, go) = (flags.path().join("checking"), flags.path().join("go"));
    let c = Confdir::new();
    let check = c.script(
        "check.sh",
        &format!(
            "touch {checking}; i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done",
            checking = checking.display(),
            go = go.display()
        ),
    );
    let c2 = confdir(
        &p,
        &dest,
        &format!("mode = \"0600\"\ncheck_cmd = \"{check} {{{{.src}}}}\"\n"),
    );
    let daemon = c2.spawn(&ep, &["--retry-min", "1h"]);
    wait_until("the check to start", || checking.exists());
    let found = staged(out.path(), "app.conf");
    let [staged_file] = found.as_slice() else {
        panic!("one staged file: {found:?}");
    };
    // The staged copy holds the secret, but only root may read it.
    assert_eq!(fs::metadata(staged_file).unwrap().mode() & 0o777, 0o600);
    let stolen = Command::new("cat")
        .arg(staged_file)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        !stolen.status.success(),
        "nobody cannot read the staged copy"
    );
    // nobody moves it away and puts a file of their own in its place.
    as_nobody(&format!(
        "mv {s} {s}.moved && echo evil > {s}",
        s = staged_file.display()
    ));
    fs::write(&go, "").unwrap();
    wait_until("the render to give up", || {
        log(&c2).contains("replaced or removed")
    });
    assert_eq!(text(&dest), "old\n", "the destination was not replaced");
    stop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_files_mode_and_owner_are_kept_unless_set() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("st-mode");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "x").await;
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("app.conf");
    fs::write(&dest, "old\n").unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&dest, Some(NOBODY), Some(NOBODY)).unwrap();

    let c = confdir(&p, &dest, "");
    let out_run = c.render(&ep, &["--onetime"]);
    assert!(
        out_run.status.success(),
        "{}",
        String::from_utf8_lossy(&out_run.stderr)
    );
    assert_eq!(text(&dest), "value x\n");
    let meta = fs::metadata(&dest).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o600, NOBODY, NOBODY)
    );

    // export keeps them too, and --mode sets one.
    let exported = out.path().join("v");
    fs::write(&exported, "").unwrap();
    fs::set_permissions(&exported, fs::Permissions::from_mode(0o640)).unwrap();
    let key = format!("{p}/v");
    let run = |extra: &[&str]| {
        let status = shylock()
            .args(["--endpoints", &ep, "export", &key, "--dest"])
            .arg(&exported)
            .args(extra)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        fs::metadata(&exported).unwrap().mode() & 0o777
    };
    assert_eq!(run(&[]), 0o640);
    assert_eq!(text(&exported), "x");
    assert_eq!(run(&["--mode", "0600"]), 0o600);
    // A new file gets 0644.
    fs::remove_file(&exported).unwrap();
    assert_eq!(run(&[]), 0o644);
}
