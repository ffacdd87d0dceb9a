//! Several pipelines in one daemon (spec/pipelines.md, "Which pipelines
//! run"): each with its own folders, table and lock; a stalled one does not
//! stop the others; two on one folder or table are refused; a derived
//! expression that fails on a row rejects that row only.

use std::time::Duration;

use super::*;

const LIMIT: Duration = Duration::from_secs(60);

fn simple(name: &str, table: &str, folder: &str) -> String {
    format!(
        "name = \"{name}\"\ntable = \"{table}\"\nkey = [\"id\"]\n\
         incoming = \"{folder}/in\"\nprocessed = \"{folder}/done\"\nbad_records = \"{folder}/bad\"\n\
         [columns.id]\ntype = \"int\"\nrequired = true\n\
         [columns.label]\ntype = \"text\"\n"
    )
}

fn rows(first: u64, n: u64) -> String {
    let mut s = String::from("id,label\n");
    for i in first..first + n {
        s.push_str(&format!("{i},row {i}\n"));
    }
    s
}

/// One pipeline's table is locked: its batches wait, the other pipeline's
/// files are all ingested meanwhile; once the lock goes, the first catches
/// up. The memory window is shared, and each keeps a batch's share.
#[test]
fn a_stalled_pipeline_does_not_stop_the_other() {
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "100");
    d.set("INGESTD_PIPELINE__BATCHES_IN_FLIGHT", "2");
    let a = declare(&d, "a.toml", &simple("alpha", "alpha_rows", "alpha"));
    let b = declare(&d, "b.toml", &simple("beta", "beta_rows", "beta"));
    let (in_a, in_b) = (incoming_of(&d, &load(&a)), incoming_of(&d, &load(&b)));
    let (status, _, stderr) =
        d.output(&["run", "--until-idle", "--pipeline", a.to_str().unwrap(), "--pipeline", b.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    let mut lock = db.client();
    lock.batch_execute("BEGIN; LOCK TABLE alpha_rows IN ACCESS EXCLUSIVE MODE").unwrap();
    for k in 0..5 {
        std::fs::write(in_a.join(format!("a{k}.csv")), rows(k * 1000, 500)).unwrap();
        std::fs::write(in_b.join(format!("b{k}.csv")), rows(k * 1000, 500)).unwrap();
    }
    let mut child = d.spawn(&["--pipeline", a.to_str().unwrap(), "--pipeline", b.to_str().unwrap()]);
    wait_until(LIMIT, "every file of beta done", || totals(&db, "beta") == (2500, 2500, 0, 0, 0));
    let (rows_a, ..) = totals(&db, "alpha");
    assert_eq!(rows_a, 0, "alpha waits for its table");
    lock.batch_execute("ROLLBACK").unwrap();
    wait_until(LIMIT, "every file of alpha done", || totals(&db, "alpha") == (2500, 2500, 0, 0, 0));
    let status = d.stop(&mut child, 30);
    assert!(status.success(), "{}", d.log());
    assert_eq!(db.scalar("SELECT count(*) FROM alpha_rows"), 2500);
    assert_eq!(db.scalar("SELECT count(*) FROM beta_rows"), 2500);
}

#[test]
fn two_pipelines_may_not_share_a_folder_or_a_table() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let a = declare(&d, "a.toml", &simple("alpha", "rows_a", "shared"));
    let b = declare(&d, "b.toml", &simple("beta", "rows_b", "shared"));
    let c = declare(&d, "c.toml", &simple("gamma", "rows_a", "gamma"));
    incoming_of(&d, &load(&a));
    for (other, key) in [(&b, "incoming"), (&c, "table")] {
        let (status, _, stderr) =
            d.output(&["check-config", "--pipeline", a.to_str().unwrap(), "--pipeline", other.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        let line = stderr.trim();
        assert!(!line.contains('\n') && line.contains("a.toml") && line.contains(key), "{line}");
    }
    assert!(!db.has_schema(), "nothing may reach the database on a bad declaration");
}

/// A derived expression that fails on a row (a division by zero) rejects
/// that row as `derived_failed` with the database's message; the rest of
/// its batch commits, and the rollup counts only what was written.
#[test]
fn a_failing_derived_expression_rejects_only_its_row() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let text = format!(
        "{}[columns.quantity]\ntype = \"int\"\nrange = \"[0, 10]\"\nrequired = true\n\
         [derived]\nper_item = {{ sql = \"100 / quantity\", sql_type = \"integer\" }}\n\
         [[rollups]]\ntable = \"split_totals\"\ngroup_by = {{ label = \"label\" }}\n\
         measures = {{ n = \"count(*)\", items = \"sum(per_item)\" }}\n",
        simple("split", "split_rows", "split")
    );
    let decl = declare(&d, "split.toml", &text);
    let p = load(&decl);
    let incoming = incoming_of(&d, &p);
    std::fs::write(incoming.join("s.csv"), "id,label,quantity\n1,x,4\n2,x,0\n3,x,5\n4,y,0\n5,y,10\n").unwrap();
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    assert_eq!(totals(&db, "split"), (5, 3, 0, 2, 0));
    let rejects = db.rejects();
    assert_eq!(
        rejects.iter().map(|(_, line, reason)| (*line, reason.as_str())).collect::<Vec<_>>(),
        [(3, "derived_failed"), (5, "derived_failed")]
    );
    let detail: String =
        db.client().query_one("SELECT detail FROM ingest_rejects WHERE source_line = 3", &[]).unwrap().get(0);
    assert!(detail.contains("division by zero"), "{detail}");
    assert_eq!(db.scalar("SELECT sum(per_item)::int8 FROM split_rows"), 25 + 20 + 10);
    assert_rollups_exact(&db, &p);
    assert_eq!(db.scalar("SELECT sum(n)::int8 FROM split_totals"), 3);
}

/// The built-in pipeline can be named like any other (its file), beside a
/// declared one: each ingests its own folder into its own table.
#[test]
fn the_builtin_pipeline_runs_beside_a_declared_one() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let builtin = example("ecommerce");
    let other = declare(&d, "b.toml", &simple("beta", "beta_rows", "beta"));
    std::fs::write(incoming_of(&d, &load(&other)).join("b.csv"), rows(1, 50)).unwrap();
    d.drop_file("e.csv", valid_file(1, 40).as_bytes());
    assert!(run_until_idle(&d, &[&builtin, &other], LIMIT).success(), "{}", d.log());
    assert_eq!(totals(&db, "ecommerce"), (40, 40, 0, 0, 0));
    assert_eq!(totals(&db, "beta"), (50, 50, 0, 0, 0));
}
