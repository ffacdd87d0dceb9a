//! `ingestd replay-rejects`: re-runs stored rejects through the current
//! rules, after a producer fix or a rule change.
//!
//! Per file, in one transaction: rejects that now pass are written (or
//! counted as duplicates), removed from `ingest_rejects`, and moved from
//! `rows_rejected` to `rows_written`/`rows_duplicate`; rejects that still
//! fail keep their row, with the current reason. A crash mid-way commits
//! nothing of that file, and a second run finds only what is still
//! rejected: every row stays accounted exactly once. Only finished (`done`)
//! files are replayed; a record cut at `max_record_bytes` cannot be and
//! stays rejected. The `<file>.rejects.csv` written when the file finished
//! is not rewritten.

use std::pin::pin;

use futures::SinkExt;
use serde::Serialize;

use crate::core::header::Header;
use crate::core::reader::RecordReader;
use crate::core::record::RawRecord;
use crate::core::validate::validate;
use crate::db::copy::CopyEncoder;
use crate::db::{sql, DbError, Pool};

/// Rejects read per query.
const PAGE: i64 = 10_000;

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Replayed {
    pub file: String,
    pub replayed: u64,
    pub written: u64,
    pub duplicate: u64,
    pub still_rejected: u64,
}

pub async fn run(pool: &Pool, file: Option<&str>, reason: Option<&str>) -> Result<Vec<Replayed>, DbError> {
    let mut conn = pool.get().await.map_err(DbError::pool("replay"))?;
    conn.batch_execute(sql::WRITER_SESSION).await.map_err(DbError::pg("replay: session"))?;
    let files = conn.query(sql::REPLAY_FILES, &[&file, &reason]).await.map_err(DbError::pg("replay: files"))?;
    let mut out = Vec::new();
    for f in files {
        let (file_id, name, header_raw): (i64, String, Option<Vec<u8>>) = (f.get(0), f.get(1), f.get(2));
        let header = parse_header(header_raw.as_deref().unwrap_or_default());
        let mut summary = Replayed { file: name.clone(), ..Default::default() };
        let tx = conn.transaction().await.map_err(DbError::pg("replay: begin"))?;
        let state: String =
            tx.query_one(sql::LOCK_FILE, &[&file_id]).await.map_err(DbError::pg("replay: lock"))?.get(0);
        if state != "done" {
            continue;
        }
        let now = chrono::Utc::now();
        let mut after: i64 = 0;
        loop {
            let rows = tx
                .query(&format!("{} LIMIT {PAGE}", sql::REPLAY_REJECTS), &[&file_id, &reason, &after])
                .await
                .map_err(DbError::pg("replay: read rejects"))?;
            let Some(last) = rows.last() else { break };
            after = last.get(1);
            let full = rows.len() as i64 == PAGE;
            let mut encoder = CopyEncoder::new(64 * 1024);
            let mut passed: Vec<i64> = Vec::new();
            let mut rec = RawRecord::default();
            for r in &rows {
                let (id, line, raw, truncated): (i64, i64, Vec<u8>, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
                let (old_reason, old_detail): (String, String) = (r.get(4), r.get(5));
                summary.replayed += 1;
                // Offset 1: the record is not at the start of its file, so a
                // leading BOM-like byte run stays data.
                let mut reader = RecordReader::new(&raw[..], 1, line as u64, usize::MAX);
                let read = !truncated && reader.read_record(&mut rec).unwrap_or(false);
                let verdict = if read { validate(&header, &rec, now).map(|e| (e, line)) } else { Err(stale()) };
                match verdict {
                    Ok((event, line)) => {
                        encoder.push(&event, line as u64, &name);
                        passed.push(id);
                    }
                    Err(rejection) => {
                        summary.still_rejected += 1;
                        if read && (rejection.reason.as_str() != old_reason || rejection.detail != old_detail) {
                            tx.execute(sql::UPDATE_REJECT, &[&id, &rejection.reason.as_str(), &rejection.detail])
                                .await
                                .map_err(DbError::pg("replay: update reject"))?;
                        }
                    }
                }
            }
            if !passed.is_empty() {
                let sink = tx.copy_in(sql::COPY_STAGING).await.map_err(DbError::pg("replay: copy"))?;
                let mut sink = pin!(sink);
                sink.send(encoder.finish().bytes).await.map_err(DbError::pg("replay: copy"))?;
                sink.as_mut().finish().await.map_err(DbError::pg("replay: copy"))?;
                let written = tx.execute(sql::MERGE_STAGING, &[]).await.map_err(DbError::pg("replay: merge"))?;
                // The temp table empties at commit; this transaction goes on.
                tx.batch_execute("TRUNCATE ingestd_staging").await.map_err(DbError::pg("replay: staging"))?;
                let duplicate = passed.len() as u64 - written;
                tx.execute(sql::DELETE_REJECTS, &[&passed]).await.map_err(DbError::pg("replay: delete rejects"))?;
                tx.execute(sql::REPLAY_COUNTS, &[&file_id, &(written as i64), &(duplicate as i64)])
                    .await
                    .map_err(DbError::pg("replay: counts"))?;
                summary.written += written;
                summary.duplicate += duplicate;
            }
            if !full {
                break;
            }
        }
        tx.commit().await.map_err(DbError::pg("replay: commit"))?;
        out.push(summary);
    }
    Ok(out)
}

fn parse_header(raw: &[u8]) -> Header {
    let mut rec = RawRecord::default();
    let mut reader = RecordReader::new(raw, 0, 1, usize::MAX);
    let _ = reader.read_header(&mut rec);
    Header::parse(&rec)
}

/// A reject that cannot be re-read keeps its stored reason.
fn stale() -> crate::core::validate::Rejection {
    crate::core::validate::Rejection { reason: crate::core::reason::RejectReason::MalformedCsv, detail: String::new() }
}
