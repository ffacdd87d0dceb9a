//! Synthetic files: for the built-in pipeline (`RowMaker`, realistic
//! e-commerce events with the contract's kinds of bad rows), and for any
//! declared pipeline (`DeclaredMaker`, `ingestd generate --pipeline FILE`):
//! valid rows with values within every check of every column, bad rows that
//! each break exactly one declared check, and duplicates of the key. A
//! declared pipeline's rows are checked against the declaration itself
//! (`core::validate`) before they are written, so "valid" and "bad" are the
//! engine's own verdicts, and the counts printed per file are exact.

use std::io::{self, Write};
use std::path::Path;

use chrono::{Duration as ChronoDuration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

use crate::core::header::Header;
use crate::core::pipeline::Pipeline;
use crate::core::record::RawRecord;
use crate::core::schema::{Column, Kind, Requirement};
use crate::core::validate::validate;
use crate::core::value::{Decimal, Format};

pub const HEADER: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";

const CATEGORIES: [&str; 6] = ["electronics", "books", "home", "garden", "toys", "fashion"];
const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const TYPES: [&str; 4] = ["view", "add_to_cart", "remove_from_cart", "purchase"];

#[derive(Debug, Clone)]
pub struct GenSpec {
    pub rows: u64,
    pub bad_frac: f64,
    pub dup_frac: f64,
}

/// What a generated file holds, by construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    pub rows: u64,
    pub bad: u64,
    pub duplicates: u64,
}

/// Makes rows. Keeps the last ids it wrote so duplicates can refer to rows
/// of earlier files too.
pub struct RowMaker {
    rng: StdRng,
    recent: Vec<Uuid>,
}

impl RowMaker {
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        RowMaker { rng, recent: Vec::new() }
    }

    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    /// One valid row.
    fn valid(&mut self, id: Uuid) -> [String; 12] {
        let r = &mut self.rng;
        let event_type = TYPES[r.random_range(0..TYPES.len())];
        let price = if event_type == "purchase" || r.random_bool(0.5) {
            format!("{}.{:02}", r.random_range(1..2000), r.random_range(0..100))
        } else {
            String::new()
        };
        let ts = Utc::now() - ChronoDuration::milliseconds(r.random_range(0..3_600_000));
        let product = r.random_range(1..5000);
        [
            id.to_string(),
            event_type.to_owned(),
            format!("user_{}", r.random_range(1..100_000)),
            format!("sess_{:08x}", r.random::<u32>()),
            format!("prod_{product}"),
            format!("Product {product}, \"deluxe\""),
            CATEGORIES[product as usize % CATEGORIES.len()].to_owned(),
            price,
            r.random_range(1..6).to_string(),
            ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            DEVICES[r.random_range(0..DEVICES.len())].to_owned(),
            "Mozilla/5.0 (X11; Linux x86_64)".to_owned(),
        ]
    }

    /// Writes one CSV file of `spec.rows` data rows to `out` (any writer).
    pub fn write_rows(&mut self, out: impl Write, spec: &GenSpec) -> io::Result<GenStats> {
        let mut w = csv::WriterBuilder::new().flexible(true).from_writer(out);
        w.write_record(HEADER.split(',')).map_err(io::Error::other)?;
        let mut stats = GenStats::default();
        for _ in 0..spec.rows {
            stats.rows += 1;
            let roll: f64 = self.rng.random();
            if roll < spec.bad_frac {
                stats.bad += 1;
                let kind = self.rng.random_range(0..10u32);
                let id = self.uuid();
                let mut row = self.valid(id);
                match kind {
                    0 => row[0] = "not-a-uuid".into(),
                    1 => row[1] = "click".into(),
                    2 => row[2] = String::new(),
                    3 => row[7] = "12.345".into(),
                    4 => row[8] = "0".into(),
                    5 => row[9] = "2026-02-30T10:00:00Z".into(),
                    6 => row[9] = (Utc::now() + ChronoDuration::days(3)).to_rfc3339(),
                    7 => row[10] = "watch".into(),
                    8 => {
                        row[1] = "purchase".into();
                        row[7] = String::new();
                    }
                    _ => {
                        // Wrong field count.
                        w.write_record(&row[..11]).map_err(io::Error::other)?;
                        continue;
                    }
                }
                w.write_record(&row).map_err(io::Error::other)?;
            } else if roll < spec.bad_frac + spec.dup_frac && !self.recent.is_empty() {
                stats.duplicates += 1;
                let id = self.recent[self.rng.random_range(0..self.recent.len())];
                let row = self.valid(id);
                w.write_record(&row).map_err(io::Error::other)?;
            } else {
                let id = self.uuid();
                if self.recent.len() < 10_000 {
                    self.recent.push(id);
                } else {
                    let i = self.rng.random_range(0..self.recent.len());
                    self.recent[i] = id;
                }
                let row = self.valid(id);
                w.write_record(&row).map_err(io::Error::other)?;
            }
        }
        w.flush()?;
        Ok(stats)
    }
}

/// A file name that sorts by creation time and does not repeat.
/// `prefix` is `events` for the built-in pipeline, else the pipeline's name.
pub fn file_name(prefix: &str, seq: u64) -> String {
    format!("{prefix}_{}_{seq:06}.csv", Utc::now().format("%Y%m%dT%H%M%S%3f"))
}

/// Something that writes generated files: the Generator actor and
/// `ingestd generate` drive either maker through it.
pub trait FileMaker: Send {
    /// A header and `spec.rows` rows.
    fn rows(&mut self, out: &mut dyn Write, spec: &GenSpec) -> io::Result<GenStats>;

    /// Writes `dir/name` as a producer should: whole under a temp name,
    /// fsynced, then renamed into place.
    fn write_file(&mut self, dir: &Path, name: &str, spec: &GenSpec) -> io::Result<GenStats> {
        let target = dir.join(name);
        let mut file = crate::fsutil::AtomicFile::create(&target)?;
        let stats = self.rows(file.writer(), spec)?;
        file.commit(&target, true)?;
        Ok(stats)
    }
}

impl FileMaker for RowMaker {
    fn rows(&mut self, out: &mut dyn Write, spec: &GenSpec) -> io::Result<GenStats> {
        self.write_rows(out, spec)
    }
}

impl FileMaker for DeclaredMaker {
    fn rows(&mut self, out: &mut dyn Write, spec: &GenSpec) -> io::Result<GenStats> {
        self.write_rows(out, spec)
    }
}

/// Makes rows for one declaration.
pub struct DeclaredMaker {
    pipeline: std::sync::Arc<Pipeline>,
    rng: StdRng,
    /// Unique per maker: key columns of new rows use it, so a key repeats
    /// only when a duplicate is meant.
    counter: u64,
    /// Key values of recent valid rows (for duplicates), at most `RECENT`.
    recent_keys: Vec<Vec<String>>,
    header: Header,
}

const RECENT: usize = 10_000;

/// What generated text is made of.
const WORDS: [&str; 12] =
    ["books", "garden", "toys", "games", "music", "tools", "sports", "beauty", "home", "food", "pets", "office"];

impl DeclaredMaker {
    pub fn new(pipeline: std::sync::Arc<Pipeline>, seed: Option<u64>) -> DeclaredMaker {
        let mut rng: StdRng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        let mut rec = RawRecord::default();
        for c in &pipeline.schema.columns {
            rec.data.extend_from_slice(c.name.as_bytes());
            rec.bounds.push(rec.data.len());
        }
        let header = Header::parse(&pipeline.schema, &rec);
        // Distinct makers (files of several runs) start far apart.
        let counter = rng.random_range(0..1u64 << 40);
        DeclaredMaker { pipeline, rng, counter, recent_keys: Vec::new(), header }
    }

    /// A header and `spec.rows` rows.
    pub fn write_rows(&mut self, out: impl Write, spec: &GenSpec) -> io::Result<GenStats> {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(out);
        let names: Vec<&str> = self.pipeline.schema.columns.iter().map(|c| c.name.as_str()).collect();
        w.write_record(&names)?;
        let mut stats = GenStats::default();
        let keyed = !self.pipeline.schema.key.is_empty();
        for _ in 0..spec.rows {
            let roll: f64 = self.rng.random();
            let row = if roll < spec.bad_frac {
                match self.bad_row() {
                    Some(row) => {
                        stats.bad += 1;
                        row
                    }
                    None => self.valid_row(None),
                }
            } else if keyed && roll < spec.bad_frac + spec.dup_frac && !self.recent_keys.is_empty() {
                let pick = self.rng.random_range(0..self.recent_keys.len());
                let key = self.recent_keys[pick].clone();
                stats.duplicates += 1;
                self.valid_row(Some(key))
            } else {
                let row = self.valid_row(None);
                if keyed {
                    let key: Vec<String> = self.pipeline.schema.key.iter().map(|&k| row[k].clone()).collect();
                    if self.recent_keys.len() < RECENT {
                        self.recent_keys.push(key);
                    } else {
                        let at = self.rng.random_range(0..RECENT);
                        self.recent_keys[at] = key;
                    }
                }
                row
            };
            w.write_record(&row)?;
            stats.rows += 1;
        }
        w.flush()?;
        Ok(stats)
    }

    /// The engine's verdict on a row.
    fn verdict(&self, row: &[String]) -> Result<(), String> {
        let mut rec = RawRecord::default();
        for f in row {
            rec.data.extend_from_slice(f.as_bytes());
            rec.bounds.push(rec.data.len());
        }
        let mut values = Vec::new();
        validate(&self.pipeline.schema, &self.header, &rec, Utc::now(), &mut values).map_err(|r| r.reason.to_string())
    }

    /// A valid row; with `key`, the key columns take those values (a
    /// duplicate).
    fn valid_row(&mut self, key: Option<Vec<String>>) -> Vec<String> {
        for _ in 0..1000 {
            let mut row: Vec<String> = (0..self.pipeline.schema.columns.len()).map(|c| self.valid_field(c)).collect();
            if let Some(key) = &key {
                for (&k, v) in self.pipeline.schema.key.iter().zip(key) {
                    row[k] = v.clone();
                }
            }
            // A rule may want a column present (or not zero) that came out
            // empty: make it so, or try another row.
            self.satisfy_rules(&mut row);
            if self.verdict(&row).is_ok() {
                return row;
            }
        }
        panic!("pipeline {}: cannot make a valid row from its declaration", self.pipeline.name);
    }

    fn satisfy_rules(&mut self, row: &mut [String]) {
        let schema = self.pipeline.schema.clone();
        for rule in &schema.rules {
            for &(c, req) in &rule.require {
                let column = &schema.columns[c];
                let empty = row[c].is_empty();
                let zero = Decimal::parse(&row[c]).is_some_and(|d| d.is_zero());
                if empty || (req == Requirement::Nonzero && zero) {
                    row[c] = self.value_of(column, true);
                }
            }
        }
    }

    fn valid_field(&mut self, c: usize) -> String {
        let schema = &self.pipeline.schema;
        let column = schema.columns[c].clone();
        if schema.key.contains(&c) {
            self.counter += 1;
            return self.unique_value(&column, self.counter);
        }
        // Optional columns are sometimes empty.
        if !column.required && self.rng.random_bool(0.1) {
            return String::new();
        }
        self.value_of(&column, false)
    }

    /// A value of the column's type within all its checks; `nonzero`: not
    /// zero.
    fn value_of(&mut self, column: &Column, nonzero: bool) -> String {
        let r = &mut self.rng;
        match &column.kind {
            // A few dozen distinct values per column, as names, categories
            // and codes have (a rollup over them has a few dozen groups, not
            // one per row), cut to the column's length.
            Kind::Text => {
                let max = column.max_len.unwrap_or(24).max(1);
                let word = format!("{}{}", WORDS[r.random_range(0..WORDS.len())], r.random_range(0..4u8));
                word.chars().take(max).collect()
            }
            Kind::Uuid => uuid::Builder::from_random_bytes(r.random()).into_uuid().to_string(),
            Kind::Int => {
                let (lo, hi) = int_bounds(column);
                let mut n = r.random_range(lo..=hi);
                if nonzero && n == 0 {
                    n = if hi > 0 { 1 } else { -1 };
                }
                n.to_string()
            }
            Kind::Decimal { scale } => decimal_in(r, column, scale.unwrap_or(2).min(4), nonzero),
            Kind::Bool => ["true", "false", "t", "f", "yes", "no", "1", "0"][r.random_range(0..8)].to_owned(),
            Kind::Timestamp { format } => {
                // The last hour, as the built-in generator's: files that
                // arrive as a stream hold recent events.
                let t = Utc::now() - ChronoDuration::milliseconds(r.random_range(0..3_600_000));
                match format {
                    Some(f) => t.format(&f.pattern).to_string(),
                    None => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                }
            }
            Kind::Date { format } => {
                let d = Utc::now().date_naive() - ChronoDuration::days(r.random_range(0..365));
                match format {
                    Some(Format { pattern, .. }) => d.format(pattern).to_string(),
                    None => d.to_string(),
                }
            }
            Kind::Enum { values } => {
                let v = &values[r.random_range(0..values.len())];
                if r.random_bool(0.2) {
                    v.to_uppercase()
                } else {
                    v.clone()
                }
            }
        }
    }

    /// A key value that no other row of this maker has (`n` is unique).
    fn unique_value(&mut self, column: &Column, n: u64) -> String {
        match &column.kind {
            Kind::Uuid => {
                uuid::Uuid::from_u128((u128::from(n) << 64) | u128::from(self.rng.random::<u64>())).to_string()
            }
            // Within the range when there is one (a range narrower than the
            // rows makes repeats, which are then real duplicates).
            Kind::Int if column.range.is_some() => {
                let (lo, hi) = int_bounds(column);
                let span = (hi as i128 - lo as i128 + 1).max(1);
                (lo as i128 + (n as i128 % span)).to_string()
            }
            Kind::Int => n.to_string(),
            Kind::Text => {
                let s = format!("k{n:x}");
                let max = column.max_len.unwrap_or(64);
                s[s.len().saturating_sub(max)..].to_owned()
            }
            Kind::Decimal { .. } => n.to_string(),
            _ => self.value_of(column, false),
        }
    }

    /// A row that breaks exactly one declared check (the engine rejects it,
    /// for that one reason); `None` if the declaration has no check a row
    /// can break.
    fn bad_row(&mut self) -> Option<Vec<String>> {
        let schema = self.pipeline.schema.clone();
        let mut breaks: Vec<(usize, String)> = Vec::new();
        for (c, column) in schema.columns.iter().enumerate() {
            if column.required_in_header() {
                breaks.push((c, String::new()));
            }
            match &column.kind {
                Kind::Text => {
                    if let Some(max) = column.max_len {
                        breaks.push((c, "x".repeat(max + 1)));
                    }
                }
                Kind::Uuid => breaks.push((c, "not-a-uuid".into())),
                Kind::Int | Kind::Decimal { .. } => {
                    breaks.push((c, "1e3".into()));
                    if let Some(range) = &column.range {
                        if let Some(l) = &range.lower {
                            breaks.push((c, format!("-{}", 1 + l.text.trim_start_matches('-').len() * 1000)));
                        }
                        if let Some(u) = &range.upper {
                            breaks.push((c, format!("{}0", u.text.split('.').next().unwrap_or("9"))));
                        }
                    }
                    if let Kind::Decimal { scale: Some(s) } = column.kind {
                        breaks.push((c, format!("1.{}", "1".repeat(s + 1))));
                    }
                }
                Kind::Bool => breaks.push((c, "maybe".into())),
                Kind::Timestamp { .. } => {
                    breaks.push((c, "not a time".into()));
                    if let Some((ahead, _)) = &column.max_future {
                        let t = Utc::now() + *ahead + ChronoDuration::days(2);
                        let text = match &column.kind {
                            Kind::Timestamp { format: Some(f) } => t.format(&f.pattern).to_string(),
                            _ => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        };
                        breaks.push((c, text));
                    }
                }
                Kind::Date { .. } => breaks.push((c, "2021-02-30".into())),
                Kind::Enum { .. } => breaks.push((c, "no-such-value".into())),
            }
        }
        let rules: Vec<usize> = (0..schema.rules.len()).collect();
        for _ in 0..50 {
            let mut row = self.valid_row(None);
            let pick = self.rng.random_range(0..breaks.len() + rules.len());
            if pick < breaks.len() {
                let (c, value) = &breaks[pick];
                row[*c] = value.clone();
            } else {
                let rule = &schema.rules[rules[pick - breaks.len()]];
                for (c, v) in &rule.when {
                    row[*c] = v.clone();
                }
                let (c, _) = rule.require[0];
                row[c] = String::new();
            }
            if self.verdict(&row).is_err() {
                return Some(row);
            }
        }
        None
    }
}

/// The integers a column allows (a default span when it has no range).
fn int_bounds(column: &Column) -> (i64, i64) {
    let Some(range) = &column.range else { return (1, 1000) };
    let end = |b: &Option<crate::core::value::Bound>, open_default: i64, step: i64| match b {
        Some(b) => {
            let v = Decimal::parse(&b.text).and_then(|d| d.to_i64()).unwrap_or(open_default);
            if b.inclusive {
                v
            } else {
                v + step
            }
        }
        None => open_default,
    };
    let lo = end(&range.lower, 0, 1);
    let hi = end(&range.upper, lo.saturating_add(1000), -1);
    (lo, hi.max(lo))
}

/// A decimal within the column's range, with `scale` decimals.
fn decimal_in(r: &mut StdRng, column: &Column, scale: usize, nonzero: bool) -> String {
    let bound = |b: &Option<crate::core::value::Bound>| b.as_ref().and_then(|b| b.text.parse::<f64>().ok());
    let (lo, hi) = match &column.range {
        Some(range) => (bound(&range.lower).unwrap_or(0.0), bound(&range.upper).unwrap_or(1000.0)),
        None => (0.0, 1000.0),
    };
    let (lo, hi) = (lo.max(-1e9), hi.min(1e9).max(lo));
    let unit = 10f64.powi(-(scale as i32));
    for _ in 0..100 {
        let v = lo + r.random::<f64>() * (hi - lo);
        let text = format!("{v:.scale$}");
        let ok = Decimal::parse(&text).is_some_and(|d| {
            column.range.as_ref().is_none_or(|range| range.check(&d).is_none()) && !(nonzero && d.is_zero())
        });
        if ok {
            return text;
        }
    }
    format!("{:.scale$}", lo.max(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated files, validated by the engine: exactly the counts the
    /// generator printed, for every example declaration.
    #[test]
    fn generated_rows_get_the_verdicts_the_generator_counted() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
        let mut files: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty());
        for f in files {
            let p = std::sync::Arc::new(crate::pipelines::load_file(&f).unwrap());
            let mut maker = DeclaredMaker::new(p.clone(), Some(7));
            let mut buf = Vec::new();
            let stats = maker.write_rows(&mut buf, &GenSpec { rows: 2000, bad_frac: 0.1, dup_frac: 0.1 }).unwrap();
            let mut reader = crate::core::reader::RecordReader::new(&buf[..], 0, 1, 1 << 20);
            let mut rec = RawRecord::default();
            reader.read_header(&mut rec).unwrap();
            let header = Header::parse(&p.schema, &rec);
            let mut records = Vec::new();
            while reader.read_record(&mut rec).unwrap() {
                records.push(rec.clone());
            }
            let checked = crate::core::validate::validate_records(
                &p.schema,
                &header,
                records.iter(),
                "f.csv",
                Utc::now(),
                &mut Default::default(),
                &mut bytes::BytesMut::new(),
            );
            let name = f.display();
            assert_eq!(checked.rows, 2000, "{name}");
            assert_eq!(checked.rejects.len() as u64, stats.bad, "{name}: {:?}", checked.rejects.first());
            assert_eq!(checked.batch_duplicates, stats.duplicates, "{name}");
            assert!(stats.bad > 100 && (p.schema.key.is_empty() || stats.duplicates > 100), "{name}: {stats:?}");
        }
    }
}
