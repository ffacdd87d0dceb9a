//! A pipeline's tables, made to match its declaration at start-up, before
//! ingestion begins (`spec/pipelines.md`, "The table", "Rollups", "Views"):
//!
//! - the table: created when absent (declared columns in file order, the
//!   derived columns, provenance, primary key on `key`); when present, its
//!   columns must accept the declared types, a declared column it lacks is
//!   added (additive evolution, logged), any other mismatch stops start-up;
//! - `[indexes]`, created if missing;
//! - each rollup table: created and filled from the rows already stored,
//!   in the same transaction, when absent; checked when present;
//! - `[views]`: created or replaced.
//!
//! All of it runs in one transaction per pipeline, under an advisory lock on
//! the table's name, so daemons starting together do it once. The answer is
//! each column's wire type as the table has it (binary COPY needs the exact
//! type).

use tokio_postgres::Transaction;

use crate::core::pipeline::{Pipeline, PROVENANCE};
use crate::core::schema::Phys;
use crate::db::{sql, DbError, Pool};

/// Why a pipeline's table cannot be used: one line, naming the pipeline
/// file, the column and both types where it is about a column.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "pipeline file {file}: column {column}: the table {table} has type {found}, the declaration says {declared}"
    )]
    Mismatch { file: String, table: String, column: String, found: String, declared: String },
    #[error("pipeline file {file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
    #[error("pipeline file {file}: preparing table {table}: {source}")]
    Database { file: String, table: String, source: DbError },
}

/// What preparing the tables did, for the log.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Each declared column's wire type in the table (index, type).
    pub wire_types: Vec<(usize, Phys)>,
    /// One line per change made (table created, column added, rollup
    /// filled…).
    pub changes: Vec<String>,
}

/// Prepares `p`'s tables (see the module doc).
pub async fn prepare(pool: &Pool, p: &Pipeline) -> Result<Prepared, TableError> {
    let table = p.table.plain();
    let db = |source: DbError| TableError::Database { file: p.source.clone(), table: table.clone(), source };
    let mut conn = pool.get().await.map_err(DbError::pool("prepare tables")).map_err(db)?;
    let tx = conn.transaction().await.map_err(DbError::pg("begin")).map_err(db)?;
    let lock_key = lock_key(&p.table.quoted());
    tx.execute(sql::TABLE_SETUP_LOCK, &[&lock_key]).await.map_err(DbError::pg("lock")).map_err(db)?;
    let mut out = Prepared::default();
    prepare_in(&tx, p, &mut out).await?;
    tx.commit().await.map_err(DbError::pg("commit")).map_err(db)?;
    Ok(out)
}

async fn prepare_in(tx: &Transaction<'_>, p: &Pipeline, out: &mut Prepared) -> Result<(), TableError> {
    let file = &p.source;
    let table = p.table.quoted();
    let db = |context: &'static str| {
        let (file, table) = (file.clone(), p.table.plain());
        move |e: tokio_postgres::Error| TableError::Database { file, table, source: DbError::Pg { context, source: e } }
    };

    if let Some(schema) = &p.table.schema {
        let exists: bool = tx.query_one(sql::SCHEMA_EXISTS, &[schema]).await.map_err(db("schema"))?.get(0);
        if !exists {
            tx.batch_execute(&sql::create_schema(schema)).await.map_err(db("create schema"))?;
            out.changes.push(format!("created schema {schema}"));
        }
    }
    let exists: bool = tx.query_one(sql::RELATION_EXISTS, &[&table]).await.map_err(db("table"))?.get(0);
    if !exists {
        tx.batch_execute(&sql::create_table(p)).await.map_err(db("create table"))?;
        out.changes.push(format!("created table {}", p.table.plain()));
    }

    // The table's columns: name, type as written, base type name, type oid.
    let rows = tx.query(sql::TABLE_COLUMNS, &[&table]).await.map_err(db("read columns"))?;
    let columns: Vec<(String, String, String, u32)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get::<_, i64>(3) as u32)).collect();
    let find = |name: &str| columns.iter().find(|c| c.0 == name);
    let mismatch = |column: &str, found: &str, declared: &str| TableError::Mismatch {
        file: file.clone(),
        table: p.table.plain(),
        column: column.to_owned(),
        found: found.to_owned(),
        declared: declared.to_owned(),
    };
    let type_oid = |name: String| async move {
        tx.query_one(sql::TYPE_OID, &[&name]).await.map(|r| r.get::<_, Option<i64>>(0).map(|o| o as u32))
    };

    for (i, c) in p.schema.columns.iter().enumerate() {
        match find(&c.name) {
            Some((_, written, base, oid)) => {
                let phys = Phys::of_sql_type(base).filter(|&ph| c.accepts(ph));
                let same_declared = if c.sql_type_declared {
                    type_oid(c.sql_type.clone()).await.map_err(db("declared type"))? == Some(*oid)
                } else {
                    true
                };
                match phys {
                    Some(ph) if same_declared => out.wire_types.push((i, ph)),
                    _ => return Err(mismatch(&c.name, written, &declared_type(c))),
                }
            }
            None => {
                tx.batch_execute(&sql::add_column(&table, &c.name, &c.sql_type)).await.map_err(db("add column"))?;
                out.changes.push(format!("added column {} {} to {}", c.name, c.sql_type, p.table.plain()));
                out.wire_types.push((i, c.phys));
            }
        }
    }
    for d in &p.derived {
        match find(&d.name) {
            Some((_, written, _, oid)) => {
                if type_oid(d.sql_type.clone()).await.map_err(db("declared type"))? != Some(*oid) {
                    return Err(mismatch(&d.name, written, &d.sql_type));
                }
            }
            None => {
                tx.batch_execute(&sql::add_column(&table, &d.name, &d.sql_type)).await.map_err(db("add column"))?;
                out.changes.push(format!("added derived column {} {} to {}", d.name, d.sql_type, p.table.plain()));
            }
        }
    }
    for (name, ty) in PROVENANCE.iter().zip(sql::PROVENANCE_TYPES) {
        if find(name).is_none() {
            tx.batch_execute(&sql::add_column(&table, name, ty)).await.map_err(db("add column"))?;
            out.changes.push(format!("added column {name} to {}", p.table.plain()));
        }
    }

    if !p.schema.key.is_empty() {
        let key: Vec<String> = p.schema.key.iter().map(|&k| p.schema.columns[k].name.clone()).collect();
        let unique: bool =
            tx.query_one(sql::HAS_UNIQUE_INDEX, &[&table, &key, &false]).await.map_err(db("read indexes"))?.get(0);
        if !unique {
            return Err(TableError::Invalid {
                file: file.clone(),
                key: "key".into(),
                message: format!(
                    "the table {} has no primary key or unique index on ({}): duplicates cannot be found without one",
                    p.table.plain(),
                    key.join(", ")
                ),
            });
        }
    }
    for ix in &p.indexes {
        // Only when missing: even `CREATE INDEX IF NOT EXISTS` waits for a
        // lock on the table, and a start-up must not queue behind a
        // long-held lock for nothing.
        let name = p.table.sibling(&sql::index_name(&p.table, &ix.column)).quoted();
        let exists: bool = tx.query_one(sql::RELATION_EXISTS, &[&name]).await.map_err(db("index"))?.get(0);
        if !exists {
            tx.batch_execute(&sql::create_index(&p.table, &ix.column, ix.method.as_str()))
                .await
                .map_err(db("create index"))?;
            out.changes.push(format!("created index {} ({}) on {}", ix.column, ix.method.as_str(), p.table.plain()));
        }
    }

    for (n, r) in p.rollups.iter().enumerate() {
        let target = r.table.quoted();
        let key = format!("rollups[{n}]");
        let exists: bool = tx.query_one(sql::RELATION_EXISTS, &[&target]).await.map_err(db("rollup"))?.get(0);
        if !exists {
            // No row may arrive between the fill and the first commit that
            // updates the rollup: the fill is what stands in the table now.
            tx.batch_execute(&sql::lock_for_rollup(&table)).await.map_err(db("lock table"))?;
            tx.batch_execute(&sql::create_rollup(r, &table)).await.map_err(db("create rollup"))?;
            let filled: i64 =
                tx.query_one(&sql::count_rows(&target), &[]).await.map_err(db("count rollup rows"))?.get(0);
            out.changes
                .push(format!("created rollup {} with {filled} groups from the rows already stored", r.table.plain()));
            continue;
        }
        let names: Vec<String> = tx
            .query(sql::TABLE_COLUMNS, &[&target])
            .await
            .map_err(db("read rollup columns"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for name in r.group_by.iter().map(|(g, _)| g).chain(r.measures.iter().map(|(m, _, _)| m)) {
            if !names.contains(name) {
                return Err(TableError::Invalid {
                    file: file.clone(),
                    key,
                    message: format!(
                        "the rollup table {} exists without column {name}: drop it to have it rebuilt from {}",
                        r.table.plain(),
                        p.table.plain()
                    ),
                });
            }
        }
        let group: Vec<String> = r.group_by.iter().map(|(g, _)| g.clone()).collect();
        let unique: bool =
            tx.query_one(sql::HAS_UNIQUE_INDEX, &[&target, &group, &true]).await.map_err(db("read indexes"))?.get(0);
        if !unique {
            return Err(TableError::Invalid {
                file: file.clone(),
                key,
                message: format!(
                    "the rollup table {} has no UNIQUE NULLS NOT DISTINCT ({}): drop it to have it rebuilt",
                    r.table.plain(),
                    group.join(", ")
                ),
            });
        }
    }

    for v in &p.views {
        // CREATE OR REPLACE keeps a view's columns; when the new query
        // changes them, the view is dropped and created again.
        tx.batch_execute("SAVEPOINT view").await.map_err(db("savepoint"))?;
        match tx.batch_execute(&sql::create_view(&v.name.quoted(), &v.sql, true)).await {
            Ok(()) => tx.batch_execute("RELEASE SAVEPOINT view").await.map_err(db("savepoint"))?,
            Err(_) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT view").await.map_err(db("savepoint"))?;
                tx.batch_execute(&sql::create_view(&v.name.quoted(), &v.sql, false))
                    .await
                    .map_err(db("create view"))?;
                out.changes.push(format!("replaced view {} (its columns changed)", v.name.plain()));
            }
        }
    }
    Ok(())
}

fn declared_type(c: &crate::core::schema::Column) -> String {
    if c.sql_type_declared {
        c.sql_type.clone()
    } else {
        format!("{} (a type that can hold {} values)", c.sql_type, c.kind.name())
    }
}

/// An advisory-lock key for setting up a table (stable across daemons).
fn lock_key(table: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("ingestd table setup {table}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}
