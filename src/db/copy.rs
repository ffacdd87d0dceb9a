//! Binary COPY payloads, encoded off the database thread.
//!
//! The Validator encodes each valid event straight into PostgreSQL's binary
//! COPY format as it validates, using tokio-postgres' own `ToSql` encoders.
//! A batch then travels as one buffer of about the size of its rows, and
//! the Writer only streams it: no per-row work on the thread that drives
//! the database connections.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{ToSql, Type};

use crate::core::event::Event;

/// Binary COPY signature, flags and header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The column list both COPY targets take, in this order (`sql::COPY_*`).
pub const COLUMNS: usize = 14;

/// Builds one batch's COPY payload.
pub struct CopyEncoder {
    buf: BytesMut,
    starts: Vec<usize>,
}

/// A batch's encoded rows.
#[derive(Debug, Clone, Default)]
pub struct CopyPayload {
    /// Header, rows, trailer: ready for `COPY … FROM STDIN (FORMAT binary)`.
    pub bytes: Bytes,
    /// Where each row starts in `bytes` (for `merge`).
    starts: Arc<[usize]>,
}

impl CopyPayload {
    pub fn rows(&self) -> u64 {
        self.starts.len() as u64
    }

    /// Where row `i` starts and ends in `bytes`.
    fn row_bounds(&self, i: usize) -> (usize, usize) {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len() - 2);
        (self.starts[i], end)
    }

    /// The rows of several payloads as one, in event_id order. Each part is
    /// in event_id order already (the Validator sorts), so a group of small
    /// files' batches goes into the table in one sorted pass too: index
    /// inserts stay near each other, and two connections take shared ids in
    /// the same order (one waits instead of deadlocking). Rows with the same
    /// id keep the parts' order. Nothing is copied: the result reads the
    /// parts' rows where they are (a group's payload is megabytes, which a
    /// merged copy would fault in afresh for every transaction).
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a CopyPayload>) -> Merged {
        let parts: Vec<CopyPayload> = parts.into_iter().filter(|p| p.rows() > 0).cloned().collect();
        let order = match parts.len() {
            1 => None,
            _ => {
                // A row starts with its field count (2 bytes), then the
                // event_id's length (4) and its 16 bytes: big-endian, the
                // same order as `Uuid`'s.
                let mut keys: Vec<(u128, u32, u32)> = Vec::with_capacity(parts.iter().map(|p| p.starts.len()).sum());
                for (k, p) in parts.iter().enumerate() {
                    keys.extend(p.starts.iter().enumerate().map(|(i, &at)| {
                        let id = u128::from_be_bytes(p.bytes[at + 6..at + 22].try_into().expect("16 bytes"));
                        (id, k as u32, i as u32)
                    }));
                }
                // Stable, and quick on a few sorted runs: it merges them.
                keys.sort_by_key(|&(id, _, _)| id);
                Some(keys.into_iter().map(|(_, k, i)| (k, i)).collect())
            }
        };
        let remaining = match order {
            None => parts[0].bytes.len(),
            Some(_) => HEADER.len() + 2 + parts.iter().map(|p| p.bytes.len() - HEADER.len() - 2).sum::<usize>(),
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
    /// (part, row) in stream order (none for no part: header and trailer
    /// only); `None`: the one part as it is.
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
                    let part = &self.parts[k as usize];
                    let (a, b) = part.row_bounds(i as usize);
                    &part.bytes[a..b]
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
        CopyEncoder { buf, starts: Vec::new() }
    }

    /// Appends one row: the event, its line and its file.
    pub fn push(&mut self, e: &Event<'_>, line: u64, source_file: &str) {
        self.starts.push(self.buf.len());
        self.buf.put_i16(COLUMNS as i16);
        self.field(&e.event_id, &Type::UUID);
        self.field(&e.event_type, &Type::TEXT);
        self.field(&e.user_id, &Type::TEXT);
        self.field(&e.session_id, &Type::TEXT);
        self.field(&e.product_id, &Type::TEXT);
        self.field(&e.product_name, &Type::TEXT);
        self.field(&e.product_category, &Type::TEXT);
        self.field(&e.price, &Type::NUMERIC);
        self.field(&e.quantity, &Type::INT4);
        self.field(&e.event_timestamp, &Type::TIMESTAMPTZ);
        self.field(&e.device_type, &Type::TEXT);
        self.field(&e.user_agent, &Type::TEXT);
        self.field(&(line as i64), &Type::INT8);
        self.field(&source_file, &Type::TEXT);
    }

    fn field(&mut self, value: &(dyn ToSql + Sync), ty: &Type) {
        let at = self.buf.len();
        self.buf.put_i32(0);
        // The values are validated Rust values of the declared types: the
        // encoders cannot fail on them.
        match value.to_sql_checked(ty, &mut self.buf).expect("encoding a validated value") {
            tokio_postgres::types::IsNull::Yes => {
                self.buf[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes());
            }
            tokio_postgres::types::IsNull::No => {
                let len = (self.buf.len() - at - 4) as i32;
                self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
    }

    /// An encoder writing into `room` (empty), whose allocation the
    /// payload then shares with the others cut from it (`finish_within`):
    /// a hundred small files' payloads take one allocation, released when
    /// the last of them is, instead of a hundred scattered over the heap.
    pub fn within(mut room: BytesMut) -> Self {
        debug_assert!(room.is_empty());
        room.put_slice(HEADER);
        CopyEncoder { buf: room, starts: Vec::new() }
    }

    /// The payload, with its trailer.
    pub fn finish(mut self) -> CopyPayload {
        self.buf.put_i16(-1);
        CopyPayload { bytes: self.buf.freeze(), starts: self.starts.into() }
    }

    /// The payload, and the room left after it for the next one.
    pub fn finish_within(mut self) -> (CopyPayload, BytesMut) {
        self.buf.put_i16(-1);
        let rest = self.buf.split_off(self.buf.len());
        (CopyPayload { bytes: self.buf.freeze(), starts: self.starts.into() }, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Event;

    fn event(id: u128, user: &str) -> Event<'_> {
        Event {
            event_id: uuid::Uuid::from_u128(id),
            event_type: "view",
            user_id: user,
            session_id: Some("s"),
            product_id: "p",
            product_name: None,
            product_category: Some("books"),
            price: Some(rust_decimal::Decimal::new(1999, 2)),
            quantity: 2,
            event_timestamp: chrono::DateTime::UNIX_EPOCH,
            device_type: None,
            user_agent: Some("agent"),
        }
    }

    fn read_all(mut m: Merged) -> Bytes {
        use bytes::Buf;
        m.copy_to_bytes(m.remaining())
    }

    fn encode(rows: &[(u128, &str, u64)]) -> CopyPayload {
        let mut enc = CopyEncoder::new(0);
        for (id, user, line) in rows {
            enc.push(&event(*id, user), *line, "f.csv");
        }
        enc.finish()
    }

    /// Sorted parts merge into one sorted payload, byte for byte what
    /// encoding the rows in that order gives; equal ids keep part order.
    #[test]
    fn merge_keeps_event_id_order() {
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
        let e = Event {
            event_id: uuid::Uuid::from_u128(7),
            event_type: "view",
            user_id: "u",
            session_id: None,
            product_id: "p",
            product_name: None,
            product_category: None,
            price: None,
            quantity: 1,
            event_timestamp: chrono::DateTime::UNIX_EPOCH,
            device_type: None,
            user_agent: None,
        };
        let mut enc = CopyEncoder::new(0);
        enc.push(&e, 2, "f.csv");
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
        two.push(&e, 2, "f.csv");
        two.push(&e, 2, "f.csv");
        let two = two.finish();
        assert_eq!(read_all(CopyPayload::merge([&p, &CopyEncoder::new(0).finish(), &p])), two.bytes);
        assert_eq!(CopyPayload::merge([&p, &p]).rows(), 2);
    }
}
