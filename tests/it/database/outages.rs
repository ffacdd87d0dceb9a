//! PostgreSQL outages (faults.md P1, P2, P3, P5, P9, P10, P11, P12): the
//! real daemon against a cluster of the test's own that the test stops,
//! restarts, crashes, freezes, fills or reconfigures while batches are being
//! committed. The daemon must ride it out without exiting and without
//! counting the outage against any file or row; every test ends with the
//! exact oracle computed from the files' content: each valid event stored
//! once, from its first line, the known bad rows rejected and nothing else,
//! every file done and moved.

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
            let f = TestFile::new(&format!("f{k}.csv"), (k + 1) * 1_000_000, ROWS);
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
fn daemon(pg: &TestCluster) -> Daemon {
    let mut d = Daemon::new(&pg.db());
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    d
}

/// `ingest_files` per file name, or None while the database does not answer
/// (or before the schema exists).
fn files_now(pg: &TestCluster) -> Option<BTreeMap<String, FileRow>> {
    pg.db().try_files()
}

/// Rows committed so far over all files (0 while the database is away).
fn committed(pg: &TestCluster) -> i64 {
    files_now(pg).map(|f| f.values().map(|r| r.rows).sum()).unwrap_or(0)
}

fn all_done(pg: &TestCluster, files: &[TestFile]) -> bool {
    files_now(pg).is_some_and(|now| {
        now.len() == files.len() && files.iter().all(|f| now.get(&f.name).is_some_and(|r| r.state == "done"))
    })
}

/// Waits until some rows are committed, and returns how many: fewer than
/// all, or the fault would not land mid-run.
fn wait_mid_run(pg: &TestCluster, d: &Daemon, files: &[TestFile]) -> i64 {
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
fn finish(pg: &TestCluster, d: &Daemon, child: &mut Child, files: &[TestFile]) {
    let deadline = Instant::now() + LIMIT;
    while !all_done(pg, files) {
        d.assert_alive(child, "before every file was done");
        assert!(
            Instant::now() < deadline,
            "not every file done after {LIMIT:?}: {:?}; log:\n{}",
            files_now(pg),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop_cleanly(child, DRAIN_SECS);
}

/// Files that are not done must be untouched in incoming, with no rejects
/// file written for them.
fn assert_unfinished_untouched(pg: &TestCluster, d: &Daemon, files: &[TestFile]) {
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

/// The end state: every file done exactly (see `assert_done_exactly`).
fn assert_exact_end(pg: &TestCluster, d: &Daemon, files: &[TestFile]) {
    assert_done_exactly(&pg.db(), d, &files.iter().collect::<Vec<_>>());
}

/// P1: with the database down the daemon waits (alive, not ready, reading,
/// moving and rejecting nothing); once it is up the run completes exactly.
#[test]
fn database_down_at_start_is_waited_for() {
    let mut pg = TestCluster::new();
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
        d.assert_alive(&mut child, "while the database was down");
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
    assert_exact_end(&pg, &d, &files);
}

/// P2: `pg_ctl restart -m fast` while batches are being committed: the
/// Writer's transaction is cut (57P01 / connection closed), it reconnects,
/// replays from the checkpoint, and the result is exact.
#[test]
fn restart_mid_run_is_replayed_exactly() {
    let mut pg = TestCluster::new();
    let d = daemon(&pg);
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    wait_mid_run(&pg, &d, &files);

    pg.restart_fast();
    d.assert_alive(&mut child, "after the database restarted");
    finish(&pg, &d, &mut child, &files);
    assert!(d.log().contains("retrying"), "the restart was not seen: log:\n{}", d.log());
    assert_exact_end(&pg, &d, &files);
}

/// P3: the server crashes (`pg_ctl stop -m immediate`) twice while batches
/// are being committed, and recovers: uncommitted batches are gone, the
/// daemon replays them, and the result is exact.
#[test]
fn crash_mid_run_is_replayed_exactly() {
    let mut pg = TestCluster::new();
    let d = daemon(&pg);
    let files = drop_files(&d);
    let mut child = Running(d.spawn(&[]));
    let mut last = wait_mid_run(&pg, &d, &files);

    for round in 0..2 {
        if round == 0 {
            pg.crash();
            let down_until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < down_until {
                d.assert_alive(&mut child, "while the database was down");
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
    assert_exact_end(&pg, &d, &files);
}

/// P12: an administrator terminates every session of the daemon, several
/// times mid-run: like a restart, each cut transaction is replayed.
#[test]
fn terminated_sessions_are_replayed_exactly() {
    let pg = TestCluster::new();
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
        d.assert_alive(&mut child, "after its sessions were terminated");
        wait_until(LIMIT, "more rows committed after the termination", || committed(&pg) > last);
        last = committed(&pg);
    }
    assert!(terminated >= 3, "only {terminated} sessions terminated");
    finish(&pg, &d, &mut child, &files);
    assert_exact_end(&pg, &d, &files);
}

/// P5: a Writer backend is frozen (SIGSTOP) in the middle of a batch. No
/// socket error ever comes; the daemon's own batch timeout must fire, the
/// stale backend be terminated, the batch replayed. After SIGCONT the
/// frozen transaction must not commit: the result is exact.
#[test]
fn frozen_backend_detected_by_batch_timeout() {
    let pg = TestCluster::new();
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
    let frozen = Stopped::pid(pid);
    assert!(before < total_rows(&files), "all rows were in before the freeze");

    wait_until(Duration::from_secs(15), "the batch timeout fires", || d.log().contains("no answer within"));
    std::thread::sleep(Duration::from_secs(2));
    d.assert_alive(&mut child, "while a backend was frozen");
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
    assert_exact_end(&pg, &d, &files);
}

/// P10: the database turns read-only (as after a failover to a standby,
/// 25006) mid-run: batches are retried, never rejected, nothing is finished
/// or moved while it lasts; once writable again the run completes exactly.
#[test]
fn read_only_database_is_retried_not_rejected() {
    let pg = TestCluster::new();
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
        d.assert_alive(&mut child, "while the database was read-only");
        assert_eq!(files_now(&pg).unwrap(), snapshot, "progress while the database was read-only");
        assert_unfinished_untouched(&pg, &d, &files);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pg.db().scalar("SELECT count(*) FROM ingest_rejects"), rejects);

    pg.psql("ALTER SYSTEM RESET default_transaction_read_only");
    pg.psql("SELECT pg_reload_conf()");
    finish(&pg, &d, &mut child, &files);
    assert_exact_end(&pg, &d, &files);
}

/// P10 at start-up: a daemon (re)started while the database is read-only
/// (a failover under way) must wait for it like for an unreachable one
/// (P1), neither exiting nor touching a file, and proceed once the database
/// is writable again.
#[test]
fn read_only_database_at_start_is_waited_out() {
    let pg = TestCluster::new();
    let mut d = daemon(&pg);
    d.set("INGESTD_FAILPOINTS", "");
    d.set("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS", "30");
    let files = drop_files(&d);
    pg.psql("ALTER SYSTEM SET default_transaction_read_only = on");
    pg.psql("SELECT pg_reload_conf()");

    let mut child = Running(d.spawn(&[]));
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        d.assert_alive(&mut child, "while the database was read-only at start");
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
    assert_exact_end(&pg, &d, &files);
}

/// P9: every connection slot the daemon's role may use is held by other
/// sessions (53300): the daemon retries without exiting, rejecting or
/// finishing anything, and says it is not ready; once slots are free again
/// it completes exactly.
#[test]
fn exhausted_connection_slots_are_waited_out() {
    let pg = TestCluster::new();
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
        d.assert_alive(&mut child, "while it could not connect");
        assert_eq!(files_now(&pg).unwrap(), snapshot, "progress without a connection");
        assert_unfinished_untouched(&pg, &d, &files);
        std::thread::sleep(Duration::from_millis(200));
    }

    pg.psql("ALTER ROLE ingest CONNECTION LIMIT -1");
    drop(holders);
    finish(&pg, &d, &mut child, &files);
    assert_exact_end(&pg, &d, &files);
}

/// P11: the events table lives in a tablespace on a 12 MB ext4, and the
/// files hold more than fits. Batches fail with 53100 (disk full): they are
/// retried, the daemon stays up and says it is not ready, no row is
/// rejected for it, no file is done with partial counts, nothing is counted
/// against a file. With the table moved back to a roomy tablespace, the
/// run ends exactly.
#[test]
#[ignore = "needs root: loop-mounted ext4"]
fn database_disk_full_is_retried_not_rejected() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const TEST: &str = "database_disk_full_is_retried_not_rejected";
    require_root("loop-mounted ext4 for a tablespace");
    const DRAIN_SECS: u64 = 20;
    // The deadline this test always had, longer than the other outages'.
    const LIMIT: Duration = Duration::from_secs(60);
    // The small file system first: dropped after the cluster, which keeps
    // files open in it until it stops. In /tmp: the server user must reach
    // it wherever the checkout is.
    let space = tempfile::Builder::new().prefix("small-").tempdir().unwrap();
    std::fs::set_permissions(space.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = space.path().join("ext4.img");
    let mnt = space.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run_ok("truncate", &["-s", "12M", path_str(&image)]);
    run_ok("mkfs.ext4", &["-q", "-F", path_str(&image)]);
    let _small = Mount::image(&image, &mnt);
    let pg = TestCluster::new();
    let db = pg.db();
    let owner = std::fs::metadata(pg.data_dir()).unwrap();
    let location = mnt.join("ts");
    std::fs::create_dir(&location).unwrap();
    std::os::unix::fs::chown(&location, Some(owner.uid()), Some(owner.gid())).unwrap();
    pg.psql(&format!("CREATE TABLESPACE small LOCATION '{}'", location.display()));

    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let (status, _, stderr) = d.output(&["migrate"]);
    assert!(status.success(), "{stderr}");
    pg.psql("ALTER TABLE ecommerce_events SET TABLESPACE small");
    // 100,000 events: about half of them fit in the 12 MB.
    let files: Vec<TestFile> = (0..4)
        .map(|k| TestFile::with_bad(&format!("f{k}.csv"), (k + 1) * 1_000_000, 25_000, |i| i % 5000 == 4999))
        .collect();
    for f in &files {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    let want_rejects: BTreeSet<(String, i64, String)> = files.iter().flat_map(|f| f.rejects()).collect();
    let total: i64 = files.iter().map(|f| f.oracle().0).sum();
    let by_name = |name: &str| files.iter().find(|f| f.name == name).unwrap();
    let started = Instant::now();

    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "a batch refused for lack of disk space (53100)", || d.log().contains("(53100)"));
    wait_until(LIMIT, "not ready while batches fail", || {
        http_get(port, "/readyz").is_ok_and(|(status, _)| status == 503)
    });
    // While the disk is full: retried, never rejected, never done part-way.
    let until = Instant::now() + Duration::from_secs(3);
    let mut committed = 0;
    while Instant::now() < until {
        d.assert_alive(&mut child, "while the tablespace was full");
        let now = db.files();
        for (name, f) in &now {
            assert!(f.adds_up(), "{name}: {f:?}");
            if f.state == "done" {
                assert_eq!(f.counts(), by_name(name).oracle(), "{name} done with partial counts: {f:?}");
            }
        }
        committed = now.values().map(|f| f.rows).sum();
        let rejects: BTreeSet<(String, i64, String)> = db.rejects().into_iter().collect();
        assert!(
            rejects.is_subset(&want_rejects),
            "rows rejected for a full disk: {:?}",
            rejects.difference(&want_rejects)
        );
        assert_eq!(db.scalar("SELECT coalesce(sum(attempts), 0)::bigint FROM ingest_files"), 0, "failures counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(committed < total, "every row fit: make the file system smaller");
    let refused = d.log().lines().filter(|l| l.contains("batch not committed") && l.contains("(53100)")).count();

    pg.psql("ALTER TABLE ecommerce_events SET TABLESPACE pg_default");
    wait_until(LIMIT, "every file done once there is room", || {
        let now = db.files();
        now.len() == files.len() && files.iter().all(|f| now.get(&f.name).is_some_and(|r| r.state == "done"))
    });
    assert_eq!(d.stop(&mut child, DRAIN_SECS).code(), Some(0), "log:\n{}", d.log());
    assert_done_exactly(&db, &d, &files.iter().collect::<Vec<_>>());
    println!(
        "{TEST}: {committed} of {total} rows fit, {refused} batches refused with 53100, then done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
