//! Rendering a resource's template: Go's text/template by default, as
//! confd does (`gotemplate`), or Jinja when the resource asks for it
//! (`engine = "jinja"`, or a `.j2`/`.jinja` template; `jinja`). Both read
//! the keys through the same store and confd's functions under confd's
//! names, and both run within the same limits, on a thread of their own.

use std::sync::Arc;

use super::resource::Resource;
use super::store::Store;
use crate::exit::{msg, Error};
use crate::live_keys::Keys;

/// A template language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Go's text/template, confd's.
    Go,
    /// Jinja (minijinja).
    Jinja,
}

impl Engine {
    /// The engine a resource asks for, or by the template's extension.
    pub fn choose(field: Option<&str>, template: &std::path::Path) -> Result<Engine, String> {
        match field {
            Some("go") => Ok(Engine::Go),
            Some("jinja") => Ok(Engine::Jinja),
            Some(other) => Err(format!(
                "engine = {other:?}: the engines are \"go\" (confd's, the default) and \"jinja\""
            )),
            None => Ok(match template.extension().and_then(|e| e.to_str()) {
                Some("j2" | "jinja" | "jinja2") => Engine::Jinja,
                _ => Engine::Go,
            }),
        }
    }
}

/// What one render may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Engine steps (minijinja's fuel; for Go templates, range iterations).
    pub steps: u64,
    /// Bytes of output.
    pub output_bytes: usize,
    /// Time, on a thread of its own.
    pub time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps: 50_000_000,
            output_bytes: 64 << 20,
            time: std::time::Duration::from_secs(30),
        }
    }
}

/// Renders on a blocking thread within the limits; the daemon's own tasks
/// (signals, the watch) go on meanwhile. A render past its time limit is
/// reported and abandoned (its steps are bounded, so the thread ends).
pub async fn render_within(
    resource: &Resource,
    keys: &Arc<Keys>,
    limits: Limits,
) -> Result<String, Error> {
    let (resource, keys) = (resource.clone(), Arc::clone(keys));
    let name = resource.template.display().to_string();
    let task = tokio::task::spawn_blocking(move || render(&resource, &keys, limits));
    match tokio::time::timeout(limits.time, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(msg(format!("template {name}: the render failed: {panic}"))),
        Err(_) => Err(msg(format!(
            "template {name}: the render took longer than {:?}; not installed",
            limits.time
        ))),
    }
}

/// Renders a resource's template with the keys as they are now.
pub fn render(resource: &Resource, keys: &Arc<Keys>, limits: Limits) -> Result<String, Error> {
    let path = resource.template.display().to_string();
    let source = std::fs::read_to_string(&resource.template)
        .map_err(|e| msg(format!("cannot read template {path}: {e}")))?;
    let started = std::time::Instant::now();
    let store = Arc::new(
        Store::new(
            Arc::clone(keys),
            &resource.prefix,
            resource.watched(),
            &path,
            resource.strict,
        )
        .with_cache(Arc::clone(&resource.cache)),
    );
    let stored = started.elapsed();
    // Counting the keys walks them all: only for min_keys and the debug log.
    let store_len = tracing::enabled!(tracing::Level::DEBUG).then(|| store.len());
    if let Some(min) = resource.min_keys {
        let present = store.len();
        if present < min {
            return Err(msg(format!(
                "{}: only {present} key(s) under {:?}, fewer than min_keys = {min}; not rendered",
                resource.name,
                resource.watched()
            )));
        }
    }
    let mut out = Bounded::new(limits.output_bytes);
    let name = resource
        .template
        .file_name()
        .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned());
    let rendered = match resource.engine {
        Engine::Go => super::gotemplate::render(&name, &source, store, limits, &mut out),
        Engine::Jinja => super::jinja::render(&source, store, limits, &mut out),
    };
    resource.cache.finish();
    rendered.map_err(|e| msg(format!("template {path}: {e}")))?;
    tracing::debug!(template = %path, keys = store_len.unwrap_or_default(), store = ?stored, engine = ?started.elapsed() - stored, "rendered");
    String::from_utf8(out.out)
        .map_err(|e| msg(format!("template {path}: the output is not UTF-8: {e}")))
}

/// Output that stops at a size limit.
pub struct Bounded {
    out: Vec<u8>,
    limit: usize,
}

impl Bounded {
    pub fn new(limit: usize) -> Bounded {
        Bounded {
            out: Vec::new(),
            limit,
        }
    }

    /// Starts over, empty.
    pub fn clear(&mut self) {
        self.out.clear();
    }

    /// The output, as text (bytes that are not UTF-8 replaced).
    #[cfg(test)]
    pub fn into_string(self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "the output is larger than {} bytes",
                self.limit
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::Target;
    use crate::render::resource::full_key;

    fn resource(dir: &std::path::Path, engine: Engine, template: &str, keys: &[&str]) -> Resource {
        let path = dir.join("t.tmpl");
        std::fs::write(&path, template).unwrap();
        Resource {
            name: "t.toml".into(),
            template: path,
            target: Target::new(dir.join("out")),
            prefix: "/prod".into(),
            scopes: keys.iter().map(|k| full_key("/prod", k)).collect(),
            check_cmd: None,
            reload_cmd: None,
            min_keys: None,
            wait: None,
            engine,
            strict: false,
            cache: Default::default(),
        }
    }

    fn keys(pairs: &[(&str, &str)]) -> Arc<Keys> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn go(r: &Resource, keys: &Arc<Keys>) -> Result<String, String> {
        render(r, keys, Limits::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_engine_is_go_unless_jinja_is_asked_for() {
        let choose = |field, name: &str| Engine::choose(field, std::path::Path::new(name));
        assert_eq!(choose(None, "nginx.tmpl"), Ok(Engine::Go));
        assert_eq!(choose(None, "nginx.conf.j2"), Ok(Engine::Jinja));
        assert_eq!(choose(None, "a.jinja"), Ok(Engine::Jinja));
        assert_eq!(choose(Some("jinja"), "nginx.tmpl"), Ok(Engine::Jinja));
        assert_eq!(choose(Some("go"), "a.j2"), Ok(Engine::Go));
        assert!(choose(Some("handlebars"), "a")
            .unwrap_err()
            .contains("handlebars"));
    }

    #[test]
    fn jinja_has_confds_functions_under_confds_names() {
        let dir = tempfile::tempdir().unwrap();
        let data = keys(&[
            ("/prod/services/web/a", "10.0.0.2:80"),
            ("/prod/services/web/b", "10.0.0.1:80"),
            ("/prod/services/db/x/port", "5432"),
            ("/prod/app/name", "shop"),
            ("/prod/app/flags", r#"{"beta": true}"#),
            ("/prod/app/list", r#"["x","y"]"#),
        ]);
        let template = "{% for s in gets(\"/services/web/*\") %}server {{ s.Value }}; # {{ base(s.Key) }}\n{% endfor %}\
            {{ getv(\"/app/name\") | upper }} {{ getv(\"/app/missing\", \"dflt\") }} {{ exists(\"/app/name\") }}\n\
            {{ ls(\"/services\") | join(\",\") }} {{ lsdir(\"/services/db\") | join(\",\") }} {{ getvs(\"/services/web/*\") | join(\" \") }}\n\
            {{ json(getv(\"/app/flags\")).beta }} {{ jsonArray(getv(\"/app/list\"))[1] }} {{ toUpper(\"a\") }}{{ toLower(\"B\") }} \
            {{ split(\"a:b\", \":\")[1] }} {{ replace(\"aaa\", \"a\", \"b\", 2) }} {{ add(atoi(\"40\"), 2) }} {{ parseBool(\"true\") }} {{ dir(\"/a/b/\") }}";
        let r = resource(dir.path(), Engine::Jinja, template, &["/services", "/app"]);
        assert_eq!(
            go(&r, &data).unwrap(),
            "server 10.0.0.2:80; # a\nserver 10.0.0.1:80; # b\nSHOP dflt true\ndb,web x 10.0.0.1:80 10.0.0.2:80\ntrue y Ab b bba 42 true /a/b"
        );
    }

    /// confd's idiom `{{if exists "/k"}}` and `getv "/k" "default"` work on
    /// a key outside the resource's keys (confd's store does not hold it);
    /// `strict` makes reading one an error instead.
    #[test]
    fn a_key_outside_the_resources_keys_reads_as_missing_unless_strict() {
        let dir = tempfile::tempdir().unwrap();
        let data = keys(&[("/prod/app/name", "shop"), ("/prod/secret/pw", "x")]);
        for (engine, source) in [
            (
                Engine::Go,
                r#"{{exists "/secret/pw"}} {{getv "/secret/pw" "d"}}"#,
            ),
            (
                Engine::Jinja,
                r#"{{ exists("/secret/pw") }} {{ getv("/secret/pw", "d") }}"#,
            ),
        ] {
            let mut r = resource(dir.path(), engine, source, &["/app"]);
            assert_eq!(go(&r, &data).unwrap(), "false d", "{engine:?}");
            r.strict = true;
            let error = go(&r, &data).unwrap_err();
            assert!(
                error.contains("reads /secret/pw") && error.contains("not in the resource's keys"),
                "{engine:?}: {error}"
            );
        }
    }

    #[test]
    fn a_missing_key_an_undefined_name_and_bad_syntax_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let data = keys(&[("/prod/app/name", "shop")]);
        for (engine, source, expected) in [
            (
                Engine::Go,
                r#"{{getv "/app/port"}}"#,
                "key does not exist: /app/port",
            ),
            (
                Engine::Jinja,
                r#"{{ getv("/app/port") }}"#,
                "key does not exist: /app/port",
            ),
            (Engine::Jinja, "{{ nope }}", "undefined"),
            (Engine::Go, "a\n{{nope}}", "t.tmpl:2:"),
            (Engine::Go, "{{if}}", "t.tmpl:1:"),
            (Engine::Jinja, "{% for %}", "t.tmpl"),
        ] {
            let error = go(&resource(dir.path(), engine, source, &["/app"]), &data).unwrap_err();
            assert!(error.contains(expected), "{source}: {error}");
        }
    }

    #[test]
    fn min_keys_refuses_an_empty_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = resource(
            dir.path(),
            Engine::Go,
            "upstream { {{range getvs \"/up/*\"}}server {{.}};{{end}} }",
            &["/up"],
        );
        r.min_keys = Some(1);
        let error = go(&r, &keys(&[])).unwrap_err();
        assert!(error.contains("min_keys"), "{error}");
        assert!(go(&r, &keys(&[("/prod/up/a", "1.2.3.4")]))
            .unwrap()
            .contains("server 1.2.3.4;"));
    }

    #[test]
    fn output_past_the_limit_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = resource(
            dir.path(),
            Engine::Go,
            "{{range seq 1 100000}}xxxxxxxxxx{{end}}",
            &[],
        );
        let limits = Limits {
            output_bytes: 1000,
            ..Limits::default()
        };
        let error = render(&r, &keys(&[]), limits).unwrap_err().to_string();
        assert!(error.contains("1000 bytes"), "{error}");
    }
}
