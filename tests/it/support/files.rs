//! Input of known content: rows, whole test files with their oracle, and
//! what the folders hold afterwards.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

pub const HEADER: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A deterministic valid row.
pub fn row(n: u64) -> String {
    format!(
        "{},view,user_{n},sess_{n},prod_{},Product {n},books,{}.{:02},{},2026-01-02T03:04:05.123Z,mobile,agent",
        uuid_of(n),
        n % 100,
        n % 500 + 1,
        n % 100,
        n % 5 + 1
    )
}

/// The event_id of row `n`: the same n gives the same id.
pub fn uuid_of(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A file of `rows` valid rows numbered from `first`.
pub fn valid_file(first: u64, rows: u64) -> String {
    let mut s = String::with_capacity(rows as usize * 140 + 200);
    s.push_str(HEADER);
    s.push('\n');
    for n in first..first + rows {
        s.push_str(&row(n));
        s.push('\n');
    }
    s
}

/// Row `n` with field `idx` (0-based, in HEADER order) replaced.
pub fn with(n: u64, idx: usize, value: &str) -> String {
    with_all(n, &[(idx, value)])
}

/// Row `n` with several fields replaced.
pub fn with_all(n: u64, changes: &[(usize, &str)]) -> String {
    let mut fields: Vec<String> = row(n).split(',').map(str::to_owned).collect();
    for (idx, value) in changes {
        fields[*idx] = (*value).to_owned();
    }
    fields.join(",")
}

/// The lines of a file, joined with `\n` and ended by one.
pub fn csv_text(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

/// Byte offset just past the first `n` lines of `text`.
pub fn offset_after_lines(text: &str, n: usize) -> usize {
    text.match_indices('\n').nth(n - 1).map(|(i, _)| i + 1).unwrap()
}

/// One data line of a test file, and what must become of it.
#[derive(Debug, Clone)]
pub enum Line {
    /// `row(n)`: valid, event_id `uuid_of(n)`.
    Valid(u64),
    /// Row `n` with this user_id (still valid): carries a failpoint marker.
    Marked(u64, &'static str),
    /// Rejected with this reason.
    Bad(String, &'static str),
}

impl Line {
    pub fn text(&self) -> String {
        match self {
            Line::Valid(n) => row(*n),
            Line::Marked(n, user) => with(*n, 2, user),
            Line::Bad(text, _) => text.clone(),
        }
    }

    pub fn id(&self) -> Option<u64> {
        match self {
            Line::Valid(n) | Line::Marked(n, _) => Some(*n),
            Line::Bad(..) => None,
        }
    }
}

/// A file a test writes; its oracle is computed from its lines alone.
pub struct TestFile {
    pub name: String,
    pub lines: Vec<Line>,
}

impl TestFile {
    /// `rows` valid rows numbered from `first`, with two bad rows and a
    /// repeat of its first event at fixed lines: an invalid_uuid row after
    /// a third of the valid rows, an out_of_range row (whose event_id is
    /// well-formed and must not be stored) after two thirds, and the first
    /// event again at the end.
    pub fn new(name: &str, first: u64, rows: u64) -> TestFile {
        let mut lines = Vec::with_capacity(rows as usize + 3);
        for i in 0..rows {
            if i == rows / 3 {
                lines.push(Line::Bad(with(first + rows, 0, "not-a-uuid"), "invalid_uuid"));
            }
            if i == 2 * rows / 3 {
                lines.push(Line::Bad(with(first + rows + 1, 8, "0"), "out_of_range"));
            }
            lines.push(Line::Valid(first + i));
        }
        lines.push(Line::Valid(first));
        TestFile { name: name.into(), lines }
    }

    /// `rows` lines for events `first..`, the ones `bad(i)` picks made
    /// invalid_uuid rejects, then the first event again (a duplicate).
    pub fn with_bad(name: &str, first: u64, rows: u64, bad: impl Fn(u64) -> bool) -> TestFile {
        assert!(!bad(0), "the first line is repeated at the end: it must be valid");
        let mut lines: Vec<Line> = (0..rows)
            .map(|i| {
                if bad(i) {
                    Line::Bad(with(first + i, 0, "not-a-uuid"), "invalid_uuid")
                } else {
                    Line::Valid(first + i)
                }
            })
            .collect();
        lines.push(Line::Valid(first));
        TestFile { name: name.into(), lines }
    }

    /// `rows` data lines for events `first..`, with rejects and duplicates
    /// at fixed positions. Per 1000 lines: an invalid_uuid and an
    /// out_of_range reject, a duplicate inside the same 1000 lines and one
    /// of the 1000 before; per 5000 lines one malformed_csv. With `borrow`,
    /// once per 1000 lines an event of the file whose events start at
    /// `borrow` (a duplicate across files, of a line that is valid there).
    pub fn mixed(name: &str, first: u64, rows: u64, borrow: Option<u64>) -> TestFile {
        let lines = (0..rows)
            .map(|i| {
                let n = first + i;
                match i % 1000 {
                    999 => Line::Bad(with(n, 0, "not-a-uuid"), "invalid_uuid"),
                    333 => Line::Bad(with(n, 8, "0"), "out_of_range"),
                    500 if i % 5000 == 2500 => Line::Bad("x,y".into(), "malformed_csv"),
                    250 => Line::Valid(n - 100),
                    10 if i >= 1000 => Line::Valid(n - 20),
                    777 => Line::Valid(borrow.map_or(n, |other| other + i + 1)),
                    _ => Line::Valid(n),
                }
            })
            .collect();
        TestFile { name: name.into(), lines }
    }

    pub fn content(&self) -> String {
        let mut s = String::with_capacity(self.lines.len() * 140 + 200);
        s.push_str(HEADER);
        s.push('\n');
        for l in &self.lines {
            s.push_str(&l.text());
            s.push('\n');
        }
        s
    }

    /// Data lines with their source line numbers (the header is line 1).
    pub fn numbered(&self) -> impl Iterator<Item = (i64, &Line)> {
        self.lines.iter().enumerate().map(|(i, l)| (i as i64 + 2, l))
    }

    /// The first line of each event id in this file: the only line of it
    /// that may be stored, if this file's copy is the one written.
    pub fn first_lines(&self) -> HashMap<String, i64> {
        let mut first = HashMap::new();
        for (line, l) in self.numbered() {
            if let Some(n) = l.id() {
                first.entry(uuid_of(n)).or_insert(line);
            }
        }
        first
    }

    pub fn rows(&self) -> i64 {
        self.lines.len() as i64
    }

    pub fn valid(&self) -> i64 {
        self.lines.iter().filter(|l| l.id().is_some()).count() as i64
    }

    /// (line, text, reason) of each line to reject.
    pub fn bad_lines(&self) -> Vec<(i64, String, &'static str)> {
        self.numbered()
            .filter_map(|(line, l)| match l {
                Line::Bad(text, reason) => Some((line, text.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    /// (file, line, reason) of every line that must be rejected, as
    /// `TestDb::rejects` lists them.
    pub fn rejects(&self) -> Vec<(String, i64, String)> {
        self.bad_lines().into_iter().map(|(line, _, reason)| (self.name.clone(), line, reason.to_owned())).collect()
    }

    /// (event_id, file, line) of every event that must be stored from this
    /// file when no other file shares an event id with it: each valid row at
    /// its first line.
    pub fn stored(&self) -> BTreeSet<(String, String, i64)> {
        self.first_lines().into_iter().map(|(id, line)| (id, self.name.clone(), line)).collect()
    }

    /// (rows, written, duplicate, rejected) when no other file shares an
    /// event id with this one.
    pub fn oracle(&self) -> (i64, i64, i64, i64) {
        let distinct = self.first_lines().len() as i64;
        (self.rows(), distinct, self.valid() - distinct, self.bad_lines().len() as i64)
    }
}

/// `data` gzipped (one member).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The fingerprint the daemon gives a file of this content (the oracle for
/// identities): its size, then the first 12 bytes of the SHA-256 of its
/// first 64 KiB, in hex.
pub fn fingerprint_of(content: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(&content[..content.len().min(64 * 1024)]);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", content.len())
}

pub fn path_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Sorted names in a folder.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

pub fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// Names in `dir` that are temp files: hidden, `*.tmp` or `*.part`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    names_in(dir).into_iter().filter(|n| n.starts_with('.') || n.ends_with(".tmp") || n.ends_with(".part")).collect()
}

/// (line, reason, raw) of every record of a rejects file (header `line,
/// reason, detail, raw`), by line.
pub fn rejects_file(path: &Path) -> Vec<(i64, String, Vec<u8>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(reader.byte_headers().unwrap(), &csv::ByteRecord::from(vec!["line", "reason", "detail", "raw"]));
    let mut records: Vec<(i64, String, Vec<u8>)> = reader
        .byte_records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(r.len(), 4, "{}: {r:?}", path.display());
            let line = std::str::from_utf8(&r[0]).unwrap().parse().unwrap();
            (line, String::from_utf8(r[1].to_vec()).unwrap(), r[3].to_vec())
        })
        .collect();
    records.sort();
    records
}

/// A deterministic pseudo-random sequence (PCG-style LCG): the same seed
/// gives the same numbers, so a failure can be run again.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next_u64() >> 33) % n
    }
}
