//! CheckpointKeeper: owns the file states in `ingest_files` (claims,
//! finishing, failures, parking) and starts the disk work of finished
//! files.
//!
//! - Receives: `ClaimFiles`, `Skipped` (Watcher), `BatchCommitted`
//!   (Writer), `RecordFailure` (Supervisor).
//! - Emits: `FileFinished` to the Watcher.
//! - State: the files whose after-commit disk work is running
//!   ([`DiskWork`], which the drain waits on); files waiting for the next
//!   mark-done or move round; the bytes of the files being read that are
//!   not committed yet ([`InFlightBytes`], for the progress shown).
//! - On restart: nothing is kept; the table is the state.
//! - On drain: the Supervisor waits until its disk work is done (or the
//!   deadline passes: the next start redoes it).
//! - Backpressure: claims are one statement per round; the Watcher limits
//!   how many files are in flight.
//!
//! A file is done only when its last batch is committed and its rows add up
//! (rows = written + duplicate + rejected). Usually the last batch's own
//! transaction marks it (`sql::ADVANCE_CHECKPOINT`); when it did not (a
//! replayed last batch), this actor does. Either way one info line says so,
//! with the file's counts and, when it has rejects, its rejects by reason
//! (one query; a file without rejects costs none). The disk work after that
//! (`crate::disposal`: the rejects file, the move) is idempotent and
//! retried: if we die in the middle, the next claim of the same identity
//! answers `Done` and the work is redone, without reading a row again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::db::files::{self, FileState, FileTotals, Identity, MarkedDone};
use crate::db::{DbError, Pool};
use crate::disposal::{self, DiskError, Disposal, RejectsFile};
use crate::messages::{
    BatchCommitted, BatchEnd, Claim, ClaimFiles, FileFinished, FileTask, Left, RecordFailure, SetWatcher, Skipped,
};
use crate::metrics::{metrics, PipelineMetrics};
use crate::progress::InFlightBytes;
use crate::retry::{retry, Backoff};

/// Rejects fetched per query when writing a rejects file.
const REJECTS_PAGE: i64 = 10_000;
/// Longest wait between two tries of the bookkeeping and the disk work.
const RETRY_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KeeperSettings {
    /// The pipeline's name, stored with its files.
    pub pipeline: String,
    pub disposal: Disposal,
    pub max_file_attempts: u32,
}

pub struct CheckpointKeeper {
    pool: Pool,
    m: PipelineMetrics,
    settings: Arc<KeeperSettings>,
    watcher: Option<Recipient<FileFinished>>,
    /// Files whose after-commit disk work has not finished (the drain
    /// waits for none).
    disk: Arc<DiskWork>,
    /// Files to mark done in the next round, and whether a round runs.
    to_mark: Vec<Arc<FileTask>>,
    marking: bool,
    /// Files done without rejects, waiting to be moved in the next round,
    /// and whether a round runs.
    to_move: Vec<Arc<FileTask>>,
    moving: bool,
    /// The latest set of entries not read, waiting to be recorded, and
    /// whether a recording runs.
    skipped: Option<Vec<crate::messages::SkippedEntry>>,
    recording_skipped: bool,
    /// The last read error said of each file that could not be read.
    read_errors: HashMap<i64, String>,
    /// Bytes of the files claimed for reading not committed yet.
    reading: InFlightBytes,
}

impl CheckpointKeeper {
    pub fn new(pool: Pool, settings: KeeperSettings) -> Self {
        CheckpointKeeper {
            pool,
            m: metrics().pipeline(&settings.pipeline),
            settings: Arc::new(settings),
            watcher: None,
            disk: Arc::new(DiskWork::default()),
            to_mark: Vec::new(),
            marking: false,
            to_move: Vec::new(),
            moving: false,
            skipped: None,
            recording_skipped: false,
            read_errors: HashMap::new(),
            reading: InFlightBytes::default(),
        }
    }

    /// The count of files whose disk work is under way, for the drain.
    pub fn disk_work(&self) -> Arc<DiskWork> {
        self.disk.clone()
    }

    fn show_bytes_in_flight(&self) {
        self.m.bytes_in_flight.set(self.reading.remaining() as i64);
    }

    fn tell_watcher(&self, file: &FileTask, left: Left) {
        if let Some(w) = &self.watcher {
            w.do_send(FileFinished { path: file.path.clone(), left });
        }
    }

    /// A file whose last batch is committed but not marked done by its own
    /// transaction: queued for the next mark-done round.
    fn last_batch_committed(&mut self, file: Arc<FileTask>, ctx: &mut Context<Self>) {
        self.disk.start();
        self.to_mark.push(file);
        self.mark_queued(ctx);
    }

    /// Marks every queued file done in one statement (many small files
    /// finish at once), retrying while the database is away, then starts
    /// each file's disk work. One round at a time; files queued meanwhile go
    /// in the next round.
    fn mark_queued(&mut self, ctx: &mut Context<Self>) {
        if self.marking || self.to_mark.is_empty() {
            return;
        }
        self.marking = true;
        let files = std::mem::take(&mut self.to_mark);
        let pool = self.pool.clone();
        let m = self.m.clone();
        let fut = async move {
            let ids: Vec<i64> = files.iter().map(|f| f.file_id).collect();
            let marked = retry("cannot mark files done", Backoff::new(RETRY_CAP), None, DbError::is_transient, || {
                files::mark_done(&pool, &ids)
            })
            .await;
            let done: HashMap<i64, FileTotals> = marked.unwrap_or_else(|e| {
                tracing::error!(files = ids.len(), error = %e, "cannot mark files done");
                HashMap::new()
            });
            m.files_done.inc_by(done.len() as u64);
            (files, done)
        };
        ctx.spawn(fut.into_actor(self).map(|(files, done), act, ctx| {
            act.marking = false;
            tracing::debug!(files = files.len(), "marked done");
            for file in files {
                let finish = match done.get(&file.file_id) {
                    Some(totals) => Finish::Marked(*totals),
                    None => Finish::Unmarked,
                };
                act.dispose(file, finish, ctx);
            }
            act.mark_queued(ctx);
        }));
    }

    /// A file its last batch's transaction marked done: its disk work.
    /// Files without rejects only need moving, and many small files finish
    /// at once: they are moved in rounds, one trip to the blocking pool per
    /// round. A move that fails is retried alone (`dispose`).
    fn marked_done(&mut self, file: Arc<FileTask>, totals: FileTotals, ctx: &mut Context<Self>) {
        self.m.files_done.inc();
        self.disk.start();
        if totals.rejected > 0 {
            self.dispose(file, Finish::Marked(totals), ctx);
            return;
        }
        announce(self.m.name(), &file, totals, &Ok(Vec::new()));
        self.to_move.push(file);
        self.move_queued(ctx);
    }

    fn move_queued(&mut self, ctx: &mut Context<Self>) {
        if self.moving || self.to_move.is_empty() {
            return;
        }
        self.moving = true;
        let files = std::mem::take(&mut self.to_move);
        let settings = self.settings.clone();
        let fut = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|file| {
                    crate::failpoints::hit("before_disk_work", &file.name);
                    crate::failpoints::hit("before_move", &file.name);
                    let moved = disposal::dispose(&settings.disposal, &file);
                    (file, moved)
                })
                .collect::<Vec<_>>()
        });
        ctx.spawn(fut.into_actor(self).map(|moved, act, ctx| {
            act.moving = false;
            match moved {
                Ok(moved) => {
                    for (file, result) in moved {
                        match result {
                            Ok(kept) => {
                                act.disk.end();
                                act.tell_watcher(&file, left_by(&file, kept));
                            }
                            Err(e) => {
                                act.m.disk_errors.inc();
                                tracing::warn!(file = %file.name, error = %e, "after-commit disk work failed; retrying");
                                act.dispose(file, Finish::Known { rejected: 0 }, ctx);
                            }
                        }
                    }
                }
                // The round's files stay counted; the next start redoes
                // their disk work (they are done in the table).
                Err(e) => tracing::error!(error = %e, "moving finished files failed"),
            }
            act.move_queued(ctx);
        }));
    }

    /// The disk work of one file (counted in `disk` by the caller), once a
    /// statement said it is done; a file no statement marked is marked alone
    /// first (`mark_one_done` says why not, and parks it if its rows do not
    /// add up).
    fn dispose(&mut self, file: Arc<FileTask>, finish: Finish, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let settings = self.settings.clone();
        let m = self.m.clone();
        let fut = async move {
            let rejected = match finish {
                Finish::Known { rejected } => Some(rejected),
                Finish::Marked(totals) => {
                    announce(m.name(), &file, totals, &reasons_of(&pool, &file, totals).await);
                    Some(totals.rejected)
                }
                Finish::Unmarked => {
                    let marked =
                        retry("cannot mark file done", Backoff::new(RETRY_CAP), None, DbError::is_transient, || {
                            files::mark_one_done(&pool, file.file_id)
                        })
                        .await;
                    match marked {
                        Ok(MarkedDone::Done(totals)) => {
                            m.files_done.inc();
                            announce(m.name(), &file, totals, &reasons_of(&pool, &file, totals).await);
                            Some(totals.rejected)
                        }
                        Ok(MarkedDone::Parked(error)) => {
                            m.files_failed.inc();
                            tracing::error!(file = %file.name, %error, "file parked");
                            None
                        }
                        Ok(MarkedDone::Failed) => None,
                        Err(e) => {
                            tracing::error!(file = %file.name, error = %e, "cannot mark file done");
                            None
                        }
                    }
                }
            };
            let kept = match rejected {
                Some(rejected) => dispose_until_done(&pool, &settings.disposal, &m, &file, rejected).await,
                // Not done: the file stays where it is.
                None => true,
            };
            (file, kept)
        };
        ctx.spawn(fut.into_actor(self).map(|(file, kept), act, _| {
            act.disk.end();
            tracing::debug!(file = %file.name, "file finished");
            act.tell_watcher(&file, left_by(&file, kept));
        }));
    }
}

/// What is known of a file whose disk work starts.
#[derive(Debug, Clone, Copy)]
enum Finish {
    /// Marked done just now by a statement, with its rows: announced.
    Marked(FileTotals),
    /// Done before (a claim found it done, or its disk work is tried
    /// again): its rejected rows.
    Known { rejected: i64 },
    /// Its last batch is committed but no statement marked it: marked
    /// alone first (and announced).
    Unmarked,
}

/// A file's rejects by reason, read only when it has some.
async fn reasons_of(pool: &Pool, file: &FileTask, totals: FileTotals) -> Result<Vec<(String, i64)>, DbError> {
    if totals.rejected == 0 {
        return Ok(Vec::new());
    }
    files::rejects_by_reason(pool, file.file_id).await
}

/// The one info line of a finished file: its counts, and its rejects by
/// reason (`missing_field:3,invalid_uuid:1`).
fn announce(pipeline: &str, file: &FileTask, t: FileTotals, reasons: &Result<Vec<(String, i64)>, DbError>) {
    let rejects = match reasons {
        Ok(r) => r.iter().map(|(reason, n)| format!("{reason}:{n}")).collect::<Vec<_>>().join(","),
        Err(e) => format!("(cannot read them: {e})"),
    };
    tracing::info!(
        pipeline = %pipeline,
        file = %file.name,
        bytes = file.size,
        rows = t.rows,
        written = t.written,
        duplicate = t.duplicate,
        rejected = t.rejected,
        rejects = %rejects,
        "file done"
    );
}

/// The disk work after a file is done: its rejects file, then the move or
/// delete. Retried with backoff until it succeeds; never reads rows again.
/// Returns whether the file is still at its path (kept).
async fn dispose_until_done(
    pool: &Pool,
    disposal: &Disposal,
    m: &PipelineMetrics,
    file: &FileTask,
    rejected: i64,
) -> bool {
    crate::failpoints::hit("before_disk_work", &file.name);
    let work = || async {
        if rejected > 0 {
            write_rejects_file(pool, disposal, file).await?;
        }
        crate::failpoints::hit("before_move", &file.name);
        let (disposal, file) = (disposal.clone(), file.clone());
        tokio::task::spawn_blocking(move || disposal::dispose(&disposal, &file))
            .await
            .map_err(|e| DiskError::Task(e.to_string()))?
    };
    let outcome = retry(
        "after-commit disk work failed",
        Backoff::new(RETRY_CAP),
        None,
        |_: &DiskError| {
            m.disk_errors.inc();
            true
        },
        work,
    )
    .await;
    // Every error is retried, so only success comes back.
    outcome.unwrap_or(true)
}

/// Writes `<bad_records>/<file>.rejects.csv` from the file's stored rejects,
/// a page at a time (the writing on the blocking pool).
async fn write_rejects_file(pool: &Pool, disposal: &Disposal, file: &FileTask) -> Result<(), DiskError> {
    let (d, task) = (disposal.clone(), file.clone());
    let mut out = blocking(move || RejectsFile::create(&d, &task)).await?;
    let mut after: i64 = 0;
    loop {
        let page = files::rejects_page(pool, file.file_id, after, REJECTS_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.line;
        let full = page.len() as i64 == REJECTS_PAGE;
        out = blocking(move || out.append(&page).map(|()| out)).await?;
        if !full {
            break;
        }
    }
    let path = blocking(move || out.finish()).await?;
    tracing::debug!(file = %file.name, rejects = %path.display(), "rejects file written");
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, DiskError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DiskError::Task(e.to_string()))?
}

fn left_by(file: &FileTask, kept: bool) -> Left {
    if kept {
        Left::Finished(file.stamp.clone())
    } else {
        Left::Nothing
    }
}

/// Files whose after-commit disk work is under way: a count that says
/// when it reaches zero.
#[derive(Debug, Default)]
pub struct DiskWork {
    files: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl DiskWork {
    fn start(&self) {
        self.files.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.files.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub fn files(&self) -> usize {
        self.files.load(Ordering::SeqCst)
    }

    /// Resolves when no disk work is under way.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.files() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Actor for CheckpointKeeper {
    type Context = Context<Self>;

    /// Temp files of disk work cut short by a crash are ours to remove: the
    /// work is redone from the table when the file is claimed again.
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.show_bytes_in_flight();
        let settings = self.settings.clone();
        let fut = tokio::task::spawn_blocking(move || {
            disposal::remove_leftovers(&settings.disposal.bad_records);
            disposal::remove_leftovers(&settings.disposal.processed);
        });
        ctx.wait(async move { fut.await.ok() }.into_actor(self).map(|_, _, _| ()));
    }

    /// Files in flight are forgotten with this actor (a restart claims them
    /// again).
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.m.bytes_in_flight.set(0);
    }
}

impl Handler<SetWatcher> for CheckpointKeeper {
    type Result = ();
    fn handle(&mut self, msg: SetWatcher, _: &mut Context<Self>) {
        self.watcher = Some(msg.0);
    }
}

impl Handler<ClaimFiles> for CheckpointKeeper {
    type Result = ResponseActFuture<Self, Result<Vec<Claim>, DbError>>;

    /// Registers (or finds) several identities in one statement, in the
    /// order asked: thousands of small files must not cost a transaction
    /// each. An identity already done only needs its disk work (we died
    /// after the commit, or the same content was dropped again): that
    /// starts after the answer, so a slow disk never holds up a claim round.
    fn handle(&mut self, msg: ClaimFiles, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let settings = self.settings.clone();
        let fut = async move {
            let identities: Vec<Identity<'_>> = msg
                .0
                .iter()
                .map(|f| Identity {
                    path: crate::fsutil::display_name(f.path.as_os_str()),
                    name: &f.name,
                    fingerprint: &f.fingerprint,
                    size: f.stamp.size,
                })
                .collect();
            let claimed = files::claim(&pool, &settings.pipeline, &identities).await?;
            Ok(msg.0.into_iter().zip(claimed).map(|(f, c)| (FileTask::claimed(f, &c), c)).collect::<Vec<_>>())
        };
        Box::pin(fut.into_actor(self).map(|result: Result<Vec<(FileTask, files::Claimed)>, DbError>, act, ctx| {
            let claims = result?
                .into_iter()
                .map(|(task, c)| match c.state {
                    FileState::Done => {
                        act.disk.start();
                        act.dispose(Arc::new(task), Finish::Known { rejected: c.rows_rejected }, ctx);
                        Claim::Done
                    }
                    FileState::Failed => Claim::Parked,
                    FileState::Pending | FileState::InProgress => {
                        act.reading.claimed(task.file_id, task.size, task.offset, task.gzip);
                        Claim::Read(task)
                    }
                })
                .collect();
            act.show_bytes_in_flight();
            Ok(claims)
        }))
    }
}

impl Handler<BatchCommitted> for CheckpointKeeper {
    type Result = ();

    fn handle(&mut self, msg: BatchCommitted, ctx: &mut Context<Self>) {
        let id = msg.file.file_id;
        let settled = match &msg.end {
            BatchEnd::More => self.reading.committed(id, msg.end_offset, false),
            BatchEnd::Eof => self.reading.committed(id, msg.end_offset, true),
            BatchEnd::Abort(_) => {
                self.reading.dropped(id);
                0
            }
        };
        self.m.bytes_committed.inc_by(settled);
        self.show_bytes_in_flight();
        match msg.end {
            BatchEnd::More => {}
            BatchEnd::Eof => match msg.counts.file_done {
                // Marked done by the batch's own transaction: straight to
                // the disk work.
                Some(totals) => self.marked_done(msg.file, totals, ctx),
                None => self.last_batch_committed(msg.file, ctx),
            },
            BatchEnd::Abort(error) if !error.is_permanent() => {
                self.m.watch_errors.inc();
                // Said once (and kept as the file's error for `ingestd
                // status`), not at every retry.
                let text = error.to_string();
                if self.read_errors.get(&msg.file.file_id) != Some(&text) {
                    tracing::warn!(file = %msg.file.name, error = %text, "cannot read file; will retry later");
                    let (pool, id, error) = (self.pool.clone(), msg.file.file_id, text.clone());
                    ctx.spawn(
                        async move {
                            if let Err(e) = files::note_error(&pool, id, &error).await {
                                tracing::debug!(error = %e, "cannot record the read error");
                            }
                        }
                        .into_actor(self),
                    );
                    self.read_errors.insert(msg.file.file_id, text);
                }
                self.tell_watcher(&msg.file, Left::Retry(msg.file.stamp.clone()));
            }
            BatchEnd::Abort(error) => {
                let pool = self.pool.clone();
                let m = self.m.clone();
                let file = msg.file;
                let error = error.to_string();
                let fut = async move {
                    let parked =
                        retry("cannot park file", Backoff::new(RETRY_CAP), None, DbError::is_transient, || {
                            files::park(&pool, file.file_id, &error)
                        })
                        .await;
                    match parked {
                        Ok(()) => {
                            m.files_failed.inc();
                            tracing::error!(file = %file.name, %error, "file parked as failed: its content cannot be read");
                        }
                        Err(e) => tracing::error!(file = %file.name, error = %e, "cannot park file"),
                    }
                    file
                };
                ctx.spawn(fut.into_actor(self).map(|file, act, _| {
                    // Parked: the file stays where it is.
                    act.tell_watcher(&file, Left::Finished(file.stamp.clone()));
                }));
            }
        }
    }
}

impl Handler<Skipped> for CheckpointKeeper {
    type Result = ();

    /// Records the entries the Watcher does not read. A newer set replaces
    /// an older one, so only the latest waits while one is being written.
    fn handle(&mut self, msg: Skipped, ctx: &mut Context<Self>) {
        self.skipped = Some(msg.0);
        self.record_skipped(ctx);
    }
}

impl CheckpointKeeper {
    fn record_skipped(&mut self, ctx: &mut Context<Self>) {
        if self.recording_skipped {
            return;
        }
        let Some(entries) = self.skipped.take() else { return };
        self.recording_skipped = true;
        // Bookkeeping the drain and `--until-idle` wait for, like disk work.
        self.disk.start();
        let pool = self.pool.clone();
        let pipeline = self.settings.pipeline.clone();
        let entries: Vec<(String, &'static str, String)> =
            entries.into_iter().map(|e| (e.path, e.reason, e.detail)).collect();
        let fut = async move {
            let recorded =
                retry("cannot record skipped entries", Backoff::new(RETRY_CAP), None, DbError::is_transient, || {
                    files::record_skipped(&pool, &pipeline, &entries)
                })
                .await;
            if let Err(e) = recorded {
                tracing::error!(error = %e, "cannot record skipped entries");
            }
        };
        ctx.spawn(fut.into_actor(self).map(|(), act, ctx| {
            act.recording_skipped = false;
            act.disk.end();
            act.record_skipped(ctx);
        }));
    }
}

impl Handler<RecordFailure> for CheckpointKeeper {
    type Result = ResponseFuture<Result<bool, DbError>>;

    fn handle(&mut self, msg: RecordFailure, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let limit = self.settings.max_file_attempts;
        let m = self.m.clone();
        Box::pin(async move {
            let parked = files::record_failure(&pool, msg.file_id, &msg.error, limit).await?;
            if parked {
                m.files_failed.inc();
                tracing::error!(file_id = msg.file_id, error = %msg.error, "file parked as failed after repeated failures");
            }
            Ok(parked)
        })
    }
}
