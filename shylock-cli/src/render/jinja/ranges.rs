//! Rendering that costs what changed, for Jinja: a
//! `{% for kv in gets("pattern") %}` or `{% for v in getvs("pattern") %}`
//! whose body reads only its item (no other variables, no `loop`, no other
//! keys, no clock, environment or DNS, no set, include, macro, break or
//! continue, no else, no filter, not recursive) is rewritten into a call
//! that keeps each item's output from the last render and runs the body
//! again only for items whose key or value changed. The Go engine does the
//! same for its ranges (gotemplate/ranges.rs).
//!
//! The loop stays as written, over a one-item list, as a template of its
//! own (`__shylock_range_N`), so each item renders exactly as the loop
//! rendered it, whitespace control included. The call reads the keys
//! straight from the store: an item whose output is cached is never made
//! into a template value. Any error falls back to rendering the template
//! as written, so errors read as they always did.

use std::sync::Arc;

use minijinja::machinery::ast::{self, CallArg, Expr, Stmt};
use minijinja::machinery::{parse, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Error as JinjaError, ErrorKind, State, Value};

use crate::render::store::Shared;

/// The function the rewritten loops call.
pub const FUNCTION: &str = "__shylock_range";

/// Functions whose result depends only on their arguments: confd's and
/// minijinja's own (filters and tests are all minijinja's, and pure).
const PURE: &[&str] = &[
    "base",
    "dir",
    "split",
    "join",
    "json",
    "jsonArray",
    "map",
    "toUpper",
    "toLower",
    "replace",
    "contains",
    "trimSuffix",
    "base64Encode",
    "base64Decode",
    "parseBool",
    "atoi",
    "reverse",
    "sortByLength",
    "sortKVByLength",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "seq",
    "range",
    "dict",
];

/// A template with its cacheable loops rewritten.
pub struct Rewritten {
    /// The template, each cached loop replaced by a call of [`FUNCTION`].
    pub source: String,
    /// Each cached loop: its body template's name and source, and what it
    /// loops over.
    pub loops: Vec<Loop>,
}

/// One cached loop.
pub struct Loop {
    pub name: String,
    pub source: String,
    /// `gets` (pairs) or `getvs` (values), and the pattern.
    pub pairs: bool,
    pub pattern: String,
}

/// `source` with its cacheable loops rewritten, or `None` when it has none
/// (or does not parse: the render as written reports that).
pub fn rewrite(source: &str) -> Option<Rewritten> {
    let tree = parse(
        source,
        "template",
        SyntaxConfig,
        WhitespaceConfig::default(),
    )
    .ok()?;
    let Stmt::Template(template) = &tree else {
        return None;
    };
    // A name a pure function goes by, bound to something else anywhere in
    // the template, would make a body read more than its item.
    if !plain(&template.children) {
        return None;
    }
    let mut found = Vec::new();
    find(&template.children, source, &mut found);
    if found.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(source.len());
    let mut loops = Vec::new();
    let mut at = 0;
    for (n, found) in found.into_iter().enumerate() {
        out.push_str(&source[at..found.open]);
        let trim = |yes: bool| if yes { "-" } else { "" };
        out.push_str(&format!(
            "{{{{{} {FUNCTION}({n}) {}}}}}",
            trim(found.trim_before),
            trim(found.trim_after)
        ));
        at = found.close;
        loops.push(Loop {
            name: format!("{FUNCTION}_{n}"),
            source: found.body,
            pairs: found.pairs,
            pattern: found.pattern,
        });
    }
    out.push_str(&source[at..]);
    Some(Rewritten { source: out, loops })
}

/// A cacheable loop's place in the source.
struct Found {
    /// From its `{%` to its `endfor`'s `%}`.
    open: usize,
    close: usize,
    trim_before: bool,
    trim_after: bool,
    /// The loop over `__items` instead of its keys.
    body: String,
    pairs: bool,
    pattern: String,
}

/// Cacheable loops in `stmts`, in source order (a loop inside a cached
/// loop is part of it).
fn find(stmts: &[Stmt<'_>], source: &str, found: &mut Vec<Found>) {
    for stmt in stmts {
        match stmt {
            Stmt::ForLoop(for_loop) => match cacheable(for_loop, source) {
                Some(one) => found.push(one),
                None => {
                    find(&for_loop.body, source, found);
                    find(&for_loop.else_body, source, found);
                }
            },
            Stmt::IfCond(cond) => {
                find(&cond.true_body, source, found);
                find(&cond.false_body, source, found);
            }
            Stmt::WithBlock(with) => find(&with.body, source, found),
            Stmt::SetBlock(set) => find(&set.body, source, found),
            _ => {}
        }
    }
}

fn cacheable(for_loop: &ast::Spanned<ast::ForLoop<'_>>, source: &str) -> Option<Found> {
    if for_loop.filter_expr.is_some() || for_loop.recursive || !for_loop.else_body.is_empty() {
        return None;
    }
    let Expr::Call(call) = &for_loop.iter else {
        return None;
    };
    let (Expr::Var(function), [CallArg::Pos(Expr::Const(pattern))]) =
        (&call.expr, call.args.as_slice())
    else {
        return None;
    };
    let pairs = match function.id {
        "gets" => true,
        "getvs" => false,
        _ => return None,
    };
    let pattern = pattern.value.as_str()?.to_owned();
    let mut bound = Vec::new();
    names(&for_loop.target, &mut bound);
    if !pure_stmts(&for_loop.body, &mut bound) {
        return None;
    }
    // The statement's span runs from `for` to `endfor`; the tags around
    // them are found in the source, and anything unexpected there means
    // no caching.
    let span = for_loop.span();
    let (start, end) = (span.start_offset as usize, span.end_offset as usize);
    let head = source.get(..start)?.trim_end();
    let (head, trim_before) = match head.strip_suffix('-') {
        Some(head) => (head, true),
        None => (head.strip_suffix('+').unwrap_or(head), false),
    };
    let open = head.strip_suffix("{%")?.len();
    let tail = source.get(end..)?.trim_start();
    let (tail, trim_after) = match tail.strip_prefix('-') {
        Some(tail) => (tail, true),
        None => (tail.strip_prefix('+').unwrap_or(tail), false),
    };
    let close = source.len() - tail.strip_prefix("%}")?.len();
    let iter = call.span();
    let (iter_start, iter_end) = (iter.start_offset as usize, iter.end_offset as usize);
    let written = source.get(iter_start..iter_end)?;
    let in_place = written.starts_with(function.id) && written.ends_with(')');
    if !(in_place && open < iter_start && iter_end < close) {
        return None;
    }
    let body = format!(
        "{}__items{}",
        &source[open..iter_start],
        &source[iter_end..close]
    );
    Some(Found {
        open,
        close,
        trim_before,
        trim_after,
        body,
        pairs,
        pattern,
    })
}

/// The names an assignment target binds.
fn names<'a>(target: &Expr<'a>, out: &mut Vec<&'a str>) {
    match target {
        Expr::Var(var) => out.push(var.id),
        Expr::List(list) => list.items.iter().for_each(|item| names(item, out)),
        _ => {}
    }
}

/// Statements that emit only what their bound names and pure functions
/// give. Nested loops bind their targets for their bodies.
fn pure_stmts<'a>(stmts: &[Stmt<'a>], bound: &mut Vec<&'a str>) -> bool {
    stmts.iter().all(|stmt| match stmt {
        Stmt::EmitRaw(_) => true,
        Stmt::EmitExpr(emit) => pure_expr(&emit.expr, bound),
        Stmt::IfCond(cond) => {
            pure_expr(&cond.expr, bound)
                && pure_stmts(&cond.true_body, bound)
                && pure_stmts(&cond.false_body, bound)
        }
        Stmt::ForLoop(inner) => {
            if inner.recursive
                || !pure_expr(&inner.iter, bound)
                || !pure_stmts(&inner.else_body, bound)
            {
                return false;
            }
            let depth = bound.len();
            names(&inner.target, bound);
            let pure = inner
                .filter_expr
                .as_ref()
                .is_none_or(|f| pure_expr(f, bound))
                && pure_stmts(&inner.body, bound);
            bound.truncate(depth);
            pure
        }
        _ => false,
    })
}

fn pure_expr(expr: &Expr<'_>, bound: &[&str]) -> bool {
    let all = |exprs: &[Expr<'_>]| exprs.iter().all(|e| pure_expr(e, bound));
    let args = |args: &[CallArg<'_>]| {
        args.iter().all(|arg| match arg {
            CallArg::Pos(e)
            | CallArg::Kwarg(_, e)
            | CallArg::PosSplat(e)
            | CallArg::KwargSplat(e) => pure_expr(e, bound),
        })
    };
    let maybe = |e: &Option<Expr<'_>>| e.as_ref().is_none_or(|e| pure_expr(e, bound));
    match expr {
        // `loop` is the loop's state, which a one-item loop does not have.
        Expr::Var(var) => var.id != "loop" && bound.contains(&var.id),
        Expr::Const(_) => true,
        Expr::Slice(s) => {
            pure_expr(&s.expr, bound) && maybe(&s.start) && maybe(&s.stop) && maybe(&s.step)
        }
        Expr::UnaryOp(op) => pure_expr(&op.expr, bound),
        Expr::BinOp(op) => pure_expr(&op.left, bound) && pure_expr(&op.right, bound),
        Expr::Compare(c) => {
            pure_expr(&c.expr, bound) && c.ops.iter().all(|op| pure_expr(&op.expr, bound))
        }
        Expr::IfExpr(e) => {
            pure_expr(&e.test_expr, bound) && pure_expr(&e.true_expr, bound) && maybe(&e.false_expr)
        }
        Expr::Filter(f) => maybe(&f.expr) && args(&f.args),
        Expr::Test(t) => pure_expr(&t.expr, bound) && args(&t.args),
        Expr::GetAttr(a) => pure_expr(&a.expr, bound),
        Expr::GetItem(i) => pure_expr(&i.expr, bound) && pure_expr(&i.subscript_expr, bound),
        // Only calls of pure functions by name (no methods).
        Expr::Call(call) => {
            matches!(&call.expr, Expr::Var(f) if PURE.contains(&f.id) && !bound.contains(&f.id))
                && args(&call.args)
        }
        Expr::List(list) => all(&list.items),
        Expr::Map(map) => all(&map.keys) && all(&map.values),
    }
}

/// No statement the caching cannot see through (includes, macros,
/// imports, blocks), and no pure function's name, nor the rewrite's own,
/// bound to anything else.
fn plain(stmts: &[Stmt<'_>]) -> bool {
    let free = |target: &Expr<'_>| {
        let mut bound = Vec::new();
        names(target, &mut bound);
        bound
            .iter()
            .all(|name| !PURE.contains(name) && !name.starts_with(FUNCTION))
    };
    stmts.iter().all(|stmt| match stmt {
        Stmt::EmitRaw(_) | Stmt::EmitExpr(_) => true,
        Stmt::IfCond(cond) => plain(&cond.true_body) && plain(&cond.false_body),
        Stmt::ForLoop(l) => free(&l.target) && plain(&l.body) && plain(&l.else_body),
        Stmt::WithBlock(with) => {
            with.assignments.iter().all(|(target, _)| free(target)) && plain(&with.body)
        }
        Stmt::Set(set) => free(&set.target),
        Stmt::SetBlock(set) => free(&set.target) && plain(&set.body),
        _ => false,
    })
}

/// The function behind the rewritten loops: each item's output, from the
/// cache when its key and value are those of the last render.
pub fn function(
    loops: Arc<Vec<(bool, String)>>,
    store: Shared,
    source: u64,
    limit: usize,
) -> impl Fn(&State<'_, '_>, usize) -> Result<String, JinjaError> + Send + Sync + 'static {
    move |state: &State<'_, '_>, n: usize| {
        let fail = |text: &str| {
            JinjaError::new(ErrorKind::InvalidOperation, format!("{FUNCTION}: {text}"))
        };
        let (pairs, pattern) = loops.get(n).ok_or_else(|| fail("no such loop"))?;
        let items = store.loop_items(*pairs, pattern).map_err(|e| fail(&e))?;
        let body = state.env().get_template(&format!("{FUNCTION}_{n}"))?;
        store.cache().loop_output(
            (source, n),
            &items,
            limit,
            || fail("over the output limit"),
            |i| {
                let (key, value) = items[i];
                let item = match pairs {
                    true => super::kv(key, value),
                    false => Value::from(value),
                };
                body.render(minijinja::context! { __items => Value::from(vec![item]) })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use crate::render::cache::ValueCache;
    use crate::render::template::{Bounded, Limits};

    fn store(keys: &[(&str, &str)], cache: &Arc<ValueCache>) -> crate::render::store::Shared {
        crate::render::store::for_test(keys, "t.j2", cache)
    }

    /// Renders with a cache kept across calls, and as written; both must agree.
    fn both(
        source: &str,
        keys: &[(&str, &str)],
        cache: &Arc<ValueCache>,
    ) -> Result<String, String> {
        let mut cached = Bounded::new(1 << 20);
        let with = super::super::render(source, store(keys, cache), Limits::default(), &mut cached)
            .map(|()| cached.into_string());
        cache.finish();
        let mut plain = Bounded::new(1 << 20);
        let written = super::super::run(
            super::super::environment(store(keys, &Arc::default()), Limits::default()),
            source.to_owned(),
            &mut plain,
        )
        .map(|()| plain.into_string());
        assert_eq!(with, written, "{source}");
        with
    }

    fn runs(cache: &Arc<ValueCache>) -> usize {
        cache.bodies_run.load(Ordering::Relaxed)
    }

    #[test]
    fn a_cached_loop_renders_what_the_template_says_across_changes() {
        let source = "head\n{% for kv in gets(\"/s/*\") %}{{ kv.Key }}={{ kv.Value | upper }}\n{% endfor %}\
                      {%- for v in getvs(\"/s/*\") -%}\n  [{{ v }}]\n{%- endfor %}\ntail {{ getv(\"/t\") }}\n";
        let cache = Arc::default();
        let first = both(source, &[("/s/a", "1"), ("/s/b", "x"), ("/t", "T")], &cache).unwrap();
        assert_eq!(first, "head\n/s/a=1\n/s/b=X\n[1][x]\ntail T\n");
        assert_eq!(runs(&cache), 4, "two items in each of two loops");
        let second = both(source, &[("/s/b", "y"), ("/s/c", "z"), ("/t", "U")], &cache).unwrap();
        assert_eq!(second, "head\n/s/b=Y\n/s/c=Z\n[y][z]\ntail U\n");
        assert_eq!(runs(&cache), 8, "b changed and c is new, in each loop");
        both(source, &[("/s/b", "y"), ("/s/c", "z"), ("/t", "V")], &cache).unwrap();
        assert_eq!(runs(&cache), 8, "no item changed: no body runs");
        // The template changes: nothing of the old one's output is reused.
        let other = source.replace("upper", "lower");
        assert_eq!(
            both(&other, &[("/s/b", "Y"), ("/t", "T")], &cache).unwrap(),
            "head\n/s/b=y\n[Y]\ntail T\n"
        );
        assert_eq!(runs(&cache), 10);
    }

    #[test]
    fn whitespace_control_nesting_and_pure_functions_render_as_written() {
        let keys = [("/s/a", "1,2"), ("/s/b", "3"), ("/t", "T")];
        for source in [
            "a\n  {%- for kv in gets('/s/*') -%}\n   {{ kv.key }}\n  {%- endfor -%}\n  b\n",
            "{% if true %}{% for kv in gets('/s/*') %}{% for p in split(kv.Value, ',') %}<{{ p | int + 1 }}>{% endfor %}{% endfor %}{% endif %}",
            "{% for k, in [[1]] %}{% endfor %}{% for v in getvs('/s/*') %}{{ base(v) ~ ('!' if v == '3' else '?') }}{{ v is string }}{% endfor %}",
            "{% set x = 1 %}{% for kv in gets('/s/*') %}{{ {'a': kv.Key}['a'] }}{{ [kv.Value][0] }}{{ toUpper(kv.Key)[1:] }}\n{% endfor %}",
        ] {
            let cache = Arc::default();
            both(source, &keys, &cache).unwrap();
            assert!(super::rewrite(source).is_some(), "{source}");
            assert_eq!(runs(&cache), 2, "{source}");
        }
    }

    #[test]
    fn only_loops_whose_body_reads_its_item_alone_are_cached() {
        for source in [
            "{% for kv in gets('/s/*') %}{{ loop.index }}{% endfor %}",
            "{% set x = 1 %}{% for kv in gets('/s/*') %}{{ x }}{% endfor %}",
            "{% for kv in gets('/s/*') %}{{ getv('/t') }}{% endfor %}",
            "{% for kv in gets('/s/*') %}{{ datetime() }}{% endfor %}",
            "{% for kv in gets('/s/*') %}{{ kv.Key }}{% else %}none{% endfor %}",
            "{% for kv in gets('/s/*') if kv.Value %}{{ kv.Key }}{% endfor %}",
            "{% for kv in gets('/s/*') %}{% break %}{% endfor %}",
            "{% for kv in gets('/s/*') %}{% set y = 2 %}{{ y }}{% endfor %}",
            "{% for kv in ls('/s') %}{{ kv }}{% endfor %}",
            "{% set p = '/s/*' %}{% for kv in gets(p) %}{{ kv }}{% endfor %}",
            "{% set toUpper = 'x' %}{% for kv in gets('/s/*') %}{{ toUpper(kv.Key) }}{% endfor %}",
            "{% macro m(x) %}{{ x }}{% endmacro %}{% for v in getvs('/s/*') %}{{ v }}{% endfor %}",
            "{% for kv in gets('/s/*') %}{{ kv.Key.upper() }}{% endfor %}",
            "{% set __shylock_range = toUpper %}{% for v in getvs('/s/*') %}{{ v }}{% endfor %}",
        ] {
            assert!(super::rewrite(source).is_none(), "{source}");
        }
    }

    #[test]
    fn an_error_in_a_cached_body_reads_as_written() {
        let source = "{% for kv in gets('/s/*') %}{{ atoi(kv.Value) }}{% endfor %}";
        let cache = Arc::default();
        assert_eq!(both(source, &[("/s/a", "1")], &cache).unwrap(), "1");
        let error = both(source, &[("/s/a", "one")], &cache).unwrap_err();
        assert!(!error.contains(super::FUNCTION), "{error}");
        let error = both(
            "{% for kv in gets('/s/*') %}{{ kv.Nope }}{% endfor %}",
            &[("/s/a", "1")],
            &cache,
        )
        .unwrap_err();
        assert!(error.contains("undefined"), "{error}");
    }
}
