//! A pipeline declaration (`spec/pipelines.md`): one TOML file that says
//! where files come from, how their columns are read and checked, which
//! table they go to, what PostgreSQL derives from them and which
//! aggregates it keeps. Loaded once into a [`Pipeline`]; everything that
//! depends on the layout is derived from it.
//!
//! The built-in pipeline, the `events.md` contract, is the file
//! `config/pipelines/ecommerce.toml`, compiled into the binary and read by
//! this same code ([`builtin`]).
//!
//! Every problem is one line naming the file and the key
//! (`pipeline file x.toml: columns.amount.range: …`). Identifiers (table,
//! column, rollup, view and index names) must be plain lower-case SQL
//! names; they are quoted wherever they reach SQL all the same.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::core::reason::RejectReason;
use crate::core::schema::{Column, Kind, Phys, Requirement, Rule, Schema};
use crate::core::value::{self, Format, Range};

/// The built-in pipeline's declaration, compiled in.
pub const BUILTIN_TOML: &str = include_str!("../../config/pipelines/ecommerce.toml");
/// How the built-in pipeline's file is named in messages.
pub const BUILTIN_SOURCE: &str = "config/pipelines/ecommerce.toml (built in)";

/// The built-in pipeline (the `events.md` contract), loaded once.
pub fn builtin() -> Arc<Pipeline> {
    static BUILTIN: OnceLock<Arc<Pipeline>> = OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            Arc::new(Pipeline::parse(BUILTIN_SOURCE, BUILTIN_TOML).expect("the built-in pipeline is valid"))
        })
        .clone()
}

/// Provenance columns every pipeline table has after its own.
pub const PROVENANCE: [&str; 3] = ["ingested_at", "source_file", "source_line"];

/// A problem with a declaration: one line, naming the file and the key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("pipeline file {file}: {key}: {message}")]
pub struct DeclarationError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// What happens to a file once its rows are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterCommit {
    Move,
    Delete,
    Keep,
}

/// A table name, optionally schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// The name quoted for SQL: `"schema"."table"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(s), quote(&self.name)),
            None => quote(&self.name),
        }
    }

    /// As written (for messages and `to_regclass`).
    pub fn plain(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// A name in the same schema (for rollups, views and indexes).
    pub fn sibling(&self, name: &str) -> TableName {
        TableName { schema: self.schema.clone(), name: name.to_owned() }
    }
}

/// Quotes an identifier for SQL. Identifiers are checked to be plain names
/// when loaded; quoting anyway keeps reserved words (`order`, `user`) usable.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A column computed by PostgreSQL from the row's columns (and earlier
/// derived columns) in the statement that inserts the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub name: String,
    pub sql: String,
    pub sql_type: String,
}

/// An index of `[indexes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub column: String,
    pub method: IndexMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMethod {
    Btree,
    Brin,
    Hash,
}

impl IndexMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexMethod::Btree => "btree",
            IndexMethod::Brin => "brin",
            IndexMethod::Hash => "hash",
        }
    }
}

/// The aggregate of a rollup measure: how a stored value and a new
/// transaction's value combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
}

/// An aggregate kept exactly once: one row per distinct `group_by` tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub table: TableName,
    /// Column name → SQL expression over the row's columns, in order.
    pub group_by: Vec<(String, String)>,
    /// Column name → aggregate call (`count(*)`, `sum(revenue)`…), in order.
    pub measures: Vec<(String, String, Aggregate)>,
}

/// A view created or replaced at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub name: TableName,
    pub sql: String,
}

/// A loaded declaration.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `[a-z][a-z0-9_]{0,62}`, unique in the daemon.
    pub name: String,
    /// Where it came from, for messages (a path, or the built-in's name).
    pub source: String,
    pub table: TableName,
    pub schema: Schema,
    /// Folders; `None`: the main config's `paths.*`.
    pub incoming: Option<PathBuf>,
    pub processed: Option<PathBuf>,
    pub bad_records: Option<PathBuf>,
    /// Per-pipeline settings; `None`: the main config's `pipeline.*`.
    pub after_commit: Option<AfterCommit>,
    pub stable_for_ms: Option<u64>,
    pub batch_rows: Option<usize>,
    pub derived: Vec<Derived>,
    pub indexes: Vec<Index>,
    pub rollups: Vec<Rollup>,
    pub views: Vec<View>,
}

impl Pipeline {
    /// Parses a declaration's text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Pipeline, DeclarationError> {
        let err =
            |key: &str, message: String| DeclarationError { file: source.to_owned(), key: key.to_owned(), message };
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err("(syntax)", e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
        })?;
        Loader { source }.pipeline(&doc)
    }

    /// Every reason a row of this pipeline can get from its checks (the
    /// labels its metric is initialised with).
    pub fn reasons(&self) -> Vec<RejectReason> {
        let mut all = self.schema.reasons();
        if !self.derived.is_empty() {
            all.push(RejectReason::DERIVED_FAILED);
        }
        all
    }

    /// Rows go straight into the table by COPY only when PostgreSQL has
    /// nothing to compute on the way (no derived columns, no rollups).
    pub fn direct_copy_allowed(&self) -> bool {
        self.derived.is_empty() && self.rollups.is_empty()
    }

    /// Sets the wire type of each column from the table as it exists
    /// (binary COPY needs the exact type).
    pub fn set_wire_types(&mut self, phys: &[(usize, Phys)]) {
        for &(c, p) in phys {
            self.schema.columns[c].phys = p;
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "table",
    "key",
    "incoming",
    "processed",
    "bad_records",
    "after_commit",
    "stable_for_ms",
    "batch_rows",
    "columns",
    "rules",
    "derived",
    "indexes",
    "rollups",
    "views",
];
const COLUMN_KEYS: &[&str] = &[
    "type",
    "required",
    "default",
    "max_len",
    "scale",
    "range",
    "values",
    "max_future",
    "format",
    "reason",
    "aliases",
    "sql_type",
];

struct Loader<'a> {
    source: &'a str,
}

type Res<T> = Result<T, DeclarationError>;

impl Loader<'_> {
    fn err<T>(&self, key: &str, message: impl Into<String>) -> Res<T> {
        Err(DeclarationError { file: self.source.to_owned(), key: key.to_owned(), message: message.into() })
    }

    fn unknown_keys(&self, prefix: &str, t: &toml::Table, known: &[&str]) -> Res<()> {
        match t.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => self.err(&join(prefix, k), format!("unknown key (expected one of: {})", known.join(", "))),
            None => Ok(()),
        }
    }

    fn string(&self, key: &str, v: &toml::Value) -> Res<String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            other => self.err(key, format!("expected a string, got {}", other.type_str())),
        }
    }

    fn table<'t>(&self, key: &str, v: &'t toml::Value) -> Res<&'t toml::Table> {
        match v {
            toml::Value::Table(t) => Ok(t),
            other => self.err(key, format!("expected a table, got {}", other.type_str())),
        }
    }

    fn uint(&self, key: &str, v: &toml::Value) -> Res<u64> {
        match v {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            other => self.err(key, format!("expected a non-negative integer, got {other}")),
        }
    }

    fn bool(&self, key: &str, v: &toml::Value) -> Res<bool> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            other => self.err(key, format!("expected true or false, got {other}")),
        }
    }

    /// A scalar as the text a CSV field would hold.
    fn scalar_text(&self, key: &str, v: &toml::Value) -> Res<String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => self.err(key, format!("expected a value, got {}", other.type_str())),
        }
    }

    fn ident(&self, key: &str, s: &str) -> Res<String> {
        if is_ident(s) {
            Ok(s.to_owned())
        } else {
            self.err(key, format!("{s:?} is not a plain SQL name ([a-z_][a-z0-9_]*, at most 63 characters)"))
        }
    }

    fn table_name(&self, key: &str, s: &str) -> Res<TableName> {
        match s.split_once('.') {
            Some((schema, name)) => {
                Ok(TableName { schema: Some(self.ident(key, schema)?), name: self.ident(key, name)? })
            }
            None => Ok(TableName { schema: None, name: self.ident(key, s)? }),
        }
    }

    fn pipeline(&self, doc: &toml::Table) -> Res<Pipeline> {
        self.unknown_keys("", doc, TOP_KEYS)?;
        let name = match doc.get("name") {
            Some(v) => self.string("name", v)?,
            None => return self.err("name", "missing (every pipeline has a name)"),
        };
        if !(is_ident(&name) && name.starts_with(|c: char| c.is_ascii_lowercase())) {
            return self.err("name", format!("{name:?} must match [a-z][a-z0-9_]{{0,62}}"));
        }
        let table = match doc.get("table") {
            Some(v) => self.table_name("table", &self.string("table", v)?)?,
            None => return self.err("table", "missing (the target table)"),
        };
        let folder = |key: &str| -> Res<Option<PathBuf>> {
            doc.get(key).map(|v| self.string(key, v).map(PathBuf::from)).transpose()
        };
        let (incoming, processed, bad_records) = (folder("incoming")?, folder("processed")?, folder("bad_records")?);
        let after_commit = match doc.get("after_commit") {
            None => None,
            Some(v) => Some(match self.string("after_commit", v)?.as_str() {
                "move" => AfterCommit::Move,
                "delete" => AfterCommit::Delete,
                "keep" => AfterCommit::Keep,
                other => return self.err("after_commit", format!("{other:?}: expected move, delete or keep")),
            }),
        };
        let stable_for_ms = doc.get("stable_for_ms").map(|v| self.uint("stable_for_ms", v)).transpose()?;
        let batch_rows = match doc.get("batch_rows") {
            None => None,
            Some(v) => match self.uint("batch_rows", v)? {
                0 => return self.err("batch_rows", "must be at least 1"),
                n => Some(n as usize),
            },
        };

        let columns_table = match doc.get("columns") {
            Some(v) => self.table("columns", v)?,
            None => return self.err("columns", "missing (a pipeline declares its columns)"),
        };
        if columns_table.is_empty() {
            return self.err("columns", "no columns declared");
        }
        let mut columns = Vec::with_capacity(columns_table.len());
        for (name, spec) in columns_table {
            let key = format!("columns.{name}");
            let name = self.ident(&key, name)?;
            if PROVENANCE.contains(&name.as_str()) {
                return self.err(&key, format!("{name} is a column ingestd adds to every table"));
            }
            columns.push(self.column(&key, name, self.table(&key, spec)?)?);
        }
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let find = |key: &str, col: &str| -> Res<usize> {
            match names.iter().position(|n| *n == col) {
                Some(i) => Ok(i),
                None => self.err(key, format!("{col:?} is not a declared column")),
            }
        };

        let mut key_columns = Vec::new();
        match doc.get("key") {
            None => return self.err("key", "missing (the dedup key: one or more columns, or [] for none)"),
            Some(toml::Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let k = format!("key[{i}]");
                    let c = find(&k, &self.string(&k, v)?)?;
                    if !columns[c].required {
                        return self.err(&k, format!("key column {} must be required", columns[c].name));
                    }
                    if key_columns.contains(&c) {
                        return self.err(&k, format!("{} is listed twice", columns[c].name));
                    }
                    key_columns.push(c);
                }
            }
            Some(other) => {
                return self.err("key", format!("expected an array of column names, got {}", other.type_str()))
            }
        }

        let mut rules = Vec::new();
        match doc.get("rules") {
            None => {}
            Some(toml::Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let key = format!("rules[{i}]");
                    rules.push(self.rule(&key, self.table(&key, v)?, &columns, &find)?);
                }
            }
            Some(other) => return self.err("rules", format!("expected [[rules]] tables, got {}", other.type_str())),
        }

        let mut derived: Vec<Derived> = Vec::new();
        if let Some(v) = doc.get("derived") {
            for (name, spec) in self.table("derived", v)? {
                let key = format!("derived.{name}");
                let name = self.ident(&key, name)?;
                if names.contains(&name.as_str()) || PROVENANCE.contains(&name.as_str()) {
                    return self.err(&key, format!("{name} is already a column"));
                }
                if derived.iter().any(|d| d.name == name) {
                    return self.err(&key, format!("{name} is declared twice"));
                }
                let spec = self.table(&key, spec)?;
                self.unknown_keys(&key, spec, &["sql", "sql_type"])?;
                let sql = match spec.get("sql") {
                    Some(v) => self.expression(&format!("{key}.sql"), &self.string(&format!("{key}.sql"), v)?)?,
                    None => return self.err(&format!("{key}.sql"), "missing (the SQL expression)"),
                };
                let sql_type = match spec.get("sql_type") {
                    Some(v) => {
                        self.sql_type(&format!("{key}.sql_type"), &self.string(&format!("{key}.sql_type"), v)?)?
                    }
                    None => return self.err(&format!("{key}.sql_type"), "missing (the column's PostgreSQL type)"),
                };
                derived.push(Derived { name, sql, sql_type });
            }
        }

        let mut indexes = Vec::new();
        if let Some(v) = doc.get("indexes") {
            for (column, method) in self.table("indexes", v)? {
                let key = format!("indexes.{column}");
                if !names.contains(&column.as_str()) && !derived.iter().any(|d| &d.name == column) {
                    return self.err(&key, format!("{column:?} is not a declared or derived column"));
                }
                let method = match self.string(&key, method)?.as_str() {
                    "btree" => IndexMethod::Btree,
                    "brin" => IndexMethod::Brin,
                    "hash" => IndexMethod::Hash,
                    other => return self.err(&key, format!("{other:?}: expected btree, brin or hash")),
                };
                indexes.push(Index { column: column.clone(), method });
            }
        }

        let mut rollups: Vec<Rollup> = Vec::new();
        match doc.get("rollups") {
            None => {}
            Some(toml::Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let key = format!("rollups[{i}]");
                    let r = self.rollup(&key, self.table(&key, v)?, &table)?;
                    if r.table == table || rollups.iter().any(|o| o.table == r.table) {
                        return self.err(&format!("{key}.table"), format!("{} is already used", r.table.plain()));
                    }
                    rollups.push(r);
                }
            }
            Some(other) => {
                return self.err("rollups", format!("expected [[rollups]] tables, got {}", other.type_str()))
            }
        }

        let mut views = Vec::new();
        if let Some(v) = doc.get("views") {
            for (name, sql) in self.table("views", v)? {
                let key = format!("views.{name}");
                let view = table.sibling(&self.ident(&key, name)?);
                if view == table || rollups.iter().any(|r| r.table == view) {
                    return self.err(&key, format!("{} is already a table of this pipeline", view.plain()));
                }
                let sql = self.expression(&key, &self.string(&key, sql)?)?;
                if !sql.trim_start().get(..6).is_some_and(|s| s.eq_ignore_ascii_case("select"))
                    && !sql.trim_start().get(..4).is_some_and(|s| s.eq_ignore_ascii_case("with"))
                {
                    return self.err(&key, "a view is a SELECT (or WITH … SELECT) query");
                }
                views.push(View { name: view, sql });
            }
        }

        Ok(Pipeline {
            name,
            source: self.source.to_owned(),
            table,
            schema: Schema::new(columns, rules, key_columns),
            incoming,
            processed,
            bad_records,
            after_commit,
            stable_for_ms,
            batch_rows,
            derived,
            indexes,
            rollups,
            views,
        })
    }

    fn column(&self, key: &str, name: String, spec: &toml::Table) -> Res<Column> {
        self.unknown_keys(key, spec, COLUMN_KEYS)?;
        let sub = |k: &str| format!("{key}.{k}");
        let type_name = match spec.get("type") {
            Some(v) => self.string(&sub("type"), v)?,
            None => return self.err(&sub("type"), "missing (text, uuid, int, decimal, bool, timestamp, date or enum)"),
        };
        let only = |k: &str, allowed: &[&str]| -> Res<()> {
            if spec.contains_key(k) && !allowed.contains(&type_name.as_str()) {
                return self.err(&sub(k), format!("not allowed for type {type_name} (only {})", allowed.join(", ")));
            }
            Ok(())
        };
        only("max_len", &["text"])?;
        only("scale", &["decimal"])?;
        only("range", &["int", "decimal"])?;
        only("values", &["enum"])?;
        only("max_future", &["timestamp"])?;
        only("format", &["timestamp", "date"])?;
        only("reason", &["uuid", "int", "decimal", "bool", "timestamp", "date", "enum"])?;
        let format = spec.get("format").map(|v| self.string(&sub("format"), v).map(|p| Format::new(&p))).transpose()?;
        let kind = match type_name.as_str() {
            "text" => Kind::Text,
            "uuid" => Kind::Uuid,
            "int" => Kind::Int,
            "decimal" => Kind::Decimal {
                scale: spec.get("scale").map(|v| self.uint(&sub("scale"), v).map(|n| n as usize)).transpose()?,
            },
            "bool" => Kind::Bool,
            "timestamp" => Kind::Timestamp { format },
            "date" => Kind::Date { format },
            "enum" => {
                let values = match spec.get("values") {
                    Some(toml::Value::Array(a)) if !a.is_empty() => a
                        .iter()
                        .enumerate()
                        .map(|(i, v)| self.string(&format!("{}[{i}]", sub("values")), v).map(|s| s.to_lowercase()))
                        .collect::<Res<Vec<_>>>()?,
                    Some(_) => return self.err(&sub("values"), "expected a non-empty array of strings"),
                    None => return self.err(&sub("values"), "missing (an enum lists its values)"),
                };
                Kind::Enum { values }
            }
            other => {
                return self.err(
                    &sub("type"),
                    format!("unknown type {other:?} (text, uuid, int, decimal, bool, timestamp, date or enum)"),
                )
            }
        };
        let range = match spec.get("range") {
            None => None,
            Some(v) => {
                let text = self.string(&sub("range"), v)?;
                let Some(r) = Range::parse(&text) else {
                    return self.err(
                        &sub("range"),
                        format!(
                            "{text:?} is not an interval such as \"[0, 100)\" or \"(0, )\" (plain numbers, low ≤ high)"
                        ),
                    );
                };
                if kind == Kind::Int && !r.ends_are_i64() {
                    return self.err(&sub("range"), format!("{text:?}: an int range has 64-bit integer ends"));
                }
                Some(r)
            }
        };
        let max_future = match spec.get("max_future") {
            None => None,
            Some(v) => {
                let text = self.string(&sub("max_future"), v)?;
                match value::parse_duration(&text) {
                    Some(d) => Some((d, text)),
                    None => return self.err(&sub("max_future"), format!("{text:?} is not a duration such as \"24h\"")),
                }
            }
        };
        let format_reason = match spec.get("reason") {
            Some(v) => {
                let r = self.string(&sub("reason"), v)?;
                RejectReason::declared(&self.reason_name(&sub("reason"), &r)?)
            }
            None => kind.format_reason().unwrap_or(RejectReason::MALFORMED_CSV),
        };
        let sql_type_declared = spec.contains_key("sql_type");
        let sql_type = match spec.get("sql_type") {
            Some(v) => self.sql_type(&sub("sql_type"), &self.string(&sub("sql_type"), v)?)?,
            None => kind.default_sql_type().to_owned(),
        };
        let Some(phys) = Phys::of_sql_type(&sql_type) else {
            return self.err(
                &sub("sql_type"),
                format!("{sql_type:?}: ingestd cannot write a {type_name} column of this type"),
            );
        };
        let aliases = match spec.get("aliases") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| self.string(&format!("{}[{i}]", sub("aliases")), v).map(|s| s.trim().to_owned()))
                .collect::<Res<Vec<_>>>()?,
            Some(_) => return self.err(&sub("aliases"), "expected an array of header names"),
        };
        let column = Column {
            name,
            aliases,
            kind,
            required: spec.get("required").map(|v| self.bool(&sub("required"), v)).transpose()?.unwrap_or(false),
            default: spec.get("default").map(|v| self.scalar_text(&sub("default"), v)).transpose()?,
            max_len: spec.get("max_len").map(|v| self.uint(&sub("max_len"), v).map(|n| n as usize)).transpose()?,
            range,
            max_future,
            format_reason,
            sql_type,
            sql_type_declared,
            phys,
        };
        if !column.accepts(phys) {
            return self
                .err(&sub("sql_type"), format!("{:?} cannot hold a {} column", column.sql_type, column.kind.name()));
        }
        if let Some(d) = &column.default {
            // Far from any max_future: a default is a constant.
            let epoch = chrono::DateTime::UNIX_EPOCH;
            if d.trim().is_empty() {
                return self.err(&sub("default"), "an empty default means no default: leave it out");
            }
            if let Err((reason, problem)) = column.value(d.trim(), epoch) {
                return self
                    .err(&sub("default"), format!("{d:?} is not a valid value of this column ({reason}: {problem})"));
            }
        }
        Ok(column)
    }

    fn rule(
        &self,
        key: &str,
        spec: &toml::Table,
        columns: &[Column],
        find: &dyn Fn(&str, &str) -> Res<usize>,
    ) -> Res<Rule> {
        self.unknown_keys(key, spec, &["reason", "when", "require", "detail"])?;
        let reason = match spec.get("reason") {
            Some(v) => RejectReason::declared(
                &self.reason_name(&format!("{key}.reason"), &self.string(&format!("{key}.reason"), v)?)?,
            ),
            None => return self.err(&format!("{key}.reason"), "missing (the reason rows that break the rule get)"),
        };
        let mut when = Vec::new();
        if let Some(v) = spec.get("when") {
            for (col, value) in self.table(&format!("{key}.when"), v)? {
                let k = format!("{key}.when.{col}");
                let c = find(&k, col)?;
                let text = self.scalar_text(&k, value)?;
                if let Err((r, p)) = columns[c].value(&text, chrono::DateTime::UNIX_EPOCH) {
                    return self.err(&k, format!("{text:?} is not a valid value of {col} ({r}: {p})"));
                }
                when.push((c, text));
            }
        }
        let mut require = Vec::new();
        match spec.get("require") {
            Some(v) => {
                for (col, what) in self.table(&format!("{key}.require"), v)? {
                    let k = format!("{key}.require.{col}");
                    let c = find(&k, col)?;
                    let r = match self.string(&k, what)?.as_str() {
                        "present" => Requirement::Present,
                        "nonzero" => Requirement::Nonzero,
                        other => return self.err(&k, format!("{other:?}: expected present or nonzero")),
                    };
                    require.push((c, r));
                }
            }
            None => return self.err(&format!("{key}.require"), "missing (what the rule requires)"),
        }
        if require.is_empty() {
            return self.err(&format!("{key}.require"), "requires nothing");
        }
        let detail = spec.get("detail").map(|v| self.string(&format!("{key}.detail"), v)).transpose()?;
        Ok(Rule { reason, when, require, detail })
    }

    fn rollup(&self, key: &str, spec: &toml::Table, table: &TableName) -> Res<Rollup> {
        self.unknown_keys(key, spec, &["table", "group_by", "measures"])?;
        let target = match spec.get("table") {
            Some(v) => {
                let name = self.string(&format!("{key}.table"), v)?;
                if name.contains('.') {
                    self.table_name(&format!("{key}.table"), &name)?
                } else {
                    table.sibling(&self.ident(&format!("{key}.table"), &name)?)
                }
            }
            None => return self.err(&format!("{key}.table"), "missing (the rollup table)"),
        };
        let mut group_by = Vec::new();
        match spec.get("group_by") {
            Some(v) => {
                for (name, expr) in self.table(&format!("{key}.group_by"), v)? {
                    let k = format!("{key}.group_by.{name}");
                    group_by.push((self.ident(&k, name)?, self.expression(&k, &self.string(&k, expr)?)?));
                }
            }
            None => return self.err(&format!("{key}.group_by"), "missing (the group columns)"),
        }
        if group_by.is_empty() {
            return self.err(&format!("{key}.group_by"), "at least one group column");
        }
        let mut measures = Vec::new();
        match spec.get("measures") {
            Some(v) => {
                for (name, expr) in self.table(&format!("{key}.measures"), v)? {
                    let k = format!("{key}.measures.{name}");
                    let name = self.ident(&k, name)?;
                    if group_by.iter().any(|(g, _)| *g == name) || measures.iter().any(|(m, _, _)| *m == name) {
                        return self.err(&k, format!("{name} is already a column of this rollup"));
                    }
                    let expr = self.expression(&k, &self.string(&k, expr)?)?;
                    let Some(agg) = aggregate_of(&expr) else {
                        return self.err(
                            &k,
                            format!("{expr:?}: a measure is count(*), count(EXPR), sum(EXPR), min(EXPR) or max(EXPR)"),
                        );
                    };
                    measures.push((name, expr, agg));
                }
            }
            None => return self.err(&format!("{key}.measures"), "missing (the measures)"),
        }
        if measures.is_empty() {
            return self.err(&format!("{key}.measures"), "at least one measure");
        }
        Ok(Rollup { table: target, group_by, measures })
    }

    fn reason_name(&self, key: &str, s: &str) -> Res<String> {
        if is_ident(s) && s.starts_with(|c: char| c.is_ascii_lowercase()) {
            Ok(s.to_owned())
        } else {
            self.err(key, format!("{s:?} must match [a-z][a-z0-9_]{{0,62}}"))
        }
    }

    /// A PostgreSQL type name: letters, digits, spaces, `_`, `(`, `)`, `,`
    /// and `.`: enough for `numeric(14,2)` and `timestamp with time zone`,
    /// nothing that could end the statement it is spliced into.
    fn sql_type(&self, key: &str, s: &str) -> Res<String> {
        let ok = !s.trim().is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || " _(),.".contains(c))
            && balanced(s).is_some();
        if ok {
            Ok(s.trim().to_owned())
        } else {
            self.err(key, format!("{s:?} is not a PostgreSQL type name"))
        }
    }

    /// An operator's SQL expression (derived column, rollup, view). It is
    /// theirs and runs with the daemon's database role, but it must stay
    /// one expression: no `;`, no comment, quotes and parentheses balanced,
    /// so it cannot end the statement ingestd splices it into.
    fn expression(&self, key: &str, s: &str) -> Res<String> {
        if s.trim().is_empty() {
            return self.err(key, "empty SQL");
        }
        match balanced(s) {
            Some(()) => Ok(s.trim().to_owned()),
            None => self.err(key, "not one SQL expression (a `;`, a comment, or unbalanced quotes or parentheses)"),
        }
    }
}

/// Checks that `s` has no `;` or comment outside string literals and that
/// its quotes and parentheses balance.
fn balanced(s: &str) -> Option<()> {
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                // To the closing quote; a doubled quote is an escaped one.
                i += 1;
                loop {
                    match b.get(i) {
                        None => return None,
                        Some(&c) if c == q && b.get(i + 1) == Some(&q) => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            b';' | b'$' | b'\\' => return None,
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            _ => {}
        }
        i += 1;
    }
    (depth == 0).then_some(())
}

/// The aggregate of a measure that is one call of count/sum/min/max,
/// optionally with a `FILTER (WHERE …)` clause (the same combination rule
/// holds for the filtered rows).
fn aggregate_of(expr: &str) -> Option<Aggregate> {
    let open = expr.find('(')?;
    let agg = match expr[..open].trim().to_ascii_lowercase().as_str() {
        "count" => Aggregate::Count,
        "sum" => Aggregate::Sum,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        _ => return None,
    };
    // The call's closing parenthesis must end the measure, or be followed
    // by one FILTER clause: `sum(a) + sum(b)` is two calls.
    let close = open + matching_paren(&expr[open..])?;
    if expr[open + 1..close].trim().is_empty() {
        return None;
    }
    let rest = expr[close + 1..].trim();
    if rest.is_empty() {
        return Some(agg);
    }
    let filter = rest.get(..6).filter(|f| f.eq_ignore_ascii_case("filter"))?;
    let clause = rest[filter.len()..].trim_start();
    let end = matching_paren(clause)?;
    (clause.starts_with('(') && end == clause.len() - 1).then_some(agg)
}

/// The index of the parenthesis closing the one `s` starts with (quotes
/// skipped).
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `[a-z_][a-z0-9_]*`, at most 63 bytes (PostgreSQL's identifier limit).
pub fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schema::Kind;

    const HEAD: &str = "name = \"p\"\ntable = \"t\"\nkey = [\"id\"]\n[columns.id]\ntype = \"text\"\nrequired = true\n";

    fn parse(text: &str) -> Result<Pipeline, String> {
        Pipeline::parse("p.toml", text).map_err(|e| e.to_string())
    }

    /// A declaration's problem: one line naming the file and the key.
    #[track_caller]
    fn check_error(extra: &str, want: &str) {
        let e = parse(&format!("{HEAD}{extra}")).expect_err("an error");
        assert!(e.starts_with("pipeline file p.toml: "), "{e}");
        assert!(e.contains(want), "expected {want:?} in {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    #[rustfmt::skip]
    fn every_declaration_problem_names_its_key() {
        check_error("[columns.a]\ntype = \"string\"\n", "columns.a.type: unknown type \"string\"");
        check_error("[columns.a]\ntype = \"text\"\nmaxlen = 3\n", "columns.a.maxlen: unknown key");
        check_error("[columns.a]\nrequired = true\n", "columns.a.type: missing");
        check_error("[columns.a]\ntype = \"int\"\nrange = \"[5, 1]\"\n", "columns.a.range: \"[5, 1]\" is not an interval");
        check_error("[columns.a]\ntype = \"int\"\nrange = \"1..5\"\n", "columns.a.range:");
        check_error("[columns.a]\ntype = \"int\"\nrange = \"[0.5, 2]\"\n", "columns.a.range: \"[0.5, 2]\": an int range has 64-bit integer ends");
        check_error("[columns.a]\ntype = \"text\"\nrange = \"[0, 1]\"\n", "columns.a.range: not allowed for type text");
        check_error("[columns.a]\ntype = \"int\"\nscale = 2\n", "columns.a.scale: not allowed for type int");
        check_error("[columns.a]\ntype = \"enum\"\n", "columns.a.values: missing");
        check_error("[columns.a]\ntype = \"enum\"\nvalues = []\n", "columns.a.values: expected a non-empty array");
        check_error("[columns.a]\ntype = \"timestamp\"\nmax_future = \"soon\"\n", "columns.a.max_future: \"soon\" is not a duration");
        check_error("[columns.a]\ntype = \"date\"\nmax_future = \"1d\"\n", "columns.a.max_future: not allowed for type date");
        check_error("[columns.a]\ntype = \"int\"\ndefault = \"x\"\n", "columns.a.default: \"x\" is not a valid value of this column (invalid_number");
        check_error("[columns.a]\ntype = \"int\"\nrange = \"[1, 9]\"\ndefault = 10\n", "columns.a.default: \"10\" is not a valid value");
        check_error("[columns.a]\ntype = \"bool\"\nsql_type = \"integer\"\n", "columns.a.sql_type: \"integer\" cannot hold a bool column");
        check_error("[columns.a]\ntype = \"text\"\nsql_type = \"text; DROP TABLE x\"\n", "columns.a.sql_type:");
        check_error("[columns.a]\ntype = \"text\"\nsql_type = \"jsonb\"\n", "columns.a.sql_type: \"jsonb\": ingestd cannot write a text column of this type");
        check_error("[columns.a]\ntype = \"text\"\nreason = \"odd\"\n", "columns.a.reason: not allowed for type text");
        check_error("[columns.a]\ntype = \"uuid\"\nreason = \"Bad Id\"\n", "columns.a.reason: \"Bad Id\" must match");
        check_error("[columns.Amount]\ntype = \"int\"\n", "columns.Amount: \"Amount\" is not a plain SQL name");
        check_error("[columns.source_file]\ntype = \"text\"\n", "columns.source_file: source_file is a column ingestd adds");
        check_error("colour = 1\n", "colour: unknown key");
        check_error("[[rules]]\nreason = \"r\"\nwhen = { nope = \"x\" }\nrequire = { id = \"present\" }\n", "rules[0].when.nope: \"nope\" is not a declared column");
        check_error("[[rules]]\nreason = \"r\"\nrequire = { id = \"big\" }\n", "rules[0].require.id: \"big\": expected present or nonzero");
        check_error("[[rules]]\nreason = \"r\"\n", "rules[0].require: missing");
        check_error("[derived]\nx = { sql = \"1; DROP TABLE t\", sql_type = \"int\" }\n", "derived.x.sql: not one SQL expression");
        check_error("[derived]\nx = { sql = \"1 -- comment\", sql_type = \"int\" }\n", "derived.x.sql: not one SQL expression");
        check_error("[derived]\nx = { sql = \"(1\", sql_type = \"int\" }\n", "derived.x.sql: not one SQL expression");
        check_error("[derived]\nx = { sql = \"1\" }\n", "derived.x.sql_type: missing");
        check_error("[derived]\nid = { sql = \"1\", sql_type = \"int\" }\n", "derived.id: id is already a column");
        check_error("[indexes]\nnope = \"btree\"\n", "indexes.nope: \"nope\" is not a declared or derived column");
        check_error("[indexes]\nid = \"gist\"\n", "indexes.id: \"gist\": expected btree, brin or hash");
        check_error("[[rollups]]\ntable = \"r\"\ngroup_by = { id = \"id\" }\nmeasures = { n = \"avg(1)\" }\n", "rollups[0].measures.n: \"avg(1)\": a measure is count(*)");
        check_error("[[rollups]]\ntable = \"r\"\ngroup_by = { id = \"id\" }\nmeasures = { n = \"sum(a) + sum(b)\" }\n", "rollups[0].measures.n");
        check_error("[[rollups]]\ntable = \"r\"\ngroup_by = {}\nmeasures = { n = \"count(*)\" }\n", "rollups[0].group_by: at least one group column");
        check_error("[[rollups]]\ntable = \"t\"\ngroup_by = { id = \"id\" }\nmeasures = { n = \"count(*)\" }\n", "rollups[0].table: t is already used");
        check_error("[views]\nv = \"DELETE FROM t\"\n", "views.v: a view is a SELECT");
        check_error("[views]\nt = \"SELECT 1\"\n", "views.t: t is already a table of this pipeline");
        assert!(parse("name = \"p\"\ntable = \"t\"\nkey = [\"id\"]\n[columns.id]\ntype = \"text\"\n").unwrap_err().contains("key[0]: key column id must be required"));
        assert!(parse("name = \"P\"\ntable = \"t\"\nkey = []\n[columns.id]\ntype = \"text\"\n").unwrap_err().contains("name: \"P\" must match"));
        assert!(parse("name = \"p\"\nkey = []\n[columns.id]\ntype = \"text\"\n").unwrap_err().contains("table: missing"));
        assert!(parse("name = \"p\"\ntable = \"a.b.c\"\nkey = []\n[columns.id]\ntype = \"text\"\n").unwrap_err().contains("table: \"b.c\" is not a plain SQL name"));
        assert!(parse("name = \"p\"\ntable = \"t\"\nkey = []\n[columns]\n").unwrap_err().contains("columns: no columns declared"));
        assert!(parse("name = ").unwrap_err().contains("(syntax)"));
    }

    /// One column of each type, and what a field's text becomes: `ok`, or
    /// `reason (detail)`.
    #[track_caller]
    fn check_value(column: &str, input: &str, want: &str) {
        let p = parse(&format!("name = \"p\"\ntable = \"t\"\nkey = []\n[columns.x]\n{column}\n")).unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z").unwrap().to_utc();
        let got = match p.schema.columns[0].value(input, now) {
            Ok(v) => format!("ok {v:?}"),
            Err((r, d)) => format!("{r} (x: {d})"),
        };
        assert!(
            got == want || got.starts_with(&format!("{want} ")) || got.starts_with(&format!("{want} (")),
            "{column} / {input:?}: expected {want}, got {got}"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn each_type_and_attribute_reads_and_checks_its_values() {
        // text: max_len counts characters; required; default.
        check_value("type = \"text\"\nmax_len = 3", "abc", "ok");
        check_value("type = \"text\"\nmax_len = 3", "\u{e9}\u{e9}\u{e9}", "ok");
        check_value("type = \"text\"\nmax_len = 3", "abcd", "too_long (x: longer than 3 characters)");
        check_value("type = \"text\"\nrequired = true", "", "missing_field (x: empty)");
        check_value("type = \"text\"", "", "ok Null");
        check_value("type = \"text\"\nrequired = true\ndefault = \"n/a\"", "", "ok Text(\"n/a\")");
        // uuid
        check_value("type = \"uuid\"", "0F8FAD5B-D9CB-469F-A165-70867728950E", "ok");
        check_value("type = \"uuid\"", "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", "ok");
        check_value("type = \"uuid\"", "0f8fad5b", "invalid_uuid (x: not a UUID)");
        check_value("type = \"uuid\"\nreason = \"bad_id\"", "0f8fad5b", "bad_id (x: not a UUID)");
        // int: 64-bit, plain notation, ranges open and closed.
        check_value("type = \"int\"", "-9223372036854775808", "ok Int(-9223372036854775808)");
        check_value("type = \"int\"", "9223372036854775808", "out_of_range (x: not a 64-bit integer)");
        check_value("type = \"int\"", "1.0", "invalid_number (x: not an integer)");
        check_value("type = \"int\"", "+1", "invalid_number");
        check_value("type = \"int\"\nrange = \"[1, 10]\"", "10", "ok");
        check_value("type = \"int\"\nrange = \"[1, 10]\"", "11", "out_of_range (x: not in 1..=10)");
        check_value("type = \"int\"\nrange = \"[1, 10)\"", "10", "out_of_range (x: not below 10)");
        check_value("type = \"int\"\nrange = \"(0, )\"", "0", "out_of_range (x: not above 0)");
        check_value("type = \"int\"\nrange = \"( , 0]\"", "1", "out_of_range (x: above 0)");
        check_value("type = \"int\"\nrange = \"[5, )\"", "4", "out_of_range (x: below 5)");
        check_value("type = \"int\"\nsql_type = \"smallint\"", "40000", "out_of_range (x: does not fit the column's type smallint)");
        check_value("type = \"int\"\ndefault = 7", "", "ok Int(7)");
        // decimal: scale, range, any length.
        check_value("type = \"decimal\"\nscale = 2", "1.25", "ok");
        check_value("type = \"decimal\"\nscale = 2", "1.250", "invalid_number (x: more than 2 decimals)");
        check_value("type = \"decimal\"\nscale = 1", "1.25", "invalid_number (x: more than 1 decimal)");
        check_value("type = \"decimal\"", "123456789012345678901234567890.123456789", "ok");
        check_value("type = \"decimal\"", "1e3", "invalid_number (x: not a plain decimal number)");
        check_value("type = \"decimal\"\nrange = \"[0, 100]\"", "100.00", "ok");
        check_value("type = \"decimal\"\nrange = \"[0, 100]\"", "100.01", "out_of_range (x: not in 0..=100)");
        check_value("type = \"decimal\"\nrange = \"[0, 1000000)\"", "-0.01", "out_of_range (x: negative)");
        // bool
        check_value("type = \"bool\"", "YES", "ok Bool(true)");
        check_value("type = \"bool\"", "0", "ok Bool(false)");
        check_value("type = \"bool\"", "maybe", "invalid_bool (x: not a boolean)");
        // timestamp: the contract's forms, strftime formats, max_future.
        check_value("type = \"timestamp\"", "2026-11-22 10:15:30", "ok");
        check_value("type = \"timestamp\"", "22/11/2026", "invalid_timestamp (x: not a valid timestamp)");
        check_value("type = \"timestamp\"\nformat = \"%d/%m/%Y %H:%M\"", "22/11/2026 10:15", "ok");
        check_value("type = \"timestamp\"\nformat = \"%d/%m/%Y %H:%M\"", "2026-11-22 10:15:30", "invalid_timestamp");
        check_value("type = \"timestamp\"\nformat = \"%s\"", "1795436130", "ok");
        check_value("type = \"timestamp\"\nmax_future = \"1h\"", "2026-11-22T13:00:00Z", "ok");
        check_value("type = \"timestamp\"\nmax_future = \"1h\"", "2026-11-22T13:00:01Z", "future_timestamp (x: more than 1 h after the daemon's clock)");
        // date
        check_value("type = \"date\"", "2024-02-29", "ok");
        check_value("type = \"date\"", "2025-02-29", "invalid_date (x: not a valid date)");
        check_value("type = \"date\"\nformat = \"%d.%m.%Y\"", "29.02.2024", "ok");
        // enum: case-insensitive, stored lower case, reason override.
        check_value("type = \"enum\"\nvalues = [\"Red\", \"blue\"]", "RED", "ok Text(\"red\")");
        check_value("type = \"enum\"\nvalues = [\"red\", \"blue\"]", "green", "invalid_enum (x: not one of red, blue)");
        check_value("type = \"enum\"\nvalues = [\"red\"]\nreason = \"bad_colour\"", "green", "bad_colour");
    }

    /// Rules after every column, in file order; `present` and `nonzero`.
    #[test]
    fn rules_apply_in_order_after_the_columns() {
        use crate::core::record::RawRecord;
        let p = parse(
            "name = \"p\"\ntable = \"t\"\nkey = []\n\
             [columns.status]\ntype = \"enum\"\nvalues = [\"refunded\", \"paid\"]\n\
             [columns.amount]\ntype = \"decimal\"\n\
             [columns.note]\ntype = \"text\"\n\
             [[rules]]\nreason = \"refund_without_amount\"\nwhen = { status = \"REFUNDED\" }\nrequire = { amount = \"nonzero\" }\n\
             [[rules]]\nreason = \"refund_without_note\"\nwhen = { status = \"refunded\" }\nrequire = { note = \"present\" }\n",
        )
        .unwrap();
        let mut header = RawRecord::default();
        for f in ["status", "amount", "note"] {
            header.data.extend_from_slice(f.as_bytes());
            header.bounds.push(header.data.len());
        }
        let header = crate::core::header::Header::parse(&p.schema, &header);
        let check = |row: [&str; 3], want: &str| {
            let mut rec = RawRecord::default();
            for f in row {
                rec.data.extend_from_slice(f.as_bytes());
                rec.bounds.push(rec.data.len());
            }
            let mut values = Vec::new();
            let got = match crate::core::validate::validate(&p.schema, &header, &rec, chrono::Utc::now(), &mut values) {
                Ok(()) => "ok".to_owned(),
                Err(r) => format!("{} ({})", r.reason, r.detail),
            };
            assert_eq!(got, want, "{row:?}");
        };
        check(["refunded", "0.00", ""], "refund_without_amount (amount: required and not zero when status = REFUNDED)");
        check(["refunded", "5", ""], "refund_without_note (note: required when status = refunded)");
        check(["refunded", "5", "late"], "ok");
        check(["paid", "", ""], "ok");
        check(["refunded", "x", ""], "invalid_number (amount: not a plain decimal number)");
    }

    #[test]
    fn every_example_declaration_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let p = Pipeline::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
            names.push(p.name.clone());
            assert!(matches!(p.schema.columns[0].kind, Kind::Uuid | Kind::Text), "{}", p.name);
        }
        names.sort();
        assert_eq!(names, ["basic_events", "cart_events", "ecommerce", "transactions", "user_events"]);
    }
}
