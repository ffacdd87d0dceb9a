//! One active daemon per incoming folder: a PostgreSQL session advisory lock
//! keyed on the folder, held by a dedicated connection for as long as the
//! daemon leads. PostgreSQL releases it when that connection ends, whatever
//! ends it, so a daemon that dies (or loses its connection) hands the folder
//! over by itself.

use std::path::Path;
use std::time::Duration;

use crate::db::{describe, sql, Pool};

/// The advisory-lock key of an incoming folder: the first 8 bytes of the
/// SHA-256 of its canonical path (any daemon naming the same folder, by any
/// path, computes the same key).
pub fn folder_key(folder: &Path) -> i64 {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The `application_name` of this process's folder-lock sessions: unique to
/// the process (pid and a random part), so it never names another daemon's.
pub fn session_name() -> String {
    use std::sync::OnceLock;
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("ingestd lock {} {:08x}", std::process::id(), rand::random::<u32>())).clone()
}

/// The lock, held: drop it (or lose its connection) and it is released.
pub struct FolderLock {
    client: tokio_postgres::Client,
}

impl FolderLock {
    /// Takes the folder's lock if nobody holds it. A lock held by a stale
    /// session of this very process (left behind by a connection that died
    /// on our side only, a reset the server never saw) is taken back: that
    /// session is ended. `Ok(None)`: another daemon leads.
    pub async fn try_take(pool: &Pool, key: i64) -> Result<Option<FolderLock>, String> {
        let tag = session_name();
        let client = pool.dedicated_connection().await.map_err(|e| describe(&e))?;
        // Named, so a session of ours can be told apart; server-side
        // keepalives end a vanished client's session (and so its lock) by
        // themselves too, for other daemons.
        client.batch_execute(&sql::lock_session_setup(&tag)).await.map_err(|e| describe(&e))?;
        let try_lock = || async { client.query_one(sql::TRY_FOLDER_LOCK, &[&key]).await.map(|r| r.get::<_, bool>(0)) };
        let mut got = try_lock().await.map_err(|e| describe(&e))?;
        if !got {
            let stale = client.execute(sql::END_OWN_STALE_SESSIONS, &[&tag]).await.map_err(|e| describe(&e))?;
            if stale > 0 {
                tracing::warn!(sessions = stale, "ended this daemon's own stale folder-lock session");
                // The lock is released as the stale backend exits.
                for _ in 0..50 {
                    got = try_lock().await.map_err(|e| describe(&e))?;
                    if got {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Ok(got.then_some(FolderLock { client }))
    }

    /// Whether the lock's connection still answers within `timeout`; if it
    /// does not, the lock must be taken as lost.
    pub async fn alive(&self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.client.simple_query(sql::PING)).await, Ok(Ok(_)))
    }
}
