//! The built-in pipeline's rule tables, run through its declaration
//! (`config/pipelines/ecommerce.toml`): one line per rule and per reason.

use chrono::TimeZone;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::core::record::Malformed;
use crate::core::testing::{record, schema, Column};
use crate::core::value::Value;
use Column::*;

/// A valid row as the contract's columns, for assertions.
#[derive(Debug, Clone, PartialEq)]
struct Event<'a> {
    event_id: Uuid,
    event_type: &'a str,
    user_id: &'a str,
    session_id: Option<&'a str>,
    product_id: &'a str,
    product_name: Option<&'a str>,
    product_category: Option<&'a str>,
    price: Option<Decimal>,
    quantity: i64,
    event_timestamp: DateTime<Utc>,
    device_type: Option<&'a str>,
    user_agent: Option<&'a str>,
}

impl<'a> Event<'a> {
    fn of(v: &[Value<'a>]) -> Event<'a> {
        let text = |c: Column| match v[c as usize] {
            Value::Text(s) => Some(s),
            Value::Null => None,
            other => panic!("{c:?}: {other:?}"),
        };
        Event {
            event_id: match v[EventId as usize] {
                Value::Uuid(u) => u,
                other => panic!("{other:?}"),
            },
            event_type: text(EventType).unwrap(),
            user_id: text(UserId).unwrap(),
            session_id: text(SessionId),
            product_id: text(ProductId).unwrap(),
            product_name: text(ProductName),
            product_category: text(ProductCategory),
            price: match v[Price as usize] {
                Value::Decimal(d) => {
                    let digits = format!(
                        "{}{}.{}",
                        if d.negative && !d.is_zero() { "-" } else { "" },
                        if d.int.is_empty() { "0" } else { std::str::from_utf8(d.int).unwrap() },
                        std::str::from_utf8(d.frac).unwrap()
                    );
                    Some(digits.trim_end_matches('.').parse().unwrap())
                }
                Value::Null => None,
                other => panic!("{other:?}"),
            },
            quantity: match v[Quantity as usize] {
                Value::Int(n) => n,
                other => panic!("{other:?}"),
            },
            event_timestamp: match v[EventTimestamp as usize] {
                Value::Timestamp(t) => t,
                other => panic!("{other:?}"),
            },
            device_type: text(DeviceType),
            user_agent: text(UserAgent),
        }
    }
}

#[test]
fn columns_follow_the_contract() {
    let names: Vec<&str> = schema().columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.join(","), HEADER);
    for (i, c) in Column::ALL.into_iter().enumerate() {
        assert_eq!((c.index(), c.name()), (i, names[i]));
    }
}

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
    checked(&Header::parse(schema(), &record(header)), rec).map_err(|r| format!("{} ({})", r.reason, r.detail))
}

/// `validate` through the built-in declaration, as an `Event`.
fn checked(header: &Header, rec: &'static RawRecord) -> Result<Event<'static>, Rejection> {
    let mut values = Vec::new();
    validate(schema(), header, rec, now(), &mut values).map(|()| Event::of(&values))
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
    expect(checked(&Header::parse(schema(), &record(b"event_id")), Box::leak(Box::new(broken(Malformed::UnclosedQuote)))).map_err(|r| r.reason.to_string()), "missing_column");
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

/// Known columns far to the right of unknown ones (past the fields whose
/// text `validate` keeps between its steps) are read and checked the same.
#[test]
fn known_columns_after_many_unknown_ones() {
    let extra: Vec<String> = (0..40).map(|i| format!("x{i}")).collect();
    let header = format!("{},{HEADER}", extra.join(","));
    let mut rec = record(format!("{}{}", ",".repeat(40), BASE.join(",")).as_bytes());
    assert_eq!(outcome(header.as_bytes(), &rec), outcome(HEADER.as_bytes(), &row(&[])));
    let last = rec.bounds.len() - 1;
    rec.data[rec.bounds[last] - 1] = 0xC0;
    expect(outcome(header.as_bytes(), &rec), "malformed_csv (user_agent: invalid UTF-8)");
    let rec = record(format!("{}{}", ",".repeat(40), BASE.join(",").replace("u1", "")).as_bytes());
    expect(outcome(header.as_bytes(), &rec), "missing_field (user_id: empty)");
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
    let header = Header::parse(schema(), &record(b"event_timestamp,product_id,user_id,event_type,event_id,price"));
    let rec = Box::leak(Box::new(record(format!("2026-11-22 10:00:00,p1,u1,purchase,{UUID},5").as_bytes())));
    let e = checked(&header, rec).unwrap();
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
    let cases: [(&str, Result<Event, String>); 12] = [
        ("missing_column", outcome(b"event_id", &record(b"x"))),
        ("malformed_csv", outcome(HEADER.as_bytes(), &record(b"x"))),
        ("missing_field", outcome(HEADER.as_bytes(), &row(&[(UserId, "")]))),
        ("invalid_uuid", outcome(HEADER.as_bytes(), &row(&[(EventId, "x")]))),
        ("invalid_event_type", outcome(HEADER.as_bytes(), &row(&[(EventType, "x")]))),
        ("invalid_number", outcome(HEADER.as_bytes(), &row(&[(Price, "x")]))),
        ("out_of_range", outcome(HEADER.as_bytes(), &row(&[(Quantity, "0")]))),
        ("invalid_timestamp", outcome(HEADER.as_bytes(), &row(&[(EventTimestamp, "x")]))),
        ("future_timestamp", outcome(HEADER.as_bytes(), &row(&[(EventTimestamp, "2030-01-01 00:00:00")]))),
        ("too_long", outcome(HEADER.as_bytes(), &row(&[(UserAgent, &"a".repeat(513))]))),
        ("invalid_enum", outcome(HEADER.as_bytes(), &row(&[(DeviceType, "x")]))),
        ("purchase_without_price", outcome(HEADER.as_bytes(), &row(&[(EventType, "purchase"), (Price, "")]))),
    ];
    // The contract's twelve reasons, in its order, are the ones the
    // built-in declaration can give (besides the engine's own).
    let contract: Vec<&str> = cases.iter().map(|(r, _)| *r).collect();
    let declared: Vec<&str> = schema().reasons().iter().map(|r| r.as_str()).collect();
    assert!(contract.iter().all(|r| declared.contains(r)), "{declared:?}");
    for (reason, got) in cases {
        expect(got, reason);
    }
}
