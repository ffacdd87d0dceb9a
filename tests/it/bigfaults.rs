//! A big file (faults.md F13): streamed with bounded memory, checkpointed
//! at every batch, so a SIGKILL near its end resumes there, not at 0.
//!
//! The size comes from `INGESTD_IT_BIG_MB` (default 150, so the debug build
//! in CI stays fast); `INGESTD_IT_BIG_MB=5120` is the 5 GB run
//! (about 37 M rows; needs about 5 GB free in the temp folder and a long
//! time in a debug build: use `cargo test --release`).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

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
