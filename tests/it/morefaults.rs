//! More faults (faults.md F20, C8, F12): the daemon's clock moved a day
//! ahead (libfaketime), the daemon paused long enough for the server to end
//! its idle transactions, and a gzip bomb whose single record decompresses
//! to hundreds of MiB. Each ends with the exact oracle computed from the
//! files' content.
//!
//! The clock test needs the `faketime` package, which CI (`.ci/run`)
//! installs: it runs only with `INGESTD_IT_ROOT=1`, the switch CI sets for
//! tests that need machine-level tools; otherwise it prints why it did
//! nothing and passes. The other two need nothing but the suite's own
//! PostgreSQL.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn assert_alive(child: &mut Child, d: &Daemon, when: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the daemon exited {when}: {status:?}; log:\n{}", d.log());
    }
}

/// (rows, written, duplicate, rejected, state) of one file.
fn outcome(f: &FileRow) -> (i64, i64, i64, i64, &str) {
    (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str())
}

/// Every event stored once, and exactly the expected ones.
fn assert_events(db: &TestDb, want: &BTreeSet<(String, String, i64)>) {
    let stored = db.stored();
    let got: BTreeSet<(String, String, i64)> = stored.iter().cloned().collect();
    assert_eq!(got.len(), stored.len(), "an event stored twice");
    if &got != want {
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(want).take(5).collect();
        panic!("{} events stored, {} expected; missing {missing:?}; extra {extra:?}", got.len(), want.len());
    }
}

// ---------------------------------------------------------------------------
// F20: clock skew
// ---------------------------------------------------------------------------

/// Whether the faketime test may run; prints why not. With
/// `INGESTD_IT_ROOT=1` a missing `faketime` is a failure, not a skip: CI
/// installs it, and a silent skip would hide that it no longer does.
fn faketime_enabled(test: &str) -> bool {
    if std::env::var("INGESTD_IT_ROOT").as_deref() != Ok("1") {
        println!("{test}: skipped: needs the faketime package; set INGESTD_IT_ROOT=1 (CI does, and installs it)");
        return false;
    }
    let found = Command::new("faketime").args(["-f", "+0", "true"]).status().is_ok_and(|s| s.success());
    assert!(found, "{test}: INGESTD_IT_ROOT=1 but `faketime` does not run: apt-get install faketime (.ci/run does)");
    true
}

/// The hours ahead of the real clock of the rows of a clock file, each with
/// whether the contract accepts it from a daemon whose clock is
/// `skew_hours` ahead: an event may be at most 24 h after the daemon's
/// clock. The margins (an hour each side of the limit) dwarf the seconds
/// between writing a file and reading it.
const AHEAD_HOURS: [i64; 4] = [23, 25, 47, 49];

fn accepted(ahead_hours: i64, skew_hours: i64) -> bool {
    ahead_hours <= skew_hours + 24
}

/// A file whose rows are `AHEAD_HOURS` after `base` (the real clock now),
/// events numbered from `first`.
fn clock_file(first: u64, base: DateTime<Utc>) -> String {
    let mut s = format!("{HEADER}\n");
    for (i, hours) in AHEAD_HOURS.iter().enumerate() {
        let ts = (base + TimeDelta::hours(*hours)).to_rfc3339_opts(SecondsFormat::Millis, true);
        s.push_str(&with(first + i as u64, 9, &ts));
        s.push('\n');
    }
    s
}

/// The oracle of a clock file read by a daemon `skew_hours` ahead:
/// ((rows, written, duplicate, rejected, state), stored events, rejects).
#[allow(clippy::type_complexity)]
fn clock_oracle(
    name: &str,
    first: u64,
    skew_hours: i64,
) -> ((i64, i64, i64, i64, &'static str), BTreeSet<(String, String, i64)>, Vec<(String, i64, String)>) {
    let mut stored = BTreeSet::new();
    let mut rejects = Vec::new();
    for (i, hours) in AHEAD_HOURS.iter().enumerate() {
        let line = i as i64 + 2;
        if accepted(*hours, skew_hours) {
            stored.insert((uuid_of(first + i as u64), name.to_owned(), line));
        } else {
            rejects.push((name.to_owned(), line, "future_timestamp".to_owned()));
        }
    }
    let rows = AHEAD_HOURS.len() as i64;
    ((rows, stored.len() as i64, 0, rejects.len() as i64, "done"), stored, rejects)
}

/// The wall-clock times of the timestamped lines of a daemon log (tracing's
/// text format starts each line with an RFC 3339 time, maybe in ANSI
/// colours).
fn log_times(log: &str) -> Vec<DateTime<Utc>> {
    log.lines()
        .filter_map(|l| strip_ansi(l).split_whitespace().next().map(str::to_owned))
        .filter_map(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

/// `line` without its ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// F20: `future_timestamp` is judged by the daemon's clock. A file with
/// events 23, 25, 47 and 49 h ahead of the real clock: the daemon on the
/// real clock accepts only the first (limit now + 24 h); the same events
/// (other ids, another file) read by a daemon run under `faketime -f +1d`
/// (limit now + 48 h) are accepted but the last. The faketime daemon's log
/// is stamped a day ahead while the database's `ingested_at` stays on the
/// real clock: the shift reached the daemon only. Its file is written in
/// place with an mtime in the future even of the shifted clock, so only
/// the stability window (a monotonic clock) lets it through: it must be
/// read, and promptly.
#[test]
fn clock_skew_moves_the_future_limit() {
    const TEST: &str = "clock_skew_moves_the_future_limit";
    if !faketime_enabled(TEST) {
        return;
    }
    let started = Instant::now();
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__STABLE_FOR_MS", "1000");

    // The real clock.
    let base = Utc::now();
    d.drop_file("real.csv", clock_file(0, base).as_bytes());
    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    let (real_counts, mut want_events, mut want_rejects) = clock_oracle("real.csv", 0, 0);
    assert_eq!(real_counts, (4, 1, 0, 3, "done"));
    assert_eq!(outcome(&db.files()["real.csv"]), real_counts, "log:\n{}", d.log());
    assert_events(&db, &want_events);
    assert_eq!(db.rejects(), want_rejects);

    // The daemon's clock a day ahead; the file not renamed into place, its
    // mtime three days ahead of the real clock.
    let base = Utc::now();
    let skewed = d.incoming().join("skewed.csv");
    std::fs::write(&skewed, clock_file(100, base)).unwrap();
    let future = std::time::SystemTime::now() + Duration::from_secs(3 * 24 * 3600);
    std::fs::File::options().write(true).open(&skewed).unwrap().set_modified(future).unwrap();
    let log_before = d.log().len();
    let spawned = Instant::now();
    let mut child = Running(d.spawn_via(&["faketime", "-f", "+1d"], &["--until-idle"]));
    let status = wait_exit(&mut child, LIMIT)
        .unwrap_or_else(|| panic!("the faketime daemon did not finish within {LIMIT:?}; log:\n{}", d.log()));
    let took = spawned.elapsed();
    let log = d.log()[log_before..].to_owned();
    assert!(status.success(), "{status:?}; log:\n{log}");

    let (skewed_counts, events, rejects) = clock_oracle("skewed.csv", 100, 24);
    assert_eq!(skewed_counts, (4, 3, 0, 1, "done"));
    assert_eq!(outcome(&db.files()["skewed.csv"]), skewed_counts, "log:\n{log}");
    want_events.extend(events);
    want_rejects.extend(rejects);
    want_rejects.sort();
    assert_events(&db, &want_events);
    assert_eq!(db.rejects(), want_rejects);
    assert!(path_exists(&d.processed().join("skewed.csv")), "skewed.csv not moved; log:\n{log}");

    // The shift reached the daemon: its log is stamped a day ahead.
    let times = log_times(&log);
    assert!(!times.is_empty(), "no timestamped line in the faketime daemon's log:\n{log}");
    let real_now = Utc::now();
    for t in &times {
        let ahead = *t - real_now;
        assert!(
            ahead > TimeDelta::hours(23) && ahead < TimeDelta::hours(25),
            "a log line of the faketime daemon at {t}, {ahead} from the real clock:\n{log}"
        );
    }
    // And not the database: ingested_at is the database's commit time.
    let ingested: Vec<DateTime<Utc>> = db
        .client()
        .query("SELECT ingested_at FROM ecommerce_events WHERE source_file = 'skewed.csv'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, std::time::SystemTime>(0).into())
        .collect();
    assert_eq!(ingested.len(), 3);
    for t in &ingested {
        assert!((*t - real_now).abs() < TimeDelta::minutes(5), "ingested_at {t}, real clock {real_now}");
    }
    // The stability window ran on the monotonic clock: an mtime days in the
    // future did not hold the file back.
    assert!(took < Duration::from_secs(30), "the faketime daemon took {took:?}");
    println!(
        "{TEST}: the faketime daemon ingested skewed.csv in {:.1} s; whole test {:.1} s",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// C8: the daemon paused, then resumed
// ---------------------------------------------------------------------------

/// `kill -STOP` on the daemon; `kill -CONT` when dropped, also when the
/// test fails on the way.
struct Paused(i32);

impl Paused {
    fn stop(child: &Child) -> Paused {
        signal(child, libc::SIGSTOP);
        Paused(child.id() as i32)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: our own child, not reaped while the guard lives.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// (pid, last statement) of the daemon's sessions that sit in an open
/// transaction waiting for it (the ones
/// `idle_in_transaction_session_timeout` ends).
fn idle_in_transaction(pg: &PrivateDb) -> Vec<(i32, String)> {
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
fn daemon_paused_then_resumed() {
    const TEST: &str = "daemon_paused_then_resumed";
    const FILES: u64 = 4;
    const ROWS: u64 = 20_000;
    const DRAIN_SECS: u64 = 20;
    let started = Instant::now();
    let pg = PrivateDb::new();
    pg.psql("ALTER SYSTEM SET idle_in_transaction_session_timeout = '1s'");
    pg.psql("SELECT pg_reload_conf()");
    let db = pg.db();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let files: Vec<TestFile> =
        (0..FILES).map(|k| TestFile { name: format!("f{k}.csv"), first: (k + 1) * 1_000_000, rows: ROWS }).collect();
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
        let paused = Paused::stop(&child);
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
    assert_alive(&mut child, &d, "after it was resumed");

    let deadline = Instant::now() + LIMIT;
    while !(db.files().len() == files.len() && db.files().values().all(|f| f.state == "done")) {
        assert_alive(&mut child, &d, "before every file was done");
        assert!(Instant::now() < deadline, "not every file done after {LIMIT:?}: {:?}; log:\n{}", db.files(), d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(DRAIN_SECS + 5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    let retries = d.log().lines().filter(|l| l.contains("not committed; retrying")).count();
    assert!(retries > 0, "the ended session was not noticed and retried; log:\n{}", d.log());

    let got = db.files();
    assert_eq!(got.len(), files.len(), "{got:?}");
    for f in &files {
        let row = &got[&f.name];
        let (rows, written, duplicate, rejected) = f.oracle();
        assert_eq!(outcome(row), (rows, written, duplicate, rejected, "done"), "{}: {row:?}", f.name);
        assert!(path_exists(&d.processed().join(&f.name)), "{} not moved", f.name);
    }
    let attempts = db.scalar("SELECT coalesce(sum(attempts), 0)::bigint FROM ingest_files");
    assert_eq!(attempts, 0, "the pause was counted against files; log:\n{}", d.log());
    assert_events(&db, &files.iter().flat_map(TestFile::stored).collect());
    let mut want_rejects: Vec<_> = files.iter().flat_map(TestFile::rejects).collect();
    want_rejects.sort();
    assert_eq!(db.rejects(), want_rejects, "rejects: only the bad rows, each once");
    println!(
        "{TEST}: session(s) ended by the server after {tries} tries: {caught:?}; {retries} batch retries; done \
         in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// F12: gzip bomb
// ---------------------------------------------------------------------------

/// Decompressed size of the bomb's huge record. A whole GiB: in a debug
/// build the daemon inflates and scans it in well under the test's limit.
const BOMB_BYTES: u64 = 1 << 30;
const MAX_RECORD: usize = 64 * 1024;
/// The bound on the daemon's peak RSS while it reads the bomb.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Writes `path`: gzip of the header, a record of `BOMB_BYTES` bytes `a`
/// (one field, no line end inside), a line end, then three valid rows.
/// Streamed through the encoder a MiB at a time, never held in memory.
fn write_bomb(path: &Path, valid: &[String]) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    // The fastest level: a run of one byte compresses about 200:1 at it,
    // several times faster than the default level in a debug build.
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(HEADER.as_bytes()).unwrap();
    gz.write_all(b"\n").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..BOMB_BYTES / chunk.len() as u64 {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(b"\n").unwrap();
    for line in valid {
        gz.write_all(line.as_bytes()).unwrap();
        gz.write_all(b"\n").unwrap();
    }
    gz.finish().unwrap().flush().unwrap();
}

/// Waits up to `limit` for `child` to exit and reaps it with `wait4`:
/// (exit status, peak RSS in KiB over its whole life).
fn wait_with_peak_rss(child: &mut Child, limit: Duration) -> Option<(i32, u64)> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value; the pid is our unreaped
        // child; WNOHANG keeps the call from blocking.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, libc::WNOHANG, &mut usage) };
        assert!(pid >= 0, "wait4: {}", std::io::Error::last_os_error());
        if pid > 0 {
            // ru_maxrss is in KiB on Linux.
            return Some((status, usage.ru_maxrss as u64));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (line, reason, raw) of every record of a rejects file.
fn rejects_file(path: &Path) -> Vec<(i64, String, Vec<u8>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    reader
        .byte_records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let line = std::str::from_utf8(&r[0]).unwrap().parse().unwrap();
            (line, String::from_utf8(r[1].to_vec()).unwrap(), r[3].to_vec())
        })
        .collect()
}

/// F12: a `.csv.gz` of a few MiB that inflates to a GiB: the header, one
/// GiB-long record, then three valid rows. With `max_record_bytes` at
/// 64 KiB the huge record is one `malformed_csv` reject whose raw text is
/// its first 64 KiB, flagged truncated; the three rows after it are
/// written; the file is done. The daemon streams it: its peak RSS over its
/// whole life stays under 64 MiB.
#[test]
fn gzip_bomb_keeps_memory_bounded() {
    const TEST: &str = "gzip_bomb_keeps_memory_bounded";
    let started = Instant::now();
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__MAX_RECORD_BYTES", &MAX_RECORD.to_string());
    let name = "bomb.csv.gz";
    let valid: Vec<String> = (0..3).map(row).collect();
    let tmp = d.incoming().join(format!(".{name}.part"));
    write_bomb(&tmp, &valid);
    std::fs::rename(&tmp, d.incoming().join(name)).unwrap();
    let compressed = std::fs::metadata(d.incoming().join(name)).unwrap().len();
    let written_in = started.elapsed();

    let spawned = Instant::now();
    let mut child = Running(d.spawn(&[]));
    wait_until(Duration::from_secs(120), "the bomb file done and moved", || {
        db.has_schema()
            && db.files().get(name).is_some_and(|f| f.state == "done")
            && path_exists(&d.processed().join(name))
    });
    let took = spawned.elapsed();
    // VmHWM of the daemon's own address space. (wait4's ru_maxrss would also
    // count this test process's memory at fork time, before exec.)
    let peak_kib = peak_rss_kib(child.0.id());
    signal(&child.0, libc::SIGTERM);
    let (status, _) = wait_with_peak_rss(&mut child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the daemon did not stop within 30 s of SIGTERM; log:\n{}", d.log()));
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "wait status {status}; log:\n{}", d.log());

    assert_eq!(outcome(&db.files()[name]), (4, 3, 0, 1, "done"), "log:\n{}", d.log());
    assert_eq!(db.rejects(), vec![(name.to_owned(), 2, "malformed_csv".to_owned())]);
    let reject = db.client().query_one("SELECT raw_line, raw_truncated FROM ingest_rejects", &[]).unwrap();
    let raw: Vec<u8> = reject.get(0);
    assert_eq!(raw.len(), MAX_RECORD, "raw_line of the huge record");
    assert!(raw.iter().all(|b| *b == b'a'), "raw_line is not the record's first bytes");
    assert!(reject.get::<_, bool>(1), "raw_truncated not set");
    let want: BTreeSet<(String, String, i64)> = (0..3).map(|n| (uuid_of(n), name.to_owned(), n as i64 + 3)).collect();
    assert_events(&db, &want);
    let in_file = rejects_file(&d.bad_records().join(format!("{name}.rejects.csv")));
    assert_eq!(in_file.len(), 1);
    assert_eq!((in_file[0].0, in_file[0].1.as_str(), in_file[0].2.len()), (2, "malformed_csv", MAX_RECORD));
    assert!(path_exists(&d.processed().join(name)), "{name} not moved");

    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "peak RSS {peak_kib} KiB, bound {RSS_LIMIT_KIB} KiB, for a {} MiB record",
        BOMB_BYTES >> 20
    );
    println!(
        "{TEST}: {} KiB gzip -> {} MiB record; written in {:.1} s; daemon {:.1} s, peak RSS {} KiB",
        compressed >> 10,
        BOMB_BYTES >> 20,
        written_in.as_secs_f64(),
        took.as_secs_f64(),
        peak_kib
    );
}
