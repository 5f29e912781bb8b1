//! Turning a key's text into a typed value.
//!
//! Field types are decoded, in this order of preference, as: a nested
//! [`EtcdConfig`](crate::EtcdConfig) (a sub-prefix), a [`FromValue`] type, or any
//! [`FromStr`](std::str::FromStr) type (the value, trimmed of surrounding
//! whitespace, must be UTF-8).

use std::time::Duration;

/// The error a decoder returns; its text is shown unless the field is secret.
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// A type read from one key's raw value. Implement it for types whose text
/// form is not their `FromStr`, or that are not text at all.
///
/// ```
/// use shylock::{DecodeError, FromValue};
///
/// struct Hex(u32);
///
/// impl FromValue for Hex {
///     fn from_value(raw: &[u8]) -> Result<Self, DecodeError> {
///         let text = std::str::from_utf8(raw)?.trim();
///         Ok(Hex(u32::from_str_radix(text.trim_start_matches("0x"), 16)?))
///     }
/// }
///
/// assert_eq!(Hex::from_value(b"0xff").unwrap().0, 255);
/// ```
pub trait FromValue: Sized {
    /// Decodes the raw value.
    fn from_value(raw: &[u8]) -> Result<Self, DecodeError>;
}

/// The value as text, without trimming: a `String` field holds exactly what
/// etcd holds.
impl FromValue for String {
    fn from_value(raw: &[u8]) -> Result<Self, DecodeError> {
        Ok(std::str::from_utf8(raw)
            .map_err(|_| "not valid UTF-8")?
            .to_owned())
    }
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
impl FromValue for bool {
    fn from_value(raw: &[u8]) -> Result<Self, DecodeError> {
        let text = text(raw)?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected true/false, 1/0, yes/no or on/off".into()),
        }
    }
}

/// A human duration: `30s`, `5m`, `1h 30m`, `250ms`.
impl FromValue for Duration {
    fn from_value(raw: &[u8]) -> Result<Self, DecodeError> {
        let text = text(raw)?;
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("a duration needs a unit, such as `{text}s` or `{text}ms`").into());
        }
        Ok(humantime::parse_duration(text)?)
    }
}

/// The value as trimmed UTF-8 text.
pub(crate) fn text(raw: &[u8]) -> Result<&str, DecodeError> {
    Ok(std::str::from_utf8(raw)
        .map_err(|_| "not valid UTF-8")?
        .trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_in_every_spelling() {
        for (raw, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("false", false),
            ("0", false),
            ("no", false),
            ("off\n", false),
        ] {
            assert_eq!(bool::from_value(raw.as_bytes()).unwrap(), want, "{raw:?}");
        }
        assert!(bool::from_value(b"maybe").is_err());
    }

    #[test]
    fn human_durations() {
        assert_eq!(
            Duration::from_value(b"30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            Duration::from_value(b"5m").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            Duration::from_value(b"1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
        let err = Duration::from_value(b"30").unwrap_err().to_string();
        assert!(err.contains("needs a unit"), "{err}");
    }

    #[test]
    fn strings_are_exact_and_utf8() {
        assert_eq!(String::from_value(b" a b \n").unwrap(), " a b \n");
        assert!(String::from_value(&[0xff, 0xfe]).is_err());
    }
}
