//! The status report read from the database: what `ingestd status [--json]`
//! prints and `/api/status` serves (which adds the daemon's `live` numbers).
//!
//! Totals (files by state, rows by outcome, rejects by reason) cover every
//! file on record, per pipeline and in all; the per-file list is bounded
//! (the most recent files first), so a database with 100 000 files answers
//! as fast as one with ten. Per file it reads the view `ingest_file_status`,
//! the same answer psql or pgAdmin get.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{sql, DbError, Pool};

/// Files listed by default (`ingestd status --limit`, `/api/status`).
pub const FILES_SHOWN: usize = 500;
/// Files with an error listed, the most recent first.
const FILE_ERRORS_SHOWN: i64 = 20;
/// Skipped entries listed at most.
const SKIPPED_SHOWN: i64 = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    /// Every file on record, all pipelines together.
    pub totals: Totals,
    /// The same per pipeline (those with files on record), by name.
    pub pipelines: Vec<PipelineStatus>,
    /// At most this many files are listed (`null`: all).
    pub files_limit: Option<usize>,
    /// The most recent files first (by first seen).
    pub files: Vec<FileStatus>,
    /// The files whose last attempt left an error, the most recent first.
    pub file_errors: Vec<FileError>,
    /// Entries of the incoming folders that are not read, with why.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub files: i64,
    pub files_pending: i64,
    pub files_in_progress: i64,
    pub files_done: i64,
    pub files_failed: i64,
    /// Sizes of the files, added up.
    pub bytes: i64,
    pub rows_total: i64,
    pub rows_written: i64,
    pub rows_duplicate: i64,
    pub rows_rejected: i64,
    /// Rejected rows by reason (as stored in `ingest_rejects`).
    pub rejects_by_reason: BTreeMap<String, i64>,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.files += o.files;
        self.files_pending += o.files_pending;
        self.files_in_progress += o.files_in_progress;
        self.files_done += o.files_done;
        self.files_failed += o.files_failed;
        self.bytes += o.bytes;
        self.rows_total += o.rows_total;
        self.rows_written += o.rows_written;
        self.rows_duplicate += o.rows_duplicate;
        self.rows_rejected += o.rows_rejected;
        for (reason, n) in &o.rejects_by_reason {
            *self.rejects_by_reason.entry(reason.clone()).or_default() += n;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub pipeline: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize)]
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
    /// Failures counted against the file.
    pub attempts: i32,
    pub first_seen_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From first seen to finished (or to now while unfinished).
    pub lag_secs: f64,
    /// The last error (a failed file's reason for being parked).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileError {
    pub pipeline: String,
    pub file: String,
    pub state: String,
    pub error: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub pipeline: String,
    pub path: String,
    pub reason: String,
    pub detail: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// Reads the report: totals over every file, and at most `limit` files
/// (`None`: all). Its statements go together on one connection.
pub async fn read(pool: &Pool, limit: Option<usize>) -> Result<Report, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("status"))?;
    let limit_param = limit.map(|l| l as i64);
    let (files_params, errors_params, skipped_params) =
        ([&limit_param as _], [&FILE_ERRORS_SHOWN as _], [&SKIPPED_SHOWN as _]);
    let (files, totals, rejects, errors, skipped) = futures::try_join!(
        conn.query(sql::STATUS_FILES, &files_params),
        conn.query(sql::STATUS_TOTALS, &[]),
        conn.query(sql::STATUS_REJECTS, &[]),
        conn.query(sql::STATUS_FILE_ERRORS, &errors_params),
        conn.query(sql::STATUS_SKIPPED, &skipped_params),
    )
    .map_err(DbError::pg("status"))?;
    let mut pipelines: Vec<PipelineStatus> = totals
        .iter()
        .map(|r| PipelineStatus {
            pipeline: r.get(0),
            totals: Totals {
                files: r.get(1),
                files_pending: r.get(2),
                files_in_progress: r.get(3),
                files_done: r.get(4),
                files_failed: r.get(5),
                bytes: r.get(6),
                rows_total: r.get(7),
                rows_written: r.get(8),
                rows_duplicate: r.get(9),
                rows_rejected: r.get(10),
                rejects_by_reason: BTreeMap::new(),
            },
        })
        .collect();
    for r in &rejects {
        let (pipeline, reason, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        // Rejects of a pipeline without files cannot be (a foreign key):
        // still, nothing read is dropped.
        let i = match pipelines.iter().position(|p| p.pipeline == pipeline) {
            Some(i) => i,
            None => {
                pipelines.push(PipelineStatus { pipeline, totals: Totals::default() });
                pipelines.len() - 1
            }
        };
        pipelines[i].totals.rejects_by_reason.insert(reason, n);
    }
    let mut all = Totals::default();
    for p in &pipelines {
        all.add(&p.totals);
    }
    Ok(Report {
        generated_at: Utc::now(),
        totals: all,
        pipelines,
        files_limit: limit,
        files: files
            .iter()
            .map(|r| FileStatus {
                pipeline: r.get(0),
                file: r.get(1),
                path: r.get(2),
                state: r.get(3),
                rows_total: r.get(4),
                rows_written: r.get(5),
                rows_duplicate: r.get(6),
                rows_rejected: r.get(7),
                committed_offset: r.get(8),
                size: r.get(9),
                attempts: r.get(10),
                first_seen_at: r.get(11),
                finished_at: r.get(12),
                lag_secs: r.get(13),
                error: r.get(14),
            })
            .collect(),
        file_errors: errors
            .iter()
            .map(|r| FileError { pipeline: r.get(0), file: r.get(1), state: r.get(2), error: r.get(3), at: r.get(4) })
            .collect(),
        skipped: skipped
            .iter()
            .map(|r| Skipped {
                pipeline: r.get(0),
                path: r.get(1),
                reason: r.get(2),
                detail: r.get(3),
                first_seen_at: r.get(4),
                last_seen_at: r.get(5),
            })
            .collect(),
    })
}

/// A table for people: one line per file listed (oldest first), the totals
/// of each pipeline and of all, then rejects by reason and skipped entries.
pub fn render_text(report: &Report) -> String {
    let line = |pipeline: &str, file: &str, state: &str, t: i64, w: i64, d: i64, r: i64, offset: &str| {
        let l = format!("{pipeline:<16} {file:<40} {state:<11} {t:>10} {w:>10} {d:>10} {r:>10} {offset:>14}");
        l.trim_end().to_owned()
    };
    let mut out = line("PIPELINE", "FILE", "STATE", 0, 0, 0, 0, "OFFSET")
        .replace("         0          0          0          0", "      ROWS    WRITTEN  DUPLICATE   REJECTED");
    out.push('\n');
    for f in report.files.iter().rev() {
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
    }
    let totals = |name: &str, t: &Totals| {
        line(
            name,
            &format!("{} files", t.files),
            "",
            t.rows_total,
            t.rows_written,
            t.rows_duplicate,
            t.rows_rejected,
            "",
        )
    };
    for p in &report.pipelines {
        out.push_str(&totals(&p.pipeline, &p.totals));
        out.push('\n');
    }
    out.push_str(&totals("(all)", &report.totals));
    out.push('\n');
    let hidden = report.totals.files - report.files.len() as i64;
    if hidden > 0 {
        out.push_str(&format!(
            "({} most recent of {} files listed; --limit 0 lists all)\n",
            report.files.len(),
            report.totals.files
        ));
    }
    for p in report.pipelines.iter().filter(|p| !p.totals.rejects_by_reason.is_empty()) {
        let mut reasons: Vec<_> = p.totals.rejects_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out.push_str(&format!("{:<16} rejects: {}\n", p.pipeline, reasons.join(", ")));
    }
    for s in &report.skipped {
        let detail = s.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        out.push_str(&format!("{:<16} skipped: {} ({}{detail})\n", s.pipeline, s.path, s.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, state: &str, counts: [i64; 4]) -> FileStatus {
        FileStatus {
            pipeline: "ecommerce".into(),
            file: name.into(),
            path: format!("/in/{name}"),
            state: state.into(),
            rows_total: counts[0],
            rows_written: counts[1],
            rows_duplicate: counts[2],
            rows_rejected: counts[3],
            committed_offset: 10,
            size: 10,
            attempts: 0,
            first_seen_at: Utc::now(),
            finished_at: None,
            lag_secs: 0.0,
            error: None,
        }
    }

    #[test]
    fn the_text_lists_files_oldest_first_then_totals_rejects_and_skipped() {
        let t = Totals {
            files: 3,
            files_done: 2,
            rows_total: 10,
            rows_written: 7,
            rows_duplicate: 1,
            rows_rejected: 2,
            rejects_by_reason: [("invalid_uuid".to_owned(), 1), ("missing_field".to_owned(), 1)].into(),
            ..Totals::default()
        };
        let report = Report {
            generated_at: Utc::now(),
            totals: t.clone(),
            pipelines: vec![PipelineStatus { pipeline: "ecommerce".into(), totals: t }],
            files_limit: Some(2),
            files: vec![file("c.csv", "done", [5, 4, 0, 1]), file("b.csv", "done", [5, 3, 1, 1])],
            file_errors: Vec::new(),
            skipped: vec![Skipped {
                pipeline: "ecommerce".into(),
                path: "/in/d.csv".into(),
                reason: "not_regular_file".into(),
                detail: Some("directory".into()),
                first_seen_at: Utc::now(),
                last_seen_at: Utc::now(),
            }],
        };
        let text = render_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PIPELINE         FILE"), "{text}");
        assert!(lines[1].starts_with("ecommerce        b.csv "), "{text}");
        assert!(lines[2].starts_with("ecommerce        c.csv "), "{text}");
        assert!(
            lines[3].starts_with("ecommerce        3 files") && lines[3].contains("        10          7"),
            "{text}"
        );
        assert!(lines[4].starts_with("(all)            3 files"), "{text}");
        assert_eq!(lines[5], "(2 most recent of 3 files listed; --limit 0 lists all)");
        assert_eq!(lines[6], "ecommerce        rejects: invalid_uuid 1, missing_field 1");
        assert_eq!(lines[7], "ecommerce        skipped: /in/d.csv (not_regular_file: directory)");
    }
}
