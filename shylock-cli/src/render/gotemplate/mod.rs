//! confd's templates: Go's text/template (the gotmpl crate, a port with
//! Go's output, checked against Go by its authors) with confd's functions
//! under confd's names and Go's semantics (`funcs`). A template runs as
//! confd runs it: named after its file, with no data (`{{.}}` prints
//! `<no value>`), missing map keys printing `<no value>`.
//!
//! Not available: methods on values, apart from confd's documented
//! `datetime.Format "layout"`, which is rewritten to a function before
//! parsing. Errors at parse time name the template, line and column;
//! errors while executing name the function and the key.

mod funcs;
mod ranges;

use gotmpl::parse::{Expr, ListNode, Node, PipeNode, Pos};
use std::sync::{Arc, OnceLock, Weak};

use gotmpl::{Template, Value};

use super::store::Shared;
use super::template::{Bounded, Limits};

/// Renders a Go template into `out`: with its cacheable ranges rewritten
/// (ranges.rs), and as written if that fails, so errors read as Go's.
pub fn render(
    name: &str,
    source: &str,
    store: Shared,
    limits: Limits,
    out: &mut Bounded,
) -> Result<(), String> {
    let slot: Arc<OnceLock<Template>> = Arc::default();
    let template = parse_with(name, source, store, limits, Arc::downgrade(&slot))?;
    if let Some(cached) = ranges::rewrite(&template, name) {
        let _ = slot.set(cached);
        if let Some(cached) = slot.get() {
            // The rewritten tree is the template's definition under its
            // name (`execute` would run the tree as parsed).
            if cached.execute_template(out, name, &Value::Nil).is_ok() {
                return Ok(());
            }
            out.clear();
        }
    }
    template
        .execute(out, &Value::Nil)
        .map_err(|e| format!("executing {name:?}: {e}"))
}

/// Parses a template with confd's functions, as `render` would run it.
/// As in Go, a call of a function that does not exist is a parse error,
/// even in a branch that never runs.
pub fn parse(name: &str, source: &str, store: Shared, limits: Limits) -> Result<Template, String> {
    parse_with(name, source, store, limits, Weak::new())
}

fn parse_with(
    name: &str,
    source: &str,
    store: Shared,
    limits: Limits,
    slot: Weak<OnceLock<Template>>,
) -> Result<Template, String> {
    let mut funcs = funcs::map(store.clone());
    let known = |f: &str| funcs.contains_key(f) || BUILTINS.contains(&f);
    let mut unknown = None;
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut hasher);
        hasher.finish()
    };
    let mut all = funcs.clone();
    all.insert(
        ranges::FUNCTION.to_owned(),
        Arc::new(ranges::function(slot, store, hash, limits.output_bytes)),
    );
    let template = Template::new(name)
        .max_range_iters(limits.steps)
        .funcs(all)
        .parse(&methods_as_functions(source))
        .map_err(|e| e.to_string())?;
    for defined in template.templates() {
        if let Some(tree) = template.lookup(defined) {
            walk_list(tree, &mut |function, pos| {
                if unknown.is_none() && !known(function) {
                    unknown = Some((function.to_owned(), pos.line));
                }
            });
        }
    }
    funcs.clear();
    match unknown {
        // Go's words: `template: t.tmpl:2: function "nope" not defined`.
        Some((function, line)) => Err(format!(
            "template: {name}:{line}: function {function:?} not defined"
        )),
        None => Ok(template),
    }
}

/// text/template's own functions.
const BUILTINS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];

/// Every function called in a tree, with its place.
fn walk_list(list: &ListNode, found: &mut impl FnMut(&str, Pos)) {
    for node in &list.nodes {
        match node {
            Node::List(list) => walk_list(list, found),
            Node::Action(action) => walk_pipe(&action.pipe, found),
            Node::If(branch) | Node::Range(branch) | Node::With(branch) => {
                walk_pipe(&branch.pipe, found);
                walk_list(&branch.body, found);
                if let Some(other) = &branch.else_body {
                    walk_list(other, found);
                }
            }
            Node::Template(call) => {
                if let Some(pipe) = &call.pipe {
                    walk_pipe(pipe, found);
                }
            }
            Node::Define(define) => walk_list(&define.body, found),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }
}

fn walk_pipe(pipe: &PipeNode, found: &mut impl FnMut(&str, Pos)) {
    for command in &pipe.commands {
        for arg in &command.args {
            walk_expr(arg, found);
        }
    }
}

fn walk_expr(expr: &Expr, found: &mut impl FnMut(&str, Pos)) {
    match expr {
        Expr::Identifier(pos, name) => found(name, *pos),
        Expr::Pipe(_, pipe) => walk_pipe(pipe, found),
        Expr::Chain(_, inner, _) => walk_expr(inner, found),
        _ => {}
    }
}

/// confd's `datetime` returns a Go time, and its docs call its `Format`
/// method: inside actions, `datetime.Format` becomes `datetimeFormat`.
fn methods_as_functions(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let (text, action) = rest.split_at(open);
        out.push_str(text);
        let close = action.find("}}").map_or(action.len(), |i| i + 2);
        out.push_str(&action[..close].replace("datetime.Format", "datetimeFormat"));
        rest = &action[close..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
