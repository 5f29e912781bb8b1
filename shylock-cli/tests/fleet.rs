//! Fleet convergence against a real etcd: library processes
//! (examples/fleet_member.rs) and a `render` daemon publish instance
//! reports; `shylock status` and `shylock wait` read them.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::*;

/// A fleet member process, stopped when dropped.
struct Member {
    daemon: Daemon,
    log: PathBuf,
    /// What it printed so far.
    printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Member {
    /// Starts one and waits until it follows the config.
    fn start(
        endpoint: &str,
        prefix: &str,
        instance: &str,
        min_port: u16,
        extra: &[&str],
    ) -> Member {
        Self::start_with(endpoint, prefix, instance, min_port, extra, &[])
    }

    /// Like [`start`](Self::start), with environment variables.
    fn start_with(
        endpoint: &str,
        prefix: &str,
        instance: &str,
        min_port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Member {
        let binary = example("fleet_member");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("member.log");
        let mut child = Command::new(&binary)
            .args([endpoint, prefix, instance, &min_port.to_string()])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let daemon = Daemon(child);
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(
            first.as_deref(),
            Some("following"),
            "{instance}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let printed: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let sink = std::sync::Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Member {
            daemon,
            log,
            printed,
            _dir: dir,
        }
    }

    fn printed(&self, line: &str) -> bool {
        self.printed.lock().unwrap().iter().any(|l| l == line)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn status(endpoint: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = shylock()
        .args(["--endpoints", endpoint, "status"])
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The instances of a status document, by name: (applied, rejecting, reason).
fn instances(status: &serde_json::Value) -> Vec<(String, i64, bool, String)> {
    let mut all: Vec<_> = status["instances"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["instance"].as_str().unwrap().to_owned(),
                i["applied_revision"].as_i64().unwrap(),
                i["rejecting"].as_bool().unwrap(),
                i["rejected"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_reports_status_names_rejections_and_wait_gates_on_them() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let p = "/fleet/web";
    let mut etcd = etcd(&ep).await;
    let r0 = put(&mut etcd, &format!("{p}/port"), "8080").await;

    let a = Member::start(&ep, p, "a", 1, &["role=web"]);
    let b = Member::start(&ep, p, "b", 1, &["role=web"]);
    let c_metrics = free_addr();
    let c = Member::start_with(
        &ep,
        p,
        "c",
        1000,
        &["role=batch"],
        &[("SHYLOCK_METRICS_ADDR", &c_metrics)],
    );
    let confdir = Confdir::new();
    let rendered = confdir.single("web", "port {{getv \"/port\"}}\n", p, "/port");
    let render_metrics = free_addr();
    let render = confdir.spawn(
        &ep,
        &[
            "--report",
            "--report-instance",
            "render-1",
            "--report-ttl",
            "2s",
            "--metrics-addr",
            &render_metrics,
            "--stall-timeout",
            "900ms",
        ],
    );
    // The other daemons report too: a sync and a mount of the prefix.
    let synced = tempfile::tempdir().unwrap();
    let report = |name: &'static str| ["--report", "--report-instance", name, "--report-ttl", "2s"];
    let sync_log = synced.path().join("sync.log");
    let sync_dir = synced.path().join("dir").display().to_string();
    let mut sync_args = vec!["sync", p, &sync_dir, "--watch"];
    sync_args.extend(report("sync-1"));
    let sync = Daemon::spawn(&ep, &sync_args, &sync_log);
    let mount = Mount::start(&ep, p, &report("mount-1"));
    wait_until("six reports at the first revision", || {
        let (_, json, _) = status(&ep, &[p]);
        let all = instances(&json);
        all.len() == 6 && all.iter().all(|i| i.1 >= r0)
    });
    let (code, json, _) = status(&ep, &[p]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["revision"].as_i64(), Some(r0));
    let render_report = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "render-1")
        .unwrap();
    assert_eq!(render_report["program"], "shylock render");
    let wait = run(
        &ep,
        &["wait", p, "--revision", &r0.to_string(), "--instances", "6"],
    );
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );

    // Port 100: a, b and the render accept it; c (at least 1000) refuses.
    let r1 = put(&mut etcd, &format!("{p}/port"), "100").await;
    let wait = run(
        &ep,
        &["wait", p, "--revision", &r1.to_string(), "--timeout", "10s"],
    );
    let stderr = String::from_utf8_lossy(&wait.stderr);
    assert_eq!(wait.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rejected by 1 instance(s): c:")
            && stderr.contains("port 100 is below 1000"),
        "{stderr}"
    );
    wait_until("all but c at r1", || {
        let (_, json, _) = status(&ep, &[p]);
        instances(&json).iter().filter(|i| i.1 >= r1).count() == 5
    });
    let (code, json, _) = status(&ep, &[p]);
    assert_eq!(code, Some(1), "a rejecting instance fails the gate: {json}");
    let c_report = instances(&json).into_iter().find(|i| i.0 == "c").unwrap();
    assert!(
        c_report.2 && c_report.3.contains("port 100 is below 1000"),
        "{c_report:?}"
    );
    // The same story in metrics: the library's, and the render daemon's.
    let page = scrape(&c_metrics);
    let series = |name: &str, labels: &str| format!("{name}{{prefix=\"{p}\"{labels}}}");
    assert_eq!(
        sample(
            &page,
            &series("shylock_config_updates_total", ",result=\"rejected\"")
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, &series("shylock_config_rejected_revision", "")),
        Some(r1 as f64),
        "{page}"
    );
    // c still runs the config it read before r1 (at its read's revision).
    assert!(
        sample(&page, &series("shylock_config_revision", ""))
            .is_some_and(|r| r >= r0 as f64 && r < r1 as f64),
        "{page}"
    );
    assert_eq!(
        sample(&page, &series("shylock_config_connected", "")),
        Some(1.0)
    );
    let page = scrape(&render_metrics);
    assert!(
        sample(
            &page,
            "shylock_renders_total{resource=\"web.toml\",result=\"ok\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{page}"
    );
    assert!(
        sample(&page, "shylock_watch_revision").is_some_and(|r| r >= r1 as f64),
        "{page}"
    );
    // etcd answered the render's stream recently (staleness = now - this).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        sample(&page, "shylock_watch_last_event_timestamp_seconds")
            .is_some_and(|t| t <= now + 1.0 && now - t < 60.0),
        "{page}"
    );
    // With nothing changing under the prefix, etcd's answers to the probes
    // (every 300 ms at --stall-timeout 900ms) keep it moving.
    wait_until("a probe's answer after a quiet second", || {
        sample(
            &scrape(&render_metrics),
            "shylock_watch_last_event_timestamp_seconds",
        )
        .is_some_and(|t| t > now + 1.0)
    });
    let table = run(&ep, &["status", p]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("port 100 is below 1000") && text.contains("render-1"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&rendered).unwrap(), "port 100\n");
    // The web role alone has converged.
    let wait = run(&ep, &["wait", p, "--label", "role=web", "--instances", "2"]);
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );

    // A killed instance's report goes with its lease (TTL 2 s).
    b.daemon.kill();
    wait_until("b's report to expire", || {
        let (_, json, _) = status(&ep, &[p]);
        !instances(&json).iter().any(|i| i.0 == "b")
    });

    // etcd restarted: the reports are there, and follow the next change.
    server.stop();
    server.restart();
    let r2 = put(&mut etcd, &format!("{p}/port").to_owned(), "2000").await;
    let wait = run(
        &ep,
        &[
            "wait",
            p,
            "--revision",
            &r2.to_string(),
            "--instances",
            "5",
            "--timeout",
            "10s",
        ],
    );
    assert!(
        wait.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&wait.stderr),
        c.log()
    );
    let (code, json, _) = status(&ep, &[p]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(
        instances(&json)
            .iter()
            .map(|i| i.0.as_str())
            .collect::<Vec<_>>(),
        ["a", "c", "mount-1", "render-1", "sync-1"]
    );

    // Every lease lost (as after restoring etcd from a backup): the reports
    // go, and come back under new leases, with what each instance runs.
    let leases = etcd.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 5, "one lease per process");
    for lease in leases.leases() {
        etcd.lease_revoke(lease.id()).await.unwrap();
    }
    let (_, json, _) = status(&ep, &[p]);
    assert!(instances(&json).len() < 5, "{json}");
    wait_until("the reports to come back", || {
        let (code, json, _) = status(&ep, &[p]);
        code == Some(0) && instances(&json).len() == 5
    });
    // A clean stop takes an instance's report out at once (the 2 s lease
    // would keep it longer).
    let gone = |name: &str| {
        let (_, json, _) = status(&ep, &[p]);
        !instances(&json).iter().any(|i| i.0 == name)
    };
    assert!(a.daemon.stop().success());
    assert!(gone("a"), "library instance a still listed");
    assert!(render.stop().success());
    assert!(gone("render-1"), "render-1 still listed");
    assert!(sync.stop().success());
    assert!(gone("sync-1"), "sync-1 still listed");
    mount.stop();
    assert!(gone("mount-1"), "mount-1 still listed");
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_cannot_write_reports_gets_a_warning_and_a_working_config() {
    let server = EtcdServer::start();
    let ep = server.endpoint();
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, "/ro/port", "8080").await;
    etcd.user_add("root", "root-pw", None).await.unwrap();
    etcd.user_grant_role("root", "root").await.unwrap();
    etcd.role_add("reader").await.unwrap();
    etcd.role_grant_permission(
        "reader",
        etcd_client::Permission::read("/ro/").with_prefix(),
    )
    .await
    .unwrap();
    etcd.user_add("app", "app-pw", None).await.unwrap();
    etcd.user_grant_role("app", "reader").await.unwrap();
    etcd.auth_enable().await.unwrap();

    let member = Member::start(&ep, "/ro", "ro-1", 1, &["role=web", "app:app-pw"]);
    wait_until("a warning about reports", || {
        member.log().contains("cannot write status reports")
    });
    assert!(!member.log().contains("app-pw"), "no password in the log");
    let mut root = etcd_client::Client::connect(
        [ep.as_str()],
        Some(etcd_client::ConnectOptions::new().with_user("root", "root-pw")),
    )
    .await
    .unwrap();
    put(&mut root, "/ro/port", "9090").await;
    wait_until("the config to follow etcd", || member.printed("port 9090"));
    // Nothing was written under the reporting root.
    let reports = root
        .get(
            "_shylock/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(reports.kvs().is_empty());
}
