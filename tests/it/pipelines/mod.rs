//! Declared pipelines (spec/pipelines.md): the examples ingest what their
//! declarations generate, exactly; rollups kept exactly once across
//! SIGKILLs; tables created, evolved and refused; a previous release's
//! database upgraded in place; several pipelines in one daemon.

mod examples;
mod rollups;
mod tables;
mod together;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use ingestd::core::pipeline::Pipeline;

use crate::support::*;

/// An example declaration of the repository.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines").join(format!("{name}.toml"))
}

/// A declaration written into the daemon's folder.
pub fn declare(d: &Daemon, file: &str, text: &str) -> PathBuf {
    let path = d.dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn load(path: &Path) -> Pipeline {
    ingestd::pipelines::load_file(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The folder a declaration reads, in the daemon's folder (its working
/// directory), created.
pub fn incoming_of(d: &Daemon, p: &Pipeline) -> PathBuf {
    let dir = d.dir.path().join(p.incoming.as_ref().expect("the examples name their folders"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ingestd generate --pipeline`: the totals it printed (rows, bad,
/// duplicates).
pub fn generate(d: &Daemon, pipeline: &Path, out: &Path, files: u32, rows: u32, seed: u64) -> (i64, i64, i64) {
    let (files, rows, seed) = (files.to_string(), rows.to_string(), seed.to_string());
    let args = [
        "generate",
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--files",
        &files,
        "--rows",
        &rows,
        "--bad-frac",
        "0.05",
        "--dup-frac",
        "0.05",
        "--seed",
        &seed,
    ];
    let (status, stdout, stderr) = d.output(&args);
    assert!(status.success(), "{stderr}");
    let mut totals = (0, 0, 0);
    for line in stdout.lines() {
        let num = |key: &str| -> i64 {
            line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap()
        };
        totals.0 += num("rows=");
        totals.1 += num("bad=");
        totals.2 += num("duplicates=");
    }
    totals
}

/// `ingestd run --until-idle` with these pipelines; its exit status.
pub fn run_until_idle(d: &Daemon, pipelines: &[&Path], limit: Duration) -> ExitStatus {
    let mut args = vec!["--until-idle"];
    for p in pipelines {
        args.extend(["--pipeline", p.to_str().unwrap()]);
    }
    let mut child = d.spawn(&args);
    wait_exit(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("ingestd --until-idle did not finish within {limit:?}; log:\n{}", d.log())
    })
}

/// (rows, written, duplicate, rejected, files not done) of a pipeline in
/// `ingest_files`.
pub fn totals(db: &TestDb, pipeline: &str) -> (i64, i64, i64, i64, i64) {
    let row = db
        .client()
        .query_one(
            "SELECT coalesce(sum(rows_total), 0)::int8, coalesce(sum(rows_written), 0)::int8, \
             coalesce(sum(rows_duplicate), 0)::int8, coalesce(sum(rows_rejected), 0)::int8, \
             count(*) FILTER (WHERE state <> 'done') FROM ingest_files WHERE pipeline = $1",
            &[&pipeline],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

/// Every rollup of `p` equals `SELECT <group_by>, <measures> FROM <table>
/// GROUP BY <group_by>`, row for row (nulls a group of their own).
pub fn assert_rollups_exact(db: &TestDb, p: &Pipeline) {
    for r in &p.rollups {
        let group: Vec<String> = r.group_by.iter().map(|(n, e)| format!("({e}) AS {n}")).collect();
        let measures: Vec<String> = r.measures.iter().map(|(n, e, _)| format!("{e} AS {n}")).collect();
        let columns: Vec<&str> =
            r.group_by.iter().map(|(n, _)| n.as_str()).chain(r.measures.iter().map(|(n, _, _)| n.as_str())).collect();
        let positions: Vec<String> = (1..=r.group_by.len()).map(|n| n.to_string()).collect();
        let expected = format!(
            "SELECT {}, {} FROM {} GROUP BY {}",
            group.join(", "),
            measures.join(", "),
            p.table.quoted(),
            positions.join(", ")
        );
        let kept = format!("SELECT {} FROM {}", columns.join(", "), r.table.quoted());
        let diff = db.scalar(&format!("SELECT count(*) FROM (({expected}) EXCEPT ALL ({kept})) a"))
            + db.scalar(&format!("SELECT count(*) FROM (({kept}) EXCEPT ALL ({expected})) b"));
        let groups = db.scalar(&format!("SELECT count(*) FROM {}", r.table.quoted()));
        assert_eq!(
            diff,
            0,
            "rollup {} differs from GROUP BY over {} ({groups} groups)",
            r.table.plain(),
            p.table.plain()
        );
    }
}
