//! `shylock render` as a confd drop-in, against a real etcd: the confdir
//! in `tests/confd` (confd-style resources and Go templates using every
//! confd function and text/template construct, Jinja resources beside
//! them) run with confd's command line, byte for byte against the files
//! confd itself rendered from the same keys (`tests/confd/README.md`);
//! confd.toml, confd's flags, refused backends, the migration check, and
//! what confd keeps: the old file on a template error, an existing file's
//! mode and owner.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use support::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confd")
}

/// Puts the fixture's keys under `p`.
async fn put_fixture_keys(etcd: &mut etcd_client::Client, p: &str) {
    let keys: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&fs::read_to_string(fixture().join("keys.json")).unwrap()).unwrap();
    for (key, value) in keys {
        put(etcd, &format!("{p}{key}"), value.as_str().unwrap()).await;
    }
}

/// Copies `from` into `to`, replacing `@NAME@` placeholders in TOML files.
fn copy_tree(from: &Path, to: &Path, vars: &[(&str, &str)]) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target, vars);
        } else if path.extension().is_some_and(|e| e == "toml") {
            let text = vars
                .iter()
                .fold(fs::read_to_string(&path).unwrap(), |t, (k, v)| {
                    t.replace(&format!("@{k}@"), v)
                });
            fs::write(target, text).unwrap();
        } else {
            fs::copy(&path, target).unwrap();
        }
    }
}

/// The fixture's confdir, rendering into `out`, its keys under `p`.
fn fixture_confdir(p: &str) -> Confdir {
    let c = Confdir::new();
    let out = c.path("out");
    fs::create_dir(&out).unwrap();
    let vars = [
        ("OUT", out.to_str().unwrap()),
        ("PREFIX", p),
        ("CHECK", "test -s"),
    ];
    for part in ["conf.d", "templates"] {
        copy_tree(&fixture().join(part), &c.path(part), &vars);
    }
    c
}

/// `shylock render` with confd's flags, from the fixture's environment.
fn confd_style(c: &Confdir, args: &[&str]) -> std::process::Output {
    shylock()
        .arg("render")
        .args(args)
        .arg("-confdir")
        .arg(c.dir.path())
        .env("SHYLOCK_FIXTURE_VAR", "hello")
        .env("SHYLOCK_FIXTURE_EMPTY", "")
        .env_remove("SHYLOCK_FIXTURE_UNSET")
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confd_confdir_renders_byte_for_byte_as_confd_does() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("confd");
    let mut etcd = etcd(&ep).await;
    put_fixture_keys(&mut etcd, &p).await;
    let c = fixture_confdir(&p);
    let out = confd_style(
        &c,
        &[
            "-onetime",
            "-backend",
            "etcdv3",
            "-node",
            &ep,
            "-log-level",
            "warn",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let expected = fixture().join("expected");
    let mut names = ls(&expected);
    names.sort();
    for name in &names {
        let want = fs::read_to_string(expected.join(name)).unwrap();
        let got = fs::read_to_string(c.path("out").join(name))
            .unwrap_or_else(|e| panic!("{name} not rendered: {e}\n{}", stderr(&out)));
        if got != want {
            let diff = similar::TextDiff::from_lines(&want, &got)
                .unified_diff()
                .header("confd", "shylock")
                .to_string();
            panic!("{name} differs from confd's:\n{diff}");
        }
    }
    let mut rendered = ls(&c.path("out"));
    rendered.sort();
    assert_eq!(rendered, names, "every file, and no staged leftovers");
    let mode = |name: &str| fs::metadata(c.path("out").join(name)).unwrap().mode() & 0o7777;
    assert_eq!(mode("constructs.conf"), 0o640, "the resource's mode");
    assert_eq!(mode("nginx.conf"), 0o644, "confd's default mode");
    // The resource reading a key it does not declare got confd's answer,
    // and the log says why.
    assert!(
        stderr(&out).contains("reads /outside/secret, which is not in the resource's keys"),
        "{}",
        stderr(&out)
    );
}

/// confd.toml gives the nodes, prefix and log level; flags beat it;
/// another backend, or another backend's setting, is refused by name.
#[tokio::test(flavor = "multi_thread")]
async fn confd_toml_and_confds_flags_are_read_and_other_backends_refused() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("confd-toml");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/one/app/name"), "from-toml-prefix").await;
    put(&mut etcd, &format!("{p}/two/app/name"), "from-flag-prefix").await;
    let c = Confdir::new();
    let dest = c.path("app.conf");
    c.template("app.tmpl", "name {{getv \"/app/name\"}}\n")
        .resource(
            "app",
            &format!(
                "[template]\nsrc = \"app.tmpl\"\ndest = \"{}\"\nkeys = [\"/app\"]\n",
                dest.display()
            ),
        );
    fs::write(
        c.path("confd.toml"),
        format!(
            "backend = \"etcdv3\"\nnodes = [\"{ep}\"]\nprefix = \"{p}/one\"\nlog-level = \"debug\"\n"
        ),
    )
    .unwrap();
    let out = confd_style(&c, &["-onetime"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&dest), "name from-toml-prefix\n");
    assert!(
        stderr(&out).contains("DEBUG"),
        "log-level = debug: {}",
        stderr(&out)
    );

    let out = confd_style(
        &c,
        &[
            "-onetime",
            "-prefix",
            &format!("{p}/two"),
            "-log-level=error",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        text(&dest),
        "name from-flag-prefix\n",
        "-prefix beats confd.toml"
    );
    assert!(!stderr(&out).contains("DEBUG"), "{}", stderr(&out));

    // Refused, by name, before anything is written.
    fs::write(&dest, "old\n").unwrap();
    for (args, named) in [
        (&["-onetime", "-backend", "consul"][..], "\"consul\""),
        (&["-onetime", "-backend=zookeeper"], "\"zookeeper\""),
        (&["-onetime", "-auth-token", "t"], "-auth-token"),
        (&["-onetime", "-table", "t"], "dynamodb"),
    ] {
        let out = confd_style(&c, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(named), "{args:?}: {}", stderr(&out));
    }
    for (setting, named) in [
        ("backend = \"redis\"\n", "\"redis\""),
        (
            "backend = \"etcd\"\nauth_type = \"app-role\"\n",
            "auth_type",
        ),
        (
            &format!("nodes = [\"{ep}\"]\nwatch_interval = 5\n"),
            "watch_interval",
        ),
    ] {
        fs::write(c.path("confd.toml"), setting).unwrap();
        let out = confd_style(&c, &["-onetime"]);
        assert!(!out.status.success(), "{setting}");
        assert!(stderr(&out).contains(named), "{setting}: {}", stderr(&out));
    }
    assert_eq!(text(&dest), "old\n");
}

/// A template that fails, at parse or while executing, never replaces the
/// file; the error names the template (and line and column when parsing).
#[tokio::test(flavor = "multi_thread")]
async fn a_template_error_never_replaces_the_old_file() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("confd-err");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/app/port"), "80").await;
    let c = Confdir::new();
    let dest = c.path("app.conf");
    let resource = format!(
        "[template]\nsrc = \"app.tmpl\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/app\"]\n",
        dest.display()
    );
    c.resource("app", &resource);
    fs::write(&dest, "old\n").unwrap();
    for (template, expected) in [
        ("port {{getv \"/app/port\"}}\n{{if}}\n", "app.tmpl:2:"),
        (
            "port {{getv \"/app/port\"}}\n{{nope 1}}\n",
            "function \"nope\" not defined",
        ),
        (
            "port {{getv \"/app/missing\"}}\n",
            "key does not exist: /app/missing",
        ),
        (
            "{{range $i := seq 1 3}}{{$i}}{{end}}{{atoi \"x\"}}",
            "strconv.Atoi: parsing \"x\": invalid syntax",
        ),
    ] {
        c.template("app.tmpl", template);
        let out = c.render(&ep, &["--onetime"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(expected) && err.contains("app.tmpl"),
            "{template}: {err}"
        );
        assert_eq!(text(&dest), "old\n", "{template}");
    }

    // A running daemon: a value that breaks the template keeps the file;
    // the next good value is rendered.
    c.template("app.tmpl", "port {{add (atoi (getv \"/app/port\")) 0}}\n");
    let child = c.spawn(&ep, &[]);
    wait_until("the first render", || text(&dest) == "port 80\n");
    put(&mut etcd, &format!("{p}/app/port"), "eighty").await;
    wait_until("the failure logged", || log(&c).contains("invalid syntax"));
    assert_eq!(text(&dest), "port 80\n");
    put(&mut etcd, &format!("{p}/app/port"), "8080").await;
    wait_until("the good value rendered", || text(&dest) == "port 8080\n");
    stop(child);
}

/// Without `mode`, `owner` or `uid`, an existing file keeps its own (as
/// confd does): a 0600 secrets file never becomes world-readable.
#[tokio::test(flavor = "multi_thread")]
async fn an_existing_files_mode_and_owner_are_kept_when_the_resource_sets_none() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("confd-mode");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/db/password"), "s3cret").await;
    let c = Confdir::new();
    let dest = c.path("secrets.env");
    fs::write(&dest, "PASSWORD=old\n").unwrap();
    fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&dest, Some(65534), Some(65534)).unwrap();
    c.template("secrets.tmpl", "PASSWORD={{getv \"/db/password\"}}\n")
        .resource(
            "secrets",
            &format!(
                "[template]\nsrc = \"secrets.tmpl\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/db\"]\n",
                dest.display()
            ),
        );
    let out = c.render(&ep, &["--onetime"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&dest), "PASSWORD=s3cret\n");
    let meta = fs::metadata(&dest).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "the existing mode is kept");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "and the owner");
}

/// `check_cmd` is a Go template, as in confd: `{{ .src }}` with spaces
/// works; `-keep-stage-file` leaves a rejected staged file to look at.
#[tokio::test(flavor = "multi_thread")]
async fn check_cmd_takes_any_spacing_and_keep_stage_file_keeps_a_rejected_file() {
    let server = shared_server();
    let ep = server.endpoint();
    let p = unique_prefix("confd-check");
    let mut etcd = etcd(&ep).await;
    put(&mut etcd, &format!("{p}/v"), "good").await;
    let c = Confdir::new();
    let dest = c.path("v.conf");
    let check = c.script(
        "check.sh",
        &format!(
            "echo \"$1\" >> {}\ngrep -q good \"$1\"",
            c.path("checked").display()
        ),
    );
    c.template("v.tmpl", "value {{getv \"/v\"}}\n").resource(
        "v",
        &format!(
            "[template]\nsrc = \"v.tmpl\"\ndest = \"{}\"\nprefix = \"{p}\"\nkeys = [\"/v\"]\ncheck_cmd = \"{check} {{{{ .src }}}}\"\n",
            dest.display()
        ),
    );
    let out = confd_style(&c, &["-onetime", "-node", &ep]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&dest), "value good\n");
    let checked = text(&c.path("checked"));
    assert!(
        checked.trim().contains("/.v.conf"),
        "the staged file was checked: {checked}"
    );

    put(&mut etcd, &format!("{p}/v"), "bad").await;
    let staged = || -> Vec<String> {
        ls(c.dir.path())
            .into_iter()
            .filter(|n| n.starts_with(".v.conf"))
            .collect()
    };
    let out = confd_style(&c, &["-onetime", "-node", &ep]);
    assert!(!out.status.success());
    assert!(staged().is_empty(), "removed without -keep-stage-file");
    let out = confd_style(&c, &["-onetime", "-node", &ep, "-keep-stage-file"]);
    assert!(!out.status.success());
    let kept = staged();
    assert_eq!(kept.len(), 1, "{}", stderr(&out));
    assert_eq!(text(&c.path(&kept[0])), "value bad\n");
    assert!(
        stderr(&out).contains(&kept[0]),
        "the log names it: {}",
        stderr(&out)
    );
    assert_eq!(text(&dest), "value good\n");
}

/// confd's `-interval`: every resource is rendered again that often, so a
/// template reading something other than keys (a file, the environment,
/// DNS) follows it.
#[tokio::test(flavor = "multi_thread")]
async fn interval_renders_again_without_a_key_change() {
    let server = shared_server();
    let ep = server.endpoint();
    let c = Confdir::new();
    let flag = c.path("flag");
    let dest = c.path("f.conf");
    c.template(
        "f.tmpl",
        &format!(
            "{{{{if fileExists \"{}\"}}}}yes{{{{else}}}}no{{{{end}}}}\n",
            flag.display()
        ),
    )
    .resource(
        "f",
        &format!(
            "[template]\nsrc = \"f.tmpl\"\ndest = \"{}\"\n",
            dest.display()
        ),
    );
    let child = c.spawn(&ep, &["-interval", "1"]);
    wait_until("the first render", || text(&dest) == "no\n");
    fs::write(&flag, "").unwrap();
    wait_until("a render at the next interval", || text(&dest) == "yes\n");
    stop(child);
}

/// `--check-confd`: every resource and template of a confdir read without
/// etcd; what would not work is listed, and the exit status says so.
#[test]
fn check_confd_lists_what_would_not_work() {
    let c = fixture_confdir("/p");
    let out = shylock()
        .args(["render", "--check-confd"])
        .arg(c.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains("8 resource(s): all would render"),
        "{stdout}"
    );
    assert!(
        stdout.contains("conf.d/team/web/app.toml: ok (Go template app.tmpl"),
        "{stdout}"
    );
    assert!(
        stdout.contains("conf.d/jinja.toml: ok (Jinja template"),
        "{stdout}"
    );

    c.template(
        "bad.tmpl",
        "fine\n{{if false}}{{lookupHost \"x\"}}{{end}}\n",
    )
    .resource(
        "bad",
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"/tmp/x\"\nkeys = [\"/a\"]\n",
    )
    .resource(
        "missing",
        "[template]\nsrc = \"nowhere.tmpl\"\ndest = \"/tmp/y\"\n",
    )
    .resource(
        "typo",
        "[template]\nsrc = \"app.tmpl\"\ndest = \"/tmp/z\"\nreload = \"x\"\n",
    )
    .template("bad.j2", "{{ nosuch(1) }}")
    .resource("badj", "[template]\nsrc = \"bad.j2\"\ndest = \"/tmp/j\"\n");
    fs::write(c.path("confd.toml"), "backend = \"consul\"\n").unwrap();
    let out = shylock()
        .args(["render", "--check-confd"])
        .arg(c.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for expected in [
        "conf.d/bad.toml: template",
        "bad.tmpl:2: function \"lookupHost\" not defined",
        "conf.d/missing.toml: cannot read template",
        "conf.d/typo.toml: template resource",
        "reload",
        "conf.d/badj.toml: template",
        "undefined: nosuch",
        "confd.toml: backend \"consul\" is not supported",
        "conf.d/nginx.toml: ok",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(stderr(&out).contains("5 problem(s)"), "{}", stderr(&out));
}
