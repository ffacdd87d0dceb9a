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

use std::collections::HashMap;
use std::pin::pin;

use futures::SinkExt;
use serde::Serialize;

use crate::core::header::Header;
use crate::core::pipeline::Pipeline;
use crate::core::reader::RecordReader;
use crate::core::record::RawRecord;
use crate::core::validate::{validate_records, Validation};
use crate::db::sql::PipelineSql;
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

/// Replays the rejects of `pipeline`'s finished files, optionally only
/// those of one file name and one reason.
pub async fn run(
    pool: &Pool,
    pipeline: &Pipeline,
    file: Option<&str>,
    reason: Option<&str>,
) -> Result<Vec<Replayed>, DbError> {
    let statements = PipelineSql::new(pipeline);
    let mut conn = pool.get().await.map_err(DbError::pool("replay"))?;
    conn.batch_execute(sql::WRITER_SESSION).await.map_err(DbError::pg("replay: session"))?;
    conn.batch_execute(&statements.create_staging).await.map_err(DbError::pg("replay: session"))?;
    let files =
        conn.query(sql::REPLAY_FILES, &[&file, &reason, &pipeline.name]).await.map_err(DbError::pg("replay: files"))?;
    let mut out = Vec::new();
    for f in files {
        let (file_id, name, header_raw): (i64, String, Option<Vec<u8>>) = (f.get(0), f.get(1), f.get(2));
        let header = parse_header(pipeline, header_raw.as_deref().unwrap_or_default());
        let mut summary = Replayed { file: name.clone(), ..Default::default() };
        let tx = conn.transaction().await.map_err(DbError::pg("replay: begin"))?;
        let state: String =
            tx.query_one(sql::LOCK_FILE, &[&file_id]).await.map_err(DbError::pg("replay: lock"))?.get(0);
        if crate::db::files::FileState::parse(&state) != crate::db::files::FileState::Done {
            continue;
        }
        let now = chrono::Utc::now();
        let mut after: i64 = 0;
        loop {
            let rows = tx
                .query(sql::REPLAY_REJECTS, &[&file_id, &reason, &after, &PAGE])
                .await
                .map_err(DbError::pg("replay: read rejects"))?;
            let Some(last) = rows.last() else { break };
            after = last.get(1);
            let full = rows.len() as i64 == PAGE;
            // The stored rejects that can be read again, as records; a
            // record cut at max_record_bytes cannot be, and keeps its reason.
            let mut records = Vec::with_capacity(rows.len());
            let mut stored: HashMap<u64, (i64, String, String)> = HashMap::with_capacity(rows.len());
            for r in &rows {
                let (id, line, raw, truncated): (i64, i64, Vec<u8>, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
                summary.replayed += 1;
                // Offset 1: the record is not at the start of its file, so a
                // leading BOM-like byte run stays data.
                let mut reader = RecordReader::new(&raw[..], 1, line as u64, usize::MAX);
                let mut rec = RawRecord::default();
                if !truncated && reader.read_record(&mut rec).unwrap_or(false) {
                    records.push(rec);
                    stored.insert(line as u64, (id, r.get(4), r.get(5)));
                } else {
                    summary.still_rejected += 1;
                }
            }
            let checked = validate_records(
                &pipeline.schema,
                &header,
                records.iter(),
                &name,
                now,
                &mut Validation::default(),
                &mut bytes::BytesMut::new(),
            );
            summary.still_rejected += checked.rejects.len() as u64;
            for r in &checked.rejects {
                let (id, old_reason, old_detail) = &stored[&r.line];
                if r.reason.as_str() != old_reason || r.detail != *old_detail {
                    tx.execute(sql::UPDATE_REJECT, &[id, &r.reason.as_str(), &r.detail])
                        .await
                        .map_err(DbError::pg("replay: update reject"))?;
                }
            }
            let rejected: std::collections::HashSet<u64> = checked.rejects.iter().map(|r| r.line).collect();
            let passed: Vec<i64> =
                records.iter().filter(|r| !rejected.contains(&r.line)).map(|r| stored[&r.line].0).collect();
            if !passed.is_empty() {
                let written = if checked.events.rows() > 0 {
                    let sink = tx.copy_in(&statements.copy_staging).await.map_err(DbError::pg("replay: copy"))?;
                    let mut sink = pin!(sink);
                    sink.send(checked.events.stream()).await.map_err(DbError::pg("replay: copy"))?;
                    sink.as_mut().finish().await.map_err(DbError::pg("replay: copy"))?;
                    let written = if statements.merge_counts {
                        let row = tx.query_one(&statements.merge, &[]).await.map_err(DbError::pg("replay: merge"))?;
                        row.get::<_, i64>(0) as u64
                    } else {
                        tx.execute(&statements.merge, &[]).await.map_err(DbError::pg("replay: merge"))?
                    };
                    // The temp table empties at commit; this transaction goes on.
                    tx.batch_execute(&statements.truncate_staging).await.map_err(DbError::pg("replay: staging"))?;
                    written
                } else {
                    0
                };
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

fn parse_header(pipeline: &Pipeline, raw: &[u8]) -> Header {
    let mut rec = RawRecord::default();
    let mut reader = RecordReader::new(raw, 0, 1, usize::MAX);
    let _ = reader.read_header(&mut rec);
    Header::parse(&pipeline.schema, &rec)
}
