//! A small embedded migration runner: plain numbered SQL files, applied in
//! one transaction under an advisory lock so two daemons starting at once
//! cannot both apply a migration.

use crate::db::{sql, DbError, Pool};

/// (version, name, SQL). Append only; never edit a released file.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (2, "file_header", include_str!("../../migrations/0002_file_header.sql")),
    (3, "files_hot_updates", include_str!("../../migrations/0003_files_hot_updates.sql")),
    (4, "pipelines", include_str!("../../migrations/0004_pipelines.sql")),
    (5, "file_status", include_str!("../../migrations/0005_file_status.sql")),
];

/// Applies pending migrations; returns the versions applied now.
pub async fn run(pool: &Pool) -> Result<Vec<i32>, DbError> {
    let mut conn = pool.get().await.map_err(DbError::pool("migrate"))?;
    let tx = conn.transaction().await.map_err(DbError::pg("migrate: begin"))?;
    tx.execute(sql::MIGRATION_LOCK, &[]).await.map_err(DbError::pg("migrate: lock"))?;
    // No DDL when the history exists: an up-to-date database in read-only
    // mode (a failover in progress) must not stop start-up.
    let has_history: bool =
        tx.query_one(sql::MIGRATION_HISTORY_EXISTS, &[]).await.map_err(DbError::pg("migrate: history table"))?.get(0);
    if !has_history {
        tx.batch_execute(sql::MIGRATION_HISTORY).await.map_err(DbError::pg("migrate: history table"))?;
    }
    let applied: Vec<i32> = tx
        .query(sql::MIGRATIONS_APPLIED, &[])
        .await
        .map_err(DbError::pg("migrate: read history"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut now = Vec::new();
    for &(version, name, text) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        tx.batch_execute(text).await.map_err(|source| DbError::Migration { version, name, source })?;
        tx.execute(sql::MIGRATION_RECORD, &[&version, &name]).await.map_err(|source| DbError::Migration {
            version,
            name,
            source,
        })?;
        now.push(version);
    }
    tx.commit().await.map_err(DbError::pg("migrate: commit"))?;
    Ok(now)
}
