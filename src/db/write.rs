//! One batch, one transaction: the events (binary COPY straight into the
//! table, or into a session temp table and a merge when ids may repeat), the
//! rejects, and the checkpoint fence.
//!
//! If we die anywhere before COMMIT returns, PostgreSQL rolls the whole
//! batch back and the next start resumes at the previous checkpoint. If the
//! COMMIT's outcome is unknown (connection lost while it was in flight), the
//! replay's fence tells: it matches no row when the batch did commit.

use std::pin::pin;

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use crate::db::{sql, DbError, Pool};
use crate::messages::{Counts, ValidatedBatch};

/// The Writer's own connection. It is taken from the pool's manager but
/// never returned to the pool: after an error or a timeout it is dropped, so
/// a hung or half-used session is never reused.
pub struct WriterConn {
    pub client: Client,
    /// Backend process id, to terminate a backend that stopped answering.
    pub pid: i32,
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
    Ok(WriterConn { client, pid })
}

const REJECT_TYPES: [Type; 7] = [Type::INT8, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT, Type::BYTEA, Type::BOOL];

/// How the events reach the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Binary COPY straight into the table: the fastest path, for batches
    /// whose ids are all new. A conflict aborts the transaction, and the
    /// batch is redone through staging. (Looking the ids up first costs as
    /// much as the merge: the primary-key probes are the expensive part.)
    Direct,
    /// COPY into the session's temp table, then INSERT … ON CONFLICT DO
    /// NOTHING: duplicates are skipped and counted.
    Staging,
}

/// Streams an encoded COPY payload (see `db::copy`); returns rows copied.
async fn copy_payload(tx: &Transaction<'_>, sql: &str, payload: Bytes) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    let mut sink = pin!(sink);
    sink.send(payload).await?;
    sink.as_mut().finish().await
}

/// Commits the batch by `route`. `Ok(None)`: the direct route met an id
/// already stored; nothing was committed and the caller redoes the batch
/// through staging.
pub async fn commit_batch(conn: &mut WriterConn, b: &ValidatedBatch, route: Route) -> Result<Option<Outcome>, DbError> {
    let file = &b.file;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let mut written = 0u64;
    if b.events.rows() > 0 {
        match route {
            Route::Direct => match copy_payload(&tx, sql::COPY_EVENTS, b.events.bytes.clone()).await {
                Ok(n) => written = n,
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tx.rollback().await.map_err(DbError::pg("rollback"))?;
                    return Ok(None);
                }
                Err(e) => return Err(DbError::pg("copy events")(e)),
            },
            Route::Staging => {
                copy_payload(&tx, sql::COPY_STAGING, b.events.bytes.clone())
                    .await
                    .map_err(DbError::pg("copy events"))?;
                written = tx.execute(sql::MERGE_STAGING, &[]).await.map_err(DbError::pg("merge events"))?;
            }
        }
    }
    if !b.rejects.is_empty() {
        let sink = tx.copy_in(sql::COPY_REJECTS).await.map_err(DbError::pg("copy rejects"))?;
        let mut w = pin!(BinaryCopyInWriter::new(sink, &REJECT_TYPES));
        for r in &b.rejects {
            let line = r.line as i64;
            let reason = r.reason.as_str();
            let values: [&(dyn ToSql + Sync); 7] =
                [&file.file_id, &file.name, &line, &reason, &r.detail, &r.raw, &r.raw_truncated];
            w.as_mut().write(&values).await.map_err(DbError::pg("copy rejects"))?;
        }
        w.finish().await.map_err(DbError::pg("copy rejects"))?;
    }
    let counts = Counts {
        rows: b.rows,
        written,
        duplicate: b.events.rows() - written + b.batch_duplicates,
        rejected: b.rejects.len() as u64,
    };
    debug_assert_eq!(counts.rows, counts.written + counts.duplicate + counts.rejected);
    let advanced = tx
        .execute(
            sql::ADVANCE_CHECKPOINT,
            &[
                &file.file_id,
                &(b.start_offset as i64),
                &(b.end_offset as i64),
                &(b.end_line as i64),
                &(counts.rows as i64),
                &(counts.written as i64),
                &(counts.duplicate as i64),
                &(counts.rejected as i64),
                &b.header.raw(),
            ],
        )
        .await
        .map_err(DbError::pg("advance checkpoint"))?;
    if advanced != 1 {
        tx.rollback().await.map_err(DbError::pg("rollback"))?;
        let row = conn
            .client
            .query_one(sql::READ_CHECKPOINT, &[&file.file_id])
            .await
            .map_err(DbError::pg("read checkpoint"))?;
        let actual = row.get::<_, i64>(0) as u64;
        let state: String = row.get(1);
        if state == "done" || (actual == b.end_offset && b.end_offset != b.start_offset) {
            return Ok(Some(Outcome::AlreadyCommitted));
        }
        return Err(DbError::Fence { file_id: file.file_id, expected: b.start_offset, actual });
    }
    // If we die here the outcome is unknown to us; the replay's fence will
    // find out.
    tx.commit().await.map_err(DbError::pg("commit"))?;
    Ok(Some(Outcome::Committed(counts)))
}
