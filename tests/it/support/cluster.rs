//! PostgreSQL for the tests, run by `ingestd::db::embedded` (the daemon's
//! own embedded cluster code; same location rule, so a checkout where the
//! `postgres` OS user cannot reach `target/` gets its clusters relocated
//! like the daemon's), or the server `DATABASE_URL` names.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ingestd::db::embedded::{EmbeddedPg, Settings, DEFAULT_DB};

use super::db::TestDb;

/// The cluster all tests share when `DATABASE_URL` is unset, under
/// `target/tmp/it-pg`: started by the first test that needs it (or reused
/// if it runs already), stopped when the test binary exits.
static SHARED: Mutex<Option<EmbeddedPg>> = Mutex::new(None);

/// Admin URL of the cluster all tests share (one database per test).
pub fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-pg");
        let pg = EmbeddedPg::start(&root).unwrap_or_else(|e| panic!("embedded PostgreSQL for the tests: {e}"));
        let url = pg.url("postgres");
        *SHARED.lock().unwrap() = Some(pg);
        // SAFETY: registers a function without arguments that never unwinds.
        unsafe { libc::atexit(stop_shared) };
        url
    })
}

/// At exit: stops the shared cluster if this process started it (a reused
/// one is left to its owner).
extern "C" fn stop_shared() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(mut pg) = SHARED.lock().ok().and_then(|mut guard| guard.take()) {
            let _ = pg.stop();
        }
    });
}

/// The database a `TestCluster` creates, reached as the superuser `postgres`.
pub const PRIVATE_DB: &str = DEFAULT_DB;

/// A PostgreSQL cluster of one test's own, for tests that stop, restart,
/// crash, freeze or reconfigure the server (the shared cluster serves tests
/// running in parallel). It keeps its port for its whole life, so a
/// daemon's DATABASE_URL stays valid across restarts. Crashed and removed
/// on drop.
pub struct TestCluster {
    pg: EmbeddedPg,
    /// Holds the configured cluster root (`pg/`); removed on drop.
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// A new cluster holding `PRIVATE_DB`, running on a free port.
    pub fn new() -> TestCluster {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("pg-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        // The server user must be able to enter it when we are root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Small: several run at once, beside the shared cluster.
        let settings = Settings { shared_buffers: "32MB".into(), max_connections: 50 };
        let pg = EmbeddedPg::start_with(&dir.path().join("pg"), settings)
            .unwrap_or_else(|e| panic!("a private PostgreSQL cluster: {e}"));
        TestCluster { pg, dir }
    }

    pub fn port(&self) -> u16 {
        self.pg.port()
    }

    /// URL of `PRIVATE_DB` as the superuser.
    pub fn url(&self) -> String {
        self.url_as("postgres")
    }

    /// URL of `PRIVATE_DB` as `role` (trust authentication: no password).
    pub fn url_as(&self, role: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{PRIVATE_DB}", self.port())
    }

    /// The `TestDb` helpers (files, rejects, scalar) on this cluster.
    pub fn db(&self) -> TestDb {
        TestDb::at(self.url())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.pg.data_dir().to_path_buf()
    }

    /// The server's log, for assertions and failure messages.
    pub fn server_log(&self) -> String {
        self.pg.server_log()
    }

    /// Runs one statement as the superuser; returns its rows the way
    /// `psql -A -t` prints them (columns joined by `|`, one row a line).
    /// One statement per call: ALTER SYSTEM refuses a multi-statement string.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.pg.psql(PRIVATE_DB, sql).unwrap_or_else(|e| panic!("{sql:?}: {e}"));
        out.trim_end_matches('\n').to_owned()
    }

    /// Starts the stopped (or crashed) server again, on the same port.
    pub fn start(&mut self) {
        self.pg.start_again().unwrap_or_else(|e| panic!("start: {e}\nserver log:\n{}", self.server_log()));
    }

    /// A fast shutdown: sessions are ended, the server stops cleanly.
    pub fn stop(&mut self) {
        self.pg.stop().unwrap_or_else(|e| panic!("stop: {e}\nserver log:\n{}", self.server_log()));
    }

    /// An immediate shutdown: a crash; the next start recovers from the WAL.
    pub fn crash(&mut self) {
        self.pg.crash().unwrap_or_else(|e| panic!("crash: {e}\nserver log:\n{}", self.server_log()));
    }

    /// A fast restart, on the same port.
    pub fn restart_fast(&mut self) {
        self.pg.restart_fast().unwrap_or_else(|e| panic!("restart: {e}\nserver log:\n{}", self.server_log()));
    }

    /// A crash, then a start with crash recovery, on the same port.
    pub fn crash_and_start(&mut self) {
        self.crash();
        self.start();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Immediate: the data is thrown away with the directory.
        let _ = self.pg.crash();
        // A relocated cluster (see ingestd::db::embedded) lives outside
        // `dir`: it goes too.
        let dir = std::fs::canonicalize(self.dir.path()).unwrap_or_else(|_| self.dir.path().to_path_buf());
        if !self.pg.root().starts_with(dir) {
            let _ = std::fs::remove_dir_all(self.pg.root());
        }
    }
}
