//! `ingestd status`: per-file progress, read from `ingest_files`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{sql, DbError, Pool};

#[derive(Debug, Serialize)]
pub struct FileStatus {
    pub pipeline: String,
    pub file: String,
    pub path: String,
    pub state: String,
    pub rows_total: i64,
    pub rows_written: i64,
    pub rows_duplicate: i64,
    pub rows_rejected: i64,
    pub committed_offset: i64,
    pub size: i64,
    pub first_seen_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

pub async fn read(pool: &Pool) -> Result<Vec<FileStatus>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("status"))?;
    let rows = conn.query(sql::STATUS, &[]).await.map_err(DbError::pg("status"))?;
    Ok(rows
        .iter()
        .map(|r| FileStatus {
            file: r.get(0),
            path: r.get(1),
            state: r.get(2),
            rows_total: r.get(3),
            rows_written: r.get(4),
            rows_duplicate: r.get(5),
            rows_rejected: r.get(6),
            committed_offset: r.get(7),
            size: r.get(8),
            first_seen_at: r.get(9),
            finished_at: r.get(10),
            error: r.get(11),
            pipeline: r.get(12),
        })
        .collect())
}

/// A table for people: one line per file, then the totals.
pub fn render_text(files: &[FileStatus]) -> String {
    let mut out = format!(
        "{:<40} {:<11} {:>10} {:>10} {:>10} {:>10} {:>14}\n",
        "FILE", "STATE", "ROWS", "WRITTEN", "DUPLICATE", "REJECTED", "OFFSET"
    );
    let (mut t, mut w, mut d, mut r) = (0, 0, 0, 0);
    for f in files {
        out.push_str(&format!(
            "{:<40} {:<11} {:>10} {:>10} {:>10} {:>10} {:>14}{}\n",
            f.file,
            f.state,
            f.rows_total,
            f.rows_written,
            f.rows_duplicate,
            f.rows_rejected,
            f.committed_offset,
            f.error.as_deref().map(|e| format!("  error: {e}")).unwrap_or_default()
        ));
        t += f.rows_total;
        w += f.rows_written;
        d += f.rows_duplicate;
        r += f.rows_rejected;
    }
    out.push_str(&format!(
        "{:<40} {:<11} {:>10} {:>10} {:>10} {:>10}\n",
        format!("{} files", files.len()),
        "",
        t,
        w,
        d,
        r
    ));
    out
}
