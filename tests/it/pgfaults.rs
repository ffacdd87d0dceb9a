//! PostgreSQL faults (faults.md P1, P2, P3, P5, P9, P10, P12): the real
//! daemon against a private cluster that the test stops, restarts, crashes,
//! freezes or reconfigures while batches are being committed. The daemon
//! must ride it out without exiting and without counting the outage against
//! any file or row; every test ends with the exact oracle computed from the
//! files' content: each valid event stored once, from its first line, the
//! known bad rows rejected and nothing else, every file done and moved.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);
/// The drain deadline the daemon is given: a drain that is not blocked ends
/// long before it.
const DRAIN_SECS: u64 = 20;
const FILES: u64 = 4;
const ROWS: u64 = 10_000;

/// Writes `FILES` files of `ROWS` valid rows (disjoint events) into
/// incoming.
fn drop_files(d: &Daemon) -> Vec<TestFile> {
    (0..FILES)
        .map(|k| {
            let f = TestFile { name: format!("f{k}.csv"), first: (k + 1) * 1_000_000, rows: ROWS };
            d.drop_file(&f.name, f.content().as_bytes());
            f
        })
        .collect()
}

fn total_rows(files: &[TestFile]) -> i64 {
    files.iter().map(|f| f.oracle().0).sum()
}

/// A daemon on the private cluster: small batches, and reading slowed down
/// (on the Parser's blocking thread) so that the fault lands mid-run.
fn daemon(pg: &PrivateDb) -> Daemon {
    let mut d = Daemon::new(&pg.db());
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    d
}

/// A client that gives up quickly: the server may be down or frozen.
fn try_client(url: &str) -> Option<postgres::Client> {
    let mut config: postgres::Config = url.parse().unwrap();
    config.connect_timeout(Duration::from_secs(2));
    config.connect(postgres::NoTls).ok()
}

/// `ingest_files` per file name, or None while the database does not answer
/// (or before the schema exists).
fn files_now(pg: &PrivateDb) -> Option<BTreeMap<String, FileRow>> {
    Some(file_rows(&try_client(&pg.url())?.query(FILES_SQL, &[]).ok()?))
}

/// Rows committed so far over all files (0 while the database is away).
fn committed(pg: &PrivateDb) -> i64 {
    files_now(pg).map(|f| f.values().map(|r| r.rows).sum()).unwrap_or(0)
}

fn all_done(pg: &PrivateDb, files: &[TestFile]) -> bool {
    files_now(pg).is_some_and(|now| {
        now.len() == files.len() && files.iter().all(|f| now.get(&f.name).is_some_and(|r| r.state == "done"))
    })
}

fn assert_alive(child: &mut Child, d: &Daemon, when: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the daemon exited {when}: {status:?}; log:\n{}", d.log());
    }
}

/// Waits until some rows are committed, and returns how many: fewer than
/// all, or the fault would not land mid-run.
fn wait_mid_run(pg: &PrivateDb, d: &Daemon, files: &[TestFile]) -> i64 {
    wait_until(LIMIT, "the first batches committed", || committed(pg) > 0);
    let now = committed(pg);
    assert!(
        now < total_rows(files),
        "all rows were in before the fault; slow the reading down more; log:\n{}",
        d.log()
    );
    now
}

/// Waits until every file is done, then SIGTERM: the drain ends with 0.
fn finish(pg: &PrivateDb, d: &Daemon, child: &mut Child, files: &[TestFile]) {
    let deadline = Instant::now() + LIMIT;
    while !all_done(pg, files) {
        assert_alive(child, d, "before every file was done");
        assert!(
            Instant::now() < deadline,
            "not every file done after {LIMIT:?}: {:?}; log:\n{}",
            files_now(pg),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(child, libc::SIGTERM);
    let status = wait_exit(child, Duration::from_secs(DRAIN_SECS + 5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

/// The whole database and the folders against the oracle: every file done
/// with its exact counts and moved, no failure counted against any file,
/// exactly the expected events (one per distinct valid event, at its first
/// line) and exactly the expected rejects.
fn assert_exact(pg: &PrivateDb, d: &Daemon, files: &[TestFile]) {
    let db = pg.db();
    let got = db.files();
    assert_eq!(got.len(), files.len(), "{got:?}");
    for f in files {
        let row = got.get(&f.name).unwrap_or_else(|| panic!("{} never registered", f.name));
        let (rows, written, duplicate, rejected) = f.oracle();
        assert_eq!(
            (row.rows, row.written, row.duplicate, row.rejected, row.state.as_str()),
            (rows, written, duplicate, rejected, "done"),
            "{}: {row:?}",
            f.name
        );
        assert!(row.adds_up(), "{}: {row:?}", f.name);
        assert!(path_exists(&d.processed().join(&f.name)), "{} not moved", f.name);
        assert!(!path_exists(&d.incoming().join(&f.name)), "{} still in incoming", f.name);
        let rejects_file = d.bad_records().join(format!("{}.rejects.csv", f.name));
        let text = std::fs::read_to_string(&rejects_file).unwrap();
        assert_eq!(text.lines().count() as i64, 1 + rejected, "{}", rejects_file.display());
    }
    // An outage is not the file's fault: nothing was counted against one.
    let attempts = db.scalar("SELECT coalesce(sum(attempts), 0)::bigint FROM ingest_files");
    assert_eq!(attempts, 0, "failures counted against files; log:\n{}", d.log());

    let stored = db.stored();
    let want: BTreeSet<(String, String, i64)> = files.iter().flat_map(TestFile::stored).collect();
    let got_set: BTreeSet<(String, String, i64)> = stored.iter().cloned().collect();
    assert_eq!(got_set.len(), stored.len(), "an event stored twice");
    if got_set != want {
        let missing: Vec<_> = want.difference(&got_set).take(5).collect();
        let extra: Vec<_> = got_set.difference(&want).take(5).collect();
        panic!("{} events stored, {} expected; missing {missing:?}; extra {extra:?}", got_set.len(), want.len());
    }

    let mut want_rejects: Vec<_> = files.iter().flat_map(TestFile::rejects).collect();
    want_rejects.sort();
    assert_eq!(db.rejects(), want_rejects, "rejects: only the bad rows, each once");
}

/// Files that are not done must be untouched in incoming, with no rejects
/// file written for them.
fn assert_unfinished_untouched(pg: &PrivateDb, d: &Daemon, files: &[TestFile]) {
    let now = files_now(pg).unwrap_or_default();
    for f in files {
        if now.get(&f.name).is_some_and(|r| r.state == "done") {
            continue;
        }
        assert!(path_exists(&d.incoming().join(&f.name)), "{} left incoming before it was done", f.name);
        assert!(!path_exists(&d.processed().join(&f.name)), "{} moved before it was done", f.name);
        assert!(
            !path_exists(&d.bad_records().join(format!("{}.rejects.csv", f.name))),
            "{} has a rejects file before it was done",
            f.name
        );
    }
}

/// P1: with the database down the daemon waits (alive, not ready, reading,
/// moving and rejecting nothing); once it is up the run completes exactly.
#[test]
fn database_down_at_start_then_up() {
    let mut pg = PrivateDb::new();
    let mut d = daemon(&pg);
    let port = free_port();
    d.set("INGESTD_FAILPOINTS", "");
    d.set("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS", "30");
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    let files = drop_files(&d);
    pg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err(), "the database is still up");

    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "the daemon retries the database", || d.log().contains("database not ready"));
    let down_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < down_until {
        assert_alive(&mut child, &d, "while the database was down");
        // Not ready: no answer at all (the HTTP server starts only once the
        // database answered) or 503.
        let ready = http_get(port, "/readyz").map(|(status, _)| status).ok();
        assert_ne!(ready, Some(200), "ready without a database");
        std::thread::sleep(Duration::from_millis(200));
    }
    for f in &files {
        assert!(path_exists(&d.incoming().join(&f.name)), "{} touched without a database", f.name);
    }
    assert_eq!(std::fs::read_dir(d.processed()).unwrap().count(), 0, "moved without a database");
    assert_eq!(std::fs::read_dir(d.bad_records()).unwrap().count(), 0, "rejects written without a database");

    pg.start();
    wait_until(LIMIT, "ready once the database is up", || {
        http_get(port, "/readyz").is_ok_and(|(status, _)| status == 200)
    });
    finish(&pg, &d, &mut child, &files);
    assert_exact(&pg, &d, &files);
}

/// P2: `pg_ctl restart -m fast` while batches are being committed: the
/// Writer's transaction is cut (57P01 / connection closed), it reconnects,
/// replays from the checkpoint, and the result is exact.
#[test]
fn restart_fast_mid_run() {
    let mut pg = PrivateDb::new();
    let d = daemon(&pg);
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    wait_mid_run(&pg, &d, &files);

    pg.restart_fast();
    assert_alive(&mut child, &d, "after the database restarted");
    finish(&pg, &d, &mut child, &files);
    assert!(d.log().contains("retrying"), "the restart was not seen: log:\n{}", d.log());
    assert_exact(&pg, &d, &files);
}

/// P3: the server crashes (`pg_ctl stop -m immediate`) twice while batches
/// are being committed, and recovers: uncommitted batches are gone, the
/// daemon replays them, and the result is exact.
#[test]
fn crash_immediate_mid_run() {
    let mut pg = PrivateDb::new();
    let d = daemon(&pg);
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    let mut last = wait_mid_run(&pg, &d, &files);

    for round in 0..2 {
        if round == 0 {
            pg.crash();
            let down_until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < down_until {
                assert_alive(&mut child, &d, "while the database was down");
                std::thread::sleep(Duration::from_millis(100));
            }
            pg.start();
        } else {
            pg.crash_and_start();
        }
        assert!(last < total_rows(&files), "round {round}: all rows were in before the crash");
        wait_until(LIMIT, "more rows committed after the recovery", || committed(&pg) > last);
        last = committed(&pg);
        for (name, f) in files_now(&pg).unwrap() {
            assert!(f.adds_up(), "round {round}: {name}: {f:?}");
        }
    }
    finish(&pg, &d, &mut child, &files);
    assert!(d.log().contains("retrying"), "the crash was not seen: log:\n{}", d.log());
    assert_exact(&pg, &d, &files);
}

/// P12: an administrator terminates every session of the daemon, several
/// times mid-run: like a restart, each cut transaction is replayed.
#[test]
fn admin_terminates_backends() {
    let pg = PrivateDb::new();
    let d = daemon(&pg);
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    let mut last = wait_mid_run(&pg, &d, &files);

    let mut terminated = 0;
    for round in 0..3 {
        let n: i64 = pg
            .psql(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'ingestd' AND pid <> pg_backend_pid()",
            )
            .parse()
            .unwrap();
        terminated += n;
        assert!(last < total_rows(&files), "round {round}: all rows were in before the termination");
        assert_alive(&mut child, &d, "after its sessions were terminated");
        wait_until(LIMIT, "more rows committed after the termination", || committed(&pg) > last);
        last = committed(&pg);
    }
    assert!(terminated >= 3, "only {terminated} sessions terminated");
    finish(&pg, &d, &mut child, &files);
    assert_exact(&pg, &d, &files);
}

/// Sends SIGCONT to a stopped process when dropped, so a failing test never
/// leaves a frozen backend behind.
struct Frozen(i32);

impl Frozen {
    fn stop(pid: i32) -> Frozen {
        // SAFETY: signals a PostgreSQL backend of our private cluster.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "kill -STOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above; the process may be gone already.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// P5: a Writer backend is frozen (SIGSTOP) in the middle of a batch. No
/// socket error ever comes; the daemon's own batch timeout must fire, the
/// stale backend be terminated, the batch replayed. After SIGCONT the
/// frozen transaction must not commit: the result is exact.
#[test]
fn frozen_backend_detected_by_batch_timeout() {
    let pg = PrivateDb::new();
    let mut d = daemon(&pg);
    d.set("INGESTD_DATABASE__BATCH_TIMEOUT_SECS", "2");
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    wait_mid_run(&pg, &d, &files);

    // A backend of a Writer connection, caught while it runs a statement of
    // a batch transaction.
    let mut admin = pg.db().client();
    let mut pid = 0;
    wait_until(LIMIT, "a Writer backend in a batch transaction", || {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'ingestd' AND state = 'active' \
                 AND (query LIKE 'COPY %' OR query LIKE 'INSERT INTO ecommerce_events%' \
                      OR query LIKE 'UPDATE ingest_files SET committed_offset%') LIMIT 1",
                &[],
            )
            .unwrap();
        row.map(|r| pid = r.get(0)).is_some()
    });
    // Counted before the freeze, not after: the frozen backend may hold a
    // buffer's content lock on ingest_files (an LWLock, which neither a
    // timeout nor a cancel can interrupt), and a query reading that page
    // would wait until the backend is resumed.
    let before = committed(&pg);
    let frozen = Frozen::stop(pid);
    assert!(before < total_rows(&files), "all rows were in before the freeze");

    wait_until(Duration::from_secs(15), "the batch timeout fires", || d.log().contains("no answer within"));
    std::thread::sleep(Duration::from_secs(2));
    assert_alive(&mut child, &d, "while a backend was frozen");
    drop(frozen);
    wait_until(LIMIT, "the frozen backend is gone", || {
        admin.query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid]).unwrap().is_none()
    });
    finish(&pg, &d, &mut child, &files);
    // Ended by the daemon's pg_terminate_backend, not by a late EOF.
    assert!(
        pg.server_log().contains(&format!("[{pid}] FATAL:  terminating connection due to administrator command")),
        "the stale backend {pid} was not terminated; server log:\n{}",
        pg.server_log()
    );
    assert_exact(&pg, &d, &files);
}

/// P10: the database turns read-only (as after a failover to a standby,
/// 25006) mid-run: batches are retried, never rejected, nothing is finished
/// or moved while it lasts; once writable again the run completes exactly.
#[test]
fn read_only_database_is_retried_not_rejected() {
    let pg = PrivateDb::new();
    let d = daemon(&pg);
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    wait_mid_run(&pg, &d, &files);

    pg.psql("ALTER SYSTEM SET default_transaction_read_only = on");
    pg.psql("SELECT pg_reload_conf()");
    wait_until(LIMIT, "a batch refused as read-only", || d.log().contains("read-only transaction"));
    // Transactions begun before the reload may still commit: let them.
    std::thread::sleep(Duration::from_millis(500));
    let snapshot = files_now(&pg).unwrap();
    let rejects = pg.db().scalar("SELECT count(*) FROM ingest_rejects");
    assert!(
        snapshot.values().map(|f| f.rows).sum::<i64>() < total_rows(&files),
        "all rows were in before the database turned read-only"
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_alive(&mut child, &d, "while the database was read-only");
        assert_eq!(files_now(&pg).unwrap(), snapshot, "progress while the database was read-only");
        assert_unfinished_untouched(&pg, &d, &files);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pg.db().scalar("SELECT count(*) FROM ingest_rejects"), rejects);

    pg.psql("ALTER SYSTEM RESET default_transaction_read_only");
    pg.psql("SELECT pg_reload_conf()");
    finish(&pg, &d, &mut child, &files);
    assert_exact(&pg, &d, &files);
}

/// P10 at start-up: a daemon (re)started while the database is read-only
/// (a failover under way) must wait for it like for an unreachable one
/// (P1), neither exiting nor touching a file, and proceed once the database
/// is writable again.
#[test]
fn read_only_database_at_start_is_waited_out() {
    let pg = PrivateDb::new();
    let mut d = daemon(&pg);
    d.set("INGESTD_FAILPOINTS", "");
    d.set("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS", "30");
    let files = drop_files(&d);
    pg.psql("ALTER SYSTEM SET default_transaction_read_only = on");
    pg.psql("SELECT pg_reload_conf()");

    let mut child = Running(d.spawn(&[]));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_alive(&mut child, &d, "while the database was read-only at start");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(files_now(&pg).unwrap_or_default().values().all(|f| f.rows == 0), "rows committed to a read-only database");
    for f in &files {
        assert!(path_exists(&d.incoming().join(&f.name)), "{} touched while the database was read-only", f.name);
    }
    assert_eq!(std::fs::read_dir(d.processed()).unwrap().count(), 0, "moved while the database was read-only");
    assert_eq!(
        std::fs::read_dir(d.bad_records()).unwrap().count(),
        0,
        "rejects written while the database was read-only"
    );

    pg.psql("ALTER SYSTEM RESET default_transaction_read_only");
    pg.psql("SELECT pg_reload_conf()");
    finish(&pg, &d, &mut child, &files);
    assert_exact(&pg, &d, &files);
}

/// P9: every connection slot the daemon's role may use is held by other
/// sessions (53300): the daemon retries without exiting, rejecting or
/// finishing anything, and says it is not ready; once slots are free again
/// it completes exactly.
#[test]
fn connection_slots_exhausted() {
    let pg = PrivateDb::new();
    // A role of its own, so its slots can be exhausted without locking the
    // test (a superuser) out.
    pg.psql("CREATE ROLE ingest LOGIN");
    pg.psql(&format!("ALTER DATABASE {PRIVATE_DB} OWNER TO ingest"));
    let mut d = daemon(&pg);
    let port = free_port();
    d.set("DATABASE_URL", &pg.url_as("ingest"));
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    wait_mid_run(&pg, &d, &files);

    // Hold two slots, make them all the role has, then end the daemon's
    // sessions: every reconnection is refused until the slots are free.
    let mut holders: Vec<postgres::Client> = (0..2)
        .map(|_| postgres::Client::connect(&pg.url_as("ingest"), postgres::NoTls).expect("a holding session"))
        .collect();
    let held: Vec<String> = holders
        .iter_mut()
        .map(|c| c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get::<_, i32>(0).to_string())
        .collect();
    pg.psql("ALTER ROLE ingest CONNECTION LIMIT 2");
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'ingest' AND pid NOT IN ({})",
        held.join(",")
    );
    pg.psql(&terminate);
    wait_until(LIMIT, "a reconnection refused for lack of slots", || d.log().contains("too many connections"));
    // A session that was still starting up at the first pass.
    pg.psql(&terminate);
    wait_until(LIMIT, "not ready while it cannot connect", || {
        http_get(port, "/readyz").is_ok_and(|(status, _)| status == 503)
    });
    let snapshot = files_now(&pg).unwrap();
    assert!(
        snapshot.values().map(|f| f.rows).sum::<i64>() < total_rows(&files),
        "all rows were in before the slots ran out"
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_alive(&mut child, &d, "while it could not connect");
        assert_eq!(files_now(&pg).unwrap(), snapshot, "progress without a connection");
        assert_unfinished_untouched(&pg, &d, &files);
        std::thread::sleep(Duration::from_millis(200));
    }

    pg.psql("ALTER ROLE ingest CONNECTION LIMIT -1");
    drop(holders);
    finish(&pg, &d, &mut child, &files);
    assert_exact(&pg, &d, &files);
}
