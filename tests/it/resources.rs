//! Resources (faults.md F12-F15, C10, P8): memory stays bounded whatever
//! the input (a big file, a gzip bomb, an oversized record) and whatever
//! the database does (a stalled table fills the credit window, no more); a
//! memory cgroup limit holds, and an OOM kill is survived like SIGKILL.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);
/// The drain deadline the daemon is given: a drain that is not blocked ends
/// long before it.
const DRAIN_SECS: u64 = 20;

/// The daemon's default `pipeline.batch_rows`: every batch but a file's
/// last holds this many rows (its rows are far below `batch_bytes`).
const BATCH_ROWS: u64 = 10_000;

/// The stated memory bound.
const MAX_PEAK_KIB: u64 = 64 * 1024;

/// `VmHWM` of a live process, or None once it exited (a zombie has no
/// `VmHWM`, and `peak_rss_kib` panics on that).
fn peak_if_alive(child: &mut std::process::Child) -> Option<u64> {
    if child.try_wait().unwrap().is_some() {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    if !status.lines().any(|l| l.starts_with("VmHWM:")) {
        return None;
    }
    Some(peak_rss_kib(child.id()))
}

/// The big file's one `ingest_files` row.
fn the_file(db: &TestDb) -> Option<(FileRow, i64)> {
    if !db.has_schema() {
        return None;
    }
    let rows = db
        .client()
        .query(
            "SELECT rows_total, rows_written, rows_duplicate, rows_rejected, state, committed_offset, batches \
             FROM ingest_files",
            &[],
        )
        .unwrap();
    assert!(rows.len() <= 1, "more than one file identity: {} rows", rows.len());
    rows.first().map(|r| {
        (
            FileRow {
                rows: r.get(0),
                written: r.get(1),
                duplicate: r.get(2),
                rejected: r.get(3),
                state: r.get(4),
                offset: r.get(5),
            },
            r.get(6),
        )
    })
}

/// Waits until no session but ours is connected to the test database: a
/// COMMIT the killed daemon had sent is then finished or rolled back.
fn wait_sessions_gone(db: &TestDb) {
    wait_until(Duration::from_secs(30), "the killed daemon's sessions gone", || {
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ) == 0
    });
}

/// F13: one big file (150 MB by default, `INGESTD_IT_BIG_MB`), written
/// streaming. The daemon is SIGKILLed once its checkpoint passed 85 % of
/// the file; the next run (`--until-idle`) commits only the batches after
/// that checkpoint. Both runs stay under 64 MiB peak RSS; the end state is
/// exact: every row written once, no duplicate, no reject.
#[test]
fn big_file_constant_memory_and_resume_near_the_end() {
    const TEST: &str = "big_file_constant_memory_and_resume_near_the_end";
    let mb: u64 = std::env::var("INGESTD_IT_BIG_MB")
        .ok()
        .map(|v| v.parse().expect("INGESTD_IT_BIG_MB: a whole number of MB"))
        .unwrap_or(150);
    let target = mb * 1_000_000;
    let limit = Duration::from_secs(60 + mb / 2);
    let db = TestDb::new();
    let d = Daemon::new(&db);

    // Streaming write; the byte offset after every BATCH_ROWS rows is kept
    // (the checkpoint a batch boundary must have).
    let name = "big.csv";
    let tmp = d.incoming().join(format!(".{name}.part"));
    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).unwrap());
    let mut size = HEADER.len() as u64 + 1;
    writeln!(out, "{HEADER}").unwrap();
    let mut boundaries = vec![size];
    let mut rows = 0u64;
    while size < target {
        rows += 1;
        let line = row(rows);
        writeln!(out, "{line}").unwrap();
        size += line.len() as u64 + 1;
        if rows.is_multiple_of(BATCH_ROWS) {
            boundaries.push(size);
        }
    }
    out.into_inner().unwrap().sync_all().unwrap();
    assert_eq!(std::fs::metadata(&tmp).unwrap().len(), size);
    std::fs::rename(&tmp, d.incoming().join(name)).unwrap();
    println!("{TEST}: wrote {size} bytes, {rows} rows in {:?}", started.elapsed());
    let full_batches = rows.div_ceil(BATCH_ROWS) as i64;

    // Run 1: killed once the checkpoint passed 85 %.
    let started = Instant::now();
    let mut child = Running(d.spawn(&[]));
    let mut peak1 = 0;
    wait_until(limit, "the checkpoint past 85 % of the file", || {
        match peak_if_alive(&mut child) {
            Some(p) => peak1 = peak1.max(p),
            None => panic!("the daemon exited; log:\n{}", d.log()),
        }
        the_file(&db).is_some_and(|(f, _)| f.offset as u64 * 100 > size * 85)
    });
    if let Some(p) = peak_if_alive(&mut child) {
        peak1 = peak1.max(p);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let run1 = started.elapsed();
    wait_sessions_gone(&db);
    let (at_kill, batches_at_kill) = the_file(&db).unwrap();
    println!(
        "{TEST}: run 1: SIGKILL after {run1:?} at offset {} ({:.1} %), {} rows, {batches_at_kill} batches; peak RSS {peak1} KiB",
        at_kill.offset,
        at_kill.offset as f64 * 100.0 / size as f64,
        at_kill.rows
    );
    assert!(at_kill.offset > 0, "nothing checkpointed: {at_kill:?}");
    assert!((at_kill.offset as u64) < size, "the file finished before the kill: {at_kill:?}");
    assert!(at_kill.adds_up(), "{at_kill:?}");
    assert_eq!((at_kill.duplicate, at_kill.rejected), (0, 0), "{at_kill:?}");
    assert_ne!(at_kill.state, "done");
    assert_eq!(at_kill.rows % BATCH_ROWS as i64, 0, "not whole batches committed: {at_kill:?}");
    assert_eq!(
        boundaries[(at_kill.rows as u64 / BATCH_ROWS) as usize],
        at_kill.offset as u64,
        "the checkpoint is not the byte offset after its {} rows",
        at_kill.rows
    );
    assert_eq!(batches_at_kill, at_kill.rows / BATCH_ROWS as i64, "batches counted at the kill");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), at_kill.written, "events at the kill");

    // Run 2: resumes at the checkpoint.
    let started = Instant::now();
    let mut child = Running(d.spawn(&["--until-idle"]));
    let mut peak2 = 0;
    let mut first_seen: Option<(FileRow, i64)> = None;
    let status = loop {
        if let Some(p) = peak_if_alive(&mut child) {
            peak2 = peak2.max(p);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if first_seen.is_none() {
            first_seen = the_file(&db).filter(|(f, _)| f.rows > at_kill.rows);
        }
        assert!(started.elapsed() < limit, "run 2 not idle within {limit:?}; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(10));
    };
    let run2 = started.elapsed();
    assert!(status.success(), "run 2: {status:?}; log:\n{}", d.log());
    let (fin, batches_fin) = the_file(&db).unwrap();
    let remaining = rows - at_kill.rows as u64;
    println!(
        "{TEST}: run 2: {remaining} rows left, done in {run2:?}, {} batches; peak RSS {peak2} KiB",
        batches_fin - batches_at_kill
    );
    println!(
        "{TEST}: {size} bytes, {rows} rows; run 1 {:.0} rows/s until the kill",
        at_kill.rows as f64 / run1.as_secs_f64()
    );

    // The first commit seen after the restart continues from the checkpoint:
    // k more whole batches, not the file's start again.
    match &first_seen {
        Some((f, b)) => println!(
            "{TEST}: run 2's first commit seen: {} rows, offset {}, {} batches after the kill",
            f.rows,
            f.offset,
            b - batches_at_kill
        ),
        None => println!("{TEST}: run 2 ended before a poll saw its first commit"),
    }
    if let Some((f, b)) = &first_seen {
        let k = b - batches_at_kill;
        assert!(k >= 1, "rows grew without a batch: {f:?}, {b} batches");
        assert_eq!(f.duplicate, 0, "run 2 read committed rows again: {f:?}");
        let want_rows = (at_kill.rows as u64 + k as u64 * BATCH_ROWS).min(rows);
        assert_eq!(f.rows as u64, want_rows, "run 2's first commits ({k} batches) do not follow the checkpoint: {f:?}");
        let want_offset = boundaries.get((want_rows / BATCH_ROWS) as usize).copied().filter(|_| want_rows < rows);
        assert_eq!(
            Some(f.offset as u64).filter(|_| want_rows < rows),
            want_offset,
            "offset after run 2's first commits: {f:?}"
        );
    }
    assert_eq!(
        batches_fin - batches_at_kill,
        remaining.div_ceil(BATCH_ROWS) as i64,
        "run 2 committed the remaining {remaining} rows' batches only (the whole file is {full_batches})"
    );

    // Exact end state.
    assert_eq!(
        (fin.rows, fin.written, fin.duplicate, fin.rejected, fin.state.as_str(), fin.offset),
        (rows as i64, rows as i64, 0, 0, "done", size as i64),
        "{fin:?}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), 0, "no rejects");
    let ev = db
        .client()
        .query_one(
            "SELECT count(*), count(DISTINCT event_id), count(DISTINCT source_line), \
             coalesce(min(source_line), 0), coalesce(max(source_line), 0) FROM ecommerce_events",
            &[],
        )
        .unwrap();
    let ev: (i64, i64, i64, i64, i64) = (ev.get(0), ev.get(1), ev.get(2), ev.get(3), ev.get(4));
    let n = rows as i64;
    assert_eq!(ev, (n, n, n, 2, n + 1), "(events, ids, lines, first line, last line)");
    assert!(path_exists(&d.processed().join(name)) && !path_exists(&d.incoming().join(name)), "not moved");

    // Memory: both runs under the bound.
    assert!(peak1 > 0 && peak2 > 0, "no RSS reading: {peak1} / {peak2}");
    assert!(peak1 < MAX_PEAK_KIB, "run 1 peak RSS {peak1} KiB ≥ {MAX_PEAK_KIB} KiB");
    assert!(peak2 < MAX_PEAK_KIB, "run 2 peak RSS {peak2} KiB ≥ {MAX_PEAK_KIB} KiB");
    assert!(run2 < run1, "run 2 ({run2:?}, {remaining} rows) took longer than run 1 ({run1:?})");
}

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

    assert_eq!(db.files()[name].outcome(), (4, 3, 0, 1, "done"), "log:\n{}", d.log());
    assert_eq!(db.rejects(), vec![(name.to_owned(), 2, "malformed_csv".to_owned())]);
    let reject = db.client().query_one("SELECT raw_line, raw_truncated FROM ingest_rejects", &[]).unwrap();
    let raw: Vec<u8> = reject.get(0);
    assert_eq!(raw.len(), MAX_RECORD, "raw_line of the huge record");
    assert!(raw.iter().all(|b| *b == b'a'), "raw_line is not the record's first bytes");
    assert!(reject.get::<_, bool>(1), "raw_truncated not set");
    let want: BTreeSet<(String, String, i64)> = (0..3).map(|n| (uuid_of(n), name.to_owned(), n as i64 + 3)).collect();
    db.assert_events(&want);
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

/// F14, F15: a 10 MB field and a quote never closed, under a 4 KiB record
/// cap: one `malformed_csv` reject each at the record's first line, its raw
/// text cut at the cap and flagged; the rows around are unaffected (after
/// the unclosed quote there are none: it swallows the rest of the file).
/// Memory stays bounded.
#[test]
fn oversized_record_and_unclosed_quote_are_one_capped_reject_each() {
    const CAP: usize = 4096;
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__MAX_RECORD_BYTES", &CAP.to_string());
    let huge = with(6, 5, &"x".repeat(10 << 20));
    let mut h: Vec<String> = vec![HEADER.into()];
    h.extend((1..=5).map(row)); // lines 2-6
    h.push(huge.clone()); // line 7
    h.extend((7..=11).map(row)); // lines 8-12
    d.drop_file("h.csv", csv_text(&h).as_bytes());

    let mut u: Vec<String> = vec![HEADER.into()];
    u.extend((20..=22).map(row)); // lines 2-4
    u.push(with(23, 5, "\"never closed")); // line 5: swallows the rest
    u.extend((24..1024).map(row));
    let u = csv_text(&u);
    let swallowed = &u.as_bytes()[offset_after_lines(&u, 4)..];
    d.drop_file("u.csv", u.as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "h.csv and u.csv done", || db.is_done("h.csv") && db.is_done("u.csv"));
    let peak = peak_rss_kib(child.id());
    eprintln!("huge_record_and_unclosed_quote: peak RSS (VmHWM) {peak} KiB");
    d.stop_cleanly(&mut child, DRAIN_SECS);

    let files = db.files();
    assert_eq!(files["h.csv"].outcome(), (11, 10, 0, 1, "done"));
    assert_eq!(files["u.csv"].outcome(), (4, 3, 0, 1, "done"));
    assert_eq!(
        db.rejects(),
        vec![("h.csv".into(), 7, "malformed_csv".into()), ("u.csv".into(), 5, "malformed_csv".into())]
    );
    let (reason, detail, raw, truncated) = db.reject_at("h.csv", 7);
    assert_eq!((reason.as_str(), raw.len(), truncated), ("malformed_csv", CAP, true), "{detail}");
    assert_eq!(raw, &huge.as_bytes()[..CAP]);
    assert!(detail.contains("max_record_bytes"), "{detail}");
    let (reason, detail, raw, truncated) = db.reject_at("u.csv", 5);
    assert_eq!((reason.as_str(), raw.len(), truncated), ("malformed_csv", CAP, true), "{detail}");
    assert_eq!(raw, &swallowed[..CAP]);
    let h_lines: Vec<i64> = db.stored_lines("h.csv").iter().map(|(l, _)| *l).collect();
    assert_eq!(h_lines, [2, 3, 4, 5, 6, 8, 9, 10, 11, 12]);
    let u_lines: Vec<i64> = db.stored_lines("u.csv").iter().map(|(l, _)| *l).collect();
    assert_eq!(u_lines, [2, 3, 4]);
    // Nothing near the 10 MiB record is held: a debug build peaks at 16 to
    // 19 MiB here whatever it reads; buffering the record would pass 26 MiB.
    assert!(peak < 24 * 1024, "peak RSS {peak} KiB");
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
    let mut lock = db.lock_events_table();
    let f = TestFile::mixed("stall.csv", 0, 50_000, None);
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
    wait_until(LIMIT, "the Writer waits for the table lock", || db.lock_waiters() > 0);

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
    d.stop_cleanly(&mut child, DRAIN_SECS);

    let row = &db.files()["stall.csv"];
    let (rows, written, duplicate, rejected) = f.oracle();
    assert_eq!(
        (row.rows, row.written, row.duplicate, row.rejected, row.state.as_str()),
        (rows, written, duplicate, rejected, "done")
    );
    assert_exact(&db, &d, &[&f]);
}

fn spawn_in(d: &Daemon, cg: &MemCgroup, extra: &[&str]) -> Running {
    let wrapper = cg.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Running(d.spawn_via(&wrapper, extra))
}

/// C10: (a) under a 64 MiB cgroup limit, 300 000 rows in 6 files with the
/// default settings go through without an OOM kill (the stated memory
/// bound holds); (b) under a limit far too low, the kernel OOM-kills the
/// daemon mid-run (SIGKILL), and a run without the limit ends exactly once.
#[test]
#[ignore = "needs root: cgroup v1 memory limit"]
fn memory_limit_holds_and_oom_kill_is_survived() {
    use std::os::unix::process::ExitStatusExt;
    const TEST: &str = "memory_limit_holds_and_oom_kill_is_survived";
    require_root("cgroup v1 memory controller");
    const FILES: u64 = 6;
    const ROWS: u64 = 50_000;
    let names: Vec<String> = (0..FILES).map(|i| format!("m{i}.csv")).collect();
    let fill = |d: &Daemon| {
        for (i, name) in names.iter().enumerate() {
            d.drop_file(name, valid_file(1 + i as u64 * ROWS, ROWS).as_bytes());
        }
    };

    // (a) 64 MiB: must finish.
    let db = TestDb::new();
    let d = Daemon::new(&db);
    fill(&d);
    let cg = MemCgroup::new("ingestd_it_c10a", 64 * MIB);
    let started = Instant::now();
    let mut child = spawn_in(&d, &cg, &["--until-idle"]);
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| {
        panic!("not idle within {LIMIT:?} under 64 MiB; log:\n{}", d.log());
    });
    let (max_usage, failcnt, kills) =
        (cg.number("memory.max_usage_in_bytes"), cg.number("memory.failcnt"), cg.oom_kills());
    println!(
        "{TEST}: (a) 64 MiB limit: {} rows in {:?}; memory.max_usage_in_bytes = {max_usage} ({:.1} MiB), failcnt = {failcnt}, oom_kill = {kills}",
        FILES * ROWS,
        started.elapsed(),
        max_usage as f64 / MIB as f64
    );
    assert_eq!(status.signal(), None, "killed under 64 MiB (oom_kill = {kills}); log:\n{}", d.log());
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    assert_eq!(kills, 0, "the OOM killer ran in the 64 MiB cgroup");
    assert_all_written_once(&db, &d, &names, ROWS as i64);
    drop(child);
    drop(cg);

    // (b) far too low: the daemon starts under 64 MiB; once it committed
    // its first batch, the limit is lowered as far as the kernel can
    // reclaim (it refuses a limit below that with EBUSY). The pipeline
    // needs more than that for the batches to come: OOM kill mid-run.
    let db = TestDb::new();
    let d = Daemon::new(&db);
    fill(&d);
    let cg = MemCgroup::new("ingestd_it_c10b", 64 * MIB);
    let mut child = spawn_in(&d, &cg, &["--until-idle"]);
    wait_until(LIMIT, "the first batch committed", || {
        assert!(child.try_wait().unwrap().is_none(), "exited before its first commit; log:\n{}", d.log());
        db.has_schema() && db.committed_rows() > 0
    });
    let low = cg.shrink(MIB);
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| {
        panic!("not OOM-killed within {LIMIT:?} under {low} bytes; log:\n{}", d.log());
    });
    let kills = cg.oom_kills();
    let committed = db.committed_rows();
    println!(
        "{TEST}: (b) limit lowered to {low} bytes ({:.1} MiB) after the first commit: {status:?}, oom_kill = {kills}, {committed} rows committed before the kill",
        low as f64 / MIB as f64
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "expected an OOM kill (SIGKILL): {status:?}; log:\n{}", d.log());
    assert!(kills >= 1, "SIGKILL but the cgroup counts no OOM kill");
    drop(child);
    drop(cg);
    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    assert_all_written_once(&db, &d, &names, ROWS as i64);
}
