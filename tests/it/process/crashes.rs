//! Crashes (faults.md C1-C4, C7, P4): SIGKILL at pseudo-random moments
//! while files arrive, SIGKILL while a rejects file is written, exits at
//! precise points of a file's life (failpoints), a COMMIT whose answer is
//! lost. The restart ends exactly as if nothing had happened.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);
/// The drain deadline the daemon is given: a drain that is not blocked ends
/// long before it.
const DRAIN_SECS: u64 = 20;

/// C1, C4, C7: the hard bounce. 22 SIGKILLs at pseudo-random moments (some
/// in the daemon's start-up, some during the drain after a SIGTERM) while
/// files keep arriving (one per round, written under a temp name and
/// renamed in, while the daemon runs or while it is down; each with bad
/// rows, duplicates inside it and events of another file). Then a
/// clean run to idle, and a recount of the input files against the tables:
/// nothing lost, nothing twice, every row at its line, every reject with
/// its reason; every file done and moved intact; no temp files, no
/// sessions or staging tables left behind.
#[test]
fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    /// SIGKILLs that must land (a drain may end before its kill: that
    /// round does not count).
    const KILLS: usize = 22;
    const ROWS: u64 = 3000;
    let started = Instant::now();
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "200");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    // Slows the reading (on the Parser's blocking thread) so that the kills
    // land while files are half read.
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:15");
    let mut random = Lcg(0x853c_49e6_748f_ea9b);
    // File k holds events from (k + 1) × 10^6 and borrows events of file
    // k - 1 (file 0: of file 1, which arrives later).
    let file = |k: u64| {
        let other = if k == 0 { 2 } else { k };
        TestFile::mixed(&format!("f{k:02}.csv"), (k + 1) * 1_000_000, ROWS, Some(other * 1_000_000))
    };
    let mut files: Vec<TestFile> = Vec::new();
    let arrive = |d: &Daemon, files: &mut Vec<TestFile>| {
        let f = file(files.len() as u64);
        d.drop_file(&f.name, f.content().as_bytes());
        files.push(f);
    };
    for _ in 0..3 {
        arrive(&d, &mut files);
    }

    let (mut kills, mut in_drain, mut early, mut mid_file, mut drained_first) = (0, 0, 0, 0, 0);
    let mut last = 0;
    let mut round = 0;
    while kills < KILLS {
        assert!(round < 2 * KILLS, "only {kills} SIGKILLs landed in {round} rounds");
        let mut child = d.spawn(&[]);
        let during_drain = round % 3 == 2;
        // Some kills may land anywhere in the start-up (migrations, folder
        // lock, claims, the first batch). Not with a SIGTERM first: one
        // that comes before the signal handler is installed ends the
        // process by itself (see `sigterm_during_start_up_exits_cleanly`).
        let at_start = round % 4 == 1 && !during_drain;
        if !at_start {
            wait_until(LIMIT, "more rows committed since the last kill", || db.committed_rows() > last);
        }
        if round % 2 == 0 {
            // A file arrives while the daemon runs.
            std::thread::sleep(Duration::from_millis(random.below(150)));
            arrive(&d, &mut files);
        }
        std::thread::sleep(Duration::from_millis(random.below(if at_start { 150 } else { 300 })));
        if during_drain {
            signal(&child, libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(random.below(25)));
        }
        signal(&child, libc::SIGKILL);
        let status = wait_exit(&mut child, Duration::from_secs(10)).expect("a killed process exits");
        if status.signal() == Some(libc::SIGKILL) {
            kills += 1;
            in_drain += during_drain as usize;
            early += (at_start && db.committed_rows() == last) as usize;
        } else {
            // Only a drain can end before the SIGKILL, and then with 0.
            assert!(during_drain && status.code() == Some(0), "round {round}: {status:?}; log:\n{}", d.log());
            drained_first += 1;
        }
        last = db.committed_rows();
        let total: i64 = files.iter().map(TestFile::rows).sum();
        assert!(last < total, "round {round}: every row was in before the kill; slow the reading down more");
        let by_name: HashMap<&str, &TestFile> = files.iter().map(|f| (f.name.as_str(), f)).collect();
        for (name, f) in db.files() {
            assert!(f.adds_up(), "round {round}: {name}: {f:?}");
            assert!(f.rows <= by_name[name.as_str()].rows(), "round {round}: {name}: {f:?}");
            if f.state == "done" {
                assert_eq!(f.rows, by_name[name.as_str()].rows(), "round {round}: {name}: {f:?}");
            }
        }
        if status.signal() == Some(libc::SIGKILL) && db.files().values().any(|f| f.rows > 0 && f.state != "done") {
            mid_file += 1;
        }
        if round % 2 == 1 {
            // A file arrives while no daemon runs.
            arrive(&d, &mut files);
        }
        round += 1;
    }
    // The kills hit what they are meant to hit.
    assert!(in_drain >= 4, "only {in_drain} SIGKILLs landed during a drain");
    assert!(mid_file >= KILLS / 2, "only {mid_file} SIGKILLs landed with a file half committed");

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());

    let recount = Recount::of(&db, &files);
    let distinct = files.iter().flat_map(|f| f.first_lines().into_keys()).collect::<BTreeSet<_>>().len();
    let per_file_distinct: usize = files.iter().map(|f| f.first_lines().len()).sum();
    assert!(distinct < per_file_distinct, "the files share events");
    assert_eq!(recount, Recount::clean(distinct));
    assert_exact(&db, &d, &files.iter().collect::<Vec<_>>());
    for f in &files {
        assert_eq!(
            std::fs::read(d.processed().join(&f.name)).unwrap(),
            f.content().as_bytes(),
            "{} moved intact",
            f.name
        );
    }

    // Nothing left behind: no temp files, no sessions of a killed daemon
    // (their temp staging tables go with them).
    assert_eq!(std::fs::read_dir(d.incoming()).unwrap().count(), 0, "incoming is empty");
    assert_eq!(temp_files(&d.bad_records()), Vec::<String>::new(), "leftovers in bad_records");
    assert_eq!(temp_files(&d.processed()), Vec::<String>::new(), "leftovers in processed");
    wait_until(Duration::from_secs(10), "no ingestd session and no staging table left", || {
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ingestd' AND datname = current_database()",
        ) == 0
            && db.scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'ingestd\\_staging%'") == 0
    });

    let f = db.files();
    let sum = |get: fn(&FileRow) -> i64| f.values().map(get).sum::<i64>();
    println!(
        "bounce: {kills} SIGKILLs in {round} rounds ({mid_file} with a file half committed, {in_drain} during a \
         drain, {early} before the first commit of their run; {drained_first} drains ended first), {} files, {} rows: {} written, {} duplicate, {} rejected; recount: lost={} duplicated={} \
         wrong_line={} wrong_reason={} unexpected={} rejects_missing={} rejects_extra={}; {:.1} s",
        files.len(),
        sum(|r| r.rows),
        sum(|r| r.written),
        sum(|r| r.duplicate),
        sum(|r| r.rejected),
        recount.lost,
        recount.duplicated,
        recount.wrong_line,
        recount.wrong_reason,
        recount.unexpected,
        recount.rejects_missing,
        recount.rejects_extra,
        started.elapsed().as_secs_f64()
    );
}

/// C2, C3: SIGKILL while the rejects file of a committed file is being
/// written. The next start finds the identity done, writes the rejects file
/// again and moves the source, reading no row twice and leaving no temp file
/// behind.
#[test]
fn sigkill_while_writing_the_rejects_file_leaves_no_leftovers() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    // Many rejects make the rejects file take a while to write.
    let lines = (0..100_000)
        .map(|n| if n % 10 == 0 { Line::Valid(n) } else { Line::Bad(with(n, 0, "not-a-uuid"), "invalid_uuid") })
        .collect();
    let r = TestFile { name: "r.csv".into(), lines };
    d.drop_file(&r.name, r.content().as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "a temp rejects file in bad_records", || !temp_files(&d.bad_records()).is_empty());
    signal(&child, libc::SIGKILL);
    wait_exit(&mut child, Duration::from_secs(10)).expect("a killed process exits");
    assert_eq!(db.files()["r.csv"].state, "done", "the rows were all committed before the disk work");
    assert!(path_exists(&d.incoming().join("r.csv")), "killed before the move");

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let f = &db.files()["r.csv"];
    assert_eq!((f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()), (100_000, 10_000, 0, 90_000, "done"));
    assert_exact(&db, &d, &[&r]);
    assert_eq!(temp_files(&d.bad_records()), Vec::<String>::new(), "leftovers in bad_records");
    assert_eq!(temp_files(&d.processed()), Vec::<String>::new(), "leftovers in processed");
}

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
