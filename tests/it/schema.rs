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
