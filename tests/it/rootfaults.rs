//! Faults that need root (faults.md F1, F2, F19, P11): a full quarantine
//! folder (a tiny tmpfs), a read-only processed folder (a tmpfs remounted
//! read-only, on another file system than incoming), an immutable source
//! file (`chattr +i`) and a full database tablespace (a loop-mounted ext4).
//! The daemon must keep what it committed, retry the disk work it could not
//! do, never read a finished file again, never reject a row for the disk's
//! sake, and end exactly once the space is back.
//!
//! They run only with `INGESTD_IT_ROOT=1` (CI sets it; it runs as root) and
//! as root; otherwise each test prints why it did nothing and passes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs a command to success, or panics with what it printed.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file system mounted on a folder of the test; unmounted when dropped,
/// also when the test fails (lazily if something still holds it).
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (e.g. `64k`) on `dir`.
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path_str(dir)]);
        Mount { dir: dir.to_owned() }
    }

    /// The file system in `image` on `dir`, through a loop device.
    fn image(image: &Path, dir: &Path) -> Mount {
        run("mount", &["-o", "loop", path_str(image), path_str(dir)]);
        Mount { dir: dir.to_owned() }
    }

    /// `mount -o remount,OPTIONS`: e.g. `ro`, `rw`, `size=16m`.
    fn remount(&self, options: &str) {
        run("mount", &["-o", &format!("remount,{options}"), path_str(&self.dir)]);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A test file and, from its lines alone, what must become of it.
struct Input {
    name: String,
    /// Data lines, each with the reason it must be rejected for.
    lines: Vec<(String, Option<&'static str>)>,
}

impl Input {
    /// `rows` lines for events `first..`, the ones `bad(i)` picks made
    /// invalid_uuid rejects, then the first event again (a duplicate).
    fn new(name: &str, first: u64, rows: u64, bad: impl Fn(u64) -> bool) -> Input {
        assert!(!bad(0), "the first line is repeated at the end: it must be valid");
        let mut lines: Vec<(String, Option<&'static str>)> =
            (0..rows)
                .map(|i| {
                    if bad(i) {
                        (with(first + i, 0, "not-a-uuid"), Some("invalid_uuid"))
                    } else {
                        (row(first + i), None)
                    }
                })
                .collect();
        lines.push((row(first), None));
        Input { name: name.into(), lines }
    }

    fn content(&self) -> String {
        let mut s = String::with_capacity(self.lines.len() * 140 + 200);
        s.push_str(HEADER);
        s.push('\n');
        for (line, _) in &self.lines {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// (line, text, reason) of each line to reject (the header is line 1).
    fn bad_lines(&self) -> Vec<(i64, &str, &'static str)> {
        self.lines.iter().enumerate().filter_map(|(i, (text, r))| r.map(|r| (i as i64 + 2, text.as_str(), r))).collect()
    }

    /// (file, line, reason) of each reject, as `TestDb::rejects` lists them.
    fn rejects(&self) -> Vec<(String, i64, String)> {
        self.bad_lines().into_iter().map(|(line, _, r)| (self.name.clone(), line, r.to_owned())).collect()
    }

    /// (event_id, file, line) of each event stored from this file: its
    /// valid lines but the repeat at the end.
    fn stored(&self) -> BTreeSet<(String, String, i64)> {
        let mut seen = BTreeSet::new();
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.is_none())
            .filter_map(|(i, (text, _))| {
                let id = text.split(',').next().unwrap().to_owned();
                seen.insert(id.clone()).then(|| (id, self.name.clone(), i as i64 + 2))
            })
            .collect()
    }

    /// (rows, written, duplicate, rejected).
    fn oracle(&self) -> (i64, i64, i64, i64) {
        let rejected = self.bad_lines().len() as i64;
        let written = self.stored().len() as i64;
        (self.lines.len() as i64, written, self.lines.len() as i64 - rejected - written, rejected)
    }
}

fn counts(f: &FileRow) -> (i64, i64, i64, i64) {
    (f.rows, f.written, f.duplicate, f.rejected)
}

fn is_done(db: &TestDb, name: &str) -> bool {
    db.has_schema() && db.files().get(name).is_some_and(|f| f.state == "done")
}

/// Sorted names in a folder.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Log lines of failed after-commit disk work that mention `error`.
fn disk_failures(d: &Daemon, error: &str) -> usize {
    d.log().lines().filter(|l| l.contains("after-commit disk work failed") && l.contains(error)).count()
}

/// (line, reason, raw) of every record of a rejects file, by line.
fn rejects_file(path: &Path) -> Vec<(i64, String, Vec<u8>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(reader.byte_headers().unwrap(), &csv::ByteRecord::from(vec!["line", "reason", "detail", "raw"]));
    let mut records: Vec<(i64, String, Vec<u8>)> = reader
        .byte_records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(r.len(), 4, "{}: {r:?}", path.display());
            let line = std::str::from_utf8(&r[0]).unwrap().parse().unwrap();
            (line, String::from_utf8(r[1].to_vec()).unwrap(), r[3].to_vec())
        })
        .collect();
    records.sort();
    records
}

/// The rejects file of `f` holds exactly its bad lines, each once, with
/// its reason and its raw text.
fn assert_rejects_file(d: &Daemon, f: &Input) {
    let want: Vec<(i64, String, Vec<u8>)> =
        f.bad_lines().into_iter().map(|(line, text, r)| (line, r.to_owned(), text.as_bytes().to_vec())).collect();
    let path = d.bad_records().join(format!("{}.rejects.csv", f.name));
    let got = rejects_file(&path);
    assert_eq!(got.len(), want.len(), "{}", path.display());
    assert!(got == want, "{}: records differ from the bad lines", path.display());
}

/// Every file one identity, done with its exact counts, no failure counted
/// against it, its rows and rejects exactly the expected ones (with
/// `moved`: moved intact, its rejects file complete).
fn assert_committed_exactly(db: &TestDb, d: &Daemon, files: &[&Input], moved: bool) {
    let identities = db.identities();
    let names: Vec<&str> = identities.iter().map(|i| i.name.as_str()).collect();
    let want_names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.iter().collect::<BTreeSet<_>>(), want_names.iter().collect::<BTreeSet<_>>());
    assert_eq!(names.len(), want_names.len(), "one identity per file: {identities:?}");
    for f in files {
        let id = identities.iter().find(|i| i.name == f.name).unwrap();
        assert_eq!((counts(&id.file), id.file.state.as_str()), (f.oracle(), "done"), "{}: {id:?}", f.name);
        assert_eq!(id.fingerprint, fingerprint_of(f.content().as_bytes()), "{}", f.name);
        if moved {
            assert_eq!(std::fs::read(d.processed().join(&f.name)).ok(), Some(f.content().into_bytes()), "{}", f.name);
            assert!(!path_exists(&d.incoming().join(&f.name)), "{} still in incoming", f.name);
            if f.oracle().3 > 0 {
                assert_rejects_file(d, f);
            }
        }
    }
    assert_eq!(db.scalar("SELECT coalesce(sum(attempts), 0)::bigint FROM ingest_files"), 0, "failures counted");
    let stored = db.stored();
    let got: BTreeSet<(String, String, i64)> = stored.iter().cloned().collect();
    assert_eq!(got.len(), stored.len(), "an event stored twice");
    let want: BTreeSet<(String, String, i64)> = files.iter().flat_map(|f| f.stored()).collect();
    assert!(got == want, "{} events stored, {} expected", got.len(), want.len());
    let mut want_rejects: Vec<_> = files.iter().flat_map(|f| f.rejects()).collect();
    want_rejects.sort();
    assert_eq!(db.rejects(), want_rejects, "rejects: exactly the bad lines, each once");
}

/// SIGTERM, then the exit code within the drain deadline (+ 5 s).
fn stop(d: &Daemon, child: &mut Running, drain_secs: u64) -> Option<i32> {
    signal(child, libc::SIGTERM);
    let status = wait_exit(child, Duration::from_secs(drain_secs + 5))
        .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", d.log()));
    status.code()
}

fn assert_alive(child: &mut Child, d: &Daemon, when: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the daemon exited {when}: {status:?}; log:\n{}", d.log());
    }
}

/// F1: the quarantine folder is a 64 KiB tmpfs; a committed file's rejects
/// file does not fit. The rows stay committed (file done, rejects in the
/// table); the rejects file fails with ENOSPC and is retried, the source
/// waits in incoming, no partial rejects file is ever visible and the temp
/// file of a failed attempt does not stay behind: it would fill the folder
/// until the next attempt, up to 30 s later, so that a file whose small
/// rejects file does fit could not get it either. Given room, the same
/// running daemon writes the rejects file, complete, and moves the source.
#[test]
fn bad_records_disk_full_is_retried() {
    const TEST: &str = "bad_records_disk_full_is_retried";
    if !root_enabled(TEST) {
        return;
    }
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let port = free_port();
    d.set("INGESTD_HTTP__LISTEN", &format!("127.0.0.1:{port}"));
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    let bad_records = Mount::tmpfs(&d.bad_records(), "64k");
    // Nine lines in ten rejected: about 0.5 MB of rejects file.
    let r = Input::new("r.csv", 0, 3000, |i| i % 10 != 0);
    assert_eq!(r.oracle(), (3001, 300, 1, 2700));
    d.drop_file(&r.name, r.content().as_bytes());
    let started = Instant::now();
    let mut child = Running(d.spawn(&[]));

    wait_until(LIMIT, "r.csv done", || is_done(&db, "r.csv"));
    assert_committed_exactly(&db, &d, &[&r], false);
    // Attempts 2 to 4 are followed by pauses of 0.4 s and more: time to
    // look at the folder between two attempts.
    let mut seen = 0;
    while seen < 4 {
        wait_until(LIMIT, "another failed attempt to write the rejects file", || {
            disk_failures(&d, "No space left on device") > seen
        });
        seen = disk_failures(&d, "No space left on device");
        assert_alive(&mut child, &d, "while bad_records was full");
        assert!(path_exists(&d.incoming().join("r.csv")), "moved without its rejects file");
        assert_eq!(names_in(&d.processed()), Vec::<String>::new());
        let names = names_in(&d.bad_records());
        assert!(!names.iter().any(|n| n.ends_with(".rejects.csv")), "a partial rejects file is visible: {names:?}");
        if seen >= 2 {
            let deadline = Instant::now() + Duration::from_millis(300);
            while !names_in(&d.bad_records()).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                names_in(&d.bad_records()),
                Vec::<String>::new(),
                "after failed attempt {seen}: the temp file of the attempt is left behind"
            );
        }
    }
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    let errors = metric(&body, "ingestd_disk_errors_total").unwrap();
    assert!(errors >= seen as f64, "ingestd_disk_errors_total {errors}, {seen} failures logged");
    // Nothing was read again meanwhile.
    assert_committed_exactly(&db, &d, &[&r], false);

    // A file whose rejects file does fit gets it, and is moved, while the
    // big one keeps failing: a failed attempt does not hold the space.
    let small = Input::new("s.csv", 100_000, 100, |i| i % 50 == 49);
    d.drop_file(&small.name, small.content().as_bytes());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(is_done(&db, "s.csv") && path_exists(&d.processed().join("s.csv"))) {
        let log = d.log();
        let s_lines: Vec<&str> = log.lines().filter(|l| l.contains("s.csv")).collect();
        assert!(
            Instant::now() < deadline,
            "s.csv not done and moved within 20 s while r.csv's rejects file kept failing; bad_records holds \
             {:?}; log lines of s.csv:\n{}",
            names_in(&d.bad_records()),
            s_lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_rejects_file(&d, &small);
    assert!(path_exists(&d.incoming().join("r.csv")));
    assert!(!path_exists(&d.bad_records().join("r.csv.rejects.csv")));

    bad_records.remount("size=16m");
    wait_until(LIMIT, "r.csv moved once its rejects file fits", || {
        path_exists(&d.processed().join("r.csv")) && !path_exists(&d.incoming().join("r.csv"))
    });
    assert_eq!(
        names_in(&d.bad_records()),
        ["r.csv.rejects.csv", "s.csv.rejects.csv"],
        "only the rejects files: no temp file left"
    );
    assert_committed_exactly(&db, &d, &[&r, &small], true);
    assert_eq!(stop(&d, &mut child, 30), Some(0), "log:\n{}", d.log());
    println!("{TEST}: {seen} failed attempts, then done in {:.1} s", started.elapsed().as_secs_f64());
}

/// F2, F19: the processed folder turns read-only under a running daemon
/// (a tmpfs remounted `ro`, so the move is a cross-device copy that fails
/// with EROFS). The rows are committed and the files done; the move fails
/// and is retried; the files stay in incoming and are not read again. A
/// restart while it lasts does not read them either (the start-up folder
/// check refuses a read-only processed folder: exit 2). Writable again, the
/// next daemon finds both identities done and only moves them, intact: one
/// identity each, exact counts.
#[test]
fn processed_folder_read_only_then_writable() {
    const TEST: &str = "processed_folder_read_only_then_writable";
    if !root_enabled(TEST) {
        return;
    }
    // The drain cannot finish disk work that keeps failing: it ends at its
    // deadline.
    const DRAIN_SECS: u64 = 2;
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    d.set("INGESTD_SHUTDOWN__DRAIN_TIMEOUT_SECS", &DRAIN_SECS.to_string());
    let processed = Mount::tmpfs(&d.processed(), "16m");
    let p = Input::new("p.csv", 0, 5000, |i| i % 100 == 99);
    let q = Input::new("q.csv", 100_000, 2000, |_| false);
    let files = [&p, &q];
    let started = Instant::now();
    let read_only = "Read-only file system";

    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "the daemon leads", || d.log().contains("leading: this daemon ingests the folder"));
    processed.remount("ro");
    for f in files {
        d.drop_file(&f.name, f.content().as_bytes());
    }
    wait_until(LIMIT, "both files done", || is_done(&db, "p.csv") && is_done(&db, "q.csv"));
    wait_until(LIMIT, "the moves failed twice each", || {
        ["p.csv", "q.csv"].iter().all(|name| {
            d.log()
                .lines()
                .filter(|l| l.contains("after-commit disk work failed") && l.contains(read_only) && l.contains(name))
                .count()
                >= 2
        })
    });
    assert_alive(&mut child, &d, "while processed was read-only");
    assert_committed_exactly(&db, &d, &files, false);
    for f in files {
        assert!(path_exists(&d.incoming().join(&f.name)), "{} left incoming", f.name);
    }
    assert_eq!(names_in(&d.processed()), Vec::<String>::new());
    // The rejects file does not depend on the move.
    assert_rejects_file(&d, &p);

    // Not read again: rescans (every 0.5 s here) leave the done identities
    // alone while the move is retried.
    let snapshot = db.identities();
    let events = db.scalar("SELECT count(*) FROM ecommerce_events");
    let failures = disk_failures(&d, read_only);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(db.identities(), snapshot, "a done file was read again");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), events);
    assert!(disk_failures(&d, read_only) > failures, "the move is not retried");

    // SIGTERM: the drain gives up on the moves at its deadline (exit 1).
    assert_eq!(stop(&d, &mut child, DRAIN_SECS), Some(1), "log:\n{}", d.log());
    assert!(d.log().contains("drain deadline passed"), "log:\n{}", d.log());
    // A start while processed is still read-only stops at the folder check.
    let mut child = Running(d.spawn(&[]));
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| panic!("no exit; log:\n{}", d.log()));
    assert_eq!(status.code(), Some(2), "log:\n{}", d.log());
    assert!(d.log().contains("paths.processed"), "log:\n{}", d.log());
    assert_eq!(db.identities(), snapshot);
    for f in files {
        assert!(path_exists(&d.incoming().join(&f.name)), "{} left incoming", f.name);
    }

    // Writable: the next daemon finds both identities done and only moves
    // the files.
    processed.remount("rw");
    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "both files moved once processed is writable", || {
        files.iter().all(|f| path_exists(&d.processed().join(&f.name)) && !path_exists(&d.incoming().join(&f.name)))
    });
    assert_eq!(names_in(&d.processed()), ["p.csv", "q.csv"], "no temp file left");
    assert_eq!(names_in(&d.incoming()), Vec::<String>::new());
    assert_eq!(db.identities(), snapshot, "a done file was read again after the restart");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), events);
    assert_committed_exactly(&db, &d, &files, true);
    assert_eq!(stop(&d, &mut child, DRAIN_SECS), Some(0), "log:\n{}", d.log());
    println!("{TEST}: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// `chattr +i` on a file; `chattr -i` when dropped, so a failing test
/// leaves nothing its temp folder cannot remove.
struct Immutable(PathBuf);

impl Immutable {
    /// None when the file system has no immutable flag.
    fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").arg(path).output().is_ok_and(|o| o.status.success());
        ok.then(|| Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// F19: an immutable source file (`chattr +i`: the rename fails with
/// EPERM) is read and committed once; the move fails and is retried, the
/// file is not read again; once mutable it is moved intact.
#[test]
fn immutable_source_file_is_moved_once_mutable() {
    const TEST: &str = "immutable_source_file_is_moved_once_mutable";
    if !root_enabled(TEST) {
        return;
    }
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    let f = Input::new("i.csv", 0, 3000, |i| i % 1000 == 999);
    d.drop_file(&f.name, f.content().as_bytes());
    let Some(immutable) = Immutable::set(&d.incoming().join(&f.name)) else {
        println!("{TEST}: skipped: chattr +i does not work on {}", d.incoming().display());
        return;
    };
    let started = Instant::now();
    let mut child = Running(d.spawn(&[]));
    wait_until(LIMIT, "i.csv done", || is_done(&db, "i.csv"));
    wait_until(LIMIT, "the move failed three times", || disk_failures(&d, "Operation not permitted") >= 3);
    assert_alive(&mut child, &d, "while the source was immutable");
    assert_committed_exactly(&db, &d, &[&f], false);
    assert!(path_exists(&d.incoming().join(&f.name)));
    assert_eq!(names_in(&d.processed()), Vec::<String>::new(), "nothing half moved");
    let snapshot = db.identities();

    drop(immutable);
    wait_until(LIMIT, "i.csv moved once mutable", || {
        path_exists(&d.processed().join(&f.name)) && !path_exists(&d.incoming().join(&f.name))
    });
    assert_eq!(db.identities(), snapshot, "read again");
    assert_committed_exactly(&db, &d, &[&f], true);
    assert_eq!(stop(&d, &mut child, 20), Some(0), "log:\n{}", d.log());
    println!("{TEST}: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// P11: the events table lives in a tablespace on a 12 MB ext4, and the
/// files hold more than fits. Batches fail with 53100 (disk full): they are
/// retried, the daemon stays up and says it is not ready, no row is
/// rejected for it, no file is done with partial counts, nothing is counted
/// against a file. With the table moved back to a roomy tablespace, the
/// run ends exactly.
#[test]
fn database_disk_full_is_retried_not_rejected() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const TEST: &str = "database_disk_full_is_retried_not_rejected";
    if !root_enabled(TEST) {
        return;
    }
    const DRAIN_SECS: u64 = 20;
    // The small file system first: dropped after the cluster, which keeps
    // files open in it until it stops.
    let space = tempfile::Builder::new().prefix("small-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(space.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = space.path().join("ext4.img");
    let mnt = space.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run("truncate", &["-s", "12M", path_str(&image)]);
    run("mkfs.ext4", &["-q", "-F", path_str(&image)]);
    let _small = Mount::image(&image, &mnt);
    let pg = PrivateDb::new();
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
    let files: Vec<Input> =
        (0..4).map(|k| Input::new(&format!("f{k}.csv"), (k + 1) * 1_000_000, 25_000, |i| i % 5000 == 4999)).collect();
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
        assert_alive(&mut child, &d, "while the tablespace was full");
        let now = db.files();
        for (name, f) in &now {
            assert!(f.adds_up(), "{name}: {f:?}");
            if f.state == "done" {
                assert_eq!(counts(f), by_name(name).oracle(), "{name} done with partial counts: {f:?}");
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
    assert_eq!(stop(&d, &mut child, DRAIN_SECS), Some(0), "log:\n{}", d.log());
    assert_committed_exactly(&db, &d, &files.iter().collect::<Vec<_>>(), true);
    println!(
        "{TEST}: {committed} of {total} rows fit, {refused} batches refused with 53100, then done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
