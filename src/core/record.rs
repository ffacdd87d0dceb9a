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
/// A record with no quote in it (most) keeps only its raw text: its fields
/// are the raw text between commas, so they are read there, and a batch
/// of such records costs its text once, not twice. A record with quotes
/// keeps its unescaped fields too.
///
/// Offsets are `u32`: the Parser ends a batch long before its buffers reach
/// 4 GiB (`pipeline.batch_bytes` and `max_record_bytes` are capped far below).
#[derive(Debug, Default)]
pub struct RecordBatch {
    raw: Vec<u8>,
    data: Vec<u8>,
    /// Each field's end, relative to its record's fields (raw text or
    /// unescaped data).
    bounds: Vec<u32>,
    metas: Vec<Meta>,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    line: u64,
    raw_end: u32,
    data_end: u32,
    bounds_end: u32,
    /// The fields are read in the raw text (no quote in the record).
    in_raw: bool,
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
    /// The bytes the fields are in: `raw` (fields between commas) or the
    /// record's unescaped data (fields one after another).
    fields: &'a [u8],
    in_raw: bool,
    /// Field ends, relative to `fields`.
    bounds: &'a [u32],
}

impl RecordBatch {
    /// Room for `rows` records and `text` bytes of raw text (the unescaped
    /// fields of quoted records take some more, as they come).
    pub fn with_capacity(rows: usize, text: usize) -> Self {
        RecordBatch {
            raw: Vec::with_capacity(text),
            data: Vec::new(),
            bounds: Vec::new(),
            metas: Vec::with_capacity(rows),
        }
    }

    /// Appends a copy of `rec`.
    pub fn push(&mut self, rec: &RawRecord) {
        self.raw.extend_from_slice(&rec.raw);
        // Without a quote, unescaping changed nothing: the fields are the
        // raw text between commas (the record's raw text is whole and has
        // no line terminator in it).
        let in_raw = rec.error.is_none() && !rec.raw_truncated && !rec.raw.contains(&b'"');
        if in_raw {
            self.bounds.extend(rec.bounds.iter().enumerate().map(|(i, &b)| (b + i) as u32));
            debug_assert_eq!(rec.fields().collect::<Vec<_>>().join(&b',').as_slice(), &rec.raw[..]);
        } else {
            self.data.extend_from_slice(&rec.data);
            self.bounds.extend(rec.bounds.iter().map(|&b| b as u32));
        }
        self.metas.push(Meta {
            line: rec.line,
            raw_end: self.raw.len() as u32,
            data_end: self.data.len() as u32,
            bounds_end: self.bounds.len() as u32,
            in_raw,
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

    /// Bytes held by the record contents (raw, and unescaped where kept).
    pub fn bytes(&self) -> usize {
        self.raw.len() + self.data.len()
    }

    pub fn get(&self, i: usize) -> RecordView<'_> {
        let m = self.metas[i];
        let (raw_start, data_start, bounds_start) = match i {
            0 => (0, 0, 0),
            _ => {
                let p = self.metas[i - 1];
                (p.raw_end, p.data_end, p.bounds_end)
            }
        };
        let raw = &self.raw[raw_start as usize..m.raw_end as usize];
        RecordView {
            line: m.line,
            raw,
            raw_truncated: m.raw_truncated,
            error: m.error,
            fields: if m.in_raw { raw } else { &self.data[data_start as usize..m.data_end as usize] },
            in_raw: m.in_raw,
            bounds: &self.bounds[bounds_start as usize..m.bounds_end as usize],
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
        // In the raw text each field after the first starts past a comma.
        let start = match i {
            0 => 0,
            _ => self.bounds[i - 1] as usize + usize::from(self.in_raw),
        };
        &self.fields[start..self.bounds[i] as usize]
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
            rec(7, ",,", &["", "", ""], None),
            rec(8, " a , b ,c", &[" a ", " b ", "c"], None),
            rec(9, "\"\"\"q\"\"\",z", &["\"q\"", "z"], None),
            rec(10, "x\0y,\u{e9}", &["x\0y", "\u{e9}"], None),
        ];
        let mut batch = RecordBatch::with_capacity(4, 0);
        for r in &records {
            batch.push(r);
        }
        assert_eq!(batch.len(), records.len());
        // Only the records with quotes keep their unescaped fields.
        assert_eq!(batch.data.len(), "c,de".len() + "\"q\"z".len());
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
