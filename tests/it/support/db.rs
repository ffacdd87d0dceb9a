//! A test's database, and what the daemon wrote in it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::cluster::admin_url;

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
    /// A fresh database in the shared cluster.
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
    /// `TestCluster`'s): not dropped with the handle.
    pub fn at(url: String) -> TestDb {
        TestDb { url, owned: None }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect test db")
    }

    /// A client that gives up quickly: the server may be down or frozen.
    pub fn try_client(&self) -> Option<postgres::Client> {
        let mut config: postgres::Config = self.url.parse().unwrap();
        config.connect_timeout(Duration::from_secs(2));
        config.connect(postgres::NoTls).ok()
    }

    pub fn scalar(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }

    /// (rows_total, written, duplicate, rejected, state) per file name.
    pub fn files(&self) -> BTreeMap<String, FileRow> {
        file_rows(&self.client().query(FILES_SQL, &[]).unwrap())
    }

    /// `files()`, or None while the database does not answer (or before
    /// the schema exists).
    pub fn try_files(&self) -> Option<BTreeMap<String, FileRow>> {
        Some(file_rows(&self.try_client()?.query(FILES_SQL, &[]).ok()?))
    }

    /// The file named `name` is done (false while it is not registered yet).
    pub fn is_done(&self, name: &str) -> bool {
        self.has_schema() && self.files().get(name).is_some_and(|f| f.state == "done")
    }

    /// Rows committed so far over all files (0 before the schema exists).
    pub fn committed_rows(&self) -> i64 {
        self.client()
            .query_one("SELECT coalesce(sum(rows_total), 0)::bigint FROM ingest_files", &[])
            .map(|r| r.get(0))
            .unwrap_or(0)
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

    /// The one event stored from each line of `file`: (line, event_id), sorted.
    pub fn stored_lines(&self, file: &str) -> Vec<(i64, String)> {
        self.client()
            .query(
                "SELECT source_line, event_id::text FROM ecommerce_events WHERE source_file = $1 ORDER BY 1",
                &[&file],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// (reason, detail, raw_line, raw_truncated) of the reject at `file:line`.
    pub fn reject_at(&self, file: &str, line: i64) -> (String, String, Vec<u8>, bool) {
        let r = self
            .client()
            .query_one(
                "SELECT reason, detail, raw_line, raw_truncated FROM ingest_rejects \
                 WHERE source_file = $1 AND source_line = $2",
                &[&file, &line],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    }

    /// Holds `LOCK TABLE ecommerce_events IN ACCESS EXCLUSIVE MODE` until
    /// released (or dropped: the connection closes and the lock goes with it).
    pub fn lock_events_table(&self) -> postgres::Client {
        let mut c = self.client();
        c.batch_execute("BEGIN; LOCK TABLE ecommerce_events IN ACCESS EXCLUSIVE MODE").unwrap();
        c
    }

    /// Sessions of this database waiting for a lock on the events table.
    pub fn lock_waiters(&self) -> i64 {
        self.scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ecommerce_events'::regclass \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    }

    /// Every event stored once, and exactly the expected ones
    /// ((event_id, file, line)).
    pub fn assert_events(&self, want: &BTreeSet<(String, String, i64)>) {
        let stored = self.stored();
        let got: BTreeSet<(String, String, i64)> = stored.iter().cloned().collect();
        assert_eq!(got.len(), stored.len(), "an event stored twice");
        if &got != want {
            let missing: Vec<_> = want.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(want).take(5).collect();
            panic!("{} events stored, {} expected; missing {missing:?}; extra {extra:?}", got.len(), want.len());
        }
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

    /// (rows, written, duplicate, rejected).
    pub fn counts(&self) -> (i64, i64, i64, i64) {
        (self.rows, self.written, self.duplicate, self.rejected)
    }

    /// (rows, written, duplicate, rejected, state).
    pub fn outcome(&self) -> (i64, i64, i64, i64, &str) {
        (self.rows, self.written, self.duplicate, self.rejected, self.state.as_str())
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
