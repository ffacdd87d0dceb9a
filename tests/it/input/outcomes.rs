//! Files of known content in, exact tables out: every reject reason, row
//! forms, duplicates within and across files, files without data rows,
//! generated files, replayed rejects, and the daemon's clock deciding
//! `future_timestamp` (faults.md F20, F21).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

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
fn each_row_is_written_duplicate_or_rejected_with_its_reason() {
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
    let gz = gzip(valid_file(1_000_000, 1234).as_bytes());
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

/// F21: files with no data rows are still identities (the empty one too,
/// of size 0), finished and moved; a BOM and CRLF line ends change nothing.
#[test]
fn files_without_data_rows_are_done_and_moved() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let bom_crlf = [BOM, format!("{HEADER}\r\n{}\r\n{}\r\n", row(1), row(2)).as_bytes()].concat();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.csv", Vec::new()),
        ("header.csv", format!("{HEADER}\n").into_bytes()),
        ("bom.csv", BOM.to_vec()),
        ("bom_crlf.csv", bom_crlf),
    ];
    for (name, content) in &files {
        d.drop_file(name, content);
    }

    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());

    let mut got: Vec<_> = db
        .identities()
        .into_iter()
        .map(|i| (i.name, i.fingerprint, i.size, i.file.rows, i.file.written, i.file.state))
        .collect();
    got.sort();
    let mut want: Vec<_> = files
        .iter()
        .map(|(name, content)| {
            let rows = if *name == "bom_crlf.csv" { 2 } else { 0 };
            (name.to_string(), fingerprint_of(content), content.len() as i64, rows, rows, "done".to_string())
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    for f in db.files().values() {
        assert!(f.adds_up() && f.duplicate == 0 && f.rejected == 0, "{f:?}");
    }
    let empty = want.iter().find(|w| w.0 == "empty.csv").unwrap();
    assert_eq!(empty.1, "0-e3b0c44298fc1c149afbf4c8", "the empty file: size 0 and the SHA-256 of nothing");

    for (name, content) in &files {
        assert_eq!(&std::fs::read(d.processed().join(name)).unwrap(), content, "{name} moved as it was");
    }
    assert_eq!(names_in(&d.incoming()), Vec::<String>::new());
    assert_eq!(names_in(&d.bad_records()), Vec::<String>::new());
    assert_eq!(db.rejects(), vec![]);
    assert_eq!(db.stored_lines("bom_crlf.csv"), vec![(2, uuid_of(1)), (3, uuid_of(2))]);
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 2);
}

#[test]
fn replayed_rejects_move_to_written_or_duplicate_exactly_once() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    // Just past the 24 h limit now; within it a few seconds later.
    let soon = Utc::now() + chrono::Duration::hours(24) + chrono::Duration::seconds(3);
    let soon_text = soon.to_rfc3339_opts(SecondsFormat::Millis, true);
    let file = [
        HEADER.to_owned(),
        row(1),                                                // 2 written
        with(2, 9, &soon_text),                                // 3 future_timestamp, later valid
        with(1, 9, &soon_text),                                // 4 future_timestamp, later a duplicate of line 2
        with(3, 0, "nope"),                                    // 5 invalid_uuid, stays
        with(4, 9, &soon_text).replace(",mobile,", ",watch,"), // 6 future_timestamp, later invalid_enum
    ]
    .join("\n")
        + "\n";
    d.drop_file("r.csv", file.as_bytes());
    assert!(d.run_until_idle(Duration::from_secs(60)).success(), "log:\n{}", d.log());
    let f = &db.files()["r.csv"];
    assert_eq!((f.rows, f.written, f.duplicate, f.rejected), (5, 1, 0, 4));

    // A reason that is not one is refused.
    let (status, _, err) = d.output(&["replay-rejects", "--reason", "bogus"]);
    assert_eq!(status.code(), Some(2), "{err}");

    // Once the clock has passed, the future rows pass.
    wait_until(Duration::from_secs(30), "the timestamps to be within 24 h", || {
        Utc::now() + chrono::Duration::hours(24) >= soon
    });
    let (status, out, err) = d.output(&["replay-rejects", "--file", "r.csv", "--json"]);
    assert!(status.success(), "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        got,
        serde_json::json!([{"file": "r.csv", "replayed": 4, "written": 1, "duplicate": 1, "still_rejected": 2}])
    );
    let f = &db.files()["r.csv"];
    assert_eq!((f.rows, f.written, f.duplicate, f.rejected), (5, 2, 1, 2));
    assert!(f.adds_up());
    assert_eq!(
        db.rejects(),
        vec![("r.csv".into(), 5, "invalid_uuid".into()), ("r.csv".into(), 6, "invalid_enum".into())],
        "the row still rejected carries its current reason"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), 2);
    assert_eq!(
        db.scalar("SELECT source_line FROM ecommerce_events WHERE event_id = '00000000-0000-4000-8000-000000000002'"),
        3
    );

    // A second replay changes nothing.
    let (status, out, _) = d.output(&["replay-rejects", "--json"]);
    assert!(status.success());
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got[0]["written"], 0);
    assert_eq!(got[0]["still_rejected"], 2);
    assert_eq!(db.files()["r.csv"], *f);
}

/// The hours ahead of the real clock of the rows of a clock file, each with
/// whether the contract accepts it from a daemon whose clock is
/// `skew_hours` ahead: an event may be at most 24 h after the daemon's
/// clock. The margins (an hour each side of the limit) dwarf the seconds
/// between writing a file and reading it.
const AHEAD_HOURS: [i64; 4] = [23, 25, 47, 49];

fn accepted(ahead_hours: i64, skew_hours: i64) -> bool {
    ahead_hours <= skew_hours + 24
}

/// A file whose rows are `AHEAD_HOURS` after `base` (the real clock now),
/// events numbered from `first`.
fn clock_file(first: u64, base: DateTime<Utc>) -> String {
    let mut s = format!("{HEADER}\n");
    for (i, hours) in AHEAD_HOURS.iter().enumerate() {
        let ts = (base + TimeDelta::hours(*hours)).to_rfc3339_opts(SecondsFormat::Millis, true);
        s.push_str(&with(first + i as u64, 9, &ts));
        s.push('\n');
    }
    s
}

/// The oracle of a clock file read by a daemon `skew_hours` ahead:
/// ((rows, written, duplicate, rejected, state), stored events, rejects).
#[allow(clippy::type_complexity)]
fn clock_oracle(
    name: &str,
    first: u64,
    skew_hours: i64,
) -> ((i64, i64, i64, i64, &'static str), BTreeSet<(String, String, i64)>, Vec<(String, i64, String)>) {
    let mut stored = BTreeSet::new();
    let mut rejects = Vec::new();
    for (i, hours) in AHEAD_HOURS.iter().enumerate() {
        let line = i as i64 + 2;
        if accepted(*hours, skew_hours) {
            stored.insert((uuid_of(first + i as u64), name.to_owned(), line));
        } else {
            rejects.push((name.to_owned(), line, "future_timestamp".to_owned()));
        }
    }
    let rows = AHEAD_HOURS.len() as i64;
    ((rows, stored.len() as i64, 0, rejects.len() as i64, "done"), stored, rejects)
}

/// The wall-clock times of the timestamped lines of a daemon log (tracing's
/// text format starts each line with an RFC 3339 time, maybe in ANSI
/// colours).
fn log_times(log: &str) -> Vec<DateTime<Utc>> {
    log.lines()
        .filter_map(|l| strip_ansi(l).split_whitespace().next().map(str::to_owned))
        .filter_map(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

/// `line` without its ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// F20: `future_timestamp` is judged by the daemon's clock. A file with
/// events 23, 25, 47 and 49 h ahead of the real clock: the daemon on the
/// real clock accepts only the first (limit now + 24 h); the same events
/// (other ids, another file) read by a daemon run under `faketime -f +1d`
/// (limit now + 48 h) are accepted but the last. The faketime daemon's log
/// is stamped a day ahead while the database's `ingested_at` stays on the
/// real clock: the shift reached the daemon only. Its file is written in
/// place with an mtime in the future even of the shifted clock, so only
/// the stability window (a monotonic clock) lets it through: it must be
/// read, and promptly.
#[test]
#[ignore = "needs root: faketime (CI installs it)"]
fn clock_skew_moves_the_future_limit() {
    const TEST: &str = "clock_skew_moves_the_future_limit";
    require_tool("faketime", &["-f", "+0", "true"], "faketime");
    let started = Instant::now();
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__STABLE_FOR_MS", "1000");

    // The real clock.
    let base = Utc::now();
    d.drop_file("real.csv", clock_file(0, base).as_bytes());
    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    let (real_counts, mut want_events, mut want_rejects) = clock_oracle("real.csv", 0, 0);
    assert_eq!(real_counts, (4, 1, 0, 3, "done"));
    assert_eq!(db.files()["real.csv"].outcome(), real_counts, "log:\n{}", d.log());
    db.assert_events(&want_events);
    assert_eq!(db.rejects(), want_rejects);

    // The daemon's clock a day ahead; the file not renamed into place, its
    // mtime three days ahead of the real clock.
    let base = Utc::now();
    let skewed = d.incoming().join("skewed.csv");
    std::fs::write(&skewed, clock_file(100, base)).unwrap();
    let future = std::time::SystemTime::now() + Duration::from_secs(3 * 24 * 3600);
    std::fs::File::options().write(true).open(&skewed).unwrap().set_modified(future).unwrap();
    let log_before = d.log().len();
    let spawned = Instant::now();
    let mut child = Running(d.spawn_via(&["faketime", "-f", "+1d"], &["--until-idle"]));
    let status = wait_exit(&mut child, LIMIT)
        .unwrap_or_else(|| panic!("the faketime daemon did not finish within {LIMIT:?}; log:\n{}", d.log()));
    let took = spawned.elapsed();
    let log = d.log()[log_before..].to_owned();
    assert!(status.success(), "{status:?}; log:\n{log}");

    let (skewed_counts, events, rejects) = clock_oracle("skewed.csv", 100, 24);
    assert_eq!(skewed_counts, (4, 3, 0, 1, "done"));
    assert_eq!(db.files()["skewed.csv"].outcome(), skewed_counts, "log:\n{log}");
    want_events.extend(events);
    want_rejects.extend(rejects);
    want_rejects.sort();
    db.assert_events(&want_events);
    assert_eq!(db.rejects(), want_rejects);
    assert!(path_exists(&d.processed().join("skewed.csv")), "skewed.csv not moved; log:\n{log}");

    // The shift reached the daemon: its log is stamped a day ahead.
    let times = log_times(&log);
    assert!(!times.is_empty(), "no timestamped line in the faketime daemon's log:\n{log}");
    let real_now = Utc::now();
    for t in &times {
        let ahead = *t - real_now;
        assert!(
            ahead > TimeDelta::hours(23) && ahead < TimeDelta::hours(25),
            "a log line of the faketime daemon at {t}, {ahead} from the real clock:\n{log}"
        );
    }
    // And not the database: ingested_at is the database's commit time.
    let ingested: Vec<DateTime<Utc>> = db
        .client()
        .query("SELECT ingested_at FROM ecommerce_events WHERE source_file = 'skewed.csv'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, std::time::SystemTime>(0).into())
        .collect();
    assert_eq!(ingested.len(), 3);
    for t in &ingested {
        assert!((*t - real_now).abs() < TimeDelta::minutes(5), "ingested_at {t}, real clock {real_now}");
    }
    // The stability window ran on the monotonic clock: an mtime days in the
    // future did not hold the file back.
    assert!(took < Duration::from_secs(30), "the faketime daemon took {took:?}");
    println!(
        "{TEST}: the faketime daemon ingested skewed.csv in {:.1} s; whole test {:.1} s",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
