//! One CSV record as the reader hands it over: where it starts, its raw
//! bytes (for the reject table) and its unescaped fields.

/// Why the reader could not split a record into fields cleanly. Any of these
/// makes the row `malformed_csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A `"` inside an unquoted field (this includes a space before an
    /// opening quote).
    StrayQuote,
    /// Text after the closing quote of a quoted field, before the separator.
    TextAfterQuote,
    /// A quoted field still open at the end of the file.
    UnclosedQuote,
    /// The record's raw bytes exceed `pipeline.max_record_bytes`.
    TooLong,
}

impl Malformed {
    pub fn detail(self) -> &'static str {
        match self {
            Malformed::StrayQuote => "quote inside an unquoted field",
            Malformed::TextAfterQuote => "text after a closing quote",
            Malformed::UnclosedQuote => "quoted field never closed",
            Malformed::TooLong => "record longer than max_record_bytes",
        }
    }
}

/// A record read by [`crate::core::reader::RecordReader`]. Reused across
/// reads so the hot loop does not allocate per row.
#[derive(Debug, Default, Clone)]
pub struct RawRecord {
    /// 1-based physical line on which the record starts.
    pub line: u64,
    /// Byte offset of the record's first byte in the (decompressed) stream.
    pub start: u64,
    /// Byte offset just past the record's terminator (or end of stream).
    pub end: u64,
    /// The record's raw bytes without its final line terminator, cut at
    /// `max_record_bytes`.
    pub raw: Vec<u8>,
    /// `raw` was cut at `max_record_bytes`.
    pub raw_truncated: bool,
    /// Unescaped bytes of all fields, one after another (not kept when the
    /// record is malformed).
    pub data: Vec<u8>,
    /// End offset in `data` of each field.
    pub bounds: Vec<usize>,
    /// Set when the record could not be split cleanly.
    pub error: Option<Malformed>,
}

impl RawRecord {
    pub fn clear(&mut self) {
        self.line = 0;
        self.start = 0;
        self.end = 0;
        self.raw.clear();
        self.raw_truncated = false;
        self.data.clear();
        self.bounds.clear();
        self.error = None;
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The unescaped bytes of field `i`. Panics if `i >= len()`.
    pub fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.bounds[i - 1] };
        &self.data[start..self.bounds[i]]
    }

    pub fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(move |i| self.field(i))
    }
}

/// What the validator needs of a record, whether it sits alone in a
/// [`RawRecord`] or inside a [`RecordBatch`]. Fields live as long as `'a`,
/// so a validated event can borrow them.
pub trait Fields<'a> {
    fn malformed(&self) -> Option<Malformed>;
    fn field_count(&self) -> usize;
    fn field_bytes(&self, i: usize) -> &'a [u8];
}

impl<'a> Fields<'a> for &'a RawRecord {
    fn malformed(&self) -> Option<Malformed> {
        self.error
    }
    fn field_count(&self) -> usize {
        self.len()
    }
    fn field_bytes(&self, i: usize) -> &'a [u8] {
        self.field(i)
    }
}

/// Many records in a few flat buffers: a batch costs a handful of
/// allocations, not three per row, and its size in bytes is known.
///
/// Offsets are `u32`: the Parser ends a batch long before its buffers reach
/// 4 GiB (`pipeline.batch_bytes` and `max_record_bytes` are capped far below).
#[derive(Debug, Default)]
pub struct RecordBatch {
    raw: Vec<u8>,
    data: Vec<u8>,
    bounds: Vec<u32>,
    metas: Vec<Meta>,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    line: u64,
    raw_end: u32,
    bounds_end: u32,
    error: Option<Malformed>,
    raw_truncated: bool,
}

/// One record of a [`RecordBatch`].
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub line: u64,
    pub raw: &'a [u8],
    pub raw_truncated: bool,
    pub error: Option<Malformed>,
    data: &'a [u8],
    /// Field ends (absolute offsets into `data`), and where field 0 starts.
    bounds: &'a [u32],
    data_start: u32,
}

impl RecordBatch {
    /// Room for `rows` records and `text` bytes of raw text (the unescaped
    /// fields take no more than their raw text).
    pub fn with_capacity(rows: usize, text: usize) -> Self {
        RecordBatch {
            raw: Vec::with_capacity(text),
            data: Vec::with_capacity(text),
            bounds: Vec::new(),
            metas: Vec::with_capacity(rows),
        }
    }

    /// Appends a copy of `rec`.
    pub fn push(&mut self, rec: &RawRecord) {
        self.raw.extend_from_slice(&rec.raw);
        let base = self.data.len();
        self.data.extend_from_slice(&rec.data);
        self.bounds.extend(rec.bounds.iter().map(|&b| (base + b) as u32));
        self.metas.push(Meta {
            line: rec.line,
            raw_end: self.raw.len() as u32,
            bounds_end: self.bounds.len() as u32,
            error: rec.error,
            raw_truncated: rec.raw_truncated,
        });
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Bytes held by the record contents (raw and unescaped).
    pub fn bytes(&self) -> usize {
        self.raw.len() + self.data.len()
    }

    pub fn get(&self, i: usize) -> RecordView<'_> {
        let m = self.metas[i];
        let (raw_start, bounds_start) = match i {
            0 => (0, 0),
            _ => (self.metas[i - 1].raw_end, self.metas[i - 1].bounds_end),
        };
        let bounds = &self.bounds[bounds_start as usize..m.bounds_end as usize];
        // Field 0 starts where the previous record's last field ended.
        let data_start = if bounds_start == 0 { 0 } else { self.bounds[bounds_start as usize - 1] };
        RecordView {
            line: m.line,
            raw: &self.raw[raw_start as usize..m.raw_end as usize],
            raw_truncated: m.raw_truncated,
            error: m.error,
            data: &self.data,
            bounds,
            data_start,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = RecordView<'_>> {
        (0..self.len()).map(move |i| self.get(i))
    }
}

impl<'a> Fields<'a> for RecordView<'a> {
    fn malformed(&self) -> Option<Malformed> {
        self.error
    }
    fn field_count(&self) -> usize {
        self.bounds.len()
    }
    fn field_bytes(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { self.data_start } else { self.bounds[i - 1] };
        &self.data[start as usize..self.bounds[i] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: u64, raw: &str, fields: &[&str], error: Option<Malformed>) -> RawRecord {
        let mut r = RawRecord { line, raw: raw.as_bytes().to_vec(), error, ..Default::default() };
        for f in fields {
            r.data.extend_from_slice(f.as_bytes());
            r.bounds.push(r.data.len());
        }
        r
    }

    #[test]
    fn a_batch_gives_back_what_was_pushed() {
        let records = [
            rec(2, "a,b", &["a", "b"], None),
            rec(3, "", &[""], None),
            rec(5, "x\"y", &[], Some(Malformed::StrayQuote)),
            rec(6, "\"c,d\",,e", &["c,d", "", "e"], None),
        ];
        let mut batch = RecordBatch::with_capacity(4, 0);
        for r in &records {
            batch.push(r);
        }
        assert_eq!(batch.len(), 4);
        for (i, r) in records.iter().enumerate() {
            let v = batch.get(i);
            assert_eq!((v.line, v.raw, v.error), (r.line, &r.raw[..], r.error));
            assert_eq!(v.field_count(), r.len());
            for f in 0..r.len() {
                assert_eq!(v.field_bytes(f), r.field(f), "record {i} field {f}");
            }
        }
    }
}
