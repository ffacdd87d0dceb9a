//! Strict, streaming RFC 4180 record reader: splits a byte stream into
//! [`RawRecord`]s, one at a time, reusing the caller's record.
//!
//! Grammar: separator `,`, quote `"`, `""` inside a quoted field is one `"`.
//! A line ends with `\n`, `\r\n` or a lone `\r`; outside quotes a line end
//! ends the record, inside quotes it is field data (and still counts as a
//! line). A completely empty line is not a record ([`RecordReader::read_record`]
//! skips it); a line of only spaces is one (a single field of spaces).
//!
//! Invariants:
//! - **Only I/O failures are `Err`.** Bad quoting and oversized records come
//!   back as records with [`RawRecord::error`] set; reading goes on with the
//!   next record.
//! - **Record boundaries never depend on `max_record_bytes`.** An oversized
//!   record is still parsed quote-aware to its real end; the cap only decides
//!   what is stored and whether the record is [`Malformed::TooLong`].
//! - **Memory is O(`max_record_bytes`)** whatever the record size: bytes past
//!   the cap are scanned, never stored.
//! - **Resumable.** A reader built with a previous reader's
//!   [`offset`](RecordReader::offset) and [`line`](RecordReader::line), on the
//!   stream positioned at that offset, returns exactly the records (lines,
//!   offsets, bytes) the previous reader would have returned next. That is why
//!   a record ending in `\r` is returned only after the next byte was looked
//!   at: if it is `\n`, it belongs to that record's line end.
//! - **An `Err` is final.** It may strike mid-record, so every later call
//!   fails too; reopen the stream at [`offset`](RecordReader::offset).
//! - **No allocation per record** once the reused [`RawRecord`]'s buffers are
//!   warm.
//! - **No UTF-8 or NUL checks here**: bytes pass through; the validator judges
//!   fields.
//!
//! Malformed records (the record is still delimited, see [`Malformed`]):
//! - `StrayQuote`: a `"` inside an unquoted field, including after leading
//!   spaces (`a, "b"`).
//! - `TextAfterQuote`: a byte other than `"`, `,` or a line end right after a
//!   closing quote (`"abc"def`, `"abc" ,x`).
//!
//!   After either of these the record runs to the next line end and further
//!   quotes are plain bytes, so a bad quote never swallows lines.
//! - `UnclosedQuote`: a quoted field still open at end of stream; the whole
//!   rest of the stream (trailing line ends included: they are inside the
//!   quote) is that one record, at the line where it starts.
//! - `TooLong`: the record's raw bytes (final line end excluded) exceed
//!   `max_record_bytes`. `raw` keeps the first `max_record_bytes` bytes and
//!   `raw_truncated` is set.
//!
//! A record with several problems reports the **first one met while
//! scanning**; `TooLong` is met on the byte that crosses the cap. So
//! `a"b` + 2 MiB is `StrayQuote`, 2 MiB + `a"b` is `TooLong`, and an
//! unclosed quote is `UnclosedQuote` only if the rest of the stream fits
//! under the cap (end of stream comes after the crossing). When `error` is
//! set, `data` and `bounds` are left empty: callers use `error` and `raw`.
//!
//! A UTF-8 BOM is skipped only at stream offset 0; offsets still count it
//! (the header of a file with a BOM starts at 3).

use std::io::{self, BufRead};

use crate::core::record::{Malformed, RawRecord};

const SEP: u8 = b',';
const QUOTE: u8 = b'"';
const BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

const fn stop_table(stops: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < stops.len() {
        table[stops[i] as usize] = true;
        i += 1;
    }
    table
}

/// Bytes that end a run of plain bytes in an unquoted field.
static UNQUOTED_STOPS: [bool; 256] = stop_table(&[SEP, QUOTE, b'\r', b'\n']);
/// Bytes that end a run of plain bytes in a quoted field.
static QUOTED_STOPS: [bool; 256] = stop_table(&[QUOTE, b'\r', b'\n']);

/// Reads [`RawRecord`]s from a buffered byte stream, working on `fill_buf`
/// slices (never byte-by-byte reads).
pub struct RecordReader<R: BufRead> {
    src: Source<R>,
    scan: Scanner,
    /// Stream offset of the next byte `src` hands out.
    next_offset: u64,
    /// Line of the next byte `src` hands out.
    next_line: u64,
    /// Just past the last record returned: the checkpoint, which excludes
    /// blank lines skipped after it (re-skipping them on resume is harmless).
    done_offset: u64,
    done_line: u64,
    /// The stream starts at offset 0 and its first bytes are not yet checked
    /// for a BOM.
    bom_pending: bool,
    /// An I/O error struck mid-record: the position is no longer a record
    /// boundary, so every later call fails rather than return a half record.
    failed: bool,
}

impl<R: BufRead> RecordReader<R> {
    /// `offset`/`line`: where `inner` starts in the whole stream (0 and 1 for
    /// a fresh file; a checkpoint's offset and line on resume). A UTF-8 BOM is
    /// skipped only when `offset == 0`.
    pub fn new(inner: R, offset: u64, line: u64, max_record_bytes: usize) -> Self {
        RecordReader {
            src: Source { inner, stash: &[] },
            scan: Scanner::new(max_record_bytes),
            next_offset: offset,
            next_line: line,
            done_offset: offset,
            done_line: line,
            bom_pending: offset == 0,
            failed: false,
        }
    }

    /// Reads the header: the first record even when its line is blank (a
    /// blank first line gives one empty field). `Ok(false)` only if the
    /// stream is empty (or holds only a BOM). Called later, it reads the next
    /// record without skipping blank lines.
    pub fn read_header(&mut self, rec: &mut RawRecord) -> io::Result<bool> {
        self.guarded(rec, false)
    }

    /// Reads the next data record, skipping completely empty lines (they are
    /// not records, but they count in line numbers). `Ok(false)` at end of
    /// stream.
    pub fn read_record(&mut self, rec: &mut RawRecord) -> io::Result<bool> {
        self.guarded(rec, true)
    }

    /// Whether the stream has no bytes left after the last record (blank
    /// lines left count as bytes). An I/O error here answers `false`: the
    /// next read meets it again and reports it.
    pub fn at_end(&mut self) -> bool {
        !self.failed && !self.bom_pending && matches!(self.src.chunk(), Ok([]))
    }

    /// Byte offset just past the last record returned (= where to resume).
    pub fn offset(&self) -> u64 {
        self.done_offset
    }

    /// Line number on which reading would continue from [`offset`](Self::offset).
    pub fn line(&self) -> u64 {
        self.done_line
    }

    fn guarded(&mut self, rec: &mut RawRecord, skip_empty: bool) -> io::Result<bool> {
        if self.failed {
            return Err(io::Error::other("csv record reader used after an i/o error; resume from its offset()"));
        }
        let result = self.next(rec, skip_empty);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn next(&mut self, rec: &mut RawRecord, skip_empty: bool) -> io::Result<bool> {
        if self.bom_pending {
            self.bom_pending = false;
            self.skip_bom()?;
        }
        // Find the record's first byte, skipping empty lines if asked to.
        loop {
            let buf = self.src.chunk()?;
            let Some(&first) = buf.first() else {
                return Ok(false);
            };
            if !skip_empty || (first != b'\n' && first != b'\r') {
                break;
            }
            self.src.consume(1);
            self.next_offset += 1;
            self.next_line += 1;
            if first == b'\r' {
                self.eat_lf()?;
            }
        }

        rec.clear();
        rec.line = self.next_line;
        rec.start = self.next_offset;
        self.scan.begin();
        loop {
            let buf = self.src.chunk()?;
            let len = buf.len();
            if len == 0 {
                self.scan.finish(rec);
                break;
            }
            match self.scan.feed(buf, rec) {
                Step::More => {
                    self.src.consume(len);
                    self.next_offset += len as u64;
                }
                Step::End { used, cr } => {
                    self.src.consume(used);
                    self.next_offset += used as u64;
                    self.next_line += 1;
                    if cr {
                        self.eat_lf()?;
                    }
                    break;
                }
            }
        }
        self.next_line += self.scan.quoted_line_ends;
        rec.end = self.next_offset;
        self.done_offset = self.next_offset;
        self.done_line = self.next_line;
        Ok(true)
    }

    /// After a `\r` line end: takes the `\n` of a `\r\n`, even when it is the
    /// first byte of the next chunk.
    fn eat_lf(&mut self) -> io::Result<()> {
        if self.src.chunk()?.first() == Some(&b'\n') {
            self.src.consume(1);
            self.next_offset += 1;
        }
        Ok(())
    }

    /// Skips a BOM at the start of the stream. The BOM may straddle chunks,
    /// so matched bytes are consumed as we go and, if the match fails, handed
    /// back through `src.stash` (they are always a prefix of the BOM).
    fn skip_bom(&mut self) -> io::Result<()> {
        let mut matched = 0;
        while matched < BOM.len() {
            let buf = self.src.chunk()?;
            if buf.is_empty() {
                break;
            }
            let take = buf.len().min(BOM.len() - matched);
            if buf[..take] != BOM[matched..matched + take] {
                break;
            }
            self.src.consume(take);
            matched += take;
        }
        if matched == BOM.len() {
            self.next_offset += BOM.len() as u64;
        } else {
            self.src.stash = &BOM[..matched];
        }
        Ok(())
    }
}

/// The byte source: `inner`, preceded by bytes handed back after a failed
/// BOM match.
struct Source<R> {
    inner: R,
    /// Bytes already taken from `inner` that come before its current buffer.
    stash: &'static [u8],
}

impl<R: BufRead> Source<R> {
    /// The next bytes of the stream; empty at end of stream.
    fn chunk(&mut self) -> io::Result<&[u8]> {
        if !self.stash.is_empty() {
            return Ok(self.stash);
        }
        // Retry interrupted reads like std's `read_until`. A non-empty buffer
        // is fetched again after the loop because a borrow returned from
        // inside a loop does not pass today's borrow checker; by the
        // `fill_buf` contract that second call does no I/O.
        loop {
            match self.inner.fill_buf() {
                Ok([]) => return Ok(&[]),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.fill_buf()
    }

    /// Marks `n` bytes of the last [`chunk`](Self::chunk) as read.
    fn consume(&mut self, n: usize) {
        if self.stash.is_empty() {
            self.inner.consume(n);
        } else {
            self.stash = &self.stash[n..];
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field: a `"` opens a quoted field.
    FieldStart,
    Unquoted,
    Quoted,
    /// Just after a `"` in a quoted field: `""` or the closing quote.
    QuoteSeen,
    /// After a quoting problem: runs to the next line end, quotes are bytes.
    Rest,
}

/// What [`Scanner::feed`] did with a chunk.
enum Step {
    /// Every byte belongs to the record, which goes on in the next chunk.
    More,
    /// The record ended on a line end at `used - 1`; `cr` if it was a `\r`
    /// (whose `\n`, if any, is not yet seen).
    End { used: usize, cr: bool },
}

/// The sans-IO state machine for one record at a time; state survives
/// across chunks so any chunking gives the same records.
struct Scanner {
    max: usize,
    state: State,
    /// Raw bytes of the current record in previous chunks (all counted,
    /// stored or not).
    raw_len: u64,
    /// Line ends inside quotes in the current record.
    quoted_line_ends: u64,
    /// The previous chunk of this record ended with `\r`: a `\n` at the start
    /// of this one completes a quoted `\r\n` (one line end, not two).
    prev_cr: bool,
    /// Still filling `data`/`bounds`: false once the record is malformed or
    /// past the cap, so they stay bounded and are dropped at the end.
    storing: bool,
}

impl Scanner {
    fn new(max: usize) -> Self {
        Scanner { max, state: State::FieldStart, raw_len: 0, quoted_line_ends: 0, prev_cr: false, storing: true }
    }

    fn begin(&mut self) {
        self.state = State::FieldStart;
        self.raw_len = 0;
        self.quoted_line_ends = 0;
        self.prev_cr = false;
        self.storing = true;
    }

    /// Scans `buf` (the stream from the record's current position) until the
    /// record ends or `buf` does.
    fn feed(&mut self, buf: &[u8], rec: &mut RawRecord) -> Step {
        let n = buf.len();
        let mut i = 0;
        loop {
            match self.state {
                State::FieldStart => {
                    if i == n {
                        break;
                    }
                    if buf[i] == QUOTE {
                        i += 1;
                        self.state = State::Quoted;
                    } else {
                        self.state = State::Unquoted;
                    }
                }
                State::Unquoted => {
                    let run = buf[i..].iter().position(|&b| UNQUOTED_STOPS[b as usize]).unwrap_or(n - i);
                    self.push_data(rec, &buf[i..i + run]);
                    i += run;
                    if i == n {
                        break;
                    }
                    match buf[i] {
                        SEP => {
                            i += 1;
                            self.end_field(rec, i);
                            self.state = State::FieldStart;
                        }
                        QUOTE => {
                            i += 1;
                            self.problem(rec, Malformed::StrayQuote, i);
                            self.state = State::Rest;
                        }
                        _ => {
                            self.end_field(rec, i);
                            return self.end(buf, i, rec);
                        }
                    }
                }
                State::Quoted => {
                    let start = i;
                    while i < n {
                        let b = buf[i];
                        if QUOTED_STOPS[b as usize] {
                            if b == QUOTE {
                                break;
                            }
                            let after_cr = if i > 0 { buf[i - 1] == b'\r' } else { self.prev_cr };
                            if b == b'\r' || !after_cr {
                                self.quoted_line_ends += 1;
                            }
                        }
                        i += 1;
                    }
                    self.push_data(rec, &buf[start..i]);
                    if i == n {
                        break;
                    }
                    i += 1;
                    self.state = State::QuoteSeen;
                }
                State::QuoteSeen => {
                    if i == n {
                        break;
                    }
                    match buf[i] {
                        QUOTE => {
                            self.push_data(rec, b"\"");
                            i += 1;
                            self.state = State::Quoted;
                        }
                        SEP => {
                            i += 1;
                            self.end_field(rec, i);
                            self.state = State::FieldStart;
                        }
                        b'\r' | b'\n' => {
                            self.end_field(rec, i);
                            return self.end(buf, i, rec);
                        }
                        _ => {
                            i += 1;
                            self.problem(rec, Malformed::TextAfterQuote, i);
                            self.state = State::Rest;
                        }
                    }
                }
                State::Rest => match buf[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                    Some(run) => return self.end(buf, i + run, rec),
                    None => break,
                },
            }
        }
        self.push_raw(rec, buf);
        self.prev_cr = buf.last() == Some(&b'\r');
        Step::More
    }

    /// End of stream inside the record (it has at least one byte).
    fn finish(&mut self, rec: &mut RawRecord) {
        match self.state {
            State::Quoted => self.problem(rec, Malformed::UnclosedQuote, 0),
            State::Rest => {}
            // FieldStart here means a trailing separator: an empty last field.
            State::FieldStart | State::Unquoted | State::QuoteSeen => self.end_field(rec, 0),
        }
        Self::drop_fields_if_malformed(rec);
    }

    /// The record ends on the line end at `buf[at]`.
    fn end(&mut self, buf: &[u8], at: usize, rec: &mut RawRecord) -> Step {
        self.push_raw(rec, &buf[..at]);
        Self::drop_fields_if_malformed(rec);
        Step::End { used: at + 1, cr: buf[at] == b'\r' }
    }

    fn drop_fields_if_malformed(rec: &mut RawRecord) {
        if rec.error.is_some() {
            rec.data.clear();
            rec.bounds.clear();
        }
    }

    /// Is the record longer than the cap once the first `upto` bytes of the
    /// current chunk are counted?
    fn over_cap(&self, upto: usize) -> bool {
        self.raw_len + upto as u64 > self.max as u64
    }

    /// A quoting problem whose byte is the last of the first `upto` bytes of
    /// the current chunk. If the cap was crossed first, that is the problem.
    fn problem(&mut self, rec: &mut RawRecord, kind: Malformed, upto: usize) {
        if rec.error.is_none() {
            rec.error = Some(if self.over_cap(upto) { Malformed::TooLong } else { kind });
        }
        self.storing = false;
    }

    /// Closes the current field, which ends within the first `upto` bytes of
    /// the current chunk.
    fn end_field(&mut self, rec: &mut RawRecord, upto: usize) {
        if self.storing {
            if self.over_cap(upto) {
                // Caps `bounds` too: a huge record of separators stores no data.
                self.storing = false;
            } else {
                rec.bounds.push(rec.data.len());
            }
        }
    }

    fn push_data(&mut self, rec: &mut RawRecord, bytes: &[u8]) {
        if self.storing {
            // `data` never outgrows the raw bytes, so going past the cap here
            // means the record is `TooLong` (or already malformed).
            if rec.data.len() + bytes.len() <= self.max {
                rec.data.extend_from_slice(bytes);
            } else {
                self.storing = false;
            }
        }
    }

    /// Counts `bytes` (all of the record's bytes in this chunk, line end
    /// excluded) and stores what fits under the cap.
    fn push_raw(&mut self, rec: &mut RawRecord, bytes: &[u8]) {
        let room = self.max.saturating_sub(rec.raw.len());
        let keep = room.min(bytes.len());
        rec.raw.extend_from_slice(&bytes[..keep]);
        if keep < bytes.len() {
            rec.raw_truncated = true;
        }
        self.raw_len += bytes.len() as u64;
        if self.raw_len > self.max as u64 {
            // No earlier problem in these bytes (it would have set `error`):
            // crossing the cap is the first one.
            if rec.error.is_none() {
                rec.error = Some(Malformed::TooLong);
            }
            self.storing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, BufRead, BufReader, Cursor, Read};

    use super::*;

    const CAP: usize = 1 << 20;

    /// A `BufRead` handing out at most `size` bytes per `fill_buf`, so chunk
    /// boundaries fall everywhere (`size == 1`: between every two bytes).
    struct Chunked<'a> {
        data: &'a [u8],
        pos: usize,
        size: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = {
                let buf = self.fill_buf()?;
                let n = buf.len().min(out.len());
                out[..n].copy_from_slice(&buf[..n]);
                n
            };
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Chunked<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let end = self.data.len().min(self.pos.saturating_add(self.size));
            Ok(&self.data[self.pos..end])
        }
        fn consume(&mut self, n: usize) {
            self.pos += n;
        }
    }

    /// Everything observable about one returned record.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        line: u64,
        start: u64,
        end: u64,
        raw: Vec<u8>,
        raw_truncated: bool,
        fields: Vec<Vec<u8>>,
        error: Option<Malformed>,
        /// The reader's `offset()` and `line()` after returning it.
        offset_after: u64,
        line_after: u64,
    }

    /// Reads `input` (which starts at `offset`/`line` of the stream) to the
    /// end: the header first if `header`, then data records.
    fn read_all(input: &[u8], offset: u64, line: u64, cap: usize, size: usize, header: bool) -> Vec<Seen> {
        let src = Chunked { data: input, pos: 0, size };
        let mut reader = RecordReader::new(src, offset, line, cap);
        let mut rec = RawRecord::default();
        let mut seen = Vec::new();
        let mut want_header = header;
        loop {
            let more = if want_header { reader.read_header(&mut rec) } else { reader.read_record(&mut rec) };
            want_header = false;
            if !more.expect("in-memory reads do not fail") {
                break;
            }
            seen.push(Seen {
                line: rec.line,
                start: rec.start,
                end: rec.end,
                raw: rec.raw.clone(),
                raw_truncated: rec.raw_truncated,
                fields: rec.fields().map(<[u8]>::to_vec).collect(),
                error: rec.error,
                offset_after: reader.offset(),
                line_after: reader.line(),
            });
        }
        assert!(!reader.read_record(&mut rec).unwrap(), "end of stream is sticky");
        seen
    }

    /// Printable ASCII as is, the rest escaped, so expectations fit on a line.
    fn esc(bytes: &[u8]) -> String {
        let mut s = String::new();
        for &b in bytes {
            match b {
                b'\n' => s.push_str("\\n"),
                b'\r' => s.push_str("\\r"),
                b'\0' => s.push_str("\\0"),
                b' '..=b'~' => s.push(b as char),
                _ => s.push_str(&format!("\\x{b:02x}")),
            }
        }
        s
    }

    /// `3[a|b]`: a clean record on line 3 with fields `a` and `b`.
    /// `3!StrayQuote=a"b…`: a malformed one with its raw bytes, `…` if cut.
    fn render(s: &Seen) -> String {
        match s.error {
            None => {
                let fields: Vec<String> = s.fields.iter().map(|f| esc(f)).collect();
                format!("{}[{}]", s.line, fields.join("|"))
            }
            Some(e) => {
                let cut = if s.raw_truncated { "…" } else { "" };
                format!("{}!{:?}={}{}", s.line, e, esc(&s.raw), cut)
            }
        }
    }

    /// Line ends in `input[..upto]` (`\r\n` counts once).
    fn line_ends(input: &[u8], upto: usize) -> u64 {
        (0..upto).filter(|&j| input[j] == b'\n' || (input[j] == b'\r' && input.get(j + 1) != Some(&b'\n'))).count()
            as u64
    }

    fn check(input: impl AsRef<[u8]>, expected: &[&str]) {
        check_cap(input, CAP, expected)
    }

    /// Reads `input` as a whole file (header, then records) and compares the
    /// rendered records with `expected`. On the way it also checks, for this
    /// input, that every chunking gives the same records, that resuming at
    /// every record boundary gives the same rest, and that offsets, raw bytes
    /// and line numbers agree with the input itself.
    fn check_cap(input: impl AsRef<[u8]>, cap: usize, expected: &[&str]) {
        let input = input.as_ref();
        let all = read_all(input, 0, 1, cap, usize::MAX, true);
        let rendered: Vec<String> = all.iter().map(render).collect();
        assert_eq!(rendered, expected, "input {:?}", esc(input));

        for size in [1, 2, 3, 5, 64] {
            let chunked = read_all(input, 0, 1, cap, size, true);
            assert_eq!(chunked, all, "chunks of {size}, input {:?}", esc(input));
        }

        let mut prev_end = 0;
        for s in &all {
            let (start, end) = (s.start as usize, s.end as usize);
            let mut gap = &input[prev_end..start];
            if prev_end == 0 {
                gap = gap.strip_prefix(BOM).unwrap_or(gap);
            }
            assert!(gap.iter().all(|&b| b == b'\r' || b == b'\n'), "only blank lines between records");
            let raw_end = start + s.raw.len();
            assert_eq!(&input[start..raw_end], &s.raw[..], "raw is the record's bytes");
            if s.raw_truncated {
                assert_eq!(s.raw.len(), cap, "raw is cut at the cap");
            } else {
                let term = &input[raw_end..end];
                assert!(matches!(term, b"" | b"\n" | b"\r" | b"\r\n"), "only a line end after raw");
                assert!(!term.is_empty() || end == input.len(), "no line end only at end of stream");
            }
            assert_eq!(s.line, 1 + line_ends(input, start), "line of record at {start}");
            assert_eq!((s.offset_after, s.line_after), (s.end, 1 + line_ends(input, end)));
            prev_end = end;
        }

        for (k, s) in all.iter().enumerate() {
            let off = s.offset_after as usize;
            for size in [1, usize::MAX] {
                let rest = read_all(&input[off..], s.offset_after, s.line_after, cap, size, false);
                assert_eq!(rest, all[k + 1..], "resume at {off}, chunks of {size}, input {:?}", esc(input));
            }
        }
    }

    #[test]
    fn fields_and_line_ends() {
        check("a,b,c\n1,2,3\n", &["1[a|b|c]", "2[1|2|3]"]);
        check("a,b\n1,2", &["1[a|b]", "2[1|2]"]);
        check("a,b\r\n1,2\r\n", &["1[a|b]", "2[1|2]"]);
        check("a,b\r1,2\r", &["1[a|b]", "2[1|2]"]);
        check("a\r\nb\rc\nd", &["1[a]", "2[b]", "3[c]", "4[d]"]);
        check("a\r", &["1[a]"]);
        check("a\nb\r", &["1[a]", "2[b]"]);
        check("a\nb\r\n", &["1[a]", "2[b]"]);
        check("a\n\rb", &["1[a]", "3[b]"]);
    }

    #[test]
    fn empty_and_separator_only_fields() {
        check("a,\n", &["1[a|]"]);
        check("a,", &["1[a|]"]);
        check("h\na,\r\n", &["1[h]", "2[a|]"]);
        check(",\n", &["1[|]"]);
        check(",a\n", &["1[|a]"]);
        check("a,,b\n", &["1[a||b]"]);
        check(",,\n", &["1[||]"]);
    }

    #[test]
    fn empty_lines_are_skipped_but_counted() {
        check("h\n\n\nx\n", &["1[h]", "4[x]"]);
        check("h\r\n\r\n\r\nx\r\n", &["1[h]", "4[x]"]);
        check("h\r\r\rx", &["1[h]", "4[x]"]);
        check("h\n\r\n\r\n\nx", &["1[h]", "5[x]"]);
        check("h\nx\n\n\n", &["1[h]", "2[x]"]);
        check("h\nx\r\n\r\n", &["1[h]", "2[x]"]);
        check("h\n\n\"a\nb\"\n\nc\n", &["1[h]", "3[a\\nb]", "6[c]"]);
    }

    /// `at_end`: no bytes left after the last record read, in any chunking;
    /// blank lines left are bytes.
    #[test]
    fn at_end_after_the_last_record() {
        for (text, records, end) in [
            ("h\na\nb\n", 2, true),
            ("h\na\nb", 2, true),
            ("h\na\r\n", 1, true),
            ("h\n", 0, true),
            ("h\na\nb\n", 1, false),
            ("h\na\nb\n\n", 2, false),
        ] {
            for size in [1, 2, 64] {
                let mut r = RecordReader::new(Chunked { data: text.as_bytes(), pos: 0, size }, 0, 1, CAP);
                let mut rec = RawRecord::default();
                assert!(r.read_header(&mut rec).unwrap());
                for _ in 0..records {
                    assert!(r.read_record(&mut rec).unwrap());
                }
                assert_eq!(r.at_end(), end, "{text:?} after {records} records, chunks of {size}");
            }
        }
    }

    #[test]
    fn spaces_make_a_record() {
        check("h\n   \n", &["1[h]", "2[   ]"]);
        check("h\n \r\nx", &["1[h]", "2[ ]", "3[x]"]);
        check("h\n , \n", &["1[h]", "2[ | ]"]);
        check("h\n\t\n", &["1[h]", "2[\\x09]"]);
    }

    #[test]
    fn header_is_the_first_line_even_when_blank() {
        check("", &[]);
        check("\n", &["1[]"]);
        check("\n\n", &["1[]"]);
        check("\na\n", &["1[]", "2[a]"]);
        check("\r\n\r\na", &["1[]", "3[a]"]);
        check("\rx", &["1[]", "2[x]"]);
        check("a,b\n", &["1[a|b]"]);
        check("a,b", &["1[a|b]"]);
        check("a,b\r\n\r\n", &["1[a|b]"]);
    }

    #[test]
    fn quoted_fields() {
        check(r#""a,b","c""#, &["1[a,b|c]"]);
        check(r#""a""b""#, &[r#"1[a"b]"#]);
        check(r#""""#, &["1[]"]);
        check(r#""","""#, &["1[|]"]);
        check(r#""""""#, &[r#"1["]"#]);
        check(r#""""""""#, &[r#"1[""]"#]);
        check("\"a\",\n", &["1[a|]"]);
        check("x,\"\"\n", &["1[x|]"]);
        check("\"a\"\r\n\"b\"\r", &["1[a]", "2[b]"]);
        check("\" a \", b ", &["1[ a | b ]"]);
        check(b"\"\xff\0\",\0\n", &["1[\\xff\\0|\\0]"]);
    }

    #[test]
    fn quoted_line_ends_are_data_and_count_as_lines() {
        check("\"a\nb\",c\nd", &["1[a\\nb|c]", "3[d]"]);
        check("\"a\r\nb\"\r\nd", &["1[a\\r\\nb]", "3[d]"]);
        check("\"a\rb\"\nd", &["1[a\\rb]", "3[d]"]);
        check("h\n\"x\ny\r\nz\",w\nnext\n", &["1[h]", "2[x\\ny\\r\\nz|w]", "5[next]"]);
        check("\"a\r\r\nb\"\nc", &["1[a\\r\\r\\nb]", "4[c]"]);
        check("\"a\n\rb\"\nc", &["1[a\\n\\rb]", "4[c]"]);
        check("\"a\r\"\nb", &["1[a\\r]", "3[b]"]);
        check("\"a\r\"\"\nb\"\nc", &["1[a\\r\"\\nb]", "4[c]"]);
        check("\"\n\n\n\"\nx", &["1[\\n\\n\\n]", "5[x]"]);
        check("\"\n\",\"\r\"\nx", &["1[\\n|\\r]", "4[x]"]);
    }

    #[test]
    fn stray_quote() {
        check("a\"b", &["1!StrayQuote=a\"b"]);
        check("a, \"b\"", &["1!StrayQuote=a, \"b\""]);
        check("a,b\"\nc", &["1!StrayQuote=a,b\"", "2[c]"]);
        check("\"a\",b\"c\n", &["1!StrayQuote=\"a\",b\"c"]);
        check("h\na\"b\nc,d\n", &["1[h]", "2!StrayQuote=a\"b", "3[c|d]"]);
        check("h\na\"b,\"c\nx", &["1[h]", "2!StrayQuote=a\"b,\"c", "3[x]"]);
        check("h\na\"\r\nx", &["1[h]", "2!StrayQuote=a\"", "3[x]"]);
        check("h\na\"\rx\"", &["1[h]", "2!StrayQuote=a\"", "3!StrayQuote=x\""]);
        check("h\n \"\n\"x\"\n", &["1[h]", "2!StrayQuote= \"", "3[x]"]);
    }

    #[test]
    fn text_after_quote() {
        check("\"abc\"def", &["1!TextAfterQuote=\"abc\"def"]);
        check("\"abc\" ,x", &["1!TextAfterQuote=\"abc\" ,x"]);
        check("h\n\"a\"b\"c\nd", &["1[h]", "2!TextAfterQuote=\"a\"b\"c", "3[d]"]);
        check("\"a\"\"b\"c\r\nd", &["1!TextAfterQuote=\"a\"\"b\"c", "2[d]"]);
        check("x,\"a\" \r\"y\"", &["1!TextAfterQuote=x,\"a\" ", "2[y]"]);
        check("\"a\"b\"c\"d\"\n\"e\"\n", &["1!TextAfterQuote=\"a\"b\"c\"d\"", "2[e]"]);
    }

    #[test]
    fn unclosed_quote_swallows_the_rest() {
        check("h\n\"abc", &["1[h]", "2!UnclosedQuote=\"abc"]);
        check("h\nx,\"a\nb\nc\n", &["1[h]", "2!UnclosedQuote=x,\"a\\nb\\nc\\n"]);
        check("\"", &["1!UnclosedQuote=\""]);
        check("h\n\"a\"\"", &["1[h]", "2!UnclosedQuote=\"a\"\""]);
        check("h\na\n\"b\nc,d\n\ne\n", &["1[h]", "2[a]", "3!UnclosedQuote=\"b\\nc,d\\n\\ne\\n"]);
        check("h\r\n\r\n\"b\r\n", &["1[h]", "3!UnclosedQuote=\"b\\r\\n"]);
    }

    #[test]
    fn too_long() {
        check_cap("abcd\nabcde\nx", 4, &["1[abcd]", "2!TooLong=abcd…", "3[x]"]);
        check_cap("abcd\r\nx", 4, &["1[abcd]", "2[x]"]);
        check_cap("\"ab\"\n\"abc\"\nx", 4, &["1[ab]", "2!TooLong=\"abc…", "3[x]"]);
        check_cap("a,bc\na,bcd\n", 4, &["1[a|bc]", "2!TooLong=a,bc…"]);
        check_cap(",,,,,\nx", 4, &["1!TooLong=,,,,…", "2[x]"]);
        check_cap(",,,,\nx", 4, &["1[||||]", "2[x]"]);
        // Record boundaries stay quote-aware past the cap.
        check_cap("\"a\nb\nc\nd\",e\nx", 4, &["1!TooLong=\"a\\nb…", "5[x]"]);
        check_cap("h\n\"\n\n\n\n\n\"\n\n\nx", 4, &["1[h]", "2!TooLong=\"\\n\\n\\n…", "10[x]"]);
        check_cap("x\n\r\n", 0, &["1!TooLong=…"]);
        check_cap("\n", 0, &["1[]"]);
    }

    /// The first problem met while scanning wins; crossing the cap is met on
    /// the byte that crosses it.
    #[test]
    fn first_problem_wins() {
        check_cap("a\"bcdef\nx", 4, &["1!StrayQuote=a\"bc…", "2[x]"]);
        check_cap("abc\"d\nx", 4, &["1!StrayQuote=abc\"…", "2[x]"]);
        check_cap("abcd\"\nx", 4, &["1!TooLong=abcd…", "2[x]"]);
        check_cap("abcde\"f\nx", 4, &["1!TooLong=abcd…", "2[x]"]);
        check_cap("\"a\"bcde\nx", 4, &["1!TextAfterQuote=\"a\"b…", "2[x]"]);
        check_cap("\"ab\"c\nx", 4, &["1!TooLong=\"ab\"…", "2[x]"]);
        check_cap("\"ab", 4, &["1!UnclosedQuote=\"ab"]);
        check_cap("\"abc", 4, &["1!UnclosedQuote=\"abc"]);
        check_cap("\"abcd", 4, &["1!TooLong=\"abc…"]);
        check_cap("h\n\"ab\n", 4, &["1[h]", "2!UnclosedQuote=\"ab\\n"]);
        check_cap("h\n\"abc\n", 4, &["1[h]", "2!TooLong=\"abc…"]);
    }

    #[test]
    fn bom_is_skipped_only_at_offset_zero() {
        check("\u{FEFF}a,b\nc", &["1[a|b]", "2[c]"]);
        check("\u{FEFF}", &[]);
        check("\u{FEFF}\n", &["1[]"]);
        check("\u{FEFF}\"a\nb\"\nc", &["1[a\\nb]", "3[c]"]);
        check(b"\xEF\xBB\xBF\xEF\xBB\xBF", &["1[\\xef\\xbb\\xbf]"]);
        check(b"\xEF\xBBa\n", &["1[\\xef\\xbba]"]);
        check(b"\xEF\xBB", &["1[\\xef\\xbb]"]);
        check(b"\xEF", &["1[\\xef]"]);
        check(b"\xEF\n\xEF\xBB\xBF", &["1[\\xef]", "2[\\xef\\xbb\\xbf]"]);
        check(b"\xEF\xBB\n", &["1[\\xef\\xbb]"]);
        check(b"\xEF\"", &["1!StrayQuote=\\xef\""]);

        let mut rec = RawRecord::default();
        let mut fresh = RecordReader::new(&b"\xEF\xBB\xBFid\n"[..], 0, 1, CAP);
        assert!(fresh.read_header(&mut rec).unwrap());
        assert_eq!((rec.start, rec.end, rec.field(0)), (3, 6, &b"id"[..]));
        assert_eq!((fresh.offset(), fresh.line()), (6, 2));

        let mut resumed = RecordReader::new(&b"\xEF\xBB\xBFid\n"[..], 10, 4, CAP);
        assert!(resumed.read_record(&mut rec).unwrap());
        assert_eq!((rec.line, rec.start, rec.end), (4, 10, 16));
        assert_eq!(rec.field(0), b"\xEF\xBB\xBFid");

        let mut bom_only = RecordReader::new(&b"\xEF\xBB\xBF"[..], 0, 1, CAP);
        assert!(!bom_only.read_header(&mut rec).unwrap());
        assert!(!bom_only.read_record(&mut rec).unwrap());
    }

    #[test]
    fn examples_from_the_contract() {
        let header = "event_id,event_type,user_id,product_id,event_timestamp";
        let row = "0b6f3a4e-6a57-4d3b-9b0a-3c1f3e5e9a10,view,u1,p1,2026-11-22T10:15:30.123Z";
        check(
            format!("{header}\r\n{row}\r\n\r\n   \r\n\"{row}\n"),
            &[
                "1[event_id|event_type|user_id|product_id|event_timestamp]",
                "2[0b6f3a4e-6a57-4d3b-9b0a-3c1f3e5e9a10|view|u1|p1|2026-11-22T10:15:30.123Z]",
                "4[   ]",
                &format!("5!UnclosedQuote=\"{row}\\n"),
            ],
        );
        // A space before an opening quote makes that quote a stray one.
        check("id,name\n1, \"Widget, large\"\n2,ok\n", &["1[id|name]", "2!StrayQuote=1, \"Widget, large\"", "3[2|ok]"]);
        // A lone \r ends a line like \n.
        check("id\r1\r2", &["1[id]", "2[1]", "3[2]"]);
        // A quoted product name holding a comma and a newline.
        check("id,name\n1,\"Mug, \"\"big\"\"\nblue\"\n2,x\n", &["1[id|name]", "2[1|Mug, \"big\"\\nblue]", "4[2|x]"]);
    }

    /// Every case above already runs under several chunkings; these are the
    /// inputs where a one-byte lookahead straddles a chunk boundary, at
    /// several caps.
    #[test]
    fn one_byte_chunks_read_like_big_chunks() {
        let tricky: &[&[u8]] = &[
            b"a\r\nb\r\n\r\nc\r",
            b"\"a\r\n\",\"\r\"\r\n\"\"\"\"\r\n",
            b"\xEF\xBB\xBF\r\n\r\na\"b\r\nc",
            b"\xEF\xBB\r\"x\"y\r\n\"z",
            b"h\n\"a\"\"\r\n\"\",\r\r\n,\"",
            b"\"abc\" ,x\r\n \"\r\n\r\n\"\r",
        ];
        for &input in tricky {
            for cap in [0, 1, 2, 3, 7, CAP] {
                let big = read_all(input, 0, 1, cap, usize::MAX, true);
                assert!(!big.is_empty());
                let one = read_all(input, 0, 1, cap, 1, true);
                assert_eq!(one, big, "cap {cap}, input {:?}", esc(input));
            }
        }
    }

    #[test]
    fn offsets_and_checkpoints() {
        let input = b"h\r\n\r\na,b\r\n\"x\ny\"\rz";
        let mut reader = RecordReader::new(&input[..], 0, 1, CAP);
        let mut rec = RawRecord::default();
        assert_eq!((reader.offset(), reader.line()), (0, 1));
        let mut got = Vec::new();
        assert!(reader.read_header(&mut rec).unwrap());
        got.push((rec.line, rec.start, rec.end, reader.offset(), reader.line()));
        while reader.read_record(&mut rec).unwrap() {
            got.push((rec.line, rec.start, rec.end, reader.offset(), reader.line()));
        }
        assert_eq!(got, [(1, 0, 3, 3, 2), (3, 5, 10, 10, 4), (4, 10, 16, 16, 6), (6, 16, 17, 17, 6)]);

        // Blank lines after the last record are not part of the checkpoint.
        let mut reader = RecordReader::new(&b"h\n\n\n"[..], 0, 1, CAP);
        assert!(reader.read_header(&mut rec).unwrap());
        assert!(!reader.read_record(&mut rec).unwrap());
        assert_eq!((reader.offset(), reader.line()), (2, 2));

        // read_record skips a blank first line (only read_header keeps it).
        let mut reader = RecordReader::new(&b"\n\r\na"[..], 0, 1, CAP);
        assert!(reader.read_record(&mut rec).unwrap());
        assert_eq!((rec.line, rec.start, rec.field(0)), (3, 3, &b"a"[..]));

        let mut empty = RecordReader::new(&b""[..], 0, 1, CAP);
        assert!(!empty.read_header(&mut rec).unwrap());
        assert!(!empty.read_record(&mut rec).unwrap());
        assert_eq!((empty.offset(), empty.line()), (0, 1));
    }

    /// Reads one record from a 10 MB stream under a 1 KB cap and checks that
    /// nothing grew with the record, and that the next record is intact.
    fn huge(record: &[u8], expect: Malformed, line_ends_inside: u64) {
        const SMALL: usize = 1024;
        let mut input = record.to_vec();
        input.extend_from_slice(b"\r\nnext,1\n");
        let mut reader = RecordReader::new(BufReader::new(Cursor::new(&input)), 0, 1, SMALL);
        let mut rec = RawRecord::default();
        assert!(reader.read_record(&mut rec).unwrap());
        assert_eq!(rec.error, Some(expect));
        assert_eq!((rec.line, rec.start, rec.end), (1, 0, record.len() as u64 + 2));
        assert_eq!(rec.raw, &record[..SMALL]);
        assert!(rec.raw_truncated);
        assert!(rec.raw.capacity() <= 2 * SMALL, "raw capacity {}", rec.raw.capacity());
        assert!(rec.data.capacity() <= 2 * SMALL, "data capacity {}", rec.data.capacity());
        assert!(rec.bounds.capacity() <= 2 * SMALL, "bounds capacity {}", rec.bounds.capacity());
        assert!(reader.read_record(&mut rec).unwrap());
        assert_eq!(rec.error, None);
        assert_eq!(rec.line, 2 + line_ends_inside);
        assert_eq!(rec.fields().collect::<Vec<_>>(), [&b"next"[..], b"1"]);
        assert!(!reader.read_record(&mut rec).unwrap());
    }

    #[test]
    fn ten_megabyte_records_stay_bounded() {
        const TEN_MB: usize = 10 << 20;
        let unquoted = vec![b'x'; TEN_MB];
        huge(&unquoted, Malformed::TooLong, 0);

        let separators = vec![b','; TEN_MB];
        huge(&separators, Malformed::TooLong, 0);

        // A quoted field with a line end every 100 bytes.
        let mut quoted = b"a,\"".to_vec();
        quoted.extend((0..TEN_MB).map(|i| if i % 100 == 99 { b'\n' } else { b'y' }));
        quoted.extend_from_slice(b"\",z");
        huge(&quoted, Malformed::TooLong, (TEN_MB / 100) as u64);

        // Stray quote first, then 10 MB more: the stray quote is reported.
        let mut stray = b"a\"".to_vec();
        stray.extend_from_slice(&unquoted);
        huge(&stray, Malformed::StrayQuote, 0);

        // 10 MB inside a quote never closed: one record, too long first.
        let mut unclosed = b"\"".to_vec();
        unclosed.extend_from_slice(&quoted[3..quoted.len() - 3]);
        let mut reader = RecordReader::new(BufReader::new(Cursor::new(&unclosed)), 0, 1, 1024);
        let mut rec = RawRecord::default();
        assert!(reader.read_record(&mut rec).unwrap());
        assert_eq!((rec.error, rec.end), (Some(Malformed::TooLong), unclosed.len() as u64));
        assert!(rec.raw.capacity() <= 2048 && rec.data.capacity() <= 2048);
        assert_eq!(reader.line(), 1 + (TEN_MB / 100) as u64);
        assert!(!reader.read_record(&mut rec).unwrap());
    }

    #[test]
    fn warm_record_is_reused_without_allocation() {
        let mut input = b"aaaaaaaaaa,\"bbbbbbbbbb\",cccccccccc,dddddddddd\n".to_vec();
        for _ in 0..1000 {
            input.extend_from_slice(b"a,\"b\"\"\",c\r\n\n1,2,3,4\n\"x\ny\"\n");
        }
        let mut reader = RecordReader::new(&input[..], 0, 1, CAP);
        let mut rec = RawRecord::default();
        assert!(reader.read_header(&mut rec).unwrap());
        let warm = (rec.raw.as_ptr(), rec.data.as_ptr(), rec.bounds.as_ptr());
        let mut count = 0;
        while reader.read_record(&mut rec).unwrap() {
            assert_eq!((rec.raw.as_ptr(), rec.data.as_ptr(), rec.bounds.as_ptr()), warm);
            count += 1;
        }
        assert_eq!(count, 3000);
    }

    /// Fails for good when it has to read at byte `fail_at`; with
    /// `interrupt`, every read of new bytes is first interrupted once. A
    /// `fill_buf` on bytes already buffered never fails (the trait's contract).
    struct Flaky<'a> {
        inner: Chunked<'a>,
        fail_at: usize,
        interrupt: bool,
        interrupted_at: Option<usize>,
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            unreachable!("the reader only uses fill_buf")
        }
    }

    impl BufRead for Flaky<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let pos = self.inner.pos;
            if pos == self.fail_at {
                return Err(io::Error::other("disk on fire"));
            }
            if self.interrupt && self.interrupted_at != Some(pos) {
                self.interrupted_at = Some(pos);
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.inner.fill_buf()
        }
        fn consume(&mut self, n: usize) {
            self.inner.consume(n)
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let input = b"h\r\n\"a\r\nb\",c\r\n\r\nd";
        let flaky = Flaky {
            inner: Chunked { data: input, pos: 0, size: 1 },
            fail_at: usize::MAX,
            interrupt: true,
            interrupted_at: None,
        };
        let mut reader = RecordReader::new(flaky, 0, 1, CAP);
        let mut rec = RawRecord::default();
        let mut seen = Vec::new();
        assert!(reader.read_header(&mut rec).unwrap());
        while reader.read_record(&mut rec).unwrap() {
            seen.push((rec.line, rec.fields().map(<[u8]>::to_vec).collect::<Vec<_>>()));
        }
        assert_eq!(seen, [(2, vec![b"a\r\nb".to_vec(), b"c".to_vec()]), (5, vec![b"d".to_vec()])]);
    }

    #[test]
    fn an_io_error_mid_record_is_final() {
        let input = b"h\na,b\nccc,ddd\ne\n";
        // Fail inside the third record.
        let flaky = Flaky {
            inner: Chunked { data: input, pos: 0, size: 1 },
            fail_at: 8,
            interrupt: false,
            interrupted_at: None,
        };
        let mut reader = RecordReader::new(flaky, 0, 1, CAP);
        let mut rec = RawRecord::default();
        assert!(reader.read_header(&mut rec).unwrap());
        assert!(reader.read_record(&mut rec).unwrap());
        let err = reader.read_record(&mut rec).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert!(reader.read_record(&mut rec).is_err(), "no half record after a failure");
        assert_eq!((reader.offset(), reader.line()), (6, 3));
    }
}
