//! A row the database refuses although the validator passed it (schema
//! drift, P13): isolated by splitting the batch, rejected with the closest
//! reason; the rest of the batch commits; no endless retry.

use std::time::Duration;

use crate::support::*;

#[test]
fn rows_the_schema_refuses_are_isolated_and_rejected() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "1000");
    let (status, _, err) = d.output(&["migrate"]);
    assert!(status.success(), "{err}");
    // The schema now allows fewer characters than the contract (100).
    db.client().batch_execute("ALTER TABLE ecommerce_events ALTER COLUMN product_category TYPE varchar(5)").unwrap();

    let mut lines = vec![HEADER.to_owned()];
    let mut refused_lines = Vec::new();
    for n in 0..2500u64 {
        if n % 400 == 7 {
            lines.push(with(n, 6, "electronics"));
            refused_lines.push(n as i64 + 2);
        } else {
            lines.push(row(n));
        }
    }
    d.drop_file("drift.csv", (lines.join("\n") + "\n").as_bytes());
    assert!(d.run_until_idle(Duration::from_secs(60)).success(), "log:\n{}", d.log());

    let f = &db.files()["drift.csv"];
    let refused = refused_lines.len() as i64;
    assert_eq!(
        (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
        (2500, 2500 - refused, 0, refused, "done")
    );
    let want: Vec<(String, i64, String)> =
        refused_lines.iter().map(|l| ("drift.csv".to_owned(), *l, "too_long".to_owned())).collect();
    assert_eq!(db.rejects(), want);
    let detail: String =
        db.client().query_one("SELECT detail FROM ingest_rejects ORDER BY source_line LIMIT 1", &[]).unwrap().get(0);
    assert!(detail.contains("refused by the database"), "{detail}");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 2500 - refused);
    assert!(d.log().contains("the validator and the schema disagree"));
}

/// A row whose id appeared in an earlier batch is only presumed a duplicate
/// (the Validator sets it apart, the Writer merges it): when the earlier
/// occurrence was refused by the database, the later one is written; when
/// it was stored, the later one is a duplicate and the first one (its line)
/// is kept.
#[test]
fn a_repeat_of_a_refused_row_is_written_and_a_repeat_of_a_stored_row_is_not() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "3");
    let (status, _, err) = d.output(&["migrate"]);
    assert!(status.success(), "{err}");
    db.client().batch_execute("ALTER TABLE ecommerce_events ALTER COLUMN product_category TYPE varchar(5)").unwrap();

    // Batches of three rows: lines 2-4, 5-7, 8-10, 11-13.
    let lines = [
        HEADER.to_owned(),
        row(1),                    // 2: stored
        with(2, 6, "electronics"), // 3: refused (too long for the schema)
        row(3),                    // 4
        row(4),                    // 5
        row(1),                    // 6: repeat of a stored row: duplicate
        row(5),                    // 7
        row(2),                    // 8: repeat of the refused row: written
        row(6),                    // 9
        with(1, 2, "user_other"),  // 10: another repeat of row 1: duplicate
        row(2),                    // 11: now a repeat of a stored row
        row(7),                    // 12
        row(3),                    // 13: repeat of row 3: duplicate
    ];
    d.drop_file("repeats.csv", (lines.join("\n") + "\n").as_bytes());
    assert!(d.run_until_idle(Duration::from_secs(60)).success(), "log:\n{}", d.log());

    let f = &db.files()["repeats.csv"];
    assert_eq!((f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()), (12, 7, 4, 1, "done"));
    assert_eq!(db.rejects(), vec![("repeats.csv".to_owned(), 3, "too_long".to_owned())]);
    let mut stored = db.stored();
    stored.sort_by_key(|(_, _, line)| *line);
    let want: Vec<(String, String, i64)> = [(1, 2), (3, 4), (4, 5), (5, 7), (2, 8), (6, 9), (7, 12)]
        .iter()
        .map(|&(n, line)| (uuid_of(n), "repeats.csv".to_owned(), line))
        .collect();
    assert_eq!(stored, want);
}
