//! Go's `path.Match`, which confd's `gets`, `getvs` and `ls` patterns use:
//! `*` (any run of non-`/` characters), `?` (one non-`/` character),
//! `[...]` classes with ranges and `^` negation, and `\` escapes. As in Go,
//! each `*` takes the first place where the rest of its chunk matches, so
//! matching costs at most the pattern's length times the name's: no
//! backtracking blow-up on patterns such as `*a*a*a*a*a*a*b`. A malformed
//! pattern is an error, never an empty match.

/// A malformed pattern (Go's `ErrBadPattern`).
#[derive(Debug, PartialEq, Eq)]
pub struct BadPattern;

impl std::fmt::Display for BadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("syntax error in pattern")
    }
}

/// Whether `name` matches `pattern` entirely.
pub fn matches(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    // The patterns templates mostly use, `/literal/*` and `/literal`,
    // without the general matcher's copies.
    let meta = |c: char| matches!(c, '*' | '?' | '[' | '\\');
    match pattern.strip_suffix('*') {
        Some(literal) if !literal.contains(meta) => {
            return Ok(name
                .strip_prefix(literal)
                .is_some_and(|rest| !rest.contains('/')));
        }
        _ if !pattern.contains(meta) => return Ok(name == pattern),
        _ => {}
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let mut name: &[char] = &name;
    let mut rest: &[char] = &pattern;
    'pattern: while !rest.is_empty() {
        let (star, chunk, after) = scan_chunk(rest);
        if star && chunk.is_empty() {
            // A trailing * matches the rest of the name unless it has a /.
            return Ok(!name.contains(&'/'));
        }
        match match_chunk(chunk, name)? {
            Some(t) if t.is_empty() || !after.is_empty() => {
                name = t;
                rest = after;
                continue;
            }
            _ => {}
        }
        if star {
            // Skip one more character each time; never a /.
            let mut i = 0;
            while i < name.len() && name[i] != '/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    // The last chunk must use up the name.
                    if !after.is_empty() || t.is_empty() {
                        name = t;
                        rest = after;
                        continue 'pattern;
                    }
                }
                i += 1;
            }
        }
        // No match: the rest of the pattern must still be well formed.
        let mut tail = after;
        while !tail.is_empty() {
            let (_, chunk, next) = scan_chunk(tail);
            match_chunk(chunk, &[])?;
            tail = next;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Checks a pattern's syntax without matching anything.
pub fn check(pattern: &str) -> Result<(), BadPattern> {
    matches(pattern, "").map(drop)
}

/// Splits off the next chunk: leading stars, then up to the next star
/// outside a class.
fn scan_chunk(pattern: &[char]) -> (bool, &[char], &[char]) {
    let mut star = false;
    let mut pattern = pattern;
    while pattern.first() == Some(&'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // The next character is literal (a lone \ at the end is an
            // error that match_chunk reports).
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches one chunk at the start of `s`; returns the rest of `s` if it
/// matched. Errors on a malformed chunk even when `s` runs out first.
fn match_chunk<'s>(chunk: &[char], s: &'s [char]) -> Result<Option<&'s [char]>, BadPattern> {
    #[cfg(test)]
    STEPS.with(|n| n.set(n.get() + chunk.len() as u64 + 1));
    let mut chunk = chunk;
    let mut s = s;
    // After a failed match the chunk is still checked for syntax.
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            '[' => {
                let r = if failed { '\0' } else { s[0] };
                if !failed {
                    s = &s[1..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, after) = get_esc(chunk)?;
                    chunk = after;
                    let mut hi = lo;
                    if chunk.first() == Some(&'-') {
                        let (h, after) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = after;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    if s[0] == '/' {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            '\\' => {
                chunk = &chunk[1..];
                if chunk.is_empty() {
                    return Err(BadPattern);
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            c => {
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

#[cfg(test)]
thread_local! {
    /// Characters of chunks compared, to count the work a match does.
    static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// One possibly escaped character of a class.
fn get_esc(chunk: &[char]) -> Result<(char, &[char]), BadPattern> {
    match chunk.first() {
        None | Some('-') | Some(']') => Err(BadPattern),
        Some('\\') => match chunk.get(1) {
            Some(&c) => Ok((c, &chunk[2..])),
            None => Err(BadPattern),
        },
        Some(&c) => {
            let rest = &chunk[1..];
            if rest.is_empty() {
                return Err(BadPattern);
            }
            Ok((c, rest))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own path.Match table (path/match_test.go).
    #[test]
    fn gos_match_table() {
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(BadPattern)),
            ("[-]", "-", Err(BadPattern)),
            ("[x-]", "x", Err(BadPattern)),
            ("[x-]", "-", Err(BadPattern)),
            ("[x-]", "z", Err(BadPattern)),
            ("[-x]", "x", Err(BadPattern)),
            ("[-x]", "-", Err(BadPattern)),
            ("[-x]", "a", Err(BadPattern)),
            ("\\", "a", Err(BadPattern)),
            ("[a-b-c]", "a", Err(BadPattern)),
            ("[", "a", Err(BadPattern)),
            ("[^", "a", Err(BadPattern)),
            ("[^bc", "a", Err(BadPattern)),
            ("a[", "a", Err(BadPattern)),
            ("a[", "ab", Err(BadPattern)),
            ("a[", "x", Err(BadPattern)),
            ("a/b[", "x", Err(BadPattern)),
            ("*x", "xxx", Ok(true)),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(&matches(pattern, name), expected, "{pattern:?} on {name:?}");
        }
    }

    /// Regression: `*a*a*a*a*a*a*b` ran for over a minute on a backtracking
    /// matcher. The work is bounded by the pattern's length times the
    /// name's, counted in characters compared.
    #[test]
    fn a_pattern_that_backtracks_exponentially_elsewhere_costs_little() {
        let pattern = "/a/g/*a*a*a*a*a*a*b";
        let name = format!("/a/g/{}", "a".repeat(60));
        STEPS.with(|n| n.set(0));
        assert_eq!(matches(pattern, &name), Ok(false));
        let steps = STEPS.with(|n| n.get());
        let bound = (pattern.len() * name.len()) as u64;
        assert!(steps <= bound, "{steps} steps, more than {bound}");
    }
}
