//! SIGKILL-equivalent exits at precise points of a file's life (C1, C2, C3,
//! via failpoints), then a restart: the tables end exactly as if nothing
//! had happened, and nothing is read twice.

use std::time::Duration;

use crate::support::*;

/// 3 batches of 400 rows; rows 100.. and 900.. repeat earlier ids; every
/// 50th row is bad.
fn content() -> (String, i64, i64, i64) {
    let mut lines = vec![HEADER.to_owned()];
    let (mut written, mut dup, mut bad) = (0, 0, 0);
    for n in 0..1200u64 {
        if n % 50 == 3 {
            lines.push(with(n, 8, "0"));
            bad += 1;
        } else if (100..110).contains(&n) || (900..905).contains(&n) {
            lines.push(row(n - 100));
            dup += 1;
        } else {
            lines.push(row(n));
            written += 1;
        }
    }
    (lines.join("\n") + "\n", written, dup, bad)
}

fn crash_then_recover(point: &str, check_after_crash: impl FnOnce(&TestDb, &Daemon)) {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "400");
    d.set("INGESTD_PIPELINE__WRITERS", "1");
    let (text, written, dup, bad) = content();
    d.drop_file("f.csv", text.as_bytes());

    d.set("INGESTD_FAILPOINTS", &format!("exit_at={point}:f.csv"));
    let status = d.run_until_idle(Duration::from_secs(60));
    assert_eq!(status.code(), Some(99), "{point}: the failpoint must fire; log:\n{}", d.log());
    check_after_crash(&db, &d);

    d.set("INGESTD_FAILPOINTS", "");
    assert!(d.run_until_idle(Duration::from_secs(60)).success(), "{point}: log:\n{}", d.log());
    let f = &db.files()["f.csv"];
    assert_eq!(
        (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
        (1200, written, dup, bad, "done"),
        "{point}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), written, "{point}");
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), bad, "{point}");
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_files"), 1, "{point}: one identity");
    assert!(path_exists(&d.processed().join("f.csv")), "{point}: moved");
    assert!(!path_exists(&d.incoming().join("f.csv")), "{point}: moved");
    let rejects = std::fs::read_to_string(d.bad_records().join("f.csv.rejects.csv")).unwrap();
    assert_eq!(rejects.lines().count() as i64, 1 + bad, "{point}");
    assert_eq!(temp_files(&d.bad_records()), Vec::<String>::new(), "{point}");
    assert_eq!(temp_files(&d.processed()), Vec::<String>::new(), "{point}");
}

#[test]
fn exit_before_commit_commits_nothing() {
    crash_then_recover("before_commit", |db, _| {
        let f = &db.files()["f.csv"];
        assert_eq!((f.rows, f.offset), (0, 0));
        assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 0);
    });
}

#[test]
fn exit_after_commit_keeps_the_batch_and_does_not_repeat_it() {
    crash_then_recover("after_commit", |db, _| {
        let f = &db.files()["f.csv"];
        assert_eq!(f.rows, 400, "exactly the first batch");
        assert!(f.adds_up());
        assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), f.written);
    });
}

#[test]
fn exit_after_done_before_disk_work_only_finishes_the_disk_work() {
    crash_then_recover("before_disk_work", |db, d| {
        assert_eq!(db.files()["f.csv"].state, "done");
        assert!(path_exists(&d.incoming().join("f.csv")), "not moved yet");
        assert!(!path_exists(&d.bad_records().join("f.csv.rejects.csv")));
    });
}

#[test]
fn exit_before_move_moves_without_writing_rejects_twice() {
    crash_then_recover("before_move", |db, d| {
        assert_eq!(db.files()["f.csv"].state, "done");
        assert!(path_exists(&d.incoming().join("f.csv")), "not moved yet");
        assert!(path_exists(&d.bad_records().join("f.csv.rejects.csv")));
    });
}

/// P4: the COMMIT went through but its answer was lost (the connection died
/// after COMMIT was sent). The Writer must not guess: it replays, the
/// replay's checkpoint fence finds the batch already committed, and nothing
/// is written twice.
#[test]
fn lost_commit_acknowledgement_is_settled_by_the_checkpoint() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "400");
    d.set("INGESTD_FAILPOINTS", "fail_once=lost_commit_ack:f.csv");
    let (text, written, dup, bad) = content();
    d.drop_file("f.csv", text.as_bytes());
    assert!(d.run_until_idle(Duration::from_secs(60)).success(), "log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("failpoint: failing once"), "the failpoint must fire; log:\n{log}");
    assert!(log.contains("already committed"), "the replay must find the batch committed; log:\n{log}");
    let f = &db.files()["f.csv"];
    assert_eq!((f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()), (1200, written, dup, bad, "done"));
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), written);
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), bad);
    // 3 full batches, the last of them ending the file: each once.
    assert_eq!(db.scalar("SELECT sum(batches)::int8 FROM ingest_files"), 3, "each batch counted once");
}
