//! Start-up refuses bad settings and an unreachable database with one line
//! and a non-zero exit, before touching any file; a signal while it waits
//! for its database ends it cleanly.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn one_line_error(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ingestd: ")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0]
}

#[test]
fn bad_config_exits_2_with_one_line() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "[pipeline]\nbatch_row = 5\n", "unknown field `batch_row`"),
        ("wrong type", "[pipeline]\nbatch_rows = \"many\"\n", "invalid type"),
        ("zero batch", "[pipeline]\nbatch_rows = 0\n", "pipeline.batch_rows"),
        ("bad enum", "[pipeline]\nafter_commit = \"archive\"\n", "unknown variant `archive`"),
        ("not toml", "[pipeline\n", "config file"),
    ];
    for (what, text, want) in cases {
        let path = d.dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (status, _, stderr) = d.output(&["run", "--config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{what}: {stderr}");
        let line = one_line_error(&stderr);
        assert!(line.contains(want), "{what}: {line}");
    }
    // Missing config file named explicitly.
    let (status, _, stderr) = d.output(&["run", "--config", "/nonexistent/ingestd.toml"]);
    assert_eq!(status.code(), Some(2));
    assert!(one_line_error(&stderr).contains("cannot read config file"));
    // Same folder twice.
    let incoming = d.incoming().display().to_string();
    d.set("INGESTD_PATHS__PROCESSED", &incoming);
    let (status, _, stderr) = d.output(&["run"]);
    assert_eq!(status.code(), Some(2));
    assert!(one_line_error(&stderr).contains("must differ"), "{stderr}");
    // The incoming folder must exist.
    let mut d2 = Daemon::new(&db);
    d2.set("INGESTD_PATHS__INCOMING", "/nonexistent/incoming");
    let (status, _, stderr) = d2.output(&["check-config"]);
    assert_eq!(status.code(), Some(2));
    assert!(one_line_error(&stderr).contains("paths.incoming = /nonexistent/incoming: does not exist"), "{stderr}");
    // Environment typo.
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "lots");
    let (status, _, stderr) = d.output(&["check-config"]);
    assert_eq!(status.code(), Some(2));
    assert!(one_line_error(&stderr).contains("INGESTD_PIPELINE__BATCH_ROWS"), "{stderr}");
    assert!(!db.has_schema(), "nothing may reach the database on bad config");
}

#[test]
fn unreachable_database_exits_3_with_one_line_and_reads_nothing() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.drop_file("a.csv", valid_file(1, 3).as_bytes());
    // Port 1 on loopback: nothing listens, the connection is refused.
    d.set("DATABASE_URL", "postgres://ingest:s3cret-pw@127.0.0.1:1/nowhere");
    d.set("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS", "1");
    let started = Instant::now();
    let (status, _, stderr) = d.output(&["run"]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    let line = one_line_error(&stderr);
    assert!(line.contains("database unreachable"), "{line}");
    assert!(!stderr.contains("s3cret-pw"), "the password reached the logs:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(path_exists(&d.incoming().join("a.csv")), "no file is touched without a database");
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ingestd.toml");
    let (status, stdout, stderr) = d.output(&["check-config", "--config", shipped]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "config ok");
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
