//! Connection options shared by every subcommand, named as etcdctl names
//! them. Precedence: flags, then `SHYLOCK_*` variables, then etcdctl's
//! `ETCDCTL_*` (and `ETC_HOSTS`, from the Go tool this project is named
//! after), then the TOML config file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shylock::ConnectOptions;

use crate::exit::{msg, Error};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/shylock/shylock.toml";

#[derive(Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// etcd endpoints, comma-separated [env: SHYLOCK_ENDPOINTS, ETCDCTL_ENDPOINTS,
    /// ETC_HOSTS] [default: http://127.0.0.1:2379]
    #[arg(long, global = true, value_delimiter = ',')]
    pub endpoints: Vec<String>,

    /// Find the endpoints in DNS, as etcdctl does: SRV records of
    /// _etcd-client-ssl._tcp.DOMAIN (https) and _etcd-client._tcp.DOMAIN
    /// (http) [env: SHYLOCK_DISCOVERY_SRV, ETCDCTL_DISCOVERY_SRV]
    #[arg(
        long,
        global = true,
        value_name = "DOMAIN",
        conflicts_with = "endpoints"
    )]
    pub discovery_srv: Option<String>,

    /// CA certificate (PEM) to verify etcd with [env: SHYLOCK_CACERT, ETCDCTL_CACERT]
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) [env: SHYLOCK_CERT, ETCDCTL_CERT]
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,

    /// Client key (PEM) [env: SHYLOCK_KEY, ETCDCTL_KEY]
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,

    /// etcd user, as `name` or `name:password` [env: SHYLOCK_USER, ETCDCTL_USER]
    #[arg(long, global = true)]
    pub user: Option<String>,

    /// Password of --user [env: SHYLOCK_PASSWORD, ETCDCTL_PASSWORD]
    #[arg(long, global = true, hide_env_values = true)]
    pub password: Option<String>,

    /// How long to wait for etcd at start, such as 5s [env: SHYLOCK_DIAL_TIMEOUT,
    /// ETCDCTL_DIAL_TIMEOUT] [default: 5s]
    #[arg(long, global = true)]
    pub dial_timeout: Option<String>,

    /// A watch stream etcd has not answered on for this long is taken as
    /// stalled and reopened; a quiet stream is probed every third of it
    /// [env: SHYLOCK_STALL_TIMEOUT] [default: 30s]
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub stall_timeout: Option<std::time::Duration>,

    /// TOML file with any of the options above [default: /etc/shylock/shylock.toml
    /// if present]
    #[arg(long, global = true, env = "SHYLOCK_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Secrets stay out of `Debug` output: the password, and one given as
/// `--user name:password`.
impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self
            .user
            .as_deref()
            .map(|u| u.split_once(':').map_or(u, |(name, _)| name));
        f.debug_struct("ConnectArgs")
            .field("endpoints", &self.endpoints)
            .field("discovery_srv", &self.discovery_srv)
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("dial_timeout", &self.dial_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("config", &self.config)
            .finish()
    }
}

/// The config file: the same options, by their flag names.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    endpoints: Option<Vec<String>>,
    discovery_srv: Option<String>,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    dial_timeout: Option<String>,
    stall_timeout: Option<String>,
}

impl ConnectArgs {
    /// The resolved options, from flags, environment and config file.
    pub fn options(&self) -> Result<ConnectOptions, Error> {
        self.options_with(|name| std::env::var(name).ok())
    }

    fn options_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<ConnectOptions, Error> {
        let file = self.config_file()?;
        let pick = |flag: Option<String>, name: &str, file: Option<String>| {
            flag.or_else(|| env(&format!("SHYLOCK_{name}")))
                .or_else(|| env(&format!("ETCDCTL_{name}")))
                .or_else(|| (name == "ENDPOINTS").then(|| env("ETC_HOSTS")).flatten())
                .or(file)
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut endpoints = (!self.endpoints.is_empty()).then(|| self.endpoints.join(","));
        // DNS discovery, when asked for, gives the endpoints (and beats
        // endpoints from the environment or the file, as a flag would).
        let discovery = if endpoints.is_some() {
            self.discovery_srv.clone()
        } else {
            pick(
                self.discovery_srv.clone(),
                "DISCOVERY_SRV",
                file.discovery_srv,
            )
        };
        if let Some(domain) = discovery {
            if endpoints.is_some() {
                return Err(crate::exit::usage(
                    "give --endpoints or --discovery-srv, not both",
                ));
            }
            endpoints = Some(crate::srv::discover(&domain).map_err(msg)?.join(","));
        }
        let values = [
            (
                "ETCDCTL_ENDPOINTS",
                pick(endpoints, "ENDPOINTS", file.endpoints.map(|e| e.join(","))),
            ),
            ("ETCDCTL_USER", pick(self.user.clone(), "USER", file.user)),
            (
                "ETCDCTL_PASSWORD",
                pick(self.password.clone(), "PASSWORD", file.password),
            ),
            (
                "ETCDCTL_DIAL_TIMEOUT",
                pick(self.dial_timeout.clone(), "DIAL_TIMEOUT", file.dial_timeout),
            ),
            (
                "ETCDCTL_CACERT",
                pick(path(&self.cacert), "CACERT", path(&file.cacert)),
            ),
            (
                "ETCDCTL_CERT",
                pick(path(&self.cert), "CERT", path(&file.cert)),
            ),
            ("ETCDCTL_KEY", pick(path(&self.key), "KEY", path(&file.key))),
        ];
        let mut options = ConnectOptions::from_vars(|name| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
        })?;
        let stall = match self.stall_timeout {
            Some(stall) => Some(stall),
            None => env("SHYLOCK_STALL_TIMEOUT")
                .or(file.stall_timeout)
                .map(|text| {
                    humantime::parse_duration(&text)
                        .map_err(|e| msg(format!("stall timeout {text:?}: {e}")))
                })
                .transpose()?,
        };
        if let Some(stall) = stall {
            options = options.with_stall_timeout(stall);
        }
        Ok(options)
    }

    fn config_file(&self) -> Result<ConfigFile, Error> {
        let (path, required) = match &self.config {
            Some(path) => (path.as_path(), true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default())
            }
            Err(e) => {
                return Err(msg(format!(
                    "cannot read config file {}: {e}",
                    path.display()
                )))
            }
        };
        toml::from_str(&text).map_err(|e| msg(format!("config file {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_beat_shylock_vars_beat_etcdctl_vars_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shylock.toml");
        std::fs::write(
            &file,
            "endpoints = [\"http://file:2379\"]\ndial-timeout = \"9s\"\n",
        )
        .unwrap();
        let mut args = ConnectArgs {
            config: Some(file),
            ..ConnectArgs::default()
        };
        let from_file = args.options_with(env(&[])).unwrap();
        assert_eq!(from_file.endpoints(), ["http://file:2379"]);
        let etc_hosts = args
            .options_with(env(&[("ETC_HOSTS", "http://legacy:2379")]))
            .unwrap();
        assert_eq!(etc_hosts.endpoints(), ["http://legacy:2379"]);
        let etcdctl = args
            .options_with(env(&[
                ("ETCDCTL_ENDPOINTS", "http://e:2379"),
                ("ETC_HOSTS", "http://legacy:2379"),
            ]))
            .unwrap();
        assert_eq!(etcdctl.endpoints(), ["http://e:2379"]);
        let shylock = args
            .options_with(env(&[
                ("SHYLOCK_ENDPOINTS", "http://s:2379"),
                ("ETCDCTL_ENDPOINTS", "http://e:2379"),
            ]))
            .unwrap();
        assert_eq!(shylock.endpoints(), ["http://s:2379"]);
        args.endpoints = vec!["http://flag:2379".into(), "http://flag2:2379".into()];
        let flag = args
            .options_with(env(&[("SHYLOCK_ENDPOINTS", "http://s:2379")]))
            .unwrap();
        assert_eq!(flag.endpoints(), ["http://flag:2379", "http://flag2:2379"]);
    }

    #[test]
    fn config_file_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shylock.toml");
        std::fs::write(&file, "endpoint = [\"x\"]\n").unwrap();
        let args = ConnectArgs {
            config: Some(file.clone()),
            ..ConnectArgs::default()
        };
        let error = args.options_with(env(&[])).unwrap_err().to_string();
        assert!(
            error.contains(&file.display().to_string()) && error.contains("endpoint"),
            "{error}"
        );
        let missing = ConnectArgs {
            config: Some(dir.path().join("nope.toml")),
            ..ConnectArgs::default()
        };
        assert!(missing
            .options_with(env(&[]))
            .unwrap_err()
            .to_string()
            .contains("nope.toml"));
    }

    #[test]
    fn debug_output_hides_passwords() {
        let args = ConnectArgs {
            user: Some("root:pw-in-user".into()),
            password: Some("pw-flag".into()),
            ..ConnectArgs::default()
        };
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("pw-in-user") && !shown.contains("pw-flag") && shown.contains("root"),
            "{shown}"
        );
    }
}
