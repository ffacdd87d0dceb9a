//! Property tests of the pure core (no database, no daemon).
//!
//! - The reader, on arbitrary bytes, against [`model`]: a byte-at-a-time
//!   reading of the contract's grammar written from `spec/events.md`, not
//!   from the reader. With a small `max_record_bytes` it must keep every
//!   record's boundaries, store at most the cap, and keep its buffers O(cap);
//!   any chunking and any resume point must give the same records.
//! - Reader + `Header::parse` + `validate` on valid files and on mutations of
//!   them (truncation, byte flips, inserted quotes/line ends/NULs/commas,
//!   deleted bytes, swapped header names): never a panic, and every data row
//!   is exactly one of event, in-file duplicate or reject. A file whose
//!   columns are shuffled (and whose header names change case and spacing)
//!   gives exactly the events of the unshuffled one.
//!
//! Budget: `PROPTEST_CASES` cases per property, 64 by default (under a
//! second for all four in a debug build: the CI budget). A long run, e.g.
//! before a release (debug: about 1.5 ms per case, so ~10 minutes; add
//! `--release` to go several times faster after a release build):
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --test it input::props
//! ```
//!
//! (proptest 1.x also applies `PROPTEST_CASES` over an explicit config; we
//! read it ourselves too so the default can never hide it.) A failure prints
//! the minimal input; `PROPTEST_RNG_SEED=<n>` makes a run reproducible.
//! Failures are not persisted to files: add the minimal input as a table
//! case in the reader's or validator's unit tests instead.

use std::collections::HashSet;
use std::io::BufReader;

use chrono::{DateTime, TimeZone, Utc};
use ingestd::core::header::Header;
use ingestd::core::reader::RecordReader;
use ingestd::core::reason::RejectReason;
use ingestd::core::record::{Malformed, RawRecord};
use ingestd::core::validate::validate;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::support::reader::{line_ends, read_with};
use crate::support::BOM;
/// Larger than any generated input: no record is ever cut.
const NO_CAP: usize = 1 << 20;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// The reader on arbitrary bytes.
// ---------------------------------------------------------------------------

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

/// Reads `input` (which starts at `offset`/`line` of the stream) through a
/// buffer of `chunk` bytes: the header first if `header`, then data records.
/// One `RawRecord` is reused, as the reader intends, and its buffers are
/// checked against the cap after every record.
fn read_all(input: &[u8], offset: u64, line: u64, cap: usize, chunk: usize, header: bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    read_with(input, (offset, line), cap, chunk, header, |rec, offset_after, line_after| {
        // Memory: what is stored never passes the cap, and the buffers
        // (reused across records) stay O(cap) however long the record.
        assert!(rec.raw.len() <= cap, "raw {} > cap {cap}", rec.raw.len());
        assert!(rec.data.len() <= cap, "data {} > cap {cap}", rec.data.len());
        let bound = cap * 4 + 64;
        assert!(rec.raw.capacity() <= bound, "raw capacity {} for cap {cap}", rec.raw.capacity());
        assert!(rec.data.capacity() <= bound, "data capacity {} for cap {cap}", rec.data.capacity());
        assert!(rec.bounds.capacity() <= bound, "bounds capacity {} for cap {cap}", rec.bounds.capacity());
        seen.push(Seen {
            line: rec.line,
            start: rec.start,
            end: rec.end,
            raw: rec.raw.clone(),
            raw_truncated: rec.raw_truncated,
            fields: rec.fields().map(<[u8]>::to_vec).collect(),
            error: rec.error,
            offset_after,
            line_after,
        });
    });
    seen
}

/// A record as the contract reads it.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    line: u64,
    start: u64,
    end: u64,
    raw: Vec<u8>,
    fields: Vec<Vec<u8>>,
    error: Option<Malformed>,
    /// Index in the record of the byte that made it malformed (its length
    /// for an unclosed quote: the end of the stream); `usize::MAX` if clean.
    problem_at: usize,
}

/// The contract's grammar, one byte at a time, no cap: a BOM at offset 0 is
/// skipped; the first record is the header even on a blank line; later
/// blank lines are no records but count as lines; `\r\n`, `\n` and a lone
/// `\r` end a line, inside quotes too (as data); a `"` in an unquoted field
/// (spaces before an opening quote included) or a byte after a closing quote
/// other than `,`/line end makes the record malformed up to its line end; a
/// quote still open at the end makes the rest of the stream one record.
fn model(input: &[u8]) -> Vec<Model> {
    #[derive(PartialEq)]
    enum S {
        FieldStart,
        Bare,
        Quoted,
        QuoteSeen,
        Rest,
    }
    let n = input.len();
    let eol_len = |i: usize| if input[i..].starts_with(b"\r\n") { 2 } else { 1 };
    let mut i = if input.starts_with(BOM) { BOM.len() } else { 0 };
    let mut line = 1;
    let mut out = Vec::new();
    loop {
        if !out.is_empty() {
            while i < n && (input[i] == b'\r' || input[i] == b'\n') {
                i += eol_len(i);
                line += 1;
            }
        }
        if i == n {
            return out;
        }
        let (start, start_line) = (i, line);
        let (mut fields, mut cur, mut error, mut problem_at) = (Vec::new(), Vec::new(), None, usize::MAX);
        let mut s = S::FieldStart;
        let mut line_end = None;
        while i < n {
            let b = input[i];
            let eol = b == b'\r' || b == b'\n';
            if eol && s != S::Quoted {
                line_end = Some(i);
                break;
            }
            match (&s, b) {
                (S::FieldStart, b'"') => s = S::Quoted,
                (S::FieldStart | S::Bare, b',') => {
                    fields.push(std::mem::take(&mut cur));
                    s = S::FieldStart;
                }
                (S::Bare, b'"') => {
                    error = Some(Malformed::StrayQuote);
                    problem_at = i - start;
                    s = S::Rest;
                }
                (S::FieldStart | S::Bare, _) => {
                    cur.push(b);
                    s = S::Bare;
                }
                (S::Quoted, b'"') => s = S::QuoteSeen,
                (S::Quoted, _) => {
                    if b == b'\r' || (b == b'\n' && input[i - 1] != b'\r') {
                        line += 1;
                    }
                    cur.push(b);
                }
                (S::QuoteSeen, b'"') => {
                    cur.push(b'"');
                    s = S::Quoted;
                }
                (S::QuoteSeen, b',') => {
                    fields.push(std::mem::take(&mut cur));
                    s = S::FieldStart;
                }
                (S::QuoteSeen, _) => {
                    error = Some(Malformed::TextAfterQuote);
                    problem_at = i - start;
                    s = S::Rest;
                }
                (S::Rest, _) => {}
            }
            i += 1;
        }
        match s {
            S::Quoted => {
                error = Some(Malformed::UnclosedQuote);
                problem_at = n - start;
            }
            S::Rest => {}
            _ => fields.push(cur),
        }
        if error.is_some() {
            fields.clear();
        }
        let raw_end = line_end.unwrap_or(n);
        if let Some(at) = line_end {
            i = at + eol_len(at);
            line += 1;
        }
        out.push(Model {
            line: start_line,
            start: start as u64,
            end: i as u64,
            raw: input[start..raw_end].to_vec(),
            fields,
            error,
            problem_at,
        });
    }
}

/// Mostly the bytes that matter to CSV, some arbitrary ones, sometimes a BOM.
fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'"'),
        4 => Just(b','),
        3 => Just(b'\r'),
        3 => Just(b'\n'),
        1 => Just(0u8),
        2 => Just(b' '),
        6 => b'a'..=b'c',
        1 => Just(0xEF_u8),
        1 => Just(0xBB_u8),
        1 => Just(0xBF_u8),
        2 => any::<u8>(),
    ];
    (prop::bool::weighted(0.1), prop::collection::vec(byte, 0..240)).prop_map(|(bom, mut v)| {
        if bom {
            v.splice(0..0, BOM.iter().copied());
        }
        v
    })
}

fn check_reader(input: &[u8], cap: usize, chunk: usize) {
    // Uncapped, the reader is the model.
    let full = read_all(input, 0, 1, NO_CAP, 1 << 16, true);
    let want = model(input);
    let got: Vec<_> = full.iter().map(|s| (s.line, s.start, s.end, &s.raw, &s.fields, s.error)).collect();
    let expected: Vec<_> = want.iter().map(|m| (m.line, m.start, m.end, &m.raw, &m.fields, m.error)).collect();
    assert_eq!(got, expected, "reader vs model");
    assert!(full.iter().all(|s| !s.raw_truncated));

    // Capped: the same boundaries; a record within the cap reads the same; a
    // longer one keeps its first `cap` bytes and reports the first problem
    // met, the byte crossing the cap (index `cap`) being `TooLong`.
    let capped = read_all(input, 0, 1, cap, 1 << 16, true);
    assert_eq!(capped.len(), full.len(), "the cap changed the record count");
    for ((c, f), m) in capped.iter().zip(&full).zip(&want) {
        assert_eq!(
            (c.line, c.start, c.end, c.offset_after, c.line_after),
            (f.line, f.start, f.end, f.offset_after, f.line_after),
            "boundaries under the cap"
        );
        if f.raw.len() <= cap {
            assert_eq!(c, f, "a record within the cap");
        } else {
            assert!(c.raw_truncated && c.raw[..] == f.raw[..cap], "raw cut at the cap: {c:?}");
            let first = if m.problem_at < cap { m.error } else { Some(Malformed::TooLong) };
            assert_eq!(c.error, first, "first problem of {m:?} under cap {cap}");
            assert!(c.fields.is_empty(), "no fields kept for a malformed record");
        }
    }

    // Positions: lines strictly increase, offsets never go back, the
    // checkpoint after a record is its end, and the end is in the input.
    let mut prev = (0, 0);
    for s in &capped {
        assert!(s.line > prev.0 && s.start >= prev.1 && s.end > s.start, "positions {s:?} after {prev:?}");
        assert_eq!(
            (s.offset_after, s.line_after),
            (s.end, s.line + line_ends(&input[s.start as usize..s.end as usize]))
        );
        assert!(s.end as usize <= input.len());
        prev = (s.line, s.end);
    }

    // Any chunking gives the same records.
    for size in [1, chunk] {
        assert_eq!(read_all(input, 0, 1, cap, size, true), capped, "chunks of {size}");
    }

    // Resuming at any record's end gives the same tail.
    for (k, s) in capped.iter().enumerate() {
        let rest = read_all(&input[s.offset_after as usize..], s.offset_after, s.line_after, cap, chunk, false);
        assert_eq!(rest, capped[k + 1..], "resume at {}", s.offset_after);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn reader_on_arbitrary_bytes(input in csv_bytes(), cap in 1usize..32, chunk in 1usize..16) {
        check_reader(&input, cap, chunk);
    }

    #[test]
    fn reader_on_fully_arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..240), cap in 1usize..32) {
        check_reader(&input, cap, 7);
    }
}

// ---------------------------------------------------------------------------
// Reader + header + validator on valid and mutated files.
// ---------------------------------------------------------------------------

const COLUMNS: [&str; 12] = [
    "event_id",
    "event_type",
    "user_id",
    "session_id",
    "product_id",
    "product_name",
    "product_category",
    "price",
    "quantity",
    "event_timestamp",
    "device_type",
    "user_agent",
];

/// Free text with the bytes that need quoting, and a non-ASCII char.
fn text() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec!['a', 'b', 'Z', ' ', ',', '"', '\n', '\r', '\t', 'é', '1']);
    prop::collection::vec(chars, 0..8).prop_map(String::from_iter)
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(options).prop_map(str::to_owned)
}

/// A valid row, in table order. Few distinct ids, in several text forms, so
/// that files hold duplicates.
fn valid_row() -> impl Strategy<Value = Vec<String>> {
    let id = (0u64..6, 0usize..4).prop_map(|(n, form)| {
        let h = format!("00000000-0000-4000-8000-{n:012x}");
        match form {
            0 => h,
            1 => h.replace('-', ""),
            2 => format!("{{{}}}", h.to_uppercase()),
            _ => format!("urn:uuid:{}", h.to_uppercase()),
        }
    });
    let kind_and_price = prop_oneof![
        (pick(&["view", "VIEW", "add_to_cart", "Remove_From_Cart"]), pick(&["", "0", "12.5", "-0", " 3 "])),
        (pick(&["purchase", "PURCHASE"]), pick(&["9.99", "100", "0.01", "99999999.99"])),
    ];
    (
        id,
        kind_and_price,
        (text().prop_map(|t| format!("u{t}")), text(), text().prop_map(|t| format!("p{t}")), text(), text()),
        pick(&["", "1", "10000", " 7 "]),
        pick(&[
            "2026-01-02T03:04:05.123Z",
            "2025-12-31 23:59:59",
            "2026-01-01T00:00:00+02:00",
            "2026-03-04t05:06:07z",
            "2026-05-31 23:00:00.123456789",
            "2026-06-02T00:00:00Z",
        ]),
        pick(&["", "mobile", "TABLET", "Desktop"]),
        text(),
    )
        .prop_map(|(id, (kind, price), (user, session, product, name, category), qty, ts, device, agent)| {
            vec![id, kind, user, session, product, name, category, price, qty, ts, device, agent]
        })
}

/// The daemon's clock for these tests: the timestamps above are not in its
/// future, one is exactly 24 h ahead (allowed).
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

/// How a file is written: column order, header spelling, line ends, quoting.
#[derive(Debug, Clone)]
struct Layout {
    /// `order[k]`: the table column written at position `k`.
    order: Vec<usize>,
    /// Per column: upper-case its name, and pad it with spaces/tabs.
    upper: Vec<bool>,
    pad: Vec<bool>,
    eol: &'static str,
    /// Quote every field, or only those that need it.
    quote_all: bool,
    /// Blank line after row k (not a row, but it counts in line numbers).
    blank_after: Vec<bool>,
    final_eol: bool,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        Just((0..12).collect::<Vec<usize>>()).prop_shuffle(),
        prop::collection::vec(any::<bool>(), 12),
        prop::collection::vec(any::<bool>(), 12),
        prop::sample::select(&["\n", "\r\n", "\r"][..]),
        any::<bool>(),
        prop::collection::vec(prop::bool::weighted(0.2), 16),
        any::<bool>(),
    )
        .prop_map(|(order, upper, pad, eol, quote_all, blank_after, final_eol)| Layout {
            order,
            upper,
            pad,
            eol,
            quote_all,
            blank_after,
            final_eol,
        })
}

impl Layout {
    /// Table order, plain names, `\n`, no blank lines: the reference file.
    fn plain(&self) -> Layout {
        Layout {
            order: (0..12).collect(),
            upper: vec![false; 12],
            pad: vec![false; 12],
            eol: "\n",
            quote_all: false,
            blank_after: vec![false; 16],
            final_eol: true,
        }
    }

    fn field(&self, value: &str) -> String {
        if self.quote_all || value.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_owned()
        }
    }

    fn write(&self, rows: &[Vec<String>]) -> Vec<u8> {
        self.write_lines(rows).0
    }

    /// The file, its header line, and each row's line (line ends excluded).
    fn write_lines(&self, rows: &[Vec<String>]) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
        let names: Vec<String> = self
            .order
            .iter()
            .map(|&c| {
                let name = if self.upper[c] { COLUMNS[c].to_uppercase() } else { COLUMNS[c].to_owned() };
                if self.pad[c] {
                    format!(" \t{name} ")
                } else {
                    name
                }
            })
            .collect();
        let header = names.join(",");
        let rows: Vec<String> = rows
            .iter()
            .map(|row| self.order.iter().map(|&c| self.field(&row[c])).collect::<Vec<_>>().join(","))
            .collect();
        let mut lines = vec![header.clone()];
        for (k, row) in rows.iter().enumerate() {
            lines.push(row.clone());
            if self.blank_after[k % self.blank_after.len()] {
                lines.push(String::new());
            }
        }
        let mut s = lines.join(self.eol);
        if self.final_eol {
            s.push_str(self.eol);
        }
        (s.into_bytes(), header.into_bytes(), rows.into_iter().map(String::into_bytes).collect())
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    /// Swap two names in the header line only (the rows keep their order).
    SwapHeader(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![b'"', b'"', b'\n', b'\r', 0, b',', b' ', 0xFF]);
    prop_oneof![
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        4 => (any::<Index>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapHeader(a, b)),
    ]
}

fn mutate(file: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Truncate(i) => file.truncate(i.index(file.len() + 1)),
        Mutation::Flip(i, mask) if !file.is_empty() => {
            let at = i.index(file.len());
            file[at] ^= mask;
        }
        Mutation::Insert(i, b) => file.insert(i.index(file.len() + 1), *b),
        Mutation::Delete(i) if !file.is_empty() => {
            file.remove(i.index(file.len()));
        }
        Mutation::SwapHeader(a, b) => {
            let end = file.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(file.len());
            let mut names: Vec<Vec<u8>> = file[..end].split(|&b| b == b',').map(<[u8]>::to_vec).collect();
            let (a, b) = (a.index(names.len()), b.index(names.len()));
            names.swap(a, b);
            file.splice(..end, names.join(&b","[..]));
        }
        _ => {}
    }
}

/// What the validator made of a file's rows.
#[derive(Debug, Default)]
struct Outcome {
    rows: usize,
    /// (line, `Debug` of the event): first valid row per event_id.
    events: Vec<(u64, String)>,
    duplicates: usize,
    rejects: Vec<(u64, RejectReason)>,
    /// The header record's raw bytes.
    header_raw: Vec<u8>,
    /// Each data record: (line, raw bytes, clean, rejected).
    records: Vec<(u64, Vec<u8>, bool, bool)>,
}

/// Reads a file the way the Parser does (header, then records) and
/// validates every record the way the Validator does (first valid row per
/// event_id wins), asserting on the way: every row is exactly one of event,
/// duplicate or reject; a file whose header has a problem rejects every row
/// as `missing_column`; otherwise a row is `malformed_csv` exactly when it
/// is badly quoted, too long, of the wrong width, or holds a NUL or invalid
/// UTF-8 in any field.
fn run_file(file: &[u8], cap: usize) -> Outcome {
    let mut reader = RecordReader::new(BufReader::with_capacity(64, file), 0, 1, cap);
    let mut header_rec = RawRecord::default();
    reader.read_header(&mut header_rec).unwrap();
    let pipeline = ingestd::core::pipeline::builtin();
    let schema = &pipeline.schema;
    let header = Header::parse(schema, &header_rec);
    let mut records = Vec::new();
    let mut rec = RawRecord::default();
    while reader.read_record(&mut rec).unwrap() {
        assert!(rec.raw.len() <= cap);
        records.push(rec.clone());
    }
    let mut out = Outcome { rows: records.len(), header_raw: header_rec.raw.clone(), ..Outcome::default() };
    let mut seen = HashSet::new();
    let mut values = Vec::new();
    for r in &records {
        let outcome = validate(schema, &header, r, now(), &mut values).map(|()| values.clone());
        let malformed = r.error.is_some()
            || r.len() != header.width()
            || r.fields().any(|f| f.contains(&0) || std::str::from_utf8(f).is_err());
        let reason = outcome.as_ref().err().map(|rejection| rejection.reason);
        if header.problem().is_some() {
            assert_eq!(reason, Some(RejectReason::MISSING_COLUMN), "line {}", r.line);
        } else {
            assert_eq!(reason == Some(RejectReason::MALFORMED_CSV), malformed, "line {}: {outcome:?}", r.line);
        }
        out.records.push((r.line, r.raw.clone(), r.error.is_none(), reason.is_some()));
        match outcome {
            Ok(event) => {
                // The event_id (the key): the declaration's first column.
                if seen.insert(format!("{:?}", event[0])) {
                    out.events.push((r.line, format!("{event:?}")));
                } else {
                    out.duplicates += 1;
                }
            }
            Err(rejection) => out.rejects.push((r.line, rejection.reason)),
        }
    }
    assert_eq!(out.events.len() + out.duplicates + out.rejects.len(), out.rows, "every row exactly once");
    out
}

fn distinct_ids(rows: &[Vec<String>]) -> usize {
    let canonical = |id: &str| id.trim_start_matches("urn:uuid:").replace(['{', '}', '-'], "").to_lowercase();
    rows.iter().map(|r| canonical(&r[0])).collect::<HashSet<_>>().len()
}

proptest! {
    #![proptest_config(config())]

    /// Valid rows, any layout: no rejects, one event per distinct id, and
    /// exactly the events of the same rows in table order.
    #[test]
    fn shuffled_columns_give_the_same_events(rows in prop::collection::vec(valid_row(), 0..12), layout in layout()) {
        let reference = run_file(&layout.plain().write(&rows), NO_CAP);
        prop_assert_eq!(&reference.rejects, &vec![], "valid rows rejected: {:?}", rows);
        prop_assert_eq!(reference.rows, rows.len());
        prop_assert_eq!(reference.events.len(), distinct_ids(&rows));
        let shuffled = run_file(&layout.write(&rows), NO_CAP);
        prop_assert_eq!(&shuffled.events.iter().map(|e| &e.1).collect::<Vec<_>>(), &reference.events.iter().map(|e| &e.1).collect::<Vec<_>>());
        prop_assert_eq!((shuffled.rows, shuffled.duplicates, shuffled.rejects.len()), (reference.rows, reference.duplicates, 0));
    }

    /// Mutated files: no panic, every row accounted once, and the rows are
    /// exactly the model's data records.
    #[test]
    fn mutated_files_account_for_every_row(
        rows in prop::collection::vec(valid_row(), 1..10),
        layout in layout(),
        mutations in prop::collection::vec(mutation(), 1..6),
        cap in prop_oneof![Just(NO_CAP), 64usize..400],
    ) {
        let (mut file, header, lines) = layout.write_lines(&rows);
        for m in &mutations {
            mutate(&mut file, m);
        }
        let out = run_file(&file, cap);
        let data: Vec<u64> = model(&file).iter().skip(1).map(|r| r.line).collect();
        let got: Vec<u64> = out.records.iter().map(|r| r.0).collect();
        prop_assert_eq!(got, data, "data records vs the model's");
        // One bad row does not poison the others: under an intact header, a
        // record that is byte for byte one of the valid rows is not rejected.
        if out.header_raw == header {
            for (line, raw, clean, rejected) in &out.records {
                prop_assert!(!(*clean && *rejected && lines.contains(raw)), "valid row at line {} rejected", line);
            }
        }
    }
}
