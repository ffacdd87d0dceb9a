//! Binary COPY payloads, encoded off the database thread.
//!
//! The Validator encodes each valid event straight into PostgreSQL's binary
//! COPY format as it validates, using tokio-postgres' own `ToSql` encoders.
//! A batch then travels as one buffer of about the size of its rows, and
//! the Writer only streams it: no per-row work on the thread that drives
//! the database connections.

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
    rows: u64,
}

/// A batch's encoded rows.
#[derive(Debug, Clone, Default)]
pub struct CopyPayload {
    /// Header, rows, trailer: ready for `COPY … FROM STDIN (FORMAT binary)`.
    pub bytes: Bytes,
    rows: u64,
}

impl CopyPayload {
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// One payload holding the rows of several (no copy when only one has
    /// rows).
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a CopyPayload>) -> CopyPayload {
        let parts: Vec<&CopyPayload> = parts.into_iter().filter(|p| p.rows > 0).collect();
        match parts[..] {
            [] => CopyEncoder::new(0).finish(),
            [one] => one.clone(),
            _ => {
                let len = parts.iter().map(|p| p.bytes.len()).sum::<usize>();
                let mut buf = BytesMut::with_capacity(len);
                buf.put_slice(HEADER);
                for p in &parts {
                    buf.put_slice(&p.bytes[HEADER.len()..p.bytes.len() - 2]);
                }
                buf.put_i16(-1);
                CopyPayload { bytes: buf.freeze(), rows: parts.iter().map(|p| p.rows).sum() }
            }
        }
    }
}

impl CopyEncoder {
    pub fn new(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER.len() + 2));
        buf.put_slice(HEADER);
        CopyEncoder { buf, rows: 0 }
    }

    /// Appends one row: the event, its line and its file.
    pub fn push(&mut self, e: &Event<'_>, line: u64, source_file: &str) {
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
        self.rows += 1;
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
        CopyPayload { bytes: self.buf.freeze(), rows: self.rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::Event;

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
        assert_eq!(CopyPayload::concat([&p, &CopyEncoder::new(0).finish(), &p]).bytes, two.bytes);
        assert_eq!(CopyPayload::concat([&p, &p]).rows(), 2);
    }
}
