//! Two daemons on one folder and database: exactly one ingests; when it
//! dies the other takes over, and the accounting stays exact (F22).

use std::time::Duration;

use crate::support::*;

const FILES: u64 = 6;
const ROWS: u64 = 20_000;

#[test]
fn one_daemon_leads_and_the_standby_takes_over_exactly() {
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
