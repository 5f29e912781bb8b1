//! `shylock render` against a real etcd, with real scripts (failing, hanging
//! and succeeding) as check and reload commands, and a real nginx.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn onetime_renders_checks_and_keeps_the_old_file_when_a_check_fails() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-once");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/app/port"), "8080").await;
    let c = Confdir::new();
    let dest = c.path("app.conf");
    let check = c.script(
        "check.sh",
        &format!(
            "grep -q 'port 80' \"$1\" && echo checked >> {}",
            c.path("checks").display()
        ),
    );
    c.template("app.tmpl", "listen port {{getv \"/app/port\"}};\n").resource(
        "app",
        &format!(
            "[template]\nsrc = \"app.tmpl\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/app\"]\nmode = \"0640\"\ncheck_cmd = \"{check} {{{{.src}}}}\"\n",
            dest.display()
        ),
    );
    let out = c.render(&ep, &["--onetime"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text(&dest), "listen port 8080;\n");
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o640);
    assert_eq!(
        c.lines("checks"),
        1,
        "the check ran against the staged file"
    );

    put(&mut etcd, &format!("{p}/app/port"), "9090").await;
    let out = c.render(&ep, &["--onetime"]);
    assert_eq!(out.status.code(), Some(1), "a failed check fails --onetime");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("check_cmd") && stderr.contains("1 of 1"),
        "{stderr}"
    );
    assert_eq!(text(&dest), "listen port 8080;\n", "the old file stays");
    let leftovers = fs::read_dir(c.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".app.conf")
        })
        .count();
    assert_eq!(leftovers, 0, "no staged file left behind");

    let out = c.render(&ep, &["--onetime", "--sync-only"]);
    assert!(out.status.success());
    assert_eq!(
        text(&dest),
        "listen port 9090;\n",
        "--sync-only writes without checking"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn noop_prints_a_diff_and_touches_nothing() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-noop");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "new").await;
    let c = Confdir::new();
    let dest = c.path("f");
    fs::write(&dest, "value old\n").unwrap();
    let reload = c.script(
        "reload.sh",
        &format!("echo r >> {}", c.path("reloads").display()),
    );
    c.template("t", "value {{getv \"/v\"}}\n").resource(
        "f",
        &format!("[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\nreload_cmd = \"{reload}\"\n", dest.display()),
    );
    let out = c.render(&ep, &["--noop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-value old") && diff.contains("+value new"),
        "{diff}"
    );
    assert_eq!(text(&dest), "value old\n");
    assert_eq!(c.lines("reloads"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn template_mistakes_are_clear_errors() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-bad");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/a/x"), "1").await;
    put(&mut etcd, &format!("{p}/b/y"), "2").await;
    let c = Confdir::new();
    let resource = |name: &str, template: &str, extra: &str| {
        format!("[template]\nsrc = \"{template}\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/a\"]\n{extra}", c.path(name).display())
    };
    c.template("outside", "{{getv \"/b/y\"}}")
        .resource("outside", &resource("outside.out", "outside", ""));
    // As in confd, a key outside the resource's keys is missing (the log
    // says why); with --strict, reading it is the error.
    let out = c.render(&ep, &["--onetime"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("key does not exist: /b/y")
            && stderr.contains("reads /b/y, which is not in the resource's keys"),
        "{stderr}"
    );
    assert!(!c.path("outside.out").exists());
    let out = c.render(&ep, &["--onetime", "--strict"]);
    let strict = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && strict.contains("error calling getv: template")
            && strict.contains("not in the resource's keys"),
        "{strict}"
    );
    // Regression: logs to a pipe or file carried terminal colour codes.
    assert!(
        !stderr.contains('\x1b'),
        "plain text when not a terminal: {stderr:?}"
    );

    let c = Confdir::new();
    c.template(
        "t.j2",
        "{% for v in getvs(\"/a/empty/*\") %}server {{ v }};{% endfor %}",
    )
    .resource(
        "empty",
        &resource("empty.out", "t.j2", "min_keys = 1\n")
            .replace("keys = [\"/a\"]", "keys = [\"/a/empty\"]"),
    );
    let out = c.render(&ep, &["--onetime"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("min_keys"));
    assert!(
        !c.path("empty.out").exists(),
        "an empty upstream is not rendered"
    );

    let c = Confdir::new();
    c.template("t", "x").resource(
        "typo",
        &resource("typo.out", "t", "reload_command = \"x\"\n"),
    );
    let out = c.render(&ep, &["--onetime"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reload_command") && stderr.contains("typo.toml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_1000_changes_gives_one_render_and_one_reload() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-burst");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/up/seed"), "0").await;
    let c = Confdir::new();
    let reload = c.script(
        "reload.sh",
        &format!("echo r >> {}", c.path("reloads").display()),
    );
    c.template("t", "{{range gets \"/up/*\"}}{{.Key}}={{.Value}}\n{{end}}");
    // Two resources sharing one reload command: one reload per batch.
    for name in ["one", "two"] {
        c.resource(
            name,
            &format!(
                "[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/up\"]\nreload_cmd = \"{reload}\"\nwait = {{ min = \"700ms\", max = \"20s\" }}\n",
                c.path(name).display()
            ),
        );
    }
    let child = c.spawn(&ep, &[]);
    wait_until("the first render and reload", || {
        c.lines("reloads") == 1 && text(&c.path("two")).contains("seed")
    });
    for i in 0..1000 {
        put(&mut etcd, &format!("{p}/up/k{}", i % 50), i.to_string()).await;
    }
    wait_until("the burst rendered", || {
        text(&c.path("one")).contains("/up/k49=999")
    });
    wait_until("its reload", || c.lines("reloads") == 2);
    // Nothing more is pending: no further reload comes (waiting past the quiescence).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        c.lines("reloads"),
        2,
        "one reload for the whole burst, shared by both resources"
    );
    assert_eq!(text(&c.path("one")), text(&c.path("two")));
    stop(child);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_hung_commands_are_retried_until_they_succeed() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-retry");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "1").await;
    let c = Confdir::new();
    // Fails twice, hangs once, then succeeds: retried with backoff, no key change needed.
    let attempts = c.path("attempts");
    let reload = c.script(
        "reload.sh",
        &format!(
            "echo a >> {a}\nn=$(wc -l < {a})\n[ \"$n\" -le 2 ] && exit 1\n[ \"$n\" -eq 3 ] && sleep 30\necho ok >> {ok}",
            a = attempts.display(),
            ok = c.path("ok").display()
        ),
    );
    c.template("t", "v={{getv \"/v\"}}\n").resource(
        "r",
        &format!("[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\nreload_cmd = \"{reload}\"\n", c.path("out").display()),
    );
    let child = c.spawn(
        &ep,
        &[
            "--retry-min",
            "100ms",
            "--retry-max",
            "400ms",
            "--command-timeout",
            "1s",
        ],
    );
    wait_until("the reload finally succeeds", || c.lines("ok") == 1);
    assert_eq!(
        c.lines("attempts"),
        4,
        "two failures, one timeout, one success"
    );
    assert_eq!(text(&c.path("out")), "v=1\n");
    stop(child);
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_and_group_by_name_really_apply_and_sighup_rereads_the_confdir() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-hup");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "1").await;
    let c = Confdir::new();
    c.template("t", "v={{getv \"/v\"}}\n").resource(
        "first",
        &format!("[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\nowner = \"nobody\"\ngroup = \"nogroup\"\n", c.path("first").display()),
    );
    let child = c.spawn(&ep, &[]);
    wait_until("the first resource", || text(&c.path("first")) == "v=1\n");
    let meta = fs::metadata(c.path("first")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "nobody:nogroup");

    c.resource(
        "second",
        &format!(
            "[template]\nsrc = \"t\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\n",
            c.path("second").display()
        ),
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_until("the resource added before SIGHUP", || {
        text(&c.path("second")) == "v=1\n"
    });
    put(&mut etcd, &format!("{p}/v"), "2").await;
    wait_until("both follow changes", || {
        text(&c.path("first")) == "v=2\n" && text(&c.path("second")) == "v=2\n"
    });

    // A broken confdir on SIGHUP is reported; the running one is kept.
    c.resource("broken", "[template]\nsrc = \"t\"\nunknown_field = 1\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_until("the broken confdir reported", || {
        log(&c).contains("confdir not reloaded")
    });
    assert!(log(&c).contains("unknown_field"), "{}", log(&c));
    put(&mut etcd, &format!("{p}/v"), "3").await;
    wait_until("the running resources go on", || {
        text(&c.path("first")) == "v=3\n" && text(&c.path("second")) == "v=3\n"
    });
    stop(child);
}

/// nginx: an upstream rendered from service keys with the seed's confd
/// template line, unchanged, checked with `nginx -t`, and a running nginx
/// reloaded with the result.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_nginx_is_checked_and_reloaded() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: `make test` installs nginx-light");
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-nginx");
    let mut etcd = etcd(&ep).await;
    put(
        &mut etcd,
        &format!("{p}/services/apache/a"),
        "127.0.0.1:9001",
    )
    .await;
    put(&mut etcd, &format!("{p}/nginx/message"), "first").await;
    let c = Confdir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = c.path("run");
    fs::create_dir_all(&run).unwrap();
    let conf = c.path("nginx.conf");
    c.template(
        "nginx.conf.tmpl",
        &format!(
            "pid {run}/nginx.pid;\nerror_log {run}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {run};\n  proxy_temp_path {run};\n  fastcgi_temp_path {run};\n  uwsgi_temp_path {run};\n  scgi_temp_path {run};\n\
             upstream apache {{\n{{{{range getvs \"/services/apache/*\"}}}} server {{{{.}}}}; {{{{end}}}}\n  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"{{{{getv \"/nginx/message\"}}}}\\n\"; }}\n  }}\n}}\n",
            run = run.display()
        ),
    );
    c.resource(
        "nginx",
        &format!(
            "[template]\nsrc = \"nginx.conf.tmpl\"\ndest = \"{conf}\"\nprefix = \"{p}\"\nkeys = [\"/services/apache\", \"/nginx\"]\nmin_keys = 1\n\
             check_cmd = \"{nginx} -t -q -c {{{{.src}}}}\"\nreload_cmd = \"{nginx} -c {conf} -s reload\"\n",
            conf = conf.display()
        ),
    );
    let out = c.render(&ep, &["--onetime", "--sync-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = std::process::Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(started.success(), "nginx starts with the rendered config");
    // Stops nginx however the test ends.
    struct Nginx<'a>(&'a str, &'a Path);
    impl Drop for Nginx<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new(self.0)
                .arg("-c")
                .arg(self.1)
                .args(["-s", "stop"])
                .status();
        }
    }
    let _nginx = Nginx(nginx, &conf);
    let get = || -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = write!(s, "GET / HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    wait_until("nginx answers", || get().ends_with("first\n"));

    let child = c.spawn(&ep, &[]);
    put(&mut etcd, &format!("{p}/nginx/message"), "second").await;
    wait_until("nginx reloaded with the new config", || {
        get().ends_with("second\n")
    });
    // A value that breaks the config fails `nginx -t`: the old file stays, nginx keeps serving.
    let before = text(&conf);
    put(
        &mut etcd,
        &format!("{p}/services/apache/b"),
        "not a server;;",
    )
    .await;
    wait_until("nginx -t refused the new config", || {
        log(&c).contains("check_cmd")
    });
    assert_eq!(text(&conf), before, "a failing check leaves the old file");
    wait_until("nginx still serving the last good config", || {
        get().ends_with("second\n")
    });
    stop(child);
}

/// Loops over keys keep each item's output between renders
/// (gotemplate/ranges.rs, jinja/ranges.rs): through the daemon, every put,
/// change, delete and transaction still shows in both engines' files
/// exactly as the templates say.
#[tokio::test(flavor = "multi_thread")]
async fn cached_loops_follow_every_change_in_both_engines() {
    use etcd_client::{Txn, TxnOp};
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("r-loops");
    let mut etcd = etcd(&ep).await;
    let mut model = std::collections::BTreeMap::new();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        put(&mut etcd, &format!("{p}/s/{k}"), v).await;
        model.insert(k.to_owned(), v.to_owned());
    }
    put(&mut etcd, &format!("{p}/t"), "T").await;
    let c = Confdir::new();
    c.template(
        "t.tmpl",
        "{{range gets \"/s/*\"}}{{base .Key}}={{.Value | toUpper}}\n{{end}}{{range getvs \"/s/*\"}}[{{.}}]{{end}}\n",
    );
    c.template(
        "t.j2",
        "{% for kv in gets('/s/*') %}{{ base(kv.Key) }}={{ kv.Value | upper }}\n{% endfor %}{% for v in getvs('/s/*') -%} [{{ v }}] {%- endfor %}\n",
    );
    for (name, src) in [("go", "t.tmpl"), ("jinja", "t.j2")] {
        c.resource(
            name,
            &format!(
                "[template]\nsrc = \"{src}\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/s\"]\n",
                c.path(&format!("{name}.out")).display()
            ),
        );
    }
    let expected = |model: &std::collections::BTreeMap<String, String>| {
        let mut out: String = model
            .iter()
            .map(|(k, v)| format!("{k}={}\n", v.to_uppercase()))
            .collect();
        let mut values: Vec<&String> = model.values().collect();
        values.sort();
        out.extend(values.iter().map(|v| format!("[{v}]")));
        out.push('\n');
        out
    };
    let child = c.spawn(&ep, &[]);
    let settle = |what: &str, model: &std::collections::BTreeMap<String, String>| {
        let want = expected(model);
        wait_until(what, || {
            text(&c.path("go.out")) == want && text(&c.path("jinja.out")) == want
        });
    };
    settle("the first render", &model);
    put(&mut etcd, &format!("{p}/s/b"), "x").await;
    model.insert("b".into(), "x".into());
    settle("a changed value", &model);
    etcd.delete(format!("{p}/s/a"), None).await.unwrap();
    model.remove("a");
    settle("a deleted key", &model);
    put(&mut etcd, &format!("{p}/s/aa"), "0").await;
    model.insert("aa".into(), "0".into());
    settle("a new key", &model);
    etcd.txn(Txn::new().and_then(vec![
        TxnOp::put(format!("{p}/s/c"), "x", None),
        TxnOp::put(format!("{p}/s/d"), "4", None),
        TxnOp::delete(format!("{p}/s/aa"), None),
    ]))
    .await
    .unwrap();
    model.insert("c".into(), "x".into());
    model.insert("d".into(), "4".into());
    model.remove("aa");
    settle("a transaction", &model);
    stop(child);
}
