//! Checks rows against a pipeline's schema and turns the valid ones into
//! COPY rows, or names the one reason each other row is rejected.
//!
//! A row with several problems gets exactly one reason, by the contract's
//! priority: `missing_column` (the file's header), then `malformed_csv`
//! (the record itself, every field, known column or not), then the columns
//! in declaration order (for each: `missing_field`, its format reason, its
//! range reasons), then the rules in declaration order. The code below is
//! laid out in that order, so reading it top to bottom is reading the
//! priority rule.
//!
//! [`validate_records`] is the one place rows are validated: the Validator
//! runs it on every read batch, the Writer on a batch it isolates refused
//! rows of, and `replay-rejects` on stored rejects. It also drops in-batch
//! duplicates (first one wins) and sets apart presumed duplicates.
//!
//! Runs once per row on millions of rows: no regex, no chrono format strings
//! (unless a column declares one), and a valid row allocates nothing: its
//! values borrow the record's text and go straight into the COPY buffer.

use bytes::BytesMut;
use chrono::{DateTime, Utc};

use crate::core::copy::{CopyEncoder, CopyPayload};
use crate::core::header::{trim, Header};
use crate::core::key::{key_of, RecentKeys};
use crate::core::reason::RejectReason;
use crate::core::record::{Fields, RawRecord, RecordView};
use crate::core::schema::{KeyMode, Requirement, Schema};
use crate::core::value::Value;

/// Why a row was rejected: its reason, and a short human detail that names
/// the column and the problem (e.g. `price: more than 2 decimals`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }
}

/// Fields whose checked text `validate` keeps between its steps.
const KEPT_FIELDS: usize = 32;

/// Validates one record (a data row of a file whose header is `header`) as
/// of the daemon's clock `now`, filling `values` with the row's stored
/// values in column order. Fields are trimmed of spaces and tabs; a field
/// empty after trimming, or a column the file lacks, is empty (its default,
/// `missing_field`, or null).
pub fn validate<'a>(
    schema: &'a Schema,
    header: &Header,
    rec: impl Fields<'a>,
    now: DateTime<Utc>,
    values: &mut Vec<Value<'a>>,
) -> Result<(), Rejection> {
    values.clear();

    // 1. The file's header: its rows cannot be read at all, malformed or not.
    if let Some(problem) = header.problem() {
        return Err(Rejection::new(RejectReason::MISSING_COLUMN, problem));
    }

    // 2. The record as a whole. Every field is checked, known column or
    //    not, before any column rule runs.
    if let Some(m) = rec.malformed() {
        return Err(Rejection::new(RejectReason::MALFORMED_CSV, m.detail()));
    }
    if rec.field_count() != header.width() {
        return Err(Rejection::new(
            RejectReason::MALFORMED_CSV,
            format!("{} fields, the header has {}", rec.field_count(), header.width()),
        ));
    }
    // The checked text of the first fields is kept for step 3, so that
    // UTF-8 is checked once per field (a wider row checks its later fields
    // again there).
    let mut texts: [&'a str; KEPT_FIELDS] = [""; KEPT_FIELDS];
    for pos in 0..rec.field_count() {
        let bytes = rec.field_bytes(pos);
        let Ok(s) = std::str::from_utf8(bytes) else {
            return Err(field_malformed(schema, header.column_at(pos), pos, "invalid UTF-8"));
        };
        // PostgreSQL text cannot hold NUL.
        if s.as_bytes().contains(&0) {
            return Err(field_malformed(schema, header.column_at(pos), pos, "NUL byte"));
        }
        if let Some(slot) = texts.get_mut(pos) {
            *slot = s;
        }
    }

    // 3. The columns, in declaration order.
    for (c, column) in schema.columns.iter().enumerate() {
        let text = match header.index(c) {
            Some(pos) => trim(match texts.get(pos) {
                Some(s) => s,
                // UTF-8 was checked above.
                None => std::str::from_utf8(rec.field_bytes(pos)).unwrap_or_default(),
            }),
            None => "",
        };
        match column.value(text, now) {
            Ok(v) => values.push(v),
            Err((reason, problem)) => return Err(Rejection::new(reason, format!("{}: {problem}", column.name))),
        }
    }

    // 4. The rules across columns, in declaration order.
    for rule in &schema.rules {
        let applies = rule.when.iter().all(|(c, text)| {
            let column = &schema.columns[*c];
            column.value(text, now).is_ok_and(|want| values[*c].same_as(&want))
        });
        if !applies {
            continue;
        }
        let failed = rule.require.iter().find(|(c, r)| match r {
            Requirement::Present => values[*c].is_null(),
            Requirement::Nonzero => !values[*c].is_nonzero(),
        });
        if let Some(&(c, requirement)) = failed {
            let detail = match &rule.detail {
                Some(d) => d.clone(),
                None => rule_detail(schema, &rule.when, requirement),
            };
            return Err(Rejection::new(rule.reason, format!("{}: {detail}", schema.columns[c].name)));
        }
    }
    Ok(())
}

fn field_malformed(schema: &Schema, column: Option<usize>, pos: usize, problem: &str) -> Rejection {
    let detail = match column {
        Some(c) => format!("{}: {problem}", schema.columns[c].name),
        // 1-based, like the line numbers, for the person reading the reject.
        None => format!("field {}: {problem}", pos + 1),
    };
    Rejection::new(RejectReason::MALFORMED_CSV, detail)
}

/// "required when status = refunded", "must not be zero when …".
fn rule_detail(schema: &Schema, when: &[(usize, String)], requirement: Requirement) -> String {
    let what = match requirement {
        Requirement::Present => "required",
        Requirement::Nonzero => "required and not zero",
    };
    if when.is_empty() {
        return what.to_owned();
    }
    let conditions: Vec<String> = when.iter().map(|(c, v)| format!("{} = {v}", schema.columns[*c].name)).collect();
    format!("{what} when {}", conditions.join(" and "))
}

/// A row that failed a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectRow {
    pub line: u64,
    pub reason: RejectReason,
    pub detail: String,
    pub raw: Vec<u8>,
    pub raw_truncated: bool,
}

/// What validation needs of a record besides its fields.
pub trait Record<'a>: Fields<'a> + Copy {
    fn line(&self) -> u64;
    fn raw(&self) -> &'a [u8];
    fn raw_truncated(&self) -> bool;
}

impl<'a> Record<'a> for RecordView<'a> {
    fn line(&self) -> u64 {
        self.line
    }
    fn raw(&self) -> &'a [u8] {
        self.raw
    }
    fn raw_truncated(&self) -> bool {
        self.raw_truncated
    }
}

impl<'a> Record<'a> for &'a RawRecord {
    fn line(&self) -> u64 {
        self.line
    }
    fn raw(&self) -> &'a [u8] {
        &self.raw
    }
    fn raw_truncated(&self) -> bool {
        self.raw_truncated
    }
}

/// A batch's rows, checked.
#[derive(Debug, Default)]
pub struct Checked {
    /// Data rows seen: events + repeats + rejects + duplicates.
    pub rows: u64,
    /// The valid rows not presumed duplicates, encoded for COPY, in key
    /// order (file order without a key).
    pub events: CopyPayload,
    /// The line of each row of `events`, in the same order.
    pub event_lines: Vec<u64>,
    /// Valid rows whose key was seen in a recent batch (`RecentKeys`): most
    /// likely duplicates, kept apart so the rest can go straight into the
    /// table. The Writer checks them against the table.
    pub repeats: CopyPayload,
    pub rejects: Vec<RejectRow>,
    /// Valid rows dropped because an earlier row of the batch had their key.
    pub batch_duplicates: u64,
}

/// What validation keeps from one batch to the next: the recent keys
/// (presumed duplicates) and scratch lists reused so a batch costs no fresh
/// allocations for them.
#[derive(Default)]
pub struct Validation {
    /// `None`: no presumed duplicates (every valid row is an event).
    pub recent: Option<RecentKeys>,
    keys: Vec<u8>,
    metas: Vec<Meta>,
}

impl Validation {
    /// With the memory of recent keys (the Validator's).
    pub fn remembering() -> Validation {
        Validation { recent: Some(RecentKeys::default()), ..Validation::default() }
    }
}

/// A valid row, encoded where it goes.
#[derive(Debug, Clone, Copy)]
struct Meta {
    key: u128,
    /// Its normalised key bytes in `Validation::keys` (hashed keys only).
    key_bytes: (u32, u32),
    /// Encoded among the presumed duplicates (else the events), at this
    /// stored index.
    repeat: bool,
    row: u32,
    line: u64,
}

/// Validates every record, encodes the valid ones for COPY (the events into
/// `room`: see `CopyEncoder::within`; the room left is handed back in it),
/// drops in-batch duplicates (the first row of a key wins) and sets apart
/// the presumed duplicates. Rows go out in key order: writers committing
/// different files at once then take the same keys in the same order, so
/// one waits for the other instead of deadlocking. Rows are encoded as they
/// are read and only their order is sorted (`CopyPayload::ordered`): a
/// batch is never copied to be sorted.
pub fn validate_records<'a, R: Record<'a>>(
    schema: &'a Schema,
    header: &Header,
    records: impl IntoIterator<Item = R>,
    source_file: &str,
    now: DateTime<Utc>,
    state: &mut Validation,
    room: &mut BytesMut,
) -> Checked {
    let mut out = Checked::default();
    let mut values: Vec<Value<'a>> = Vec::with_capacity(schema.columns.len());
    let mut events = CopyEncoder::within(std::mem::take(room));
    let mut repeats = CopyEncoder::new(0);
    state.keys.clear();
    state.metas.clear();
    for rec in records {
        out.rows += 1;
        match validate(schema, header, rec, now, &mut values) {
            Ok(()) => {
                let start = state.keys.len() as u32;
                let key = key_of(schema, &values, &mut state.keys);
                // Presumed a duplicate: its key is in a recent batch (this
                // batch's keys join only after).
                let repeat = state.recent.as_ref().is_some_and(|r| r.contains(key));
                let target = if repeat { &mut repeats } else { &mut events };
                let row = target.push_row(schema, &values, key, rec.line(), source_file);
                let key_bytes = (start, state.keys.len() as u32);
                state.metas.push(Meta { key, key_bytes, repeat, row, line: rec.line() });
            }
            Err(rejection) => out.rejects.push(RejectRow {
                line: rec.line(),
                reason: rejection.reason,
                detail: rejection.detail,
                raw: rec.raw().to_vec(),
                raw_truncated: rec.raw_truncated(),
            }),
        }
    }
    if schema.key_mode != KeyMode::None {
        // Sorted by key, then file order (the sort is stable): the first
        // row of each key leads its run, the rest are in-batch duplicates.
        let keys = &state.keys;
        let bytes = |m: &Meta| &keys[m.key_bytes.0 as usize..m.key_bytes.1 as usize];
        state.metas.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| bytes(a).cmp(bytes(b))));
        let before = state.metas.len();
        state.metas.dedup_by(|later, first| later.key == first.key && bytes(later) == bytes(first));
        out.batch_duplicates = (before - state.metas.len()) as u64;
    }
    let events_order: Vec<u32> = state.metas.iter().filter(|m| !m.repeat).map(|m| m.row).collect();
    let repeats_order: Vec<u32> = state.metas.iter().filter(|m| m.repeat).map(|m| m.row).collect();
    out.event_lines = state.metas.iter().filter(|m| !m.repeat).map(|m| m.line).collect();
    if let Some(recent) = state.recent.as_mut() {
        for m in &state.metas {
            recent.insert(m.key);
        }
    }
    let (events, rest) = events.finish_within();
    *room = rest;
    // In file order already when nothing was sorted out or reordered.
    let in_place = |order: &[u32], stored: u64| {
        order.len() as u64 == stored && order.iter().enumerate().all(|(i, &r)| r as usize == i)
    };
    let stored = events.rows();
    out.events = if in_place(&events_order, stored) { events } else { events.ordered(events_order) };
    let repeats = repeats.finish();
    let stored = repeats.rows();
    out.repeats = if in_place(&repeats_order, stored) { repeats } else { repeats.ordered(repeats_order) };
    out
}

#[cfg(test)]
mod tests;
