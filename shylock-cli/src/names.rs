//! Key segments as file names, and back. No key is ever invisible:
//!
//! - `%` and the NUL byte are written `%25` and `%00`;
//! - an empty segment is `%`, `.` is `%2E` and `..` is `%2E%2E`;
//! - a segment longer than 255 bytes is cut to 200 bytes and followed by
//!   `%~` and 16 hex digits of a hash of the whole segment;
//! - a key that is also a prefix (`/a` and `/a/b`) is the directory `a`, and
//!   its own value is the file [`VALUE_FILE`] inside it.
//!
//! Other bytes, including non-UTF-8 ones, are used as they are: Linux file
//! names are bytes. Because `%` is always escaped, `%value`, `%` and `%~...`
//! can never be the name of an ordinary segment.

use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The file inside a directory that holds the directory's own key's value.
pub const VALUE_FILE: &str = "%value";

const MAX_NAME: usize = 255;
const CUT: usize = 200;

/// The file name of one key segment.
pub fn encode(segment: &[u8]) -> OsString {
    match segment {
        b"" => return OsString::from("%"),
        b"." => return OsString::from("%2E"),
        b".." => return OsString::from("%2E%2E"),
        _ => {}
    }
    let mut out = Vec::with_capacity(segment.len());
    for &b in segment {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            0 => out.extend_from_slice(b"%00"),
            _ => out.push(b),
        }
    }
    if out.len() > MAX_NAME {
        let mut cut = CUT;
        // Do not end inside an escape.
        while out[..cut].iter().rev().take(2).any(|&b| b == b'%') {
            cut -= 1;
        }
        out.truncate(cut);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        segment.hash(&mut hasher);
        out.extend_from_slice(format!("%~{:016x}", hasher.finish()).as_bytes());
    }
    OsString::from_vec(out)
}

/// Why a file name cannot name a key segment.
#[derive(Debug, PartialEq, Eq)]
pub enum BadName {
    /// A `%` not followed by two hex digits, or a shortened (`%~`) name that
    /// names no existing key.
    Escape,
}

/// The key segment a file name stands for. Shortened names (`%~`) are not
/// decoded here: callers look them up among existing names.
pub fn decode(name: &OsStr) -> Result<Vec<u8>, BadName> {
    let bytes = name.as_bytes();
    if bytes == b"%" {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadName::Escape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BadName::Escape)?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| BadName::Escape)?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether a name is a shortened (`%~hash`) name.
pub fn is_shortened(name: &OsStr) -> bool {
    name.as_bytes().windows(2).any(|w| w == b"%~")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(segment: &[u8]) {
        let name = encode(segment);
        assert!(name.len() <= MAX_NAME, "{name:?}");
        assert!(!name.as_bytes().contains(&b'/') || segment.contains(&b'/'));
        if !is_shortened(&name) {
            assert_eq!(decode(&name).unwrap(), segment, "{name:?}");
        }
    }

    #[test]
    fn every_segment_has_a_name_that_decodes_back() {
        for segment in [
            &b""[..],
            b".",
            b"..",
            b"...",
            b"a%b",
            b"100%",
            b"nul\0byte",
            b"\xff\xfe",
            b"app.conf",
            b"%value",
        ] {
            round_trip(segment);
        }
        assert_eq!(encode(b""), "%");
        assert_eq!(encode(b"."), "%2E");
        assert_eq!(encode(b".."), "%2E%2E");
        assert_eq!(encode(b"%value"), "%25value");
        assert_ne!(encode(b"%value"), VALUE_FILE);
    }

    #[test]
    fn long_segments_are_shortened_uniquely() {
        let a = vec![b'a'; 300];
        let mut b = a.clone();
        b[299] = b'b';
        let (na, nb) = (encode(&a), encode(&b));
        assert!(na.len() <= MAX_NAME && nb.len() <= MAX_NAME);
        assert_ne!(na, nb);
        assert!(is_shortened(&na));
        let percents = vec![b'%'; 300];
        assert!(encode(&percents).len() <= MAX_NAME);
    }

    #[test]
    fn bad_escapes_are_refused() {
        assert_eq!(decode(OsStr::new("50%off")), Err(BadName::Escape));
        assert_eq!(decode(OsStr::new("50%25off")).unwrap(), b"50%off");
    }
}
