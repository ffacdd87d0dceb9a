//! The status page at `/`, in a real headless Chromium (Debian's, driven
//! through chromedriver): it loads, refreshes itself from `/api/status`,
//! and shows what `/metrics` and the database say.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{db_totals, metric_rejects};
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// What the page shows, read from its DOM: the cards' numbers (thousands
/// separators removed), the rejects table, how many times it refreshed, and
/// every resource it loaded.
const READ_PAGE: &str = r##"
const t = (id) => document.getElementById(id).textContent.replace(/,/g, "");
const reasons = {};
document.querySelectorAll("#rejects tr[data-reason]").forEach((tr) => {
  reasons[tr.dataset.reason] = Number(tr.lastElementChild.textContent.replace(/,/g, ""));
});
return {
  refreshes: Number(document.body.dataset.refreshes),
  ready: t("ready"),
  files_done: t("files-done"), files_failed: t("files-failed"),
  in_flight: t("files-in-flight"), waiting: t("files-waiting"),
  written: t("rows-written"), duplicate: t("rows-duplicate"), rejected: t("rows-rejected"),
  reasons,
  files_listed: document.querySelectorAll("#files tr").length,
  chart_lines: document.querySelectorAll("#chart-svg polyline").length,
  chart_points: (document.querySelector("#chart-svg polyline")?.getAttribute("points") || "").split(" ").filter(Boolean).length,
  resources: performance.getEntriesByType("resource").map((r) => r.name),
};
"##;

/// Where the screenshot goes: beside the build's output, never in the
/// repository (`<target>/status-page.png`).
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("status-page.png")
}

#[test]
#[ignore = "needs chromium and chromedriver (Debian packages)"]
fn the_status_page_shows_what_the_metrics_and_the_database_say() {
    // First, so a machine without the browser fails here, saying so.
    let browser = Browser::start();
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    let files = [
        TestFile::mixed("a.csv", 1, 6000, None),
        TestFile::mixed("b.csv", 100_000, 4000, Some(1)),
        TestFile::new("c.csv", 200_000, 700),
    ];
    for f in &files {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "the files done", || {
        d.assert_alive(&mut child, "while ingesting");
        files.iter().all(|f| db.is_done(&f.name))
    });
    assert_exact(&db, &d, &files.iter().collect::<Vec<_>>());
    let ((done, written, duplicate, rejected), reasons) = db_totals(&db);
    assert!(rejected > 0 && duplicate > 0, "the files have rejects and duplicates");

    let base = format!("http://127.0.0.1:{port}/");
    browser.open(&base);
    // The page refreshes itself: wait (with a deadline) until it has done so
    // a few times, shows every file done, and its chart has a few samples.
    let mut page = Value::Null;
    wait_until(LIMIT, "the page refreshed, showing every file done", || {
        d.assert_alive(&mut child, "while the page polls");
        page = browser.eval(READ_PAGE);
        page["refreshes"].as_i64().unwrap_or(0) >= 2
            && page["files_done"].as_str().and_then(|s| s.parse::<i64>().ok()) == Some(done)
            && page["chart_points"].as_i64().unwrap_or(0) >= 3
    });
    eprintln!("the page shows: {page}");

    let shown = |k: &str| page[k].as_str().and_then(|s| s.parse::<i64>().ok());
    // The database's totals...
    assert_eq!(
        (shown("files_done"), shown("written"), shown("duplicate"), shown("rejected")),
        (Some(done), Some(written), Some(duplicate), Some(rejected)),
        "{page}"
    );
    assert_eq!((shown("files_failed"), shown("in_flight"), shown("waiting")), (Some(0), Some(0), Some(0)), "{page}");
    let page_reasons: std::collections::BTreeMap<String, i64> =
        serde_json::from_value(page["reasons"].clone()).unwrap();
    assert_eq!(page_reasons, reasons, "rejects by reason: the page and the database");
    // ...are the metrics' (one daemon, a fresh database: since start = on
    // record).
    let (_, m) = http_get(port, "/metrics").unwrap();
    let from_metrics = |name: &str| metric(&m, name).map(|v| v as i64);
    assert_eq!(
        (
            from_metrics("ingestd_files_done_total"),
            from_metrics("ingestd_rows_written_total"),
            from_metrics("ingestd_rows_duplicate_total"),
            from_metrics("ingestd_rows_rejected_total")
        ),
        (Some(done), Some(written), Some(duplicate), Some(rejected))
    );
    assert_eq!(metric_rejects(&m), page_reasons, "rejects by reason: the page and /metrics");
    let ready = http_get(port, "/readyz").unwrap().0 == 200;
    assert_eq!(page["ready"], if ready { "ready" } else { "not ready" }, "{page}");
    assert_eq!(page["files_listed"], files.len(), "{page}");
    assert_eq!(page["chart_lines"], 1, "one pipeline, one line: {page}");
    // Self-contained: nothing loaded but this server's own answers.
    for r in page["resources"].as_array().unwrap() {
        assert!(r.as_str().is_some_and(|r| r.starts_with(&base)), "loaded from elsewhere: {r}");
    }

    let png = screenshot_path();
    browser.screenshot(&png);
    eprintln!("screenshot: {}", png.display());
    drop(browser);
    d.stop_cleanly(&mut child, 30);
}
