//! Rendering that costs what changed: a `{{range gets "pattern"}}` or
//! `{{range getvs "pattern"}}` whose body reads only its item (no
//! variables, no other keys, no clock, environment or DNS, no template
//! calls, no break or continue, no else) is rewritten into a call that
//! keeps each item's output from the last render and runs the body again
//! only for items whose key or value changed. A one-key change in a
//! 10,000-key loop runs the body once instead of 10,000 times.
//!
//! The body becomes a template of its own (`__shylock_range_N`), run with
//! the item as dot, exactly as the range ran it. The call reads the keys
//! straight from the store: an item whose output is cached is never made
//! into a template value. Any error falls back to rendering the template
//! as written, so errors read as Go's.

use std::sync::{OnceLock, Weak};

use gotmpl::parse::{ActionNode, CommandNode, Expr, ListNode, Node, Number, PipeNode};
use gotmpl::{Template, TemplateError, Value};

use crate::render::store::Shared;

/// The function the rewritten ranges call.
pub const FUNCTION: &str = "__shylock_range";

/// Functions whose result depends only on their arguments.
const PURE: &[&str] = &[
    // text/template's own.
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge", // confd's.
    "base",
    "dir",
    "split",
    "join",
    "json",
    "jsonArray",
    "map",
    "datetimeFormat",
    "toUpper",
    "toLower",
    "contains",
    "replace",
    "trimSuffix",
    "base64Encode",
    "base64Decode",
    "parseBool",
    "atoi",
    "reverse",
    "sortByLength",
    "sortKVByLength",
    "seq",
    "add",
    "sub",
    "div",
    "mod",
    "mul",
];

/// `template` with its cacheable ranges rewritten and their bodies added
/// as templates of their own, or `None` when it has none.
pub fn rewrite(template: &Template, name: &str) -> Option<Template> {
    let tree = template.lookup(name)?;
    let mut bodies = Vec::new();
    let rewritten = rewrite_list(tree, &mut bodies);
    if bodies.is_empty() {
        return None;
    }
    let mut out = template.clone().add_parse_tree(name, rewritten);
    for (i, body) in bodies.into_iter().enumerate() {
        out = out.add_parse_tree(&body_name(i), body);
    }
    Some(out)
}

fn body_name(i: usize) -> String {
    format!("{FUNCTION}_{i}")
}

fn rewrite_list(list: &ListNode, bodies: &mut Vec<ListNode>) -> ListNode {
    let nodes = list
        .nodes
        .iter()
        .map(|node| match node {
            Node::Range(range) if cacheable(range) => {
                let n = bodies.len();
                bodies.push(range.body.clone());
                let pos = range.pos;
                Node::Action(ActionNode {
                    pos,
                    pipe: PipeNode {
                        pos,
                        decl: Vec::new(),
                        commands: vec![CommandNode {
                            pos,
                            // What it loops over, by name: the function
                            // reads the keys from the store, and makes an
                            // item's value only when its body runs.
                            args: vec![
                                Expr::Identifier(pos, FUNCTION.into()),
                                Expr::Number(pos, Number::Int(n as i64)),
                                match &range.pipe.commands[0].args[0] {
                                    Expr::Identifier(_, f) => Expr::String(pos, f.as_str().into()),
                                    other => other.clone(),
                                },
                                range.pipe.commands[0].args[1].clone(),
                            ],
                        }],
                        is_assign: false,
                    },
                })
            }
            Node::List(inner) => Node::List(rewrite_list(inner, bodies)),
            Node::If(branch) | Node::With(branch) | Node::Range(branch) => {
                let mut branch = branch.clone();
                branch.body = rewrite_list(&branch.body, bodies);
                branch.else_body = branch.else_body.map(|e| rewrite_list(&e, bodies));
                match node {
                    Node::If(_) => Node::If(branch),
                    Node::With(_) => Node::With(branch),
                    _ => Node::Range(branch),
                }
            }
            other => other.clone(),
        })
        .collect();
    ListNode {
        pos: list.pos,
        nodes,
    }
}

/// `range gets "p"` or `range getvs "p"`, no variables, no else, and a
/// body that reads only its item.
fn cacheable(range: &gotmpl::parse::BranchNode) -> bool {
    let pipe = &range.pipe;
    let over_keys = pipe.decl.is_empty()
        && !pipe.is_assign
        && pipe.commands.len() == 1
        && matches!(
            pipe.commands[0].args.as_slice(),
            [Expr::Identifier(_, f), Expr::String(..)] if f == "gets" || f == "getvs"
        );
    over_keys && range.else_body.is_none() && pure_list(&range.body)
}

fn pure_list(list: &ListNode) -> bool {
    list.nodes.iter().all(|node| match node {
        Node::Text(_) => true,
        Node::List(inner) => pure_list(inner),
        Node::Action(action) => pure_pipe(&action.pipe),
        Node::If(branch) | Node::With(branch) | Node::Range(branch) => {
            pure_pipe(&branch.pipe)
                && pure_list(&branch.body)
                && branch.else_body.as_ref().is_none_or(pure_list)
        }
        Node::Template(_) | Node::Define(_) | Node::Break(_) | Node::Continue(_) => false,
    })
}

fn pure_pipe(pipe: &PipeNode) -> bool {
    pipe.decl.is_empty()
        && !pipe.is_assign
        && pipe.commands.iter().all(|c| c.args.iter().all(pure_expr))
}

fn pure_expr(expr: &Expr) -> bool {
    match expr {
        Expr::Identifier(_, name) => PURE.contains(&name.as_str()),
        Expr::Variable(..) => false,
        Expr::Pipe(_, pipe) => pure_pipe(pipe),
        Expr::Chain(_, inner, _) => pure_expr(inner),
        _ => true,
    }
}

/// The function behind a rewritten range: each item's output, from the
/// cache when its key and value are those of the last render.
pub fn function(
    slot: Weak<OnceLock<Template>>,
    store: Shared,
    source: u64,
    limit: usize,
) -> impl Fn(&[Value]) -> Result<Value, TemplateError> + Send + Sync + 'static {
    let fail = |text: &str| TemplateError::Exec(format!("{FUNCTION}: {text}"));
    move |args: &[Value]| {
        let (Some(Value::Int(n)), Some(Value::String(function)), Some(Value::String(pattern))) =
            (args.first(), args.get(1), args.get(2))
        else {
            return Err(fail("bad arguments"));
        };
        let slot = slot.upgrade().ok_or_else(|| fail("the template is gone"))?;
        let template = slot
            .get()
            .ok_or_else(|| fail("the template is not built"))?;
        let body = body_name(*n as usize);
        let pairs = &**function == "gets";
        let items = store.loop_items(pairs, pattern).map_err(|e| fail(&e))?;
        let out = store.cache().loop_output(
            (source, *n as usize),
            &items,
            limit,
            || fail("over the output limit"),
            |i| {
                let (key, value) = items[i];
                let item = match pairs {
                    true => super::funcs::pair(key, value),
                    false => Value::String(value.into()),
                };
                template.execute_template_to_string(&body, &item)
            },
        )?;
        Ok(Value::String(out.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::super::{parse, render};
    use crate::render::cache::ValueCache;
    use crate::render::template::{Bounded, Limits};

    fn store(keys: &[(&str, &str)], cache: &Arc<ValueCache>) -> crate::render::store::Shared {
        crate::render::store::for_test(keys, "t.tmpl", cache)
    }

    /// Renders with a cache kept across calls, and without one; both must agree.
    fn both(
        source: &str,
        keys: &[(&str, &str)],
        cache: &Arc<ValueCache>,
    ) -> Result<String, String> {
        let mut cached = Bounded::new(1 << 20);
        let with = render(
            "t.tmpl",
            source,
            store(keys, cache),
            Limits::default(),
            &mut cached,
        )
        .map(|()| cached.into_string());
        cache.finish();
        let plain = parse(
            "t.tmpl",
            source,
            store(keys, &Arc::default()),
            Limits::default(),
        )
        .and_then(|t| {
            t.execute_to_string(&gotmpl::Value::Nil)
                .map_err(|e| format!("executing \"t.tmpl\": {e}"))
        });
        assert_eq!(with, plain, "{source}");
        with
    }

    #[test]
    fn a_cached_range_renders_what_the_template_says_across_changes() {
        let source = "head\n{{range gets \"/s/*\"}}{{.Key}}={{.Value | toUpper}}\n{{end}}\
                      {{- range getvs \"/s/*\"}}[{{.}}]{{end}}\ntail {{getv \"/t\"}}\n";
        let cache = Arc::default();
        let runs = |cache: &Arc<ValueCache>| cache.bodies_run.load(Ordering::Relaxed);
        let first = both(source, &[("/s/a", "1"), ("/s/b", "x"), ("/t", "T")], &cache).unwrap();
        assert_eq!(first, "head\n/s/a=1\n/s/b=X\n[1][x]\ntail T\n");
        assert_eq!(runs(&cache), 4, "two items in each of two ranges");
        let second = both(source, &[("/s/b", "y"), ("/s/c", "z"), ("/t", "U")], &cache).unwrap();
        assert_eq!(second, "head\n/s/b=Y\n/s/c=Z\n[y][z]\ntail U\n");
        assert_eq!(runs(&cache), 8, "b changed and c is new, in each range");
        both(source, &[("/s/b", "y"), ("/s/c", "z"), ("/t", "V")], &cache).unwrap();
        assert_eq!(runs(&cache), 8, "no item changed: no body runs");
        // The template changes: nothing of the old one's output is reused.
        let other = source.replace("toUpper", "toLower");
        assert_eq!(
            both(&other, &[("/s/b", "Y"), ("/t", "T")], &cache).unwrap(),
            "head\n/s/b=y\n[Y]\ntail T\n"
        );
    }

    #[test]
    fn only_ranges_whose_body_reads_its_item_alone_are_cached() {
        let keys = [("/s/a", "1"), ("/t", "T")];
        let template = |source: &str| {
            parse(
                "t.tmpl",
                source,
                store(&keys, &Arc::default()),
                Limits::default(),
            )
            .unwrap()
        };
        for source in [
            "{{range $i, $kv := gets \"/s/*\"}}{{$i}}{{end}}",
            "{{$x := 1}}{{range gets \"/s/*\"}}{{$x}}{{end}}",
            "{{range gets \"/s/*\"}}{{getv \"/t\"}}{{end}}",
            "{{range gets \"/s/*\"}}{{datetime}}{{end}}",
            "{{range gets \"/s/*\"}}{{.Key}}{{else}}none{{end}}",
            "{{range gets \"/s/*\"}}{{break}}{{end}}",
            "{{range ls \"/s\"}}{{.}}{{end}}",
            "{{define \"x\"}}{{.}}{{end}}{{range getvs \"/s/*\"}}{{template \"x\" .}}{{end}}",
        ] {
            assert!(
                super::rewrite(&template(source), "t.tmpl").is_none(),
                "{source}"
            );
        }
        let nested = "{{if true}}{{range getvs \"/s/*\"}}{{.}}{{end}}{{end}}";
        assert!(super::rewrite(&template(nested), "t.tmpl").is_some());
        assert_eq!(both(nested, &keys, &Arc::default()).unwrap(), "1");
    }

    #[test]
    fn an_error_in_a_cached_body_reads_as_go_writes_it() {
        let source = "{{range gets \"/s/*\"}}{{atoi .Value}}{{end}}";
        let cache = Arc::default();
        assert_eq!(both(source, &[("/s/a", "1")], &cache).unwrap(), "1");
        let error = both(source, &[("/s/a", "one")], &cache).unwrap_err();
        assert!(!error.contains(super::FUNCTION), "{error}");
    }
}
