//! Running shylock as a system tool, through the real binary against real
//! etcd: logs (text and JSON), exit codes, DNS SRV discovery against a
//! local DNS server, `shylock etcd` with ETC_HOSTS/ETC_READ_ONLY, systemd
//! notifications, `--help`, completions and man pages.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_and_the_level_filters_them() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("op-log");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a"), "1").await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.json");
    let export = |args: &[&str], env: &[(&str, &str)]| {
        shylock()
            .args(["--endpoints", &ep])
            .args(args)
            .args(["export", &p, "--dest"])
            .arg(&dest)
            .env_remove("SHYLOCK_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };

    for (args, env) in [
        (
            &["--log-format", "json", "--log-level", "debug"][..],
            &[][..],
        ),
        (
            &[],
            &[("SHYLOCK_LOG_FORMAT", "json"), ("SHYLOCK_LOG", "debug")][..],
        ),
    ] {
        let _ = std::fs::remove_file(&dest);
        let out = export(args, env);
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<serde_json::Value> = stderr(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let written = lines
            .iter()
            .find(|l| l["fields"]["message"] == "written")
            .unwrap_or_else(|| panic!("no `written` line: {lines:?}"));
        assert_eq!(written["level"], "INFO");
        assert_eq!(written["target"], "shylock::export");
        assert_eq!(written["fields"]["dest"], dest.display().to_string());
        assert!(written["timestamp"].is_string());
    }

    // Text, not at a terminal: no colour codes; warn hides info.
    let _ = std::fs::remove_file(&dest);
    let out = export(&[], &[]);
    assert!(
        out.status.success() && stderr(&out).contains("written"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains('\x1b'),
        "colour codes: {:?}",
        stderr(&out)
    );
    let _ = std::fs::remove_file(&dest);
    let out = export(&["--log-level", "warn"], &[]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
    // The flag beats the variable; a RUST_LOG directive works too.
    let _ = std::fs::remove_file(&dest);
    let out = export(
        &["--log-level", "shylock=info"],
        &[("SHYLOCK_LOG", "error")],
    );
    assert!(stderr(&out).contains("written"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_are_the_same_across_commands() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("op-exit");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "1").await;
    let code = |args: &[&str]| {
        let out = shylock().args(args).output().unwrap();
        (out.status.code(), stderr(&out))
    };
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };

    // 2: usage, before anything is done.
    for args in [
        &["get"][..],
        &["--endpoints", &ep, "get", "/x", "--no-such-flag"],
        &["--endpoints", &ep, "--log-level", "loud", "get", "/x"],
        &["--endpoints", &ep, "--log-format", "xml", "get", "/x"],
        &[
            "--endpoints",
            &ep,
            "--discovery-srv",
            "example.com",
            "get",
            "/x",
        ],
        &[
            "--endpoints",
            &ep,
            "render",
            "-backend",
            "consul",
            "-onetime",
        ],
    ] {
        let (code, text) = code(args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
    }
    // 3: etcd unreachable, for a unary command and for a follower.
    for args in [
        &["--endpoints", &closed, "--dial-timeout", "1s", "get", "/x"][..],
        &[
            "--endpoints",
            &closed,
            "--dial-timeout",
            "1s",
            "put",
            "/x",
            "1",
        ],
        &[
            "--endpoints",
            &closed,
            "--dial-timeout",
            "1s",
            "export",
            "/x",
            "--dest",
            "/nonexistent/x",
        ],
        &[
            "--endpoints",
            &closed,
            "--dial-timeout",
            "1s",
            "sync",
            "/x",
            "/nonexistent/x",
        ],
    ] {
        let (code, text) = code(args);
        assert_eq!(code, Some(3), "{args:?}: {text}");
        assert!(text.contains("shylock: error:"), "{text}");
    }
    // 1: failed.
    let (status, text) = code(&["--endpoints", &ep, "get", &format!("{p}/nope")]);
    assert_eq!(status, Some(1), "{text}");

    // 4: some of the work done. Two resources, one of them broken.
    let c = Confdir::new();
    let out = c.single("good", "v={{getv \"/v\"}}\n", &p, "/v");
    c.single("bad", "{{getv \"/missing\"}}\n", &p, "/missing");
    let partial = c.render(&ep, &["-onetime"]);
    assert_eq!(partial.status.code(), Some(4), "{}", stderr(&partial));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v=1\n");
    std::fs::remove_file(c.path("conf.d/good.toml")).unwrap();
    let failed = c.render(&ep, &["-onetime"]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "all failed: {}",
        stderr(&failed)
    );

    let help = String::from_utf8(shylock().arg("--help").output().unwrap().stdout).unwrap();
    assert!(help.contains("Exit codes: 0 done, 1 failed, 2 usage error, 3 etcd unreachable, 4"));
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_found_through_dns_srv_records() {
    let server = shared_server();
    let ep = server.endpoint();
    let port: u16 = ep.rsplit(':').next().unwrap().parse().unwrap();
    let p = unique_prefix("op-srv");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "from dns").await;
    // A dead endpoint first: the client moves on to the live one.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let dns = dns::DnsServer::start(vec![
        (
            "_etcd-client._tcp.example.test".into(),
            vec![(0, 0, dead_port, "127.0.0.1."), (0, 0, port, "127.0.0.1.")],
        ),
        (
            "_etcd._tcp.confd.test".into(),
            vec![(0, 0, port, "127.0.0.1.")],
        ),
    ]);
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shylock"));

    let out = dns
        .command(&bin)
        .args(["--discovery-srv", "example.test", "get", &format!("{p}/v")])
        .env_remove("SHYLOCK_ENDPOINTS")
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"from dns");

    // From the environment, as etcdctl's variable.
    let out = dns
        .command(&bin)
        .args(["get", &format!("{p}/v")])
        .env("ETCDCTL_DISCOVERY_SRV", "example.test")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"from dns", "{}", stderr(&out));

    // confd's -srv-domain: _etcd._tcp.<domain>.
    let c = Confdir::new();
    let dest = c.single("r", "{{getv \"/v\"}}\n", &p, "/v");
    let out = dns
        .command(&bin)
        .args([
            "render",
            "-onetime",
            "-backend",
            "etcd",
            "-srv-domain",
            "confd.test",
            "-confdir",
        ])
        .arg(c.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "from dns\n");

    // A domain without records: an error naming both records looked up.
    let out = dns
        .command(&bin)
        .args(["--discovery-srv", "nothing.test", "get", "/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("_etcd-client-ssl._tcp.nothing.test")
            && text.contains("_etcd-client._tcp.nothing.test"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shylock_etcd_mounts_with_etc_hosts_and_etc_read_only() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("op-etc");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/hosts"), "10.0.0.1 db\n").await;
    let metrics = free_addr();
    let start = |read_only: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd");
        std::fs::create_dir(&path).unwrap();
        let mut command = shylock();
        command
            .args(["--metrics-addr", &metrics])
            .arg("etcd")
            .arg(&path)
            .env("ETC_HOSTS", &ep)
            .env_remove("SHYLOCK_ENDPOINTS")
            .env_remove("ETCDCTL_ENDPOINTS");
        if let Some(value) = read_only {
            command.env("ETC_READ_ONLY", value);
        }
        Mount::spawn(command, dir, path, false)
    };
    let key = p.trim_start_matches('/');

    let mount = start(None);
    assert_eq!(
        std::fs::read_to_string(mount.file(&format!("{key}/hosts"))).unwrap(),
        "10.0.0.1 db\n"
    );
    // The FUSE requests it served, in its metrics.
    let page = scrape(&metrics);
    for op in ["lookup", "open", "read"] {
        let series = format!("shylock_fuse_requests_total{{op=\"{op}\"}}");
        assert!(
            sample(&page, &series).is_some_and(|n| n >= 1.0),
            "{op}: {page}"
        );
    }
    std::fs::write(mount.file(&format!("{key}/new")), "written").unwrap();
    assert_eq!(
        wait_for_key(&mut etcd, &format!("{p}/new")).await.0,
        b"written"
    );
    mount.stop();

    let mount = start(Some("true"));
    let error = std::fs::write(mount.file(&format!("{key}/other")), "x").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EROFS));
    assert_eq!(
        std::fs::read_to_string(mount.file(&format!("{key}/hosts"))).unwrap(),
        "10.0.0.1 db\n"
    );
    mount.stop();
}

/// A socket standing in for systemd's, as NOTIFY_SOCKET names it.
struct Systemd {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    socket: UnixDatagram,
}

impl Systemd {
    fn new() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        Systemd {
            _dir: dir,
            path,
            socket,
        }
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let len = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification in {DEADLINE:?}: {e}"));
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }

    /// The next notification that is not a status line or a watchdog ping.
    fn next_state(&self) -> String {
        loop {
            let message = self.next();
            if !message.starts_with("STATUS=") && message != "WATCHDOG=1" {
                return message;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_tell_systemd_when_they_serve_and_when_they_stop() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("op-notify");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "1").await;
    let c = Confdir::new();
    let dest = c.path("out");
    let env_file = c.path("reload-env");
    c.template("t", "{{getv \"/v\"}}\n").resource(
        "r",
        &format!(
            "[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\nreload_cmd = \"env > {}\"\n",
            dest.display(),
            env_file.display()
        ),
    );
    let systemd = Systemd::new();
    let daemon = Daemon(
        shylock()
            .args(["--endpoints", &ep, "render", "--confdir"])
            .arg(c.dir.path())
            .env("NOTIFY_SOCKET", &systemd.path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(c.path("render.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ready = systemd.next_state();
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready}");
    // Ready means rendered: the file is there when systemd hears it.
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "1\n");
    // Watchdog pings, every half of WATCHDOG_USEC.
    let pings = (0..20)
        .map(|_| systemd.next())
        .filter(|m| m == "WATCHDOG=1")
        .count();
    assert!(pings >= 2, "{pings} pings");
    // Commands do not inherit the socket.
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !env.contains("NOTIFY_SOCKET") && !env.contains("WATCHDOG_"),
        "{env}"
    );
    let pid = daemon.id();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(systemd.next_state(), "STOPPING=1");
    assert!(daemon.stop().success());

    // A mount is ready once it serves; no watchdog unless asked.
    let systemd = Systemd::new();
    let mut command = shylock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mnt");
    std::fs::create_dir(&path).unwrap();
    command
        .args(["--endpoints", &ep, "mount"])
        .arg(&path)
        .args(["--prefix", &p])
        .env("NOTIFY_SOCKET", &systemd.path);
    let mount = Mount::spawn(command, dir, path, false);
    let ready = systemd.next_state();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert_eq!(std::fs::read_to_string(mount.file("v")).unwrap(), "1");
    systemd
        .socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        systemd.socket.recv(&mut buf).is_err(),
        "no watchdog without WATCHDOG_USEC"
    );
    mount.stop();
}

#[test]
fn help_groups_connection_options_and_completions_and_man_pages_generate() {
    let help = shylock().args(["get", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let options = help.find("--prefix").unwrap();
    let connection = help.find("Connection:").expect("a Connection heading");
    let endpoints = help.find("--endpoints").unwrap();
    assert!(options < connection && connection < endpoints, "{help}");
    assert!(help.find("Logging:").unwrap() > endpoints, "{help}");

    let bash = shylock().args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    // bash itself loads it, and completes subcommands from it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shylock.bash"), &script).unwrap();
    let complete = Command::new("bash")
        .arg("-c")
        .arg(
            "source \"$0\" && COMP_WORDS=(shylock re) COMP_CWORD=1 COMP_LINE='shylock re' \
             COMP_POINT=10 && _shylock shylock re shylock && echo \"${COMPREPLY[@]}\"",
        )
        .arg(dir.path().join("shylock.bash"))
        .output()
        .unwrap();
    assert!(complete.status.success(), "{}", stderr(&complete));
    assert_eq!(String::from_utf8_lossy(&complete.stdout).trim(), "render");
    for shell in ["zsh", "fish"] {
        let out = shylock().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }

    let man = dir.path().join("man");
    let out = shylock().arg("man").arg(&man).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let render = std::fs::read_to_string(man.join("shylock-render.1")).unwrap();
    assert!(render.contains(".TH shylock-render 1"), "{render}");
    assert!(render.contains("confdir"), "{render}");
    for page in [
        "shylock.1",
        "shylock-mount.1",
        "shylock-get.1",
        "shylock-watch.1",
    ] {
        assert!(man.join(page).exists(), "{page}");
    }
}
