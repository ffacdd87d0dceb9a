//! `ingest_files` and the rejects of a file, typed: claims, marking done,
//! parking, failures. The table stores states as text (with a CHECK
//! constraint); the code only sees [`FileState`].

use std::collections::HashMap;
use std::fmt;

use tokio_postgres::types::Type;

use crate::db::{sql, DbError, Pool};

/// Where a file identity stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Registered, nothing committed yet.
    Pending,
    /// Some batches committed.
    InProgress,
    /// Every row committed and the counts add up; never read again.
    Done,
    /// Parked: damaged, superseded, or failed too often; not read again.
    Failed,
}

impl FileState {
    pub const ALL: [FileState; 4] = [FileState::Pending, FileState::InProgress, FileState::Done, FileState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::InProgress => "in_progress",
            FileState::Done => "done",
            FileState::Failed => "failed",
        }
    }

    /// The stored text; the table's CHECK constraint allows only these, so
    /// anything else is a schema this code does not know (read as failed,
    /// never as done).
    pub fn parse(s: &str) -> FileState {
        FileState::ALL.into_iter().find(|f| f.as_str() == s).unwrap_or(FileState::Failed)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file's rows as `ingest_files` counts them: rows = written + duplicate
/// + rejected once it is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileTotals {
    pub rows: i64,
    pub written: i64,
    pub duplicate: i64,
    pub rejected: i64,
}

impl FileTotals {
    /// The four counts in columns `first..first + 4` of a row, in the order
    /// rows_total, rows_written, rows_duplicate, rows_rejected.
    pub(crate) fn at(row: &tokio_postgres::Row, first: usize) -> FileTotals {
        FileTotals {
            rows: row.get(first),
            written: row.get(first + 1),
            duplicate: row.get(first + 2),
            rejected: row.get(first + 3),
        }
    }
}

/// A file identity as `ingest_files` has it after a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub state: FileState,
    /// Where reading resumes (the decompressed offset for gzip).
    pub committed_offset: u64,
    pub committed_line: u64,
    pub rows_rejected: i64,
}

/// An identity to register (or find): its path, name, fingerprint, size.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub path: String,
    pub name: &'a str,
    pub fingerprint: &'a str,
    pub size: u64,
}

/// Registers the identities, or finds them, in one statement; answers in
/// the same order. An unfinished older identity of a path is parked as
/// superseded (see `sql::CLAIM_FILES`).
pub async fn claim(pool: &Pool, pipeline: &str, files: &[Identity<'_>]) -> Result<Vec<Claimed>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("claim files"))?;
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let names: Vec<&str> = files.iter().map(|f| f.name).collect();
    let fingerprints: Vec<&str> = files.iter().map(|f| f.fingerprint).collect();
    let sizes: Vec<i64> = files.iter().map(|f| f.size as i64).collect();
    let rows = conn
        .query_typed(
            sql::CLAIM_FILES,
            &[
                (&paths, Type::TEXT_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&fingerprints, Type::TEXT_ARRAY),
                (&sizes, Type::INT8_ARRAY),
                (&pipeline, Type::TEXT),
            ],
        )
        .await
        .map_err(DbError::pg("claim files"))?;
    let mut found: HashMap<(&str, &str), Claimed> = rows
        .iter()
        .map(|r| {
            let claimed = Claimed {
                id: r.get("id"),
                state: FileState::parse(r.get("state")),
                committed_offset: r.get::<_, i64>("committed_offset") as u64,
                committed_line: r.get::<_, i64>("committed_line") as u64,
                rows_rejected: r.get("rows_rejected"),
            };
            ((r.get("path"), r.get("fingerprint")), claimed)
        })
        .collect();
    files
        .iter()
        .map(|f| found.remove(&(f.path.as_str(), f.fingerprint)).ok_or_else(|| DbError::Claim(f.name.to_owned())))
        .collect()
}

/// Marks done, in one statement, the files whose rows add up; their
/// totals by id.
pub async fn mark_done(pool: &Pool, ids: &[i64]) -> Result<HashMap<i64, FileTotals>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("mark done"))?;
    let rows =
        conn.query_typed(sql::MARK_MANY_DONE, &[(&ids, Type::INT8_ARRAY)]).await.map_err(DbError::pg("mark done"))?;
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0), FileTotals::at(r, 1))).collect())
}

/// What marking one file done found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkedDone {
    /// Done (now or before), with its rows.
    Done(FileTotals),
    /// Its rows do not add up, so it is not done: it was parked with this
    /// reason (a bug, shown rather than hidden).
    Parked(String),
    /// Parked or superseded before: not done, nothing to do.
    Failed,
}

/// Marks one file done if its rows add up; otherwise says why not.
pub async fn mark_one_done(pool: &Pool, file_id: i64) -> Result<MarkedDone, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("mark done"))?;
    // Typed queries: one round trip, no separate prepare (these run once per
    // file, and small files come by the thousand).
    if let Some(row) =
        conn.query_typed_opt(sql::MARK_DONE, &[(&file_id, Type::INT8)]).await.map_err(DbError::pg("mark done"))?
    {
        return Ok(MarkedDone::Done(FileTotals::at(&row, 0)));
    }
    let row = conn.query_one(sql::FILE_STATE, &[&file_id]).await.map_err(DbError::pg("mark done"))?;
    match FileState::parse(row.get(0)) {
        FileState::Done => return Ok(MarkedDone::Done(FileTotals::at(&row, 1))),
        FileState::Failed => return Ok(MarkedDone::Failed),
        FileState::Pending | FileState::InProgress => {}
    }
    let (total, w, d, r): (i64, i64, i64, i64) = (row.get(1), row.get(2), row.get(3), row.get(4));
    let error = format!("rows do not add up: {total} rows, {w} written + {d} duplicate + {r} rejected");
    conn.execute(sql::PARK_FILE, &[&file_id, &error]).await.map_err(DbError::pg("park file"))?;
    Ok(MarkedDone::Parked(error))
}

/// Parks a file (not read again), with the reason.
pub async fn park(pool: &Pool, file_id: i64, error: &str) -> Result<(), DbError> {
    let conn = pool.get().await.map_err(DbError::pool("park file"))?;
    conn.execute(sql::PARK_FILE, &[&file_id, &error]).await.map_err(DbError::pg("park file"))?;
    Ok(())
}

/// Keeps a file's latest error (it is retried, not parked).
pub async fn note_error(pool: &Pool, file_id: i64, error: &str) -> Result<(), DbError> {
    let conn = pool.get().await.map_err(DbError::pool("note error"))?;
    conn.execute(sql::NOTE_ERROR, &[&file_id, &error]).await.map_err(DbError::pg("note error"))?;
    Ok(())
}

/// Counts a failure against a file; past `limit` attempts it is parked.
/// Answers whether it is parked now.
pub async fn record_failure(pool: &Pool, file_id: i64, error: &str, limit: u32) -> Result<bool, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("record failure"))?;
    let row = conn
        .query_opt(sql::RECORD_FAILURE, &[&file_id, &error, &(limit as i32)])
        .await
        .map_err(DbError::pg("record failure"))?;
    Ok(row.is_some_and(|r| FileState::parse(r.get(0)) == FileState::Failed))
}

/// A file's rejected rows by reason, most frequent first.
pub async fn rejects_by_reason(pool: &Pool, file_id: i64) -> Result<Vec<(String, i64)>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("read rejects"))?;
    let rows = conn
        .query_typed(sql::REJECTS_BY_REASON_OF_FILE, &[(&file_id, Type::INT8)])
        .await
        .map_err(DbError::pg("read rejects"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A rejected row as `ingest_rejects` stores it (and the rejects file
/// shows it).
#[derive(Debug, Clone)]
pub struct StoredReject {
    pub line: i64,
    pub reason: String,
    pub detail: String,
    pub raw: Vec<u8>,
}

/// One page of a file's rejects, after line `after`, in line order.
pub async fn rejects_page(pool: &Pool, file_id: i64, after: i64, limit: i64) -> Result<Vec<StoredReject>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("read rejects"))?;
    let rows = conn
        .query(sql::REJECTS_OF_FILE_AFTER, &[&file_id, &after, &limit])
        .await
        .map_err(DbError::pg("read rejects"))?;
    Ok(rows
        .iter()
        .map(|r| StoredReject { line: r.get(0), reason: r.get(1), detail: r.get(2), raw: r.get(3) })
        .collect())
}

/// Replaces a pipeline's entries not read (path, reason, detail) with
/// `entries`, in one transaction.
pub async fn record_skipped(pool: &Pool, pipeline: &str, entries: &[(String, &str, String)]) -> Result<(), DbError> {
    let mut conn = pool.get().await.map_err(DbError::pool("record skipped"))?;
    let tx = conn.transaction().await.map_err(DbError::pg("record skipped"))?;
    let paths: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    let reasons: Vec<&str> = entries.iter().map(|(_, r, _)| *r).collect();
    let details: Vec<&str> = entries.iter().map(|(_, _, d)| d.as_str()).collect();
    tx.execute(sql::SKIPPED_FORGET, &[&pipeline, &paths]).await.map_err(DbError::pg("record skipped"))?;
    tx.execute(sql::SKIPPED_RECORD, &[&pipeline, &paths, &reasons, &details])
        .await
        .map_err(DbError::pg("record skipped"))?;
    tx.commit().await.map_err(DbError::pg("record skipped"))
}
