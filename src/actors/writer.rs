//! Writer: commits each batch in one transaction — events, rejects and the
//! file's checkpoint together — and tells the CheckpointKeeper.
//!
//! - Receives: `Validated` (Validator): batches, queued in order.
//! - Emits: `BatchCommitted` to its downstream (the CheckpointKeeper); drops
//!   the batch (and so returns its credit) only after that.
//! - State: a queue of accepted batches; `pipeline.writers` database
//!   connections of its own, each committing batches of a different file.
//! - On restart: queue and connection are dropped. An open transaction rolls
//!   back; one whose COMMIT was in flight is settled by the checkpoint fence
//!   when the batch is replayed.
//! - On drain: finishes its queue (the Supervisor waits for the credits).
//! - Backpressure: one transaction per connection; while the database is
//!   slow or down, batches wait here holding their credits, so the Parser
//!   stops.
//!
//! Transient failures (connection lost, shutdown, disk full, read-only,
//! timeouts) are retried forever with capped, jittered backoff: an outage
//! only pauses the pipeline. Anything else is reported to the Supervisor.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::core::pipeline::Pipeline;
use crate::core::reason::RejectReason;
use crate::core::validate::{validate_records, Validation};
use crate::db::sql::PipelineSql;
use crate::db::write::{
    commit_batch, commit_group, commit_isolated, connect, Batch, Counts, GroupOutcome, Outcome, Route, WriterConn,
};
use crate::db::{sql, DbError, Pool};
use crate::health::Health;
use crate::messages::{BatchCommitted, ChildFailed, FileId, Validated, ValidatedBatch};
use crate::metrics::{metrics, PipelineMetrics};
use crate::retry::Backoff;

/// Batches (of different files) committed in one transaction at most.
const MAX_GROUP: usize = 256;
/// Most transactions sent through staging after direct COPYs kept meeting
/// stored ids.
const MAX_STAGING_RUN: u32 = 64;

/// Picks the route of the next transaction: direct while ids keep being new.
/// A direct COPY that meets a stored id is wasted work, so after one the
/// next transactions go through staging: 1, then 2, 4, … up to
/// `MAX_STAGING_RUN` while conflicts follow each other (a file of ids
/// stored long ago), back down as direct COPYs succeed again (an id that
/// only raced in from another file).
#[derive(Debug, Default, Clone, Copy)]
struct RouteChooser {
    staging_left: u32,
    run: u32,
}

impl RouteChooser {
    fn route(&self) -> Route {
        if self.staging_left > 0 {
            Route::Staging
        } else {
            Route::Direct
        }
    }

    fn conflict(&mut self) {
        self.run = (self.run * 2).clamp(1, MAX_STAGING_RUN);
        self.staging_left = self.run;
    }

    fn committed(&mut self, route: Route) {
        match route {
            Route::Staging => self.staging_left = self.staging_left.saturating_sub(1),
            Route::Direct => self.run /= 2,
        }
    }
}
/// Longest pause between two tries of a batch.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

pub struct Writer {
    pool: Pool,
    downstream: Recipient<BatchCommitted>,
    supervisor: Recipient<ChildFailed>,
    health: Arc<Health>,
    /// What a connection needs to commit this pipeline's batches, and what
    /// isolating refused rows needs to read them again.
    job: Arc<Job>,
    /// Rows one transaction takes when it groups small files.
    group_rows: u64,
    queue: VecDeque<ValidatedBatch>,
    lanes: Vec<Lane>,
    routes: RouteChooser,
}

/// The Writer's knobs, from the config.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub pipeline: Arc<Pipeline>,
    pub sql: Arc<PipelineSql>,
    /// `database.batch_timeout_secs`.
    pub batch_timeout: Duration,
    /// `pipeline.writers`: connections.
    pub writers: usize,
    pub max_record_bytes: usize,
    /// `pipeline.batch_rows`: rows one grouped transaction takes.
    pub batch_rows: usize,
}

impl Writer {
    pub fn new(
        pool: Pool,
        downstream: Recipient<BatchCommitted>,
        supervisor: Recipient<ChildFailed>,
        health: Arc<Health>,
        settings: WriterSettings,
    ) -> Self {
        Writer {
            pool,
            downstream,
            supervisor,
            health,
            job: Arc::new(Job {
                m: metrics().pipeline(&settings.pipeline.name),
                pipeline: settings.pipeline,
                sql: settings.sql,
                timeout: settings.batch_timeout,
                max_record_bytes: settings.max_record_bytes,
            }),
            group_rows: settings.batch_rows as u64,
            queue: VecDeque::new(),
            lanes: (0..settings.writers.max(1)).map(|_| Lane::default()).collect(),
            routes: RouteChooser::default(),
        }
    }

    /// Starts a transaction on every idle connection that has work: the
    /// oldest queued batch of a file not being written on another
    /// connection (so each file's batches commit in order), joined by more
    /// such batches of other files while they fit in one batch's rows — many
    /// small files then cost one transaction, not one each.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        for lane in 0..self.lanes.len() {
            if !self.lanes[lane].files.is_empty() {
                continue;
            }
            let group = self.take_group();
            if group.is_empty() {
                return;
            }
            self.start(lane, group, ctx);
        }
    }

    fn take_group(&mut self) -> Vec<ValidatedBatch> {
        // Files whose next batch may not go now: being written on another
        // lane, or skipped below (a later batch must not overtake it).
        let mut blocked: HashSet<FileId> = self.lanes.iter().flat_map(|l| l.files.iter().copied()).collect();
        let mut names: HashSet<String> = HashSet::new();
        let mut group: Vec<ValidatedBatch> = Vec::new();
        let mut rows = 0u64;
        let mut i = 0;
        while i < self.queue.len() && group.len() < MAX_GROUP {
            let b = &self.queue[i];
            let id = b.file.file_id;
            let alone = b.end.is_abort();
            let fits = group.is_empty()
                || (!alone
                    && rows + b.rows <= self.group_rows
                    && !names.contains(&b.file.name)
                    && !group[0].end.is_abort());
            if blocked.contains(&id) || !fits {
                blocked.insert(id);
                i += 1;
                continue;
            }
            let b = self.queue.remove(i).expect("index is in range");
            blocked.insert(id);
            names.insert(b.file.name.clone());
            rows += b.rows;
            group.push(b);
            if alone {
                break;
            }
        }
        group
    }

    fn start(&mut self, lane: usize, group: Vec<ValidatedBatch>, ctx: &mut Context<Self>) {
        self.lanes[lane].files = group.iter().map(|b| b.file.file_id).collect();
        let pool = self.pool.clone();
        let downstream = self.downstream.clone();
        let health = self.health.clone();
        let job = self.job.clone();
        let conn = self.lanes[lane].conn.take();
        let mut routes = self.routes;
        let fut = async move {
            let (conn, result) = if group.len() == 1 {
                let (conn, r) = write_with_retry(&pool, conn, &group[0], &job, &health, &mut routes).await;
                (conn, r.map(|c| vec![c]).map_err(|e| (group[0].file.file_id, e)))
            } else {
                write_group(&pool, conn, &group, &job, &health, &mut routes).await
            };
            if let Ok(counts) = &result {
                for (b, c) in group.iter().zip(counts) {
                    let committed = BatchCommitted {
                        file: b.file.clone(),
                        counts: *c,
                        end: b.end.clone(),
                        end_offset: b.end_offset,
                    };
                    let _ = downstream.send(committed).await;
                }
            }
            // The batches, and with them their credits, are released here:
            // after the CheckpointKeeper has them.
            drop(group);
            (conn, routes, result)
        };
        ctx.spawn(fut.into_actor(self).map(move |(conn, routes, result), act, ctx| {
            act.lanes[lane] = Lane { conn, files: Vec::new() };
            // A heuristic shared by the lanes: the latest word wins.
            act.routes = routes;
            match result {
                Ok(_) => act.pump(ctx),
                Err((file_id, e)) => {
                    act.supervisor.do_send(ChildFailed {
                        pipeline: act.job.pipeline.name.clone(),
                        actor: "writer",
                        file: Some(file_id),
                        error: e.to_string(),
                    });
                    ctx.stop();
                }
            }
        }));
    }
}

/// What committing a pipeline's batches takes.
struct Job {
    pipeline: Arc<Pipeline>,
    m: PipelineMetrics,
    sql: Arc<PipelineSql>,
    timeout: Duration,
    /// For reading a refused batch again (`isolate`).
    max_record_bytes: usize,
}

/// One writer connection and the files it is committing batches of.
#[derive(Default)]
struct Lane {
    /// Taken out while a transaction runs, put back after (none after a
    /// failure: a connection that failed once is not trusted again).
    conn: Option<WriterConn>,
    files: Vec<FileId>,
}

/// Commits a group of batches of different files in one transaction,
/// retrying transient failures. Anything else (a fence that does not match
/// every file, a row the database refuses) falls back to committing the
/// batches one by one, where each case is settled on its own.
async fn write_group(
    pool: &Pool,
    mut conn: Option<WriterConn>,
    group: &[ValidatedBatch],
    job: &Job,
    health: &Health,
    routes: &mut RouteChooser,
) -> (Option<WriterConn>, Result<Vec<Counts>, (FileId, DbError)>) {
    let mut backoff = Backoff::new(BACKOFF_CAP);
    let mut route = routes.route();
    let timeout = job.timeout;
    let batches: Vec<Batch<'_>> = group.iter().map(ValidatedBatch::as_db).collect();
    loop {
        let started = Instant::now();
        let result = async {
            let c = connected(pool, &mut conn, job).await?;
            match tokio::time::timeout(timeout, commit_group(c, &batches, route)).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Timeout { context: "group transaction", timeout }),
            }
        }
        .await;
        match result {
            Ok(GroupOutcome::Committed(counts)) => {
                health.set_db_ok(true);
                job.m.batch_seconds.observe(started.elapsed().as_secs_f64());
                for (b, c) in group.iter().zip(&counts) {
                    count_committed(&job.m, b.rejects.iter().map(|r| r.reason), c);
                }
                routes.committed(route);
                tracing::debug!(
                    files = group.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "group committed"
                );
                return (conn, Ok(counts));
            }
            Ok(GroupOutcome::Conflict) => {
                // A key is already stored: through staging, now and for a while.
                routes.conflict();
                route = Route::Staging;
            }
            Err(e) if e.is_transient() => {
                let what = format!("a group of {} files", group.len());
                back_off(pool, &mut conn, &e, &mut backoff, health, &job.m, &what).await;
            }
            Err(e) => {
                tracing::info!(files = group.len(), reason = %e, "committing the group's batches one by one");
                let mut all = Vec::with_capacity(group.len());
                for b in group {
                    let (c, r) = write_with_retry(pool, conn, b, job, health, routes).await;
                    conn = c;
                    match r {
                        Ok(counts) => all.push(counts),
                        Err(e) => return (conn, Err((b.file.file_id, e))),
                    }
                }
                return (conn, Ok(all));
            }
        }
    }
}

/// Commits one batch, retrying transient failures until it succeeds. Returns
/// the connection to keep (none after a failure) and the outcome.
async fn write_with_retry(
    pool: &Pool,
    mut conn: Option<WriterConn>,
    batch: &ValidatedBatch,
    job: &Job,
    health: &Health,
    routes: &mut RouteChooser,
) -> (Option<WriterConn>, Result<Counts, DbError>) {
    if batch.end.is_abort() {
        // Nothing to write: the CheckpointKeeper parks or releases the file.
        return (conn, Ok(Counts::default()));
    }
    let mut backoff = Backoff::new(BACKOFF_CAP);
    let mut route = routes.route();
    let timeout = job.timeout;
    let db_batch = batch.as_db();
    loop {
        crate::failpoints::hit("writer_batch", &batch.file.name);
        let started = Instant::now();
        let result = async {
            let c = connected(pool, &mut conn, job).await?;
            match tokio::time::timeout(timeout, commit_batch(c, &db_batch, route)).await {
                Ok(r) => r,
                Err(_) => Err(DbError::Timeout { context: "batch transaction", timeout }),
            }
        }
        .await;
        match result {
            Ok(Outcome::Conflict) => {
                // A key of this batch is already stored: redo it through
                // staging, and keep to staging for a while.
                routes.conflict();
                route = Route::Staging;
            }
            Ok(outcome) => {
                routes.committed(route);
                health.set_db_ok(true);
                let counts = match outcome {
                    Outcome::Committed(c) => {
                        job.m.batch_seconds.observe(started.elapsed().as_secs_f64());
                        count_committed(&job.m, batch.rejects.iter().map(|r| r.reason), &c);
                        c
                    }
                    Outcome::AlreadyCommitted | Outcome::Conflict => {
                        tracing::info!(file = %batch.file.name, offset = batch.end_offset, "batch was already committed; not written again");
                        Counts::default()
                    }
                };
                tracing::debug!(file = %batch.file.name, rows = counts.rows, written = counts.written, "batch committed");
                return (conn, Ok(counts));
            }
            Err(e) if e.is_transient() => {
                back_off(pool, &mut conn, &e, &mut backoff, health, &job.m, &batch.file.name).await;
            }
            Err(e) if e.is_data_error() => {
                // Never retry the whole batch forever: find the rows at fault.
                let Some(c) = conn.as_mut() else { return (None, Err(e)) };
                tracing::error!(file = %batch.file.name, error = %e, "PostgreSQL refused data the validator accepted (the validator and the schema disagree); isolating the rows at fault");
                return match isolate(c, batch, job).await {
                    Ok(counts) => (conn, Ok(counts)),
                    Err(e2) => {
                        tracing::error!(file = %batch.file.name, error = %e2, "cannot isolate the refused rows");
                        (None, Err(e))
                    }
                };
            }
            Err(e) => return (None, Err(e)),
        }
    }
}

/// After a transient failure: readiness off, the connection dropped (a
/// connection that failed once is not trusted again; a stalled backend is
/// terminated first), then a capped, jittered, growing pause.
async fn back_off(
    pool: &Pool,
    conn: &mut Option<WriterConn>,
    e: &DbError,
    backoff: &mut Backoff,
    health: &Health,
    m: &PipelineMetrics,
    what: &str,
) {
    health.set_db_ok(false);
    m.db_errors.inc();
    if let (DbError::Timeout { .. }, Some(stale)) = (e, conn.as_ref()) {
        terminate_backend(pool, stale.pid).await;
    }
    *conn = None;
    let delay = backoff.next_delay();
    tracing::warn!(batch = what, error = %e, attempt = backoff.attempts(), retry_in_ms = delay.as_millis() as u64, "batch not committed; retrying");
    tokio::time::sleep(delay).await;
}

/// The Writer's connection, opened if there is none (within the batch
/// timeout).
async fn connected<'a>(
    pool: &Pool,
    conn: &'a mut Option<WriterConn>,
    job: &Job,
) -> Result<&'a mut WriterConn, DbError> {
    if conn.is_none() {
        let timeout = job.timeout;
        *conn = Some(
            tokio::time::timeout(timeout, connect(pool, job.sql.clone()))
                .await
                .map_err(|_| DbError::Timeout { context: "writer connect", timeout })??,
        );
    }
    Ok(conn.as_mut().expect("set just above"))
}

/// Metrics of one committed batch, with its rejects' reasons.
fn count_committed(m: &PipelineMetrics, reasons: impl Iterator<Item = RejectReason>, c: &Counts) {
    m.batches.inc();
    m.rows_written.inc_by(c.written);
    m.rows_duplicate.inc_by(c.duplicate);
    m.rows_rejected.inc_by(c.rejected);
    for r in reasons {
        m.reject(r);
    }
}

/// Reads the batch's records again, validates them again (the same
/// `validate_records` as the Validator, without presumed duplicates), and
/// commits them row by row where the database refuses them (see
/// `db::write::commit_isolated`). The reading and validating run on the
/// blocking pool.
async fn isolate(conn: &mut WriterConn, batch: &ValidatedBatch, job: &Job) -> Result<Counts, DbError> {
    let task = (*batch.file).clone();
    let (start, line, end) = (batch.start_offset, batch.start_line, batch.end_offset);
    let header = batch.header.clone();
    let pipeline = job.pipeline.clone();
    let max_record_bytes = job.max_record_bytes;
    let (checked, records) = tokio::task::spawn_blocking(move || {
        let records = crate::source::read_range(&task, &pipeline.schema, start, line, end, max_record_bytes)?;
        let mut room = bytes::BytesMut::new();
        let checked = validate_records(
            &pipeline.schema,
            &header,
            records.iter(),
            &task.name,
            chrono::Utc::now(),
            &mut Validation::default(),
            &mut room,
        );
        Ok::<_, crate::source::ReadError>((checked, records))
    })
    .await
    .map_err(|e| DbError::Reread(e.to_string()))?
    .map_err(|e| DbError::Reread(e.to_string()))?;
    let raw_of = |line: u64| {
        records
            .binary_search_by_key(&line, |r| r.line)
            .map(|i| (records[i].raw.clone(), records[i].raw_truncated))
            .unwrap_or_default()
    };
    let timeout = job.timeout;
    let isolated = tokio::time::timeout(timeout, commit_isolated(conn, &batch.as_db(), checked, &raw_of))
        .await
        .map_err(|_| DbError::Timeout { context: "isolating refused rows", timeout })??;
    job.m.schema_refusals.inc_by(isolated.refused);
    Ok(match isolated.outcome {
        Outcome::Committed(c) => {
            count_committed(&job.m, isolated.reasons.into_iter(), &c);
            c
        }
        Outcome::AlreadyCommitted | Outcome::Conflict => Counts::default(),
    })
}

/// A backend that stopped answering may still commit when it wakes up;
/// end it before the batch is replayed (the fence makes a late commit
/// harmless anyway).
async fn terminate_backend(pool: &Pool, pid: i32) {
    let attempt = async {
        let conn = pool.get().await.ok()?;
        conn.execute(sql::TERMINATE_BACKEND, &[&pid]).await.ok()
    };
    if tokio::time::timeout(Duration::from_secs(5), attempt).await.is_err() {
        tracing::warn!(pid, "could not terminate a stalled database backend");
    }
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::actors::mailbox_capacity());
    }
}

impl Handler<Validated> for Writer {
    type Result = ();
    fn handle(&mut self, msg: Validated, ctx: &mut Context<Self>) {
        self.queue.extend(msg.0);
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::testing::{wait_for, Collector};
    use crate::core::header::Header;
    use crate::core::pipeline::builtin;
    use crate::core::reader::RecordReader;
    use crate::core::record::{RawRecord, RecordBatch};
    use crate::credit::{Credits, Window};
    use crate::db::embedded::{EmbeddedPg, DEFAULT_DB};
    use crate::db::files::{self, Identity};
    use crate::messages::{BatchEnd, FileTask, ParsedBatch};

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    const C: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";
    const D: &str = "886313e1-3b8a-4372-9b90-0c9aee199e5d";

    /// The whole file as one validated batch, as the Parser and the
    /// Validator would hand it on, holding a credit of `credits`.
    async fn batch(file: &Arc<FileTask>, text: &str, credits: &Credits) -> ValidatedBatch {
        let mut reader = RecordReader::new(text.as_bytes(), 0, 1, 1 << 20);
        let mut rec = RawRecord::default();
        reader.read_header(&mut rec).unwrap();
        let header = Header::parse(&builtin().schema, &rec);
        let mut records = RecordBatch::with_capacity(8, text.len());
        while reader.read_record(&mut rec).unwrap() {
            records.push(&rec);
        }
        let mut step = credits.step().await.unwrap();
        let parsed = ParsedBatch {
            file: file.clone(),
            header: Arc::new(header),
            start_offset: 0,
            start_line: 1,
            end_offset: text.len() as u64,
            end_line: reader.line(),
            credit: step.split(500, records.len()),
            records,
            end: BatchEnd::Eof,
        };
        let checked = validate_records(
            &builtin().schema,
            &parsed.header,
            parsed.records.iter(),
            &file.name,
            chrono::Utc::now(),
            &mut Validation::default(),
            &mut bytes::BytesMut::new(),
        );
        ValidatedBatch::new(parsed, checked)
    }

    /// The Writer alone against a real PostgreSQL, a collector downstream:
    /// a batch's rows, rejects and checkpoint commit together (a row the
    /// table refuses is isolated and rejected, the rest commits), its
    /// counts go downstream, its credit comes back once it is dropped; the
    /// same batch sent again meets the checkpoint fence and writes nothing.
    #[actix_rt::test]
    async fn commits_a_batch_with_its_checkpoint_and_a_replay_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let pg = EmbeddedPg::start(&dir.path().join("pg")).expect("embedded PostgreSQL");
        let pool = crate::db::build_pool(pg.url(DEFAULT_DB).parse().unwrap(), 2);
        crate::db::migrate::run(&pool).await.unwrap();
        // A table that drifted from the contract: it refuses product p9.
        let conn = pool.get().await.unwrap();
        conn.batch_execute("ALTER TABLE ecommerce_events ADD CONSTRAINT no_p9 CHECK (product_id <> 'p9')")
            .await
            .unwrap();

        let text = format!(
            "event_id,event_type,user_id,product_id,event_timestamp\n\
             {A},view,u1,p1,2026-01-01 00:00:00\n\
             nope,view,u2,p2,2026-01-01 00:00:00\n\
             {A},view,u3,p3,2026-01-01 00:00:00\n\
             {B},purchase,u4,p4,2026-01-01 00:00:00\n\
             {C},view,u5,p9,2026-01-01 00:00:00\n\
             {D},view,u6,p6,2026-01-01 00:00:00\n"
        );
        let path = dir.path().join("f.csv");
        std::fs::write(&path, &text).unwrap();
        let identity =
            Identity { path: path.display().to_string(), name: "f.csv", fingerprint: "fp", size: text.len() as u64 };
        let claimed = files::claim(&pool, "ecommerce", &[identity]).await.unwrap();
        let file = Arc::new(FileTask {
            file_id: claimed[0].id,
            path: path.clone(),
            name: "f.csv".into(),
            fingerprint: "fp".into(),
            size: text.len() as u64,
            stamp: crate::fsutil::Stamp { size: 0, mtime_ns: 0, ino: 0 },
            gzip: false,
            offset: 0,
            line: 1,
        });

        let (collector, got) = Collector::<BatchCommitted>::start();
        let (failures, failed) = Collector::<ChildFailed>::start();
        let settings = WriterSettings {
            pipeline: builtin(),
            sql: Arc::new(PipelineSql::new(&builtin())),
            batch_timeout: Duration::from_secs(30),
            writers: 1,
            max_record_bytes: 1 << 20,
            batch_rows: 10_000,
        };
        let writer =
            Writer::new(pool.clone(), collector.recipient(), failures.recipient(), Arc::new(Health::new(1)), settings)
                .start();
        let credits = Window::new(1, 1).for_pipeline();
        writer.send(Validated(vec![batch(&file, &text, &credits).await])).await.unwrap();
        wait_for(&got, 1).await;
        {
            let done = &got.lock().unwrap()[0];
            let c = done.counts;
            assert_eq!((c.rows, c.written, c.duplicate, c.rejected), (6, 2, 1, 3));
            assert_eq!(c.file_done.map(|t| (t.rows, t.written, t.duplicate, t.rejected)), Some((6, 2, 1, 3)));
            assert_eq!(done.end_offset, text.len() as u64);
        }
        let q = |sql: &'static str| {
            let pool = pool.clone();
            async move { pool.get().await.unwrap().query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
        };
        assert_eq!(q("SELECT string_agg(product_id, ',' ORDER BY product_id) FROM ecommerce_events").await, "p1,p6");
        assert_eq!(
            q("SELECT string_agg(source_line || ':' || reason, ',' ORDER BY source_line) FROM ingest_rejects").await,
            "3:invalid_uuid,5:purchase_without_price,6:out_of_range"
        );
        assert_eq!(
            q("SELECT state || ' ' || committed_offset || ' ' || committed_line FROM ingest_files").await,
            format!("done {} 8", text.len())
        );
        // The batch was dropped after its commit: its credit is back.
        let back = tokio::time::timeout(Duration::from_secs(5), credits.step()).await;
        assert!(matches!(back, Ok(Some(_))), "the credit came back");
        drop(back);

        // A replay of the same batch (after a crash, say) meets the fence.
        writer.send(Validated(vec![batch(&file, &text, &credits).await])).await.unwrap();
        wait_for(&got, 2).await;
        let c = got.lock().unwrap()[1].counts;
        assert_eq!((c.rows, c.written, c.duplicate, c.rejected), (0, 0, 0, 0));
        assert_eq!(q("SELECT count(*)::text FROM ecommerce_events").await, "2");
        assert_eq!(q("SELECT count(*)::text FROM ingest_rejects").await, "3");
        assert!(failed.lock().unwrap().is_empty());
    }
}
