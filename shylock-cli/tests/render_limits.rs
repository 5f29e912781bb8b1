//! `shylock render` with templates that would run away: huge `seq`s, loops
//! of billions of steps, output without end, patterns that backtrack. Each
//! fails with an error naming the template, the old file stays, and the
//! daemon stays responsive: SIGTERM ends it at once, installing nothing.
//! Regression tests: seq(1, 3000000000) aborted the daemon, a 4e8-step loop
//! deferred SIGTERM 20+ s (and a file was installed after it), and
//! gets("/a/g/*a*a*a*a*a*a*b") ran past 60 s.

mod support;

use std::fs;
use std::process::Stdio;
use std::time::Instant;

use support::*;

/// A confdir rendering `template` from the keys under `{p}/a` into `out`.
fn confdir(p: &str, template: &str) -> (Confdir, std::path::PathBuf) {
    let c = Confdir::new();
    let dest = c.path("out");
    fs::write(&dest, "old\n").unwrap();
    c.template("t", template).resource(
        "r",
        &format!(
            "[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/a\"]\n",
            dest.display()
        ),
    );
    (c, dest)
}

/// Renders once; returns stderr, checking that it failed and kept the file.
fn fails_keeping_the_file(c: &Confdir, dest: &std::path::Path, ep: &str, extra: &[&str]) -> String {
    let mut args = vec!["--onetime"];
    args.extend_from_slice(extra);
    let out = c.render(ep, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        fs::read_to_string(dest).unwrap(),
        "old\n",
        "the old file stays"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_templates_fail_with_an_error_and_keep_the_old_file() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("rl");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a/n"), "3000000000").await;
    for i in 0..30 {
        put(&mut etcd, &format!("{p}/a/g/{}", "a".repeat(i + 1)), "x").await;
    }

    let (c, dest) = confdir(
        &p,
        "{% for i in seq(1, atoi(getv(\"/a/n\"))) %}{{ i }}{% endfor %}",
    );
    let stderr = fails_keeping_the_file(&c, &dest, &ep, &[]);
    assert!(stderr.contains("seq(1, 3000000000)"), "{stderr}");

    let (c, dest) = confdir(
        &p,
        "{% for i in seq(1, 1000000) %}{% for j in seq(1, 1000) %}{% endfor %}{% endfor %}",
    );
    let stderr = fails_keeping_the_file(&c, &dest, &ep, &["--max-render-steps", "1000000"]);
    assert!(stderr.contains("fuel"), "out of steps: {stderr}");

    let (c, dest) = confdir(
        &p,
        "{% for i in seq(1, 100000) %}{{ i }} line of output\n{% endfor %}",
    );
    let stderr = fails_keeping_the_file(&c, &dest, &ep, &["--max-output-bytes", "100000"]);
    assert!(stderr.contains("larger than 100000 bytes"), "{stderr}");

    let (c, dest) = confdir(&p, "{{ getvs(\"/a/g/[\") }}");
    let stderr = fails_keeping_the_file(&c, &dest, &ep, &[]);
    assert!(
        stderr.contains("syntax error in pattern"),
        "a bad pattern is an error: {stderr}"
    );

    // Matching is linear: this pattern backtracked for over a minute.
    let (c, dest) = confdir(&p, "{{ getvs(\"/a/g/*a*a*a*a*a*a*b\") | length }}\n");
    let out = c.render(&ep, &["--onetime"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&dest).unwrap(), "0\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_long_render_ends_the_daemon_at_once_installing_nothing() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("rl-term");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a/n"), "1").await;
    // Billions of steps allowed: the render would run for minutes.
    let (c, dest) = confdir(
        &p,
        "{% for i in seq(1, 1000000) %}{% for j in seq(1, 1000000) %}{% endfor %}{% endfor %}",
    );
    let log = c.path("render.log");
    let child = Daemon(
        shylock()
            .env("SHYLOCK_LOG", "shylock=debug")
            .args(["--endpoints", &ep, "render", "--confdir"])
            .arg(c.dir.path())
            .args([
                "--max-render-steps",
                "100000000000",
                "--render-timeout",
                "1h",
            ])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("the daemon to start rendering", || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("rendering"))
    });
    let asked = Instant::now();
    let status = child.stop();
    eprintln!("exited {:?} after SIGTERM", asked.elapsed());
    assert!(
        status.success(),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        fs::read_to_string(&dest).unwrap(),
        "old\n",
        "nothing installed"
    );
    let staged: Vec<String> = ls(c.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".out"))
        .collect();
    assert!(staged.is_empty(), "no staged file: {staged:?}");
}
