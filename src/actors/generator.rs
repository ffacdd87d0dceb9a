//! Generator: writes synthetic event files to the contract, for demos and
//! benchmarks. Used by `ingestd generate` and, with `generator.enabled`, as
//! an actor inside `run`.
//!
//! - Receives: `StopIntake` (Supervisor).
//! - Emits: files in the incoming folder (temp name, then rename), nothing
//!   to other actors: the Watcher finds them like any producer's.
//! - State: the file counter, the random generator, recent event_ids (to
//!   make duplicates).
//! - On restart / drain: stops writing; a file is either renamed complete or
//!   not there.
//! - Backpressure: none needed; it writes one file per interval.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use chrono::{Duration as ChronoDuration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

use crate::messages::StopIntake;
use crate::metrics::metrics;

pub const HEADER: &str = "event_id,event_type,user_id,session_id,product_id,product_name,product_category,price,quantity,event_timestamp,device_type,user_agent";

const CATEGORIES: [&str; 6] = ["electronics", "books", "home", "garden", "toys", "fashion"];
const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const TYPES: [&str; 4] = ["view", "add_to_cart", "remove_from_cart", "purchase"];

#[derive(Debug, Clone)]
pub struct GenSpec {
    pub rows: u64,
    pub bad_frac: f64,
    pub dup_frac: f64,
}

/// What a generated file holds, by construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    pub rows: u64,
    pub bad: u64,
    pub duplicates: u64,
}

/// Makes rows. Keeps the last ids it wrote so duplicates can refer to rows
/// of earlier files too.
pub struct RowMaker {
    rng: StdRng,
    recent: Vec<Uuid>,
}

impl RowMaker {
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        RowMaker { rng, recent: Vec::new() }
    }

    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    /// One valid row.
    fn valid(&mut self, id: Uuid) -> [String; 12] {
        let r = &mut self.rng;
        let event_type = TYPES[r.random_range(0..TYPES.len())];
        let price = if event_type == "purchase" || r.random_bool(0.5) {
            format!("{}.{:02}", r.random_range(1..2000), r.random_range(0..100))
        } else {
            String::new()
        };
        let ts = Utc::now() - ChronoDuration::milliseconds(r.random_range(0..3_600_000));
        let product = r.random_range(1..5000);
        [
            id.to_string(),
            event_type.to_owned(),
            format!("user_{}", r.random_range(1..100_000)),
            format!("sess_{:08x}", r.random::<u32>()),
            format!("prod_{product}"),
            format!("Product {product}, \"deluxe\""),
            CATEGORIES[product as usize % CATEGORIES.len()].to_owned(),
            price,
            r.random_range(1..6).to_string(),
            ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            DEVICES[r.random_range(0..DEVICES.len())].to_owned(),
            "Mozilla/5.0 (X11; Linux x86_64)".to_owned(),
        ]
    }

    /// Writes one CSV file of `spec.rows` data rows to `out` (any writer).
    pub fn write_rows(&mut self, out: impl Write, spec: &GenSpec) -> io::Result<GenStats> {
        let mut w = csv::WriterBuilder::new().flexible(true).from_writer(out);
        w.write_record(HEADER.split(',')).map_err(io::Error::other)?;
        let mut stats = GenStats::default();
        for _ in 0..spec.rows {
            stats.rows += 1;
            let roll: f64 = self.rng.random();
            if roll < spec.bad_frac {
                stats.bad += 1;
                let kind = self.rng.random_range(0..10u32);
                let id = self.uuid();
                let mut row = self.valid(id);
                match kind {
                    0 => row[0] = "not-a-uuid".into(),
                    1 => row[1] = "click".into(),
                    2 => row[2] = String::new(),
                    3 => row[7] = "12.345".into(),
                    4 => row[8] = "0".into(),
                    5 => row[9] = "2026-02-30T10:00:00Z".into(),
                    6 => row[9] = (Utc::now() + ChronoDuration::days(3)).to_rfc3339(),
                    7 => row[10] = "watch".into(),
                    8 => {
                        row[1] = "purchase".into();
                        row[7] = String::new();
                    }
                    _ => {
                        // Wrong field count.
                        w.write_record(&row[..11]).map_err(io::Error::other)?;
                        continue;
                    }
                }
                w.write_record(&row).map_err(io::Error::other)?;
            } else if roll < spec.bad_frac + spec.dup_frac && !self.recent.is_empty() {
                stats.duplicates += 1;
                let id = self.recent[self.rng.random_range(0..self.recent.len())];
                let row = self.valid(id);
                w.write_record(&row).map_err(io::Error::other)?;
            } else {
                let id = self.uuid();
                if self.recent.len() < 10_000 {
                    self.recent.push(id);
                } else {
                    let i = self.rng.random_range(0..self.recent.len());
                    self.recent[i] = id;
                }
                let row = self.valid(id);
                w.write_record(&row).map_err(io::Error::other)?;
            }
        }
        w.flush()?;
        Ok(stats)
    }

    /// Writes `dir/name` as a producer should: under a temp name, fsynced,
    /// then renamed into place.
    /// Writes a file whole under a temp name, then renames it into `dir`,
    /// as a producer should.
    pub fn write_file(&mut self, dir: &Path, name: &str, spec: &GenSpec) -> io::Result<GenStats> {
        let target = dir.join(name);
        let mut file = crate::fsutil::AtomicFile::create(&target)?;
        let stats = self.write_rows(file.writer(), spec)?;
        file.commit(&target, true)?;
        Ok(stats)
    }
}

/// A file name that sorts by creation time and does not repeat.
pub fn file_name(seq: u64) -> String {
    format!("events_{}_{seq:06}.csv", Utc::now().format("%Y%m%dT%H%M%S%3f"))
}

pub struct Generator {
    out: PathBuf,
    spec: GenSpec,
    /// 0 = endless.
    files: u64,
    interval: Duration,
    written: u64,
    maker: Option<RowMaker>,
    seed: Option<u64>,
    stopped: bool,
}

impl Generator {
    pub fn new(out: PathBuf, spec: GenSpec, files: u64, interval: Duration, seed: Option<u64>) -> Self {
        Generator { out, spec, files, interval, written: 0, maker: None, seed, stopped: false }
    }

    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.stopped || (self.files != 0 && self.written >= self.files) {
            return;
        }
        let Some(mut maker) = self.maker.take() else { return };
        let (out, spec, seq) = (self.out.clone(), self.spec.clone(), self.written);
        let fut = async move {
            tokio::task::spawn_blocking(move || {
                let name = file_name(seq);
                let r = maker.write_file(&out, &name, &spec);
                (maker, name, r)
            })
            .await
        };
        ctx.wait(fut.into_actor(self).map(|res, act, _| match res {
            Ok((maker, name, r)) => {
                act.maker = Some(maker);
                act.written += 1;
                match r {
                    Ok(stats) => {
                        metrics().generated_files.inc();
                        tracing::info!(file = %name, rows = stats.rows, bad = stats.bad, duplicates = stats.duplicates, "generated file");
                    }
                    Err(e) => tracing::warn!(file = %name, error = %e, "cannot write generated file"),
                }
            }
            Err(e) => tracing::error!(error = %e, "generator task failed"),
        }));
    }
}

impl Actor for Generator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.maker = Some(RowMaker::new(self.seed));
        self.write_next(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.write_next(ctx));
    }
}

impl Handler<StopIntake> for Generator {
    type Result = ();
    fn handle(&mut self, _: StopIntake, _: &mut Context<Self>) {
        self.stopped = true;
    }
}
