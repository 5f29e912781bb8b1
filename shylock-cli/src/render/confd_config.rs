//! confd's command line and `confd.toml`, so that a confd invocation runs
//! unchanged as `shylock render`: Go's single-dash flags (`-onetime`,
//! `-node http://etcd:2379`, `-prefix=/prod`) are rewritten to ours before
//! parsing, and the config file's settings fill in what the command line
//! leaves unset (flags, then confd's `CONFD_CLIENT_*` variables, then the
//! file, as in confd). Settings for confd's other backends (consul, vault,
//! redis...) are refused by name: shylock reads etcd only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::resource::GlobalPrefix;
use super::RenderArgs;
use crate::connect::ConnectArgs;
use crate::exit::{msg, usage, Error};

/// confd's flags whose shylock names differ (connection flags are
/// etcdctl's names here).
const RENAMED: &[(&str, &str)] = &[
    ("node", "endpoints"),
    ("client-cert", "cert"),
    ("client-key", "key"),
    ("client-ca-keys", "cacert"),
    ("username", "user"),
];

/// confd's flags for backends other than etcd, refused with the reason.
const OTHER_BACKENDS: &[(&str, &str)] = &[
    ("auth-token", "consul and vault"),
    ("auth-type", "vault"),
    ("app-id", "vault"),
    ("user-id", "vault"),
    ("role-id", "vault"),
    ("secret-id", "vault"),
    ("path", "vault"),
    ("table", "dynamodb"),
    ("separator", "redis"),
    ("file", "file"),
    ("filter", "file"),
];

/// The backends confd has; only its etcd ones are ours.
const BACKENDS: &[&str] = &[
    "consul",
    "dynamodb",
    "env",
    "file",
    "rancher",
    "redis",
    "ssm",
    "vault",
    "zookeeper",
];

/// Rewrites confd's flags after the `render` subcommand into ours: Go's
/// `flag` package takes `-name`, `--name`, `-name=value` and
/// `-name value`, and `-bool=false`.
pub fn confd_argv(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    use clap::CommandFactory;
    let cli = crate::cli::Cli::command();
    let Some(render) = cli.find_subcommand("render") else {
        return Ok(argv);
    };
    let takes_value = |command: &clap::Command, name: &str| {
        command
            .get_arguments()
            .chain(cli.get_arguments())
            .find(|a| a.get_long() == Some(name))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut args = argv.into_iter();
    out.extend(args.next());
    // The global flags up to the subcommand, as they are.
    let mut value_next = false;
    for arg in args.by_ref() {
        let text = arg.to_string_lossy().into_owned();
        out.push(arg);
        if std::mem::take(&mut value_next) {
            continue;
        }
        if let Some(long) = text.strip_prefix("--") {
            value_next = !long.contains('=') && takes_value(&cli, long);
        } else if !text.starts_with('-') {
            if text != "render" {
                out.extend(args);
                return Ok(out);
            }
            break;
        }
    }
    for arg in args.by_ref() {
        let Some(text) = arg.to_str().map(str::to_owned) else {
            out.push(arg);
            continue;
        };
        if std::mem::take(&mut value_next) || text == "--" || !text.starts_with('-') {
            let end = text == "--";
            out.push(arg);
            if end {
                break;
            }
            continue;
        }
        let single = !text.starts_with("--");
        let flag = text.trim_start_matches('-');
        if single && flag.len() == 1 {
            out.push(arg);
            continue;
        }
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        if let Some((_, backends)) = OTHER_BACKENDS.iter().find(|(n, _)| *n == name) {
            return Err(format!(
                "confd's -{name} is for its {backends} backend; shylock render reads etcd only"
            ));
        }
        if name == "client-insecure" {
            return Err(
                "confd's -client-insecure (TLS without verifying the server) is not supported: \
                 give the server's CA with -client-ca-keys"
                    .into(),
            );
        }
        let name = RENAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(name, |(_, ours)| ours);
        let boolean = !takes_value(render, name);
        match (value, boolean) {
            (Some("false"), true) => {}
            (Some("true"), true) | (None, _) => {
                out.push(format!("--{name}").into());
                value_next = !boolean;
            }
            (Some(value), _) => out.push(format!("--{name}={value}").into()),
        }
    }
    out.extend(args);
    Ok(out)
}

/// `confd.toml`'s settings (names lowercased, as confd's decoder matches
/// them in any case).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfdToml {
    backend: Option<String>,
    basic_auth: Option<bool>,
    client_cakeys: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    confdir: Option<PathBuf>,
    interval: Option<u64>,
    #[serde(rename = "log-level")]
    log_level: Option<String>,
    nodes: Option<Vec<String>>,
    noop: Option<bool>,
    prefix: Option<String>,
    scheme: Option<String>,
    srv_domain: Option<String>,
    srv_record: Option<String>,
    #[serde(rename = "sync-only")]
    sync_only: Option<bool>,
    watch: Option<bool>,
    username: Option<String>,
    password: Option<String>,
}

/// confd.toml settings for confd's other backends.
const OTHER_SETTINGS: &[(&str, &str)] = &[
    ("auth_token", "consul and vault"),
    ("auth_type", "vault"),
    ("app_id", "vault"),
    ("user_id", "vault"),
    ("role_id", "vault"),
    ("secret_id", "vault"),
    ("path", "vault"),
    ("table", "dynamodb"),
    ("separator", "redis"),
    ("file", "file"),
    ("filter", "file"),
];

/// What `shylock render` runs with, from flags, environment and confd.toml.
#[derive(Debug)]
pub struct Settings {
    pub confdir: PathBuf,
    /// confd's `-prefix`: replaces every resource's own prefix.
    pub prefix: Option<String>,
    pub noop: bool,
    pub sync_only: bool,
    /// confd's `-interval` without `-watch`: every resource is rendered
    /// again this often, besides on every change of its keys.
    pub interval: Option<Duration>,
    pub connect: ConnectArgs,
}

impl Settings {
    pub fn global_prefix(&self) -> GlobalPrefix<'_> {
        match &self.prefix {
            Some(prefix) => GlobalPrefix::Replace(prefix),
            None => GlobalPrefix::None,
        }
    }
}

/// The default confdir, when neither the command line nor confd.toml
/// names one.
pub const DEFAULT_CONFDIR: &str = "/etc/shylock";

/// Merges the command line, confd's environment variables and confd.toml
/// (`--config-file`, else `<confdir>/confd.toml` if it exists), and
/// resolves `-srv-domain`/`-srv-record` to endpoints.
pub fn settings(connect: &ConnectArgs, args: &RenderArgs) -> Result<Settings, Error> {
    settings_with(connect, args, |name| {
        std::env::var_os(name).map(PathBuf::from)
    })
}

fn settings_with(
    connect: &ConnectArgs,
    args: &RenderArgs,
    env: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Settings, Error> {
    let flag_confdir = args.confdir.clone();
    let default_file = flag_confdir
        .clone()
        .unwrap_or_else(|| DEFAULT_CONFDIR.into())
        .join("confd.toml");
    let file = match &args.config_file {
        Some(path) => read(path)?,
        None if default_file.exists() => read(&default_file)?,
        None => ConfdToml::default(),
    };
    let backend = args.backend.clone().or(file.backend.clone());
    if let Some(backend) = &backend {
        check_backend(backend)?;
    }
    // confd's -log-level is the global --log-level, already applied.
    if let Some(level) = &file.log_level {
        crate::logging::set_confd_level(level).map_err(msg)?;
    }
    let mut connect = connect.clone();
    connect.cert = connect
        .cert
        .or_else(|| env("CONFD_CLIENT_CERT"))
        .or(file.client_cert);
    connect.key = connect
        .key
        .or_else(|| env("CONFD_CLIENT_KEY"))
        .or(file.client_key);
    connect.cacert = connect
        .cacert
        .or_else(|| env("CONFD_CLIENT_CAKEYS"))
        .or(file.client_cakeys);
    connect.user = connect.user.or(file.username);
    connect.password = connect.password.or(file.password);
    // confd uses the user and password only with -basic-auth; shylock
    // whenever they are given (etcd refuses a wrong one by name).
    if connect.user.is_some() && !(args.basic_auth || file.basic_auth.unwrap_or(false)) {
        tracing::debug!("a username without basic_auth: used anyway");
    }
    let srv_record = args.srv_record.clone().or(file.srv_record).or_else(|| {
        let domain = args.srv_domain.as_ref().or(file.srv_domain.as_ref())?;
        // confd: `_<backend>._tcp.<domain>.`, the backend as named.
        let backend = backend.as_deref().unwrap_or("etcd");
        Some(format!("_{backend}._tcp.{domain}."))
    });
    if let Some(record) = srv_record {
        let scheme = args
            .scheme
            .clone()
            .or(file.scheme)
            .unwrap_or_else(|| "http".into());
        connect.endpoints = crate::srv::endpoints(&record, &scheme).map_err(msg)?;
    } else if connect.endpoints.is_empty() {
        connect.endpoints = file.nodes.unwrap_or_default();
    }
    let watch = args.watch || file.watch.unwrap_or(false);
    let interval = match (watch, args.interval.or(file.interval)) {
        (false, Some(0)) => return Err(msg("interval: 0 seconds; give at least 1")),
        (false, Some(seconds)) => Some(Duration::from_secs(seconds)),
        _ => None,
    };
    Ok(Settings {
        confdir: flag_confdir
            .or(file.confdir)
            .unwrap_or_else(|| DEFAULT_CONFDIR.into()),
        prefix: args.prefix.clone().or(file.prefix),
        noop: args.noop || file.noop.unwrap_or(false),
        sync_only: args.sync_only || file.sync_only.unwrap_or(false),
        interval,
        connect,
    })
}

fn check_backend(backend: &str) -> Result<(), Error> {
    match backend {
        "etcd" | "etcdv3" => Ok(()),
        other if BACKENDS.contains(&other) => Err(usage(format!(
            "backend {other:?} is not supported: shylock render reads etcd (backend \"etcdv3\" or \"etcd\")"
        ))),
        other => Err(usage(format!(
            "unknown backend {other:?}: shylock render reads etcd (backend \"etcdv3\" or \"etcd\")"
        ))),
    }
}

fn read(path: &Path) -> Result<ConfdToml, Error> {
    let err = |e: String| msg(format!("confd config file {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = table
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    if let Some((name, backends)) = OTHER_SETTINGS.iter().find(|(n, _)| table.contains_key(*n)) {
        return Err(err(format!(
            "`{name}` is for confd's {backends} backend; shylock render reads etcd only"
        )));
    }
    if table.contains_key("client_insecure") {
        return Err(err(
            "`client_insecure` (TLS without verifying the server) is not supported: \
             give the server's CA with client_cakeys"
                .into(),
        ));
    }
    ConfdToml::deserialize(toml::Value::Table(table)).map_err(|e| err(e.message().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Result<Vec<String>, String> {
        confd_argv(args.iter().map(OsString::from).collect())
            .map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn confds_flags_become_ours() {
        assert_eq!(
            rewrite(&[
                "shylock",
                "--endpoints",
                "http://a:2379",
                "render",
                "-onetime",
                "-node",
                "http://b:2379",
                "-node=http://c:2379",
                "-confdir",
                "/etc/confd",
                "-prefix=/prod",
                "-noop=false",
                "-sync-only=true",
                "-client-ca-keys",
                "/ca.pem",
                "--username",
                "root",
                "-interval",
                "60",
            ])
            .unwrap(),
            [
                "shylock",
                "--endpoints",
                "http://a:2379",
                "render",
                "--onetime",
                "--endpoints",
                "http://b:2379",
                "--endpoints=http://c:2379",
                "--confdir",
                "/etc/confd",
                "--prefix=/prod",
                "--sync-only",
                "--cacert",
                "/ca.pem",
                "--user",
                "root",
                "--interval",
                "60",
            ]
        );
        // A value that looks like a flag stays a value; other commands are
        // left alone.
        assert_eq!(
            rewrite(&["shylock", "render", "-password", "-secret-"]).unwrap(),
            ["shylock", "render", "--password", "-secret-"]
        );
        assert_eq!(
            rewrite(&["shylock", "export", "-x"]).unwrap(),
            ["shylock", "export", "-x"]
        );
    }

    #[test]
    fn other_backends_flags_are_refused_by_name() {
        let error = rewrite(&["shylock", "render", "-table", "t"]).unwrap_err();
        assert!(
            error.contains("-table") && error.contains("dynamodb"),
            "{error}"
        );
        assert!(rewrite(&["shylock", "render", "-client-insecure"])
            .unwrap_err()
            .contains("client-insecure"));
    }

    fn args(extra: &[&str]) -> RenderArgs {
        use clap::Parser;
        let mut argv = vec!["shylock", "render"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Render(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn confd_toml_fills_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("confd.toml"),
            "backend = \"etcdv3\"\nNodes = [\"http://n1:2379\"]\nprefix = \"/prod\"\n\
             interval = 30\nnoop = true\nclient_cert = \"/file.crt\"\nusername = \"u\"\n",
        )
        .unwrap();
        let confdir = dir.path().to_str().unwrap();
        let none = |_: &str| None;
        let s = settings_with(
            &ConnectArgs::default(),
            &args(&["--confdir", confdir]),
            none,
        )
        .unwrap();
        assert_eq!(s.connect.endpoints, ["http://n1:2379"]);
        assert_eq!(s.prefix.as_deref(), Some("/prod"));
        assert_eq!(s.interval, Some(Duration::from_secs(30)));
        assert!(s.noop && !s.sync_only);
        assert_eq!(s.connect.cert, Some(PathBuf::from("/file.crt")));
        assert_eq!(s.connect.user.as_deref(), Some("u"));
        assert_eq!(s.confdir, dir.path());
        // Flags beat confd's variables beat the file; -watch drops the interval.
        let env = |name: &str| (name == "CONFD_CLIENT_CERT").then(|| PathBuf::from("/env.crt"));
        let s = settings_with(
            &ConnectArgs::default(),
            &args(&["--confdir", confdir, "--prefix", "/flag", "--watch"]),
            env,
        )
        .unwrap();
        assert_eq!(s.prefix.as_deref(), Some("/flag"));
        assert_eq!(s.connect.cert, Some(PathBuf::from("/env.crt")));
        assert_eq!(s.interval, None);
    }

    #[test]
    fn other_backends_and_unknown_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let confdir = dir.path().to_str().unwrap();
        let none = |_: &str| None;
        let cases = [
            ("backend = \"consul\"\n", "\"consul\""),
            ("backend = \"etcd2\"\n", "unknown backend"),
            ("table = \"t\"\n", "dynamodb"),
            ("intreval = 5\n", "intreval"),
        ];
        for (text, expected) in cases {
            std::fs::write(dir.path().join("confd.toml"), text).unwrap();
            let error = settings_with(
                &ConnectArgs::default(),
                &args(&["--confdir", confdir]),
                none,
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error = settings_with(
            &ConnectArgs::default(),
            &args(&["--backend", "vault"]),
            none,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("vault"), "{error}");
    }

    #[test]
    fn an_srv_record_that_does_not_resolve_is_an_error() {
        let error = settings_with(
            &ConnectArgs::default(),
            &args(&["--srv-record", "_etcd._tcp.shylock-test.invalid."]),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("_etcd._tcp.shylock-test.invalid."),
            "{error}"
        );
    }
}
