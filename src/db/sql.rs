//! Every SQL statement the daemon runs, by name. The schema itself lives in
//! `migrations/`.

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
pub const WRITER_SESSION: &str = "SET synchronous_commit = on;
CREATE TEMP TABLE IF NOT EXISTS ingestd_staging (
    event_id uuid,
    event_type text,
    user_id text,
    session_id text,
    product_id text,
    product_name text,
    product_category text,
    price numeric,
    quantity int4,
    event_timestamp timestamptz,
    device_type text,
    user_agent text,
    source_line int8,
    source_file text
) ON COMMIT DELETE ROWS";
pub const BACKEND_PID: &str = "SELECT pg_backend_pid()";
/// Ends a backend that stopped answering, so a late commit of its open
/// transaction cannot race the replay (the fence would stop it anyway).
pub const TERMINATE_BACKEND: &str = "SELECT pg_terminate_backend($1)";

/// Both COPY targets take the columns `db::copy` encodes, in its order.
pub const COPY_STAGING: &str = "COPY ingestd_staging (event_id, event_type, user_id, session_id, product_id, \
    product_name, product_category, price, quantity, event_timestamp, device_type, user_agent, source_line, \
    source_file) FROM STDIN (FORMAT binary)";
/// Straight into the table; `ingested_at` takes its default (commit time).
pub const COPY_EVENTS: &str = "COPY ecommerce_events (event_id, event_type, user_id, session_id, product_id, \
    product_name, product_category, price, quantity, event_timestamp, device_type, user_agent, source_line, \
    source_file) FROM STDIN (FORMAT binary)";
/// Rows whose event_id is already stored are skipped: they count as
/// `duplicate`. The affected-row count is the number written.
pub const MERGE_STAGING: &str = "INSERT INTO ecommerce_events (event_id, event_type, user_id, session_id, \
    product_id, product_name, product_category, price, quantity, event_timestamp, device_type, user_agent, \
    source_line, source_file) \
    SELECT event_id, event_type, user_id, session_id, product_id, product_name, product_category, price, \
    quantity, event_timestamp, device_type, user_agent, source_line, source_file FROM ingestd_staging \
    ON CONFLICT (event_id) DO NOTHING";
/// The merge for a group of files: rows written per file.
pub const MERGE_STAGING_COUNTED: &str = "WITH ins AS (INSERT INTO ecommerce_events (event_id, event_type, \
    user_id, session_id, product_id, product_name, product_category, price, quantity, event_timestamp, \
    device_type, user_agent, source_line, source_file) \
    SELECT event_id, event_type, user_id, session_id, product_id, product_name, product_category, price, \
    quantity, event_timestamp, device_type, user_agent, source_line, source_file FROM ingestd_staging \
    ON CONFLICT (event_id) DO NOTHING RETURNING source_file) \
    SELECT source_file, count(*) FROM ins GROUP BY source_file";
pub const COPY_REJECTS: &str = "COPY ingest_rejects (file_id, source_file, source_line, reason, detail, \
    raw_line, raw_truncated) FROM STDIN (FORMAT binary)";
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
    RETURNING state = 'done', rows_rejected";
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
    RETURNING f.id, f.state = 'done', f.rows_rejected";
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
    INSERT INTO ingest_files (path, file_name, fingerprint, size) \
    SELECT path, file_name, fingerprint, size FROM input \
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
    RETURNING id, rows_rejected";
pub const FILE_STATE: &str = "SELECT state, rows_total, rows_written, rows_duplicate, rows_rejected \
    FROM ingest_files WHERE id = $1";
pub const RECORD_FAILURE: &str = "UPDATE ingest_files SET attempts = attempts + 1, error = $2, \
    state = CASE WHEN attempts + 1 >= $3 AND state <> 'done' THEN 'failed' ELSE state END, updated_at = now() \
    WHERE id = $1 RETURNING state";
pub const PARK_FILE: &str = "UPDATE ingest_files SET state = 'failed', error = $2, updated_at = now() \
    WHERE id = $1 AND state <> 'done'";
/// One page of a file's rejects, in line order (callers append a LIMIT).
pub const REJECTS_OF_FILE_AFTER: &str = "SELECT source_line, reason, detail, raw_line FROM ingest_rejects \
    WHERE file_id = $1 AND source_line > $2 ORDER BY source_line";

pub const STATUS: &str = "SELECT file_name, path, state, rows_total, rows_written, rows_duplicate, \
    rows_rejected, committed_offset, size, first_seen_at, finished_at, error FROM ingest_files ORDER BY id";

/// Finished files that have rejects matching the filters ($1 file name,
/// $2 reason; NULL = any).
pub const REPLAY_FILES: &str = "SELECT DISTINCT f.id, f.file_name, f.header FROM ingest_files f \
    JOIN ingest_rejects r ON r.file_id = f.id \
    WHERE f.state = 'done' AND ($1::text IS NULL OR f.file_name = $1) AND ($2::text IS NULL OR r.reason = $2) \
    ORDER BY f.id";
pub const LOCK_FILE: &str = "SELECT state FROM ingest_files WHERE id = $1 FOR UPDATE";
/// One page of a file's rejects to replay (callers append a LIMIT).
pub const REPLAY_REJECTS: &str = "SELECT id, source_line, raw_line, raw_truncated, reason, detail \
    FROM ingest_rejects WHERE file_id = $1 AND ($2::text IS NULL OR reason = $2) AND source_line > $3 \
    ORDER BY source_line";
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
