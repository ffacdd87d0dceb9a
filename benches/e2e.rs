//! End-to-end benchmark: `cargo bench --bench e2e`.
//!
//! Starts its own PostgreSQL (the embedded helper, under target/bench-pg),
//! generates the data, and in the same run measures:
//!
//! 1. the baseline, `psql \copy` of the CSV files into a copy of
//!    ecommerce_events (same primary key and indexes);
//! 2. `ingestd run --until-idle` on the same files, clean;
//! 3. the same with 5 % bad rows and 5 % duplicates;
//! 4. latency: the daemon idle, one 100-row file renamed into the folder
//!    every 100 ms, time from rename to the file being done;
//! 5. scaling: 1 M rows as 10 files of 100 000 rows, and as 10 000 files of
//!    100 rows;
//! 6. a backlog: 100 000 files of 10 rows waiting at start (peak RSS);
//! 7. start-up with 100 000 finished files recorded in ingest_files;
//! 8. a declared pipeline: seed 004's transactions
//!    (config/pipelines/transactions.toml: derived columns, two rollups, a
//!    view) on 1 M clean rows in 20 files made by `ingestd generate
//!    --pipeline`, against `psql \copy` of the same files into a plain
//!    table with the same key and indexes.
//!
//! It prints rows/s, ratios to the baseline, ingestd's peak RSS and CPU
//! time, and latency percentiles. Every measured run starts after a
//! database CHECKPOINT and a `sync`. Machines are noisy: compare ratios, not
//! absolute numbers.
//!
//! Knobs (environment): BENCH_FILES (20) and BENCH_ROWS (50000 per file) for
//! 1-3 and 8; BENCH_LATENCY_SECS (30); BENCH_BACKLOG_FILES (100000);
//! BENCH_SKIP (comma list of: dirty, latency, scaling, backlog, startup,
//! pipeline); BENCH_BASELINE_BIN: another ingestd binary (an earlier
//! commit's) run on the same data in 2 and 3 too, for a before/after in the
//! same run; any INGESTD_* setting is passed on to the daemon.

// Children are reaped by `wait4` in `wait_rss` (after their peak RSS is
// read), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use ingestd::db::embedded::EmbeddedPg;
use ingestd::generate::{FileMaker, GenSpec, RowMaker};

const BIN: &str = env!("CARGO_BIN_EXE_ingestd");
const COLUMNS: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn skipped(section: &str) -> bool {
    std::env::var("BENCH_SKIP").unwrap_or_default().split(',').any(|s| s.trim() == section)
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]).output().expect("psql");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Empty tables, and a checkpoint: every measured run starts with no dirty
/// pages to flush and the same full-page-write state.
fn reset(url: &str) {
    psql(url, "TRUNCATE ecommerce_events, ingest_rejects, ingest_files");
    psql(url, "CHECKPOINT");
}

/// Writes out the page cache's dirty data (the input files just generated
/// or linked): otherwise the kernel flushes it during the measured run,
/// competing with the database's WAL flushes, and more so for 10 000 files.
fn sync_disks() {
    assert!(Command::new("sync").status().expect("sync").success());
}

fn generate(dir: &Path, files: u64, rows: u64, bad: f64, dup: f64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut maker = RowMaker::new(Some(42));
    let spec = GenSpec { rows, bad_frac: bad, dup_frac: dup };
    (0..files)
        .map(|i| {
            let name = format!("bench_{i:05}.csv");
            maker.write_file(dir, &name, &spec).unwrap();
            dir.join(name)
        })
        .collect()
}

fn daemon(url: &str, work: &Path, args: &[&str]) -> Child {
    daemon_of(BIN, url, work, args)
}

fn daemon_of(bin: &str, url: &str, work: &Path, args: &[&str]) -> Child {
    let incoming = work.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    Command::new(bin)
        .arg("run")
        .args(args)
        .current_dir(work)
        .env("DATABASE_URL", url)
        .env("INGESTD_PATHS__INCOMING", &incoming)
        .env("INGESTD_PATHS__PROCESSED", work.join("processed"))
        .env("INGESTD_PATHS__BAD_RECORDS", work.join("bad_records"))
        .env("INGESTD_HTTP__LISTEN", "")
        .env("INGESTD_PIPELINE__STABLE_FOR_MS", "0")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn ingestd")
}

/// What a daemon run used: peak RSS (KiB) and CPU time (user + system).
struct Usage {
    peak_kib: i64,
    cpu_secs: f64,
}

impl Usage {
    fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// Waits for the child; returns its peak RSS — `VmHWM` of its own address
/// space, read until it exits (wait4's ru_maxrss would also count this
/// process's memory at fork time, before exec) — and its CPU time.
fn wait_rss(child: &Child) -> Usage {
    let mut peak = 0i64;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        let mut status = 0;
        // SAFETY: a zeroed rusage is valid; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, libc::WNOHANG, &mut ru) };
        if pid == child.id() as i32 {
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "ingestd failed: status {status}");
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return Usage { peak_kib: peak, cpu_secs: secs(ru.ru_utime) + secs(ru.ru_stime) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the daemon to idle on a copy of `files`; returns seconds and usage.
fn run_ingestd(url: &str, work: &Path, files: &[PathBuf]) -> (f64, Usage) {
    run_bin(BIN, url, work, "incoming", files, &["--until-idle"])
}

/// Runs `bin` to idle with `args`, the files linked into `work/incoming_dir`.
fn run_bin(bin: &str, url: &str, work: &Path, incoming_dir: &str, files: &[PathBuf], args: &[&str]) -> (f64, Usage) {
    let _ = std::fs::remove_dir_all(work);
    let incoming = work.join(incoming_dir);
    std::fs::create_dir_all(&incoming).unwrap();
    for f in files {
        std::fs::hard_link(f, incoming.join(f.file_name().unwrap())).unwrap();
    }
    sync_disks();
    let start = Instant::now();
    let child = daemon_of(bin, url, work, args);
    let used = wait_rss(&child);
    (start.elapsed().as_secs_f64(), used)
}

fn main() {
    let files = env_u64("BENCH_FILES", 20);
    let rows = env_u64("BENCH_ROWS", 50_000);
    let total = files * rows;
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let root = target.join("bench-pg");
    let work = target.join("bench-work");
    let _ = std::fs::remove_dir_all(&work);
    let mut pg = EmbeddedPg::start(&root).expect("embedded PostgreSQL");
    let admin = pg.url("postgres");
    psql(&admin, "DROP DATABASE IF EXISTS bench");
    psql(&admin, "CREATE DATABASE bench");
    let url = pg.url("bench");
    let out = Command::new(BIN).arg("migrate").env("DATABASE_URL", &url).env("RUST_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    println!(
        "machine: {} cores; PostgreSQL {}; fsync {}, synchronous_commit {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        psql(&url, "SHOW server_version"),
        psql(&url, "SHOW fsync"),
        psql(&url, "SHOW synchronous_commit"),
    );
    println!("throughput: {files} files x {rows} rows");
    let clean = generate(&work.join("data-clean"), files, rows, 0.0, 0.0);

    // 1. Baseline: psql \copy of the same files into a copy of the table.
    psql(
        &url,
        "DROP TABLE IF EXISTS copy_baseline; CREATE TABLE copy_baseline (LIKE ecommerce_events INCLUDING ALL); \
         ALTER TABLE copy_baseline ALTER source_file DROP NOT NULL, ALTER source_line DROP NOT NULL",
    );
    psql(&url, "CHECKPOINT");
    sync_disks();
    let start = Instant::now();
    for f in &clean {
        psql(&url, &format!("\\copy copy_baseline ({COLUMNS}) FROM '{}' CSV HEADER", f.display()));
    }
    let copy_secs = start.elapsed().as_secs_f64();
    let copy_rate = total as f64 / copy_secs;
    println!("  psql \\copy (baseline)     {total:>9} rows {copy_secs:>7.2} s {copy_rate:>9.0} rows/s");
    psql(&url, "DROP TABLE copy_baseline");

    // 2. Clean.
    reset(&url);
    let (secs, used) = run_ingestd(&url, &work.join("run-clean"), &clean);
    let rate = total as f64 / secs;
    println!(
        "  ingestd clean             {total:>9} rows {secs:>7.2} s {rate:>9.0} rows/s  {:.2}x baseline  peak RSS {:.1} MiB  CPU {:.2} s",
        rate / copy_rate,
        used.peak_mib(),
        used.cpu_secs
    );
    let previous = std::env::var("BENCH_BASELINE_BIN").ok();
    if let Some(bin) = &previous {
        reset(&url);
        let (secs, used) = run_bin(bin, &url, &work.join("run-clean-previous"), "incoming", &clean, &["--until-idle"]);
        let before = total as f64 / secs;
        println!(
            "  previous binary, clean    {total:>9} rows {secs:>7.2} s {before:>9.0} rows/s  {:.2}x baseline  peak RSS {:.1} MiB  CPU {:.2} s  (this binary: {:.0}% of it)",
            before / copy_rate,
            used.peak_mib(),
            used.cpu_secs,
            100.0 * rate / before
        );
    }

    // 3. Dirty.
    if !skipped("dirty") {
        let dirty = generate(&work.join("data-dirty"), files, rows, 0.05, 0.05);
        reset(&url);
        let (secs2, used2) = run_ingestd(&url, &work.join("run-dirty"), &dirty);
        let rate2 = total as f64 / secs2;
        println!(
            "  ingestd 5% bad + 5% dup   {total:>9} rows {secs2:>7.2} s {rate2:>9.0} rows/s  {:.2}x baseline  peak RSS {:.1} MiB  CPU {:.2} s  ({:.0}% of clean)",
            rate2 / copy_rate,
            used2.peak_mib(),
            used2.cpu_secs,
            100.0 * rate2 / rate
        );
        if let Some(bin) = &previous {
            reset(&url);
            let (secs, used) =
                run_bin(bin, &url, &work.join("run-dirty-previous"), "incoming", &dirty, &["--until-idle"]);
            let before = total as f64 / secs;
            println!(
                "  previous binary, dirty    {total:>9} rows {secs:>7.2} s {before:>9.0} rows/s  {:.2}x baseline  peak RSS {:.1} MiB  CPU {:.2} s  (this binary: {:.0}% of it)",
                before / copy_rate,
                used.peak_mib(),
                used.cpu_secs,
                100.0 * rate2 / before
            );
        }
    }

    // 4. Latency.
    if !skipped("latency") {
        reset(&url);
        latency(&url, &work.join("run-latency"), env_u64("BENCH_LATENCY_SECS", 30));
    }

    // 5. Scaling.
    if !skipped("scaling") {
        println!("scaling: 1 M rows");
        let mut rates = Vec::new();
        for (n, r) in [(10u64, 100_000u64), (10_000, 100)] {
            let data = generate(&work.join(format!("data-{n}")), n, r, 0.0, 0.0);
            reset(&url);
            let (secs, used) = run_ingestd(&url, &work.join(format!("run-{n}")), &data);
            let rate = (n * r) as f64 / secs;
            rates.push(rate);
            println!(
                "  {n:>6} files x {r:>6} rows  {secs:>7.2} s {rate:>9.0} rows/s  peak RSS {:.1} MiB  CPU {:.2} s",
                used.peak_mib(),
                used.cpu_secs
            );
            let _ = std::fs::remove_dir_all(work.join(format!("data-{n}")));
        }
        println!("  small files / big files: {:.2}", rates[1] / rates[0]);
    }

    // 6. A backlog: 100 000 small files waiting at start (memory must not
    // grow with it).
    if !skipped("backlog") {
        let n = env_u64("BENCH_BACKLOG_FILES", 100_000);
        let data = generate(&work.join("data-backlog"), n, 10, 0.0, 0.0);
        reset(&url);
        let (secs, used) = run_ingestd(&url, &work.join("run-backlog"), &data);
        println!(
            "backlog: {n} files x 10 rows waiting at start  {secs:>7.2} s {:>9.0} rows/s {:>7.0} files/s  peak RSS {:.1} MiB  CPU {:.2} s",
            (n * 10) as f64 / secs,
            n as f64 / secs,
            used.peak_mib(),
            used.cpu_secs
        );
        let _ = std::fs::remove_dir_all(work.join("data-backlog"));
    }

    // 7. Start-up with 100 000 finished files on record.
    if !skipped("startup") {
        reset(&url);
        psql(
            &url,
            "INSERT INTO ingest_files (path, file_name, fingerprint, size, state, finished_at) \
             SELECT 'old/f' || i || '.csv', 'f' || i || '.csv', i::text, 1, 'done', now() \
             FROM generate_series(1, 100000) i",
        );
        let w = work.join("run-startup");
        let _ = std::fs::remove_dir_all(&w);
        let start = Instant::now();
        let child = daemon(&url, &w, &["--until-idle"]);
        let used = wait_rss(&child);
        println!(
            "start-up with 100 000 finished files on record: {:.2} s to idle and exit  peak RSS {:.1} MiB",
            start.elapsed().as_secs_f64(),
            used.peak_mib()
        );
    }

    // 8. A declared pipeline with derived columns, rollups and a view.
    if !skipped("pipeline") {
        pipeline(&url, &work, files, rows);
    }

    let _ = std::fs::remove_dir_all(&work);
    let _ = pg.stop();
}

/// Seed 004's transactions pipeline against `psql \copy` of the same files
/// into a plain table with the same columns, key and indexes.
fn pipeline(url: &str, work: &Path, files: u64, rows: u64) {
    let decl = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/transactions.toml");
    let data = work.join("data-transactions");
    std::fs::create_dir_all(&data).unwrap();
    let out = Command::new(BIN)
        .args(["generate", "--pipeline", decl.to_str().unwrap(), "--out", data.to_str().unwrap()])
        .args(["--files", &files.to_string(), "--rows", &rows.to_string(), "--seed", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    inputs.sort();
    let total = files * rows;
    let columns = "transaction_id,user_id,product_id,product_category,amount,quantity,payment_method,status,\
                   event_time,country_code,discount_percent,customer_segment";
    println!("pipeline: seed 004's transactions, {files} files x {rows} rows (5 derived columns, 2 rollups, 3 views)");
    psql(
        url,
        "DROP TABLE IF EXISTS transactions_copy; CREATE TABLE transactions_copy (transaction_id text PRIMARY KEY, \
         user_id text NOT NULL, product_id text NOT NULL, product_category text, amount numeric(12,2) NOT NULL, \
         quantity integer, payment_method text, status text NOT NULL, event_time timestamptz NOT NULL, \
         country_code text, discount_percent numeric(5,2), customer_segment text); \
         CREATE INDEX ON transactions_copy (user_id); CREATE INDEX ON transactions_copy USING brin (event_time); \
         CREATE INDEX ON transactions_copy (product_category)",
    );
    psql(url, "CHECKPOINT");
    sync_disks();
    let start = Instant::now();
    for f in &inputs {
        psql(url, &format!("\\copy transactions_copy ({columns}) FROM '{}' CSV HEADER", f.display()));
    }
    let copy_secs = start.elapsed().as_secs_f64();
    let copy_rate = total as f64 / copy_secs;
    println!("  psql \\copy (baseline)     {total:>9} rows {copy_secs:>7.2} s {copy_rate:>9.0} rows/s");
    psql(url, "DROP TABLE transactions_copy");
    psql(url, "DROP TABLE IF EXISTS transactions, category_totals, category_hourly CASCADE");
    reset(url);
    let (secs, used) = run_bin(
        BIN,
        url,
        &work.join("run-transactions"),
        "data/transactions/incoming",
        &inputs,
        &["--until-idle", "--pipeline", decl.to_str().unwrap()],
    );
    let rate = total as f64 / secs;
    let stored: u64 = psql(url, "SELECT count(*) FROM transactions").parse().unwrap();
    assert_eq!(stored, total, "every row written");
    println!(
        "  ingestd transactions      {total:>9} rows {secs:>7.2} s {rate:>9.0} rows/s  {:.2}x baseline  peak RSS {:.1} MiB  CPU {:.2} s",
        rate / copy_rate,
        used.peak_mib(),
        used.cpu_secs
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// One 100-row file renamed into the folder every 100 ms for `secs`
/// seconds; latency = file finished (`ingest_files.finished_at`, after its
/// rows are committed) minus the rename.
fn latency(url: &str, work: &Path, secs: u64) {
    let _ = std::fs::remove_dir_all(work);
    let staging = work.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let incoming = work.join("incoming");
    let mut child = daemon(url, work, &[]);
    // Let it start and go idle.
    std::thread::sleep(Duration::from_secs(2));
    let mut maker = RowMaker::new(Some(7));
    let spec = GenSpec { rows: 100, bad_frac: 0.0, dup_frac: 0.0 };
    let mut renamed = Vec::new();
    let count = secs * 10;
    let start = Instant::now();
    for i in 0..count {
        let name = format!("lat_{i:05}.csv");
        maker.write_file(&staging, &name, &spec).unwrap();
        // Same file system: the rename is atomic, as producers should do.
        let at = SystemTime::now();
        std::fs::rename(staging.join(&name), incoming.join(&name)).unwrap();
        renamed.push((name, at));
        let next = start + Duration::from_millis(100 * (i + 1));
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Wait for the last file, then stop the daemon.
    let deadline = Instant::now() + Duration::from_secs(60);
    while psql(url, "SELECT count(*) FROM ingest_files WHERE state = 'done'") != count.to_string() {
        assert!(Instant::now() < deadline, "latency files not all done");
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let used = wait_rss(&child);
    let _ = child.try_wait();
    let done: std::collections::HashMap<String, f64> =
        psql(url, "SELECT file_name || ' ' || extract(epoch FROM finished_at) FROM ingest_files WHERE state = 'done'")
            .lines()
            .filter_map(|l| {
                let (n, t) = l.split_once(' ')?;
                Some((n.to_owned(), t.parse().ok()?))
            })
            .collect();
    let mut ms: Vec<f64> = renamed
        .iter()
        .map(|(n, at)| {
            let at = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
            (done[n] - at) * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "latency: {count} files of 100 rows, one per 100 ms; rename -> file done: median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms  peak RSS {:.1} MiB",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
        used.peak_mib()
    );
}
