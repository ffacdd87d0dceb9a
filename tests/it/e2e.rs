//! End to end: files with known content in, exact tables out.

use std::time::Duration;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

fn a_csv() -> String {
    let lines = [
        HEADER.to_owned(),                                         // 1
        row(1),                                                    // 2 written
        row(2),                                                    // 3 written
        String::new(),                                             // 4 empty: not a row
        row(1),                                                    // 5 duplicate (in batch)
        with(9, 0, "not-a-uuid"),                                  // 6 invalid_uuid
        "x,y".to_owned(),                                          // 7 malformed_csv
        with(3, 5, "\"Prod\nuct, \"\"deluxe\"\"\""),               // 8-9 written (quoted newline)
        with_all(10, &[(1, "purchase"), (7, "")]),                 // 10 purchase_without_price
        with(11, 9, "2099-01-01T00:00:00Z"),                       // 11 future_timestamp
        with(12, 1, "CLICK"),                                      // 12 invalid_event_type
        with(13, 8, "0"),                                          // 13 out_of_range
        with(14, 10, "watch"),                                     // 14 invalid_enum
        with(15, 7, "1.234"),                                      // 15 invalid_number
        with(16, 9, "2026-02-30T00:00:00Z"),                       // 16 invalid_timestamp
        with(17, 2, &"u".repeat(65)),                              // 17 too_long
        with(18, 2, "  "),                                         // 18 missing_field
        with(4, 0, &format!("{{{}}}", uuid_of(4).to_uppercase())), // 19 written (braced, upper case)
        with(4, 0, &uuid_of(4).replace('-', "")),                  // 20 duplicate (simple form)
    ];
    lines.join("\n") + "\n"
}

#[test]
fn files_in_exact_tables_out() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    d.drop_file("a.csv", a_csv().as_bytes());
    let c = format!("event_id,event_type,product_id,event_timestamp\n{},view,p,2026-01-01 00:00:00\n\n{},view,p,2026-01-01 00:00:00\n", uuid_of(30), uuid_of(31));
    d.drop_file("c.csv", c.as_bytes());
    // Decoys: never read, never moved.
    for decoy in [".hidden.csv", "d.csv.tmp", "e.txt", "f.csv.part", "g.gz"] {
        std::fs::write(d.incoming().join(decoy), valid_file(100, 3)).unwrap();
    }
    std::fs::create_dir(d.incoming().join("dir.csv")).unwrap();
    std::os::unix::fs::symlink(d.dir.path().join("ingestd.log"), d.incoming().join("link.csv")).unwrap();

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());

    let files = db.files();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["a.csv", "c.csv"], "only the two real files are read");
    let a = &files["a.csv"];
    assert_eq!((a.rows, a.written, a.duplicate, a.rejected, a.state.as_str()), (17, 4, 2, 11, "done"));
    let c = &files["c.csv"];
    assert_eq!((c.rows, c.written, c.duplicate, c.rejected, c.state.as_str()), (2, 0, 0, 2, "done"));

    let want: Vec<(String, i64, String)> = [
        ("a.csv", 6, "invalid_uuid"),
        ("a.csv", 7, "malformed_csv"),
        ("a.csv", 10, "purchase_without_price"),
        ("a.csv", 11, "future_timestamp"),
        ("a.csv", 12, "invalid_event_type"),
        ("a.csv", 13, "out_of_range"),
        ("a.csv", 14, "invalid_enum"),
        ("a.csv", 15, "invalid_number"),
        ("a.csv", 16, "invalid_timestamp"),
        ("a.csv", 17, "too_long"),
        ("a.csv", 18, "missing_field"),
        ("c.csv", 2, "missing_column"),
        ("c.csv", 4, "missing_column"),
    ]
    .iter()
    .map(|(f, l, r)| (f.to_string(), *l, r.to_string()))
    .collect();
    assert_eq!(db.rejects(), want);

    // The stored rows keep their source and canonical form.
    let mut client = db.client();
    let lines: Vec<(String, i64)> = client
        .query("SELECT event_id::text, source_line FROM ecommerce_events ORDER BY source_line", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(lines, vec![(uuid_of(1), 2), (uuid_of(2), 3), (uuid_of(3), 8), (uuid_of(4), 19)]);
    let name: String =
        client.query_one("SELECT product_name FROM ecommerce_events WHERE source_line = 8", &[]).unwrap().get(0);
    assert_eq!(name, "Prod\nuct, \"deluxe\"");
    let raw: Vec<u8> =
        client.query_one("SELECT raw_line FROM ingest_rejects WHERE source_line = 7", &[]).unwrap().get(0);
    assert_eq!(raw, b"x,y");

    // Finished files moved; rejects files written; decoys untouched.
    assert!(path_exists(&d.processed().join("a.csv")) && path_exists(&d.processed().join("c.csv")));
    let rejects_a = std::fs::read_to_string(d.bad_records().join("a.csv.rejects.csv")).unwrap();
    assert_eq!(rejects_a.lines().count(), 1 + 11, "{rejects_a}");
    assert!(rejects_a.lines().nth(2).unwrap().starts_with("7,malformed_csv,"), "{rejects_a}");
    for decoy in [".hidden.csv", "d.csv.tmp", "e.txt", "f.csv.part", "g.gz", "dir.csv", "link.csv"] {
        assert!(path_exists(&d.incoming().join(decoy)), "{decoy} was touched");
    }

    // A second file, read in a later run: its copy of an earlier event is a
    // duplicate across files; CRLF line ends and a stray quote.
    let b = format!("{HEADER}\r\n{}\r\n{}\r\n{}\r\n", row(2), row(5), with(6, 3, "a \"quoted\" word"));
    d.drop_file("b.csv", b.as_bytes());
    // The same content as a.csv under its old name is a known identity: not
    // read again.
    d.drop_file("a.csv", a_csv().as_bytes());
    assert!(d.run_until_idle(LIMIT).success(), "log:\n{}", d.log());
    let files = db.files();
    let b = &files["b.csv"];
    assert_eq!((b.rows, b.written, b.duplicate, b.rejected, b.state.as_str()), (3, 1, 1, 1, "done"));
    assert_eq!(files.len(), 3, "a.csv dropped again is the same identity");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 5);
    assert!(db.rejects().contains(&("b.csv".into(), 4, "malformed_csv".into())));
    assert!(!path_exists(&d.incoming().join("a.csv")), "a known identity is still moved out");
}

#[test]
fn generated_files_add_up_exactly() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "700");
    let incoming = d.incoming().display().to_string();
    let (status, out, err) = d.output(&[
        "generate",
        "--out",
        &incoming,
        "--files",
        "6",
        "--rows",
        "2500",
        "--bad-frac",
        "0.05",
        "--dup-frac",
        "0.05",
        "--seed",
        "7",
    ]);
    assert!(status.success(), "{err}");
    // The generator says what it made: rows, bad rows, duplicates.
    let (mut rows, mut bad, mut dups) = (0, 0, 0);
    for line in out.lines() {
        let num =
            |key: &str| -> i64 { line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap().parse().unwrap() };
        rows += num("rows=");
        bad += num("bad=");
        dups += num("duplicates=");
    }
    assert_eq!(rows, 15_000);
    assert!(bad > 0 && dups > 0);
    // Compressed files are read too.
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(valid_file(1_000_000, 1234).as_bytes()).unwrap();
        e.finish().unwrap()
    };
    d.drop_file("z.csv.gz", &gz);

    assert!(d.run_until_idle(LIMIT).success(), "log:\n{}", d.log());
    let files = db.files();
    assert_eq!(files.len(), 7);
    for (name, f) in &files {
        assert!(f.adds_up() && f.state == "done", "{name}: {f:?}");
    }
    let sum = |f: fn(&FileRow) -> i64| files.values().map(f).sum::<i64>();
    assert_eq!(sum(|f| f.rows), rows + 1234);
    assert_eq!(sum(|f| f.rejected), bad);
    assert_eq!(sum(|f| f.duplicate), dups);
    assert_eq!(sum(|f| f.written), rows + 1234 - bad - dups);
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), rows + 1234 - bad - dups);
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), bad);
}
