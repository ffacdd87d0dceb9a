//! Every SQL statement the daemon runs, by name: constants for the
//! bookkeeping tables (whose schema lives in `migrations/`), and
//! [`PipelineSql`], the statements a pipeline's declaration implies.

use crate::core::pipeline::{quote, Aggregate, Pipeline};

/// Serialises migration runs across processes (an arbitrary fixed key).
pub const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7212653918012)";
pub const MIGRATION_HISTORY: &str = "CREATE TABLE IF NOT EXISTS ingestd_schema_history (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";
pub const MIGRATION_HISTORY_EXISTS: &str = "SELECT to_regclass('ingestd_schema_history') IS NOT NULL";
pub const MIGRATIONS_APPLIED: &str = "SELECT version FROM ingestd_schema_history";
pub const MIGRATION_RECORD: &str = "INSERT INTO ingestd_schema_history (version, name) VALUES ($1, $2)";

/// Per writer connection. `synchronous_commit` is part of the guarantee: a
/// commit the daemon acknowledged survives a database crash.
pub const WRITER_SESSION: &str = "SET synchronous_commit = on";
pub const BACKEND_PID: &str = "SELECT pg_backend_pid()";
/// Ends a backend that stopped answering, so a late commit of its open
/// transaction cannot race the replay (the fence would stop it anyway).
pub const TERMINATE_BACKEND: &str = "SELECT pg_terminate_backend($1)";

pub const COPY_REJECTS: &str = "COPY ingest_rejects (file_id, source_file, source_line, reason, detail, \
    raw_line, raw_truncated, pipeline) FROM STDIN (FORMAT binary)";
/// The checkpoint fence: advances only from the offset the batch starts at,
/// so a replayed or stale batch matches no row and its transaction is
/// rolled back. `$10`: the file's last batch; the file is then done in the
/// same transaction, if its rows add up (otherwise the CheckpointKeeper
/// looks at it). Answers whether the file is done, and its rejected rows.
/// (`rows_*` on the right are the values before the update.)
pub const ADVANCE_CHECKPOINT: &str = "UPDATE ingest_files SET committed_offset = $3, committed_line = $4, \
    rows_total = rows_total + $5, rows_written = rows_written + $6, rows_duplicate = rows_duplicate + $7, \
    rows_rejected = rows_rejected + $8, batches = batches + 1, \
    state = CASE WHEN $10 AND rows_total + $5 = rows_written + $6 + rows_duplicate + $7 + rows_rejected + $8 \
    THEN 'done' ELSE 'in_progress' END, \
    finished_at = CASE WHEN $10 AND rows_total + $5 = rows_written + $6 + rows_duplicate + $7 + rows_rejected + $8 \
    THEN now() END, \
    updated_at = now(), header = COALESCE(header, $9) \
    WHERE id = $1 AND committed_offset = $2 AND state IN ('pending', 'in_progress') \
    RETURNING state = 'done', rows_total, rows_written, rows_duplicate, rows_rejected";
/// The fence for a group of batches of different files, one statement:
/// every file must match, or the caller rolls back. Otherwise as
/// `ADVANCE_CHECKPOINT`, per file.
pub const ADVANCE_CHECKPOINTS: &str = "UPDATE ingest_files AS f SET committed_offset = v.end_offset, \
    committed_line = v.end_line, rows_total = f.rows_total + v.rows, rows_written = f.rows_written + v.written, \
    rows_duplicate = f.rows_duplicate + v.duplicate, rows_rejected = f.rows_rejected + v.rejected, \
    batches = f.batches + 1, \
    state = CASE WHEN v.last AND f.rows_total + v.rows = f.rows_written + v.written + f.rows_duplicate \
    + v.duplicate + f.rows_rejected + v.rejected THEN 'done' ELSE 'in_progress' END, \
    finished_at = CASE WHEN v.last AND f.rows_total + v.rows = f.rows_written + v.written + f.rows_duplicate \
    + v.duplicate + f.rows_rejected + v.rejected THEN now() END, \
    updated_at = now(), header = COALESCE(f.header, v.header) \
    FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], \
    $9::bytea[], $10::bool[]) AS v(id, start_offset, end_offset, end_line, rows, written, duplicate, rejected, \
    header, last) \
    WHERE f.id = v.id AND f.committed_offset = v.start_offset AND f.state IN ('pending', 'in_progress') \
    RETURNING f.id, f.state = 'done', f.rows_total, f.rows_written, f.rows_duplicate, f.rows_rejected";
pub const READ_CHECKPOINT: &str = "SELECT committed_offset, state FROM ingest_files WHERE id = $1";

/// Registers identities, or finds them; one row per input, with the
/// file's rejected count (for an identity already done). The no-op update
/// makes RETURNING answer for existing rows too. An unfinished older
/// identity of the same path can never be finished (its content is gone: the
/// file changed while it was read): it is parked as superseded, keeping
/// what it committed.
pub const CLAIM_FILES: &str = "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) \
    AS i(path, file_name, fingerprint, size)), \
    superseded AS (UPDATE ingest_files f SET state = 'failed', \
    error = 'superseded: the file changed before it was finished', updated_at = now() \
    FROM input i WHERE f.path = i.path AND f.fingerprint <> i.fingerprint \
    AND f.state IN ('pending', 'in_progress')) \
    INSERT INTO ingest_files (path, file_name, fingerprint, size, pipeline) \
    SELECT path, file_name, fingerprint, size, $5 FROM input \
    ON CONFLICT (path, fingerprint) DO UPDATE SET updated_at = now() \
    RETURNING id, path, fingerprint, state, committed_offset, committed_line, rows_rejected";
/// Only a file whose rows all add up can be done (the table's CHECK says
/// the same).
pub const MARK_DONE: &str = "UPDATE ingest_files SET state = 'done', finished_at = now(), updated_at = now() \
    WHERE id = $1 AND state IN ('pending', 'in_progress') \
    AND rows_total = rows_written + rows_duplicate + rows_rejected \
    RETURNING rows_total, rows_written, rows_duplicate, rows_rejected";
/// The same for many files at once; returns the ones it marked.
pub const MARK_MANY_DONE: &str = "UPDATE ingest_files SET state = 'done', finished_at = now(), updated_at = now() \
    WHERE id = ANY($1) AND state IN ('pending', 'in_progress') \
    AND rows_total = rows_written + rows_duplicate + rows_rejected \
    RETURNING id, rows_total, rows_written, rows_duplicate, rows_rejected";
pub const FILE_STATE: &str = "SELECT state, rows_total, rows_written, rows_duplicate, rows_rejected \
    FROM ingest_files WHERE id = $1";
pub const RECORD_FAILURE: &str = "UPDATE ingest_files SET attempts = attempts + 1, error = $2, \
    state = CASE WHEN attempts + 1 >= $3 AND state <> 'done' THEN 'failed' ELSE state END, updated_at = now() \
    WHERE id = $1 RETURNING state";
/// The latest error of a file that is retried (not parked).
pub const NOTE_ERROR: &str = "UPDATE ingest_files SET error = $2, updated_at = now() WHERE id = $1 AND state <> 'done'";
pub const PARK_FILE: &str = "UPDATE ingest_files SET state = 'failed', error = $2, updated_at = now() \
    WHERE id = $1 AND state <> 'done'";
/// A file's rejects by reason (the `UNIQUE (file_id, source_line)` index
/// finds them).
pub const REJECTS_BY_REASON_OF_FILE: &str =
    "SELECT reason, count(*) FROM ingest_rejects WHERE file_id = $1 GROUP BY 1 ORDER BY 2 DESC, 1";
/// One page of a file's rejects, in line order: after line $2, at most $3.
pub const REJECTS_OF_FILE_AFTER: &str = "SELECT source_line, reason, detail, raw_line FROM ingest_rejects \
    WHERE file_id = $1 AND source_line > $2 ORDER BY source_line LIMIT $3";

/// A pipeline's entries not read, replaced as a whole: those no longer in
/// the set ($2) go, the others are inserted or refreshed ($2 paths, $3
/// reasons, $4 details).
pub const SKIPPED_FORGET: &str = "DELETE FROM ingest_skipped WHERE pipeline = $1 AND path <> ALL ($2::text[])";
pub const SKIPPED_RECORD: &str = "INSERT INTO ingest_skipped (pipeline, path, reason, detail) \
    SELECT $1, p, r, d FROM unnest($2::text[], $3::text[], $4::text[]) AS s(p, r, d) \
    ON CONFLICT (pipeline, path) DO UPDATE SET reason = excluded.reason, detail = excluded.detail, \
    last_seen_at = now(), first_seen_at = CASE WHEN ingest_skipped.reason = excluded.reason \
    THEN ingest_skipped.first_seen_at ELSE now() END";

/// `ingestd status` and `/api/status` read the view `ingest_file_status`
/// (migration 0005): per file, the most recent first, at most $1 (NULL: all).
pub const STATUS_FILES: &str = "SELECT pipeline, file_name, path, state, rows_total, rows_written, \
    rows_duplicate, rows_rejected, committed_offset, size, attempts, first_seen_at, finished_at, \
    extract(epoch FROM lag)::float8, last_error FROM ingest_file_status \
    ORDER BY first_seen_at DESC, path DESC LIMIT $1";
/// Per pipeline, over every file on record: files by state, rows by outcome.
pub const STATUS_TOTALS: &str = "SELECT pipeline, count(*), \
    count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in_progress'), \
    count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'), \
    coalesce(sum(size), 0)::int8, coalesce(sum(rows_total), 0)::int8, coalesce(sum(rows_written), 0)::int8, \
    coalesce(sum(rows_duplicate), 0)::int8, coalesce(sum(rows_rejected), 0)::int8 \
    FROM ingest_file_status GROUP BY pipeline ORDER BY pipeline";
/// Rejected rows by pipeline and reason (the `(pipeline, reason)` index).
pub const STATUS_REJECTS: &str =
    "SELECT pipeline, reason, count(*) FROM ingest_rejects GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2";
/// The files whose last attempt left an error, the most recent first.
pub const STATUS_FILE_ERRORS: &str = "SELECT pipeline, file_name, state, error, updated_at FROM ingest_files \
    WHERE error IS NOT NULL ORDER BY updated_at DESC LIMIT $1";
/// Entries of the incoming folders not read, with why (filled by the
/// Watcher).
pub const STATUS_SKIPPED: &str = "SELECT pipeline, path, reason, detail, first_seen_at, last_seen_at \
    FROM ingest_skipped ORDER BY pipeline, path LIMIT $1";

/// A pipeline's ($3) finished files that have rejects matching the
/// filters ($1 file name, $2 reason; NULL = any).
pub const REPLAY_FILES: &str = "SELECT DISTINCT f.id, f.file_name, f.header FROM ingest_files f \
    JOIN ingest_rejects r ON r.file_id = f.id \
    WHERE f.state = 'done' AND f.pipeline = $3 AND ($1::text IS NULL OR f.file_name = $1) \
    AND ($2::text IS NULL OR r.reason = $2) ORDER BY f.id";
pub const LOCK_FILE: &str = "SELECT state FROM ingest_files WHERE id = $1 FOR UPDATE";
/// One page of a file's rejects to replay: after line $3, at most $4.
pub const REPLAY_REJECTS: &str = "SELECT id, source_line, raw_line, raw_truncated, reason, detail \
    FROM ingest_rejects WHERE file_id = $1 AND ($2::text IS NULL OR reason = $2) AND source_line > $3 \
    ORDER BY source_line LIMIT $4";
pub const DELETE_REJECTS: &str = "DELETE FROM ingest_rejects WHERE id = ANY($1)";
pub const UPDATE_REJECT: &str = "UPDATE ingest_rejects SET reason = $2, detail = $3 WHERE id = $1";
/// Moves replayed rows from rejected to written/duplicate: the identity
/// rows = written + duplicate + rejected still holds.
pub const REPLAY_COUNTS: &str = "UPDATE ingest_files SET rows_written = rows_written + $2, \
    rows_duplicate = rows_duplicate + $3, rows_rejected = rows_rejected - $2 - $3, updated_at = now() \
    WHERE id = $1";

/// One active daemon per incoming folder: a session lock held by a
/// dedicated connection for as long as the daemon leads. PostgreSQL releases
/// it when that connection ends, whatever ends it.
pub const TRY_FOLDER_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
/// Ends the sessions that carry this process's lock-session name, other than
/// the caller's: left behind when a connection died on our side only.
pub const END_OWN_STALE_SESSIONS: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
    WHERE application_name = $1 AND pid <> pg_backend_pid()";

/// Names the lock session and turns on server-side keepalives for it, so the
/// server notices (within about 20 s) a client that vanished without a word
/// and releases its lock. `name` is ours (no quotes in it).
pub fn lock_session_setup(name: &str) -> String {
    format!(
        "SET application_name = '{name}'; SET tcp_keepalives_idle = 10; \
         SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 2"
    )
}
pub const PING: &str = "SELECT 1";

/// The statements of one pipeline's data path, built once from its
/// declaration (and the wire types its table has): every column list comes
/// from the declaration, in its order, so the COPY payload (`core::copy`)
/// and the SQL always agree.
#[derive(Debug, Clone)]
pub struct PipelineSql {
    /// The pipeline's name (stored with its files and rejects).
    pub pipeline: String,
    /// The writer session's temp table: the declared columns in their wire
    /// types, then `source_line` and `source_file`.
    pub create_staging: String,
    /// Empties the temp table inside a transaction (it empties by itself
    /// at commit).
    pub truncate_staging: String,
    /// Straight into the table (`None` when PostgreSQL computes derived
    /// columns or rollups on the way in).
    pub copy_table: Option<String>,
    pub copy_staging: String,
    /// Staging into the table, skipping stored keys; its answer is the
    /// number of rows written: the affected-row count, or (`merge_counts`)
    /// one row holding it.
    pub merge: String,
    pub merge_counts: bool,
    /// The merge for a group of files: rows written per `source_file`.
    pub merge_counted: String,
    /// The direct route of a pipeline whose rows PostgreSQL completes
    /// (derived columns, rollups; `copy_table` is `None`): staging into the
    /// table without `ON CONFLICT`, for rows whose keys are new. A stored
    /// key aborts it (unique violation) and the batch is redone through
    /// `merge`; when it succeeds every staged row was written. Speculative
    /// insertion (the arbiter index probed before each row) is a third of
    /// an `ON CONFLICT` insert's cost. `None` without a key (`merge` has no
    /// `ON CONFLICT` then) or with direct COPY.
    pub merge_new: Option<String>,
    /// Evaluates the derived columns over the staging table alone: run on
    /// one refused row, it tells a derived expression's failure apart from
    /// the table refusing a value.
    pub derived_probe: Option<String>,
}

impl PipelineSql {
    pub fn new(p: &Pipeline) -> PipelineSql {
        let staging = format!("ingestd_staging_{}", p.name);
        let table = p.table.quoted();
        let mut copy_columns: Vec<String> = p.schema.columns.iter().map(|c| quote(&c.name)).collect();
        copy_columns.extend(["source_line".into(), "source_file".into()]);
        let copy_list = copy_columns.join(", ");

        let mut staging_columns: Vec<String> =
            p.schema.columns.iter().map(|c| format!("{} {}", quote(&c.name), c.phys.staging_type())).collect();
        staging_columns.extend(["source_line int8".into(), "source_file text".into()]);
        let create_staging =
            format!("CREATE TEMP TABLE IF NOT EXISTS {staging} ({}) ON COMMIT DELETE ROWS", staging_columns.join(", "));

        // The rows as the table takes them: the declared columns, then each
        // derived column computed over them (and over the earlier derived
        // ones: a LATERAL join each), then where they came from.
        let mut insert_columns: Vec<String> = p.schema.columns.iter().map(|c| quote(&c.name)).collect();
        let mut select: Vec<String> = p.schema.columns.iter().map(|c| format!("s.{}", quote(&c.name))).collect();
        let mut from = format!("{staging} s");
        for (i, d) in p.derived.iter().enumerate() {
            insert_columns.push(quote(&d.name));
            select.push(format!("d{i}.{}", quote(&d.name)));
            from.push_str(&format!(
                " CROSS JOIN LATERAL (SELECT ({})::{} AS {}) d{i}",
                d.sql,
                d.sql_type,
                quote(&d.name)
            ));
        }
        insert_columns.extend(["source_line".into(), "source_file".into()]);
        select.extend(["s.source_line".into(), "s.source_file".into()]);
        let conflict = match p.schema.key.as_slice() {
            [] => String::new(),
            key => format!(
                " ON CONFLICT ({}) DO NOTHING",
                key.iter().map(|&k| quote(&p.schema.columns[k].name)).collect::<Vec<_>>().join(", ")
            ),
        };
        let insert_new =
            format!("INSERT INTO {table} ({}) SELECT {} FROM {from}", insert_columns.join(", "), select.join(", "));
        let insert = format!("{insert_new}{conflict}");
        // Rollups take exactly the rows this statement wrote: the INSERT's
        // RETURNING, never duplicates or rejects.
        let rollups: Vec<String> = p
            .rollups
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let target = r.table.quoted();
                let group: Vec<String> = r.group_by.iter().map(|(n, _)| quote(n)).collect();
                let measures: Vec<String> = r.measures.iter().map(|(n, _, _)| quote(n)).collect();
                let exprs: Vec<String> = r
                    .group_by
                    .iter()
                    .map(|(_, e)| format!("({e})"))
                    .chain(r.measures.iter().map(|(_, e, _)| e.clone()))
                    .collect();
                let positions: Vec<String> = (1..=group.len()).map(|n| n.to_string()).collect();
                let updates: Vec<String> = r
                    .measures
                    .iter()
                    .map(|(n, _, agg)| {
                        let (old, new) = (format!("{target}.{}", quote(n)), format!("EXCLUDED.{}", quote(n)));
                        let combined = match agg {
                            Aggregate::Count => format!("{old} + {new}"),
                            // A sum over only nulls is null: keep whichever side has one.
                            Aggregate::Sum => format!("coalesce({old} + {new}, {old}, {new})"),
                            // least/greatest skip nulls.
                            Aggregate::Min => format!("least({old}, {new})"),
                            Aggregate::Max => format!("greatest({old}, {new})"),
                        };
                        format!("{} = {combined}", quote(n))
                    })
                    .collect();
                // In group order: two transactions updating the same groups
                // take their row locks in the same order, so one waits for
                // the other instead of deadlocking.
                format!(
                    "r{i} AS (INSERT INTO {target} ({}, {}) SELECT {} FROM ins GROUP BY {} ORDER BY {} \
                     ON CONFLICT ({}) DO UPDATE SET {})",
                    group.join(", "),
                    measures.join(", "),
                    exprs.join(", "),
                    positions.join(", "),
                    positions.join(", "),
                    group.join(", "),
                    updates.join(", ")
                )
            })
            .collect();
        let with_rollups_of = |insert: &str, returning: &str, tail: &str| {
            let mut ctes = vec![format!("ins AS ({insert} RETURNING {returning})")];
            ctes.extend(rollups.iter().cloned());
            format!("WITH {} {tail}", ctes.join(", "))
        };
        let with_rollups = |returning: &str, tail: &str| with_rollups_of(&insert, returning, tail);
        let merge_new = (!p.direct_copy_allowed() && !p.schema.key.is_empty()).then(|| {
            if p.rollups.is_empty() {
                insert_new.clone()
            } else {
                with_rollups_of(&insert_new, "*", "SELECT 1")
            }
        });
        let (merge, merge_counts) = if p.rollups.is_empty() {
            (insert.clone(), false)
        } else {
            (with_rollups("*", "SELECT count(*) FROM ins"), true)
        };
        let merge_counted = if p.rollups.is_empty() {
            with_rollups("source_file", "SELECT source_file, count(*) FROM ins GROUP BY source_file")
        } else {
            with_rollups("*", "SELECT source_file, count(*) FROM ins GROUP BY source_file")
        };
        let derived_probe = (!p.derived.is_empty()).then(|| {
            let mut probe_from = format!("{staging} s");
            let mut names = Vec::new();
            for (i, d) in p.derived.iter().enumerate() {
                probe_from.push_str(&format!(
                    " CROSS JOIN LATERAL (SELECT ({})::{} AS {}) d{i}",
                    d.sql,
                    d.sql_type,
                    quote(&d.name)
                ));
                names.push(format!("d{i}.{}", quote(&d.name)));
            }
            format!("SELECT {} FROM {probe_from}", names.join(", "))
        });
        PipelineSql {
            pipeline: p.name.clone(),
            truncate_staging: format!("TRUNCATE {staging}"),
            copy_table: p
                .direct_copy_allowed()
                .then(|| format!("COPY {table} ({copy_list}) FROM STDIN (FORMAT binary)")),
            copy_staging: format!("COPY {staging} ({copy_list}) FROM STDIN (FORMAT binary)"),
            create_staging,
            merge,
            merge_counts,
            merge_counted,
            merge_new,
            derived_probe,
        }
    }
}

/// Serialises the set-up of one table (key: a hash of its name) across
/// daemons starting together.
pub const TABLE_SETUP_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
pub const SCHEMA_EXISTS: &str = "SELECT to_regnamespace($1) IS NOT NULL";
/// `$1`: a quoted, possibly schema-qualified name.
pub const RELATION_EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";
/// A table's columns in order: name, type as written, base type name, type
/// oid.
pub const TABLE_COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
    t.typname::text, a.atttypid::int8 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
    WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
/// The oid of a type name as PostgreSQL parses it (`varchar(64)` →
/// character varying), NULL when it names no type.
pub const TYPE_OID: &str = "SELECT to_regtype($1)::oid::int8";
/// Whether table `$1` has a unique index (or primary key) on exactly the
/// columns `$2`, with `NULLS NOT DISTINCT` when `$3`.
pub const HAS_UNIQUE_INDEX: &str = "SELECT EXISTS (SELECT 1 FROM pg_index i \
    WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL \
    AND i.indnkeyatts = cardinality($2::text[]) AND (NOT $3 OR i.indnullsnotdistinct) \
    AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a \
         WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) \
      = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) AS k))";
/// The types of `core::pipeline::PROVENANCE`, in its order, as added to a
/// table that lacks them.
pub const PROVENANCE_TYPES: [&str; 3] = ["timestamptz NOT NULL DEFAULT now()", "text", "bigint"];

pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema))
}

/// A pipeline's table: its columns in file order (NOT NULL where a value is
/// always there), its derived columns, then where each row came from; the
/// primary key on `key`.
pub fn create_table(p: &Pipeline) -> String {
    let mut defs: Vec<String> = p
        .schema
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.required || c.default.is_some() { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote(&c.name), c.sql_type)
        })
        .collect();
    defs.extend(p.derived.iter().map(|d| format!("{} {}", quote(&d.name), d.sql_type)));
    defs.extend([
        "ingested_at timestamptz NOT NULL DEFAULT now()".to_owned(),
        "source_file text NOT NULL".to_owned(),
        "source_line bigint NOT NULL".to_owned(),
    ]);
    if !p.schema.key.is_empty() {
        let key: Vec<String> = p.schema.key.iter().map(|&k| quote(&p.schema.columns[k].name)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!("CREATE TABLE IF NOT EXISTS {} ({})", p.table.quoted(), defs.join(", "))
}

/// A column added to an existing table: nullable (rows already there have
/// none), except that a type's own DEFAULT clause is kept.
pub fn add_column(table: &str, column: &str, sql_type: &str) -> String {
    format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {sql_type}", quote(column))
}

/// A name PostgreSQL keeps whole (at most 63 bytes): `base` itself, or its
/// start and a hash of all of it.
fn short_name(base: &str) -> String {
    if base.len() <= 63 {
        return base.to_owned();
    }
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(base.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = 54;
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &base[..cut])
}

/// `[indexes]`: `<table>_<column>_idx`, created if missing (the built-in
/// table's indexes, made by its migration, have these names).
pub fn create_index(table: &crate::core::pipeline::TableName, column: &str, method: &str) -> String {
    let name = index_name(table, column);
    format!("CREATE INDEX IF NOT EXISTS {} ON {} USING {method} ({})", quote(&name), table.quoted(), quote(column))
}

/// The name of the `[indexes]` index of `column`.
pub fn index_name(table: &crate::core::pipeline::TableName, column: &str) -> String {
    short_name(&format!("{}_{column}_idx", table.name))
}

/// Holds writers off a table while a rollup is filled from it.
pub fn lock_for_rollup(table: &str) -> String {
    format!("LOCK TABLE {table} IN SHARE MODE")
}

/// A rollup table, created and filled from the rows already in `table` in
/// one statement, then its group key (nulls form a group of their own).
pub fn create_rollup(r: &crate::core::pipeline::Rollup, table: &str) -> String {
    let select: Vec<String> = r
        .group_by
        .iter()
        .map(|(n, e)| format!("({e}) AS {}", quote(n)))
        .chain(r.measures.iter().map(|(n, e, _)| format!("{e} AS {}", quote(n))))
        .collect();
    let positions: Vec<String> = (1..=r.group_by.len()).map(|n| n.to_string()).collect();
    let group: Vec<String> = r.group_by.iter().map(|(n, _)| quote(n)).collect();
    let constraint = quote(&short_name(&format!("{}_groups", r.table.name)));
    format!(
        "CREATE TABLE {target} AS SELECT {} FROM {table} GROUP BY {}; \
         ALTER TABLE {target} ADD CONSTRAINT {constraint} UNIQUE NULLS NOT DISTINCT ({})",
        select.join(", "),
        positions.join(", "),
        group.join(", "),
        target = r.table.quoted(),
    )
}

pub fn count_rows(table: &str) -> String {
    format!("SELECT count(*) FROM {table}")
}

/// `[views]`: created or replaced; `replace = false` drops the view first
/// (for a query whose columns changed).
pub fn create_view(name: &str, query: &str, replace: bool) -> String {
    if replace {
        format!("CREATE OR REPLACE VIEW {name} AS {query}")
    } else {
        format!("DROP VIEW IF EXISTS {name}; CREATE VIEW {name} AS {query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pipeline::{builtin, Pipeline};

    fn example(name: &str) -> PipelineSql {
        let path = format!("{}/config/pipelines/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        PipelineSql::new(&Pipeline::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap())
    }

    /// Which statements each kind of pipeline gets: direct COPY when the
    /// rows go in as they are; else an insert without `ON CONFLICT` for new
    /// keys (rollups fed by what it returns); without a key, the merge alone.
    #[test]
    fn routes_follow_what_the_database_computes() {
        let plain = PipelineSql::new(&builtin());
        assert!(plain.copy_table.as_deref().unwrap().starts_with("COPY \"ecommerce_events\""));
        assert_eq!((plain.merge_new.is_none(), plain.merge_counts), (true, false));
        assert!(plain.merge.ends_with("ON CONFLICT (\"event_id\") DO NOTHING"), "{}", plain.merge);

        let completed = example("transactions");
        assert!(completed.copy_table.is_none());
        let new = completed.merge_new.as_deref().unwrap();
        assert!(new.starts_with("WITH ins AS (INSERT INTO \"transactions\""), "{new}");
        assert!(!new.contains("ON CONFLICT (\"transaction_id\")"), "{new}");
        assert!(new.contains("INSERT INTO \"category_totals\"") && new.contains("INSERT INTO \"category_hourly\""));
        assert!(completed.merge.contains("ON CONFLICT (\"transaction_id\") DO NOTHING RETURNING *"));

        let keyless = example("user_events");
        let insert = keyless.merge.split(" RETURNING ").next().unwrap();
        assert!(keyless.merge_new.is_none() && !insert.contains("ON CONFLICT"), "{insert}");
    }
}
