//! Go's time layouts (`Mon Jan 2 15:04:05 MST 2006`), for confd's
//! `datetime`: its printed form and its `.Format "layout"` idiom. The local
//! time and zone come from the C library, as Go's do on Linux.

/// A moment in the local time zone, broken down.
#[derive(Clone, Debug)]
pub struct Time {
    year: i64,
    month: usize,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    nanos: u32,
    weekday: usize,
    year_day: i64,
    /// Seconds east of UTC.
    offset: i64,
    zone: String,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Now, in the local time zone.
pub fn now() -> Time {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    at(since.as_secs() as i64, since.subsec_nanos())
}

/// A Unix time in the local time zone.
pub fn at(seconds: i64, nanos: u32) -> Time {
    let t = seconds as libc::time_t;
    // SAFETY: localtime_r fills the tm it is given; tm_zone points to
    // static storage of the C library, read at once.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string of the C library.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Time {
        year: i64::from(tm.tm_year) + 1900,
        month: tm.tm_mon as usize,
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
        nanos,
        weekday: tm.tm_wday as usize,
        year_day: i64::from(tm.tm_yday) + 1,
        offset: tm.tm_gmtoff,
        zone,
    }
}

/// One element of a layout.
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    Pm {
        upper: bool,
    },
    /// A numeric zone: `Z` for UTC (ISO 8601) or not, with a colon or not,
    /// with hours only, with seconds.
    Zone {
        z: bool,
        colon: bool,
        minutes: bool,
        seconds: bool,
    },
    ZoneName,
    /// Fractional seconds: after this separator, this many digits,
    /// trailing zeros dropped or not.
    Fraction {
        sep: char,
        digits: usize,
        trim: bool,
    },
}

fn starts_lower(rest: &[u8]) -> bool {
    rest.first().is_some_and(u8::is_ascii_lowercase)
}

/// Go's `nextStdChunk`: the literal text before the next element, the
/// element, and the rest.
fn next_chunk(layout: &str) -> (&str, Option<(Std, usize)>) {
    let b = layout.as_bytes();
    let at = |i: usize, s: &str| b.get(i..i + s.len()) == Some(s.as_bytes());
    for i in 0..b.len() {
        let found = match b[i] {
            b'J' if at(i, "January") => Some((Std::LongMonth, 7)),
            b'J' if at(i, "Jan") && !starts_lower(&b[i + 3..]) => Some((Std::Month, 3)),
            b'M' if at(i, "Monday") => Some((Std::LongWeekDay, 6)),
            b'M' if at(i, "Mon") && !starts_lower(&b[i + 3..]) => Some((Std::WeekDay, 3)),
            b'M' if at(i, "MST") => Some((Std::ZoneName, 3)),
            b'0' if at(i, "002") => Some((Std::ZeroYearDay, 3)),
            b'0' => match b.get(i + 1) {
                Some(b'1') => Some((Std::ZeroMonth, 2)),
                Some(b'2') => Some((Std::ZeroDay, 2)),
                Some(b'3') => Some((Std::ZeroHour12, 2)),
                Some(b'4') => Some((Std::ZeroMinute, 2)),
                Some(b'5') => Some((Std::ZeroSecond, 2)),
                Some(b'6') => Some((Std::Year, 2)),
                _ => None,
            },
            b'1' if at(i, "15") => Some((Std::Hour, 2)),
            b'1' => Some((Std::NumMonth, 1)),
            b'2' if at(i, "2006") => Some((Std::LongYear, 4)),
            b'2' => Some((Std::Day, 1)),
            b'_' if at(i, "_2006") => {
                // A literal `_`, then the year.
                return (&layout[..i + 1], Some((Std::LongYear, 4)));
            }
            b'_' if at(i, "_2") => Some((Std::UnderDay, 2)),
            b'_' if at(i, "__2") => Some((Std::UnderYearDay, 3)),
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if at(i, "PM") => Some((Std::Pm { upper: true }, 2)),
            b'p' if at(i, "pm") => Some((Std::Pm { upper: false }, 2)),
            c @ (b'-' | b'Z') => {
                let z = c == b'Z';
                [
                    ("070000", false, true, true),
                    ("07:00:00", true, true, true),
                    ("0700", false, true, false),
                    ("07:00", true, true, false),
                    ("07", false, false, false),
                ]
                .iter()
                .find(|(pattern, ..)| at(i + 1, pattern))
                .map(|&(pattern, colon, minutes, seconds)| {
                    (
                        Std::Zone {
                            z,
                            colon,
                            minutes,
                            seconds,
                        },
                        1 + pattern.len(),
                    )
                })
            }
            c @ (b'.' | b',') if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                let digit = b[i + 1];
                let mut j = i + 1;
                while b.get(j) == Some(&digit) {
                    j += 1;
                }
                // Only fractional seconds when the digits end there.
                (!b.get(j).is_some_and(u8::is_ascii_digit)).then(|| {
                    let sep = char::from(c);
                    (
                        Std::Fraction {
                            sep,
                            digits: j - i - 1,
                            trim: digit == b'9',
                        },
                        j - i,
                    )
                })
            }
            _ => None,
        };
        if let Some(found) = found {
            return (&layout[..i], Some(found));
        }
    }
    (layout, None)
}

impl Time {
    /// Go's `Time.Format`.
    pub fn format(&self, layout: &str) -> String {
        let mut out = String::new();
        let mut rest = layout;
        loop {
            let (literal, element) = next_chunk(rest);
            out.push_str(literal);
            let Some((std, len)) = element else {
                return out;
            };
            // The literal may include a `_` that next_chunk kept (`_2006`).
            rest = &rest[literal.len() + len..];
            self.write(&mut out, std);
        }
    }

    fn write(&self, out: &mut String, std: Std) {
        let hour12 = match self.hour % 12 {
            0 => 12,
            h => h,
        };
        match std {
            Std::LongMonth => out.push_str(MONTHS[self.month]),
            Std::Month => out.push_str(&MONTHS[self.month][..3]),
            Std::NumMonth => out.push_str(&(self.month + 1).to_string()),
            Std::ZeroMonth => out.push_str(&format!("{:02}", self.month + 1)),
            Std::LongWeekDay => out.push_str(DAYS[self.weekday]),
            Std::WeekDay => out.push_str(&DAYS[self.weekday][..3]),
            Std::Day => out.push_str(&self.day.to_string()),
            Std::UnderDay => out.push_str(&format!("{:>2}", self.day)),
            Std::ZeroDay => out.push_str(&format!("{:02}", self.day)),
            Std::UnderYearDay => out.push_str(&format!("{:>3}", self.year_day)),
            Std::ZeroYearDay => out.push_str(&format!("{:03}", self.year_day)),
            Std::Hour => out.push_str(&format!("{:02}", self.hour)),
            Std::Hour12 => out.push_str(&hour12.to_string()),
            Std::ZeroHour12 => out.push_str(&format!("{hour12:02}")),
            Std::Minute => out.push_str(&self.minute.to_string()),
            Std::ZeroMinute => out.push_str(&format!("{:02}", self.minute)),
            Std::Second => out.push_str(&self.second.to_string()),
            Std::ZeroSecond => out.push_str(&format!("{:02}", self.second)),
            Std::LongYear => out.push_str(&format!("{:04}", self.year)),
            Std::Year => out.push_str(&format!("{:02}", self.year.rem_euclid(100))),
            Std::Pm { upper } => {
                let pm = if self.hour >= 12 { "PM" } else { "AM" };
                out.push_str(&if upper {
                    pm.to_owned()
                } else {
                    pm.to_lowercase()
                });
            }
            Std::Zone {
                z,
                colon,
                minutes,
                seconds,
            } => {
                if z && self.offset == 0 {
                    out.push('Z');
                    return;
                }
                let sign = if self.offset < 0 { '-' } else { '+' };
                let offset = self.offset.abs();
                let sep = if colon { ":" } else { "" };
                out.push_str(&format!("{sign}{:02}", offset / 3600));
                if minutes {
                    out.push_str(&format!("{sep}{:02}", offset / 60 % 60));
                }
                if seconds {
                    out.push_str(&format!("{sep}{:02}", offset % 60));
                }
            }
            Std::ZoneName => {
                if self.zone.is_empty() {
                    let minutes = self.offset / 60;
                    let sign = if minutes < 0 { '-' } else { '+' };
                    out.push_str(&format!(
                        "{sign}{:02}{:02}",
                        minutes.abs() / 60,
                        minutes.abs() % 60
                    ));
                } else {
                    out.push_str(&self.zone);
                }
            }
            Std::Fraction { sep, digits, trim } => {
                let all = format!("{:09}", self.nanos);
                let mut part = &all[..digits.min(9)];
                if trim {
                    part = part.trim_end_matches('0');
                    if part.is_empty() {
                        return;
                    }
                }
                out.push(sep);
                out.push_str(part);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed moment: Tue Nov 24 09:05:07.120000 2026, UTC.
    fn moment() -> Time {
        Time {
            year: 2026,
            month: 10,
            day: 24,
            hour: 9,
            minute: 5,
            second: 7,
            nanos: 120_000_000,
            weekday: 2,
            year_day: 328,
            offset: 0,
            zone: "UTC".into(),
        }
    }

    /// Go's documented layouts (time package constants), on one moment.
    #[test]
    fn gos_layouts() {
        let t = moment();
        for (layout, expected) in [
            ("Mon Jan _2 15:04:05 2006", "Tue Nov 24 09:05:07 2026"),
            (
                "Mon Jan _2 15:04:05 MST 2006",
                "Tue Nov 24 09:05:07 UTC 2026",
            ),
            ("02 Jan 06 15:04 MST", "24 Nov 26 09:05 UTC"),
            (
                "Monday, 02-Jan-06 15:04:05 MST",
                "Tuesday, 24-Nov-26 09:05:07 UTC",
            ),
            ("2006-01-02T15:04:05Z07:00", "2026-11-24T09:05:07Z"),
            (
                "2006-01-02T15:04:05.999999999Z07:00",
                "2026-11-24T09:05:07.12Z",
            ),
            ("3:04PM", "9:05AM"),
            ("Jan _2 15:04:05.000", "Nov 24 09:05:07.120"),
            (
                "2006-01-02 15:04:05.999999999 -0700 MST",
                "2026-11-24 09:05:07.12 +0000 UTC",
            ),
            (
                "Jan 2, 2006 at 3:04pm (MST)",
                "Nov 24, 2026 at 9:05am (UTC)",
            ),
            ("__2 002 _2006", "328 328 _2026"),
            ("15:04:05,000", "09:05:07,120"),
        ] {
            assert_eq!(t.format(layout), expected, "{layout:?}");
        }
        let east = Time {
            offset: 5 * 3600 + 30 * 60,
            zone: "IST".into(),
            ..moment()
        };
        assert_eq!(east.format("-07:00 Z0700 -07"), "+05:30 +0530 +05");
    }
}
