//! Checks one data row against the contract (`spec/events.md`) and turns it
//! into an [`Event`], or names the one reason it is rejected.
//!
//! A row with several problems gets exactly one reason, by the contract's
//! priority: `missing_column`, then `malformed_csv`, then the columns in table
//! order (for each: `missing_field`, its format reason, its range reason),
//! and `purchase_without_price` last. The code below is laid out in that
//! order, so reading it top to bottom is reading the priority rule.
//!
//! Runs once per row on millions of rows: no regex, no chrono format strings,
//! and a valid row allocates only the `String`s its [`Event`] owns. A
//! rejected row allocates its `detail`. Whether an event is a duplicate is
//! not decided here.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::core::event::Event;
use crate::core::header::{trim, Column, Header};
use crate::core::reason::RejectReason;
use crate::core::record::Fields;

/// Why a row was rejected: the contract's reason, and a short human detail
/// that names the column and the problem (e.g. `price: more than 2 decimals`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }

    fn at(column: Column, reason: RejectReason, problem: &str) -> Rejection {
        Rejection::new(reason, format!("{}: {problem}", column.name()))
    }
}

/// How far ahead of the daemon's clock a timestamp may be (inclusive).
const MAX_AHEAD: TimeDelta = TimeDelta::hours(24);

const EVENT_TYPES: [&str; 4] = ["view", "add_to_cart", "remove_from_cart", "purchase"];
const DEVICE_TYPES: [&str; 3] = ["mobile", "desktop", "tablet"];

/// Validates `rec` (a data row of a file whose header is `header`) as of the
/// daemon's clock `now`. Fields are trimmed of spaces and tabs; a field empty
/// after trimming, or a column the file lacks, is null.
pub fn validate<'a>(header: &Header, rec: impl Fields<'a>, now: DateTime<Utc>) -> Result<Event<'a>, Rejection> {
    use RejectReason::*;

    // 1. The file's header: its rows cannot be read at all, malformed or not.
    if let Some(problem) = header.problem() {
        return Err(Rejection::new(MissingColumn, problem));
    }

    // 2. The record as a whole. Every field is checked, known column or
    //    not, before any column rule runs.
    if let Some(m) = rec.malformed() {
        return Err(Rejection::new(MalformedCsv, m.detail()));
    }
    if rec.field_count() != header.width() {
        return Err(Rejection::new(
            MalformedCsv,
            format!("{} fields, the header has {}", rec.field_count(), header.width()),
        ));
    }
    // Indexed by `Column as usize`; "" for a column the file lacks.
    let mut text: [&str; 12] = [""; 12];
    for pos in 0..rec.field_count() {
        let bytes = rec.field_bytes(pos);
        let column = header.column_at(pos);
        let Ok(s) = std::str::from_utf8(bytes) else {
            return Err(field_malformed(column, pos, "invalid UTF-8"));
        };
        // PostgreSQL text cannot hold NUL.
        if s.as_bytes().contains(&0) {
            return Err(field_malformed(column, pos, "NUL byte"));
        }
        if let Some(c) = column {
            text[c as usize] = trim(s);
        }
    }
    let get = |c: Column| text[c as usize];

    // 3. The columns, in table order.
    let event_id = required(Column::EventId, get(Column::EventId))?;
    let event_id =
        parse_uuid(event_id.as_bytes()).ok_or_else(|| Rejection::at(Column::EventId, InvalidUuid, "not a UUID"))?;

    let event_type = required(Column::EventType, get(Column::EventType))?;
    let event_type = one_of(event_type, &EVENT_TYPES).ok_or_else(|| {
        Rejection::at(Column::EventType, InvalidEventType, "not one of view, add_to_cart, remove_from_cart, purchase")
    })?;

    let user_id = required(Column::UserId, get(Column::UserId))?;
    max_chars(Column::UserId, user_id, 64)?;
    let session_id = get(Column::SessionId);
    max_chars(Column::SessionId, session_id, 100)?;
    let product_id = required(Column::ProductId, get(Column::ProductId))?;
    max_chars(Column::ProductId, product_id, 64)?;
    let product_name = get(Column::ProductName);
    max_chars(Column::ProductName, product_name, 200)?;
    let product_category = get(Column::ProductCategory);
    max_chars(Column::ProductCategory, product_category, 100)?;

    let price = match get(Column::Price) {
        "" => None,
        s => Some(parse_price(s).map_err(|(r, p)| Rejection::at(Column::Price, r, p))?),
    };

    let quantity = match get(Column::Quantity) {
        "" => 1,
        s => parse_quantity(s).map_err(|(r, p)| Rejection::at(Column::Quantity, r, p))?,
    };

    let ts = required(Column::EventTimestamp, get(Column::EventTimestamp))?;
    let event_timestamp = parse_timestamp(ts.as_bytes())
        .ok_or_else(|| Rejection::at(Column::EventTimestamp, InvalidTimestamp, "not a valid timestamp"))?;
    // No overflow: chrono's dates span far less than TimeDelta's range.
    if event_timestamp.signed_duration_since(now) > MAX_AHEAD {
        return Err(Rejection::at(Column::EventTimestamp, FutureTimestamp, "more than 24 h after the daemon's clock"));
    }

    let device_type = match get(Column::DeviceType) {
        "" => None,
        s => Some(
            one_of(s, &DEVICE_TYPES)
                .ok_or_else(|| Rejection::at(Column::DeviceType, InvalidEnum, "not one of mobile, desktop, tablet"))?,
        ),
    };

    let user_agent = get(Column::UserAgent);
    max_chars(Column::UserAgent, user_agent, 512)?;

    // 4. The one rule across columns, last by the contract.
    if event_type == "purchase" && price.is_none_or(|p| p.is_zero()) {
        return Err(Rejection::at(Column::Price, PurchaseWithoutPrice, "purchase without a price above 0"));
    }

    Ok(Event {
        event_id,
        event_type,
        user_id,
        session_id: optional(session_id),
        product_id,
        product_name: optional(product_name),
        product_category: optional(product_category),
        price,
        quantity,
        event_timestamp,
        device_type,
        user_agent: optional(user_agent),
    })
}

fn field_malformed(column: Option<Column>, pos: usize, problem: &str) -> Rejection {
    let detail = match column {
        Some(c) => format!("{}: {problem}", c.name()),
        // 1-based, like the line numbers, for the person reading the reject.
        None => format!("field {}: {problem}", pos + 1),
    };
    Rejection::new(RejectReason::MalformedCsv, detail)
}

fn required(column: Column, s: &str) -> Result<&str, Rejection> {
    if s.is_empty() {
        Err(Rejection::at(column, RejectReason::MissingField, "empty"))
    } else {
        Ok(s)
    }
}

fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Lengths count Unicode scalar values. A string has at most as many chars
/// as bytes, so the count is only needed when the byte length is over.
fn max_chars(column: Column, s: &str, max: usize) -> Result<(), Rejection> {
    if s.len() > max && s.chars().count() > max {
        return Err(Rejection::new(RejectReason::TooLong, format!("{}: longer than {max} characters", column.name())));
    }
    Ok(())
}

/// Case-insensitive match against lowercase names; returns the stored form.
fn one_of(s: &str, names: &[&'static str]) -> Option<&'static str> {
    names.iter().copied().find(|n| n.eq_ignore_ascii_case(s))
}

/// The contract's UUID forms only: hyphenated, simple, `{hyphenated}`, and
/// `urn:uuid:` (lower case) + hyphenated. `Uuid::try_parse` is not used
/// because it also accepts an upper-case `URN:UUID:` prefix.
fn parse_uuid(s: &[u8]) -> Option<Uuid> {
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

/// A number in the contract's plain notation `-?digits(.digits)?`.
struct Plain<'a> {
    negative: bool,
    /// Integer digits with leading zeros removed (may be empty).
    int: &'a [u8],
    /// Fraction digits as written (`None` without a `.`).
    frac: Option<&'a [u8]>,
}

impl Plain<'_> {
    fn parse(s: &str) -> Option<Plain<'_>> {
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
        Some(Plain { negative, int: &int[first..], frac })
    }

    fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.is_none_or(|f| f.iter().all(|&b| b == b'0'))
    }
}

/// Accumulates ASCII digits; callers bound the count so it cannot overflow.
fn digits_value(d: &[u8]) -> i64 {
    d.iter().fold(0, |acc, &b| acc * 10 + i64::from(b - b'0'))
}

type Fail = (RejectReason, &'static str);

/// `>= 0`, at most 2 decimals, `< 100000000`; scale kept as written.
fn parse_price(s: &str) -> Result<Decimal, Fail> {
    use RejectReason::*;
    let n = Plain::parse(s).ok_or((InvalidNumber, "not a plain decimal number"))?;
    let frac = n.frac.unwrap_or(b"");
    if frac.len() > 2 {
        return Err((InvalidNumber, "more than 2 decimals"));
    }
    // `-0` and `-0.00` equal 0: not negative.
    if n.negative && !n.is_zero() {
        return Err((OutOfRange, "negative"));
    }
    // Counting digits instead of converting keeps 40-digit inputs exact.
    if n.int.len() > 8 {
        return Err((OutOfRange, "not below 100000000"));
    }
    let scale = frac.len() as u32;
    let mantissa = digits_value(n.int) * 10i64.pow(scale) + digits_value(frac);
    // scale <= 2, so `Decimal::new` (which panics above 28) cannot panic.
    Ok(Decimal::new(mantissa, scale))
}

/// An integer in 1..=10000.
fn parse_quantity(s: &str) -> Result<i32, Fail> {
    use RejectReason::*;
    let n = Plain::parse(s).filter(|n| n.frac.is_none()).ok_or((InvalidNumber, "not an integer"))?;
    // Any negative or zero is below 1; more than 5 significant digits is
    // above 10000 (and would overflow if converted).
    if n.negative || n.int.is_empty() || n.int.len() > 5 {
        return Err((OutOfRange, "not in 1..=10000"));
    }
    match digits_value(n.int) {
        // In 1..=10000, so the cast is lossless.
        q @ 1..=10000 => Ok(q as i32),
        _ => Err((OutOfRange, "not in 1..=10000")),
    }
}

/// `YYYY-MM-DD`, `T`/`t`/space, `HH:MM:SS`, optional `.` and 1 to 9 digits,
/// then optional `Z`/`z` or `±HH:MM` (none = UTC). Anything else, an
/// impossible date, hour 24, minute or second 60 (leap seconds too) is None.
fn parse_timestamp(s: &[u8]) -> Option<DateTime<Utc>> {
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let year = digits_n(&s[0..4])?;
    let month = digits_n(&s[5..7])?;
    let day = digits_n(&s[8..10])?;
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

    // Rejects impossible dates such as 2026-02-30.
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = NaiveDateTime::new(date, time);
    Some(local.checked_sub_signed(TimeDelta::seconds(offset_seconds))?.and_utc())
}

/// The value of a short run of ASCII digits (at most 9, so no overflow).
fn digits_n(d: &[u8]) -> Option<u32> {
    d.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Malformed;
    use crate::core::record::RawRecord;
    use chrono::TimeZone;
    use Column::*;

    const HEADER: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";
    /// A valid row, in table order; cases override some of its fields.
    const BASE: [&str; 12] = [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "view",
        "u1",
        "s1",
        "p1",
        "Widget",
        "tools",
        "9.99",
        "2",
        "2026-11-22T10:15:30Z",
        "mobile",
        "Mozilla/5.0",
    ];
    const UUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    /// Splits on commas: the reader's unescaping is not under test here.
    fn record(line: &[u8]) -> RawRecord {
        let mut rec = RawRecord::default();
        for field in line.split(|&b| b == b',') {
            rec.data.extend_from_slice(field);
            rec.bounds.push(rec.data.len());
        }
        rec
    }

    /// The base row with some fields replaced (values may hold commas).
    fn row(overrides: &[(Column, &str)]) -> RawRecord {
        let mut rec = RawRecord::default();
        for (i, base) in BASE.iter().enumerate() {
            let value = overrides.iter().rev().find(|(c, _)| *c as usize == i).map_or(*base, |(_, v)| v);
            rec.data.extend_from_slice(value.as_bytes());
            rec.bounds.push(rec.data.len());
        }
        rec
    }

    /// The record is copied and leaked so the event may borrow it whatever
    /// the caller's temporaries: a few bytes per test case.
    fn outcome(header: &[u8], rec: &RawRecord) -> Result<Event<'static>, String> {
        let rec: &'static RawRecord = Box::leak(Box::new(rec.clone()));
        validate(&Header::parse(&record(header)), rec, now()).map_err(|r| format!("{} ({})", r.reason, r.detail))
    }

    /// `expected` is `ok`, a reason, or `reason (detail)` to pin the detail.
    #[track_caller]
    fn expect(got: Result<Event<'_>, String>, expected: &str) {
        let got = match got {
            Ok(_) => "ok".to_owned(),
            Err(e) => e,
        };
        let reason = got.split(" (").next().unwrap_or_default();
        assert!(got == expected || reason == expected, "expected {expected}, got {got}");
    }

    /// The base row with `overrides`, under the full header.
    #[track_caller]
    fn check(overrides: &[(Column, &str)], expected: &str) {
        expect(outcome(HEADER.as_bytes(), &row(overrides)), expected);
    }

    /// A header line and a data line, both split on commas.
    #[track_caller]
    fn check_raw(header: &[u8], line: &[u8], expected: &str) {
        expect(outcome(header, &record(line)), expected);
    }

    /// The stored event for a valid row.
    #[track_caller]
    fn stored(overrides: &[(Column, &str)]) -> Event<'static> {
        outcome(HEADER.as_bytes(), &row(overrides)).unwrap()
    }

    fn broken(error: Malformed) -> RawRecord {
        RawRecord { error: Some(error), ..RawRecord::default() }
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    #[rustfmt::skip]
    fn base_row_is_stored_as_written() {
        let e = stored(&[]);
        assert_eq!(e.event_id, Uuid::parse_str(UUID).unwrap());
        assert_eq!((e.event_type, e.user_id, e.product_id), ("view", "u1", "p1"));
        assert_eq!((e.session_id, e.product_name, e.product_category), (Some("s1"), Some("Widget"), Some("tools")));
        assert_eq!((e.price, e.quantity, e.event_timestamp), (Some(dec("9.99")), 2, ts("2026-11-22T10:15:30Z")));
        assert_eq!((e.device_type, e.user_agent), (Some("mobile"), Some("Mozilla/5.0")));
    }

    #[test]
    #[rustfmt::skip]
    fn missing_column_and_malformed_csv() {
        check_raw(b"event_id,event_type,product_id,event_timestamp", b"x,view,p1,2026-11-22 10:00:00", "missing_column (missing required column user_id)");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp,event_id", b"x,view,u1,p1,2026-11-22 10:00:00,y", "missing_column (column event_id named twice)");
        // A header problem wins over a malformed row.
        check_raw(b"event_id,event_type,product_id,event_timestamp", b"only,two", "missing_column");
        check_raw(b"event_id,event_type,product_id,event_timestamp", b"x,\0,p1,2026-11-22 10:00:00", "missing_column");
        expect(validate(&Header::parse(&record(b"event_id")), &broken(Malformed::UnclosedQuote), now()).map_err(|r| r.reason.to_string()), "missing_column");
        expect(outcome(HEADER.as_bytes(), &broken(Malformed::StrayQuote)), "malformed_csv (quote inside an unquoted field)");
        expect(outcome(HEADER.as_bytes(), &broken(Malformed::TextAfterQuote)), "malformed_csv (text after a closing quote)");
        expect(outcome(HEADER.as_bytes(), &broken(Malformed::TooLong)), "malformed_csv (record longer than max_record_bytes)");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp", b"x,view,u1,p1", "malformed_csv (4 fields, the header has 5)");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp", format!("{UUID},view,u1,p1,2026-11-22 10:00:00,").as_bytes(), "malformed_csv (6 fields, the header has 5)");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp", b"   ", "malformed_csv");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp,notes", format!("{UUID},view,u1,p1,2026-11-22 10:00:00,a\0b").as_bytes(), "malformed_csv (field 6: NUL byte)");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp,notes", &[UUID.as_bytes(), b",view,u1,p1,2026-11-22 10:00:00,\xFF"].concat(), "malformed_csv (field 6: invalid UTF-8)");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp,notes", &[UUID.as_bytes(), b",view,u1,p1,2026-11-22 10:00:00,\xC3"].concat(), "malformed_csv");
        check(&[(UserAgent, "a\0")], "malformed_csv (user_agent: NUL byte)");
        check(&[(UserId, "\0")], "malformed_csv (user_id: NUL byte)");
        // Malformed beats every column rule, even one in an earlier column.
        check(&[(EventId, "nope"), (UserAgent, "\0")], "malformed_csv (user_agent: NUL byte)");
        check(&[(EventId, ""), (EventType, "click"), (Price, "-1")], "missing_field");
        // Unknown columns are ignored once they are clean text.
        check_raw(b"Colour,event_id,event_type,user_id,product_id,event_timestamp", format!("red,{UUID},view,u1,p1,2026-11-22 10:00:00").as_bytes(), "ok");
    }

    #[test]
    fn invalid_utf8_in_a_known_column() {
        let mut rec = row(&[]);
        let end = rec.bounds[UserAgent as usize];
        rec.data[end - 1] = 0xC0;
        expect(outcome(HEADER.as_bytes(), &rec), "malformed_csv (user_agent: invalid UTF-8)");
    }

    #[test]
    #[rustfmt::skip]
    fn event_id() {
        check(&[(EventId, "")], "missing_field (event_id: empty)");
        check(&[(EventId, " \t ")], "missing_field");
        check(&[(EventId, "0F8FAD5B-D9CB-469F-A165-70867728950E")], "ok");
        check(&[(EventId, "0f8fad5bd9cb469fa16570867728950e")], "ok");
        check(&[(EventId, "{0f8fad5b-d9cb-469f-a165-70867728950e}")], "ok");
        check(&[(EventId, "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e")], "ok");
        check(&[(EventId, "\t0f8fad5b-d9cb-469f-a165-70867728950e ")], "ok");
        check(&[(EventId, "URN:UUID:0f8fad5b-d9cb-469f-a165-70867728950e")], "invalid_uuid (event_id: not a UUID)");
        check(&[(EventId, "Urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e")], "invalid_uuid");
        check(&[(EventId, "{0f8fad5bd9cb469fa16570867728950e}")], "invalid_uuid");
        check(&[(EventId, "urn:uuid:0f8fad5bd9cb469fa16570867728950e")], "invalid_uuid");
        check(&[(EventId, "{urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e}")], "invalid_uuid");
        check(&[(EventId, "{0f8fad5b-d9cb-469f-a165-70867728950e")], "invalid_uuid");
        check(&[(EventId, "(0f8fad5b-d9cb-469f-a165-70867728950e)")], "invalid_uuid");
        check(&[(EventId, "0f8fad5bd-9cb-469f-a165-70867728950e")], "invalid_uuid");
        check(&[(EventId, "0f8fad5b-d9cb-469f-a165-70867728950g")], "invalid_uuid");
        check(&[(EventId, "0f8fad5b-d9cb-469f-a165-70867728950")], "invalid_uuid");
        check(&[(EventId, "0f8fad5b-d9cb-469f-a165-70867728950e0")], "invalid_uuid");
        check(&[(EventId, "0f8fad5b-d9cb-469f-a165+70867728950e")], "invalid_uuid");
        check(&[(EventId, "0f8fad5b-d9cb-469f-a165-70867728950\u{e9}")], "invalid_uuid");
        check(&[(EventId, "0f8fad5b d9cb-469f-a165-70867728950e")], "invalid_uuid");
        check(&[(EventId, "not-a-uuid")], "invalid_uuid");
    }

    #[test]
    #[rustfmt::skip]
    fn event_id_is_stored_canonically() {
        let want = Uuid::parse_str(UUID).unwrap();
        for form in ["0F8FAD5BD9CB469FA16570867728950E", "{0F8fad5b-d9cb-469f-a165-70867728950E}", "urn:uuid:0f8fad5b-D9CB-469f-a165-70867728950e"] {
            assert_eq!(stored(&[(EventId, form)]).event_id, want, "{form}");
        }
    }

    #[test]
    fn event_type() {
        check(&[(EventType, "")], "missing_field (event_type: empty)");
        check(&[(EventType, "click")], "invalid_event_type");
        check(&[(EventType, "vi ew")], "invalid_event_type");
        check(&[(EventType, "add-to-cart")], "invalid_event_type");
        check(&[(EventType, "view\u{a0}")], "invalid_event_type");
        check(&[(EventType, " remove_from_cart\t")], "ok");
        assert_eq!(stored(&[(EventType, "VIEW")]).event_type, "view");
        assert_eq!(stored(&[(EventType, "Add_To_Cart")]).event_type, "add_to_cart");
        assert_eq!(stored(&[(EventType, "PurChase")]).event_type, "purchase");
    }

    #[test]
    #[rustfmt::skip]
    fn text_lengths() {
        check(&[(UserId, "")], "missing_field (user_id: empty)");
        check(&[(UserId, "\t")], "missing_field");
        check(&[(UserId, &"x".repeat(64))], "ok");
        check(&[(UserId, &"x".repeat(65))], "too_long (user_id: longer than 64 characters)");
        check(&[(UserId, &"\u{e9}".repeat(64))], "ok");
        check(&[(UserId, &"\u{e9}".repeat(65))], "too_long");
        check(&[(UserId, &format!(" {} ", "x".repeat(64)))], "ok");
        check(&[(SessionId, "")], "ok");
        check(&[(SessionId, &"s".repeat(100))], "ok");
        check(&[(SessionId, &"s".repeat(101))], "too_long (session_id: longer than 100 characters)");
        check(&[(ProductId, "")], "missing_field (product_id: empty)");
        check(&[(ProductId, &"\u{1F600}".repeat(64))], "ok");
        check(&[(ProductId, &"p".repeat(65))], "too_long (product_id: longer than 64 characters)");
        check(&[(ProductName, &"n".repeat(200))], "ok");
        check(&[(ProductName, &"n".repeat(201))], "too_long (product_name: longer than 200 characters)");
        check(&[(ProductCategory, &"c".repeat(100))], "ok");
        check(&[(ProductCategory, &"c".repeat(101))], "too_long (product_category: longer than 100 characters)");
        check(&[(UserAgent, &"a".repeat(512))], "ok");
        check(&[(UserAgent, &"a".repeat(513))], "too_long (user_agent: longer than 512 characters)");
    }

    #[test]
    #[rustfmt::skip]
    fn text_is_trimmed_of_spaces_and_tabs_only() {
        let e = stored(&[(UserId, " \tu 1\t "), (SessionId, "  "), (ProductName, "a, b"), (UserAgent, "\u{a0}x\u{a0}")]);
        assert_eq!((e.user_id, e.session_id, e.product_name), ("u 1", None, Some("a, b")));
        assert_eq!(e.user_agent, Some("\u{a0}x\u{a0}"));
        assert_eq!(stored(&[(UserId, "\u{a0}")]).user_id, "\u{a0}");
        let e = stored(&[(ProductName, ""), (ProductCategory, ""), (UserAgent, "")]);
        assert_eq!((e.product_name, e.product_category, e.user_agent), (None, None, None));
    }

    #[test]
    #[rustfmt::skip]
    fn price() {
        check(&[(Price, "")], "ok");
        check(&[(Price, "0")], "ok");
        check(&[(Price, "-0")], "ok");
        check(&[(Price, "-0.00")], "ok");
        check(&[(Price, "99999999.99")], "ok");
        check(&[(Price, "000000000000000000000000000012.50")], "ok");
        check(&[(Price, "1e3")], "invalid_number (price: not a plain decimal number)");
        check(&[(Price, "1,000.00")], "invalid_number");
        check(&[(Price, "+5")], "invalid_number");
        check(&[(Price, ".5")], "invalid_number");
        check(&[(Price, "5.")], "invalid_number");
        check(&[(Price, "-.5")], "invalid_number");
        check(&[(Price, "NaN")], "invalid_number");
        check(&[(Price, "inf")], "invalid_number");
        check(&[(Price, "1 000")], "invalid_number");
        check(&[(Price, "1. 5")], "invalid_number");
        check(&[(Price, "-")], "invalid_number");
        check(&[(Price, "--1")], "invalid_number");
        check(&[(Price, "- 1")], "invalid_number");
        check(&[(Price, "1.2.3")], "invalid_number");
        check(&[(Price, "0x10")], "invalid_number");
        check(&[(Price, "$5")], "invalid_number");
        check(&[(Price, "\u{0661}")], "invalid_number");
        check(&[(Price, "1.234")], "invalid_number (price: more than 2 decimals)");
        check(&[(Price, "1.000")], "invalid_number (price: more than 2 decimals)");
        // Format before range: too many decimals wins over negative or huge.
        check(&[(Price, "-1.234")], "invalid_number (price: more than 2 decimals)");
        check(&[(Price, "123456789.123")], "invalid_number (price: more than 2 decimals)");
        check(&[(Price, "-1")], "out_of_range (price: negative)");
        check(&[(Price, "-0.01")], "out_of_range (price: negative)");
        check(&[(Price, "100000000")], "out_of_range (price: not below 100000000)");
        check(&[(Price, "100000000.00")], "out_of_range (price: not below 100000000)");
        check(&[(Price, "1234567890123456789012345678901234567890")], "out_of_range (price: not below 100000000)");
        check(&[(Price, "1234567890123456789012345678901234567890.99")], "out_of_range");
        check(&[(Price, "-1234567890123456789012345678901234567890")], "out_of_range");
    }

    #[test]
    fn price_keeps_its_written_scale() {
        for (written, scale) in [("5", 0), ("5.0", 1), ("5.00", 2), ("-0.00", 2), ("007.5", 1)] {
            let price = stored(&[(Price, written)]).price.unwrap();
            assert_eq!((price.scale(), price.is_sign_negative()), (scale, false), "{written}");
        }
        assert_eq!(stored(&[(Price, "007.5")]).price, Some(dec("7.5")));
        assert_eq!(stored(&[(Price, "99999999.99")]).price, Some(dec("99999999.99")));
        assert_eq!(stored(&[(Price, "")]).price, None);
    }

    #[test]
    fn quantity() {
        assert_eq!(stored(&[(Quantity, "")]).quantity, 1);
        assert_eq!(stored(&[(Quantity, " 00010 ")]).quantity, 10);
        check(&[(Quantity, "1")], "ok");
        check(&[(Quantity, "10000")], "ok");
        check(&[(Quantity, "1.0")], "invalid_number (quantity: not an integer)");
        check(&[(Quantity, "+1")], "invalid_number");
        check(&[(Quantity, "1e2")], "invalid_number");
        check(&[(Quantity, "one")], "invalid_number");
        check(&[(Quantity, "1 0")], "invalid_number");
        check(&[(Quantity, "0")], "out_of_range (quantity: not in 1..=10000)");
        check(&[(Quantity, "-0")], "out_of_range");
        check(&[(Quantity, "-1")], "out_of_range");
        check(&[(Quantity, "10001")], "out_of_range");
        check(&[(Quantity, "99999")], "out_of_range");
        check(&[(Quantity, "1234567890123456789012345678901234567890")], "out_of_range");
        check(&[(Quantity, "-1234567890123456789012345678901234567890")], "out_of_range");
    }

    #[test]
    #[rustfmt::skip]
    fn event_timestamp() {
        check(&[(EventTimestamp, "")], "missing_field (event_timestamp: empty)");
        check(&[(EventTimestamp, "2026-11-22T10:15:30.123Z")], "ok");
        check(&[(EventTimestamp, "2026-11-22t10:15:30z")], "ok");
        check(&[(EventTimestamp, "2026-11-22T10:15:30+02:00")], "ok");
        check(&[(EventTimestamp, "2026-11-22 10:15:30")], "ok");
        check(&[(EventTimestamp, "2026-11-22T10:15:30")], "ok");
        check(&[(EventTimestamp, "2026-11-22 10:15:30.123456789")], "ok");
        check(&[(EventTimestamp, "2026-11-22 10:15:30.1-05:30")], "ok");
        check(&[(EventTimestamp, "2024-02-29T23:59:59Z")], "ok");
        check(&[(EventTimestamp, "0001-01-01T00:00:00+23:59")], "ok");
        check(&[(EventTimestamp, "2026-02-30 00:00:00")], "invalid_timestamp (event_timestamp: not a valid timestamp)");
        check(&[(EventTimestamp, "2025-02-29T00:00:00Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-13-01T00:00:00Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-00-10T00:00:00Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-00T00:00:00Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T24:00:00Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:60:00Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-06-30T23:59:60Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30.1234567890Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30.Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30,5Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30+0200")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30+02")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30+24:00")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30+02:60")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30ZZ")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30 Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:30UTC")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22  10:15:30")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22_10:15:30")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026/11/22 10:15:30")], "invalid_timestamp");
        check(&[(EventTimestamp, "26-11-22T10:15:30Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-1-22T10:15:30Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "+2026-11-22T10:15:30Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T1:15:30Z")], "invalid_timestamp");
        check(&[(EventTimestamp, "2026-11-22T10:15:3\u{e9}")], "invalid_timestamp");
        check(&[(EventTimestamp, "1795436130")], "invalid_timestamp");
    }

    #[test]
    fn event_timestamp_instant() {
        let at = |s: &str| stored(&[(EventTimestamp, s)]).event_timestamp;
        assert_eq!(at("2026-11-22T10:15:30+02:00"), ts("2026-11-22T08:15:30Z"));
        assert_eq!(at("2026-11-22T10:15:30-00:00"), ts("2026-11-22T10:15:30Z"));
        assert_eq!(at("2026-11-22 10:15:30"), ts("2026-11-22T10:15:30Z"));
        assert_eq!(at("2026-11-22 10:15:30.5"), ts("2026-11-22T10:15:30.500Z"));
        assert_eq!(at("2026-11-22T10:15:30.000000001z"), ts("2026-11-22T10:15:30.000000001Z"));
        assert_eq!(at("2026-11-22T00:30:00+01:00"), ts("2026-11-21T23:30:00Z"));
    }

    #[test]
    #[rustfmt::skip]
    fn future_timestamp() {
        // now() is 2026-11-22T12:00:00Z; up to now + 24 h inclusive is accepted.
        check(&[(EventTimestamp, "2026-11-23T11:59:59Z")], "ok");
        check(&[(EventTimestamp, "2026-11-23T12:00:00Z")], "ok");
        check(&[(EventTimestamp, "2026-11-23T14:00:00+02:00")], "ok");
        check(&[(EventTimestamp, "2026-11-23T12:00:01Z")], "future_timestamp (event_timestamp: more than 24 h after the daemon's clock)");
        check(&[(EventTimestamp, "2026-11-23T12:00:00.000000001Z")], "future_timestamp");
        check(&[(EventTimestamp, "2026-11-23T12:00:00-00:01")], "future_timestamp");
        check(&[(EventTimestamp, "9999-12-31T23:59:59Z")], "future_timestamp");
        check(&[(EventTimestamp, "1970-01-01T00:00:00Z")], "ok");
    }

    #[test]
    #[rustfmt::skip]
    fn device_type() {
        check(&[(DeviceType, "")], "ok");
        check(&[(DeviceType, "phone")], "invalid_enum (device_type: not one of mobile, desktop, tablet)");
        check(&[(DeviceType, "mobi le")], "invalid_enum");
        assert_eq!(stored(&[(DeviceType, "")]).device_type, None);
        assert_eq!(stored(&[(DeviceType, " MOBILE ")]).device_type, Some("mobile"));
        assert_eq!(stored(&[(DeviceType, "Desktop")]).device_type, Some("desktop"));
        assert_eq!(stored(&[(DeviceType, "tablet")]).device_type, Some("tablet"));
    }

    #[test]
    #[rustfmt::skip]
    fn purchase_without_price() {
        check(&[(EventType, "purchase"), (Price, "0.01")], "ok");
        check(&[(EventType, "purchase"), (Price, "")], "purchase_without_price (price: purchase without a price above 0)");
        check(&[(EventType, "purchase"), (Price, "0")], "purchase_without_price");
        check(&[(EventType, "purchase"), (Price, "0.00")], "purchase_without_price");
        check(&[(EventType, "purchase"), (Price, "-0")], "purchase_without_price");
        check(&[(EventType, "add_to_cart"), (Price, "")], "ok");
        // A file without a price column has null prices.
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp", format!("{UUID},PURCHASE,u1,p1,2026-11-22 10:00:00").as_bytes(), "purchase_without_price");
        check_raw(b"event_id,event_type,user_id,product_id,event_timestamp", format!("{UUID},view,u1,p1,2026-11-22 10:00:00").as_bytes(), "ok");
    }

    #[test]
    #[rustfmt::skip]
    fn absent_optional_columns_are_null() {
        let header = Header::parse(&record(b"event_timestamp,product_id,user_id,event_type,event_id,price"));
        let rec = record(format!("2026-11-22 10:00:00,p1,u1,purchase,{UUID},5").as_bytes());
        let e = validate(&header, &rec, now()).unwrap();
        assert_eq!((e.session_id, e.product_name, e.product_category, e.device_type, e.user_agent), (None, None, None, None, None));
        assert_eq!((e.quantity, e.price, e.event_type), (1, Some(dec("5")), "purchase"));
    }

    #[test]
    #[rustfmt::skip]
    fn one_reason_by_priority() {
        check(&[(EventId, "x"), (EventType, "click")], "invalid_uuid");
        check(&[(EventId, ""), (EventType, "")], "missing_field (event_id: empty)");
        check(&[(EventType, "click"), (UserId, "")], "invalid_event_type");
        check(&[(EventType, ""), (UserId, "")], "missing_field (event_type: empty)");
        check(&[(UserId, &"x".repeat(65)), (ProductId, "")], "too_long (user_id: longer than 64 characters)");
        check(&[(UserId, ""), (SessionId, &"s".repeat(101))], "missing_field (user_id: empty)");
        check(&[(SessionId, &"s".repeat(101)), (ProductId, "")], "too_long (session_id: longer than 100 characters)");
        check(&[(ProductId, ""), (Price, "abc")], "missing_field (product_id: empty)");
        check(&[(ProductCategory, &"c".repeat(101)), (Price, "abc")], "too_long (product_category: longer than 100 characters)");
        check(&[(Price, "-1"), (Quantity, "1.0")], "out_of_range (price: negative)");
        check(&[(Price, "1e3"), (EventTimestamp, "2030-01-01T00:00:00Z")], "invalid_number (price: not a plain decimal number)");
        check(&[(Quantity, "0"), (EventTimestamp, "yesterday")], "out_of_range (quantity: not in 1..=10000)");
        check(&[(Quantity, "x"), (EventTimestamp, "")], "invalid_number (quantity: not an integer)");
        check(&[(EventTimestamp, ""), (DeviceType, "phone")], "missing_field (event_timestamp: empty)");
        check(&[(EventTimestamp, "2030-01-01T00:00:00Z"), (DeviceType, "phone")], "future_timestamp");
        check(&[(DeviceType, "phone"), (UserAgent, &"a".repeat(513))], "invalid_enum");
        // purchase_without_price is last, after every column's rules.
        check(&[(EventType, "purchase"), (Price, ""), (UserId, "")], "missing_field (user_id: empty)");
        check(&[(EventType, "purchase"), (Price, ""), (UserId, &"x".repeat(65))], "too_long (user_id: longer than 64 characters)");
        check(&[(EventType, "purchase"), (Price, "0"), (DeviceType, "phone")], "invalid_enum");
        check(&[(EventType, "purchase"), (Price, "0"), (UserAgent, &"a".repeat(513))], "too_long (user_agent: longer than 512 characters)");
        check(&[(EventType, "purchase"), (Price, "-1")], "out_of_range (price: negative)");
        check(&[(EventType, "purchase"), (Price, "abc")], "invalid_number");
        check(&[(EventType, "purchase"), (Price, ""), (EventTimestamp, "2026-02-30 00:00:00")], "invalid_timestamp");
    }

    #[test]
    #[rustfmt::skip]
    fn every_reason_is_covered() {
        // Guards the table above: each reason has at least one case here.
        let cases: [(RejectReason, Result<Event, String>); 12] = [
            (RejectReason::MissingColumn, outcome(b"event_id", &record(b"x"))),
            (RejectReason::MalformedCsv, outcome(HEADER.as_bytes(), &record(b"x"))),
            (RejectReason::MissingField, outcome(HEADER.as_bytes(), &row(&[(UserId, "")]))),
            (RejectReason::InvalidUuid, outcome(HEADER.as_bytes(), &row(&[(EventId, "x")]))),
            (RejectReason::InvalidEventType, outcome(HEADER.as_bytes(), &row(&[(EventType, "x")]))),
            (RejectReason::InvalidNumber, outcome(HEADER.as_bytes(), &row(&[(Price, "x")]))),
            (RejectReason::OutOfRange, outcome(HEADER.as_bytes(), &row(&[(Quantity, "0")]))),
            (RejectReason::InvalidTimestamp, outcome(HEADER.as_bytes(), &row(&[(EventTimestamp, "x")]))),
            (RejectReason::FutureTimestamp, outcome(HEADER.as_bytes(), &row(&[(EventTimestamp, "2030-01-01 00:00:00")]))),
            (RejectReason::TooLong, outcome(HEADER.as_bytes(), &row(&[(UserAgent, &"a".repeat(513))]))),
            (RejectReason::InvalidEnum, outcome(HEADER.as_bytes(), &row(&[(DeviceType, "x")]))),
            (RejectReason::PurchaseWithoutPrice, outcome(HEADER.as_bytes(), &row(&[(EventType, "purchase"), (Price, "")]))),
        ];
        for (i, (reason, got)) in cases.into_iter().enumerate() {
            assert_eq!(reason, RejectReason::ALL[i]);
            expect(got, reason.as_str());
        }
    }
}
