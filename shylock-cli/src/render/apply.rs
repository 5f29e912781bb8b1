//! One resource, once: render, stage next to the destination, run the
//! check command against the staged file, install atomically.

use super::resource::Resource;
use super::{template, RenderArgs};
use crate::command;
use crate::exit::{msg, Error};
use crate::live_keys::Keys;

/// What a pass does with rendered content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Write, check and reload.
    Write,
    /// Write without check or reload (`--sync-only`).
    SyncOnly,
    /// Print what would change (`--noop`).
    Noop,
}

/// Renders and installs one resource; returns whether its file changed.
/// A failing check leaves the old file in place.
pub async fn install(
    resource: &Resource,
    keys: &std::sync::Arc<Keys>,
    mode: Mode,
    args: &RenderArgs,
) -> Result<bool, Error> {
    tracing::debug!(resource = %resource.name, "rendering");
    let started = std::time::Instant::now();
    let content = template::render_within(resource, keys, args.limits()).await?;
    let rendered = started.elapsed();
    let target = &resource.target;
    if target.is_current(content.as_bytes()) {
        return Ok(false);
    }
    if mode == Mode::Noop {
        print_diff(resource, &content);
        if args.keep_stage_file {
            let kept = target.stage(content.as_bytes())?.keep()?;
            tracing::info!(resource = %resource.name, staged = %kept.display(), "keeping the staged file");
        }
        return Ok(false);
    }
    let staged = target.stage(content.as_bytes())?;
    if let (Mode::Write, Some(check)) = (mode, &resource.check_cmd) {
        let script = check_script(check, &staged.path().display().to_string())?;
        if let Err(error) = command::run("check_cmd", &script, args.command_timeout).await {
            if args.keep_stage_file {
                let kept = staged.keep()?;
                tracing::info!(resource = %resource.name, staged = %kept.display(), "keeping the staged file");
            }
            return Err(error);
        }
    }
    staged.install()?;
    tracing::info!(
        resource = %resource.name,
        dest = %target.path.display(),
        render = ?rendered,
        total = ?started.elapsed(),
        "written"
    );
    Ok(true)
}

/// confd renders `check_cmd` as a Go template with `.src`, the staged
/// file's path (`{{.src}}`, `{{ .src }}`, any spacing or trim marker).
pub fn check_script(check: &str, src: &str) -> Result<String, Error> {
    let mut data = std::collections::BTreeMap::new();
    data.insert("src".to_owned(), gotmpl::Value::from(src));
    let template = gotmpl::Template::new("check_cmd")
        .parse(check)
        .map_err(|e| msg(format!("check_cmd {check:?}: {e}")))?;
    let mut out = Vec::new();
    template
        .execute(&mut out, &gotmpl::Value::from(data))
        .map_err(|e| msg(format!("check_cmd {check:?}: {e}")))?;
    String::from_utf8(out).map_err(|e| msg(format!("check_cmd {check:?}: {e}")))
}

/// `--noop`: a unified diff of the file, and mode or owner changes.
fn print_diff(resource: &Resource, content: &str) {
    use std::os::unix::fs::MetadataExt;
    let path = &resource.target.path;
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(current.as_str(), content);
    let name = path.display().to_string();
    print!(
        "{}",
        diff.unified_diff().header(&name, &format!("{name} (new)"))
    );
    if let Ok(meta) = std::fs::metadata(path) {
        let target = &resource.target;
        let mode = target.mode_to_write();
        if meta.mode() & 0o7777 != mode {
            println!("mode of {name}: {:o} -> {mode:o}", meta.mode() & 0o7777);
        }
        if target.uid.is_some_and(|u| u != meta.uid())
            || target.gid.is_some_and(|g| g != meta.gid())
        {
            println!(
                "owner of {name}: {}:{} -> {:?}:{:?}",
                meta.uid(),
                meta.gid(),
                target.uid,
                target.gid
            );
        }
    }
}
