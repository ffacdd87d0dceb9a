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
