//! Maps the header record of a file to the schema's columns, once per file,
//! so that validation looks fields up by index.
//!
//! Contract (`spec/events.md`, "Files" and "Exact rules";
//! `spec/pipelines.md`, `aliases`): columns are matched by name or alias,
//! case-insensitively and trimmed; unknown columns are ignored but counted;
//! a required column that is absent or named twice makes every row of the
//! file `missing_column`.

use crate::core::record::RawRecord;
use crate::core::schema::Schema;

/// A file's column layout, built from its header record.
#[derive(Debug, Clone)]
pub struct Header {
    /// Position of each schema column in a record, by column index.
    index: Vec<Option<usize>>,
    /// The column at each position (`None` for unknown and shadowed ones), so
    /// a field-level problem can name its column without a search.
    by_position: Vec<Option<usize>>,
    /// Every row must have exactly this many fields, or it is `malformed_csv`.
    width: usize,
    /// Fields that map to no column: unknown names, non-UTF-8 names, and
    /// repeats of an optional column. Reported, never an error.
    extra: usize,
    /// Why every row of this file is `missing_column`; `None` when usable.
    problem: Option<String>,
    /// The header record as read, stored with the file so rejects can be
    /// re-validated later (`ingestd replay-rejects`).
    raw: Vec<u8>,
}

impl Header {
    /// Builds the layout from the header record's fields.
    ///
    /// - Names are trimmed of spaces and tabs and matched case-insensitively
    ///   (ASCII case folding: a non-ASCII look-alike such as the Kelvin sign
    ///   never matches `k`) against each column's name and aliases. A UTF-8
    ///   byte-order mark before the first name is skipped (the reader
    ///   should already have done so; this keeps the header robust if not).
    /// - Unknown names, and names that are not UTF-8, are extra columns.
    /// - A required column absent or named twice is a problem: every row of
    ///   the file becomes `missing_column`.
    /// - An optional column named twice: the first wins, the later ones
    ///   count as extra columns.
    /// - A header record that could not be split cleanly (`rec.error` set,
    ///   e.g. bad quoting) is a problem as well, since its columns cannot be
    ///   known: every row of the file becomes `missing_column`.
    pub fn parse(schema: &Schema, rec: &RawRecord) -> Header {
        let width = rec.len();
        let columns = schema.columns.len();
        let mut h = Header {
            index: vec![None; columns],
            by_position: vec![None; width],
            width,
            extra: 0,
            problem: None,
            raw: rec.raw.clone(),
        };
        if let Some(m) = rec.error {
            // `rec.data` is not kept for malformed records: map nothing.
            h.by_position.clear();
            h.problem = Some(format!("header is malformed: {}", m.detail()));
            return h;
        }
        // Required columns seen more than once; reported after the scan so
        // the message lists problems in declaration order.
        let mut repeated = vec![false; columns];
        for pos in 0..width {
            let mut bytes = rec.field(pos);
            if pos == 0 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            let column = std::str::from_utf8(bytes).ok().and_then(|name| {
                let name = trim(name);
                schema.columns.iter().position(|c| {
                    c.name.eq_ignore_ascii_case(name) || c.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
                })
            });
            let Some(c) = column else {
                h.extra += 1;
                continue;
            };
            if h.index[c].is_some() {
                if schema.columns[c].required_in_header() {
                    repeated[c] = true;
                }
                h.extra += 1;
                continue;
            }
            h.index[c] = Some(pos);
            h.by_position[pos] = Some(c);
        }
        let mut problems: Vec<String> = Vec::new();
        for (c, column) in schema.columns.iter().enumerate().filter(|(_, c)| c.required_in_header()) {
            if h.index[c].is_none() {
                problems.push(format!("missing required column {}", column.name));
            } else if repeated[c] {
                problems.push(format!("column {} named twice", column.name));
            }
        }
        if !problems.is_empty() {
            h.problem = Some(problems.join("; "));
        }
        h
    }

    /// The header of a file that could not be read: no columns, no rows.
    pub fn unread() -> Header {
        Header {
            index: Vec::new(),
            by_position: Vec::new(),
            width: 0,
            extra: 0,
            problem: Some("the file could not be read".into()),
            raw: Vec::new(),
        }
    }

    /// Position of column `c` (an index into the schema's columns) in each
    /// record, if the file has it.
    pub fn index(&self, c: usize) -> Option<usize> {
        self.index.get(c).copied().flatten()
    }

    /// The column at position `pos`, if that position maps to one.
    pub fn column_at(&self, pos: usize) -> Option<usize> {
        self.by_position.get(pos).copied().flatten()
    }

    /// The header record's raw bytes.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Number of fields in the header record.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of fields that map to no column.
    pub fn extra_columns(&self) -> usize {
        self.extra
    }

    /// Why every row of the file is `missing_column`, or `None`.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

/// The contract trims only spaces and tabs, not all Unicode whitespace.
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Malformed;
    use crate::core::testing::{record, schema, Column};

    const FULL: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";

    /// `expected`: the position of each listed column (others must be
    /// absent), the extra column count, and the problem.
    #[track_caller]
    fn check(line: &[u8], columns: &[(Column, usize)], extra: usize, problem: Option<&str>) {
        let h = Header::parse(schema(), &record(line));
        for c in Column::ALL {
            let want = columns.iter().find(|(k, _)| *k == c).map(|&(_, i)| i);
            assert_eq!(h.index(c.index()), want, "index of {}", c.name());
            if let Some(i) = want {
                assert_eq!(h.column_at(i), Some(c.index()));
            }
        }
        assert_eq!(h.extra_columns(), extra, "extra columns");
        assert_eq!(h.problem(), problem, "problem");
        assert_eq!(h.width(), line.split(|&b| b == b',').count(), "width");
    }

    /// Only the problem matters for these cases.
    #[track_caller]
    fn check_problem(line: &[u8], problem: Option<&str>) {
        assert_eq!(Header::parse(schema(), &record(line)).problem(), problem);
    }

    use Column::*;

    #[test]
    #[rustfmt::skip]
    fn column_table() {
        assert_eq!(Column::ALL.map(Column::name).join(","), FULL);
        let required: Vec<_> = Column::ALL.into_iter().filter(|c| schema().columns[c.index()].required_in_header()).map(Column::name).collect();
        assert_eq!(required, ["event_id", "event_type", "user_id", "product_id", "event_timestamp"]);
    }

    #[test]
    #[rustfmt::skip]
    fn mapping() {
        let all: Vec<(Column, usize)> = Column::ALL.into_iter().zip(0..).collect();
        check(FULL.as_bytes(), &all, 0, None);
        check(b"event_timestamp,product_id,user_id,event_type,event_id", &[(EventTimestamp, 0), (ProductId, 1), (UserId, 2), (EventType, 3), (EventId, 4)], 0, None);
        check(b" EVENT_ID\t,Event_Type,user_id ,product_id,event_timestamp", &[(EventId, 0), (EventType, 1), (UserId, 2), (ProductId, 3), (EventTimestamp, 4)], 0, None);
        check(b"\xEF\xBB\xBFevent_id,event_type,user_id,product_id,event_timestamp", &[(EventId, 0), (EventType, 1), (UserId, 2), (ProductId, 3), (EventTimestamp, 4)], 0, None);
        check(b"colour,event_id,event_type,user_id,,product_id,event_timestamp,\xFF", &[(EventId, 1), (EventType, 2), (UserId, 3), (ProductId, 5), (EventTimestamp, 6)], 3, None);
        check(b"event_id,price,event_type,user_id,PRICE,product_id,event_timestamp", &[(EventId, 0), (Price, 1), (EventType, 2), (UserId, 3), (ProductId, 5), (EventTimestamp, 6)], 1, None);
        // Unicode case folding would map the Kelvin sign to `k`; names are ASCII.
        check("event_id,event_type,user_id,product_id,event_timestamp,user_agent\u{212A}".as_bytes(), &[(EventId, 0), (EventType, 1), (UserId, 2), (ProductId, 3), (EventTimestamp, 4)], 1, None);
        // Only spaces and tabs are trimmed.
        check(b"event_id,event_type,user_id,product_id,event_timestamp,\xC2\xA0price", &[(EventId, 0), (EventType, 1), (UserId, 2), (ProductId, 3), (EventTimestamp, 4)], 1, None);
    }

    /// Aliases are names too; a required column named by its name and an
    /// alias is named twice.
    #[test]
    #[rustfmt::skip]
    fn aliases() {
        let p = crate::core::pipeline::Pipeline::parse("t.toml", "name = \"t\"\ntable = \"t\"\nkey = []\n[columns.event_time]\ntype = \"timestamp\"\nrequired = true\naliases = [\"Event Time\", \"ts\"]\n[columns.amount]\ntype = \"int\"\n").unwrap();
        let h = Header::parse(&p.schema, &record(b" event time ,AMOUNT"));
        assert_eq!((h.index(0), h.index(1), h.problem()), (Some(0), Some(1), None));
        assert_eq!(Header::parse(&p.schema, &record(b"TS,x")).index(0), Some(0));
        assert_eq!(Header::parse(&p.schema, &record(b"ts,event_time")).problem(), Some("column event_time named twice"));
        assert_eq!(Header::parse(&p.schema, &record(b"amount")).problem(), Some("missing required column event_time"));
    }

    #[test]
    #[rustfmt::skip]
    fn problems() {
        check_problem(b"event_id,event_type,product_id,event_timestamp", Some("missing required column user_id"));
        check_problem(b"event_id,event_type,user_id,product_id,event_timestamp,EVENT_ID", Some("column event_id named twice"));
        check_problem(b"event_type,user_id,product_id,event_timestamp,event_type", Some("missing required column event_id; column event_type named twice"));
        check_problem(b"", Some("missing required column event_id; missing required column event_type; missing required column user_id; missing required column product_id; missing required column event_timestamp"));
        check_problem(b"event_id,event_type,user_id,product_id,\xFFevent_timestamp", Some("missing required column event_timestamp"));
        check_problem(b"event_id,event_type,user_id,product_id,event_timestamp,price,price,device_type,device_type", None);
        check_problem(b"event_id,event_type,user_id,product_id,event_time stamp", Some("missing required column event_timestamp"));
    }

    #[test]
    fn malformed_header_is_a_problem() {
        let mut rec = record(FULL.as_bytes());
        rec.error = Some(Malformed::StrayQuote);
        let h = Header::parse(schema(), &rec);
        assert_eq!(h.problem(), Some("header is malformed: quote inside an unquoted field"));
        assert_eq!(h.index(EventId.index()), None);
    }
}
