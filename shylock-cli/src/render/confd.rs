//! confd's template helpers with Go's semantics, shared by both template
//! engines: Go's `path.Base`/`Dir`/`Clean`, `strings.Split`, `strconv`'s
//! parsing and its error messages, `%v` for floats, and confd's own
//! functions (`getenv` with a default, `seq`, `sortByLength`, `lookupIP`).

/// Most numbers one `seq` may make.
pub const MAX_SEQ: i64 = 1_000_000;

/// Go's `path.Clean`: the shortest equivalent path, lexically.
pub fn path_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            part => out.push(part),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `path.Base`: the last element, trailing slashes removed.
pub fn path_base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_owned();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
}

/// Go's `path.Dir`: everything but the last element, cleaned
/// (`dir("/a/b/")` is `/a/b`, `dir("a")` is `.`).
pub fn path_dir(path: &str) -> String {
    let cut = path.rfind('/').map_or(0, |i| i + 1);
    path_clean(&path[..cut])
}

/// Go's `strings.Split`: an empty separator splits into characters, and an
/// empty string is one empty element.
pub fn split(text: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() {
        return text.chars().map(String::from).collect();
    }
    text.split(sep).map(str::to_owned).collect()
}

/// Go's `strings.Replace`: `n < 0` replaces all.
pub fn replace(text: &str, old: &str, new: &str, n: i64) -> String {
    match usize::try_from(n) {
        Ok(n) => text.replacen(old, new, n),
        Err(_) => text.replace(old, new),
    }
}

/// Go's `strings.ToUpper`/`ToLower`: rune by rune, one rune for one.
pub fn change_case(text: &str, upper: bool) -> String {
    text.chars()
        .map(|c| {
            let mut mapped = if upper {
                c.to_uppercase().collect::<Vec<_>>()
            } else {
                c.to_lowercase().collect::<Vec<_>>()
            };
            if mapped.len() == 1 {
                mapped.remove(0)
            } else {
                c
            }
        })
        .collect()
}

/// confd's `getenv`: the variable, or the default when it is unset or
/// empty.
pub fn getenv(name: &str, default: Option<&str>) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => default.unwrap_or_default().to_owned(),
    }
}

/// Go's `strconv.ParseBool`, with its error message.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {text:?}: invalid syntax"
        )),
    }
}

/// Go's `strconv.Atoi`, with its error messages.
pub fn atoi(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {text:?}: invalid syntax"));
    }
    text.parse()
        .map_err(|_| format!("strconv.Atoi: parsing {text:?}: value out of range"))
}

/// confd's `seq`: `first` to `last` included (none when `last < first`),
/// at most [`MAX_SEQ`] numbers.
pub fn seq(first: i64, last: i64) -> Result<Vec<i64>, String> {
    let count = i128::from(last) - i128::from(first) + 1;
    if count > i128::from(MAX_SEQ) {
        return Err(format!(
            "seq({first}, {last}) would make {count} numbers, more than {MAX_SEQ}"
        ));
    }
    Ok((first..=last).collect())
}

/// confd's `sortByLength`, shortest first; equal lengths keep their order
/// (Go's sort is stable for the short lists it is used on).
pub fn sort_by_length<T>(mut items: Vec<T>, len: impl Fn(&T) -> usize) -> Vec<T> {
    items.sort_by_key(|item| len(item));
    items
}

/// confd's `lookupIP`: every address of a host, sorted as text; empty when
/// the lookup fails.
pub fn lookup_ip(host: &str) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = (host, 0).to_socket_addrs() else {
        return Vec::new();
    };
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.sort();
    ips.dedup();
    ips
}

/// confd's `lookupIPV4` (`true`) and `lookupIPV6`: the addresses of one
/// family, as confd tells them apart (a `.` or a `:` in the text).
pub fn lookup_ip_family(host: &str, v4: bool) -> Vec<String> {
    let mark = if v4 { '.' } else { ':' };
    lookup_ip(host)
        .into_iter()
        .filter(|ip| ip.contains(mark))
        .collect()
}

/// confd's `datetime` printed: Go's `time.Now().String()` without the
/// monotonic clock reading (`2026-11-24 09:35:04.123456789 +0000 UTC`).
pub fn now_string() -> String {
    super::gotime::now().format("2006-01-02 15:04:05.999999999 -0700 MST")
}

/// confd's `base64Decode`, with Go's error message.
pub fn base64_decode(text: &str) -> Result<String, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("illegal base64 data: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// confd's `base64Encode`.
pub fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the
/// shortest digits that round-trip, with an exponent when it is below -4
/// or 6 and above (`8080`, `1e+06`, `1.2345678e+07`, `1e-05`): what a
/// JSON number decoded by confd's `json` prints as.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, as Go does.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        return format!("{f}");
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from Go's path package documentation and tests.
    #[test]
    fn paths_as_go_has_them() {
        for (input, clean) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
        ] {
            assert_eq!(path_clean(input), clean, "Clean({input:?})");
        }
        for (input, base) in [
            ("", "."),
            (".", "."),
            ("/.", "."),
            ("/", "/"),
            ("////", "/"),
            ("x/", "x"),
            ("abc", "abc"),
            ("abc/def", "def"),
            ("a/b/.x", ".x"),
            ("a/b/c.", "c."),
            ("a/b/c.x", "c.x"),
        ] {
            assert_eq!(path_base(input), base, "Base({input:?})");
        }
        for (input, dir) in [
            ("", "."),
            (".", "."),
            ("/.", "/"),
            ("/", "/"),
            ("////", "/"),
            ("/foo", "/"),
            ("x/", "x"),
            ("abc", "."),
            ("abc/def", "abc"),
            ("abc////def", "abc"),
            ("a/b/.x", "a/b"),
            ("a/b/c.", "a/b"),
            ("a/b/c.x", "a/b"),
            ("/a/b/", "/a/b"),
        ] {
            assert_eq!(path_dir(input), dir, "Dir({input:?})");
        }
    }

    #[test]
    fn strings_and_numbers_as_go_has_them() {
        assert_eq!(split("a,b,c", ","), ["a", "b", "c"]);
        assert_eq!(
            split("a man a plan a canal panama", "a "),
            ["", "man ", "plan ", "canal panama"]
        );
        assert_eq!(split(" xyz ", ""), [" ", "x", "y", "z", " "]);
        assert_eq!(split("", "Bernardo O'Higgins"), [""]);
        assert_eq!(replace("oink oink oink", "k", "ky", 2), "oinky oinky oink");
        assert_eq!(replace("oink oink oink", "oink", "moo", -1), "moo moo moo");
        assert_eq!(change_case("Gopher ß", true), "GOPHER ß");
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(
            parse_bool("tRUE"),
            Err("strconv.ParseBool: parsing \"tRUE\": invalid syntax".into())
        );
        assert_eq!(atoi("-42"), Ok(-42));
        assert_eq!(
            atoi("4x"),
            Err("strconv.Atoi: parsing \"4x\": invalid syntax".into())
        );
        assert_eq!(
            atoi("99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
        assert_eq!(seq(3, 5), Ok(vec![3, 4, 5]));
        assert_eq!(seq(5, 3), Ok(vec![]));
        assert!(seq(1, 3_000_000_000).is_err());
        assert_eq!(
            sort_by_length(vec!["ccc", "a", "bb", "d"], |s| s.len()),
            ["a", "d", "bb", "ccc"]
        );
        assert_eq!(base64_encode("shylock"), "c2h5bG9jaw==");
        assert_eq!(base64_decode("c2h5bG9jaw=="), Ok("shylock".into()));
        assert!(base64_decode("%%").is_err());
    }

    /// fmt.Sprint of float64 values, as Go prints them.
    #[test]
    fn floats_print_as_go_prints_them() {
        for (f, go) in [
            (1.0, "1"),
            (3.5, "3.5"),
            (8080.0, "8080"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (12345678.0, "1.2345678e+07"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(format_float(f), go, "{f}");
        }
    }
}
