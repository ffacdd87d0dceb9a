//! Each example declaration of config/pipelines ingests the files
//! `ingestd generate --pipeline` makes from it, exactly: every row written,
//! duplicate or rejected as the generator counted, rollups equal to their
//! GROUP BY, views answering.

use std::time::Duration;

use super::*;

const LIMIT: Duration = Duration::from_secs(120);

fn ingests_its_generated_files_exactly(name: &str) {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let decl = example(name);
    let p = load(&decl);
    let incoming = incoming_of(&d, &p);
    let (rows, bad, dups) = generate(&d, &decl, &incoming, 4, 1500, 11);
    assert_eq!(rows, 6000);
    let status = run_until_idle(&d, &[&decl], LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let (total, written, duplicate, rejected, unfinished) = totals(&db, &p.name);
    assert_eq!((total, rejected, duplicate, unfinished), (rows, bad, dups, 0), "log:\n{}", d.log());
    assert_eq!(written, rows - bad - dups);
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM {}", p.table.quoted())), written);
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM ingest_rejects WHERE pipeline = '{}'", p.name)), bad);
    assert_rollups_exact(&db, &p);
    for v in &p.views {
        db.scalar(&format!("SELECT count(*) FROM {}", v.name.quoted()));
    }
    // Processed files went to the declaration's folder.
    let processed = d.dir.path().join(p.processed.as_ref().unwrap());
    assert_eq!(std::fs::read_dir(processed).unwrap().count(), 4);
}

#[test]
fn transactions_with_derived_columns_rollups_and_views() {
    ingests_its_generated_files_exactly("transactions");
}

#[test]
fn basic_events_with_integer_ids() {
    ingests_its_generated_files_exactly("basic_events");
}

#[test]
fn cart_events_with_quantities_and_a_daily_rollup() {
    ingests_its_generated_files_exactly("cart_events");
}

#[test]
fn user_events_without_a_key() {
    ingests_its_generated_files_exactly("user_events");
}

/// The derived columns are PostgreSQL's own computation over the stored
/// row, whatever the file said.
#[test]
fn derived_columns_are_computed_from_the_stored_row() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let decl = example("transactions");
    let p = load(&decl);
    let incoming = incoming_of(&d, &p);
    std::fs::write(
        incoming.join("t.csv"),
        "transaction_id,user_id,product_id,product_category,amount,quantity,status,Event Time,discount_percent\n\
         t1,u1,p1,books,250.00,4,completed,2026-11-22 10:15:00,10\n\
         t2,u2,p2,books,10.50,,pending,2026-11-22T23:59:59Z,\n",
    )
    .unwrap();
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    let rows = db
        .client()
        .query(
            "SELECT transaction_id, revenue::text, is_high_value, is_bulk_order, event_date::text, event_hour \
             FROM transactions ORDER BY 1",
            &[],
        )
        .unwrap();
    let got: Vec<(String, String, bool, bool, String, i32)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    assert_eq!(
        got,
        [
            ("t1".into(), "900.00".into(), true, true, "2026-11-22".into(), 10),
            ("t2".into(), "10.50".into(), false, false, "2026-11-22".into(), 23),
        ]
    );
}
