//! One batch, one transaction: the events (binary COPY straight into the
//! table, or into a session temp table and a merge when ids may repeat), the
//! rejects, and the checkpoint fence.
//!
//! If we die anywhere before COMMIT returns, PostgreSQL rolls the whole
//! batch back and the next start resumes at the previous checkpoint. If the
//! COMMIT's outcome is unknown (connection lost while it was in flight), the
//! replay's fence tells: it matches no row when the batch did commit.

use std::collections::{HashMap, HashSet};
use std::pin::pin;

use bytes::Buf;
use futures::SinkExt;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

use crate::core::event::Event;
use crate::core::reason::RejectReason;
use crate::core::record::RawRecord;
use crate::core::validate::validate;
use crate::db::copy::{CopyEncoder, CopyPayload, Merged};
use crate::db::{sql, DbError, Pool};
use crate::messages::{BatchEnd, Counts, FileTask, RejectRow, ValidatedBatch};
use crate::metrics::metrics;

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
    copy_events: Statement,
    copy_staging: Statement,
    copy_rejects: Statement,
    merge: Statement,
    merge_counted: Statement,
    advance: Statement,
    advance_many: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            copy_events: client.prepare(sql::COPY_EVENTS).await?,
            copy_staging: client.prepare(sql::COPY_STAGING).await?,
            copy_rejects: client.prepare(sql::COPY_REJECTS).await?,
            merge: client.prepare(sql::MERGE_STAGING).await?,
            merge_counted: client.prepare(sql::MERGE_STAGING_COUNTED).await?,
            advance: client.prepare(sql::ADVANCE_CHECKPOINT).await?,
            advance_many: client.prepare(sql::ADVANCE_CHECKPOINTS).await?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed(Counts),
    /// An earlier attempt had committed it (ambiguous commit resolved by
    /// reading the checkpoint).
    AlreadyCommitted,
}

pub async fn connect(pool: &Pool) -> Result<WriterConn, DbError> {
    let client = pool.dedicated_connection().await.map_err(DbError::pg("writer connect"))?;
    client.batch_execute(sql::WRITER_SESSION).await.map_err(DbError::pg("writer session setup"))?;
    let pid: i32 = client.query_one(sql::BACKEND_PID, &[]).await.map_err(DbError::pg("writer session setup"))?.get(0);
    let stmts = Statements::prepare(&client).await.map_err(DbError::pg("writer session setup"))?;
    Ok(WriterConn { client, pid, stmts })
}

const REJECT_TYPES: [Type; 7] = [Type::INT8, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT, Type::BYTEA, Type::BOOL];

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
    fn count(self) {
        let label = match self {
            Route::Direct => "direct",
            Route::Staging => "staging",
        };
        metrics().routes.with_label_values(&[label]).inc();
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
/// rows written per file, or `None` when the direct route met a stored id
/// (the caller rolls back and redoes the batches through staging).
///
/// Direct: the events by COPY straight into the table, and the repeats
/// (presumed duplicates, see `Repeats`) through staging and the merge,
/// which skips those stored and writes any that are not (a first
/// occurrence the database refused, or one not committed after all).
/// Staging: everything through staging and the merge.
async fn put_events<'a>(
    tx: &Transaction<'_>,
    st: &Statements,
    batches: &'a [ValidatedBatch],
    route: Route,
) -> Result<Option<HashMap<&'a str, u64>>, DbError> {
    let mut written: HashMap<&str, u64> = batches.iter().map(|b| (b.file.name.as_str(), 0)).collect();
    let merged = match route {
        Route::Direct => {
            let events = merged(batches.iter().map(|b| &b.events)).await;
            if events.rows() > 0 {
                match copy_payload(tx, &st.copy_events, events).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        metrics().routes.with_label_values(&["direct_conflict"]).inc();
                        return Ok(None);
                    }
                    Err(e) => return Err(DbError::pg("copy events")(e)),
                }
                for b in batches {
                    *written.entry(&b.file.name).or_default() += b.events.rows();
                }
            }
            merged(batches.iter().map(|b| &b.repeats.rows)).await
        }
        Route::Staging => merged(batches.iter().flat_map(|b| [&b.events, &b.repeats.rows])).await,
    };
    if merged.rows() > 0 {
        copy_payload(tx, &st.copy_staging, merged).await.map_err(DbError::pg("copy events"))?;
        if let [b] = batches {
            let n = tx.execute(&st.merge, &[]).await.map_err(DbError::pg("merge events"))?;
            *written.entry(&b.file.name).or_default() += n;
        } else {
            for row in tx.query(&st.merge_counted, &[]).await.map_err(DbError::pg("merge events"))? {
                let name: &str = row.get(0);
                let n: i64 = row.get(1);
                if let Some(b) = batches.iter().find(|b| b.file.name == name) {
                    *written.entry(&b.file.name).or_default() += n as u64;
                }
            }
        }
    }
    route.count();
    Ok(Some(written))
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
fn offered(b: &ValidatedBatch) -> u64 {
    b.events.rows() + b.repeats.rows.rows()
}

/// Commits the batch by `route`. `Ok(None)`: the direct route met an id
/// already stored; nothing was committed and the caller redoes the batch
/// through staging.
pub async fn commit_batch(conn: &mut WriterConn, b: &ValidatedBatch, route: Route) -> Result<Option<Outcome>, DbError> {
    let file = &b.file;
    let st = &conn.stmts;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let Some(written) = put_events(&tx, st, std::slice::from_ref(b), route).await? else {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(None);
    };
    let written = written.values().sum::<u64>();
    if let Err(e) = copy_rejects(&tx, st, file, &b.rejects).await {
        if !e.is_unique_violation() {
            return Err(e);
        }
        // A reject of this batch is stored already: the batch was committed
        // before (its COMMIT's answer was lost). The checkpoint tells.
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return fence_missed(&conn.client, b).await.map(Some);
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
        Some(file_done) => Ok(Some(Outcome::Committed(Counts { file_done, ..counts }))),
        None => fence_missed(&conn.client, b).await.map(Some),
    }
}

async fn copy_rejects(
    tx: &Transaction<'_>,
    st: &Statements,
    file: &FileTask,
    rejects: &[RejectRow],
) -> Result<(), DbError> {
    copy_rejects_of(tx, st, &[(file, rejects)]).await
}

/// One COPY for the rejects of several files.
async fn copy_rejects_of(
    tx: &Transaction<'_>,
    st: &Statements,
    files: &[(&FileTask, &[RejectRow])],
) -> Result<(), DbError> {
    if files.iter().all(|(_, r)| r.is_empty()) {
        return Ok(());
    }
    let sink = tx.copy_in(&st.copy_rejects).await.map_err(DbError::pg("copy rejects"))?;
    let mut w = pin!(BinaryCopyInWriter::new(sink, &REJECT_TYPES));
    for (file, rejects) in files {
        for r in *rejects {
            let line = r.line as i64;
            let reason = r.reason.as_str();
            let values: [&(dyn ToSql + Sync); 7] =
                [&file.file_id, &file.name, &line, &reason, &r.detail, &r.raw, &r.raw_truncated];
            w.as_mut().write(&values).await.map_err(DbError::pg("copy rejects"))?;
        }
    }
    w.finish().await.map_err(DbError::pg("copy rejects"))?;
    Ok(())
}

/// Commits batches of different files (a group of small files) in one
/// transaction: one COPY for all their events, one for their rejects, one
/// fence statement for all their checkpoints. `Ok(None)`: the direct route
/// met an id already stored (nothing committed; redo through staging).
/// A fence that does not match every file rolls back with
/// `DbError::GroupFence`: the caller commits the batches one by one, where
/// each fence is settled on its own.
pub async fn commit_group(
    conn: &mut WriterConn,
    group: &[ValidatedBatch],
    route: Route,
) -> Result<Option<Vec<Counts>>, DbError> {
    let st = &conn.stmts;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let Some(written) = put_events(&tx, st, group, route).await? else {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(None);
    };
    let rejects: Vec<(&FileTask, &[RejectRow])> = group.iter().map(|b| (&*b.file, &b.rejects[..])).collect();
    if let Err(e) = copy_rejects_of(&tx, st, &rejects).await {
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
            let w = written.get(b.file.name.as_str()).copied().unwrap_or(0);
            Counts {
                rows: b.rows,
                written: w,
                duplicate: offered(b) - w + b.batch_duplicates,
                rejected: b.rejects.len() as u64,
                file_done: None,
            }
        })
        .collect();
    let col = |f: &dyn Fn(&ValidatedBatch, &Counts) -> i64| -> Vec<i64> {
        group.iter().zip(&counts).map(|(b, c)| f(b, c)).collect()
    };
    let headers: Vec<&[u8]> = group.iter().map(|b| b.header.raw()).collect();
    let last: Vec<bool> = group.iter().map(|b| b.end == BatchEnd::Eof).collect();
    let advanced = tx
        .query(
            &st.advance_many,
            &[
                &col(&|b, _| b.file.file_id),
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
    crate::failpoints::hit("before_commit", &group[0].file.name);
    tx.commit().await.map_err(DbError::pg("commit"))?;
    let done: HashMap<i64, i64> =
        advanced.iter().filter(|r| r.get::<_, bool>(1)).map(|r| (r.get(0), r.get(2))).collect();
    let counts =
        group.iter().zip(counts).map(|(b, c)| Counts { file_done: done.get(&b.file.file_id).copied(), ..c }).collect();
    Ok(Some(counts))
}

/// Advances the checkpoint (the fence) and commits. `None`: the fence
/// matched no row and the transaction was rolled back. `Some(file_done)`:
/// committed; `file_done` as in `Counts`.
async fn advance_and_commit(
    tx: Transaction<'_>,
    st: &Statements,
    b: &ValidatedBatch,
    counts: Counts,
) -> Result<Option<Option<i64>>, DbError> {
    let advanced = tx
        .query_opt(
            &st.advance,
            &[
                &b.file.file_id,
                &(b.start_offset as i64),
                &(b.end_offset as i64),
                &(b.end_line as i64),
                &(counts.rows as i64),
                &(counts.written as i64),
                &(counts.duplicate as i64),
                &(counts.rejected as i64),
                &b.header.raw(),
                &(b.end == BatchEnd::Eof),
            ],
        )
        .await
        .map_err(DbError::pg("advance checkpoint"))?;
    let Some(advanced) = advanced else {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok(None);
    };
    let file_done = advanced.get::<_, bool>(0).then(|| advanced.get::<_, i64>(1));
    // If we die here the outcome is unknown to us; the replay's fence will
    // find out.
    crate::failpoints::hit("before_commit", &b.file.name);
    tx.commit().await.map_err(DbError::pg("commit"))?;
    crate::failpoints::hit("after_commit", &b.file.name);
    if crate::failpoints::fail_once("lost_commit_ack", &b.file.name) {
        return Err(DbError::Timeout {
            context: "commit (failpoint: acknowledgement lost)",
            timeout: Default::default(),
        });
    }
    Ok(Some(file_done))
}

/// The fence matched no row: either an earlier attempt committed this batch
/// (its COMMIT's answer was lost), or the checkpoint is somewhere else.
async fn fence_missed(client: &Client, b: &ValidatedBatch) -> Result<Outcome, DbError> {
    let row =
        client.query_one(sql::READ_CHECKPOINT, &[&b.file.file_id]).await.map_err(DbError::pg("read checkpoint"))?;
    let actual = row.get::<_, i64>(0) as u64;
    let state: String = row.get(1);
    if state == "done" || (actual == b.end_offset && b.end_offset != b.start_offset) {
        return Ok(Outcome::AlreadyCommitted);
    }
    Err(DbError::Fence { file_id: b.file.file_id, expected: b.start_offset, actual })
}

/// The contract reason closest to a database refusal of a value the
/// validator accepted (the schema and the validator disagree).
pub fn reason_for_refusal(e: &DbError) -> RejectReason {
    let code = match e {
        DbError::Pg { source, .. } => source.code().map(|c| c.code().to_owned()).unwrap_or_default(),
        _ => String::new(),
    };
    match code.as_str() {
        "22001" => RejectReason::TooLong,
        "22003" | "23514" => RejectReason::OutOfRange,
        "22007" | "22008" => RejectReason::InvalidTimestamp,
        "23502" => RejectReason::MissingField,
        _ => RejectReason::MalformedCsv,
    }
}

/// Commits a batch the database refused as a whole, row by row where it
/// must: `records` are the batch's records read again from the file. The
/// valid rows go in by halves, each half under a savepoint; a half refused
/// for its data is split again, down to the single rows at fault, which
/// become rejects with the closest contract reason. Everything else commits
/// with the checkpoint, in one transaction as always. Returns the outcome
/// and how many rows the database refused.
pub async fn commit_isolated(
    conn: &mut WriterConn,
    b: &ValidatedBatch,
    records: &[RawRecord],
) -> Result<(Outcome, u64), DbError> {
    let file = &b.file;
    if records.len() as u64 != b.rows {
        return Err(DbError::Isolation { file_id: file.file_id, expected: b.rows, found: records.len() as u64 });
    }
    // The same rules as the Validator, applied again to the same records.
    let now = chrono::Utc::now();
    let mut seen = HashSet::new();
    let mut valid: Vec<(Event<'_>, &RawRecord)> = Vec::new();
    let mut rejects: Vec<RejectRow> = Vec::new();
    let mut batch_duplicates = 0u64;
    for rec in records {
        match validate(&b.header, rec, now) {
            Ok(e) if seen.insert(e.event_id) => valid.push((e, rec)),
            Ok(_) => batch_duplicates += 1,
            Err(r) => rejects.push(reject_row(rec, r.reason, r.detail)),
        }
    }
    valid.sort_unstable_by_key(|(e, _)| e.event_id);

    let st = &conn.stmts;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let mut written = 0u64;
    let mut refused = 0u64;
    let mut todo = vec![(0, valid.len())];
    while let Some((lo, hi)) = todo.pop() {
        if lo == hi {
            continue;
        }
        let mut enc = CopyEncoder::new(0);
        for (e, rec) in &valid[lo..hi] {
            enc.push(e, rec.line, &file.name);
        }
        tx.batch_execute("SAVEPOINT isolate").await.map_err(DbError::pg("savepoint"))?;
        let attempt = async {
            copy_payload(&tx, &st.copy_staging, enc.finish().bytes).await.map_err(DbError::pg("copy events"))?;
            let n = tx.execute(&st.merge, &[]).await.map_err(DbError::pg("merge events"))?;
            // The temp table empties only at commit; this transaction goes on.
            tx.batch_execute("TRUNCATE ingestd_staging").await.map_err(DbError::pg("truncate staging"))?;
            Ok::<u64, DbError>(n)
        };
        match attempt.await {
            Ok(n) => {
                written += n;
                tx.batch_execute("RELEASE SAVEPOINT isolate").await.map_err(DbError::pg("savepoint"))?;
            }
            Err(e) if e.is_data_error() => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT isolate").await.map_err(DbError::pg("savepoint"))?;
                if hi - lo == 1 {
                    refused += 1;
                    let detail = format!("refused by the database: {e}");
                    rejects.push(reject_row(valid[lo].1, reason_for_refusal(&e), detail));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
            }
            Err(e) => return Err(e),
        }
    }
    rejects.sort_by_key(|r| r.line);
    if let Err(e) = copy_rejects(&tx, st, file, &rejects).await {
        if !e.is_unique_violation() {
            return Err(e);
        }
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        return Ok((fence_missed(&conn.client, b).await?, 0));
    }
    let counts = Counts {
        rows: b.rows,
        written,
        duplicate: valid.len() as u64 - refused - written + batch_duplicates,
        rejected: rejects.len() as u64,
        file_done: None,
    };
    debug_assert_eq!(counts.rows, counts.written + counts.duplicate + counts.rejected);
    match advance_and_commit(tx, st, b, counts).await? {
        Some(file_done) => Ok((Outcome::Committed(Counts { file_done, ..counts }), refused)),
        None => Ok((fence_missed(&conn.client, b).await?, 0)),
    }
}

fn reject_row(rec: &RawRecord, reason: RejectReason, detail: String) -> RejectRow {
    RejectRow { line: rec.line, reason, detail, raw: rec.raw.clone(), raw_truncated: rec.raw_truncated }
}
