//! The columns of a pipeline as data: one description from which the header
//! mapping, the rule order, the COPY encoding and every SQL column list are
//! derived. It is compiled from a pipeline declaration
//! ([`crate::core::pipeline`]); the built-in `events.md` contract is one
//! such declaration (`config/pipelines/ecommerce.toml`).

use chrono::{DateTime, TimeDelta, Utc};

use crate::core::reason::RejectReason;
use crate::core::value::{self, Decimal, Format, Range, Value};

/// The value types a column can declare (`spec/pipelines.md`, "Columns").
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Uuid,
    /// 64-bit.
    Int,
    /// `scale`: most digits after the point.
    Decimal {
        scale: Option<usize>,
    },
    Bool,
    Timestamp {
        format: Option<Format>,
    },
    Date {
        format: Option<Format>,
    },
    /// Allowed values, lower case (matched case-insensitively, stored lower).
    Enum {
        values: Vec<String>,
    },
}

impl Kind {
    /// The declaration's name of the type.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Uuid => "uuid",
            Kind::Int => "int",
            Kind::Decimal { .. } => "decimal",
            Kind::Bool => "bool",
            Kind::Timestamp { .. } => "timestamp",
            Kind::Date { .. } => "date",
            Kind::Enum { .. } => "enum",
        }
    }

    /// The reason a field of this type gets when it cannot be read.
    pub fn format_reason(&self) -> Option<RejectReason> {
        match self {
            Kind::Text => None,
            Kind::Uuid => Some(RejectReason::INVALID_UUID),
            Kind::Int | Kind::Decimal { .. } => Some(RejectReason::INVALID_NUMBER),
            Kind::Bool => Some(RejectReason::INVALID_BOOL),
            Kind::Timestamp { .. } => Some(RejectReason::INVALID_TIMESTAMP),
            Kind::Date { .. } => Some(RejectReason::INVALID_DATE),
            Kind::Enum { .. } => Some(RejectReason::INVALID_ENUM),
        }
    }

    /// The PostgreSQL type a new table gets without a `sql_type`.
    pub fn default_sql_type(&self) -> &'static str {
        match self {
            Kind::Text | Kind::Enum { .. } => "text",
            Kind::Uuid => "uuid",
            Kind::Int => "bigint",
            Kind::Decimal { .. } => "numeric",
            Kind::Bool => "boolean",
            Kind::Timestamp { .. } => "timestamptz",
            Kind::Date { .. } => "date",
        }
    }

    /// The wire types a value of this kind can be sent as.
    fn accepts(&self, phys: Phys) -> bool {
        use Phys::*;
        match self {
            Kind::Text | Kind::Enum { .. } => phys == Text,
            Kind::Uuid => matches!(phys, Uuid | Text),
            Kind::Int => matches!(phys, Int2 | Int4 | Int8 | Numeric),
            Kind::Decimal { .. } => phys == Numeric,
            Kind::Bool => phys == Bool,
            Kind::Timestamp { .. } => matches!(phys, Timestamptz | Timestamp),
            Kind::Date { .. } => phys == Date,
        }
    }
}

/// How a column's values travel in binary COPY: the base type of its
/// PostgreSQL column (binary COPY needs the exact wire type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phys {
    Text,
    Uuid,
    Int2,
    Int4,
    Int8,
    Numeric,
    Bool,
    Timestamptz,
    Timestamp,
    Date,
}

impl Phys {
    /// The wire type of a PostgreSQL type name (`varchar(64)`,
    /// `numeric(14,2)`, `integer`, `timestamp with time zone`…), by its
    /// base type; `None` for a type ingestd cannot send.
    pub fn of_sql_type(sql_type: &str) -> Option<Phys> {
        let lower = sql_type.trim().to_ascii_lowercase();
        let base = lower.split('(').next().unwrap_or("").trim();
        let base = base.strip_prefix("pg_catalog.").unwrap_or(base);
        Some(match base {
            "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" | "name" => Phys::Text,
            "uuid" => Phys::Uuid,
            "smallint" | "int2" => Phys::Int2,
            "integer" | "int" | "int4" => Phys::Int4,
            "bigint" | "int8" => Phys::Int8,
            "numeric" | "decimal" => Phys::Numeric,
            "boolean" | "bool" => Phys::Bool,
            "timestamptz" | "timestamp with time zone" => Phys::Timestamptz,
            "timestamp" | "timestamp without time zone" => Phys::Timestamp,
            "date" => Phys::Date,
            _ => return None,
        })
    }

    /// The type of this column in the writer's staging table: the wire
    /// type without modifiers, so a value the table's own modifiers refuse
    /// (a `varchar(64)`, a `numeric(10,2)`) fails at the merge, row by row.
    pub fn staging_type(self) -> &'static str {
        match self {
            Phys::Text => "text",
            Phys::Uuid => "uuid",
            Phys::Int2 => "int2",
            Phys::Int4 => "int4",
            Phys::Int8 => "int8",
            Phys::Numeric => "numeric",
            Phys::Bool => "boolean",
            Phys::Timestamptz => "timestamptz",
            Phys::Timestamp => "timestamp",
            Phys::Date => "date",
        }
    }

    /// Bounds an integer must fit on the wire.
    fn int_bounds(self) -> Option<(i64, i64, &'static str)> {
        match self {
            Phys::Int2 => Some((i16::MIN.into(), i16::MAX.into(), "smallint")),
            Phys::Int4 => Some((i32::MIN.into(), i32::MAX.into(), "integer")),
            _ => None,
        }
    }
}

/// One declared column, in file order.
#[derive(Debug, Clone)]
pub struct Column {
    /// Lower case; matched against header names case-insensitively.
    pub name: String,
    /// Other header names accepted for it, lower case.
    pub aliases: Vec<String>,
    pub kind: Kind,
    /// An empty field is `missing_field`, an absent column `missing_column`.
    pub required: bool,
    /// Used for an empty field (or an absent column); checked like a value
    /// when the declaration is loaded.
    pub default: Option<String>,
    /// Characters (Unicode scalar values).
    pub max_len: Option<usize>,
    pub range: Option<Range>,
    /// Latest accepted time past the daemon's clock, and its text for the
    /// reject detail (`24h` → "more than 24 h after the daemon's clock").
    pub max_future: Option<(TimeDelta, String)>,
    /// The reason a field gets when it cannot be read (a declared `reason`
    /// replaces the type's).
    pub format_reason: RejectReason,
    /// The declared `sql_type`, or the type's default mapping.
    pub sql_type: String,
    /// `sql_type` was declared: an existing table's column must have that
    /// very type (else any type that can hold the column's values will do).
    pub sql_type_declared: bool,
    pub phys: Phys,
}

/// A field's failure: its reason and the problem (the caller prefixes the
/// column's name).
pub type Fail = (RejectReason, String);

impl Column {
    /// Whether a file without this column is `missing_column` throughout.
    pub fn required_in_header(&self) -> bool {
        self.required && self.default.is_none()
    }

    /// A field's trimmed text → its stored value, with every check of the
    /// column in the contract's order: `missing_field`, the format reason,
    /// then the range reasons. `now` is the daemon's clock (`max_future`).
    pub fn value<'a>(&'a self, s: &'a str, now: DateTime<Utc>) -> Result<Value<'a>, Fail> {
        if s.is_empty() {
            return match &self.default {
                Some(d) => self.value(d, now),
                None if self.required => Err((RejectReason::MISSING_FIELD, "empty".into())),
                None => Ok(Value::Null),
            };
        }
        let format = self.format_reason;
        match &self.kind {
            Kind::Text => {
                // A string has at most as many chars as bytes: count only
                // when the bytes are over.
                if let Some(max) = self.max_len {
                    if s.len() > max && s.chars().count() > max {
                        return Err((RejectReason::TOO_LONG, format!("longer than {max} characters")));
                    }
                }
                Ok(Value::Text(s))
            }
            Kind::Uuid => value::parse_uuid(s.as_bytes()).map(Value::Uuid).ok_or_else(|| (format, "not a UUID".into())),
            Kind::Enum { values } => values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(s) || (!s.is_ascii() && s.to_lowercase() == **v))
                .map(|v| Value::Text(v))
                .ok_or_else(|| (format, format!("not one of {}", values.join(", ")))),
            Kind::Int => {
                let n =
                    Decimal::parse(s).filter(|d| d.frac.is_empty()).ok_or_else(|| (format, "not an integer".into()))?;
                if let Some(detail) = self.range.as_ref().and_then(|r| r.check(&n)) {
                    return Err((RejectReason::OUT_OF_RANGE, detail));
                }
                let n = n.to_i64().ok_or_else(|| (RejectReason::OUT_OF_RANGE, "not a 64-bit integer".into()))?;
                if let Some((lo, hi, name)) = self.phys.int_bounds() {
                    if !(lo..=hi).contains(&n) {
                        return Err((RejectReason::OUT_OF_RANGE, format!("does not fit the column's type {name}")));
                    }
                }
                Ok(Value::Int(n))
            }
            Kind::Decimal { scale } => {
                let d = Decimal::parse(s).ok_or_else(|| (format, "not a plain decimal number".into()))?;
                if let Some(scale) = *scale {
                    if d.scale() > scale {
                        let what = if scale == 1 { "decimal" } else { "decimals" };
                        return Err((format, format!("more than {scale} {what}")));
                    }
                }
                if let Some(detail) = self.range.as_ref().and_then(|r| r.check(&d)) {
                    return Err((RejectReason::OUT_OF_RANGE, detail));
                }
                // PostgreSQL's numeric limits (its binary format could not
                // carry more).
                if d.int.len() > 131_072 || d.frac.len() > 16_383 {
                    return Err((RejectReason::OUT_OF_RANGE, "more digits than numeric holds".into()));
                }
                Ok(Value::Decimal(d))
            }
            Kind::Bool => value::parse_bool(s).map(Value::Bool).ok_or_else(|| (format, "not a boolean".into())),
            Kind::Timestamp { format: pattern } => {
                let t = match pattern {
                    Some(p) => p.timestamp(s),
                    None => value::parse_timestamp(s.as_bytes()),
                }
                .ok_or_else(|| (format, "not a valid timestamp".into()))?;
                if let Some((ahead, text)) = &self.max_future {
                    // No overflow: chrono's dates span far less than
                    // TimeDelta's range.
                    if t.signed_duration_since(now) > *ahead {
                        let detail = format!("more than {} after the daemon's clock", value::spaced_duration(text));
                        return Err((RejectReason::FUTURE_TIMESTAMP, detail));
                    }
                }
                Ok(Value::Timestamp(t))
            }
            Kind::Date { format: pattern } => match pattern {
                Some(p) => p.date(s),
                None => value::parse_date(s.as_bytes()),
            }
            .map(Value::Date)
            .ok_or_else(|| (format, "not a valid date".into())),
        }
    }

    /// Checks that `phys` can carry this column's values.
    pub fn accepts(&self, phys: Phys) -> bool {
        self.kind.accepts(phys)
    }
}

/// A rule's requirement on a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Not empty.
    Present,
    /// Present and, for numbers, not zero.
    Nonzero,
}

/// A cross-column rule: when every `when` column equals its value (after
/// the column's own normalisation) and some `require` fails, the row is
/// rejected with `reason`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub reason: RejectReason,
    /// Column index and the declared value's text (a valid value of the
    /// column: checked at load, parsed again where compared).
    pub when: Vec<(usize, String)>,
    pub require: Vec<(usize, Requirement)>,
    /// The reject's detail after the column name; generated when absent.
    pub detail: Option<String>,
}

/// How a row's key becomes the 128-bit number rows are sorted and
/// compared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// `key = []`: no dedup.
    None,
    /// One column whose values map one to one onto 128 bits, in order
    /// (uuid, int, bool, date, timestamp): the number is the key.
    Exact,
    /// Anything else: a 128-bit hash of the key's normalised bytes; equal
    /// hashes are told apart by those bytes.
    Hashed,
}

/// The columns, rules and key of a pipeline.
#[derive(Debug, Clone)]
pub struct Schema {
    pub columns: Vec<Column>,
    pub rules: Vec<Rule>,
    /// Indexes into `columns`.
    pub key: Vec<usize>,
    pub key_mode: KeyMode,
}

impl Schema {
    pub fn new(columns: Vec<Column>, rules: Vec<Rule>, key: Vec<usize>) -> Schema {
        let key_mode = match key.as_slice() {
            [] => KeyMode::None,
            [k] if matches!(
                columns[*k].kind,
                Kind::Uuid | Kind::Int | Kind::Bool | Kind::Date { .. } | Kind::Timestamp { .. }
            ) =>
            {
                KeyMode::Exact
            }
            _ => KeyMode::Hashed,
        };
        Schema { columns, rules, key, key_mode }
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Every reason a row of this schema can get from its checks: the
    /// labels a metric is initialised with. (A database refusal can give
    /// more, see `db::write::reason_for_refusal`.)
    pub fn reasons(&self) -> Vec<RejectReason> {
        let mut all = vec![RejectReason::MISSING_COLUMN, RejectReason::MALFORMED_CSV, RejectReason::MISSING_FIELD];
        let mut add = |r: RejectReason| {
            if !all.contains(&r) {
                all.push(r);
            }
        };
        for c in &self.columns {
            if c.kind != Kind::Text {
                add(c.format_reason);
            }
            if matches!(c.kind, Kind::Int | Kind::Decimal { .. }) {
                add(RejectReason::OUT_OF_RANGE);
            }
            if c.max_future.is_some() {
                add(RejectReason::FUTURE_TIMESTAMP);
            }
            if c.max_len.is_some() {
                add(RejectReason::TOO_LONG);
            }
        }
        for r in &self.rules {
            add(r.reason);
        }
        all
    }
}
