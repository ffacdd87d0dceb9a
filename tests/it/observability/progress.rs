//! Progress in the logs: a line per finished file with its counts and
//! rejects by reason, progress lines every `log.progress_secs`, and the
//! byte gauges behind the `--until-idle` bar. Logs are read as JSON
//! (`log.format = "json"`); stderr is a file, so there is no bar.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn log_events(d: &Daemon, message: &str) -> Vec<Value> {
    d.log().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == message).collect()
}

#[test]
fn each_finished_file_gets_a_line_and_progress_lines_follow_the_metrics() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    d.set("INGESTD_LOG__FORMAT", "json");
    d.set("INGESTD_LOG__PROGRESS_SECS", "1");
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    let files = [TestFile::mixed("a.csv", 1, 6000, None), TestFile::new("b.csv", 100_000, 500)];
    let clean = valid_file(200_000, 300);
    let mut bytes = clean.len();
    for f in &files {
        let content = f.content();
        bytes += content.len();
        d.drop_file(&f.name, content.as_bytes());
    }
    d.drop_file("clean.csv", clean.as_bytes());
    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "the three files done", || {
        d.assert_alive(&mut child, "while ingesting");
        ["a.csv", "b.csv", "clean.csv"].iter().all(|n| db.is_done(n))
    });

    // One line per file: its counts as stored, its rejects by reason as
    // stored.
    let done: Vec<Value> = wait_for_lines(&d, "file done", 3);
    let stored = db.files();
    for line in &done {
        let name = line["file"].as_str().unwrap();
        let f = &stored[name];
        assert_eq!(line["pipeline"], "ecommerce", "{line}");
        assert_eq!(
            (line["rows"].as_i64(), line["written"].as_i64(), line["duplicate"].as_i64(), line["rejected"].as_i64()),
            (Some(f.rows), Some(f.written), Some(f.duplicate), Some(f.rejected)),
            "{line}"
        );
        let mut want: Vec<(String, i64)> = db
            .client()
            .query("SELECT reason, count(*) FROM ingest_rejects WHERE source_file = $1 GROUP BY 1", &[&name])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let want: Vec<String> = want.iter().map(|(r, n)| format!("{r}:{n}")).collect();
        assert_eq!(line["rejects"].as_str(), Some(want.join(",").as_str()), "{line}");
    }
    let mut names: Vec<&str> = done.iter().filter_map(|l| l["file"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["a.csv", "b.csv", "clean.csv"]);
    assert_eq!(done.iter().find(|l| l["file"] == "clean.csv").unwrap()["rejects"], "");

    // A progress line catches up with the totals.
    let (written, duplicate, rejected): (i64, i64, i64) =
        stored.values().fold((0, 0, 0), |a, f| (a.0 + f.written, a.1 + f.duplicate, a.2 + f.rejected));
    wait_until(LIMIT, "a progress line with every file done", || {
        log_events(&d, "progress").iter().any(|l| l["files_done"] == 3)
    });
    let last = log_events(&d, "progress").into_iter().find(|l| l["files_done"] == 3).unwrap();
    assert_eq!(last["pipeline"], "ecommerce", "{last}");
    assert_eq!(
        (last["written"].as_i64(), last["duplicate"].as_i64(), last["rejected"].as_i64()),
        (Some(written), Some(duplicate), Some(rejected)),
        "{last}"
    );
    assert_eq!((last["files_in_flight"].as_i64(), last["files_waiting"].as_i64()), (Some(0), Some(0)), "{last}");
    assert!(last["rows_per_sec"].is_u64(), "{last}");

    // The bar's numbers: every byte committed, none waiting or in flight.
    let (_, m) = http_get(port, "/metrics").unwrap();
    assert_eq!(metric(&m, "ingestd_bytes_committed_total"), Some(bytes as f64));
    for gauge in
        ["ingestd_bytes_waiting", "ingestd_bytes_in_flight", "ingestd_files_in_flight", "ingestd_files_pending"]
    {
        assert_eq!(metric(&m, gauge), Some(0.0), "{gauge}");
    }
    d.stop_cleanly(&mut child, 30);
}

/// `log.progress_secs = 0`: no progress lines (the per-file lines stay).
#[test]
fn progress_lines_can_be_turned_off() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_LOG__FORMAT", "json");
    d.set("INGESTD_LOG__PROGRESS_SECS", "0");
    d.drop_file("a.csv", valid_file(1, 200).as_bytes());
    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "a.csv done", || db.is_done("a.csv"));
    wait_for_lines(&d, "file done", 1);
    d.stop_cleanly(&mut child, 30);
    assert!(log_events(&d, "progress").is_empty(), "log:\n{}", d.log());
    let counts: BTreeMap<String, usize> = d
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .fold(BTreeMap::new(), |mut m, msg| {
            *m.entry(msg).or_default() += 1;
            m
        });
    assert_eq!(counts.get("file done"), Some(&1), "{counts:?}");
}

/// The log lines with this message, once there are `n` of them.
fn wait_for_lines(d: &Daemon, message: &str, n: usize) -> Vec<Value> {
    wait_until(LIMIT, &format!("{n} {message:?} lines"), || log_events(d, message).len() >= n);
    let lines = log_events(d, message);
    assert_eq!(lines.len(), n, "{lines:?}");
    lines
}
