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

    /// The rows, each as one slice.
    fn row_slices(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self.starts.iter().skip(1).copied().chain(std::iter::once(self.bytes.len() - 2));
        self.starts.iter().zip(ends).map(|(&a, b)| &self.bytes[a..b])
    }

    /// One payload holding the rows of several, in event_id order (no copy
    /// when only one has rows). Each part is in event_id order already (the
    /// Validator sorts), so a group of small files' batches goes into the
    /// table in one sorted pass too: index inserts stay near each other,
    /// and two connections take shared ids in the same order (one waits
    /// instead of deadlocking). Rows with the same id keep the parts' order.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a CopyPayload>) -> CopyPayload {
        let parts: Vec<&CopyPayload> = parts.into_iter().filter(|p| p.rows() > 0).collect();
        match parts[..] {
            [] => CopyEncoder::new(0).finish(),
            [one] => one.clone(),
            _ => {
                // A row starts with its field count (2 bytes), then the
                // event_id's length (4) and its 16 bytes: big-endian, the
                // same order as `Uuid`'s.
                let mut rows: Vec<(u128, &[u8])> = Vec::with_capacity(parts.iter().map(|p| p.starts.len()).sum());
                for p in &parts {
                    rows.extend(
                        p.row_slices().map(|row| (u128::from_be_bytes(row[6..22].try_into().expect("16 bytes")), row)),
                    );
                }
                // Stable, and quick on a few sorted runs: it merges them.
                rows.sort_by_key(|&(id, _)| id);
                let mut enc = CopyEncoder::new(parts.iter().map(|p| p.bytes.len()).sum());
                enc.starts.reserve_exact(rows.len());
                for (_, row) in &rows {
                    enc.starts.push(enc.buf.len());
                    enc.buf.put_slice(row);
                }
                enc.finish()
            }
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

    /// The payload, with its trailer.
    pub fn finish(mut self) -> CopyPayload {
        self.buf.put_i16(-1);
        CopyPayload { bytes: self.buf.freeze(), starts: self.starts.into() }
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
        assert_eq!(merged.bytes, want.bytes);
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
        assert_eq!(CopyPayload::merge([&p, &CopyEncoder::new(0).finish(), &p]).bytes, two.bytes);
        assert_eq!(CopyPayload::merge([&p, &p]).rows(), 2);
    }
}
