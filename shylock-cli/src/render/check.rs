//! `shylock render --check-confd DIR`: before switching from confd, read
//! a confdir as `render` would, without etcd: its confd.toml, every
//! resource, every template (parsed with confd's functions, so an unknown
//! function is named with its line) and every `check_cmd`. Each resource
//! gets a line; the exit status says whether everything would work.

use std::path::Path;

use super::resource::{self, GlobalPrefix, Resource};
use super::template::Engine;
use super::RenderArgs;
use crate::exit::{msg, Error};

pub fn run(confdir: &Path, args: &RenderArgs) -> Result<(), Error> {
    let mut problems = Vec::new();
    let config = args
        .config_file
        .clone()
        .unwrap_or_else(|| confdir.join("confd.toml"));
    if config.exists() {
        let check = RenderArgs {
            confdir: Some(confdir.to_owned()),
            config_file: Some(config.clone()),
            srv_domain: None,
            srv_record: None,
            ..args.clone()
        };
        match super::confd_config::settings(&Default::default(), &check) {
            Ok(_) => println!("{}: ok", config.display()),
            Err(error) => problems.push(format!("{}: {error}", config.display())),
        }
    }
    let files = resource::files(confdir)?;
    for file in &files {
        let shown = file.strip_prefix(confdir).unwrap_or(file).display();
        match resource::parse(confdir, file, GlobalPrefix::None).and_then(|r| check(&r)) {
            Ok(report) => println!("{shown}: ok ({report})"),
            Err(error) => problems.push(format!("{shown}: {error}")),
        }
    }
    for problem in &problems {
        println!("{problem}");
    }
    match problems.len() {
        0 => {
            println!("{} resource(s): all would render", files.len());
            Ok(())
        }
        n => Err(msg(format!(
            "{n} problem(s) in {} (of {} resource(s))",
            confdir.display(),
            files.len()
        ))),
    }
}

/// One resource: its template parses with its engine, its check command
/// as the Go template confd makes of it.
fn check(resource: &Resource) -> Result<String, Error> {
    let path = resource.template.display().to_string();
    let source = std::fs::read_to_string(&resource.template)
        .map_err(|e| msg(format!("cannot read template {path}: {e}")))?;
    let engine = match resource.engine {
        Engine::Go => {
            let name = resource
                .template
                .file_name()
                .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned());
            let store = std::sync::Arc::new(super::store::Store::new(
                Default::default(),
                "/",
                &[],
                &path,
                false,
            ));
            super::gotemplate::parse(&name, &source, store, Default::default())
                .map_err(|e| msg(format!("template {path}: {e}")))?;
            "Go template"
        }
        Engine::Jinja => {
            super::jinja::check(&source).map_err(|e| msg(format!("template {path}: {e}")))?;
            "Jinja template"
        }
    };
    if let Some(check) = &resource.check_cmd {
        super::apply::check_script(check, "/staged")?;
    }
    Ok(format!(
        "{engine} {}, {} key(s) or prefix(es)",
        resource
            .template
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        resource.watched().len()
    ))
}
