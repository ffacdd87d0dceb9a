//! Everything that talks to PostgreSQL. Only this module and `migrations/`
//! contain SQL.

pub mod embedded;
pub mod files;
pub mod leader;
pub mod migrate;
pub mod sql;
pub mod tables;
pub mod write;

use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::retry::Backoff;

/// Longest pause between start-up's tries.
const STARTUP_CAP: Duration = Duration::from_secs(2);
/// One connection attempt at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Manager = PostgresConnectionManager<NoTls>;
pub type Pool = bb8::Pool<Manager>;

/// Infrastructure failures. Data problems never become a `DbError`: they
/// are rejects.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{context}: {}", describe(.source))]
    Pg { context: &'static str, source: tokio_postgres::Error },
    #[error("{context}: timed out waiting for a database connection")]
    PoolTimeout { context: &'static str },
    #[error("{context}: no answer within {timeout:?}")]
    Timeout { context: &'static str, timeout: Duration },
    #[error("checkpoint fence: file {file_id} is committed to offset {actual}, the batch starts at {expected}")]
    Fence { file_id: i64, expected: u64, actual: u64 },
    #[error("claim of {0}: the database returned no row for it")]
    Claim(String),
    #[error("a group's checkpoint fence did not match every file; committing its batches one by one")]
    GroupFence,
    #[error("reading the batch again: {0}")]
    Reread(String),
    #[error("file {file_id}: the batch read again has {found} rows, {expected} were expected")]
    Isolation { file_id: i64, expected: u64, found: u64 },
    #[error("migration {version} ({name}): {}", describe(.source))]
    Migration { version: i32, name: &'static str, source: tokio_postgres::Error },
}

impl DbError {
    pub fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        move |source| DbError::Pg { context, source }
    }

    pub fn pool(context: &'static str) -> impl FnOnce(bb8::RunError<tokio_postgres::Error>) -> DbError {
        move |e| match e {
            bb8::RunError::User(source) => DbError::Pg { context, source },
            bb8::RunError::TimedOut => DbError::PoolTimeout { context },
        }
    }

    /// Worth retrying the same work later: the database is unavailable, not
    /// refusing the data.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::PoolTimeout { .. } | DbError::Timeout { .. } => true,
            DbError::Fence { .. }
            | DbError::GroupFence
            | DbError::Isolation { .. }
            | DbError::Reread(_)
            | DbError::Claim(_) => false,
            DbError::Migration { source, .. } => is_transient_pg(source),
            DbError::Pg { source, .. } => is_transient_pg(source),
        }
    }

    /// A unique key refused a row: for the Writer, a sign that the batch was
    /// already committed.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Pg { source, .. } if source.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }

    /// The database refused the data itself (a value the validator passed
    /// but the schema does not accept).
    pub fn is_data_error(&self) -> bool {
        match self {
            DbError::Pg { source, .. } => source
                .code()
                .map(|c| {
                    let c = c.code();
                    (c.starts_with("22") || c.starts_with("23")) && c != SqlState::UNIQUE_VIOLATION.code()
                })
                .unwrap_or(false),
            _ => false,
        }
    }
}

fn is_transient_pg(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O or protocol error on the connection.
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("57") // operator intervention: shutdown, crash, cancel
                || c.starts_with("53") // insufficient resources: disk full, too many connections
                || c.starts_with("40") // serialization failure, deadlock
                || c == SqlState::READ_ONLY_SQL_TRANSACTION.code()
                || c == SqlState::LOCK_NOT_AVAILABLE.code()
                || c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT.code()
        }
    }
}

/// tokio-postgres renders a server error as just "db error"; say what it was.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(inner) => format!("{e}: {inner}"),
            None => e.to_string(),
        },
    }
}

/// Host, port and database of a connection config, for logs: never the
/// password.
pub fn redacted(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

/// Logs bb8's background connection errors, which it would otherwise drop.
#[derive(Debug, Clone, Copy)]
struct LogErrors;

impl bb8::ErrorSink<tokio_postgres::Error> for LogErrors {
    fn sink(&self, e: tokio_postgres::Error) {
        tracing::warn!(error = %describe(&e), "database connection error");
    }
    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tokio_postgres::Error>> {
        Box::new(*self)
    }
}

/// Builds the pool without connecting; `wait_ready` proves the database is
/// there.
pub fn build_pool(config: tokio_postgres::Config, size: u32) -> Pool {
    let mut config = config;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("ingestd");
    let manager = PostgresConnectionManager::new(config, NoTls);
    bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .test_on_check_out(true)
        .connection_timeout(Duration::from_secs(10))
        .error_sink(Box::new(LogErrors))
        .build_unchecked(manager)
}

/// Retries a trivial query until it answers or `timeout` passes, with
/// capped exponential backoff. Returns the last error on timeout.
pub async fn wait_ready(pool: &Pool, timeout: Duration) -> Result<(), DbError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let attempt = || async {
        let connect = async {
            let conn = pool.dedicated_connection().await.map_err(DbError::pg("connect"))?;
            conn.simple_query(sql::PING).await.map_err(DbError::pg("connect"))?;
            Ok::<(), DbError>(())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Timeout { context: "connect", timeout: CONNECT_TIMEOUT }),
        }
    };
    // Every failure here is worth another try until the deadline: the
    // database may still be starting.
    crate::retry::retry("database not ready", Backoff::new(STARTUP_CAP), Some(deadline), |_| true, attempt).await
}

/// Applies the migrations, retrying while the database is transiently
/// unable to (read-only during a failover, shutting down, out of slots)
/// until `deadline`.
pub async fn migrate_when_ready(pool: &Pool, deadline: tokio::time::Instant) -> Result<Vec<i32>, DbError> {
    crate::retry::retry(
        "cannot apply migrations yet",
        Backoff::new(STARTUP_CAP),
        Some(deadline),
        DbError::is_transient,
        || migrate::run(pool),
    )
    .await
}
