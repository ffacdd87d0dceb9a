//! `ingestd status --json` and `/api/status`: one report, read from the
//! database (the view `ingest_file_status` for the files); `/api/status`
//! adds the daemon's `live` numbers.

use std::time::Duration;

use super::{api_status, db_totals};
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn api_status_and_status_json_give_the_same_report_after_a_run() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    let files = [TestFile::mixed("a.csv", 1, 3000, None), TestFile::mixed("b.csv", 100_000, 2000, Some(1))];
    for f in &files {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "both files done", || files.iter().all(|f| db.is_done(&f.name)));
    assert_exact(&db, &d, &files.iter().collect::<Vec<_>>());

    // The page's source says what the database says (its report is kept a
    // moment: poll).
    let ((done, written, duplicate, rejected), reasons) = db_totals(&db);
    let mut api = serde_json::Value::Null;
    wait_until(LIMIT, "/api/status with both files done", || {
        d.assert_alive(&mut child, "while polling /api/status");
        match api_status(port) {
            Some((200, v)) if v["totals"]["files_done"] == 2 => {
                api = v;
                true
            }
            _ => false,
        }
    });
    let totals = &api["totals"];
    assert_eq!(
        (totals["files_done"].as_i64(), totals["rows_written"].as_i64()),
        (Some(done), Some(written)),
        "{totals}"
    );
    assert_eq!(
        (totals["rows_duplicate"].as_i64(), totals["rows_rejected"].as_i64()),
        (Some(duplicate), Some(rejected)),
        "{totals}"
    );
    let api_reasons: std::collections::BTreeMap<String, i64> =
        serde_json::from_value(totals["rejects_by_reason"].clone()).unwrap();
    assert_eq!(api_reasons, reasons);
    assert_eq!(api["pipelines"].as_array().map(Vec::len), Some(1), "{}", api["pipelines"]);
    assert_eq!(api["pipelines"][0]["pipeline"], "ecommerce");
    // Live: this daemon, ready, with its counters since start.
    let live = &api["live"];
    assert_eq!((live["ready"].as_bool(), live["database"].as_bool()), (Some(true), Some(true)), "{live}");
    let lp = &live["pipelines"][0];
    assert_eq!((lp["pipeline"].as_str(), lp["running"].as_bool()), (Some("ecommerce"), Some(true)), "{lp}");
    assert_eq!((lp["rows_written"].as_i64(), lp["files_done"].as_i64()), (Some(written), Some(2)), "{lp}");
    assert_eq!(live["throughput"]["pipelines"], serde_json::json!(["ecommerce"]));

    // `ingestd status --json`, a process of its own: the same report,
    // without `live`.
    let (status, out, err) = d.output(&["status", "--json"]);
    assert!(status.success(), "{err}");
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(cli.get("live").is_none(), "{out}");
    for key in ["totals", "pipelines", "files", "file_errors", "skipped", "files_limit"] {
        assert_eq!(api[key], cli[key], "{key} differs:\napi: {}\ncli: {}", api[key], cli[key]);
    }
    let names: Vec<&str> = cli["files"].as_array().unwrap().iter().filter_map(|f| f["file"].as_str()).collect();
    assert_eq!(sorted(names.iter().map(|n| n.to_string()).collect()), ["a.csv", "b.csv"]);
    // The text: the same totals, per pipeline and in all.
    let (status, text, err) = d.output(&["status"]);
    assert!(status.success(), "{err}");
    let all = text.lines().find(|l| l.starts_with("(all)")).unwrap_or_else(|| panic!("{text}"));
    let numbers: Vec<i64> = all.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers, [2, written + duplicate + rejected, written, duplicate, rejected], "{all}");
    assert!(text.contains("ecommerce        rejects: "), "{text}");
    d.stop_cleanly(&mut child, 30);
}

/// Before the database is there, `/api/status` answers 503 with what the
/// daemon knows by itself (not ready, the database away) and `/healthz`
/// still answers.
#[test]
fn api_status_answers_503_with_the_live_part_until_the_database_is_ready() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    // Nothing listens there: start-up keeps retrying.
    d.set("DATABASE_URL", &format!("postgres://postgres@127.0.0.1:{}/nowhere?connect_timeout=1", free_port()));
    d.set("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS", "60");
    let mut child = Running(d.spawn(&[]));
    let mut answer = None;
    wait_until(LIMIT, "/api/status answering", || {
        d.assert_alive(&mut child, "while the database is away");
        answer = api_status(port);
        answer.is_some()
    });
    let (status, v) = answer.unwrap();
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("database")), "{v}");
    assert_eq!((v["live"]["ready"].as_bool(), v["live"]["database"].as_bool()), (Some(false), Some(false)), "{v}");
    assert_eq!(v["live"]["pipelines"][0]["pipeline"], "ecommerce", "{v}");
    assert!(v.get("totals").is_none(), "{v}");
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    // And the page itself is served.
    let (status, page) = http_get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("api/status") && page.contains("<title>ingestd</title>"), "{page}");
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, LIMIT).is_some(), "no exit after SIGTERM; log:\n{}", d.log());
}

/// The view `ingest_file_status`, one query away in psql or pgAdmin: per
/// file its pipeline, state, counts, lag and last error.
#[test]
fn the_file_status_view_gives_pipeline_state_counts_lag_and_last_error() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    let good = TestFile::new("good.csv", 1, 900);
    d.drop_file("good.csv", good.content().as_bytes());
    // Half of a gzip file: the batches before the cut commit, then it is
    // parked with the error.
    let whole = gzip(valid_file(10_000, 5000).as_bytes());
    d.drop_file("cut.csv.gz", &whole[..whole.len() / 2]);
    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "{status:?}; log:\n{}", d.log());

    let rows = db
        .client()
        .query(
            "SELECT pipeline, file_name, state, rows_total, rows_written, rows_duplicate, rows_rejected, \
             extract(epoch FROM lag)::float8, last_error, \
             extract(epoch FROM coalesce(finished_at, now()) - first_seen_at)::float8, finished_at IS NULL \
             FROM ingest_file_status ORDER BY file_name",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (cut, good_row) = (&rows[0], &rows[1]);

    let (total, written, duplicate, rejected) = good.oracle();
    assert_eq!(
        (good_row.get::<_, &str>(0), good_row.get::<_, &str>(1), good_row.get::<_, &str>(2)),
        ("ecommerce", "good.csv", "done")
    );
    assert_eq!(
        (good_row.get::<_, i64>(3), good_row.get::<_, i64>(4), good_row.get::<_, i64>(5), good_row.get::<_, i64>(6)),
        (total, written, duplicate, rejected)
    );
    let lag: f64 = good_row.get(7);
    assert!(lag >= 0.0 && lag == good_row.get::<_, f64>(9), "a done file's lag is finished - first seen: {lag}");
    assert_eq!(good_row.get::<_, Option<&str>>(8), None);

    assert_eq!(
        (cut.get::<_, &str>(0), cut.get::<_, &str>(1), cut.get::<_, &str>(2)),
        ("ecommerce", "cut.csv.gz", "failed")
    );
    let cut_counts = (cut.get::<_, i64>(3), cut.get::<_, i64>(4), cut.get::<_, i64>(5), cut.get::<_, i64>(6));
    assert!(cut_counts.0 > 0 && cut_counts.0 % 500 == 0, "whole batches before the cut: {cut_counts:?}");
    assert_eq!(cut_counts, (cut_counts.0, cut_counts.0, 0, 0));
    assert!(cut.get::<_, bool>(10), "a parked file has no finished_at");
    assert!(cut.get::<_, f64>(7) > 0.0, "an unfinished file's lag runs to now");
    let error: Option<&str> = cut.get(8);
    assert!(error.is_some_and(|e| e.contains("incomplete deflate stream")), "{error:?}");

    // `ingestd status` reads the same view: the parked file with its error.
    let (status, text, err) = d.output(&["status"]);
    assert!(status.success(), "{err}");
    let line = text.lines().find(|l| l.contains("cut.csv.gz")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("failed") && line.contains("error: ") && line.contains("incomplete deflate"), "{line}");
    let (_, json, _) = d.output(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["totals"]["files_failed"], 1, "{json}");
    assert_eq!(report["file_errors"][0]["file"], "cut.csv.gz", "{json}");
}
