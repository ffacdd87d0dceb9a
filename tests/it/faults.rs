//! Faults: signals, crashes, panics and a stalled database (faults.md C1,
//! C4, C5, C6, C7, C9, P8). Each test writes files of known content and ends
//! with the exact oracle computed from that content: nothing lost, nothing
//! written twice.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);
/// The drain deadline the daemon is given: a drain that is not blocked ends
/// long before it.
const DRAIN_SECS: u64 = 20;

/// One data line of a test file, and what must become of it.
#[derive(Debug, Clone)]
enum Line {
    /// `row(n)`: valid, event_id `uuid_of(n)`.
    Valid(u64),
    /// Row `n` with this user_id (still valid): carries a failpoint marker.
    Marked(u64, &'static str),
    /// Rejected with this reason.
    Bad(String, &'static str),
}

impl Line {
    fn text(&self) -> String {
        match self {
            Line::Valid(n) => row(*n),
            Line::Marked(n, user) => with(*n, 2, user),
            Line::Bad(text, _) => text.clone(),
        }
    }

    fn id(&self) -> Option<u64> {
        match self {
            Line::Valid(n) | Line::Marked(n, _) => Some(*n),
            Line::Bad(..) => None,
        }
    }
}

/// A file a test writes; the oracle is computed from its lines.
struct TestFile {
    name: String,
    lines: Vec<Line>,
}

impl TestFile {
    fn content(&self) -> String {
        let mut s = String::with_capacity(self.lines.len() * 140 + 200);
        s.push_str(HEADER);
        s.push('\n');
        for l in &self.lines {
            s.push_str(&l.text());
            s.push('\n');
        }
        s
    }

    /// Data lines with their source line numbers (the header is line 1).
    fn numbered(&self) -> impl Iterator<Item = (i64, &Line)> {
        self.lines.iter().enumerate().map(|(i, l)| (i as i64 + 2, l))
    }

    /// The first line of each event id in this file: the only line of it
    /// that may be stored, if this file's copy is the one written.
    fn first_lines(&self) -> HashMap<String, i64> {
        let mut first = HashMap::new();
        for (line, l) in self.numbered() {
            if let Some(n) = l.id() {
                first.entry(uuid_of(n)).or_insert(line);
            }
        }
        first
    }

    fn rows(&self) -> i64 {
        self.lines.len() as i64
    }

    fn valid(&self) -> i64 {
        self.lines.iter().filter(|l| l.id().is_some()).count() as i64
    }

    /// (file, line, reason) of every line that must be rejected.
    fn rejects(&self) -> Vec<(String, i64, String)> {
        self.numbered()
            .filter_map(|(line, l)| match l {
                Line::Bad(_, reason) => Some((self.name.clone(), line, reason.to_string())),
                _ => None,
            })
            .collect()
    }

    /// (rows, written, duplicate, rejected) when no other file shares an
    /// event id with this one.
    fn alone(&self) -> (i64, i64, i64, i64) {
        let distinct = self.first_lines().len() as i64;
        (self.rows(), distinct, self.valid() - distinct, self.rejects().len() as i64)
    }
}

/// `rows` data lines for events `first..`, with rejects and duplicates at
/// fixed positions. Per 1000 lines: an invalid_uuid and an out_of_range
/// reject, a duplicate inside the same 1000 lines and one of the 1000
/// before; per 5000 lines one malformed_csv. With `borrow`, once per 1000
/// lines an event of the file whose events start at `borrow` (a duplicate
/// across files, of a line that is valid there).
fn mixed(name: &str, first: u64, rows: u64, borrow: Option<u64>) -> TestFile {
    let lines = (0..rows)
        .map(|i| {
            let n = first + i;
            match i % 1000 {
                999 => Line::Bad(with(n, 0, "not-a-uuid"), "invalid_uuid"),
                333 => Line::Bad(with(n, 8, "0"), "out_of_range"),
                500 if i % 5000 == 2500 => Line::Bad("x,y".into(), "malformed_csv"),
                250 => Line::Valid(n - 100),
                10 if i >= 1000 => Line::Valid(n - 20),
                777 => Line::Valid(borrow.map_or(n, |other| other + i + 1)),
                _ => Line::Valid(n),
            }
        })
        .collect();
    TestFile { name: name.into(), lines }
}

/// (attempts, error) of a file.
fn failure_of(db: &TestDb, name: &str) -> (i32, Option<String>) {
    let row = db.client().query_one("SELECT attempts, error FROM ingest_files WHERE file_name = $1", &[&name]).unwrap();
    (row.get(0), row.get(1))
}

/// Rows committed so far over all files (0 before the schema exists).
fn committed_rows(db: &TestDb) -> i64 {
    db.client()
        .query_one("SELECT coalesce(sum(rows_total), 0)::bigint FROM ingest_files", &[])
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Sessions of this database waiting for a lock on the events table.
fn lock_waiters(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ecommerce_events'::regclass \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
}

/// Holds `LOCK TABLE ecommerce_events IN ACCESS EXCLUSIVE MODE` until
/// released (or dropped: the connection closes and the lock goes with it).
fn lock_events_table(db: &TestDb) -> postgres::Client {
    let mut c = db.client();
    c.batch_execute("BEGIN; LOCK TABLE ecommerce_events IN ACCESS EXCLUSIVE MODE").unwrap();
    c
}

/// The whole database against the oracle, when exactly the files `done`
/// have been read and all of them are done.
fn assert_exact(db: &TestDb, d: &Daemon, done: &[&TestFile]) {
    let files = db.files();
    let firsts: HashMap<&str, HashMap<String, i64>> = done.iter().map(|f| (f.name.as_str(), f.first_lines())).collect();

    // Every stored event is the first line of its id in a file that has it.
    let events = db.stored();
    let mut per_file: HashMap<&str, i64> = HashMap::new();
    let mut places = BTreeSet::new();
    for (id, file, line) in &events {
        let first = firsts.get(file.as_str()).unwrap_or_else(|| panic!("event {id} stored from {file}, not expected"));
        assert_eq!(first.get(id), Some(line), "event {id} stored from {file}:{line}, not its first line there");
        *per_file.entry(file.as_str()).or_default() += 1;
        assert!(places.insert((file.as_str(), *line)), "{file}:{line} stored twice");
    }
    // Every distinct valid event is stored, once.
    let stored: BTreeSet<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
    let want: BTreeSet<&str> = firsts.values().flat_map(|m| m.keys().map(String::as_str)).collect();
    assert_eq!(stored.len(), events.len(), "an event_id stored twice");
    if stored != want {
        let missing: Vec<_> = want.difference(&stored).take(10).collect();
        let extra: Vec<_> = stored.difference(&want).take(10).collect();
        panic!("{} events stored, {} expected; missing {missing:?}; extra {extra:?}", stored.len(), want.len());
    }

    for f in done {
        let row = files.get(&f.name).unwrap_or_else(|| panic!("{} never registered", f.name));
        assert_eq!(row.state, "done", "{}: {row:?}", f.name);
        assert_eq!(row.rows, f.rows(), "{}: {row:?}", f.name);
        assert_eq!(row.rejected, f.rejects().len() as i64, "{}: {row:?}", f.name);
        assert_eq!(row.written + row.duplicate, f.valid(), "{}: {row:?}", f.name);
        assert_eq!(row.written, per_file.get(f.name.as_str()).copied().unwrap_or(0), "{}: {row:?}", f.name);
        assert!(path_exists(&d.processed().join(&f.name)), "{} not moved", f.name);
        assert!(!path_exists(&d.incoming().join(&f.name)), "{} still in incoming", f.name);
        // One line per reject in the rejects file: none torn, none twice.
        let rejects_file = d.bad_records().join(format!("{}.rejects.csv", f.name));
        if row.rejected > 0 {
            let text = std::fs::read_to_string(&rejects_file).unwrap();
            assert_eq!(text.lines().count() as i64, 1 + row.rejected, "{}", rejects_file.display());
        } else {
            assert!(!path_exists(&rejects_file), "{} without rejects has a rejects file", f.name);
        }
    }

    let mut want_rejects: Vec<_> = done.iter().flat_map(|f| f.rejects()).collect();
    want_rejects.sort();
    let mut got_rejects = db.rejects();
    got_rejects.sort();
    assert_eq!(got_rejects, want_rejects);
}

/// C5: the drain commits what is in flight and nothing else; the next run
/// resumes at the checkpoint and ends exactly where an uninterrupted run
/// would.
#[test]
fn sigterm_mid_file_then_resume_equals_uninterrupted_run() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let big = mixed("big.csv", 0, 200_000, None);
    // The oracle, spelled out once: 200 × (2 rejects, 2 duplicates) plus 40
    // malformed rows, less the missing duplicate of the first 1000 lines.
    assert_eq!(big.alone(), (200_000, 199_161, 399, 440));
    let content = big.content();
    d.drop_file(&big.name, content.as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "the first batches of big.csv committed", || {
        db.has_schema() && db.files().get("big.csv").is_some_and(|f| f.offset > 0 && f.state == "in_progress")
    });
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(DRAIN_SECS + 5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
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

/// A deterministic pseudo-random sequence (PCG-style LCG): the same seed
/// gives the same kill moments, so a failure can be run again.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// What a recount of the input files finds in the tables. Computed from
/// the files' lines alone (not from the daemon's counters), so a clean
/// result is `Recount::clean(n)`: `n` distinct events expected and stored,
/// every other field 0.
#[derive(Debug, Default, PartialEq, Eq)]
struct Recount {
    /// Distinct valid event ids over all input files.
    events_expected: usize,
    /// Rows in `ecommerce_events`.
    events_stored: usize,
    /// Valid events of the input that are not stored.
    lost: usize,
    /// Stored rows beyond one per event id, and input lines stored twice.
    duplicated: usize,
    /// Stored from a place that is not the first line of its id in a file
    /// that holds it.
    wrong_line: usize,
    /// Stored events that no input line has.
    unexpected: usize,
    /// Bad lines without a reject.
    rejects_missing: usize,
    /// Rejects of lines that are not bad, or a line rejected twice.
    rejects_extra: usize,
    /// Rejects at a bad line, with another reason than the line's.
    wrong_reason: usize,
    /// Files whose `ingest_files` row is not done with the recounted rows,
    /// rejected, written (= stored from that file) and duplicate counts.
    wrong_counts: usize,
}

impl Recount {
    fn clean(events: usize) -> Recount {
        Recount { events_expected: events, events_stored: events, ..Recount::default() }
    }

    fn of(db: &TestDb, files: &[TestFile]) -> Recount {
        let mut r = Recount::default();
        // Where each id may be stored: its first line in each file that has it.
        let mut places: HashMap<String, BTreeSet<(&str, i64)>> = HashMap::new();
        for f in files {
            for (id, line) in f.first_lines() {
                places.entry(id).or_default().insert((f.name.as_str(), line));
            }
        }
        r.events_expected = places.len();

        let stored = db.stored();
        r.events_stored = stored.len();
        let mut ids = BTreeSet::new();
        let mut lines = BTreeSet::new();
        let mut per_file: HashMap<&str, i64> = HashMap::new();
        for (id, file, line) in &stored {
            if !ids.insert(id.as_str()) || !lines.insert((file.as_str(), *line)) {
                r.duplicated += 1;
            }
            *per_file.entry(file.as_str()).or_default() += 1;
            match places.get(id) {
                None => r.unexpected += 1,
                Some(p) if !p.contains(&(file.as_str(), *line)) => r.wrong_line += 1,
                Some(_) => {}
            }
        }
        r.lost = places.keys().filter(|id| !ids.contains(id.as_str())).count();

        let want: HashMap<(String, i64), String> =
            files.iter().flat_map(TestFile::rejects).map(|(f, l, reason)| ((f, l), reason)).collect();
        let mut seen = BTreeSet::new();
        for (file, line, reason) in db.rejects() {
            let key = (file, line);
            match want.get(&key) {
                _ if seen.contains(&key) => r.rejects_extra += 1,
                None => r.rejects_extra += 1,
                Some(w) if *w != reason => r.wrong_reason += 1,
                Some(_) => {}
            }
            seen.insert(key);
        }
        r.rejects_missing = want.keys().filter(|k| !seen.contains(*k)).count();

        let rows = db.files();
        for f in files {
            let ok = rows.get(&f.name).is_some_and(|row| {
                row.state == "done"
                    && row.rows == f.rows()
                    && row.rejected == f.rejects().len() as i64
                    && row.written + row.duplicate == f.valid()
                    && row.written == per_file.get(f.name.as_str()).copied().unwrap_or(0)
            });
            if !ok {
                r.wrong_counts += 1;
            }
        }
        r
    }
}

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
        mixed(&format!("f{k:02}.csv"), (k + 1) * 1_000_000, ROWS, Some(other * 1_000_000))
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
            wait_until(LIMIT, "more rows committed since the last kill", || committed_rows(&db) > last);
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
            early += (at_start && committed_rows(&db) == last) as usize;
        } else {
            // Only a drain can end before the SIGKILL, and then with 0.
            assert!(during_drain && status.code() == Some(0), "round {round}: {status:?}; log:\n{}", d.log());
            drained_first += 1;
        }
        last = committed_rows(&db);
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

/// C5 at start-up (P1): a SIGTERM while the daemon still waits for its
/// database stops it the documented way (it has nothing in flight: exit 0
/// at once), not by the signal's default action, and touches no file.
#[test]
fn sigterm_during_start_up_exits_cleanly() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    // Nothing listens there: start-up keeps retrying.
    d.set("DATABASE_URL", &format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port()));
    d.set("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS", "30");
    d.drop_file("a.csv", valid_file(0, 10).as_bytes());
    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "the daemon waits for the database", || d.log().contains("database not ready"));
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(5)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no exit within 5 s of SIGTERM; log:\n{}", d.log())
    });
    assert_eq!(
        (status.code(), status.signal()),
        (Some(0), None),
        "SIGTERM while waiting for the database: {status:?}; log:\n{}",
        d.log()
    );
    assert!(path_exists(&d.incoming().join("a.csv")));
    assert_eq!(std::fs::read_dir(d.processed()).unwrap().count(), 0);
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
    let mut lock = lock_events_table(&db);
    let s = mixed("s.csv", 0, 5000, None);
    d.drop_file(&s.name, s.content().as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "the Writer waits for the table lock", || lock_waiters(&db) > 0);
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
    let (rows, written, duplicate, rejected) = s.alone();
    assert_eq!(
        (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
        (rows, written, duplicate, rejected, "done")
    );
    assert_exact(&db, &d, &[&s]);
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
    let others =
        [mixed("a.csv", 0, 3000, None), mixed("q.csv", 10_000, 3000, None), mixed("z.csv", 20_000, 3000, None)];
    for f in &others {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    // One batch: the reject before the poison row is rolled back with it.
    let mut p = mixed("p.csv", 30_000, 100, None);
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
        let (rows, written, duplicate, rejected) = f.alone();
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
    let mut m = mixed("m.csv", 0, 5000, None);
    m.lines[2345] = Line::Marked(2345, "MARK");
    let n = mixed("n.csv", 10_000, 3000, None);
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
        let (rows, written, duplicate, rejected) = f.alone();
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

/// P8: with the events table locked, reading stops at the credit window
/// (batches_in_flight × batch_rows rows), memory stays flat, nothing is
/// committed; released, the file completes exactly and SIGTERM exits 0.
#[test]
fn stalled_database_bounds_memory_and_resumes() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_PIPELINE__BATCHES_IN_FLIGHT", "2");
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "500");
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let bound = 2.0 * 500.0;
    let (status, _, stderr) = d.output(&["migrate"]);
    assert!(status.success(), "{stderr}");
    let mut lock = lock_events_table(&db);
    let f = mixed("stall.csv", 0, 50_000, None);
    d.drop_file(&f.name, f.content().as_bytes());

    let mut child = d.spawn(&[]);
    let scrape = || {
        let (status, body) = http_get(port, "/metrics").unwrap();
        assert_eq!(status, 200, "{body}");
        (metric(&body, "ingestd_rows_in_memory").unwrap(), metric(&body, "ingestd_rows_in_memory_peak").unwrap())
    };
    wait_until(LIMIT, "the credit window is full", || {
        http_get(port, "/metrics").ok().and_then(|(_, body)| metric(&body, "ingestd_rows_in_memory")) == Some(bound)
    });
    wait_until(LIMIT, "the Writer waits for the table lock", || lock_waiters(&db) > 0);

    // Stalled: the window stays full, never more.
    let rss_before = rss_kib(child.id());
    let observe_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < observe_until {
        assert_eq!(scrape(), (bound, bound), "rows in memory (now, peak)");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = rss_kib(child.id());
    eprintln!("stalled_database: VmRSS {rss_before} KiB, 2 s later {rss_after} KiB");
    assert!(rss_before < 100 * 1024 && rss_after < 100 * 1024, "RSS {rss_before} KiB, then {rss_after} KiB");
    assert_eq!(http_get(port, "/readyz").unwrap(), (200, "ready\n".to_owned()));
    let row = db.files()["stall.csv"].clone();
    assert_eq!((row.rows, row.offset, row.state.as_str()), (0, 0, "pending"), "{row:?}");

    lock.batch_execute("ROLLBACK").unwrap();
    wait_until(LIMIT, "stall.csv done", || db.files()["stall.csv"].state == "done");
    assert_eq!(scrape().1, bound, "peak rows in memory over the whole run");
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(DRAIN_SECS + 5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());

    let row = &db.files()["stall.csv"];
    let (rows, written, duplicate, rejected) = f.alone();
    assert_eq!(
        (row.rows, row.written, row.duplicate, row.rejected, row.state.as_str()),
        (rows, written, duplicate, rejected, "done")
    );
    assert_exact(&db, &d, &[&f]);
}
