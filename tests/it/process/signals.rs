//! Signals (faults.md C5, C6, C8): SIGTERM drains what is in flight and
//! the next start resumes; a second signal stops at once; a daemon frozen
//! (SIGSTOP) long enough for the server to end its sessions retries on
//! resume. Each ends with the exact oracle computed from the files.

use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);
/// The drain deadline the daemon is given: a drain that is not blocked ends
/// long before it.
const DRAIN_SECS: u64 = 20;

/// C5: the drain commits what is in flight and nothing else; the next run
/// resumes at the checkpoint and ends exactly where an uninterrupted run
/// would.
#[test]
fn sigterm_mid_file_then_resume_equals_uninterrupted_run() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let big = TestFile::mixed("big.csv", 0, 200_000, None);
    // The oracle, spelled out once: 200 × (2 rejects, 2 duplicates) plus 40
    // malformed rows, less the missing duplicate of the first 1000 lines.
    assert_eq!(big.oracle(), (200_000, 199_161, 399, 440));
    let content = big.content();
    d.drop_file(&big.name, content.as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "the first batches of big.csv committed", || {
        db.has_schema() && db.files().get("big.csv").is_some_and(|f| f.offset > 0 && f.state == "in_progress")
    });
    d.stop_cleanly(&mut child, DRAIN_SECS);
    assert!(d.log().contains("drained: every batch in flight is committed"), "log:\n{}", d.log());

    // Stopped part-way: what is committed adds up, and the file waits in
    // incoming for the next start.
    let f = db.files()["big.csv"].clone();
    assert!(f.adds_up(), "{f:?}");
    assert_eq!(f.state, "in_progress", "{f:?}");
    assert!(f.rows > 0 && f.rows < big.rows(), "SIGTERM came too late to test a resume: {f:?}");
    assert!(f.offset > 0 && (f.offset as usize) < content.len(), "{f:?}");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), f.written);
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), f.rejected);
    assert!(path_exists(&d.incoming().join("big.csv")));
    assert!(!path_exists(&d.processed().join("big.csv")));

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let f = &db.files()["big.csv"];
    assert_eq!((f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()), (200_000, 199_161, 399, 440, "done"));
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 199_161);
    assert_eq!(db.scalar("SELECT count(DISTINCT source_line) FROM ecommerce_events"), 199_161);
    assert_exact(&db, &d, &[&big]);
}

/// C6: a second signal during a drain that cannot finish (the events table
/// is locked) stops the daemon at once; nothing half-written is visible and
/// the next run ends exactly.
#[test]
fn second_signal_stops_at_once() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let (status, _, stderr) = d.output(&["migrate"]);
    assert!(status.success(), "{stderr}");
    let mut lock = db.lock_events_table();
    let s = TestFile::mixed("s.csv", 0, 5000, None);
    d.drop_file(&s.name, s.content().as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "the Writer waits for the table lock", || db.lock_waiters() > 0);
    signal(&child, libc::SIGTERM);
    wait_until(LIMIT, "the drain began", || d.log().contains("draining: no new files"));
    let second = Instant::now();
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(DRAIN_SECS))
        .unwrap_or_else(|| panic!("no exit after the second signal; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(130), "log:\n{}", d.log());
    assert!(second.elapsed() < Duration::from_secs(3), "took {:?}", second.elapsed());
    assert!(d.log().contains("second signal: stopping now"), "log:\n{}", d.log());

    // Nothing of the blocked batches is committed.
    let f = db.files()["s.csv"].clone();
    assert_eq!((f.rows, f.offset, f.state.as_str()), (0, 0, "pending"), "{f:?}");
    lock.batch_execute("ROLLBACK").unwrap();
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 0);
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), 0);

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let f = &db.files()["s.csv"];
    let (rows, written, duplicate, rejected) = s.oracle();
    assert_eq!(
        (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
        (rows, written, duplicate, rejected, "done")
    );
    assert_exact(&db, &d, &[&s]);
}

/// (pid, last statement) of the daemon's sessions that sit in an open
/// transaction waiting for it (the ones
/// `idle_in_transaction_session_timeout` ends).
fn idle_in_transaction(pg: &TestCluster) -> Vec<(i32, String)> {
    let rows = pg.psql(
        "SELECT pid, left(query, 60) FROM pg_stat_activity WHERE application_name = 'ingestd' \
         AND state IN ('idle in transaction', 'idle in transaction (aborted)')",
    );
    rows.lines()
        .map(|l| {
            let (pid, query) = l.split_once('|').unwrap();
            (pid.parse().unwrap(), query.to_owned())
        })
        .collect()
}

/// C8: the server ends sessions idle in a transaction for a second; the
/// daemon is frozen (SIGSTOP) for 4 s at a moment one of its sessions is
/// inside a transaction, so the server ends it under the daemon. Resumed
/// (SIGCONT), the daemon meets the error, retries the batch on a new
/// connection, and the run ends exactly: every file done with its counts,
/// no event stored twice or lost, nothing counted against a file.
#[test]
fn paused_daemon_retries_what_the_server_ended() {
    const TEST: &str = "paused_daemon_retries_what_the_server_ended";
    const FILES: u64 = 4;
    const ROWS: u64 = 20_000;
    let started = Instant::now();
    let pg = TestCluster::new();
    pg.psql("ALTER SYSTEM SET idle_in_transaction_session_timeout = '1s'");
    pg.psql("SELECT pg_reload_conf()");
    let db = pg.db();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let files: Vec<TestFile> =
        (0..FILES).map(|k| TestFile::new(&format!("f{k}.csv"), (k + 1) * 1_000_000, ROWS)).collect();
    for f in &files {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    let total: i64 = files.iter().map(|f| f.oracle().0).sum();
    let committed = || -> i64 {
        if !db.has_schema() {
            return 0;
        }
        db.files().values().map(|f| f.rows).sum()
    };

    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "the first batches committed", || committed() > 0);

    // Freeze the daemon until one of its sessions is caught inside a
    // transaction; thaw it at once when none is, and try again.
    let mut caught = Vec::new();
    let mut tries = 0;
    while caught.is_empty() {
        tries += 1;
        let before = committed();
        assert!(before < total, "all rows were in before the pause (after {tries} tries); log:\n{}", d.log());
        assert!(tries <= 200, "never caught a session of the daemon inside a transaction");
        let paused = Stopped::child(&child);
        // A statement in flight when the signal landed settles quickly.
        std::thread::sleep(Duration::from_millis(50));
        caught = idle_in_transaction(&pg);
        if caught.is_empty() {
            drop(paused);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // About 4 s in all; a COMMIT another lane had sent just before the
        // signal has long settled when the count is taken.
        std::thread::sleep(Duration::from_secs(1));
        let frozen_at = committed();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(committed(), frozen_at, "rows committed while the daemon was frozen");
        drop(paused);
    }
    let log = pg.server_log();
    for (pid, _) in &caught {
        assert!(
            log.contains(&format!("[{pid}] FATAL:  terminating connection due to idle-in-transaction timeout")),
            "session {pid} was not ended by the server; server log:\n{log}"
        );
    }
    d.assert_alive(&mut child, "after it was resumed");

    let deadline = Instant::now() + LIMIT;
    while !(db.files().len() == files.len() && db.files().values().all(|f| f.state == "done")) {
        d.assert_alive(&mut child, "before every file was done");
        assert!(Instant::now() < deadline, "not every file done after {LIMIT:?}: {:?}; log:\n{}", db.files(), d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop_cleanly(&mut child, DRAIN_SECS);
    let retries = d.log().lines().filter(|l| l.contains("not committed; retrying")).count();
    assert!(retries > 0, "the ended session was not noticed and retried; log:\n{}", d.log());

    // Every file done with its counts and moved, no event stored twice or
    // lost, only the bad rows rejected, nothing (the pause) counted against
    // a file.
    assert_done_exactly(&db, &d, &files.iter().collect::<Vec<_>>());
    println!(
        "{TEST}: session(s) ended by the server after {tries} tries: {caught:?}; {retries} batch retries; done \
         in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
