//! Outside CSV corpora (`../shared/corpora`, test suites written by other
//! projects) run through our reader and through the daemon. The corpora lie
//! outside the repository: these tests are `#[ignore = "needs
//! ../shared/corpora"]` (CI has them beside its clone and runs them with
//! `--include-ignored`), and fail with that reason when run without them.
//!
//! Every corpus CSV file has one expected reading, rendered one string per
//! record (header first): `3[a|b]` is a clean record starting on line 3 with
//! fields `a` and `b`; `4!StrayQuote` a malformed one starting on line 4. The
//! expectation comes from the corpus's own expected output where it has one
//! (csv-spectrum JSON, commons-csv control files) and otherwise from a naive
//! line-by-line oracle written here (files with only simple quoting), or is
//! spelt out in the table. Where our contract (`spec/events.md`) deliberately
//! differs from a corpus, the table asserts our outcome and says which rule.
//!
//! The daemon-level test drops every file in one folder: none has the event
//! columns, so every data record must come back as one `missing_column`
//! reject at its expected line, with its raw bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ingestd::core::record::RawRecord;
use serde_json::Value;

use crate::support::reader::{line_ends, read_with};
use crate::support::*;

const CORPORA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora");

// ---------------------------------------------------------------------------
// The tables: one line per corpus file.
// ---------------------------------------------------------------------------

/// csv-spectrum: `None` compares with `json/<name>.json` and the derived
/// start lines; `Some` is our contract's reading where it differs.
#[rustfmt::skip]
const SPECTRUM: &[(&str, Option<&[&str]>)] = &[
    ("comma_in_quotes", None),
    ("empty", None),
    ("empty_crlf", None),
    ("escaped_quotes", None),
    ("json", None),
    // Upstream's JSON keeps `37.8"N` (and is a known-wrong object with another phone number); events.md: "a `"` inside an unquoted field" is malformed_csv.
    ("location_coordinates", Some(&["1[Contact Phone Number|Location Coordinates|Cities|Counties]", "2!StrayQuote"])),
    ("newlines", None),
    ("newlines_crlf", None),
    ("quotes_and_newlines", None),
    ("simple", None),
    ("simple_crlf", None),
    ("utf8", None),
];

/// (control file, start lines, (line, expected record text) overrides).
type CommonsCase = (&'static str, &'static [u64], &'static [(u64, &'static str)]);

/// commons-csv `CSVFileParser` control files whose format is RFC 4180 plus at
/// most `IgnoreEmpty`: (control file, start line of each expected record,
/// our outcome where it differs). Blank-line records of a control file
/// without `IgnoreEmpty=true` are dropped: events.md, "a completely empty line
/// is not a row".
#[rustfmt::skip]
const COMMONS: &[CommonsCase] = &[
    // Line 7 is `" i ", " j " ,…`: commons-csv keeps ` " j " ` as text; events.md: "a space before an opening quote makes that quote a stray one".
    ("test_default.txt", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16], &[(7, "!StrayQuote")]),
    ("test_rfc4180.txt", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16], &[(7, "!StrayQuote")]),
];

/// Control files not compared: their format options are not our contract's.
/// Their input files are checked in [`FILES`] instead.
#[rustfmt::skip]
const COMMONS_SKIPPED: &[(&str, &str)] = &[
    ("test_default_comment.txt", "CommentStart=#: the contract has no comment lines, a `#` line is a record"),
    ("test_rfc4180_trim.txt", "IgnoreSpaces=true: the reader keeps spaces (the validator trims), and a space before a quote makes it stray"),
    ("testCSV85_default.txt", "CommentStart=#: no comment lines in the contract"),
    ("testCSV85_ignoreEmpty.txt", "CommentStart=#: no comment lines in the contract"),
    ("testCSV246_checkWithNoComment.txt", "CommentStart=#: no comment lines in the contract"),
];

/// How the other files are expected to read.
enum Want {
    /// One record per non-empty physical line, split on `,`, each field bare
    /// or wholly quoted without inner quotes; `(line, outcome)` overrides
    /// lines that are not that simple.
    Lines(&'static [(u64, &'static str)]),
    /// Every record spelt out.
    Exact(&'static [&'static str]),
}
use Want::*;

/// Files without a usable expected output upstream: (path, data records, reading).
#[rustfmt::skip]
const FILES: &[(&str, usize, Want)] = &[
    ("csvlint-rb/fixtures/valid.csv", 2, Lines(&[])),
    ("csvlint-rb/fixtures/valid_many_rows.csv", 6, Lines(&[])),
    ("csvlint-rb/fixtures/windows-line-endings.csv", 1, Lines(&[])),
    ("csvlint-rb/fixtures/crlf-line-endings.csv", 2, Lines(&[])),
    ("csvlint-rb/fixtures/lf-line-endings.csv", 2, Lines(&[])),
    // csvlint's NOTE says "only LF / CRLF"; events.md settles "a lone `\r` ends a line like `\n`": three lines.
    ("csvlint-rb/fixtures/cr-line-endings.csv", 2, Lines(&[])),
    ("csvlint-rb/fixtures/inconsistent-line-endings.csv", 2, Lines(&[])),
    ("csvlint-rb/fixtures/inconsistent-line-endings-unquoted.csv", 2, Lines(&[])),
    // Latin-1 bytes pass the reader untouched (the validator judges fields); its header's non-UTF-8 names match no column, so at daemon level every row is missing_column, which ranks first.
    ("csvlint-rb/fixtures/invalid-byte-sequence.csv", 23, Lines(&[])),
    // `"3" "`: events.md "text after a closing quote"; line 8 is `\r\n` alone, "not a row".
    ("csvlint-rb/fixtures/invalid_many_rows.csv", 10, Lines(&[(4, "!TextAfterQuote")])),
    ("csvlint-rb/fixtures/title-row.csv", 3, Lines(&[])),
    ("rust-csv/uspop.csv", 100, Lines(&[])),
    ("rust-csv/uspop-latin1.csv", 100, Lines(&[])),
    ("rust-csv/uspop-null.csv", 100, Lines(&[])),
    ("rust-csv/smallpop.csv", 10, Lines(&[])),
    // `;` is not our separator and `\"` not our escape: `"\"H…` is "text after a closing quote" (events.md), and such a record ends at its line end.
    ("rust-csv/strange.csv", 6, Lines(&[(1, "!TextAfterQuote"), (2, "!TextAfterQuote"), (5, "!TextAfterQuote"), (6, "!TextAfterQuote"), (7, "!TextAfterQuote")])),
    // The BOM is skipped (events.md), so the first name is `Date`.
    ("commons-csv/CSVFileParser/bom.csv", 251, Lines(&[])),
    // Read without commons-csv's comment marker: `#` lines are records (events.md knows no comments).
    ("commons-csv/CSVFileParser/testCSV85.csv", 7, Lines(&[])),
    ("commons-csv/CSVFileParser/testCSV246.csv", 6, Lines(&[])),
    // `\"` is no escape in RFC 4180: line 2's `\"` closes its field (the `\` is data); line 3's field is closed by the first `"` of line 4, then text follows (events.md "text after a closing quote").
    ("commons-csv/jira/CSV-141_csv-141.csv", 2, Exact(&[r"1[1414770317901|android.widget.EditText|pass sem1 _84*\|*|0|pass sem1 _8]", r"2[1414770318470|android.widget.EditText|pass sem1 _84:\||0|pass sem1 _84:\\]", "3!TextAfterQuote"])),
    ("commons-csv/jira/CSV-196_emoji.csv", 4, Lines(&[])),
    ("commons-csv/jira/CSV-196_japanese.csv", 3, Lines(&[])),
    ("commons-csv/jira/CSV-254_csv-254.csv", 2, Lines(&[])),
    // psql output: LF and a bare CR inside quotes, both line ends for the line count (events.md: lone `\r` ends a line).
    ("commons-csv/jira/CSV-290_psql.csv", 2, Exact(&[r"1[1|abc|test line 1\ntest line 2||]", r"3[2|xyz|\\b:\x08 \\t:\x09 \\n:\n \\r:\r|a|b]", r#"6[3|a|b,c,d|"quoted"|e]"#])),
];

// ---------------------------------------------------------------------------
// Reader level.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "needs ../shared/corpora"]
fn csv_spectrum_reads_as_upstream_expects() {
    for (name, _) in SPECTRUM {
        check(&format!("csv-spectrum/csvs/{name}.csv"), &spectrum(name));
    }
}

#[test]
#[ignore = "needs ../shared/corpora"]
fn commons_csv_control_files_read_as_upstream_expects() {
    for (control, _, _) in COMMONS {
        let (csv, want) = commons(control);
        check(&csv, &want);
    }
}

#[test]
#[ignore = "needs ../shared/corpora"]
fn other_corpus_files_read_as_expected() {
    for (path, _, _) in FILES {
        check(path, &expected(path));
    }
}

/// No corpus file goes unchecked: every CSV has an expectation, every
/// expected-output file is compared or skipped with a reason.
#[test]
#[ignore = "needs ../shared/corpora"]
fn every_corpus_file_has_an_expectation() {
    let files = corpus_csv_files();
    assert!(files.len() >= 37, "corpora not found at {CORPORA}: {files:?}");
    for f in &files {
        assert!(!expected(f).is_empty(), "{f}");
    }
    let listed = |dir: &str, ext: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(corpus(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(ext) && !n.starts_with("README"))
            .collect();
        names.sort();
        names
    };
    let mut controls: Vec<String> =
        COMMONS.iter().map(|c| c.0).chain(COMMONS_SKIPPED.iter().map(|c| c.0)).map(str::to_owned).collect();
    controls.sort();
    assert_eq!(listed("commons-csv/CSVFileParser", ".txt"), controls);
    let mut jsons: Vec<String> = SPECTRUM.iter().map(|(n, _)| format!("{n}.json")).collect();
    jsons.sort();
    assert_eq!(listed("csv-spectrum/json", ".json"), jsons);
}

/// The expected reading of any corpus CSV file (path relative to the corpora).
fn expected(path: &str) -> Vec<String> {
    if let Some(name) = path.strip_prefix("csv-spectrum/csvs/").and_then(|n| n.strip_suffix(".csv")) {
        return spectrum(name);
    }
    if let Some((control, _, _)) = COMMONS.iter().find(|(c, _, _)| commons(c).0 == path) {
        return commons(control).1;
    }
    let Some((_, data_records, want)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        panic!("{path}: no expectation in any table");
    };
    let records = match want {
        Lines(ours) => by_line(path, ours),
        Exact(records) => records.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(records.len(), data_records + 1, "{path}: data records in the table");
    records
}

/// csv-spectrum: header from the CSV's first line; records from the JSON,
/// fields in header order; start lines from the derived row-lines file.
fn spectrum(name: &str) -> Vec<String> {
    let csv = read(&format!("csv-spectrum/csvs/{name}.csv"));
    let first = csv.split(|&b| b == b'\r' || b == b'\n').next().unwrap();
    let names: Vec<&[u8]> = first.split(|&b| b == b',').collect();
    let derived: Value = serde_json::from_slice(&read("csv-spectrum.derived-row-lines.json")).unwrap();
    let derived = &derived[format!("{name}.csv")];
    let lines: Vec<u64> =
        derived["record_start_lines"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap()).collect();
    assert_eq!(derived["data_rows"].as_u64(), Some(lines.len() as u64), "{name}: derived data_rows");
    assert_eq!(derived["json_records"].as_u64(), Some(lines.len() as u64), "{name}: derived json_records");

    let mut want = vec![ok(1, &names)];
    if let Some((_, Some(ours))) = SPECTRUM.iter().find(|(n, _)| *n == name) {
        let ours: Vec<String> = ours.iter().map(|s| s.to_string()).collect();
        assert_eq!(ours[0], want[0], "{name}: header");
        let our_lines: Vec<u64> = ours[1..].iter().map(|s| line_of(s)).collect();
        assert_eq!(our_lines, lines, "{name}: start lines agree with the derived file");
        return ours;
    }
    let json: Value = serde_json::from_slice(&read(&format!("csv-spectrum/json/{name}.json"))).unwrap();
    let rows = json.as_array().unwrap_or_else(|| panic!("{name}.json: not an array of records"));
    assert_eq!(rows.len(), lines.len(), "{name}: JSON records vs derived lines");
    for (row, &line) in rows.iter().zip(&lines) {
        let row = row.as_object().unwrap();
        let mut keys: Vec<&[u8]> = row.keys().map(|k| k.as_bytes()).collect();
        let mut sorted = names.clone();
        keys.sort();
        sorted.sort();
        assert_eq!(keys, sorted, "{name}: JSON keys are the header names");
        let fields: Vec<&[u8]> =
            names.iter().map(|n| row[std::str::from_utf8(n).unwrap()].as_str().unwrap().as_bytes()).collect();
        want.push(ok(line, &fields));
    }
    want
}

/// A commons-csv control file: (its CSV's corpus path, expected reading).
/// Control lines are `n:[f1, f2, …]` (`CSVRecord#toString`).
fn commons(control: &str) -> (String, Vec<String>) {
    let (_, lines, ours) = COMMONS.iter().find(|(c, _, _)| *c == control).unwrap();
    let text = String::from_utf8(read(&format!("commons-csv/CSVFileParser/{control}"))).unwrap();
    let mut it = text.lines();
    let mut first = it.next().unwrap().split_whitespace();
    let csv = format!("commons-csv/CSVFileParser/{}", first.next().unwrap());
    let options: Vec<&str> = first.collect();
    assert!(options.iter().all(|o| *o == "IgnoreEmpty=true"), "{control}: options {options:?} are not ours");
    let ignore_empty = options.contains(&"IgnoreEmpty=true");
    it.next(); // The CSVFormat description.
    let mut records: Vec<Vec<&str>> = Vec::new();
    for l in it.filter(|l| !l.starts_with('#')) {
        let (n, rest) = l.split_once(':').unwrap();
        let inner = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap();
        let fields: Vec<&str> = inner.split(", ").collect();
        assert_eq!(fields.len(), n.parse::<usize>().unwrap(), "{control}: {l}");
        // Upstream keeps blank lines as one-empty-field records unless
        // IgnoreEmpty; events.md: "a completely empty line is not a row".
        if !ignore_empty && fields == [""] {
            continue;
        }
        records.push(fields);
    }
    assert_eq!(records.len(), lines.len(), "{control}: one start line per record");
    let want = records
        .iter()
        .zip(lines.iter())
        .map(|(fields, &line)| match ours.iter().find(|(l, _)| *l == line) {
            Some((_, outcome)) => format!("{line}{outcome}"),
            None => ok(line, &fields.iter().map(|f| f.as_bytes()).collect::<Vec<_>>()),
        })
        .collect();
    (csv, want)
}

/// The naive oracle: physical lines (`\r\n`, `\n` or a lone `\r`), blank
/// ones skipped after the header, split on `,`, `"…"` unwrapped.
fn by_line(path: &str, ours: &[(u64, &str)]) -> Vec<String> {
    let bytes = read(path);
    let mut bytes = bytes.strip_prefix(BOM).unwrap_or(&bytes);
    let mut lines: Vec<&[u8]> = Vec::new();
    while !bytes.is_empty() {
        let end = bytes.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(bytes.len());
        lines.push(&bytes[..end]);
        let term = if bytes[end..].starts_with(b"\r\n") { 2 } else { 1 };
        bytes = &bytes[(end + term).min(bytes.len())..];
    }
    let mut want = Vec::new();
    for (i, text) in lines.iter().enumerate() {
        let line = i as u64 + 1;
        if line > 1 && text.is_empty() {
            continue;
        }
        if let Some((_, outcome)) = ours.iter().find(|(l, _)| *l == line) {
            want.push(format!("{line}{outcome}"));
            continue;
        }
        let fields: Vec<&[u8]> = text
            .split(|&b| b == b',')
            .map(|f| {
                let inner = f.strip_prefix(b"\"").and_then(|f| f.strip_suffix(b"\"")).unwrap_or(f);
                assert!(!inner.contains(&b'"'), "{path}:{line} is not simple; give its outcome in the table");
                inner
            })
            .collect();
        want.push(ok(line, &fields));
    }
    want
}

/// Reads `path` with the real reader and compares with `want`; also checks
/// the reader against the bytes themselves: raw bytes, line numbers, what
/// lies between records, and that 1-byte reads give the same records.
#[track_caller]
fn check(path: &str, want: &[String]) {
    let bytes = read(path);
    let records = read_records(&bytes, usize::MAX);
    let got: Vec<String> = records.iter().map(render).collect();
    assert_eq!(got, want, "{path}");

    let one_byte = read_records(&bytes, 1);
    let same = one_byte
        .iter()
        .zip(&records)
        .all(|(a, b)| (a.start, a.end, &a.raw, render(a)) == (b.start, b.end, &b.raw, render(b)));
    assert!(same && one_byte.len() == records.len(), "{path}: 1-byte reads differ");

    let mut prev_end = 0;
    for r in &records {
        let (start, end) = (r.start as usize, r.end as usize);
        let mut gap = &bytes[prev_end..start];
        if prev_end == 0 {
            gap = gap.strip_prefix(BOM).unwrap_or(gap);
        }
        assert!(gap.iter().all(|&b| b == b'\r' || b == b'\n'), "{path}: only blank lines before line {}", r.line);
        assert_eq!(r.raw, raw_of(&bytes, r), "{path}: raw bytes of line {}", r.line);
        assert_eq!(r.line, 1 + line_ends(&bytes[..start]), "{path}: line of the record at byte {start}");
        prev_end = end;
    }
    assert!(bytes[prev_end..].iter().all(|&b| b == b'\r' || b == b'\n'), "{path}: only blank lines at the end");
}

/// Header and data records of `bytes`, read through a buffer of `buf` bytes.
fn read_records(bytes: &[u8], buf: usize) -> Vec<RawRecord> {
    let mut records = Vec::new();
    read_with(bytes, (0, 1), 1 << 20, buf.min(1 << 16), true, |rec, _, _| records.push(rec.clone()));
    records
}

/// A record's bytes in the file, final line end excluded (an unclosed quote
/// runs to the end of the file: its line ends are inside the quote).
fn raw_of<'a>(bytes: &'a [u8], r: &RawRecord) -> &'a [u8] {
    let all = &bytes[r.start as usize..r.end as usize];
    if r.error == Some(ingestd::core::record::Malformed::UnclosedQuote) {
        return all;
    }
    all.strip_suffix(b"\r\n").or_else(|| all.strip_suffix(b"\n")).or_else(|| all.strip_suffix(b"\r")).unwrap_or(all)
}

fn render(r: &RawRecord) -> String {
    match r.error {
        None => ok(r.line, &r.fields().collect::<Vec<_>>()),
        Some(e) => format!("{}!{e:?}", r.line),
    }
}

fn ok(line: u64, fields: &[&[u8]]) -> String {
    let fields: Vec<String> = fields.iter().map(|f| esc(f)).collect();
    format!("{line}[{}]", fields.join("|"))
}

fn line_of(rendered: &str) -> u64 {
    rendered[..rendered.find(['[', '!']).unwrap()].parse().unwrap()
}

/// Printable ASCII as is (`|` and `\` escaped), the rest as escapes.
fn esc(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'|' => s.push_str("\\|"),
            b'\\' => s.push_str("\\\\"),
            b' '..=b'~' => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// The corpora folder, or a failure that says what is missing.
fn corpora() -> &'static Path {
    let dir = Path::new(CORPORA);
    assert!(
        dir.is_dir(),
        "needs ../shared/corpora (the outside CSV corpora beside the repository): {} not found",
        dir.display()
    );
    dir
}

fn corpus(rel: &str) -> PathBuf {
    corpora().join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(corpus(rel)).unwrap_or_else(|e| panic!("{}: {e}", corpus(rel).display()))
}

/// Every `*.csv` under the corpora, as paths relative to it, sorted.
fn corpus_csv_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "csv") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(corpora(), &mut out);
    let mut names: Vec<String> =
        out.iter().map(|p| p.strip_prefix(CORPORA).unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Daemon level.
// ---------------------------------------------------------------------------

/// Every corpus file in one folder: each data record is one `missing_column`
/// reject at its expected line with its exact raw bytes, and every file adds
/// up and is done.
#[test]
#[ignore = "needs ../shared/corpora"]
fn daemon_rejects_every_corpus_row_as_missing_column() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    // Small batches: most files span several, so line numbers and raw bytes
    // are checked across batch boundaries (and resume offsets) too.
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "7");
    // File name in incoming → corpus path.
    let files: BTreeMap<String, String> = corpus_csv_files().into_iter().map(|p| (p.replace('/', "__"), p)).collect();
    for (name, path) in &files {
        d.drop_file(name, &read(path));
    }
    let status = d.run_until_idle(Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());

    let rows = db.files();
    assert!(db.scalar("SELECT max(batches) FROM ingest_files") > 1, "files were read in several batches");
    assert_eq!(rows.keys().collect::<Vec<_>>(), files.keys().collect::<Vec<_>>(), "every file was read");
    // file → (line, reason, raw, raw_truncated)
    type Stored = (i64, String, Vec<u8>, bool);
    let mut rejects: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for r in db
        .client()
        .query(
            "SELECT source_file, source_line, reason, raw_line, raw_truncated FROM ingest_rejects \
             ORDER BY source_file, source_line",
            &[],
        )
        .unwrap()
    {
        rejects.entry(r.get(0)).or_default().push((r.get(1), r.get(2), r.get(3), r.get(4)));
    }

    for (name, path) in &files {
        let bytes = read(path);
        let want = expected(path);
        let records = read_records(&bytes, usize::MAX);
        assert_eq!(records.iter().map(render).collect::<Vec<_>>(), want, "{path}: reader");
        let data = &records[1..];
        let f = &rows[name];
        let n = data.len() as i64;
        assert_eq!((f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()), (n, 0, 0, n, "done"), "{path}");
        assert!(f.adds_up(), "{path}: {f:?}");
        let got = rejects.remove(name).unwrap_or_default();
        let want: Vec<(i64, String, Vec<u8>, bool)> = want[1..]
            .iter()
            .zip(data)
            .map(|(w, r)| (line_of(w) as i64, "missing_column".to_owned(), raw_of(&bytes, r).to_vec(), false))
            .collect();
        assert_eq!(got, want, "{path}: rejects");
    }
    assert!(rejects.is_empty(), "rejects of unknown files: {:?}", rejects.keys());
}
