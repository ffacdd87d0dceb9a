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

/// A table for people: one line per file, then the totals of each
/// pipeline, then of all.
pub fn render_text(files: &[FileStatus]) -> String {
    let line = |pipeline: &str, file: &str, state: &str, t: i64, w: i64, d: i64, r: i64, offset: &str| {
        format!("{pipeline:<16} {file:<40} {state:<11} {t:>10} {w:>10} {d:>10} {r:>10} {offset:>14}")
    };
    let mut out = line("PIPELINE", "FILE", "STATE", 0, 0, 0, 0, "OFFSET")
        .replace("         0          0          0          0", "      ROWS    WRITTEN  DUPLICATE   REJECTED");
    out.push('\n');
    let mut totals: Vec<(String, usize, [i64; 4])> = Vec::new();
    for f in files {
        out.push_str(&line(
            &f.pipeline,
            &f.file,
            &f.state,
            f.rows_total,
            f.rows_written,
            f.rows_duplicate,
            f.rows_rejected,
            &f.committed_offset.to_string(),
        ));
        if let Some(e) = &f.error {
            out.push_str(&format!("  error: {e}"));
        }
        out.push('\n');
        let i = match totals.iter().position(|(p, _, _)| *p == f.pipeline) {
            Some(i) => i,
            None => {
                totals.push((f.pipeline.clone(), 0, [0; 4]));
                totals.len() - 1
            }
        };
        let t = &mut totals[i];
        t.1 += 1;
        for (sum, v) in t.2.iter_mut().zip([f.rows_total, f.rows_written, f.rows_duplicate, f.rows_rejected]) {
            *sum += v;
        }
    }
    let mut all = [0i64; 4];
    for (pipeline, n, t) in &totals {
        out.push_str(&line(pipeline, &format!("{n} files"), "", t[0], t[1], t[2], t[3], ""));
        out.push('\n');
        for (sum, v) in all.iter_mut().zip(t) {
            *sum += v;
        }
    }
    out.push_str(&line("(all)", &format!("{} files", files.len()), "", all[0], all[1], all[2], all[3], ""));
    out.push('\n');
    out
}
