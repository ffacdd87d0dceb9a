//! Binary COPY payloads, encoded off the database thread.
//!
//! Validation encodes each valid row straight into PostgreSQL's binary COPY
//! format: the declared columns in order, each in its column's wire type
//! (`Phys`), then `source_line` and `source_file`. A batch then travels as
//! one buffer of about the size of its rows, and the Writer only streams
//! it: no per-row work on the thread that drives the database connections.
//!
//! The wire formats are PostgreSQL's `*send` functions' (and the same bytes
//! tokio-postgres' `ToSql` writes: timestamps truncated to microseconds,
//! dates in days, both from 2000-01-01). `numeric` is written from the
//! value's digits, so a number of any length is exact.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{NaiveDate, NaiveDateTime};

use crate::core::schema::{Phys, Schema};
use crate::core::value::{Decimal, Value};

/// Binary COPY signature, flags and header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Builds one batch's COPY payload.
pub struct CopyEncoder {
    buf: BytesMut,
    starts: Vec<usize>,
    keys: Vec<u128>,
}

/// A batch's encoded rows.
#[derive(Debug, Clone, Default)]
pub struct CopyPayload {
    /// Header, rows, trailer: as `COPY … FROM STDIN (FORMAT binary)` takes
    /// them when every row goes in the order stored.
    bytes: Bytes,
    /// Where each stored row starts in `bytes`.
    starts: Arc<[usize]>,
    /// Each stored row's key number (see `core::key`), for `merge`.
    keys: Arc<[u128]>,
    /// The rows that go, in the order they go (key order), when that is not
    /// all of them as stored: validation encodes rows as it reads them and
    /// sorts only this list, so a batch is never copied to be sorted (and a
    /// duplicate it drops stays unsent in the buffer).
    order: Option<Arc<[u32]>>,
}

impl CopyPayload {
    /// Rows that go.
    pub fn rows(&self) -> u64 {
        self.order.as_ref().map_or(self.starts.len(), |o| o.len()) as u64
    }

    /// The stored index of row `i` (in sending order).
    fn stored(&self, i: usize) -> usize {
        self.order.as_ref().map_or(i, |o| o[i] as usize)
    }

    /// Where stored row `s` starts and ends in `bytes`.
    fn row_bounds(&self, s: usize) -> (usize, usize) {
        let end = self.starts.get(s + 1).copied().unwrap_or(self.bytes.len() - 2);
        (self.starts[s], end)
    }

    /// Row `i` (in sending order): its bytes (field count and fields) and
    /// its key.
    pub fn row(&self, i: usize) -> (&[u8], u128) {
        let s = self.stored(i);
        let (a, b) = self.row_bounds(s);
        (&self.bytes[a..b], self.keys[s])
    }

    /// This payload sending only the stored rows `order`, in that order.
    pub fn ordered(self, order: Vec<u32>) -> CopyPayload {
        CopyPayload { order: Some(order.into()), ..self }
    }

    /// A payload of rows `range` of this one (a copy).
    pub fn slice(&self, range: std::ops::Range<usize>) -> CopyPayload {
        let mut enc = CopyEncoder::new(0);
        for i in range {
            let (row, key) = self.row(i);
            enc.push_encoded(row, key);
        }
        enc.finish()
    }

    /// The COPY stream of this payload's rows.
    pub fn stream(&self) -> Merged {
        CopyPayload::merge([self])
    }

    /// The rows of several payloads as one, in key order. Each part is
    /// in key order already (validation sorts), so a group of small
    /// files' batches goes into the table in one sorted pass too: index
    /// inserts stay near each other, and two connections take shared ids in
    /// the same order (one waits instead of deadlocking). Rows with the same
    /// id keep the parts' order. Nothing is copied: the result reads the
    /// parts' rows where they are (a group's payload is megabytes, which a
    /// merged copy would fault in afresh for every transaction).
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a CopyPayload>) -> Merged {
        let parts: Vec<CopyPayload> = parts.into_iter().filter(|p| p.rows() > 0).cloned().collect();
        let order = match parts.as_slice() {
            [one] if one.order.is_none() => None,
            [one] => Some((0..one.rows() as u32).map(|i| (0, i)).collect()),
            _ => {
                let mut keys: Vec<(u128, u32, u32)> = Vec::with_capacity(parts.iter().map(|p| p.rows() as usize).sum());
                for (k, p) in parts.iter().enumerate() {
                    keys.extend((0..p.rows() as usize).map(|i| (p.keys[p.stored(i)], k as u32, i as u32)));
                }
                // Stable, and quick on a few sorted runs: it merges them.
                keys.sort_by_key(|&(id, _, _)| id);
                Some(keys.into_iter().map(|(_, k, i)| (k, i)).collect::<Vec<_>>())
            }
        };
        let remaining = match &order {
            None => parts[0].bytes.len(),
            Some(order) => {
                HEADER.len() + 2 + order.iter().map(|&(k, i)| parts[k as usize].row(i as usize).0.len()).sum::<usize>()
            }
        };
        Merged { parts, order, at: 0, offset: 0, remaining }
    }
}

const TRAILER: &[u8] = &[0xff, 0xff];

/// Several payloads' rows as one COPY stream (`CopyPayload::merge`), read
/// in place: a `Buf` whose chunks are the header, each row in order, and
/// the trailer.
pub struct Merged {
    parts: Vec<CopyPayload>,
    /// (part, row in the part's sending order) in stream order (none for no
    /// part: header and trailer only); `None`: the one part as it is.
    order: Option<Vec<(u32, u32)>>,
    /// The current chunk: with `order`, 0 is the header, `1..=rows` the
    /// rows, then the trailer; without, 0 is the whole part.
    at: usize,
    /// Bytes of the current chunk already read.
    offset: usize,
    remaining: usize,
}

impl Merged {
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows()).sum()
    }

    fn current(&self) -> &[u8] {
        match &self.order {
            None => {
                if self.at == 0 {
                    &self.parts[0].bytes
                } else {
                    &[]
                }
            }
            Some(order) => match self.at {
                0 => HEADER,
                n if n <= order.len() => {
                    let (k, i) = order[n - 1];
                    self.parts[k as usize].row(i as usize).0
                }
                n if n == order.len() + 1 => TRAILER,
                _ => &[],
            },
        }
    }
}

impl bytes::Buf for Merged {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        &self.current()[self.offset..]
    }

    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.remaining, "advance past the end");
        self.remaining -= n;
        while n > 0 {
            let left = self.current().len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.at += 1;
            self.offset = 0;
        }
        // Never rest on an empty chunk with bytes left.
        while self.remaining > 0 && self.current().is_empty() {
            self.at += 1;
        }
    }
}

impl CopyEncoder {
    pub fn new(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER.len() + 2));
        buf.put_slice(HEADER);
        CopyEncoder { buf, starts: Vec::new(), keys: Vec::new() }
    }

    /// An encoder writing into `room` (empty), whose allocation the
    /// payload then shares with the others cut from it (`finish_within`):
    /// a hundred small files' payloads take one allocation, released when
    /// the last of them is, instead of a hundred scattered over the heap.
    pub fn within(mut room: BytesMut) -> Self {
        debug_assert!(room.is_empty());
        room.put_slice(HEADER);
        CopyEncoder { buf: room, starts: Vec::new(), keys: Vec::new() }
    }

    pub fn rows(&self) -> usize {
        self.starts.len()
    }

    /// Appends one row: the schema's columns' values, then its line and its
    /// file.
    pub fn push_row(&mut self, schema: &Schema, values: &[Value<'_>], key: u128, line: u64, source_file: &str) -> u32 {
        let index = self.starts.len() as u32;
        self.starts.push(self.buf.len());
        self.keys.push(key);
        self.buf.put_i16((values.len() + 2) as i16);
        for (v, c) in values.iter().zip(&schema.columns) {
            self.value(v, c.phys);
        }
        self.value(&Value::Int(line as i64), Phys::Int8);
        self.value(&Value::Text(source_file), Phys::Text);
        index
    }

    /// Appends a row already encoded (`CopyPayload::row`).
    pub fn push_encoded(&mut self, row: &[u8], key: u128) {
        self.starts.push(self.buf.len());
        self.keys.push(key);
        self.buf.put_slice(row);
    }

    /// One field: its length (-1 for NULL), then its bytes in `phys`'s wire
    /// format. Values were validated for their column, so the pairs below
    /// are the only ones that occur.
    fn value(&mut self, v: &Value<'_>, phys: Phys) {
        let at = self.buf.len();
        self.buf.put_i32(0);
        match (v, phys) {
            (Value::Null, _) => {
                self.buf[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes());
                return;
            }
            (Value::Text(s), _) => self.buf.put_slice(s.as_bytes()),
            (Value::Uuid(u), Phys::Uuid) => self.buf.put_slice(u.as_bytes()),
            (Value::Uuid(u), _) => {
                let mut text = [0u8; 36];
                self.buf.put_slice(u.hyphenated().encode_lower(&mut text).as_bytes());
            }
            (Value::Int(n), Phys::Int2) => self.buf.put_i16(*n as i16),
            (Value::Int(n), Phys::Int4) => self.buf.put_i32(*n as i32),
            (Value::Int(n), Phys::Numeric) => {
                let text = n.to_string();
                put_numeric(&mut self.buf, &Decimal::parse(&text).expect("an integer's text is a number"));
            }
            (Value::Int(n), _) => self.buf.put_i64(*n),
            (Value::Decimal(d), _) => put_numeric(&mut self.buf, d),
            (Value::Bool(b), _) => self.buf.put_u8(u8::from(*b)),
            (Value::Timestamp(t), _) => {
                // Microseconds since 2000-01-01, truncated toward zero, as
                // tokio-postgres writes them.
                let base = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a date").and_time(Default::default());
                let micros = NaiveDateTime::signed_duration_since(t.naive_utc(), base)
                    .num_microseconds()
                    .expect("timestamps the parsers accept are within range");
                self.buf.put_i64(micros);
            }
            (Value::Date(d), _) => {
                let base = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a date");
                self.buf.put_i32((*d - base).num_days() as i32);
            }
        }
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The payload, with its trailer.
    pub fn finish(mut self) -> CopyPayload {
        self.buf.put_i16(-1);
        CopyPayload { bytes: self.buf.freeze(), starts: self.starts.into(), keys: self.keys.into(), order: None }
    }

    /// The payload, and the room left after it for the next one.
    pub fn finish_within(mut self) -> (CopyPayload, BytesMut) {
        self.buf.put_i16(-1);
        let rest = self.buf.split_off(self.buf.len());
        let payload =
            CopyPayload { bytes: self.buf.freeze(), starts: self.starts.into(), keys: self.keys.into(), order: None };
        (payload, rest)
    }
}

/// PostgreSQL's binary `numeric`: digit count, weight (of the first digit,
/// in base-10000 places), sign, display scale, then base-10000 digits.
/// Built from the decimal digits as written, so the scale shown is the one
/// written (`5.0` stays `5.0`) and any length is exact.
fn put_numeric(buf: &mut BytesMut, d: &Decimal<'_>) {
    // Base-10000 groups: the integer digits right-aligned, the fraction
    // left-aligned, each padded with zeros to whole groups.
    let int_groups = d.int.len().div_ceil(4);
    let frac_groups = d.frac.len().div_ceil(4);
    let mut groups: Vec<i16> = Vec::with_capacity(int_groups + frac_groups);
    let pad = int_groups * 4 - d.int.len();
    let digit = |b: u8| i16::from(b - b'0');
    let mut acc = 0i16;
    for (i, &b) in std::iter::repeat_n(&b'0', pad).chain(d.int).enumerate() {
        acc = acc * 10 + digit(b);
        if i % 4 == 3 {
            groups.push(acc);
            acc = 0;
        }
    }
    for (i, &b) in d.frac.iter().chain(std::iter::repeat_n(&b'0', frac_groups * 4 - d.frac.len())).enumerate() {
        acc = acc * 10 + digit(b);
        if i % 4 == 3 {
            groups.push(acc);
            acc = 0;
        }
    }
    let mut weight = int_groups as i32 - 1;
    let first = groups.iter().position(|&g| g != 0).unwrap_or(groups.len());
    weight -= first as i32;
    let last = groups.iter().rposition(|&g| g != 0).map_or(first, |i| i + 1);
    let digits = &groups[first..last];
    let zero = digits.is_empty();
    buf.put_i16(digits.len() as i16);
    buf.put_i16(if zero { 0 } else { weight as i16 });
    buf.put_u16(if d.negative && !zero { 0x4000 } else { 0 });
    buf.put_i16(d.frac.len() as i16);
    for &g in digits {
        buf.put_i16(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::schema;
    use crate::core::value::Value;

    /// A valid built-in row with event_id `id` and user `user`.
    fn event(id: u128, user: &str) -> Vec<Value<'_>> {
        vec![
            Value::Uuid(uuid::Uuid::from_u128(id)),
            Value::Text("view"),
            Value::Text(user),
            Value::Text("s"),
            Value::Text("p"),
            Value::Null,
            Value::Text("books"),
            Value::Decimal(Decimal::parse("19.99").unwrap()),
            Value::Int(2),
            Value::Timestamp(chrono::DateTime::UNIX_EPOCH),
            Value::Null,
            Value::Text("agent"),
        ]
    }

    fn read_all(mut m: Merged) -> Bytes {
        use bytes::Buf;
        m.copy_to_bytes(m.remaining())
    }

    fn encode(rows: &[(u128, &str, u64)]) -> CopyPayload {
        let mut enc = CopyEncoder::new(0);
        for (id, user, line) in rows {
            enc.push_row(schema(), &event(*id, user), *id, *line, "f.csv");
        }
        enc.finish()
    }

    /// Sorted parts merge into one sorted payload, byte for byte what
    /// encoding the rows in that order gives; equal keys keep part order.
    #[test]
    fn merge_keeps_key_order() {
        let a = encode(&[(1, "a", 1), (5, "a", 2), (9, "a", 3)]);
        let b = encode(&[(2, "b", 1), (5, "b", 2), (1 << 100, "b", 3)]);
        let c = encode(&[(3, "c", 1)]);
        let merged = CopyPayload::merge([&a, &CopyEncoder::new(0).finish(), &b, &c]);
        let want =
            encode(&[(1, "a", 1), (2, "b", 1), (3, "c", 1), (5, "a", 2), (5, "b", 2), (9, "a", 3), (1 << 100, "b", 3)]);
        assert_eq!(merged.rows(), 7);
        assert_eq!(read_all(merged), want.bytes);
        // One part, or none: the part itself, or an empty payload.
        assert_eq!(read_all(CopyPayload::merge([&a, &CopyEncoder::new(0).finish()])), a.bytes);
        assert_eq!(read_all(CopyPayload::merge([&CopyEncoder::new(0).finish()])), CopyEncoder::new(0).finish().bytes);
    }

    /// A payload that sends some of its stored rows, in another order,
    /// streams exactly those rows in that order, alone or merged.
    #[test]
    fn an_ordered_payload_sends_only_its_order() {
        let stored = encode(&[(5, "e", 1), (1, "a", 2), (3, "c", 3), (1, "dup", 4)]);
        let ordered = stored.clone().ordered(vec![1, 2, 0]);
        assert_eq!(ordered.rows(), 3);
        assert_eq!(read_all(ordered.stream()), encode(&[(1, "a", 2), (3, "c", 3), (5, "e", 1)]).bytes);
        let other = encode(&[(2, "b", 1), (4, "d", 2)]);
        let want = encode(&[(1, "a", 2), (2, "b", 1), (3, "c", 3), (4, "d", 2), (5, "e", 1)]);
        assert_eq!(read_all(CopyPayload::merge([&ordered, &other])), want.bytes);
        assert_eq!(ordered.slice(1..3).stream().rows(), 2);
        assert_eq!(read_all(stored.stream()), stored.bytes, "all rows as stored: the buffer as it is");
    }

    /// A merged stream read in uneven steps, as a socket writer does, gives
    /// the same bytes, and never shows an empty chunk before its end.
    #[test]
    fn merged_stream_reads_in_any_steps() {
        use bytes::Buf;
        let a = encode(&[(1, "a", 1), (5, "a", 2)]);
        let b = encode(&[(2, "b", 1), (7, "b", 2)]);
        let want = read_all(CopyPayload::merge([&a, &b]));
        for step in [1, 3, 7, 19, 64, 1000] {
            let mut m = CopyPayload::merge([&a, &b]);
            let mut got = Vec::new();
            while m.has_remaining() {
                assert!(!m.chunk().is_empty());
                let n = step.min(m.chunk().len());
                got.extend_from_slice(&m.chunk()[..n]);
                m.advance(n);
            }
            assert_eq!(got, want, "steps of {step}");
        }
    }

    /// The layout PostgreSQL expects: signature, flags, extension length,
    /// then per row a field count and length-prefixed fields (-1 = NULL),
    /// then -1.
    #[test]
    fn rows_are_framed_as_binary_copy_expects() {
        let mut e = event(7, "u");
        for i in [3, 5, 6, 7, 10, 11] {
            e[i] = Value::Null;
        }
        e[8] = Value::Int(1);
        let mut enc = CopyEncoder::new(0);
        enc.push_row(schema(), &e, 7, 2, "f.csv");
        let p = enc.finish();
        assert_eq!(p.rows(), 1);
        let b = &p.bytes[..];
        assert_eq!(&b[..HEADER.len()], HEADER);
        assert_eq!(&b[HEADER.len()..HEADER.len() + 2], &14i16.to_be_bytes());
        assert_eq!(&b[HEADER.len() + 2..HEADER.len() + 6], &16i32.to_be_bytes(), "uuid length");
        assert_eq!(&b[b.len() - 2..], &(-1i16).to_be_bytes());
        // uuid 16, "view" 4, "u" 1, "p" 1, quantity 4, timestamp 8, line 8,
        // "f.csv" 5; the six NULLs carry only their -1 length.
        assert_eq!(b.len(), HEADER.len() + 2 + 14 * 4 + 16 + 4 + 1 + 1 + 4 + 8 + 8 + 5 + 2);

        let mut two = CopyEncoder::new(0);
        two.push_row(schema(), &e, 7, 2, "f.csv");
        two.push_row(schema(), &e, 7, 2, "f.csv");
        let two = two.finish();
        assert_eq!(read_all(CopyPayload::merge([&p, &CopyEncoder::new(0).finish(), &p])), two.bytes);
        assert_eq!(CopyPayload::merge([&p, &p]).rows(), 2);
        assert_eq!(p.slice(0..1).bytes, p.bytes);
    }

    /// Numeric as PostgreSQL's `numeric_send` writes it: digits in base
    /// 10000, the weight of the first, the sign, the scale as written.
    #[test]
    #[rustfmt::skip]
    fn numerics_are_written_from_their_digits() {
        let numeric = |s: &str| {
            let mut buf = BytesMut::new();
            put_numeric(&mut buf, &Decimal::parse(s).unwrap());
            buf.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect::<Vec<i16>>()
        };
        // [ndigits, weight, sign, dscale, digits...]
        assert_eq!(numeric("0"), [0, 0, 0, 0]);
        assert_eq!(numeric("-0.00"), [0, 0, 0, 2]);
        assert_eq!(numeric("9.99"), [2, 0, 0, 2, 9, 9900]);
        assert_eq!(numeric("12345.6"), [3, 1, 0, 1, 1, 2345, 6000]);
        assert_eq!(numeric("-0.0012"), [1, -1, 0x4000, 4, 12]);
        assert_eq!(numeric("0.00000012"), [1, -2, 0, 8, 12]);
        assert_eq!(numeric("100000000"), [1, 2, 0, 0, 1]);
        assert_eq!(numeric("5.0"), [1, 0, 0, 1, 5]);
        assert_eq!(numeric("0010000.0001"), [3, 1, 0, 4, 1, 0, 1]);
    }
}
