//! End states checked against the oracle computed from the test files'
//! lines alone (never from the daemon's own counters).

use std::collections::{BTreeSet, HashMap};

use super::daemon::Daemon;
use super::db::TestDb;
use super::files::*;

/// The whole database against the oracle, when exactly the files `done`
/// have been read and all of them are done. The files may share events
/// (each is stored once, from the first line of its id in the file whose
/// copy was written); rows of other files than `done` must not be stored.
pub fn assert_exact(db: &TestDb, d: &Daemon, done: &[&TestFile]) {
    let files = db.files();
    let firsts: HashMap<&str, HashMap<String, i64>> = done.iter().map(|f| (f.name.as_str(), f.first_lines())).collect();

    // Every stored event is the first line of its id in a file that has it.
    let events = db.stored();
    let mut per_file: HashMap<&str, i64> = HashMap::new();
    let mut places = BTreeSet::new();
    for (id, file, line) in &events {
        let first = firsts.get(file.as_str()).unwrap_or_else(|| panic!("event {id} stored from {file}, not expected"));
        assert_eq!(first.get(id), Some(line), "event {id} stored from {file}:{line}, not its first line there");
        *per_file.entry(file.as_str()).or_default() += 1;
        assert!(places.insert((file.as_str(), *line)), "{file}:{line} stored twice");
    }
    // Every distinct valid event is stored, once.
    let stored: BTreeSet<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
    let want: BTreeSet<&str> = firsts.values().flat_map(|m| m.keys().map(String::as_str)).collect();
    assert_eq!(stored.len(), events.len(), "an event_id stored twice");
    if stored != want {
        let missing: Vec<_> = want.difference(&stored).take(10).collect();
        let extra: Vec<_> = stored.difference(&want).take(10).collect();
        panic!("{} events stored, {} expected; missing {missing:?}; extra {extra:?}", stored.len(), want.len());
    }

    for f in done {
        let row = files.get(&f.name).unwrap_or_else(|| panic!("{} never registered", f.name));
        assert_eq!(row.state, "done", "{}: {row:?}", f.name);
        assert_eq!(row.rows, f.rows(), "{}: {row:?}", f.name);
        assert_eq!(row.rejected, f.rejects().len() as i64, "{}: {row:?}", f.name);
        assert_eq!(row.written + row.duplicate, f.valid(), "{}: {row:?}", f.name);
        assert_eq!(row.written, per_file.get(f.name.as_str()).copied().unwrap_or(0), "{}: {row:?}", f.name);
        assert!(path_exists(&d.processed().join(&f.name)), "{} not moved", f.name);
        assert!(!path_exists(&d.incoming().join(&f.name)), "{} still in incoming", f.name);
        // One line per reject in the rejects file: none torn, none twice.
        let rejects_file = d.bad_records().join(format!("{}.rejects.csv", f.name));
        if row.rejected > 0 {
            let text = std::fs::read_to_string(&rejects_file).unwrap();
            assert_eq!(text.lines().count() as i64, 1 + row.rejected, "{}", rejects_file.display());
        } else {
            assert!(!path_exists(&rejects_file), "{} without rejects has a rejects file", f.name);
        }
    }

    let mut want_rejects: Vec<_> = done.iter().flat_map(|f| f.rejects()).collect();
    want_rejects.sort();
    let mut got_rejects = db.rejects();
    got_rejects.sort();
    assert_eq!(got_rejects, want_rejects);
}

/// What a recount of the input files finds in the tables. Computed from
/// the files' lines alone (not from the daemon's counters), so a clean
/// result is `Recount::clean(n)`: `n` distinct events expected and stored,
/// every other field 0.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recount {
    /// Distinct valid event ids over all input files.
    pub events_expected: usize,
    /// Rows in `ecommerce_events`.
    pub events_stored: usize,
    /// Valid events of the input that are not stored.
    pub lost: usize,
    /// Stored rows beyond one per event id, and input lines stored twice.
    pub duplicated: usize,
    /// Stored from a place that is not the first line of its id in a file
    /// that holds it.
    pub wrong_line: usize,
    /// Stored events that no input line has.
    pub unexpected: usize,
    /// Bad lines without a reject.
    pub rejects_missing: usize,
    /// Rejects of lines that are not bad, or a line rejected twice.
    pub rejects_extra: usize,
    /// Rejects at a bad line, with another reason than the line's.
    pub wrong_reason: usize,
    /// Files whose `ingest_files` row is not done with the recounted rows,
    /// rejected, written (= stored from that file) and duplicate counts.
    pub wrong_counts: usize,
}

impl Recount {
    pub fn clean(events: usize) -> Recount {
        Recount { events_expected: events, events_stored: events, ..Recount::default() }
    }

    pub fn of(db: &TestDb, files: &[TestFile]) -> Recount {
        let mut r = Recount::default();
        // Where each id may be stored: its first line in each file that has it.
        let mut places: HashMap<String, BTreeSet<(&str, i64)>> = HashMap::new();
        for f in files {
            for (id, line) in f.first_lines() {
                places.entry(id).or_default().insert((f.name.as_str(), line));
            }
        }
        r.events_expected = places.len();

        let stored = db.stored();
        r.events_stored = stored.len();
        let mut ids = BTreeSet::new();
        let mut lines = BTreeSet::new();
        let mut per_file: HashMap<&str, i64> = HashMap::new();
        for (id, file, line) in &stored {
            if !ids.insert(id.as_str()) || !lines.insert((file.as_str(), *line)) {
                r.duplicated += 1;
            }
            *per_file.entry(file.as_str()).or_default() += 1;
            match places.get(id) {
                None => r.unexpected += 1,
                Some(p) if !p.contains(&(file.as_str(), *line)) => r.wrong_line += 1,
                Some(_) => {}
            }
        }
        r.lost = places.keys().filter(|id| !ids.contains(id.as_str())).count();

        let want: HashMap<(String, i64), String> =
            files.iter().flat_map(TestFile::rejects).map(|(f, l, reason)| ((f, l), reason)).collect();
        let mut seen = BTreeSet::new();
        for (file, line, reason) in db.rejects() {
            let key = (file, line);
            match want.get(&key) {
                _ if seen.contains(&key) => r.rejects_extra += 1,
                None => r.rejects_extra += 1,
                Some(w) if *w != reason => r.wrong_reason += 1,
                Some(_) => {}
            }
            seen.insert(key);
        }
        r.rejects_missing = want.keys().filter(|k| !seen.contains(*k)).count();

        let rows = db.files();
        for f in files {
            let ok = rows.get(&f.name).is_some_and(|row| {
                row.state == "done"
                    && row.rows == f.rows()
                    && row.rejected == f.rejects().len() as i64
                    && row.written + row.duplicate == f.valid()
                    && row.written == per_file.get(f.name.as_str()).copied().unwrap_or(0)
            });
            if !ok {
                r.wrong_counts += 1;
            }
        }
        r
    }
}

/// Every file is one identity, done with the counts its lines say (the
/// files share no event), nothing counted against it (no attempts), its
/// fingerprint that of its content; exactly the expected events and rejects
/// are stored. The folders are not looked at (see `assert_done_exactly`).
pub fn assert_committed_exactly(db: &TestDb, files: &[&TestFile]) {
    let identities = db.identities();
    let names: Vec<&str> = identities.iter().map(|i| i.name.as_str()).collect();
    let want_names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.iter().collect::<BTreeSet<_>>(), want_names.iter().collect::<BTreeSet<_>>());
    assert_eq!(names.len(), want_names.len(), "one identity per file: {identities:?}");
    for f in files {
        let id = identities.iter().find(|i| i.name == f.name).unwrap();
        assert_eq!((id.file.counts(), id.file.state.as_str()), (f.oracle(), "done"), "{}: {id:?}", f.name);
        assert!(id.file.adds_up(), "{}: {id:?}", f.name);
        assert_eq!(id.fingerprint, fingerprint_of(f.content().as_bytes()), "{}", f.name);
    }
    let attempts = db.scalar("SELECT coalesce(sum(attempts), 0)::bigint FROM ingest_files");
    assert_eq!(attempts, 0, "failures counted against files");
    db.assert_events(&files.iter().flat_map(|f| f.stored()).collect());
    let mut want_rejects: Vec<_> = files.iter().flat_map(|f| f.rejects()).collect();
    want_rejects.sort();
    assert_eq!(db.rejects(), want_rejects, "rejects: exactly the bad lines, each once");
}

/// `assert_committed_exactly`, and on disk: every file moved intact out of
/// incoming, its rejects file holding exactly its bad lines (none when it
/// has none).
pub fn assert_done_exactly(db: &TestDb, d: &Daemon, files: &[&TestFile]) {
    assert_committed_exactly(db, files);
    for f in files {
        assert_eq!(std::fs::read(d.processed().join(&f.name)).ok(), Some(f.content().into_bytes()), "{}", f.name);
        assert!(!path_exists(&d.incoming().join(&f.name)), "{} still in incoming", f.name);
        let path = d.bad_records().join(format!("{}.rejects.csv", f.name));
        if f.oracle().3 > 0 {
            assert_rejects_file(d, f);
        } else {
            assert!(!path_exists(&path), "{} without rejects has a rejects file", f.name);
        }
    }
}

/// The rejects file of `f` holds exactly its bad lines, each once, with
/// its reason and its raw text.
pub fn assert_rejects_file(d: &Daemon, f: &TestFile) {
    let want: Vec<(i64, String, Vec<u8>)> =
        f.bad_lines().into_iter().map(|(line, text, r)| (line, r.to_owned(), text.into_bytes())).collect();
    let path = d.bad_records().join(format!("{}.rejects.csv", f.name));
    let got = rejects_file(&path);
    assert_eq!(got.len(), want.len(), "{}", path.display());
    assert!(got == want, "{}: records differ from the bad lines", path.display());
}

/// Every file identity is done with `rows_each` rows, all written; one
/// identity per name; the events table holds exactly `names.len() ×
/// rows_each` rows; every file moved to processed/.
pub fn assert_all_written_once(db: &TestDb, d: &Daemon, names: &[String], rows_each: i64) {
    let ids = db.identities();
    let by_name: BTreeSet<&str> = ids.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(ids.len(), names.len(), "one identity per file (nothing read twice)");
    assert_eq!(by_name.len(), names.len(), "one identity per file name");
    for name in names {
        assert!(by_name.contains(name.as_str()), "{name} has no identity");
    }
    for id in &ids {
        let f = &id.file;
        assert!(f.adds_up(), "{}: {f:?}", id.name);
        assert_eq!(
            (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
            (rows_each, rows_each, 0, 0, "done"),
            "{}: {id:?}",
            id.name
        );
    }
    let total = names.len() as i64 * rows_each;
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), total, "events stored");
    assert_eq!(db.scalar("SELECT count(DISTINCT event_id) FROM ecommerce_events"), total, "distinct events");
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), 0, "no rejects");
    for name in names {
        assert!(path_exists(&d.processed().join(name)), "{name} not moved to processed/");
        assert!(!path_exists(&d.incoming().join(name)), "{name} still in incoming/");
    }
}
