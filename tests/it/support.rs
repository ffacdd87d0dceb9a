//! Test harness: a real PostgreSQL (the embedded helper, or DATABASE_URL),
//! a fresh database per test, the real binary in a temp folder, and polling
//! with deadlines instead of sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ingestd::db::embedded::EmbeddedPg;

pub const BIN: &str = env!("CARGO_BIN_EXE_ingestd");
pub const HEADER: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";

/// Admin URL of the cluster all tests share (one database per test).
fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-pg");
        let pg = EmbeddedPg::start(&root).expect("embedded PostgreSQL for the tests");
        let url = pg.url("postgres");
        // The cluster outlives this process on purpose: the next run reuses
        // it, and .ci/run stops it.
        std::mem::forget(pg);
        url
    })
}

pub struct TestDb {
    pub url: String,
    /// The database this value created in the shared cluster, dropped with
    /// it; `None` for a handle on someone else's database (`TestDb::at`).
    owned: Option<String>,
}

/// Each test's database goes with it (a big-file run would otherwise leave
/// gigabytes in the shared cluster); FORCE ends sessions a killed daemon
/// may have left.
impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = &self.owned else { return };
        if let Ok(mut admin) = postgres::Client::connect(admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

impl TestDb {
    pub fn new() -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("it_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(admin_url(), postgres::NoTls).expect("connect admin");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) if !base[i + 1..].contains('@') => format!("{}/{}", &base[..i], name),
            _ => format!("{base}/{name}"),
        };
        TestDb { url, owned: Some(name) }
    }

    /// A handle on a database that is not the shared cluster's (e.g. a
    /// `PrivateDb`'s): not dropped with the handle.
    pub fn at(url: String) -> TestDb {
        TestDb { url, owned: None }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect test db")
    }

    pub fn scalar(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    /// (rows_total, written, duplicate, rejected, state) per file name.
    pub fn files(&self) -> BTreeMap<String, FileRow> {
        file_rows(&self.client().query(FILES_SQL, &[]).unwrap())
    }

    /// (file, line, reason) of every reject, sorted.
    pub fn rejects(&self) -> Vec<(String, i64, String)> {
        self.client()
            .query("SELECT source_file, source_line, reason FROM ingest_rejects ORDER BY 1, 2", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// (event_id, file, line) of every stored event, in the table's order
    /// (unsorted: a caller that counts copies sees them all).
    pub fn stored(&self) -> Vec<(String, String, i64)> {
        self.client()
            .query("SELECT event_id::text, source_file, source_line FROM ecommerce_events", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// The migrated schema exists (the daemon applied it).
    pub fn has_schema(&self) -> bool {
        self.client()
            .query_one("SELECT to_regclass('ingest_files') IS NOT NULL", &[])
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
    }
}

/// `ingest_files` as `file_rows` reads it.
pub const FILES_SQL: &str = "SELECT file_name, rows_total, rows_written, rows_duplicate, rows_rejected, state, \
    committed_offset FROM ingest_files";

/// The rows of `FILES_SQL`, per file name.
pub fn file_rows(rows: &[postgres::Row]) -> BTreeMap<String, FileRow> {
    rows.iter()
        .map(|r| {
            let row = FileRow {
                rows: r.get(1),
                written: r.get(2),
                duplicate: r.get(3),
                rejected: r.get(4),
                state: r.get(5),
                offset: r.get(6),
            };
            (r.get(0), row)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub rows: i64,
    pub written: i64,
    pub duplicate: i64,
    pub rejected: i64,
    pub state: String,
    pub offset: i64,
}

impl FileRow {
    pub fn adds_up(&self) -> bool {
        self.rows == self.written + self.duplicate + self.rejected
    }
}

/// A folder layout for one daemon, and how to run it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Daemon {
    pub fn new(db: &TestDb) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["incoming", "processed", "bad_records"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let env = vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("INGESTD_PATHS__INCOMING".into(), dir.path().join("incoming").display().to_string()),
            ("INGESTD_PATHS__PROCESSED".into(), dir.path().join("processed").display().to_string()),
            ("INGESTD_PATHS__BAD_RECORDS".into(), dir.path().join("bad_records").display().to_string()),
            ("INGESTD_PIPELINE__STABLE_FOR_MS".into(), "50".into()),
            ("INGESTD_PIPELINE__RESCAN_INTERVAL_MS".into(), "500".into()),
            ("INGESTD_HTTP__LISTEN".into(), String::new()),
            ("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS".into(), "10".into()),
            ("RUST_LOG".into(), "info,tokio_postgres=warn,actix_server=warn".into()),
        ];
        Daemon { dir, env }
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn incoming(&self) -> PathBuf {
        self.dir.path().join("incoming")
    }
    pub fn processed(&self) -> PathBuf {
        self.dir.path().join("processed")
    }
    pub fn bad_records(&self) -> PathBuf {
        self.dir.path().join("bad_records")
    }

    /// Writes a file into incoming the way producers should: temp name, then
    /// rename.
    pub fn drop_file(&self, name: &str, content: &[u8]) {
        let tmp = self.incoming().join(format!(".{name}.part"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.incoming().join(name)).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.dir.path()).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `ingestd run [extra…]` in the background, logging to a file.
    pub fn spawn(&self, extra: &[&str]) -> Child {
        self.spawn_logging_to(extra, &self.log_path())
    }

    /// Like `spawn`, with its own log file (for several daemons at once).
    pub fn spawn_logging_to(&self, extra: &[&str], log_path: &Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        self.command(&args).stdout(Stdio::null()).stderr(log).spawn().expect("spawn ingestd")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ingestd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ingestd run --until-idle`, which must end within `limit`.
    pub fn run_until_idle(&self, limit: Duration) -> ExitStatus {
        let mut child = self.spawn(&["--until-idle"]);
        wait_exit(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("ingestd --until-idle did not finish within {limit:?}; log:\n{}", self.log())
        })
    }

    /// Runs any command to completion: (status, stdout, stderr).
    pub fn output(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = self.command(args).output().expect("run ingestd");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Polls `cond` until it holds; panics with `what` past the deadline.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

pub fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0, "kill({sig})");
}

/// A deterministic valid row.
pub fn row(n: u64) -> String {
    format!(
        "{},view,user_{n},sess_{n},prod_{},Product {n},books,{}.{:02},{},2026-01-02T03:04:05.123Z,mobile,agent",
        uuid_of(n),
        n % 100,
        n % 500 + 1,
        n % 100,
        n % 5 + 1
    )
}

/// The event_id of row `n`: the same n gives the same id.
pub fn uuid_of(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A file of `rows` valid rows numbered from `first`.
pub fn valid_file(first: u64, rows: u64) -> String {
    let mut s = String::with_capacity(rows as usize * 140 + 200);
    s.push_str(HEADER);
    s.push('\n');
    for n in first..first + rows {
        s.push_str(&row(n));
        s.push('\n');
    }
    s
}

pub fn path_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Row `n` with field `idx` (0-based, in HEADER order) replaced.
pub fn with(n: u64, idx: usize, value: &str) -> String {
    with_all(n, &[(idx, value)])
}

/// Row `n` with several fields replaced.
pub fn with_all(n: u64, changes: &[(usize, &str)]) -> String {
    let mut fields: Vec<String> = row(n).split(',').map(str::to_owned).collect();
    for (idx, value) in changes {
        fields[*idx] = (*value).to_owned();
    }
    fields.join(",")
}

/// A loopback port that was free a moment ago (bound to port 0, then
/// released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.1 on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled sample in Prometheus text format.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (n, v) = line.split_once(' ')?;
        if n == name {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Resident set size of a running process, in KiB (`VmRSS` in
/// /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Names in `dir` that are temp files: hidden, `*.tmp` or `*.part`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp") || n.ends_with(".part"))
        .collect();
    names.sort();
    names
}

/// A PostgreSQL cluster of one test's own, for tests that stop, restart,
/// crash, freeze or reconfigure the server (the shared cluster of `TestDb`
/// serves tests running in parallel). It listens on the same port for its
/// whole life, so a daemon's DATABASE_URL stays valid across restarts:
/// `EmbeddedPg` picks a new port at every start, so it only creates the
/// cluster here, and `pg_ctl` runs it after that. Stopped on drop.
pub struct PrivateDb {
    /// Cluster root (`pg/data`, `pg/server.log`, the unix socket); removed
    /// on drop, after the server is stopped.
    dir: tempfile::TempDir,
    port: u16,
    bin_dir: PathBuf,
    /// (uid, gid) owning the data directory, when we are root: the server
    /// must run as its owner (initdb and pg_ctl refuse root).
    run_as: Option<(u32, u32)>,
    running: bool,
}

/// The database `PrivateDb` creates, reached as the superuser `postgres`.
pub const PRIVATE_DB: &str = ingestd::db::embedded::DEFAULT_DB;

impl PrivateDb {
    /// A new cluster holding `PRIVATE_DB`, running on a free port.
    pub fn new() -> PrivateDb {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::Builder::new().prefix("pg-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        // The server user must be able to enter it when we are root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("pg");
        // initdb, CREATE DATABASE, then stop: from here on pg_ctl runs it.
        let mut pg = EmbeddedPg::start(&root).expect("create a private PostgreSQL cluster");
        pg.stop().expect("stop the private cluster after creating it");
        drop(pg);
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let meta = std::fs::metadata(root.join("data")).unwrap();
        let mut db = PrivateDb {
            dir,
            port: free_port(),
            bin_dir: EmbeddedPg::find_bin_dir().unwrap(),
            run_as: root_user.then(|| (meta.uid(), meta.gid())),
            running: false,
        };
        db.start();
        db
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `PRIVATE_DB` as the superuser.
    pub fn url(&self) -> String {
        self.url_as("postgres")
    }

    /// URL of `PRIVATE_DB` as `role` (trust authentication: no password).
    pub fn url_as(&self, role: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{PRIVATE_DB}", self.port)
    }

    /// The `TestDb` helpers (files, rejects, scalar) on this cluster.
    pub fn db(&self) -> TestDb {
        TestDb::at(self.url())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("pg/data")
    }

    /// The server's log, for assertions and failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg/server.log")).unwrap_or_default()
    }

    /// Runs one statement as the superuser; returns its rows the way
    /// `psql -A -t` prints them (columns joined by `|`, one row a line).
    /// One statement per call: ALTER SYSTEM refuses a multi-statement string.
    pub fn psql(&self, sql: &str) -> String {
        let mut config: postgres::Config = self.url().parse().unwrap();
        // Even when the cluster's default is read-only (P10).
        config.options("-c default_transaction_read_only=off").connect_timeout(Duration::from_secs(10));
        let mut client = config.connect(postgres::NoTls).unwrap_or_else(|e| panic!("connect for {sql:?}: {e}"));
        let messages = client.simple_query(sql).unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        let rows: Vec<String> = messages
            .iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).unwrap_or("")).collect::<Vec<_>>().join("|"))
                }
                _ => None,
            })
            .collect();
        rows.join("\n")
    }

    /// `pg_ctl start` on this cluster's port (retried while the port is
    /// briefly taken by someone else).
    pub fn start(&mut self) {
        let opts = self.server_options();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_before = self.server_log().len();
            let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", &self.log_arg(), "-o", &opts]);
            if out.status.success() {
                break;
            }
            let log = self.server_log();
            if attempt < 20 && log[log_before.min(log.len())..].contains("Address already in use") {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            panic!(
                "pg_ctl start: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    /// `pg_ctl stop -m fast`: sessions are ended, the server shuts down
    /// cleanly.
    pub fn stop(&mut self) {
        self.run_ok(&["stop", "-m", "fast", "-w", "-t", "60"]);
        self.running = false;
    }

    /// `pg_ctl stop -m immediate`: a crash; the next start recovers from
    /// the WAL.
    pub fn crash(&mut self) {
        self.run_ok(&["stop", "-m", "immediate", "-w", "-t", "60"]);
        self.running = false;
    }

    /// `pg_ctl restart -m fast`, on the same port.
    pub fn restart_fast(&mut self) {
        let opts = self.server_options();
        let log = self.log_arg();
        self.run_ok(&["restart", "-m", "fast", "-w", "-t", "60", "-l", &log, "-o", &opts]);
        self.running = true;
    }

    /// A crash, then a start with crash recovery, on the same port.
    pub fn crash_and_start(&mut self) {
        self.crash();
        self.start();
    }

    fn server_options(&self) -> String {
        // pg_ctl hands -o to /bin/sh; the root path has no quotes or spaces.
        format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c shared_buffers=32MB -c max_connections=50",
            self.port,
            self.dir.path().join("pg").display()
        )
    }

    fn log_arg(&self) -> String {
        self.dir.path().join("pg/server.log").display().to_string()
    }

    fn run_ok(&self, args: &[&str]) {
        let out = self.pg_ctl(args);
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
    }

    /// `pg_ctl ARGS -D data`, as the data directory's owner when we are
    /// root, with no PG* variables from our environment.
    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bin_dir.join("pg_ctl"));
        cmd.args(args).arg("-D").arg(self.data_dir()).current_dir(self.dir.path()).stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd.output().expect("run pg_ctl")
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        if self.running {
            // Immediate: the data is thrown away with the directory.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
        }
    }
}

/// One row of `ingest_files`: a file identity (path + fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub fingerprint: String,
    pub size: i64,
    pub file: FileRow,
    pub error: Option<String>,
}

impl TestDb {
    /// Every file identity, in the order they were registered (`files()`
    /// keys by name, so it folds identities that share a name).
    pub fn identities(&self) -> Vec<Identity> {
        self.client()
            .query(
                "SELECT file_name, fingerprint, size, rows_total, rows_written, rows_duplicate, rows_rejected, \
                 state, committed_offset, error FROM ingest_files ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| Identity {
                name: r.get(0),
                fingerprint: r.get(1),
                size: r.get(2),
                file: FileRow {
                    rows: r.get(3),
                    written: r.get(4),
                    duplicate: r.get(5),
                    rejected: r.get(6),
                    state: r.get(7),
                    offset: r.get(8),
                },
                error: r.get(9),
            })
            .collect()
    }
}

impl Daemon {
    /// Starts `WRAPPER… ingestd run [extra…]` (e.g. `runuser -u USER --`),
    /// with the daemon's environment and log.
    pub fn spawn_via(&self, wrapper: &[&str], extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(BIN).arg("run").args(extra).current_dir(self.dir.path()).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn ingestd through a wrapper")
    }
}

/// The fingerprint the daemon gives a file of this content (the oracle for
/// identities): its size, then the first 12 bytes of the SHA-256 of its
/// first 64 KiB, in hex.
pub fn fingerprint_of(content: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(&content[..content.len().min(64 * 1024)]);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", content.len())
}

/// `data` gzipped (one member).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Peak resident set size of a running process so far, in KiB (`VmHWM` in
/// /proc/PID/status).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// A daemon under test: SIGCONTed and SIGKILLed when dropped before it
/// exited, so a failing test leaves no daemon behind, frozen or not (nor a
/// mount it holds busy).
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signals our own child, which has not been reaped.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Whether a test may use root mechanisms (mounts, cgroups, namespaces):
/// only with `INGESTD_IT_ROOT=1` (CI sets it) and as root; prints why not.
pub fn root_enabled(test: &str) -> bool {
    if std::env::var("INGESTD_IT_ROOT").as_deref() != Ok("1") {
        println!("{test}: skipped: needs root mechanisms; set INGESTD_IT_ROOT=1 and run as root");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("{test}: skipped: INGESTD_IT_ROOT=1 but not running as root");
        return false;
    }
    true
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A test file: `rows` valid rows numbered from `first`, with two bad rows
/// and a repeat of its first event at fixed lines.
pub struct TestFile {
    pub name: String,
    pub first: u64,
    pub rows: u64,
}

impl TestFile {
    /// Data lines in order, each with the reason it must be rejected for:
    /// an invalid_uuid row after a third of the valid rows, an out_of_range
    /// row (whose event_id is well-formed and must not be stored) after two
    /// thirds, and the first event again at the end.
    pub fn lines(&self) -> Vec<(String, Option<&'static str>)> {
        let mut lines: Vec<(String, Option<&'static str>)> = Vec::with_capacity(self.rows as usize + 3);
        for i in 0..self.rows {
            if i == self.rows / 3 {
                lines.push((with(self.first + self.rows, 0, "not-a-uuid"), Some("invalid_uuid")));
            }
            if i == 2 * self.rows / 3 {
                lines.push((with(self.first + self.rows + 1, 8, "0"), Some("out_of_range")));
            }
            lines.push((row(self.first + i), None));
        }
        lines.push((row(self.first), None));
        lines
    }

    pub fn content(&self) -> String {
        let mut s = String::with_capacity(self.rows as usize * 140 + 600);
        s.push_str(HEADER);
        s.push('\n');
        for (line, _) in self.lines() {
            s.push_str(&line);
            s.push('\n');
        }
        s
    }

    /// (file, line, reason) of every line that must be rejected (the header
    /// is line 1).
    pub fn rejects(&self) -> Vec<(String, i64, String)> {
        self.lines()
            .iter()
            .enumerate()
            .filter_map(|(i, (_, reason))| reason.map(|r| (self.name.clone(), i as i64 + 2, r.to_owned())))
            .collect()
    }

    /// (event_id, file, line) of every event that must be stored from this
    /// file: each valid row at its line; the repeat at the end is not.
    pub fn stored(&self) -> BTreeSet<(String, String, i64)> {
        let mut seen = BTreeSet::new();
        self.lines()
            .iter()
            .enumerate()
            .filter(|(_, (_, reason))| reason.is_none())
            .filter_map(|(i, (text, _))| {
                let id = text.split(',').next().unwrap().to_owned();
                seen.insert(id.clone()).then(|| (id, self.name.clone(), i as i64 + 2))
            })
            .collect()
    }

    /// (rows, written, duplicate, rejected).
    pub fn oracle(&self) -> (i64, i64, i64, i64) {
        (self.rows as i64 + 3, self.rows as i64, 1, 2)
    }
}
