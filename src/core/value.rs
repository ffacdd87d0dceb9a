//! Typed values and the strict parsers that make them from a field's text.
//!
//! The syntax is `spec/events.md`'s, settled to the letter there: UUID text
//! forms, plain-decimal numbers, RFC 3339 or `YYYY-MM-DD HH:MM:SS[.f]`
//! timestamps taken as UTC; `spec/pipelines.md` adds booleans, dates and
//! strftime formats. Written by hand rather than with `Uuid::try_parse`,
//! `str::parse` or chrono's format strings because each of those accepts
//! something the contract calls invalid (an upper-case `URN:UUID:`, `+5`,
//! `1e3`, a leap second), and because they run once per field on millions
//! of rows: no regex, no allocation.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use uuid::Uuid;

/// A field's value in its stored form, borrowing its text from the record
/// (or from the schema, for defaults and enum values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    /// Trimmed text; for an enum, the declared lower-case value.
    Text(&'a str),
    Uuid(Uuid),
    Int(i64),
    Decimal(Decimal<'a>),
    Bool(bool),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
}

impl Value<'_> {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Present and, for numbers, not zero (a rule's `nonzero`).
    pub fn is_nonzero(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Int(n) => *n != 0,
            Value::Decimal(d) => !d.is_zero(),
            _ => true,
        }
    }

    /// Equality as a rule's `when` means it: numbers by value (`1.0` =
    /// `1`), everything else as stored.
    pub fn same_as(&self, other: &Value<'_>) -> bool {
        match (self, other) {
            (Value::Decimal(a), Value::Decimal(b)) => a.cmp_value(b) == Ordering::Equal,
            (Value::Int(a), Value::Decimal(b)) | (Value::Decimal(b), Value::Int(a)) => {
                Decimal::from_int_cmp(*a, b) == Ordering::Equal
            }
            (a, b) => a == b,
        }
    }
}

/// A number in the contract's plain notation `-?digits(.digits)?`, kept as
/// its digits: exact at any length, and stored with the scale it was
/// written with (`5.0` stays `5.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal<'a> {
    pub negative: bool,
    /// Integer digits without leading zeros (empty for zero).
    pub int: &'a [u8],
    /// Fraction digits as written (empty without a `.`).
    pub frac: &'a [u8],
}

impl<'a> Decimal<'a> {
    /// `-?digits(.digits)?`, nothing else (no `+`, exponent, `.5` or `5.`).
    pub fn parse(s: &'a str) -> Option<Decimal<'a>> {
        let s = s.as_bytes();
        let (negative, s) = match s.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = match s.iter().position(|&b| b == b'.') {
            Some(dot) => (&s[..dot], Some(&s[dot + 1..])),
            None => (s, None),
        };
        let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
        if !digits(int) || !frac.is_none_or(digits) {
            return None;
        }
        let first = int.iter().position(|&b| b != b'0').unwrap_or(int.len());
        Some(Decimal { negative, int: &int[first..], frac: frac.unwrap_or(b"") })
    }

    pub fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.iter().all(|&b| b == b'0')
    }

    /// Digits after the point as written.
    pub fn scale(&self) -> usize {
        self.frac.len()
    }

    /// The fraction without trailing zeros: `1.50` and `1.5` are one value.
    fn frac_trimmed(&self) -> &'a [u8] {
        let end = self.frac.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
        &self.frac[..end]
    }

    /// Compares values exactly, whatever their length (`-0` = `0`).
    pub fn cmp_value(&self, other: &Decimal<'_>) -> Ordering {
        let neg_a = self.negative && !self.is_zero();
        let neg_b = other.negative && !other.is_zero();
        match (neg_a, neg_b) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_magnitude(self, other),
            (true, true) => cmp_magnitude(other, self),
        }
    }

    fn from_int_cmp(a: i64, b: &Decimal<'_>) -> Ordering {
        let text = a.to_string();
        let d = Decimal::parse(&text).expect("an integer's text is a plain number");
        d.cmp_value(b)
    }

    /// The value as an `i64`, if it is an integer that fits.
    pub fn to_i64(&self) -> Option<i64> {
        if !self.frac_trimmed().is_empty() || self.int.len() > 19 {
            return None;
        }
        let mut n: i128 = 0;
        for &b in self.int {
            n = n * 10 + i128::from(b - b'0');
        }
        if self.negative {
            n = -n;
        }
        i64::try_from(n).ok()
    }
}

fn cmp_magnitude(a: &Decimal<'_>, b: &Decimal<'_>) -> Ordering {
    a.int.len().cmp(&b.int.len()).then_with(|| a.int.cmp(b.int)).then_with(|| a.frac_trimmed().cmp(b.frac_trimmed()))
}

/// One end of a declared range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The bound's digits, as a plain decimal (owned: from the declaration).
    pub text: String,
    pub inclusive: bool,
}

impl Bound {
    fn value(&self) -> Decimal<'_> {
        Decimal::parse(&self.text).expect("bounds are checked when the declaration is loaded")
    }
}

/// A numeric interval: `[` `]` inclusive, `(` `)` exclusive, either end may
/// be open (`"[0, )"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
}

impl Range {
    /// Parses `"[0, 100)"`-style text; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Range> {
        let s = s.trim();
        let open = s.chars().next()?;
        let close = s.chars().last()?;
        if s.len() < 2 || !matches!(open, '[' | '(') || !matches!(close, ']' | ')') {
            return None;
        }
        let (lo, hi) = s[1..s.len() - 1].split_once(',')?;
        let end = |text: &str, inclusive: bool| -> Option<Option<Bound>> {
            let text = text.trim();
            if text.is_empty() {
                return Some(None);
            }
            Decimal::parse(text)?;
            Some(Some(Bound { text: text.to_owned(), inclusive }))
        };
        let range = Range { lower: end(lo, open == '[')?, upper: end(hi, close == ']')? };
        if let (Some(l), Some(u)) = (&range.lower, &range.upper) {
            match l.value().cmp_value(&u.value()) {
                Ordering::Greater => return None,
                Ordering::Equal if !(l.inclusive && u.inclusive) => return None,
                _ => {}
            }
        }
        Some(range)
    }

    /// `None` when `v` lies inside; else the reject's detail.
    pub fn check(&self, v: &Decimal<'_>) -> Option<String> {
        let below = self.lower.as_ref().is_some_and(|l| match v.cmp_value(&l.value()) {
            Ordering::Less => true,
            Ordering::Equal => !l.inclusive,
            Ordering::Greater => false,
        });
        let above = self.upper.as_ref().is_some_and(|u| match v.cmp_value(&u.value()) {
            Ordering::Greater => true,
            Ordering::Equal => !u.inclusive,
            Ordering::Less => false,
        });
        if !below && !above {
            return None;
        }
        Some(match (&self.lower, &self.upper) {
            (Some(l), Some(u)) if l.inclusive && u.inclusive => format!("not in {}..={}", l.text, u.text),
            (Some(l), _) if below && l.inclusive && l.value().is_zero() => "negative".to_owned(),
            (Some(l), _) if below && l.inclusive => format!("below {}", l.text),
            (Some(l), _) if below => format!("not above {}", l.text),
            (_, Some(u)) if u.inclusive => format!("above {}", u.text),
            (_, Some(u)) => format!("not below {}", u.text),
            _ => unreachable!("outside the range means one end was passed"),
        })
    }

    /// Whether every value of the range is an integer that fits an `i64`
    /// bound-wise (ends that are integers in range).
    pub fn ends_are_i64(&self) -> bool {
        [&self.lower, &self.upper].into_iter().flatten().all(|b| b.value().to_i64().is_some())
    }
}

/// The contract's UUID forms only: hyphenated, simple, `{hyphenated}`, and
/// `urn:uuid:` (lower case) + hyphenated; hex digits in any case.
pub fn parse_uuid(s: &[u8]) -> Option<Uuid> {
    let (hex, hyphens): (&[u8], bool) = match s.len() {
        32 => (s, false),
        36 => (s, true),
        38 if s[0] == b'{' && s[37] == b'}' => (&s[1..37], true),
        45 if s.starts_with(b"urn:uuid:") => (&s[9..], true),
        _ => return None,
    };
    let mut bytes = [0u8; 16];
    let mut nibble = 0;
    for (i, &b) in hex.iter().enumerate() {
        if hyphens && matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let v = (b as char).to_digit(16)? as u8;
        bytes[nibble / 2] |= if nibble % 2 == 0 { v << 4 } else { v };
        nibble += 1;
    }
    Some(Uuid::from_bytes(bytes))
}

/// `true/false/t/f/yes/no/1/0`, any case.
pub fn parse_bool(s: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["true", "t", "yes", "1"];
    const FALSE: [&str; 4] = ["false", "f", "no", "0"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(s)) {
        Some(false)
    } else {
        None
    }
}

/// `YYYY-MM-DD`, `T`/`t`/space, `HH:MM:SS`, optional `.` and 1 to 9 digits,
/// then optional `Z`/`z` or `±HH:MM` (none = UTC). Anything else, an
/// impossible date, hour 24, minute or second 60 (leap seconds too) is None.
pub fn parse_timestamp(s: &[u8]) -> Option<DateTime<Utc>> {
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let date = parse_ymd(&s[..10])?;
    let hour = digits_n(&s[11..13])?;
    let minute = digits_n(&s[14..16])?;
    let second = digits_n(&s[17..19])?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }

    let mut rest = &s[19..];
    let mut nanos = 0;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits_n(&tail[..n])? * 10u32.pow(9 - n as u32);
        rest = &tail[n..];
    }

    let offset_seconds = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits_n(&[*h1, *h2])?;
            let m = digits_n(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };

    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = NaiveDateTime::new(date, time);
    Some(local.checked_sub_signed(TimeDelta::seconds(offset_seconds))?.and_utc())
}

/// `YYYY-MM-DD`, a real date.
pub fn parse_date(s: &[u8]) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    parse_ymd(s)
}

fn parse_ymd(s: &[u8]) -> Option<NaiveDate> {
    if s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let year = digits_n(&s[0..4])?;
    let month = digits_n(&s[5..7])?;
    let day = digits_n(&s[8..10])?;
    // Rejects impossible dates such as 2026-02-30.
    NaiveDate::from_ymd_opt(year as i32, month, day)
}

/// A declared strftime pattern for timestamps or dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub pattern: String,
    /// The pattern carries an offset (`%z` and its forms); without one the
    /// time is taken as UTC.
    pub has_offset: bool,
}

impl Format {
    pub fn new(pattern: &str) -> Format {
        let has_offset = ["%z", "%:z", "%#z", "%::z", "%:::z"].iter().any(|z| pattern.contains(z));
        Format { pattern: pattern.to_owned(), has_offset }
    }

    pub fn timestamp(&self, s: &str) -> Option<DateTime<Utc>> {
        if self.has_offset {
            return DateTime::parse_from_str(s, &self.pattern).ok().map(|t| t.with_timezone(&Utc));
        }
        match NaiveDateTime::parse_from_str(s, &self.pattern) {
            Ok(t) => Some(t.and_utc()),
            // A pattern with a date but no time of day ("%d/%m/%Y"): midnight.
            Err(_) => NaiveDate::parse_from_str(s, &self.pattern).ok().map(|d| d.and_time(NaiveTime::MIN).and_utc()),
        }
    }

    pub fn date(&self, s: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(s, &self.pattern).ok()
    }
}

/// `24h`, `30m`, `7d`, `90s`, `1h30m`: a sum of whole units (s, m, h, d).
pub fn parse_duration(s: &str) -> Option<TimeDelta> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = TimeDelta::zero();
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[n..].bytes().take_while(u8::is_ascii_alphabetic).count();
        if n == 0 || unit_len == 0 {
            return None;
        }
        let value: i64 = rest[..n].parse().ok()?;
        let unit = match &rest[n..n + unit_len] {
            "s" => TimeDelta::try_seconds(value)?,
            "m" => TimeDelta::try_minutes(value)?,
            "h" => TimeDelta::try_hours(value)?,
            "d" => TimeDelta::try_days(value)?,
            _ => return None,
        };
        total = total.checked_add(&unit)?;
        rest = rest[n + unit_len..].trim_start();
    }
    Some(total)
}

/// A duration's text for people: `24h` → `24 h`, `1h30m` → `1 h 30 m`.
pub fn spaced_duration(s: &str) -> String {
    let mut out = String::new();
    let mut prev_digit = false;
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        let digit = c.is_ascii_digit();
        if !out.is_empty() && digit != prev_digit {
            out.push(' ');
        }
        out.push(c);
        prev_digit = digit;
    }
    out
}

/// The value of a short run of ASCII digits (at most 9, so no overflow).
fn digits_n(d: &[u8]) -> Option<u32> {
    d.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal<'_> {
        Decimal::parse(s).unwrap()
    }

    #[test]
    #[rustfmt::skip]
    fn decimals_compare_exactly() {
        let cases = [
            ("0", "-0", Ordering::Equal), ("1.50", "1.5", Ordering::Equal), ("007", "7.000", Ordering::Equal),
            ("-1", "0", Ordering::Less), ("-2", "-1", Ordering::Less), ("10", "9.99", Ordering::Greater),
            ("99999999999999999999999999999999999999", "1000", Ordering::Greater), ("-0.001", "0", Ordering::Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(dec(a).cmp_value(&dec(b)), want, "{a} vs {b}");
        }
        assert_eq!(dec("-12").to_i64(), Some(-12));
        assert_eq!(dec("9223372036854775807").to_i64(), Some(i64::MAX));
        assert_eq!(dec("9223372036854775808").to_i64(), None);
        assert_eq!(dec("1.5").to_i64(), None);
        assert_eq!(dec("2.00").to_i64(), Some(2));
    }

    #[test]
    #[rustfmt::skip]
    fn ranges() {
        let r = Range::parse("[0, 100000000)").unwrap();
        assert_eq!(r.check(&dec("0")), None);
        assert_eq!(r.check(&dec("-0.01")).as_deref(), Some("negative"));
        assert_eq!(r.check(&dec("100000000.00")).as_deref(), Some("not below 100000000"));
        let r = Range::parse("[1, 10000]").unwrap();
        assert_eq!(r.check(&dec("0")).as_deref(), Some("not in 1..=10000"));
        assert_eq!(r.check(&dec("10001")).as_deref(), Some("not in 1..=10000"));
        let r = Range::parse("(0, )").unwrap();
        assert_eq!(r.check(&dec("0")).as_deref(), Some("not above 0"));
        assert_eq!(r.check(&dec("1000000000")), None);
        let r = Range::parse("( , 5]").unwrap();
        assert_eq!(r.check(&dec("5.01")).as_deref(), Some("above 5"));
        let r = Range::parse("[-5, 5)").unwrap();
        assert_eq!(r.check(&dec("-6")).as_deref(), Some("below -5"));
        for bad in ["", "[]", "[1,2", "1,2]", "[a, 2]", "[3, 2]", "(2, 2]", "[1 2]", "[+1, 2]"] {
            assert_eq!(Range::parse(bad), None, "{bad:?}");
        }
        assert!(Range::parse("[2, 2]").is_some());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(TimeDelta::hours(24)));
        assert_eq!(parse_duration("1h30m"), Some(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("7d"), Some(TimeDelta::days(7)));
        for bad in ["", "h", "24", "24x", "-1h", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(spaced_duration("24h"), "24 h");
        assert_eq!(spaced_duration("1h30m"), "1 h 30 m");
    }

    #[test]
    #[rustfmt::skip]
    fn bools_and_dates() {
        for (s, want) in [("true", Some(true)), ("T", Some(true)), ("Yes", Some(true)), ("1", Some(true)),
                          ("FALSE", Some(false)), ("f", Some(false)), ("no", Some(false)), ("0", Some(false)),
                          ("y", None), ("2", None), ("", None), ("truee", None)] {
            assert_eq!(parse_bool(s), want, "{s:?}");
        }
        assert_eq!(parse_date(b"2024-02-29"), NaiveDate::from_ymd_opt(2024, 2, 29));
        for bad in ["2025-02-29", "2024-2-29", "2024-02-29T00", "24-02-29", "2024/02/29"] {
            assert_eq!(parse_date(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn formats() {
        let f = Format::new("%d/%m/%Y %H:%M");
        assert_eq!(f.timestamp("22/11/2026 10:15"), parse_timestamp(b"2026-11-22 10:15:00"));
        assert_eq!(f.timestamp("31/02/2026 10:15"), None);
        let f = Format::new("%Y-%m-%d %H:%M:%S UTC");
        assert_eq!(f.timestamp("2026-11-22 10:15:30 UTC"), parse_timestamp(b"2026-11-22T10:15:30Z"));
        let f = Format::new("%s");
        assert_eq!(f.timestamp("1795436130"), DateTime::from_timestamp(1_795_436_130, 0));
        let f = Format::new("%Y-%m-%dT%H:%M:%S%z");
        assert!(f.has_offset);
        assert_eq!(f.timestamp("2026-11-22T10:15:30+0200"), parse_timestamp(b"2026-11-22T08:15:30Z"));
        assert_eq!(Format::new("%d.%m.%Y").date("29.02.2024"), NaiveDate::from_ymd_opt(2024, 2, 29));
    }
}
