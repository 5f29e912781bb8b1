//! `shylock render` with templates that would run away: huge `seq`s, loops
//! of billions of steps, output without end, patterns that backtrack, in
//! both engines (Go templates, and Jinja in `.j2` files). Each fails with
//! an error naming the template, the old file stays, and the daemon stays
//! responsive: SIGTERM ends it at once, installing nothing.
//! Regression tests: seq(1, 3000000000) aborted the daemon, a 4e8-step loop
//! deferred SIGTERM 20+ s (and a file was installed after it), and
//! gets("/a/g/*a*a*a*a*a*a*b") ran past 60 s.

mod support;

use std::fs;
use std::process::Stdio;
use std::time::Instant;

use support::*;

/// A confdir rendering the template file `name` from the keys under
/// `{p}/a` into `out`.
fn confdir(p: &str, name: &str, template: &str) -> (Confdir, std::path::PathBuf) {
    let c = Confdir::new();
    let dest = c.path("out");
    fs::write(&dest, "old\n").unwrap();
    c.template(name, template).resource(
        "r",
        &format!(
            "[template]\nsrc = \"{name}\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/a\"]\n",
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

    // (template file, template, flags, what the error says)
    let cases = [
        (
            "t.j2",
            "{% for i in seq(1, atoi(getv(\"/a/n\"))) %}{{ i }}{% endfor %}",
            &[][..],
            "seq(1, 3000000000)",
        ),
        (
            "t.tmpl",
            "{{range seq 1 (atoi (getv \"/a/n\"))}}{{.}}{{end}}",
            &[],
            "seq(1, 3000000000)",
        ),
        (
            "t.j2",
            "{% for i in seq(1, 1000000) %}{% for j in seq(1, 1000) %}{% endfor %}{% endfor %}",
            &["--max-render-steps", "1000000"],
            "fuel",
        ),
        (
            "t.tmpl",
            "{{range seq 1 1000000}}{{range seq 1 1000}}{{end}}{{end}}",
            &["--max-render-steps", "1000000"],
            "range iteration budget exhausted",
        ),
        (
            "t.j2",
            "{% for i in seq(1, 100000) %}{{ i }} line of output\n{% endfor %}",
            &["--max-output-bytes", "100000"],
            "larger than 100000 bytes",
        ),
        (
            "t.tmpl",
            "{{range seq 1 100000}}{{.}} line of output\n{{end}}",
            &["--max-output-bytes", "100000"],
            "larger than 100000 bytes",
        ),
        (
            "t.j2",
            "{{ getvs(\"/a/g/[\") }}",
            &[],
            "syntax error in pattern",
        ),
        (
            "t.tmpl",
            "{{getvs \"/a/g/[\"}}",
            &[],
            "syntax error in pattern",
        ),
    ];
    for (name, template, flags, expected) in cases {
        let (c, dest) = confdir(&p, name, template);
        let stderr = fails_keeping_the_file(&c, &dest, &ep, flags);
        assert!(stderr.contains(expected), "{template}: {stderr}");
        assert!(
            stderr.contains(name),
            "the error names the template: {stderr}"
        );
    }

    // Matching is linear: this pattern backtracked for over a minute.
    for (name, template) in [
        ("t.j2", "{{ getvs(\"/a/g/*a*a*a*a*a*a*b\") | length }}\n"),
        ("t.tmpl", "{{len (getvs \"/a/g/*a*a*a*a*a*a*b\")}}\n"),
    ] {
        let (c, dest) = confdir(&p, name, template);
        let out = c.render(&ep, &["--onetime"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read_to_string(&dest).unwrap(), "0\n");
    }
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
        "t.tmpl",
        "{{range seq 1 1000000}}{{range seq 1 1000000}}{{end}}{{end}}",
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
