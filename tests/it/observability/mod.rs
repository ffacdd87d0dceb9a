//! What an operator sees: the progress lines and the line per finished
//! file, `ingestd status` and `/api/status` (the same report), the view
//! `ingest_file_status`, and the status page in a real browser.

mod page;
mod progress;
mod status;

use crate::support::*;

/// `/api/status`, parsed: (HTTP status, JSON).
pub fn api_status(port: u16) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, "/api/status").ok()?;
    Some((status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/status: {e}: {body}"))))
}

/// What the database says: (files done, rows written, duplicate, rejected)
/// and rejects by reason.
pub fn db_totals(db: &TestDb) -> ((i64, i64, i64, i64), std::collections::BTreeMap<String, i64>) {
    let mut c = db.client();
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'done'), coalesce(sum(rows_written), 0)::int8, \
             coalesce(sum(rows_duplicate), 0)::int8, coalesce(sum(rows_rejected), 0)::int8 FROM ingest_files",
            &[],
        )
        .unwrap();
    let reasons = c
        .query("SELECT reason, count(*) FROM ingest_rejects GROUP BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    ((r.get(0), r.get(1), r.get(2), r.get(3)), reasons)
}

/// `ingestd_rejects_total` by reason in a `/metrics` page (non-zero ones).
pub fn metric_rejects(text: &str) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("ingestd_rejects_total{")) {
        let Some((series, v)) = line.rsplit_once(' ') else { continue };
        let reason = series.split("reason=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or_default();
        let n: f64 = v.parse().unwrap();
        if n > 0.0 {
            *out.entry(reason.to_owned()).or_default() += n as i64;
        }
    }
    out
}
