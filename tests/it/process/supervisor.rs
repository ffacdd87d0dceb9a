//! The supervisor (faults.md C9, F22): a row that panics the pipeline parks
//! its file, a transient panic costs one attempt; of two daemons on one
//! folder exactly one ingests, and the standby takes over when it dies.

use std::time::Duration;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// (attempts, error) of a file.
fn failure_of(db: &TestDb, name: &str) -> (i32, Option<String>) {
    let row = db.client().query_one("SELECT attempts, error FROM ingest_files WHERE file_name = $1", &[&name]).unwrap();
    (row.get(0), row.get(1))
}

/// C9: a row that panics the Validator every time parks its file after
/// `max_file_attempts`, untouched in incoming; the other files flow.
#[test]
fn poison_row_parks_its_file_and_others_flow() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_FAILPOINTS", "panic_user=POISON");
    d.set("INGESTD_PIPELINE__MAX_FILE_ATTEMPTS", "2");
    d.set("INGESTD_SUPERVISOR__MAX_RESTARTS", "5");
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    let others = [
        TestFile::mixed("a.csv", 0, 3000, None),
        TestFile::mixed("q.csv", 10_000, 3000, None),
        TestFile::mixed("z.csv", 20_000, 3000, None),
    ];
    for f in &others {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    // One batch: the reject before the poison row is rolled back with it.
    let mut p = TestFile::mixed("p.csv", 30_000, 100, None);
    p.lines[40] = Line::Bad(with(30_040, 0, "not-a-uuid"), "invalid_uuid");
    p.lines[41] = Line::Marked(30_041, "POISON");
    d.drop_file(&p.name, p.content().as_bytes());

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());

    let pf = db.files()["p.csv"].clone();
    assert_eq!(
        (pf.rows, pf.written, pf.duplicate, pf.rejected, pf.offset, pf.state.as_str()),
        (0, 0, 0, 0, 0, "failed")
    );
    let (attempts, error) = failure_of(&db, "p.csv");
    assert_eq!(attempts, 2);
    let error = error.expect("a parked file says why");
    assert!(error.contains("panic") && error.contains("poison row at line 43"), "{error}");
    assert!(path_exists(&d.incoming().join("p.csv")), "a parked file stays in incoming");
    assert!(!path_exists(&d.processed().join("p.csv")));
    assert!(!path_exists(&d.bad_records().join("p.csv.rejects.csv")));
    assert!(d.log().contains("file parked as failed after repeated failures"), "log:\n{}", d.log());

    for f in &others {
        let row = &db.files()[&f.name];
        let (rows, written, duplicate, rejected) = f.oracle();
        assert_eq!(
            (row.rows, row.written, row.duplicate, row.rejected, row.state.as_str()),
            (rows, written, duplicate, rejected, "done"),
            "{}",
            f.name
        );
    }
    assert_exact(&db, &d, &others.iter().collect::<Vec<_>>());
}

/// C9, the transient kind: a panic that a restart cures costs one attempt;
/// the file then completes exactly, its marked row written once.
#[test]
fn transient_panic_is_restarted_and_completes_exactly() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_FAILPOINTS", "panic_once=MARK");
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    let mut m = TestFile::mixed("m.csv", 0, 5000, None);
    m.lines[2345] = Line::Marked(2345, "MARK");
    let n = TestFile::mixed("n.csv", 10_000, 3000, None);
    d.drop_file(&m.name, m.content().as_bytes());
    d.drop_file(&n.name, n.content().as_bytes());

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("transient failure at line 2347"), "log:\n{log}");
    assert!(log.contains("restarting the pipeline"), "log:\n{log}");

    let files = db.files();
    for f in [&m, &n] {
        let row = &files[&f.name];
        let (rows, written, duplicate, rejected) = f.oracle();
        assert_eq!(
            (row.rows, row.written, row.duplicate, row.rejected, row.state.as_str()),
            (rows, written, duplicate, rejected, "done"),
            "{}",
            f.name
        );
    }
    assert_eq!(failure_of(&db, "m.csv").0, 1);
    assert_eq!(failure_of(&db, "n.csv").0, 0);
    let marked: i64 = db
        .client()
        .query_one("SELECT count(*) FROM ecommerce_events WHERE user_id = 'MARK' AND source_line = 2347", &[])
        .unwrap()
        .get(0);
    assert_eq!(marked, 1);
    assert_exact(&db, &d, &[&m, &n]);
}

/// F22: two daemons on one folder and database: exactly one ingests; when
/// it dies the other takes over, and the accounting stays exact.
#[test]
fn one_daemon_leads_and_the_standby_takes_over_exactly() {
    const FILES: u64 = 6;
    const ROWS: u64 = 20_000;
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    // Slow reading down so the leader is killed mid-way.
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:15");
    for i in 0..FILES {
        d.drop_file(&format!("f{i}.csv"), valid_file(i * ROWS, ROWS).as_bytes());
    }
    let (log_a, log_b) = (d.dir.path().join("a.log"), d.dir.path().join("b.log"));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();

    let mut a = d.spawn_logging_to(&[], &log_a);
    wait_until(Duration::from_secs(30), "daemon A to lead", || read(&log_a).contains("leading"));
    let mut b = d.spawn_logging_to(&[], &log_b);
    wait_until(Duration::from_secs(30), "daemon B to stand by", || read(&log_b).contains("standby"));
    wait_until(Duration::from_secs(30), "A to commit some rows", || {
        db.files().values().map(|f| f.rows).sum::<i64>() > 0
    });
    assert!(!read(&log_b).contains("leading"), "B must not lead while A does");
    let committed_by_a: i64 = db.files().values().map(|f| f.rows).sum();

    signal(&a, libc::SIGKILL);
    wait_exit(&mut a, Duration::from_secs(10)).expect("A exits");
    wait_until(Duration::from_secs(30), "B to take over", || read(&log_b).contains("leading"));
    wait_until(Duration::from_secs(120), "every file done", || {
        let files = db.files();
        files.len() == FILES as usize && files.values().all(|f| f.state == "done")
    });
    signal(&b, libc::SIGTERM);
    let status = wait_exit(&mut b, Duration::from_secs(30)).expect("B exits");
    assert!(status.success(), "B: {status:?}\n{}", read(&log_b));

    assert!(committed_by_a < (FILES * ROWS) as i64, "A finished before it was killed: the test proves nothing");
    for (name, f) in db.files() {
        assert_eq!((f.rows, f.written, f.duplicate, f.rejected), (ROWS as i64, ROWS as i64, 0, 0), "{name}");
    }
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), (FILES * ROWS) as i64);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT (source_file, source_line)) FROM ecommerce_events"),
        (FILES * ROWS) as i64
    );
}
