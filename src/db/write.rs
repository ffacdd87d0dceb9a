//! One batch, one transaction: the events (binary COPY straight into the
//! table, or into a session temp table and a merge when ids may repeat), the
//! rejects, and the checkpoint fence.
//!
//! If we die anywhere before COMMIT returns, PostgreSQL rolls the whole
//! batch back and the next start resumes at the previous checkpoint. If the
//! COMMIT's outcome is unknown (connection lost while it was in flight), the
//! replay's fence tells: it matches no row when the batch did commit.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use bytes::Buf;
use futures::SinkExt;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

use crate::core::copy::{CopyPayload, Merged};
use crate::core::reason::RejectReason;
use crate::core::validate::{Checked, RejectRow};
use crate::db::files::FileTotals;
use crate::db::sql::PipelineSql;
use crate::db::{sql, DbError, Pool};
use crate::metrics::metrics;

/// One batch of one file, as a transaction needs it.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub file_id: i64,
    /// The file's name, stored as `source_file` (unique within a group).
    pub file_name: &'a str,
    /// The file's header record, stored with its checkpoint.
    pub header: &'a [u8],
    /// The fence: the committed checkpoint must be here.
    pub start_offset: u64,
    pub end_offset: u64,
    pub end_line: u64,
    /// Data rows: events + repeats + rejects + in-batch duplicates.
    pub rows: u64,
    pub events: &'a CopyPayload,
    /// Presumed duplicates (see `core::validate::Checked::repeats`).
    pub repeats: &'a CopyPayload,
    pub rejects: &'a [RejectRow],
    pub batch_duplicates: u64,
    /// The file's last batch: the file is done once it commits.
    pub last: bool,
}

/// Counts of one committed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: u64,
    pub written: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// The batch's transaction also marked its file done (its last batch,
    /// rows adding up): the file's rows in all (its rejected rows decide
    /// its disk work).
    pub file_done: Option<FileTotals>,
}

/// The Writer's own connection. It is taken from the pool's manager but
/// never returned to the pool: after an error or a timeout it is dropped, so
/// a hung or half-used session is never reused.
pub struct WriterConn {
    pub client: Client,
    /// Backend process id, to terminate a backend that stopped answering.
    pub pid: i32,
    /// Prepared once per connection: a batch then costs no parse round trips.
    stmts: Statements,
}

struct Statements {
    sql: Arc<PipelineSql>,
    copy_table: Option<Statement>,
    copy_staging: Statement,
    copy_rejects: Statement,
    merge: Statement,
    merge_counted: Statement,
    merge_new: Option<Statement>,
    advance: Statement,
    advance_many: Statement,
}

impl Statements {
    async fn prepare(client: &Client, sql: Arc<PipelineSql>) -> Result<Statements, tokio_postgres::Error> {
        let copy_table = match &sql.copy_table {
            Some(s) => Some(client.prepare(s).await?),
            None => None,
        };
        let merge_new = match &sql.merge_new {
            Some(s) => Some(client.prepare(s).await?),
            None => None,
        };
        Ok(Statements {
            copy_table,
            merge_new,
            copy_staging: client.prepare(&sql.copy_staging).await?,
            copy_rejects: client.prepare(sql::COPY_REJECTS).await?,
            merge: client.prepare(&sql.merge).await?,
            merge_counted: client.prepare(&sql.merge_counted).await?,
            advance: client.prepare(sql::ADVANCE_CHECKPOINT).await?,
            advance_many: client.prepare(sql::ADVANCE_CHECKPOINTS).await?,
            sql,
        })
    }

    /// Runs the merge; the rows it wrote.
    async fn merge(&self, tx: &Transaction<'_>) -> Result<u64, DbError> {
        if self.sql.merge_counts {
            let row = tx.query_one(&self.merge, &[]).await.map_err(DbError::pg("merge rows"))?;
            Ok(row.get::<_, i64>(0) as u64)
        } else {
            tx.execute(&self.merge, &[]).await.map_err(DbError::pg("merge rows"))
        }
    }
}

/// How a batch's transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed(Counts),
    /// An earlier attempt had committed it (ambiguous commit resolved by
    /// reading the checkpoint).
    AlreadyCommitted,
    /// The direct route met a key already stored: nothing was committed;
    /// redo it through staging.
    Conflict,
}

/// How a group's transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Each batch's counts, in the group's order.
    Committed(Vec<Counts>),
    /// As `Outcome::Conflict`.
    Conflict,
}

/// What putting a transaction's rows in the table did.
enum Put<'a> {
    /// Rows written per file.
    Written(HashMap<&'a str, u64>),
    /// The direct route met a key already stored (the caller rolls back).
    Conflict,
}

pub async fn connect(pool: &Pool, sql: Arc<PipelineSql>) -> Result<WriterConn, DbError> {
    let client = pool.dedicated_connection().await.map_err(DbError::pg("writer connect"))?;
    let setup = DbError::pg("writer session setup");
    client.batch_execute(sql::WRITER_SESSION).await.map_err(setup)?;
    client.batch_execute(&sql.create_staging).await.map_err(DbError::pg("writer session setup"))?;
    let pid: i32 = client.query_one(sql::BACKEND_PID, &[]).await.map_err(DbError::pg("writer session setup"))?.get(0);
    let stmts = Statements::prepare(&client, sql).await.map_err(DbError::pg("writer session setup"))?;
    Ok(WriterConn { client, pid, stmts })
}

const REJECT_TYPES: [Type; 8] =
    [Type::INT8, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT, Type::BYTEA, Type::BOOL, Type::TEXT];

/// How the events reach the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Binary COPY straight into the table: the fastest path, for rows
    /// whose ids are new; the batch's repeats (presumed duplicates) are
    /// merged apart through staging (`put_events`). A conflict aborts the
    /// transaction, and the batch is redone through staging.
    Direct,
    /// COPY into the session's temp table, then INSERT … ON CONFLICT DO
    /// NOTHING: duplicates are skipped and counted.
    Staging,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Staging => "staging",
        }
    }
}

/// Streams an encoded COPY payload (see `db::copy`); returns rows copied.
async fn copy_payload<B: Buf + Send + 'static>(
    tx: &Transaction<'_>,
    stmt: &Statement,
    payload: B,
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, B>(stmt).await?;
    let mut sink = pin!(sink);
    sink.send(payload).await?;
    sink.as_mut().finish().await
}

/// Puts the events of `batches` (one transaction) in the table. Returns the
/// rows written per file, or `None` when the direct route met a stored key
/// (the caller rolls back and redoes the batches through staging).
///
/// Direct: the events by COPY straight into the table, and the repeats
/// (presumed duplicates) through staging and the merge, which skips those
/// stored and writes any that are not (a first occurrence the database
/// refused, or one not committed after all). A pipeline whose rows
/// PostgreSQL completes on the way in (derived columns, rollups) cannot
/// COPY into its table: its direct route stages the events and inserts
/// them without `ON CONFLICT` (`PipelineSql::merge_new`), a stored key
/// aborting it as a direct COPY's would; without a key it always takes
/// staging. Staging: everything through staging and the merge.
async fn put_events<'a>(
    tx: &Transaction<'_>,
    st: &Statements,
    batches: &[Batch<'a>],
    route: Route,
) -> Result<Put<'a>, DbError> {
    let mut written: HashMap<&str, u64> = batches.iter().map(|b| (b.file_name, 0)).collect();
    let merged = match (route, &st.copy_table) {
        (Route::Direct, Some(copy_table)) => {
            let events = merged(batches.iter().map(|b| b.events)).await;
            if events.rows() > 0 {
                match copy_payload(tx, copy_table, events).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        metrics().route(&st.sql.pipeline, "direct_conflict");
                        return Ok(Put::Conflict);
                    }
                    Err(e) => return Err(DbError::pg("copy rows")(e)),
                }
                for b in batches {
                    *written.entry(b.file_name).or_default() += b.events.rows();
                }
            }
            merged(batches.iter().map(|b| b.repeats)).await
        }
        (Route::Direct, None) if st.merge_new.is_some() => {
            let events = merged(batches.iter().map(|b| b.events)).await;
            let repeats = merged(batches.iter().map(|b| b.repeats)).await;
            if events.rows() > 0 {
                copy_payload(tx, &st.copy_staging, events).await.map_err(DbError::pg("copy rows"))?;
                match tx.execute(st.merge_new.as_ref().expect("checked"), &[]).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        metrics().route(&st.sql.pipeline, "direct_conflict");
                        return Ok(Put::Conflict);
                    }
                    Err(e) => return Err(DbError::pg("merge rows")(e)),
                }
                for b in batches {
                    *written.entry(b.file_name).or_default() += b.events.rows();
                }
                if repeats.rows() > 0 {
                    tx.batch_execute(&st.sql.truncate_staging).await.map_err(DbError::pg("truncate staging"))?;
                }
            }
            repeats
        }
        _ => merged(batches.iter().flat_map(|b| [b.events, b.repeats])).await,
    };
    if merged.rows() > 0 {
        copy_payload(tx, &st.copy_staging, merged).await.map_err(DbError::pg("copy rows"))?;
        if let [b] = batches {
            *written.entry(b.file_name).or_default() += st.merge(tx).await?;
        } else {
            for row in tx.query(&st.merge_counted, &[]).await.map_err(DbError::pg("merge rows"))? {
                let name: &str = row.get(0);
                let n: i64 = row.get(1);
                if let Some(b) = batches.iter().find(|b| b.file_name == name) {
                    *written.entry(b.file_name).or_default() += n as u64;
                }
            }
        }
    }
    let taken = match route {
        Route::Direct if st.copy_table.is_none() && st.merge_new.is_none() => Route::Staging,
        r => r,
    };
    metrics().route(&st.sql.pipeline, taken.label());
    Ok(Put::Written(written))
}

/// `CopyPayload::merge`, on the blocking pool when there is work to do: a
/// group of small files' batches is ten thousand rows to sort, and this
/// thread drives every connection.
async fn merged<'a>(parts: impl IntoIterator<Item = &'a CopyPayload>) -> Merged {
    let parts: Vec<CopyPayload> = parts.into_iter().filter(|p| p.rows() > 0).cloned().collect();
    if parts.len() < 2 {
        return CopyPayload::merge(&parts);
    }
    match tokio::task::spawn_blocking(move || CopyPayload::merge(&parts)).await {
        Ok(p) => p,
        // A bug, as it would be here.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Valid rows a batch offers the table: its events and its repeats.
fn offered(b: &Batch<'_>) -> u64 {
    b.events.rows() + b.repeats.rows()
}

/// Commits the batch by `route`.
pub async fn commit_batch(conn: &mut WriterConn, b: &Batch<'_>, route: Route) -> Result<Outcome, DbError> {
    let st = &conn.stmts;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let Put::Written(written) = put_events(&tx, st, std::slice::from_ref(b), route).await? else {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(Outcome::Conflict);
    };
    let written = written.values().sum::<u64>();
    if let Err(e) = copy_rejects(&tx, st, &[(b.file_id, b.file_name, b.rejects)]).await {
        if !e.is_unique_violation() {
            return Err(e);
        }
        // A reject of this batch is stored already: the batch was committed
        // before (its COMMIT's answer was lost). The checkpoint tells.
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return fence_missed(&conn.client, b).await;
    }
    let counts = Counts {
        rows: b.rows,
        written,
        duplicate: offered(b) - written + b.batch_duplicates,
        rejected: b.rejects.len() as u64,
        file_done: None,
    };
    debug_assert_eq!(counts.rows, counts.written + counts.duplicate + counts.rejected);
    match advance_and_commit(tx, st, b, counts).await? {
        Fenced::Committed(file_done) => Ok(Outcome::Committed(Counts { file_done, ..counts })),
        Fenced::Missed => fence_missed(&conn.client, b).await,
    }
}

/// One COPY for the rejects of one or several files: (file id, file name,
/// rejects).
async fn copy_rejects(
    tx: &Transaction<'_>,
    st: &Statements,
    files: &[(i64, &str, &[RejectRow])],
) -> Result<(), DbError> {
    if files.iter().all(|(_, _, r)| r.is_empty()) {
        return Ok(());
    }
    let sink = tx.copy_in(&st.copy_rejects).await.map_err(DbError::pg("copy rejects"))?;
    let mut w = pin!(BinaryCopyInWriter::new(sink, &REJECT_TYPES));
    for (file_id, name, rejects) in files {
        for r in *rejects {
            let line = r.line as i64;
            let reason = r.reason.as_str();
            let values: [&(dyn ToSql + Sync); 8] =
                [file_id, name, &line, &reason, &r.detail, &r.raw, &r.raw_truncated, &st.sql.pipeline];
            w.as_mut().write(&values).await.map_err(DbError::pg("copy rejects"))?;
        }
    }
    w.finish().await.map_err(DbError::pg("copy rejects"))?;
    Ok(())
}

/// Commits batches of different files (a group of small files) in one
/// transaction: one COPY for all their rows, one for their rejects, one
/// fence statement for all their checkpoints. A fence that does not match
/// every file rolls back with
/// `DbError::GroupFence`: the caller commits the batches one by one, where
/// each fence is settled on its own.
pub async fn commit_group(conn: &mut WriterConn, group: &[Batch<'_>], route: Route) -> Result<GroupOutcome, DbError> {
    let st = &conn.stmts;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let Put::Written(written) = put_events(&tx, st, group, route).await? else {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(GroupOutcome::Conflict);
    };
    let rejects: Vec<(i64, &str, &[RejectRow])> = group.iter().map(|b| (b.file_id, b.file_name, b.rejects)).collect();
    if let Err(e) = copy_rejects(&tx, st, &rejects).await {
        if !e.is_unique_violation() {
            return Err(e);
        }
        // Some batch of the group was committed before: settle one by one.
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Err(DbError::GroupFence);
    }
    let counts: Vec<Counts> = group
        .iter()
        .map(|b| {
            let w = written.get(b.file_name).copied().unwrap_or(0);
            Counts {
                rows: b.rows,
                written: w,
                duplicate: offered(b) - w + b.batch_duplicates,
                rejected: b.rejects.len() as u64,
                file_done: None,
            }
        })
        .collect();
    let col = |f: &dyn Fn(&Batch<'_>, &Counts) -> i64| -> Vec<i64> {
        group.iter().zip(&counts).map(|(b, c)| f(b, c)).collect()
    };
    let headers: Vec<&[u8]> = group.iter().map(|b| b.header).collect();
    let last: Vec<bool> = group.iter().map(|b| b.last).collect();
    let advanced = tx
        .query(
            &st.advance_many,
            &[
                &col(&|b, _| b.file_id),
                &col(&|b, _| b.start_offset as i64),
                &col(&|b, _| b.end_offset as i64),
                &col(&|b, _| b.end_line as i64),
                &col(&|_, c| c.rows as i64),
                &col(&|_, c| c.written as i64),
                &col(&|_, c| c.duplicate as i64),
                &col(&|_, c| c.rejected as i64),
                &headers,
                &last,
            ],
        )
        .await
        .map_err(DbError::pg("advance checkpoints"))?;
    if advanced.len() != group.len() {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Err(DbError::GroupFence);
    }
    crate::failpoints::hit("before_commit", group[0].file_name);
    tx.commit().await.map_err(DbError::pg("commit"))?;
    let done: HashMap<i64, FileTotals> =
        advanced.iter().filter(|r| r.get::<_, bool>(1)).map(|r| (r.get(0), FileTotals::at(r, 2))).collect();
    let counts =
        group.iter().zip(counts).map(|(b, c)| Counts { file_done: done.get(&b.file_id).copied(), ..c }).collect();
    Ok(GroupOutcome::Committed(counts))
}

/// What the checkpoint fence said.
enum Fenced {
    /// Committed; `Some(totals)`: the batch's transaction also marked its
    /// file done (as in `Counts::file_done`).
    Committed(Option<FileTotals>),
    /// The fence matched no row; the transaction was rolled back.
    Missed,
}

/// Advances the checkpoint (the fence) and commits.
async fn advance_and_commit(
    tx: Transaction<'_>,
    st: &Statements,
    b: &Batch<'_>,
    counts: Counts,
) -> Result<Fenced, DbError> {
    let advanced = tx
        .query_opt(
            &st.advance,
            &[
                &b.file_id,
                &(b.start_offset as i64),
                &(b.end_offset as i64),
                &(b.end_line as i64),
                &(counts.rows as i64),
                &(counts.written as i64),
                &(counts.duplicate as i64),
                &(counts.rejected as i64),
                &b.header,
                &b.last,
            ],
        )
        .await
        .map_err(DbError::pg("advance checkpoint"))?;
    let Some(advanced) = advanced else {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(Fenced::Missed);
    };
    let file_done = advanced.get::<_, bool>(0).then(|| FileTotals::at(&advanced, 1));
    // If we die here the outcome is unknown to us; the replay's fence will
    // find out.
    crate::failpoints::hit("before_commit", b.file_name);
    tx.commit().await.map_err(DbError::pg("commit"))?;
    crate::failpoints::hit("after_commit", b.file_name);
    if crate::failpoints::fail_once("lost_commit_ack", b.file_name) {
        return Err(DbError::Timeout {
            context: "commit (failpoint: acknowledgement lost)",
            timeout: Default::default(),
        });
    }
    Ok(Fenced::Committed(file_done))
}

/// The fence matched no row: either an earlier attempt committed this batch
/// (its COMMIT's answer was lost), or the checkpoint is somewhere else.
async fn fence_missed(client: &Client, b: &Batch<'_>) -> Result<Outcome, DbError> {
    let row = client.query_one(sql::READ_CHECKPOINT, &[&b.file_id]).await.map_err(DbError::pg("read checkpoint"))?;
    let actual = row.get::<_, i64>(0) as u64;
    let state = crate::db::files::FileState::parse(row.get(1));
    if state == crate::db::files::FileState::Done || (actual == b.end_offset && b.end_offset != b.start_offset) {
        return Ok(Outcome::AlreadyCommitted);
    }
    Err(DbError::Fence { file_id: b.file_id, expected: b.start_offset, actual })
}

/// The contract reason closest to a database refusal of a value the
/// validator accepted (the schema and the validator disagree).
pub fn reason_for_refusal(e: &DbError) -> RejectReason {
    let code = match e {
        DbError::Pg { source, .. } => source.code().map(|c| c.code().to_owned()).unwrap_or_default(),
        _ => String::new(),
    };
    match code.as_str() {
        "22001" => RejectReason::TOO_LONG,
        "22003" | "23514" => RejectReason::OUT_OF_RANGE,
        "22007" | "22008" => RejectReason::INVALID_TIMESTAMP,
        "23502" => RejectReason::MISSING_FIELD,
        _ => RejectReason::MALFORMED_CSV,
    }
}

/// Commits a batch the database refused as a whole, row by row where it
/// must: `checked` is the batch's records read again and validated again
/// (without presumed duplicates), `raw_of` gives a row's raw text by line.
/// The valid rows go in by halves, each half under a savepoint; a half
/// refused for its data is split again, down to the single rows at fault,
/// which become rejects: `derived_failed` when a derived column's
/// expression fails on the row (with the database's message), else the
/// contract reason closest to the refusal. Everything else commits with the
/// checkpoint, in one transaction as always.
pub async fn commit_isolated(
    conn: &mut WriterConn,
    b: &Batch<'_>,
    mut checked: Checked,
    raw_of: &dyn Fn(u64) -> (Vec<u8>, bool),
) -> Result<Isolated, DbError> {
    if checked.rows != b.rows {
        return Err(DbError::Isolation { file_id: b.file_id, expected: b.rows, found: checked.rows });
    }
    let st = &conn.stmts;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let valid = checked.events.rows() as usize;
    let mut written = 0u64;
    let mut refused = 0u64;
    let mut todo = vec![(0, valid)];
    while let Some((lo, hi)) = todo.pop() {
        if lo == hi {
            continue;
        }
        savepoint(&tx, "SAVEPOINT isolate").await?;
        let part = checked.events.slice(lo..hi);
        let attempt = async {
            copy_payload(&tx, &st.copy_staging, part.stream()).await.map_err(DbError::pg("copy rows"))?;
            let n = st.merge(&tx).await?;
            // The temp table empties only at commit; this transaction goes on.
            tx.batch_execute(&st.sql.truncate_staging).await.map_err(DbError::pg("truncate staging"))?;
            Ok::<u64, DbError>(n)
        };
        match attempt.await {
            Ok(n) => {
                written += n;
                savepoint(&tx, "RELEASE SAVEPOINT isolate").await?;
            }
            Err(e) if e.is_data_error() => {
                savepoint(&tx, "ROLLBACK TO SAVEPOINT isolate").await?;
                if hi - lo == 1 {
                    refused += 1;
                    let (reason, detail) = match derived_failure(&tx, st, &part).await? {
                        Some(message) => (RejectReason::DERIVED_FAILED, message),
                        None => (reason_for_refusal(&e), format!("refused by the database: {e}")),
                    };
                    let line = checked.event_lines[lo];
                    let (raw, raw_truncated) = raw_of(line);
                    checked.rejects.push(RejectRow { line, reason, detail, raw, raw_truncated });
                } else {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
            }
            Err(e) => return Err(e),
        }
    }
    checked.rejects.sort_by_key(|r| r.line);
    if let Err(e) = copy_rejects(&tx, st, &[(b.file_id, b.file_name, &checked.rejects)]).await {
        if !e.is_unique_violation() {
            return Err(e);
        }
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(Isolated::not_written(fence_missed(&conn.client, b).await?));
    }
    let reasons = checked.rejects.iter().map(|r| r.reason).collect();
    let counts = Counts {
        rows: b.rows,
        written,
        duplicate: valid as u64 - refused - written + checked.batch_duplicates,
        rejected: checked.rejects.len() as u64,
        file_done: None,
    };
    debug_assert_eq!(counts.rows, counts.written + counts.duplicate + counts.rejected);
    match advance_and_commit(tx, st, b, counts).await? {
        Fenced::Committed(file_done) => {
            Ok(Isolated { outcome: Outcome::Committed(Counts { file_done, ..counts }), refused, reasons })
        }
        Fenced::Missed => Ok(Isolated::not_written(fence_missed(&conn.client, b).await?)),
    }
}

/// What isolating a refused batch did.
#[derive(Debug)]
pub struct Isolated {
    pub outcome: Outcome,
    /// Rows the database refused (now rejects).
    pub refused: u64,
    /// The reason of every reject the transaction stored.
    pub reasons: Vec<RejectReason>,
}

impl Isolated {
    fn not_written(outcome: Outcome) -> Isolated {
        Isolated { outcome, refused: 0, reasons: Vec::new() }
    }
}

async fn savepoint(tx: &Transaction<'_>, statement: &str) -> Result<(), DbError> {
    tx.batch_execute(statement).await.map_err(DbError::pg("savepoint"))
}

/// For one refused row (`row`): whether a derived column's expression fails
/// on it, and the database's message if so. Probed under a savepoint of
/// its own, rolled back either way.
async fn derived_failure(tx: &Transaction<'_>, st: &Statements, row: &CopyPayload) -> Result<Option<String>, DbError> {
    let Some(probe) = &st.sql.derived_probe else { return Ok(None) };
    savepoint(tx, "SAVEPOINT probe").await?;
    let attempt = async {
        copy_payload(tx, &st.copy_staging, row.stream()).await.map_err(DbError::pg("copy rows"))?;
        tx.query(probe.as_str(), &[]).await.map_err(DbError::pg("derived columns"))
    };
    let outcome = match attempt.await {
        Ok(_) => None,
        Err(e) if e.is_data_error() => Some(match &e {
            DbError::Pg { source, .. } => crate::db::describe(source),
            other => other.to_string(),
        }),
        Err(e) => return Err(e),
    };
    savepoint(tx, "ROLLBACK TO SAVEPOINT probe").await?;
    Ok(outcome)
}
