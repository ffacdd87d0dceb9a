//! `ingestd replay-rejects`: stored rejects re-run through the rules,
//! accounted exactly once.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};

use crate::support::*;

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
