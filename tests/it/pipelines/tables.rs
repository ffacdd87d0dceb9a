//! A pipeline's table (spec/pipelines.md, "The table"): created from the
//! declaration when absent, a newly declared column added, any other
//! mismatch refused with one line; and a database written by the previous
//! release upgraded in place, a half-ingested file resuming exactly.

use std::time::Duration;

use super::*;

const LIMIT: Duration = Duration::from_secs(60);

fn declaration(columns: &str) -> String {
    format!(
        "name = \"orders\"\ntable = \"shop.orders\"\nkey = [\"order_id\", \"line_no\"]\n\
         incoming = \"orders/in\"\nprocessed = \"orders/done\"\nbad_records = \"orders/bad\"\n\
         [columns.order_id]\ntype = \"text\"\nrequired = true\nmax_len = 12\n\
         [columns.line_no]\ntype = \"int\"\nrequired = true\nsql_type = \"integer\"\n\
         [columns.amount]\ntype = \"decimal\"\nscale = 2\n{columns}\n\
         [indexes]\namount = \"brin\"\n"
    )
}

#[test]
fn a_table_is_created_then_evolved_and_a_mismatch_is_refused() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let decl = declare(&d, "orders.toml", &declaration(""));
    let incoming = incoming_of(&d, &load(&decl));
    std::fs::write(incoming.join("a.csv"), "order_id,line_no,amount\no1,1,9.99\no1,2,5\no1,1,7.00\n").unwrap();
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    // Created in its schema, with a two-column primary key and the index.
    let columns = db
        .client()
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = 'shop' AND table_name = 'orders' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)))
        .collect::<Vec<_>>();
    assert_eq!(
        columns,
        [
            "order_id text NO",
            "line_no integer NO",
            "amount numeric YES",
            "ingested_at timestamp with time zone NO",
            "source_file text NO",
            "source_line bigint NO"
        ]
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = 'shop' AND indexname = 'orders_amount_idx'"),
        1
    );
    assert_eq!(totals(&db, "orders"), (3, 2, 1, 0, 0), "the composite key dedups");

    // A new column is added to the table (and logged); old rows have none.
    let decl = declare(&d, "orders.toml", &declaration("[columns.note]\ntype = \"text\"\n"));
    std::fs::write(incoming.join("b.csv"), "order_id,line_no,amount,note\no2,1,1.00,gift\n").unwrap();
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    assert!(d.log().contains("added column note text to shop.orders"), "{}", d.log());
    assert_eq!(db.scalar("SELECT count(*) FROM shop.orders WHERE note = 'gift'"), 1);
    assert_eq!(db.scalar("SELECT count(*) FROM shop.orders WHERE note IS NULL"), 2);

    // Any other mismatch stops start-up: one line, the file, the column,
    // both types; nothing is read.
    let decl = declare(&d, "orders.toml", &declaration("[columns.note]\ntype = \"int\"\n"));
    std::fs::write(incoming.join("c.csv"), "order_id,line_no,amount,note\no3,1,1.00,5\n").unwrap();
    let (status, _, stderr) = d.output(&["run", "--pipeline", decl.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.contains("orders.toml")
            && line.contains("column note")
            && line.contains("type text")
            && line.contains("bigint"),
        "{line}"
    );
    assert!(incoming.join("c.csv").exists());
}

#[test]
fn an_existing_table_without_a_unique_key_is_refused() {
    let db = TestDb::new();
    db.client()
        .batch_execute("CREATE SCHEMA shop; CREATE TABLE shop.orders (order_id text, line_no int, amount numeric)")
        .unwrap();
    let d = Daemon::new(&db);
    let decl = declare(&d, "orders.toml", &declaration(""));
    incoming_of(&d, &load(&decl));
    let (status, _, stderr) = d.output(&["run", "--pipeline", decl.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no primary key or unique index on (order_id, line_no)"), "{stderr}");
}

/// spec/pipelines.md, "Bookkeeping": a database created by the previous
/// release (migrations 1 to 3, a file half ingested, another done) is
/// upgraded in place, and ingestion goes on exactly where it was.
#[test]
fn a_previous_release_database_is_upgraded_and_a_half_ingested_file_resumes() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    // The previous release's schema, from its own (released, never edited)
    // migration files, recorded as its runner records them.
    let mut client = db.client();
    client
        .batch_execute(&format!(
            "{}\n{}\n{}\nCREATE TABLE ingestd_schema_history (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO ingestd_schema_history (version, name) VALUES (1, 'init'), (2, 'file_header'), (3, 'files_hot_updates');",
            include_str!("../../../migrations/0001_init.sql"),
            include_str!("../../../migrations/0002_file_header.sql"),
            include_str!("../../../migrations/0003_files_hot_updates.sql"),
        ))
        .unwrap();
    // What it had committed: the first 100 rows of old.csv (its checkpoint
    // after line 101), and all of done.csv (moved away since).
    let content = valid_file(1, 300);
    let header_len = content.find('\n').unwrap() + 1;
    let offset: usize = header_len + content[header_len..].split_inclusive('\n').take(100).map(str::len).sum::<usize>();
    d.drop_file("old.csv", content.as_bytes());
    let path = d.incoming().join("old.csv").display().to_string();
    client
        .execute(
            "INSERT INTO ingest_files (path, file_name, fingerprint, size, state, rows_total, rows_written, \
             committed_offset, committed_line, batches, header) \
             VALUES ($1, 'old.csv', $2, $3, 'in_progress', 100, 100, $4, 102, 1, $5)",
            &[
                &path,
                &fingerprint_of(content.as_bytes()),
                &(content.len() as i64),
                &(offset as i64),
                &&content.as_bytes()[..header_len - 1],
            ],
        )
        .unwrap();
    let old_id: i64 = client.query_one("SELECT id FROM ingest_files WHERE file_name = 'old.csv'", &[]).unwrap().get(0);
    client
        .execute(
            "INSERT INTO ingest_files (path, file_name, fingerprint, size, state, rows_total, rows_written, \
             committed_offset, committed_line, batches, finished_at) \
             VALUES ('/gone/done.csv', 'done.csv', '7-abc', 7, 'done', 5, 5, 7, 7, 1, now())",
            &[],
        )
        .unwrap();
    let stored = content[header_len..].lines().take(100).enumerate().map(|(i, line)| {
        let f: Vec<&str> = line.split(',').collect();
        format!(
            "('{}', '{}', '{}', '{}', '{}', '{}', '{}', {}, {}, '{}', '{}', '{}', 'old.csv', {})",
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            f[10],
            f[11],
            i + 2
        )
    });
    client
        .batch_execute(&format!(
            "INSERT INTO ecommerce_events (event_id, event_type, user_id, session_id, product_id, product_name, \
             product_category, price, quantity, event_timestamp, device_type, user_agent, source_file, source_line) \
             VALUES {}",
            stored.collect::<Vec<_>>().join(", ")
        ))
        .unwrap();

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    assert!(d.log().contains("migrations applied"), "{}", d.log());
    let (pipeline, state, rows, written, id): (String, String, i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT pipeline, state, rows_total, rows_written, id FROM ingest_files WHERE file_name = 'old.csv'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
    };
    assert_eq!((pipeline.as_str(), state.as_str(), rows, written, id), ("ecommerce", "done", 300, 300, old_id));
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events WHERE source_file = 'old.csv'"), 300);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT source_line) FROM ecommerce_events WHERE source_file = 'old.csv'"),
        300
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_files WHERE pipeline = 'ecommerce'"), 2);
    assert_eq!(db.scalar("SELECT max(version)::int8 FROM ingestd_schema_history"), latest_migration());
}

/// The number of the last file in `migrations/` (`NNNN_name.sql`): the
/// version an upgraded database ends at.
fn latest_migration() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.split('_').next()?.parse::<i64>().ok())
        .max()
        .expect("migrations/ holds numbered files")
}
