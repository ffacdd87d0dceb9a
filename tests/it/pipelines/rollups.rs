//! Rollups kept exactly once (spec/pipelines.md, "Rollups"): files keep
//! arriving while the daemon is SIGKILLed again and again; afterwards every
//! rollup equals GROUP BY over its table and equals what an independent
//! model of the input says (computed here from the rows the test wrote).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::*;

const LIMIT: Duration = Duration::from_secs(90);

const DECLARATION: &str = r#"
name = "sales"
table = "sales"
key = ["sale_id"]
incoming = "sales/in"
processed = "sales/done"
bad_records = "sales/bad"

[columns.sale_id]
type = "int"
required = true

[columns.category]
type = "text"
max_len = 20

[columns.amount]
type = "decimal"
scale = 2
range = "[0, 100000)"
required = true

[columns.quantity]
type = "int"
range = "[1, 100]"
default = 1

[columns.sold_at]
type = "timestamp"
required = true

[derived]
total = { sql = "amount * quantity", sql_type = "numeric(14, 2)" }

[[rollups]]
table = "sales_by_category"
group_by = { category = "category" }
measures = { sales = "count(*)", revenue = "sum(total)", biggest = "max(amount)", smallest = "min(amount)" }

[[rollups]]
table = "sales_hourly"
group_by = { category = "category", hour = "date_trunc('hour', sold_at)" }
measures = { sales = "count(*)", items = "sum(quantity)" }
"#;

/// A sale as the model sees it: (category, amount in cents, quantity, hour
/// as epoch seconds).
type Sale = (Option<String>, i64, i64, i64);

/// One file: its text and the sales it holds that must count (first
/// occurrences of valid rows; duplicates repeat a sale exactly, so which
/// copy wins does not change any aggregate).
fn make_file(k: u64, rows: u64, random: &mut Lcg, earlier: &mut Vec<(u64, String)>) -> (String, Vec<(u64, Sale)>) {
    let categories = ["books", "games", "garden", "toys"];
    let base = 1_795_392_000 + 3600 * 24 * 5; // 2026-11-23T00:00:00Z + 5 days
    let mut text = String::from("sale_id,category,amount,quantity,sold_at\n");
    let mut sales = Vec::new();
    for r in 0..rows {
        let roll = random.below(100);
        if roll < 5 {
            text.push_str(&format!("{},books,not-a-number,1,2026-11-20 10:00:00\n", k * 100_000 + r));
            continue;
        }
        if roll < 10 && !earlier.is_empty() {
            let (_, line) = &earlier[random.below(earlier.len() as u64) as usize];
            text.push_str(line);
            continue;
        }
        let id = k * 100_000 + r;
        let category = if random.below(10) == 0 { None } else { Some(categories[random.below(4) as usize]) };
        let cents = 1 + random.below(9_999_900) as i64;
        let quantity = 1 + random.below(5) as i64;
        // Late rows too: any hour of the last five days.
        let at = base - random.below(5 * 24 * 3600) as i64;
        let line = format!(
            "{id},{},{}.{:02},{quantity},{}\n",
            category.unwrap_or(""),
            cents / 100,
            cents % 100,
            chrono::DateTime::from_timestamp(at, 0).unwrap().format("%Y-%m-%d %H:%M:%S")
        );
        text.push_str(&line);
        earlier.push((id, line));
        sales.push((id, (category.map(str::to_owned), cents, quantity, at - at.rem_euclid(3600))));
    }
    (text, sales)
}

#[test]
fn rollups_equal_their_group_by_and_the_model_across_sigkills() {
    const KILLS: usize = 10;
    let db = TestDb::new();
    db.client()
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), 'UTC'); END $$",
        )
        .unwrap();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__BATCH_ROWS", "150");
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:15");
    let decl = declare(&d, "sales.toml", DECLARATION);
    let p = load(&decl);
    let incoming = incoming_of(&d, &p);
    let mut random = Lcg(0x2545_f491_4f6c_dd1d);
    let mut earlier = Vec::new();
    let mut model: BTreeMap<u64, Sale> = BTreeMap::new();
    let mut k = 0u64;
    let mut arrive = |random: &mut Lcg| {
        let (text, sales) = make_file(k, 1200, random, &mut earlier);
        let tmp = incoming.join(format!(".f{k:02}.part"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, incoming.join(format!("f{k:02}.csv"))).unwrap();
        model.extend(sales);
        k += 1;
    };
    let (status, _, stderr) = d.output(&["migrate"]);
    assert!(status.success(), "{stderr}");
    let (mut kills, mut last, mut round, mut mid_file) = (0, 0, 0, 0);
    let committed = || db.scalar("SELECT coalesce(sum(rows_total), 0)::int8 FROM ingest_files");
    while kills < KILLS {
        assert!(round < 3 * KILLS, "only {kills} SIGKILLs landed in {round} rounds");
        // A file arrives with the daemon down, another while it runs.
        arrive(&mut random);
        let mut child = d.spawn(&["--pipeline", decl.to_str().unwrap()]);
        wait_until(LIMIT, "more rows committed since the last kill", || committed() > last);
        arrive(&mut random);
        std::thread::sleep(Duration::from_millis(random.below(300)));
        signal(&child, libc::SIGKILL);
        let status = wait_exit(&mut child, Duration::from_secs(10)).expect("a killed process exits");
        if status.signal() == Some(libc::SIGKILL) {
            kills += 1;
            mid_file += (db.scalar("SELECT count(*) FROM ingest_files WHERE state = 'in_progress'") > 0) as usize;
        }
        last = committed();
        // After every kill: what is committed adds up, rollups included.
        assert_rollups_exact(&db, &p);
        round += 1;
    }
    assert!(mid_file >= KILLS / 3, "only {mid_file} SIGKILLs landed with a file half committed");
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    let (rows, written, duplicate, rejected, unfinished) = totals(&db, "sales");
    assert_eq!((written, unfinished), (model.len() as i64, 0));
    assert_eq!(rows, written + duplicate + rejected);
    assert_rollups_exact(&db, &p);

    // The independent model: per category, and per category and hour.
    let mut by_category: BTreeMap<Option<String>, (i64, i64, i64, i64)> = BTreeMap::new();
    let mut hourly: BTreeMap<(Option<String>, i64), (i64, i64)> = BTreeMap::new();
    for (category, cents, quantity, hour) in model.values() {
        let c = by_category.entry(category.clone()).or_insert((0, 0, i64::MIN, i64::MAX));
        c.0 += 1;
        c.1 += cents * quantity;
        c.2 = c.2.max(*cents);
        c.3 = c.3.min(*cents);
        let h = hourly.entry((category.clone(), *hour)).or_insert((0, 0));
        h.0 += 1;
        h.1 += quantity;
    }
    let cents = |s: String| -> i64 { s.replace('.', "").parse().unwrap() };
    let kept: BTreeMap<Option<String>, (i64, i64, i64, i64)> = db
        .client()
        .query("SELECT category, sales, revenue::text, biggest::text, smallest::text FROM sales_by_category", &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), cents(r.get(2)), cents(r.get(3)), cents(r.get(4)))))
        .collect();
    assert_eq!(kept, by_category);
    let kept: BTreeMap<(Option<String>, i64), (i64, i64)> = db
        .client()
        .query("SELECT category, extract(epoch FROM hour)::int8, sales, items::int8 FROM sales_hourly", &[])
        .unwrap()
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    assert_eq!(kept, hourly);
    assert!(hourly.len() > 100, "many windows, late rows among them: {}", hourly.len());
}

/// A rollup declared over rows already stored is created and filled from
/// them, before anything new is ingested; then kept.
#[test]
fn a_new_rollup_is_filled_from_the_rows_already_stored() {
    let db = TestDb::new();
    let d = Daemon::new(&db);
    let without = DECLARATION.split("[[rollups]]").next().unwrap().to_owned();
    let decl = declare(&d, "sales.toml", &without);
    let p = load(&decl);
    let incoming = incoming_of(&d, &p);
    let mut earlier = Vec::new();
    let (text, first) = make_file(0, 500, &mut Lcg(7), &mut earlier);
    std::fs::write(incoming.join("a.csv"), text).unwrap();
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    assert_eq!(db.scalar("SELECT (to_regclass('sales_by_category') IS NULL)::int::int8"), 1);

    let decl = declare(&d, "sales.toml", DECLARATION);
    let (text, second) = make_file(1, 500, &mut Lcg(8), &mut earlier);
    std::fs::write(incoming.join("b.csv"), text).unwrap();
    assert!(run_until_idle(&d, &[&decl], LIMIT).success(), "{}", d.log());
    assert!(d.log().contains("created rollup sales_by_category"), "{}", d.log());
    assert_rollups_exact(&db, &load(&decl));
    assert_eq!(db.scalar("SELECT sum(sales)::int8 FROM sales_by_category"), (first.len() + second.len()) as i64);
}
