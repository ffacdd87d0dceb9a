//! End-to-end benchmark: `cargo bench --bench e2e`.
//!
//! Starts its own PostgreSQL (the embedded helper, under target/bench-pg),
//! generates the data, and in the same run measures:
//! 1. the baseline: `psql \copy` of the same CSV files into a copy of
//!    ecommerce_events (same primary key and indexes);
//! 2. `ingestd run --until-idle` on those files (clean data);
//! 3. the same with 5 % bad rows and 5 % duplicates;
//! and prints rows/s, the ratio to the baseline, and ingestd's peak RSS.
//! Machines are noisy: compare ratios, not absolute numbers.
//!
//! Knobs (environment): BENCH_FILES (20), BENCH_ROWS (50000 per file),
//! plus any INGESTD_* setting, passed on to the daemon.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ingestd::actors::generator::{GenSpec, RowMaker};
use ingestd::db::embedded::EmbeddedPg;

const BIN: &str = env!("CARGO_BIN_EXE_ingestd");
const COLUMNS: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]).output().expect("psql");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn generate(dir: &Path, files: u64, rows: u64, bad: f64, dup: f64) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut maker = RowMaker::new(Some(42));
    let spec = GenSpec { rows, bad_frac: bad, dup_frac: dup };
    (0..files)
        .map(|i| {
            let name = format!("bench_{i:04}.csv");
            maker.write_file(dir, &name, &spec).unwrap();
            dir.join(name)
        })
        .collect()
}

/// Runs the daemon to idle on a copy of `files`; returns (seconds, peak RSS KiB).
fn run_ingestd(url: &str, work: &Path, files: &[PathBuf]) -> (f64, i64) {
    let _ = std::fs::remove_dir_all(work);
    let incoming = work.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    for f in files {
        std::fs::hard_link(f, incoming.join(f.file_name().unwrap())).unwrap();
    }
    let start = Instant::now();
    let child = Command::new(BIN)
        .args(["run", "--until-idle"])
        .current_dir(work)
        .env("DATABASE_URL", url)
        .env("INGESTD_PATHS__INCOMING", &incoming)
        .env("INGESTD_PATHS__PROCESSED", work.join("processed"))
        .env("INGESTD_PATHS__BAD_RECORDS", work.join("bad_records"))
        .env("INGESTD_HTTP__LISTEN", "")
        .env("INGESTD_PIPELINE__STABLE_FOR_MS", "0")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn ingestd");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let secs = start.elapsed().as_secs_f64();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "ingestd failed: status {status}");
    (secs, usage.ru_maxrss)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let files = env_u64("BENCH_FILES", 20);
    let rows = env_u64("BENCH_ROWS", 50_000);
    let total = files * rows;
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let root = target.join("bench-pg");
    let work = target.join("bench-work");
    let mut pg = EmbeddedPg::start(&root).expect("embedded PostgreSQL");
    let admin = pg.url("postgres");
    psql(&admin, "DROP DATABASE IF EXISTS bench");
    psql(&admin, "CREATE DATABASE bench");
    let url = pg.url("bench");
    let out = Command::new(BIN).arg("migrate").env("DATABASE_URL", &url).env("RUST_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    println!("machine: {} cores; PostgreSQL {}; {} files x {} rows", num_cpus(), pg_version(&url), files, rows);
    let clean = generate(&work.join("data-clean"), files, rows, 0.0, 0.0);
    let dirty = generate(&work.join("data-dirty"), files, rows, 0.05, 0.05);

    // Baseline: psql \copy of the same files into a copy of the table.
    psql(
        &url,
        "DROP TABLE IF EXISTS copy_baseline; CREATE TABLE copy_baseline (LIKE ecommerce_events INCLUDING ALL); \
         ALTER TABLE copy_baseline ALTER source_file DROP NOT NULL, ALTER source_line DROP NOT NULL",
    );
    let start = Instant::now();
    for f in &clean {
        psql(&url, &format!("\\copy copy_baseline ({COLUMNS}) FROM '{}' CSV HEADER", f.display()));
    }
    let copy_secs = start.elapsed().as_secs_f64();
    let copy_rate = total as f64 / copy_secs;
    println!("psql \\copy (baseline)      {total:>9} rows {copy_secs:>7.2} s {copy_rate:>10.0} rows/s");

    psql(&url, "TRUNCATE ecommerce_events, ingest_rejects, ingest_files");
    let (secs, rss) = run_ingestd(&url, &work.join("run-clean"), &clean);
    let rate = total as f64 / secs;
    println!(
        "ingestd clean             {total:>9} rows {secs:>7.2} s {rate:>10.0} rows/s  ratio {:.2}x  peak RSS {:.1} MiB",
        rate / copy_rate,
        rss as f64 / 1024.0
    );

    psql(&url, "TRUNCATE ecommerce_events, ingest_rejects, ingest_files");
    let (secs2, rss2) = run_ingestd(&url, &work.join("run-dirty"), &dirty);
    let rate2 = total as f64 / secs2;
    println!(
        "ingestd 5% bad + 5% dup   {total:>9} rows {secs2:>7.2} s {rate2:>10.0} rows/s  ratio {:.2}x  peak RSS {:.1} MiB  ({:.0}% of clean)",
        rate2 / copy_rate,
        rss2 as f64 / 1024.0,
        100.0 * rate2 / rate
    );
    let _ = std::fs::remove_dir_all(&work);
    let _ = pg.stop();
    std::thread::sleep(Duration::from_millis(10));
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn pg_version(url: &str) -> String {
    let out = Command::new("psql").args([url, "-qAtc", "SHOW server_version"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
