//! One batch, one transaction: events through binary COPY into a session
//! temp table and a merge, rejects, and the checkpoint fence.
//!
//! If we die anywhere before COMMIT returns, PostgreSQL rolls the whole
//! batch back and the next start resumes at the previous checkpoint. If the
//! COMMIT's outcome is unknown (connection lost while it was in flight), the
//! replay's fence tells: it matches no row when the batch did commit.

use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

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

const STAGING_TYPES: [Type; 13] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
];
const REJECT_TYPES: [Type; 7] = [Type::INT8, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT, Type::BYTEA, Type::BOOL];

pub async fn commit_batch(conn: &mut WriterConn, b: &ValidatedBatch) -> Result<Outcome, DbError> {
    let file = &b.file;
    let tx = conn.client.transaction().await.map_err(DbError::pg("begin"))?;
    let mut written = 0u64;
    if !b.events.is_empty() {
        let sink = tx.copy_in(sql::COPY_STAGING).await.map_err(DbError::pg("copy events"))?;
        let mut w = pin!(BinaryCopyInWriter::new(sink, &STAGING_TYPES));
        for row in &b.events {
            let e = &row.event;
            let line = row.line as i64;
            let values: [&(dyn ToSql + Sync); 13] = [
                &e.event_id,
                &e.event_type,
                &e.user_id,
                &e.session_id,
                &e.product_id,
                &e.product_name,
                &e.product_category,
                &e.price,
                &e.quantity,
                &e.event_timestamp,
                &e.device_type,
                &e.user_agent,
                &line,
            ];
            w.as_mut().write(&values).await.map_err(DbError::pg("copy events"))?;
        }
        w.finish().await.map_err(DbError::pg("copy events"))?;
        written = tx.execute(sql::MERGE_STAGING, &[&file.name]).await.map_err(DbError::pg("merge events"))?;
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
        duplicate: b.events.len() as u64 - written + b.batch_duplicates,
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
            return Ok(Outcome::AlreadyCommitted);
        }
        return Err(DbError::Fence { file_id: file.file_id, expected: b.start_offset, actual });
    }
    // If we die here the outcome is unknown to us; the replay's fence will
    // find out.
    tx.commit().await.map_err(DbError::pg("commit"))?;
    Ok(Outcome::Committed(counts))
}
