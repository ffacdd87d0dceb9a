//! A file's identity is its path and fingerprint (faults.md F3-F7): a name
//! reused with new content is a new identity, the same content again is
//! not; a file deleted while read is finished from the open file; a file
//! truncated while read is a new identity and the old one is parked.

use std::time::Duration;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);
const DRAIN_SECS: u64 = 20;

/// (name, fingerprint, rows, written, duplicate, rejected, state) of every
/// identity, in the order they were registered.
fn identity_counts(db: &TestDb) -> Vec<(String, String, i64, i64, i64, i64, String)> {
    db.identities()
        .into_iter()
        .map(|i| (i.name, i.fingerprint, i.file.rows, i.file.written, i.file.duplicate, i.file.rejected, i.file.state))
        .collect()
}

/// The 12 hex digits the daemon puts in the name of a second file of the
/// same name (`processed/a.<tag>.csv`, `a.csv.<tag>.rejects.csv`).
fn name_tag(fingerprint: &str) -> &str {
    &fingerprint.rsplit('-').next().unwrap()[..12]
}

/// F5, F6, F7: a name reused with new content is a new identity, read in
/// full (its rows already written become duplicates) and moved beside the
/// first file, never over it; the first content dropped again is a known
/// identity: not read again, only moved out of incoming.
#[test]
fn same_name_new_content_and_same_content_again() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let first = csv_text(&[
        HEADER.into(),            // 1
        row(1),                   // 2
        row(2),                   // 3
        row(3),                   // 4
        row(4),                   // 5
        with(5, 0, "not-a-uuid"), // 6 invalid_uuid
        row(6),                   // 7
        row(7),                   // 8
        row(8),                   // 9
    ]);
    let second = csv_text(&[
        HEADER.into(),   // 1
        row(6),          // 2 duplicate
        row(7),          // 3 duplicate
        row(8),          // 4 duplicate
        row(5),          // 5 written: its id was only in a rejected row
        with(9, 8, "0"), // 6 out_of_range
        row(10),         // 7
        row(11),         // 8
        row(12),         // 9
    ]);
    let (fp1, fp2) = (fingerprint_of(first.as_bytes()), fingerprint_of(second.as_bytes()));
    let (tag1, tag2) = (name_tag(&fp1), name_tag(&fp2));
    assert_ne!(tag1, tag2);

    d.drop_file("a.csv", first.as_bytes());
    assert!(d.run_until_idle(LIMIT).success(), "log:\n{}", d.log());
    assert_eq!(db.files()["a.csv"].outcome(), (8, 7, 0, 1, "done"));
    assert_eq!(std::fs::read_to_string(d.processed().join("a.csv")).unwrap(), first);

    // The same name, new content (F5/F6).
    d.drop_file("a.csv", second.as_bytes());
    assert!(d.run_until_idle(LIMIT).success(), "log:\n{}", d.log());
    let want = vec![
        ("a.csv".to_string(), fp1.clone(), 8, 7, 0, 1, "done".to_string()),
        ("a.csv".to_string(), fp2.clone(), 8, 4, 3, 1, "done".to_string()),
    ];
    assert_eq!(identity_counts(&db), want);
    assert_eq!(
        db.rejects(),
        vec![("a.csv".into(), 6, "invalid_uuid".into()), ("a.csv".into(), 6, "out_of_range".into())]
    );
    let ids = sorted((1..=12).filter(|&n| n != 9).map(uuid_of).collect());
    let stored: Vec<String> = db
        .client()
        .query("SELECT event_id::text FROM ecommerce_events ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ids);
    // The first file is not overwritten: the newcomer carries its tag.
    let tagged2 = format!("a.{tag2}.csv");
    assert_eq!(names_in(&d.processed()), sorted(vec!["a.csv".into(), tagged2.clone()]));
    assert_eq!(std::fs::read_to_string(d.processed().join("a.csv")).unwrap(), first);
    assert_eq!(std::fs::read_to_string(d.processed().join(&tagged2)).unwrap(), second);
    // Likewise its rejects file.
    let rejects2 = format!("a.csv.{tag2}.rejects.csv");
    assert_eq!(names_in(&d.bad_records()), sorted(vec!["a.csv.rejects.csv".into(), rejects2.clone()]));
    let r1 = std::fs::read_to_string(d.bad_records().join("a.csv.rejects.csv")).unwrap();
    let r2 = std::fs::read_to_string(d.bad_records().join(&rejects2)).unwrap();
    assert_eq!(r1.lines().count(), 2, "{r1}");
    assert!(r1.lines().nth(1).unwrap().starts_with("6,invalid_uuid,"), "{r1}");
    assert_eq!(r2.lines().count(), 2, "{r2}");
    assert!(r2.lines().nth(1).unwrap().starts_with("6,out_of_range,"), "{r2}");
    assert!(names_in(&d.incoming()).is_empty());

    // The first content again (F7): a known identity, not read again.
    d.drop_file("a.csv", first.as_bytes());
    assert!(d.run_until_idle(LIMIT).success(), "log:\n{}", d.log());
    assert_eq!(identity_counts(&db), want, "no new identity, no count changed");
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 11);
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), 2);
    assert!(names_in(&d.incoming()).is_empty(), "a known identity is moved out of incoming");
    // Moved beside the two others (processed/a.csv is taken), none of them
    // overwritten; its rejects file was rewritten with the same content.
    let tagged1 = format!("a.{tag1}.csv");
    assert_eq!(names_in(&d.processed()), sorted(vec!["a.csv".into(), tagged1.clone(), tagged2.clone()]));
    assert_eq!(std::fs::read_to_string(d.processed().join("a.csv")).unwrap(), first);
    assert_eq!(std::fs::read_to_string(d.processed().join(&tagged1)).unwrap(), first);
    assert_eq!(std::fs::read_to_string(d.processed().join(&tagged2)).unwrap(), second);
    assert_eq!(std::fs::read_to_string(d.bad_records().join("a.csv.rejects.csv")).unwrap(), r1);
    assert_eq!(std::fs::read_to_string(d.bad_records().join(&rejects2)).unwrap(), r2);
    assert_eq!(names_in(&d.bad_records()).len(), 2);
}

/// F3: a file deleted while it is read is finished from the open file
/// (Linux keeps it), exactly; the move then finds nothing, which is fine.
#[test]
fn file_deleted_while_read_is_finished_from_the_open_file() {
    const ROWS: u64 = 10_000;
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "200");
    // 50 ms per batch: 50 batches take a few seconds.
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:50");
    d.drop_file("del.csv", valid_file(0, ROWS).as_bytes());

    let mut child = d.spawn(&["--until-idle"]);
    wait_until(LIMIT, "the first batches of del.csv committed", || {
        db.has_schema() && db.files().get("del.csv").is_some_and(|f| f.offset > 0)
    });
    std::fs::remove_file(d.incoming().join("del.csv")).unwrap();
    let at_delete = db.files()["del.csv"].clone();
    assert!(at_delete.state == "in_progress" && at_delete.rows < ROWS as i64, "deleted too late: {at_delete:?}");

    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| panic!("no exit; log:\n{}", d.log()));
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let f = &db.files()["del.csv"];
    assert_eq!(f.outcome(), (ROWS as i64, ROWS as i64, 0, 0, "done"));
    assert_eq!(db.identities().len(), 1);
    let lines: Vec<i64> = db.stored_lines("del.csv").iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, (2..ROWS as i64 + 2).collect::<Vec<_>>(), "every row once");
    assert!(!path_exists(&d.incoming().join("del.csv")) && !path_exists(&d.processed().join("del.csv")));
    assert_eq!(names_in(&d.processed()), Vec::<String>::new());
    assert!(!d.log().contains("after-commit disk work failed"), "log:\n{}", d.log());
}

/// F4: a file truncated (`truncate -s`, here `set_len`: the same
/// ftruncate) while it is read. The batch being read is dropped, so no torn
/// record is committed; the batches before it stay with the first identity,
/// which is abandoned `in_progress`. The shorter file is a new identity
/// (new size, new fingerprint), read in full once it holds still: its rows
/// the first identity wrote are duplicates, and its torn last line is a
/// `malformed_csv` row of its own. Every identity adds up; no row is
/// written twice.
#[test]
fn file_truncated_while_read_becomes_a_new_identity() {
    const ROWS: u64 = 20_000;
    const BATCH: i64 = 200;
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", &BATCH.to_string());
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:50");
    let content = valid_file(0, ROWS);
    // Cut 10 bytes into the first line that starts past the middle: inside
    // its event_id, so the torn line has a single field.
    let torn_start = content[content.len() / 2..].find('\n').unwrap() + content.len() / 2 + 1;
    let cut = torn_start + 10;
    let torn_line = content[..torn_start].matches('\n').count() as i64 + 1;
    let whole_rows = torn_line - 2;
    d.drop_file("t.csv", content.as_bytes());

    let mut child = d.spawn(&[]);
    wait_until(LIMIT, "the first batches of t.csv committed", || {
        db.has_schema() && db.files().get("t.csv").is_some_and(|f| f.offset > 0)
    });
    std::fs::OpenOptions::new().write(true).open(d.incoming().join("t.csv")).unwrap().set_len(cut as u64).unwrap();
    let at_cut = db.files()["t.csv"].clone();
    assert!(at_cut.rows < whole_rows, "truncated too late: {at_cut:?}");

    let short = &content.as_bytes()[..cut];
    let short_fp = fingerprint_of(short);
    wait_until(LIMIT, "the truncated t.csv read as a new identity", || {
        db.identities().iter().any(|i| i.fingerprint == short_fp && i.file.state == "done")
    });
    d.stop_cleanly(&mut child, DRAIN_SECS);

    let ids = db.identities();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (old, new) = (&ids[0], &ids[1]);
    // The first identity: whole batches only, never a torn record.
    assert_eq!(old.fingerprint, fingerprint_of(content.as_bytes()));
    let r1 = old.file.rows;
    assert!(r1 > 0 && r1 % BATCH == 0, "{old:?}");
    // It can never be finished (its content is gone): parked as superseded,
    // keeping what it committed.
    assert_eq!(old.file.outcome(), (r1, r1, 0, 0, "failed"));
    let error: String = db
        .client()
        .query_one("SELECT error FROM ingest_files WHERE fingerprint = $1", &[&old.fingerprint])
        .unwrap()
        .get(0);
    assert!(error.starts_with("superseded"), "{error}");
    eprintln!("truncated while read: {r1} rows committed before, {whole_rows} whole rows + 1 torn after");
    assert_eq!(old.file.offset as usize, offset_after_lines(&content, r1 as usize + 1));
    // The truncated file, in full.
    let dup = r1.min(whole_rows);
    assert_eq!(new.file.outcome(), (whole_rows + 1, whole_rows - dup, dup, 1, "done"));
    assert_eq!(new.size as usize, cut);
    assert!(old.file.adds_up() && new.file.adds_up());
    assert_eq!(db.rejects(), vec![("t.csv".into(), torn_line, "malformed_csv".into())]);
    let (_, _, raw, _) = db.reject_at("t.csv", torn_line);
    assert_eq!(raw, &content.as_bytes()[torn_start..cut]);
    // Each event once, from its own line.
    let stored = db.stored_lines("t.csv");
    assert_eq!(stored.len() as i64, r1.max(whole_rows));
    for (line, id) in &stored {
        assert_eq!(*id, uuid_of(*line as u64 - 2), "line {line}");
    }
    assert_eq!(stored.iter().map(|(l, _)| *l).collect::<Vec<_>>(), (2..r1.max(whole_rows) + 2).collect::<Vec<_>>());
    assert!(d.log().contains("file truncated while being read"), "log:\n{}", d.log());
    assert_eq!(std::fs::read(d.processed().join("t.csv")).unwrap(), short);
}
