//! Kuzu's text forms of values: what `CAST(x AS STRING)` prints ([`render`]) and parsers for
//! the forms Kuzu reads (dates, timestamps, intervals, UUIDs, blobs, decimals and the nested
//! LIST/STRUCT/MAP text of its CSV loader).
//!
//! The formats follow Kuzu 0.11 (`TypeUtils::toString`, `Timestamp::toString`,
//! `IntervalToStringCast`, `Blob::toString`) with two deliberate differences, chosen so that
//! [`render`] never loses information:
//!
//! * FLOAT and DOUBLE print Rust's shortest round-trip form (`5.0`, `0.1`, `1e-7`, `NaN`,
//!   `inf`) instead of C++ `std::to_string`'s fixed six decimals (`5.000000`), which is lossy.
//! * TIMESTAMP_NS prints all nine fractional digits (trailing zeros trimmed); Kuzu truncates
//!   to microseconds.
//!
//! Dates before year 1 print as Kuzu prints them (`0044-03-15 (BC)`), and the parsers accept
//! that form.
//!
//! Every parser accepts what [`render`] prints for its type, and errors name the bad input.

use crate::value::{DataType, Value};

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SEC;
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;
const SECS_PER_DAY: i64 = 86_400;
const NANOS_PER_SEC: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Kuzu's text form of a value (what `CAST(x AS STRING)` prints). NULL renders as the empty
/// string, nested NULLs as nothing between the separators.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    render_into(&mut out, v, false);
    out
}

/// Like [`render`], but strings nested inside lists, structs, maps and unions are
/// double-quoted when they would otherwise be ambiguous (empty, `NULL`, surrounding spaces or
/// any of `,[]{}:="'\`), so that [`parse_value`] reads the text back to the same value.
/// Top-level strings are not quoted.
pub fn render_quoted(v: &Value) -> String {
    let mut out = String::new();
    render_into(&mut out, v, true);
    out
}

fn render_into(out: &mut String, v: &Value, quote_nested: bool) {
    match v {
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_nested(out, item, quote_nested);
            }
            out.push(']');
        }
        Value::Struct(fields) => {
            out.push('{');
            for (i, (name, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(name);
                out.push_str(": ");
                render_nested(out, item, quote_nested);
            }
            out.push('}');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_nested(out, k, quote_nested);
                out.push('=');
                render_nested(out, item, quote_nested);
            }
            out.push('}');
        }
        Value::Union { value, .. } => render_into(out, value, quote_nested),
        scalar => out.push_str(&render_scalar(scalar)),
    }
}

fn render_nested(out: &mut String, v: &Value, quote_nested: bool) {
    match v {
        Value::String(s) if quote_nested && needs_quotes(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Value::Union { value, .. } => render_nested(out, value, quote_nested),
        other => render_into(out, other, quote_nested),
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.eq_ignore_ascii_case("null")
        || s.trim() != s
        || s.chars().any(|c| ",[]{}:=\"'\\".contains(c))
}

fn render_scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Int8(x) => x.to_string(),
        Value::Int16(x) => x.to_string(),
        Value::Int32(x) => x.to_string(),
        Value::Int64(x) => x.to_string(),
        Value::Int128(x) => x.to_string(),
        Value::UInt8(x) => x.to_string(),
        Value::UInt16(x) => x.to_string(),
        Value::UInt32(x) => x.to_string(),
        Value::UInt64(x) => x.to_string(),
        Value::Float(x) => format!("{x:?}"),
        Value::Double(x) => format!("{x:?}"),
        Value::Decimal { mantissa, scale } => render_decimal(*mantissa, *scale),
        Value::String(s) => s.clone(),
        Value::Blob(b) => render_blob(b),
        Value::Uuid(u) => render_uuid(*u),
        Value::Date(d) => render_date(*d),
        Value::Timestamp(us) => render_timestamp_micros(*us),
        Value::TimestampNs(ns) => render_timestamp_nanos(*ns),
        Value::TimestampMs(ms) => render_timestamp_millis(*ms),
        Value::TimestampSec(s) => render_timestamp_secs(*s),
        Value::TimestampTz(us) => render_timestamp_tz(*us),
        Value::Interval {
            months,
            days,
            micros,
        } => render_interval(*months, *days, *micros),
        Value::List(_) | Value::Struct(_) | Value::Map(_) | Value::Union { .. } => render(v),
    }
}

/// `YYYY-MM-DD`, with ` (BC)` for years before 1 as Kuzu prints them.
pub fn render_date(days: i32) -> String {
    format_date(i64::from(days))
}

fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    if y <= 0 {
        format!("{:04}-{:02}-{:02} (BC)", 1 - y, m, d)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` for microseconds since the epoch; the fraction is printed
/// only when non-zero, without trailing zeros.
pub fn render_timestamp_micros(micros: i64) -> String {
    format_timestamp(
        micros.div_euclid(MICROS_PER_SEC),
        (micros.rem_euclid(MICROS_PER_SEC) * 1000) as u32,
    )
}

/// Like [`render_timestamp_micros`] with up to nine fractional digits.
pub fn render_timestamp_nanos(nanos: i64) -> String {
    format_timestamp(
        nanos.div_euclid(NANOS_PER_SEC),
        nanos.rem_euclid(NANOS_PER_SEC) as u32,
    )
}

/// Like [`render_timestamp_micros`] for milliseconds since the epoch.
pub fn render_timestamp_millis(millis: i64) -> String {
    format_timestamp(
        millis.div_euclid(1000),
        (millis.rem_euclid(1000) * 1_000_000) as u32,
    )
}

/// Like [`render_timestamp_micros`] for seconds since the epoch.
pub fn render_timestamp_secs(secs: i64) -> String {
    format_timestamp(secs, 0)
}

/// A UTC timestamp as Kuzu prints TIMESTAMP_TZ: the timestamp followed by `+00`.
pub fn render_timestamp_tz(micros: i64) -> String {
    let mut s = render_timestamp_micros(micros);
    s.push_str("+00");
    s
}

fn format_timestamp(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let mut s = format_date(days);
    s.push(' ');
    s.push_str(&format!(
        "{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    ));
    push_fraction(&mut s, nanos);
    s
}

/// Appends `.fffffffff` without trailing zeros, or nothing for zero.
fn push_fraction(s: &mut String, nanos: u32) {
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
}

/// Kuzu's interval form: `3 years 2 days 13:02:00`, `10 years 5 months 13:00:00.000024`,
/// `-1 days`, `00:00:00` for zero. Years and months come from `months`; the time part holds
/// all of `micros` (hours may exceed 24).
pub fn render_interval(months: i32, days: i32, micros: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let years = months / 12;
    let rest = months % 12;
    let mut unit = |n: i32, name: &str| {
        if n != 0 {
            let plural = if n == 1 { "" } else { "s" };
            parts.push(format!("{n} {name}{plural}"));
        }
    };
    unit(years, "year");
    unit(rest, "month");
    unit(days, "day");
    if micros != 0 {
        let sign = if micros < 0 { "-" } else { "" };
        let abs = micros.unsigned_abs();
        let us = MICROS_PER_SEC as u64;
        let total_secs = abs / us;
        let mut t = format!(
            "{sign}{:02}:{:02}:{:02}",
            total_secs / 3600,
            (total_secs / 60) % 60,
            total_secs % 60
        );
        push_fraction(&mut t, ((abs % us) * 1000) as u32);
        parts.push(t);
    }
    if parts.is_empty() {
        "00:00:00".to_string()
    } else {
        parts.join(" ")
    }
}

/// Lowercase, hyphenated 8-4-4-4-12.
pub fn render_uuid(u: u128) -> String {
    let h = format!("{u:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Printable ASCII bytes as themselves, every other byte (and the backslash) as `\xHH`.
pub fn render_blob(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (32..=126).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

/// `mantissa × 10^-scale` with exactly `scale` fractional digits.
pub fn render_decimal(mantissa: i128, scale: u8) -> String {
    let digits = mantissa.unsigned_abs().to_string();
    let sign = if mantissa < 0 { "-" } else { "" };
    let scale = usize::from(scale);
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian, Howard Hinnant's algorithms)
// ---------------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a civil date (year 0 is 1 BC).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number; year 0 is 1 BC.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

// ---------------------------------------------------------------------------------------------
// Temporal parsers
// ---------------------------------------------------------------------------------------------

/// A tiny byte cursor for the hand-written parsers.
struct Scan<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn new(s: &'a str) -> Self {
        Scan {
            s: s.as_bytes(),
            pos: 0,
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    /// Up to `max` ASCII digits; returns (value, count). Overflow saturates (callers limit
    /// `max` so that it cannot happen).
    fn digits(&mut self, max: usize) -> (i64, usize) {
        let mut v: i64 = 0;
        let mut n = 0;
        while n < max {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
                    self.pos += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        (v, n)
    }
    fn rest(&self) -> &'a [u8] {
        &self.s[self.pos.min(self.s.len())..]
    }
}

/// Parses `YYYY-MM-DD` (or `YYYY/MM/DD`, optionally followed by ` (BC)`) at the cursor and
/// returns days since the epoch.
fn scan_date(sc: &mut Scan<'_>) -> Result<i64, String> {
    let (year, n) = sc.digits(12);
    if n == 0 {
        return Err("expected a year".into());
    }
    let sep = match sc.peek() {
        Some(b @ (b'-' | b'/')) => b,
        _ => return Err("expected '-' after the year".into()),
    };
    sc.pos += 1;
    let (month, n) = sc.digits(2);
    if n == 0 {
        return Err("expected a month".into());
    }
    if !sc.eat(sep) {
        return Err("expected a separator after the month".into());
    }
    let (day, n) = sc.digits(2);
    if n == 0 {
        return Err("expected a day".into());
    }
    let mut year = year;
    let save = sc.pos;
    sc.skip_spaces();
    if sc.rest().starts_with(b"(BC)") {
        sc.pos += 4;
        if year == 0 {
            return Err("year 0 (BC) does not exist".into());
        }
        year = 1 - year;
    } else {
        sc.pos = save;
    }
    let (month, day) = (month as u32, day as u32);
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!("day {day} is out of range for month {month}"));
    }
    Ok(days_from_civil(year, month, day))
}

/// Parses a DATE: `YYYY-MM-DD` (also `YYYY/MM/DD` and Kuzu's ` (BC)` suffix) into days since
/// 1970-01-01.
pub fn parse_date(s: &str) -> Result<i32, String> {
    let t = s.trim();
    let mut sc = Scan::new(t);
    let days = scan_date(&mut sc).map_err(|e| format!("invalid DATE {s:?}: {e}"))?;
    sc.skip_spaces();
    if !sc.at_end() {
        return Err(format!(
            "invalid DATE {s:?}: unexpected text after the date"
        ));
    }
    i32::try_from(days).map_err(|_| format!("DATE {s:?} is out of range"))
}

/// Parses a timestamp into (seconds since the epoch, nanoseconds within the second), both
/// in UTC. Accepts `YYYY-MM-DD`, then optionally ` ` or `T` and `HH:MM[:SS[.fffffffff]]`
/// (extra fraction digits are truncated), then optionally `Z`, `+hh`, `+hhmm`, `+hh:mm`,
/// `-hh:mm` or `Z+hh:mm` (the offset is converted to UTC).
fn parse_timestamp_parts(s: &str, what: &str) -> Result<(i64, u32), String> {
    let bad = |e: &str| format!("invalid {what} {s:?}: {e}");
    let t = s.trim();
    let mut sc = Scan::new(t);
    let days = scan_date(&mut sc).map_err(|e| bad(&e))?;
    let mut sod: i64 = 0;
    let mut nanos: u32 = 0;
    if !sc.at_end() {
        let save = sc.pos;
        if !(sc.eat(b'T') || sc.eat(b't')) {
            sc.skip_spaces();
        }
        if sc.peek().is_some_and(|b| b.is_ascii_digit()) {
            let (h, n) = sc.digits(2);
            if n == 0 || !sc.eat(b':') {
                return Err(bad("expected HH:MM"));
            }
            let (m, n) = sc.digits(2);
            if n == 0 {
                return Err(bad("expected minutes"));
            }
            let mut sec = 0;
            if sc.eat(b':') {
                let (v, n) = sc.digits(2);
                if n == 0 {
                    return Err(bad("expected seconds"));
                }
                sec = v;
                if sc.eat(b'.') {
                    let start = sc.pos;
                    let mut frac: u32 = 0;
                    let mut count = 0;
                    while let Some(b @ b'0'..=b'9') = sc.peek() {
                        if count < 9 {
                            frac = frac * 10 + u32::from(b - b'0');
                            count += 1;
                        }
                        sc.pos += 1;
                    }
                    if sc.pos == start {
                        return Err(bad("expected digits after '.'"));
                    }
                    nanos = frac * 10u32.pow(9 - count);
                }
            }
            if h > 23 || m > 59 || sec > 59 {
                return Err(bad("time of day out of range"));
            }
            sod = h * 3600 + m * 60 + sec;
        } else {
            sc.pos = save;
        }
    }
    // Zone: optional 'Z', then an optional numeric offset.
    sc.skip_spaces();
    let mut offset_secs: i64 = 0;
    if !sc.at_end() {
        let _ = sc.eat(b'Z') || sc.eat(b'z');
        if let Some(sign @ (b'+' | b'-')) = sc.peek() {
            sc.pos += 1;
            let (hh, n) = sc.digits(2);
            if n != 2 {
                return Err(bad("expected a two-digit hour offset"));
            }
            let _ = sc.eat(b':');
            let (mm, n) = sc.digits(2);
            if n == 1 {
                return Err(bad("expected a two-digit minute offset"));
            }
            if hh > 23 || mm > 59 {
                return Err(bad("UTC offset out of range"));
            }
            offset_secs = (hh * 3600 + mm * 60) * if sign == b'-' { -1 } else { 1 };
        }
        sc.skip_spaces();
        if !sc.at_end() {
            return Err(bad("unexpected text after the timestamp"));
        }
    }
    let secs =
        i128::from(days) * i128::from(SECS_PER_DAY) + i128::from(sod) - i128::from(offset_secs);
    let secs = i64::try_from(secs).map_err(|_| bad("out of range"))?;
    Ok((secs, nanos))
}

fn combine(s: &str, what: &str, secs: i64, sub: i64, per_sec: i64) -> Result<i64, String> {
    let v = i128::from(secs) * i128::from(per_sec) + i128::from(sub);
    i64::try_from(v).map_err(|_| format!("{what} {s:?} is out of range"))
}

/// Parses a TIMESTAMP (or TIMESTAMP_TZ) into microseconds since the epoch, UTC. Sub-microsecond
/// digits are truncated.
pub fn parse_timestamp_micros(s: &str) -> Result<i64, String> {
    let (secs, nanos) = parse_timestamp_parts(s, "TIMESTAMP")?;
    combine(
        s,
        "TIMESTAMP",
        secs,
        i64::from(nanos / 1000),
        MICROS_PER_SEC,
    )
}

/// Parses a TIMESTAMP_NS into nanoseconds since the epoch, UTC.
pub fn parse_timestamp_nanos(s: &str) -> Result<i64, String> {
    let (secs, nanos) = parse_timestamp_parts(s, "TIMESTAMP_NS")?;
    combine(s, "TIMESTAMP_NS", secs, i64::from(nanos), NANOS_PER_SEC)
}

/// Parses a TIMESTAMP_MS into milliseconds since the epoch, UTC (finer digits truncated).
pub fn parse_timestamp_millis(s: &str) -> Result<i64, String> {
    let (secs, nanos) = parse_timestamp_parts(s, "TIMESTAMP_MS")?;
    combine(s, "TIMESTAMP_MS", secs, i64::from(nanos / 1_000_000), 1000)
}

/// Parses a TIMESTAMP_SEC into seconds since the epoch, UTC (the fraction is truncated).
pub fn parse_timestamp_secs(s: &str) -> Result<i64, String> {
    parse_timestamp_parts(s, "TIMESTAMP_SEC").map(|(secs, _)| secs)
}

/// Parses an INTERVAL into (months, days, micros).
///
/// Accepts Kuzu's input form, a sequence of `<number> <unit>` with optional signs and
/// fractions (`3 years 2 days 13 hours 2 minutes`, `480us`, `1.5 hours`), and Kuzu's output
/// form with a `[-]HH:MM:SS[.ffffff]` time part (`10 years 5 months 13:00:00.000024`,
/// `-1 days`, `00:00:00`). Units: millennium(s), century/centuries, decade(s), year(s)/yr(s)/y,
/// quarter(s), month(s)/mon(s), week(s)/w, day(s)/d, hour(s)/hr(s)/h, minute(s)/min(s)/m,
/// second(s)/sec(s)/s, millisecond(s)/msec(s)/ms, microsecond(s)/usec(s)/us, all
/// case-insensitive. Years count 12 months; hours, minutes and seconds go to micros; days stay
/// days. A fraction of a month adds 30-day days, a fraction of a day adds micros.
pub fn parse_interval(s: &str) -> Result<(i32, i32, i64), String> {
    let bad = |e: String| format!("invalid INTERVAL {s:?}: {e}");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty".into()));
    }
    let mut sc = Scan::new(t);
    let _ = sc.eat(b'@');
    let (mut months, mut days, mut micros): (i128, i128, i128) = (0, 0, 0);
    let mut found = false;
    loop {
        sc.skip_spaces();
        if sc.at_end() {
            break;
        }
        if months.abs() > i128::from(i64::MAX)
            || days.abs() > i128::from(i64::MAX)
            || micros.abs() > i128::from(i64::MAX) * 2
        {
            return Err(bad("out of range".into()));
        }
        let sign: i128 = if sc.eat(b'-') {
            -1
        } else {
            let _ = sc.eat(b'+');
            1
        };
        let start = sc.pos;
        while sc.peek().is_some_and(|b| b.is_ascii_digit()) {
            sc.pos += 1;
        }
        let int_digits = &t[start..sc.pos];
        if int_digits.is_empty() {
            let at = String::from_utf8_lossy(sc.rest()).into_owned();
            return Err(bad(format!("expected a number at {at:?}")));
        }
        if int_digits.len() > 20 {
            return Err(bad(format!("number {int_digits} is too large")));
        }
        let n: i128 = int_digits.parse().map_err(|_| bad("bad number".into()))?;
        if sc.peek() == Some(b':') {
            // A time part: H+:MM[:SS[.f]].
            sc.pos += 1;
            let (m, nd) = sc.digits(2);
            if nd == 0 || m > 59 {
                return Err(bad("expected minutes 00-59 after ':'".into()));
            }
            let mut sec = 0;
            let mut frac_us: i128 = 0;
            if sc.eat(b':') {
                let (v, nd) = sc.digits(2);
                if nd == 0 || v > 59 {
                    return Err(bad("expected seconds 00-59".into()));
                }
                sec = v;
                if sc.eat(b'.') {
                    let (num, den) = scan_fraction(&mut sc);
                    if den == 1 {
                        return Err(bad("expected digits after '.'".into()));
                    }
                    frac_us = num * i128::from(MICROS_PER_SEC) / den;
                }
            }
            let total = n * i128::from(MICROS_PER_HOUR)
                + i128::from(m) * i128::from(MICROS_PER_MINUTE)
                + i128::from(sec) * i128::from(MICROS_PER_SEC)
                + frac_us;
            micros += sign * total;
            found = true;
            continue;
        }
        let (num, den) = if sc.eat(b'.') {
            scan_fraction(&mut sc)
        } else {
            (0, 1)
        };
        sc.skip_spaces();
        let ustart = sc.pos;
        while sc.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            sc.pos += 1;
        }
        let unit = t[ustart..sc.pos].to_ascii_lowercase();
        if unit.is_empty() {
            return Err(bad(format!("missing unit after {int_digits}")));
        }
        // Whole part and fraction, each scaled by the unit, both signed.
        let scaled = |per: i128| sign * (n * per + num * per / den);
        match unit.as_str() {
            "millennium" | "millennia" | "millenniums" | "mil" | "mils" => months += scaled(12_000),
            "century" | "centuries" | "cent" | "c" => months += scaled(1200),
            "decade" | "decades" | "dec" | "decs" => months += scaled(120),
            "year" | "years" | "yr" | "yrs" | "y" => months += scaled(12),
            "quarter" | "quarters" => months += scaled(3),
            "month" | "months" | "mon" | "mons" => {
                months += sign * n;
                days += sign * (num * 30 / den);
            }
            "week" | "weeks" | "w" => {
                days += sign * n * 7;
                micros += sign * (num * 7 * i128::from(MICROS_PER_DAY) / den);
            }
            "day" | "days" | "d" => {
                days += sign * n;
                micros += sign * (num * i128::from(MICROS_PER_DAY) / den);
            }
            "hour" | "hours" | "hr" | "hrs" | "h" => micros += scaled(MICROS_PER_HOUR.into()),
            "minute" | "minutes" | "min" | "mins" | "m" => {
                micros += scaled(MICROS_PER_MINUTE.into())
            }
            "second" | "seconds" | "sec" | "secs" | "s" => micros += scaled(MICROS_PER_SEC.into()),
            "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" | "msecond" | "mseconds" => {
                micros += scaled(1000)
            }
            "microsecond" | "microseconds" | "usec" | "usecs" | "us" | "usecond" | "useconds" => {
                micros += scaled(1)
            }
            other => return Err(bad(format!("unknown unit {other:?}"))),
        }
        found = true;
    }
    if !found {
        return Err(bad("no value".into()));
    }
    let months = i32::try_from(months).map_err(|_| bad("months out of range".into()))?;
    let days = i32::try_from(days).map_err(|_| bad("days out of range".into()))?;
    let micros = i64::try_from(micros).map_err(|_| bad("time out of range".into()))?;
    Ok((months, days, micros))
}

/// Digits after a '.', as (numerator, denominator); at most 18 digits are kept.
fn scan_fraction(sc: &mut Scan<'_>) -> (i128, i128) {
    let mut num: i128 = 0;
    let mut den: i128 = 1;
    while let Some(b @ b'0'..=b'9') = sc.peek() {
        if den < 1_000_000_000_000_000_000 {
            num = num * 10 + i128::from(b - b'0');
            den *= 10;
        }
        sc.pos += 1;
    }
    (num, den)
}

// ---------------------------------------------------------------------------------------------
// UUID, BLOB, DECIMAL
// ---------------------------------------------------------------------------------------------

/// Parses a UUID: 32 hex digits, upper or lower case, hyphens anywhere, optionally in braces.
pub fn parse_uuid(s: &str) -> Result<u128, String> {
    let t = s.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    let mut v: u128 = 0;
    let mut n = 0;
    for c in inner.chars() {
        if c == '-' {
            continue;
        }
        let d = c
            .to_digit(16)
            .ok_or_else(|| format!("invalid UUID {s:?}: {c:?} is not a hex digit"))?;
        n += 1;
        if n > 32 {
            return Err(format!("invalid UUID {s:?}: more than 32 hex digits"));
        }
        v = (v << 4) | u128::from(d);
    }
    if n != 32 {
        return Err(format!("invalid UUID {s:?}: {n} hex digits instead of 32"));
    }
    Ok(v)
}

/// Parses Kuzu's BLOB text: the UTF-8 bytes of the string, with each `\xHH` escape decoded to
/// one byte. A backslash not followed by `x` and two hex digits is an error.
pub fn parse_blob(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
            match (b.get(i + 1), hex(i + 2), hex(i + 3)) {
                (Some(b'x' | b'X'), Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 4;
                }
                _ => {
                    return Err(format!(
                        "invalid BLOB {s:?}: backslash at byte {i} is not a \\xHH escape"
                    ))
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Parses a decimal number (`-12.5`, `3`, `1.25e3`) into the mantissa of a
/// DECIMAL(`precision`, `scale`). Extra fractional digits are rounded half away from zero;
/// more than `precision` digits is an error.
pub fn parse_decimal(s: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let ty = format!("DECIMAL({precision}, {scale})");
    let bad = |e: &str| format!("invalid {ty} {s:?}: {e}");
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa_text, exp_text) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa_text.find('.') {
        Some(i) => (&mantissa_text[..i], &mantissa_text[i + 1..]),
        None => (mantissa_text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad("not a decimal number"));
    }
    let exp: i64 = match exp_text {
        Some(e) => e.parse().map_err(|_| bad("bad exponent"))?,
        None => 0,
    };
    if exp.abs() > 1000 {
        return Err(bad("exponent out of range"));
    }
    let mut digits: String = format!("{int_part}{frac_part}");
    // value = digits × 10^shift, in units of 10^-scale.
    let shift = exp - frac_part.len() as i64 + i64::from(scale);
    let mut round_up = false;
    if shift >= 0 {
        digits.push_str(&"0".repeat(shift as usize));
    } else {
        let drop = (-shift) as usize;
        if drop >= digits.len() {
            round_up = drop == digits.len() && digits.as_bytes()[0] >= b'5';
            digits = "0".into();
        } else {
            let cut = digits.len() - drop;
            round_up = digits.as_bytes()[cut] >= b'5';
            digits.truncate(cut);
        }
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 38 {
        return Err(bad(&format!("more than {precision} digits")));
    }
    let mut m: i128 = if significant.is_empty() {
        0
    } else {
        significant
            .parse()
            .map_err(|_| bad("not a decimal number"))?
    };
    if round_up {
        m += 1;
    }
    if decimal_digits(m) > u32::from(precision) {
        return Err(bad(&format!("more than {precision} digits")));
    }
    Ok(if neg { -m } else { m })
}

fn decimal_digits(m: i128) -> u32 {
    if m == 0 {
        1
    } else {
        m.unsigned_abs().ilog10() + 1
    }
}

// ---------------------------------------------------------------------------------------------
// Any value from text
// ---------------------------------------------------------------------------------------------

/// Parses Kuzu's text form of a value of type `ty`, as its CSV loader and `CAST(s AS T)` read
/// it: numbers, `true`/`false`, temporal forms, blob escapes, and nested text such as
/// `[1,2]`, `{a: 1, b: [x, 'y']}` and `{k=v, k2=v2}`. Nested strings may be quoted with `'` or
/// `"` (backslash escapes the next character); unquoted nested `NULL` or nothing is NULL;
/// missing struct fields are NULL. A UNION takes the first member type that parses. A
/// top-level string is taken as-is.
pub fn parse_value(s: &str, ty: &DataType) -> Result<Value, String> {
    parse_text(s, ty, false)
}

fn parse_text(s: &str, ty: &DataType, nested: bool) -> Result<Value, String> {
    let t = s.trim();
    if nested {
        if t.is_empty() || t.eq_ignore_ascii_case("null") {
            return Ok(Value::Null);
        }
        if let Some(unq) = unquote(t) {
            return match ty {
                DataType::List(_)
                | DataType::Array(..)
                | DataType::Struct(_)
                | DataType::Map(..)
                | DataType::Union(_) => parse_text(&unq, ty, false),
                DataType::String => Ok(Value::String(unq)),
                _ => parse_scalar(&unq, ty),
            };
        }
    }
    match ty {
        DataType::String => Ok(Value::String(if nested { t } else { s }.to_string())),
        DataType::List(inner) => {
            let items = split_nested(t, '[', ']', s)?;
            items
                .iter()
                .map(|item| parse_text(item, inner, true))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
        }
        DataType::Array(inner, n) => {
            let items = split_nested(t, '[', ']', s)?;
            if items.len() != *n as usize {
                return Err(format!(
                    "{s:?} has {} elements, {ty} needs {n}",
                    items.len()
                ));
            }
            items
                .iter()
                .map(|item| parse_text(item, inner, true))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
        }
        DataType::Struct(fields) => {
            let items = split_nested(t, '{', '}', s)?;
            let mut values: Vec<Option<Value>> = vec![None; fields.len()];
            for item in &items {
                let (name, value) = split_pair(item, ':')
                    .ok_or_else(|| format!("struct field {item:?} in {s:?} has no ':'"))?;
                let name = unquote(name.trim()).unwrap_or_else(|| name.trim().to_string());
                let idx = fields
                    .iter()
                    .position(|(f, _)| f == &name)
                    .or_else(|| {
                        fields
                            .iter()
                            .position(|(f, _)| f.eq_ignore_ascii_case(&name))
                    })
                    .ok_or_else(|| format!("{ty} has no field {name:?} (in {s:?})"))?;
                if values[idx].is_some() {
                    return Err(format!("field {name:?} appears twice in {s:?}"));
                }
                values[idx] = Some(parse_text(value, &fields[idx].1, true)?);
            }
            Ok(Value::Struct(
                fields
                    .iter()
                    .zip(values)
                    .map(|((n, _), v)| (n.clone(), v.unwrap_or(Value::Null)))
                    .collect(),
            ))
        }
        DataType::Map(kt, vt) => {
            let items = split_nested(t, '{', '}', s)?;
            let mut entries = Vec::with_capacity(items.len());
            for item in &items {
                let (k, v) = split_pair(item, '=')
                    .ok_or_else(|| format!("map entry {item:?} in {s:?} has no '='"))?;
                let key = parse_text(k, kt, true)?;
                if key.is_null() {
                    return Err(format!("map entry {item:?} in {s:?} has a NULL key"));
                }
                entries.push((key, parse_text(v, vt, true)?));
            }
            Ok(Value::Map(entries))
        }
        DataType::Union(members) => {
            for (tag, mty) in members {
                if let Ok(v) = parse_text(t, mty, nested) {
                    if !v.is_null() {
                        return Ok(Value::Union {
                            tag: tag.clone(),
                            value: Box::new(v),
                        });
                    }
                }
            }
            Err(format!("{s:?} matches no member of {ty}"))
        }
        _ => parse_scalar(t, ty),
    }
}

fn parse_scalar(t: &str, ty: &DataType) -> Result<Value, String> {
    fn int<T: TryFrom<i128>>(t: &str, ty: &DataType) -> Result<T, String> {
        let v: i128 = t
            .strip_prefix('+')
            .unwrap_or(t)
            .parse()
            .map_err(|_| format!("{t:?} is not a valid {ty}"))?;
        T::try_from(v).map_err(|_| format!("{t} is out of range for {ty}"))
    }
    Ok(match ty {
        DataType::Bool => {
            if t.eq_ignore_ascii_case("true") {
                Value::Bool(true)
            } else if t.eq_ignore_ascii_case("false") {
                Value::Bool(false)
            } else {
                return Err(format!("{t:?} is not a BOOL (true or false)"));
            }
        }
        DataType::Int8 => Value::Int8(int(t, ty)?),
        DataType::Int16 => Value::Int16(int(t, ty)?),
        DataType::Int32 => Value::Int32(int(t, ty)?),
        DataType::Int64 => Value::Int64(int(t, ty)?),
        DataType::Int128 => Value::Int128(int(t, ty)?),
        DataType::UInt8 => Value::UInt8(int(t, ty)?),
        DataType::UInt16 => Value::UInt16(int(t, ty)?),
        DataType::UInt32 => Value::UInt32(int(t, ty)?),
        DataType::UInt64 => Value::UInt64(int(t, ty)?),
        DataType::Float => Value::Float(
            t.parse()
                .map_err(|_| format!("{t:?} is not a valid FLOAT"))?,
        ),
        DataType::Double => Value::Double(
            t.parse()
                .map_err(|_| format!("{t:?} is not a valid DOUBLE"))?,
        ),
        DataType::Decimal { precision, scale } => Value::Decimal {
            mantissa: parse_decimal(t, *precision, *scale)?,
            scale: *scale,
        },
        DataType::String => Value::String(t.to_string()),
        DataType::Blob => Value::Blob(parse_blob(t)?),
        DataType::Uuid => Value::Uuid(parse_uuid(t)?),
        DataType::Date => Value::Date(parse_date(t)?),
        DataType::Timestamp => Value::Timestamp(parse_timestamp_micros(t)?),
        DataType::TimestampNs => Value::TimestampNs(parse_timestamp_nanos(t)?),
        DataType::TimestampMs => Value::TimestampMs(parse_timestamp_millis(t)?),
        DataType::TimestampSec => Value::TimestampSec(parse_timestamp_secs(t)?),
        DataType::TimestampTz => Value::TimestampTz(parse_timestamp_micros(t)?),
        DataType::Interval => {
            let (months, days, micros) = parse_interval(t)?;
            Value::Interval {
                months,
                days,
                micros,
            }
        }
        DataType::List(_)
        | DataType::Array(..)
        | DataType::Struct(_)
        | DataType::Map(..)
        | DataType::Union(_) => return parse_text(t, ty, false),
    })
}

/// If `t` is wholly one quoted string (`'…'` or `"…"`), its contents with backslash escapes
/// removed.
fn unquote(t: &str) -> Option<String> {
    let q = t.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let mut out = String::new();
    let mut chars = t[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?.1);
        } else if c == q {
            // The closing quote must end the text.
            return (i + 2 == t.len()).then_some(out);
        } else {
            out.push(c);
        }
    }
    None
}

/// The top-level comma-separated items between `open` and `close`. An empty body gives no
/// items.
fn split_nested(t: &str, open: char, close: char, whole: &str) -> Result<Vec<String>, String> {
    let body = t
        .strip_prefix(open)
        .and_then(|x| x.strip_suffix(close))
        .ok_or_else(|| format!("{whole:?} is not enclosed in {open}{close}"))?;
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut items = Vec::new();
    let mut depth: i32 = 0;
    let mut quote: Option<char> = None;
    let mut start = 0;
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' if quote_can_start(&body[start..i]) => quote = Some(c),
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced {c:?} in {whole:?}"));
                }
            }
            ',' if depth == 0 => {
                items.push(body[start..i].to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quote.is_some() || depth != 0 {
        return Err(format!("unterminated quote or bracket in {whole:?}"));
    }
    items.push(body[start..].to_string());
    Ok(items)
}

/// A quote opens a quoted string only where a value can start: at the beginning of an item or
/// after `:`, `=`, `,` or an opening bracket (so that apostrophes inside words are literal).
fn quote_can_start(preceding: &str) -> bool {
    matches!(
        preceding.trim_end().chars().last(),
        None | Some(':' | '=' | ',' | '[' | '{' | '(')
    )
}

/// Splits `item` at the first top-level `sep` (outside quotes and brackets).
fn split_pair(item: &str, sep: char) -> Option<(&str, &str)> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut chars = item.char_indices();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' if quote_can_start(&item[..i]) => quote = Some(c),
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            c if c == sep && depth == 0 => return Some((&item[..i], &item[i + 1..])),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
