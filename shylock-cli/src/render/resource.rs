//! Template resources: confd's `conf.d/**/*.toml` files, read unchanged
//! (field names in any case, as confd's TOML decoder matches them), with an
//! unknown field refused by name.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::template::Engine;
use crate::atomic::Target;
use crate::command::parse_mode;
use crate::exit::{msg, Error};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceFile {
    template: Fields,
}

/// confd's fields, plus `engine`, `strict`, `min_keys` and `wait`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    src: String,
    dest: PathBuf,
    #[serde(default)]
    keys: Vec<String>,
    prefix: Option<String>,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    check_cmd: Option<String>,
    reload_cmd: Option<String>,
    /// "go" (the default) or "jinja" (also chosen by a `.j2` template).
    engine: Option<String>,
    /// Reading a key outside `keys` is an error, not a warning.
    #[serde(default)]
    strict: bool,
    /// Refuse to render while fewer keys than this exist under `keys`.
    min_keys: Option<usize>,
    wait: Option<WaitFields>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitFields {
    min: String,
    max: Option<String>,
}

/// Quiescence before rendering: `min` after the last change, at most `max`
/// after the first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Clone, Debug)]
pub struct Resource {
    /// The resource file's name, for logs and errors.
    pub name: String,
    pub template: PathBuf,
    pub target: Target,
    /// The full etcd prefix the resource's keys are relative to.
    pub prefix: String,
    /// The full etcd keys and prefixes the template may read (its `keys`
    /// under its `prefix`).
    pub scopes: Vec<String>,
    pub check_cmd: Option<String>,
    pub reload_cmd: Option<String>,
    pub min_keys: Option<usize>,
    pub wait: Option<Wait>,
    pub engine: Engine,
    /// Reading a key outside `scopes` is an error (a warning otherwise).
    pub strict: bool,
    /// Values made for the template, kept across its renders.
    pub cache: std::sync::Arc<super::cache::ValueCache>,
}

impl Resource {
    /// The full etcd keys and prefixes of its keys.
    pub fn watched(&self) -> &[String] {
        &self.scopes
    }

    /// Whether a change of the full etcd key `key` concerns this resource.
    pub fn uses(&self, key: &str) -> bool {
        self.scopes.iter().any(|w| covers(w, key))
    }
}

/// `prefix` + `key`, with exactly one `/` between.
pub fn full_key(prefix: &str, key: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if key.starts_with('/') {
        format!("{prefix}{key}")
    } else {
        format!("{prefix}/{key}")
    }
}

/// Whether the key or prefix `scope` covers `key`.
pub fn covers(scope: &str, key: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    scope.is_empty()
        || key
            .strip_prefix(scope)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How the command line's `-prefix` applies to resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalPrefix<'a> {
    /// None given: each resource's own prefix.
    None,
    /// confd's `-prefix`: replaces every resource's own prefix.
    Replace(&'a str),
}

/// Reads every `*.toml` under a confdir's `conf.d`, subdirectories
/// included (as confd does), in path order.
pub fn load(confdir: &Path, prefix: GlobalPrefix<'_>) -> Result<Vec<Resource>, Error> {
    files(confdir)?
        .iter()
        .map(|file| parse(confdir, file, prefix))
        .collect()
}

/// The resource files of a confdir, in path order; none is an error.
pub fn files(confdir: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = confdir.join("conf.d");
    let mut files = Vec::new();
    find_toml(&dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(msg(format!(
            "no template resources (*.toml) in {}",
            dir.display()
        )));
    }
    Ok(files)
}

/// The `*.toml` files under `dir`, recursively (symbolic links followed,
/// as confd's walk does for the files it finds).
fn find_toml(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| msg(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| msg(format!("cannot read {}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            find_toml(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    Ok(())
}

/// confd's TOML decoder matches field names case-insensitively (`Src`,
/// `Dest`, `Keys` are common in the wild): names are lowercased first.
fn lowercase_names(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(table) => toml::Value::Table(
            table
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), lowercase_names(v)))
                .collect(),
        ),
        other => other,
    }
}

/// One resource file.
pub fn parse(confdir: &Path, file: &Path, global: GlobalPrefix<'_>) -> Result<Resource, Error> {
    let conf_d = confdir.join("conf.d");
    let name = file
        .strip_prefix(&conf_d)
        .unwrap_or(file)
        .to_string_lossy()
        .into_owned();
    let err = |e: String| msg(format!("template resource {}: {e}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let value: toml::Value = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let fields = ResourceFile::deserialize(lowercase_names(value))
        .map_err(|e| err(e.message().to_owned()))?
        .template;
    // Without `mode`, an existing file keeps its own (as confd does).
    let mode = fields
        .mode
        .as_deref()
        .map(parse_mode)
        .transpose()
        .map_err(err)?;
    let uid = match (&fields.owner, fields.uid) {
        (Some(owner), _) => Some(user_id(owner).map_err(err)?),
        (None, uid) => uid,
    };
    let gid = match (&fields.group, fields.gid) {
        (Some(group), _) => Some(group_id(group).map_err(err)?),
        (None, gid) => gid,
    };
    let parse_duration = |text: &str| {
        humantime::parse_duration(text).map_err(|e| err(format!("wait: {text:?}: {e}")))
    };
    let wait = match &fields.wait {
        Some(w) => {
            let min = parse_duration(&w.min)?;
            let max = w
                .max
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or(min * 4);
            Some(Wait {
                min,
                max: max.max(min),
            })
        }
        None => None,
    };
    // confd: the command line's prefix replaces the resource's; either is
    // rooted at `/`.
    let prefix = match global {
        GlobalPrefix::Replace(prefix) => prefix,
        GlobalPrefix::None => fields.prefix.as_deref().unwrap_or(""),
    };
    let prefix = full_key("", prefix).trim_end_matches('/').to_owned();
    if fields.src.is_empty() {
        return Err(err("`src` is empty: name the template".into()));
    }
    let template = confdir.join("templates").join(&fields.src);
    let engine = Engine::choose(fields.engine.as_deref(), &template).map_err(err)?;
    Ok(Resource {
        name,
        template,
        target: Target {
            path: fields.dest,
            mode,
            uid,
            gid,
        },
        // confd: path.Join(prefix, key), so `/` and `/app/` name a prefix
        // without its trailing slash.
        scopes: fields
            .keys
            .iter()
            .map(|k| super::confd::path_clean(&full_key(&prefix, k)))
            .collect(),
        prefix,
        check_cmd: fields.check_cmd,
        reload_cmd: fields.reload_cmd,
        min_keys: fields.min_keys,
        wait,
        engine,
        strict: fields.strict,
        cache: Default::default(),
    })
}

/// A user name or number.
fn user_id(owner: &str) -> Result<u32, String> {
    if let Ok(uid) = owner.parse() {
        return Ok(uid);
    }
    let name = CString::new(owner).map_err(|_| format!("bad owner {owner:?}"))?;
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(format!("owner {owner:?} is not a user on this system"));
    }
    Ok(unsafe { (*entry).pw_uid })
}

/// A group name or number.
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let name = CString::new(group).map_err(|_| format!("bad group {group:?}"))?;
    // SAFETY: getgrnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(format!("group {group:?} is not a group on this system"));
    }
    Ok(unsafe { (*entry).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confdir(resource: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/app.toml"), resource).unwrap();
        dir
    }

    #[test]
    fn a_confd_resource_reads_unchanged() {
        let dir = confdir(
            r#"[template]
src = "nginx.tmpl"
dest = "/tmp/nginx.conf"
keys = ["/nginx", "/services/web"]
prefix = "/production"
owner = "root"
group = "root"
mode = "0600"
check_cmd = "/usr/sbin/nginx -t -c {{.src}}"
reload_cmd = "/usr/sbin/service nginx reload"
"#,
        );
        let r = &load(dir.path(), GlobalPrefix::None).unwrap()[0];
        assert_eq!(
            (r.target.mode, r.target.uid, r.target.gid),
            (Some(0o600), Some(0), Some(0))
        );
        assert_eq!(
            r.watched(),
            ["/production/nginx", "/production/services/web"]
        );
        assert!(r.uses("/production/nginx/upstream/a") && !r.uses("/production/nginxx"));
        assert_eq!(r.engine, Engine::Go);
        // confd's -prefix replaces the resource's own.
        let r = &load(dir.path(), GlobalPrefix::Replace("dc1")).unwrap()[0];
        assert_eq!(
            (r.prefix.as_str(), &r.scopes[0][..]),
            ("/dc1", "/dc1/nginx")
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let dir = confdir(
            "[template]\nsrc = \"a\"\ndest = \"/tmp/a\"\nkeys = [\"/a\"]\nchek_cmd = \"true\"\n",
        );
        let error = load(dir.path(), GlobalPrefix::None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("chek_cmd") && error.contains("app.toml"),
            "{error}"
        );
        let dir = confdir("[template]\nsrc = \"a\"\ndest = \"/tmp/a\"\nkeys = [\"/a\"]\nowner = \"no-such-user-x\"\n");
        assert!(load(dir.path(), GlobalPrefix::None)
            .unwrap_err()
            .to_string()
            .contains("no-such-user-x"));
    }

    /// confd's decoder matches names in any case, walks conf.d's
    /// subdirectories, and takes a resource without keys.
    #[test]
    fn confds_looser_shapes_are_read() {
        let dir = confdir(
            "[template]\nSrc = \"a.tmpl\"\nDest = \"/tmp/a\"\nKeys = [\"/a\"]\nMode = \"0640\"\n",
        );
        std::fs::create_dir_all(dir.path().join("conf.d/team/b")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/team/b/b.toml"),
            "[template]\nsrc = \"b.j2\"\ndest = \"/tmp/b\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/team/notes.txt"), "not a resource").unwrap();
        let all = load(dir.path(), GlobalPrefix::None).unwrap();
        let names: Vec<_> = all.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app.toml", "team/b/b.toml"]);
        assert_eq!(
            (all[0].target.mode, all[0].watched()),
            (Some(0o640), &["/a".to_owned()][..])
        );
        assert!(all[1].watched().is_empty());
        assert_eq!(all[1].engine, Engine::Jinja);
        let dir = confdir("[template]\nsrc = \"a\"\ndest = \"/tmp/a\"\nengine = \"mustache\"\n");
        let error = load(dir.path(), GlobalPrefix::None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("mustache"), "{error}");
    }
}
