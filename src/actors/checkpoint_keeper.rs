//! CheckpointKeeper: owns the file states in `ingest_files` (claims,
//! failures, parking) and the disk work of finished files.
//!
//! - Receives: `ClaimFile` (Watcher), `BatchCommitted` (Writer),
//!   `RecordFailure` (Supervisor), `Pending` (Supervisor, for the drain).
//! - Emits: `FileFinished` to the Watcher.
//! - State: the number of files whose after-commit disk work is running;
//!   files waiting for the next mark-done or move round.
//! - On restart: nothing is kept; the table is the state.
//! - On drain: the Supervisor waits until its disk work is done (or the
//!   deadline passes: the next start redoes it).
//! - Backpressure: claims are one query each; the Watcher limits how many
//!   files are in flight.
//!
//! A file is done only when its last batch is committed and its rows add up
//! (rows = written + duplicate + rejected). Usually the last batch's own
//! transaction marks it (`sql::ADVANCE_CHECKPOINT`); when it did not (a
//! replayed last batch), this actor does. The disk work after that — the
//! `<file>.rejects.csv` and the move — is idempotent and retried: if we die
//! in the middle, the next claim of the same identity answers `Done` and
//! redoes it, without reading a row again.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use tokio_postgres::types::Type;

use crate::config::AfterCommit;
use crate::db::{sql, DbError, Pool};
use crate::messages::{BatchCommitted, BatchEnd, Claim, ClaimFiles, FileFinished, FileTask, Left, RecordFailure};
use crate::metrics::metrics;

/// Rejects fetched per query when writing a rejects file.
const REJECTS_PAGE: i64 = 10_000;
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KeeperSettings {
    pub processed: PathBuf,
    pub bad_records: PathBuf,
    pub after_commit: AfterCommit,
    pub max_file_attempts: u32,
}

pub struct CheckpointKeeper {
    pool: Pool,
    settings: Arc<KeeperSettings>,
    watcher: Option<Recipient<FileFinished>>,
    /// Files whose after-commit disk work has not finished (the drain
    /// waits for none).
    pending: Arc<DiskWork>,
    /// Files to mark done in the next round, and whether a round runs.
    to_mark: Vec<Arc<FileTask>>,
    marking: bool,
    /// Files done without rejects, waiting to be moved in the next round,
    /// and whether a round runs.
    to_move: Vec<Arc<FileTask>>,
    moving: bool,
}

impl CheckpointKeeper {
    pub fn new(pool: Pool, settings: KeeperSettings) -> Self {
        CheckpointKeeper {
            pool,
            settings: Arc::new(settings),
            watcher: None,
            pending: Arc::new(DiskWork::default()),
            to_mark: Vec::new(),
            marking: false,
            to_move: Vec::new(),
            moving: false,
        }
    }

    fn finished(&self, file: &FileTask, left: Left) {
        if let Some(w) = &self.watcher {
            w.do_send(FileFinished { path: file.path.clone(), left });
        }
    }

    /// Queues a file whose last batch is committed, to be marked done.
    fn complete(&mut self, file: Arc<FileTask>, ctx: &mut Context<Self>) {
        self.pending.start();
        self.to_mark.push(file);
        self.mark_queued(ctx);
    }

    /// Marks every queued file done in one statement (many small files
    /// finish at once), retrying while the database is away, then runs each
    /// file's disk work. One round at a time; files queued meanwhile go in
    /// the next round.
    fn mark_queued(&mut self, ctx: &mut Context<Self>) {
        if self.marking || self.to_mark.is_empty() {
            return;
        }
        self.marking = true;
        let files = std::mem::take(&mut self.to_mark);
        let pool = self.pool.clone();
        let fut = async move {
            let ids: Vec<i64> = files.iter().map(|f| f.file_id).collect();
            let mut delay = RETRY_BASE;
            let done = loop {
                match mark_many_done(&pool, &ids).await {
                    Ok(done) => break done,
                    Err(e) if e.is_transient() => {
                        tracing::warn!(files = ids.len(), error = %e, "cannot mark files done yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_CAP);
                    }
                    Err(e) => {
                        tracing::error!(files = ids.len(), error = %e, "cannot mark files done");
                        break HashMap::new();
                    }
                }
            };
            (files, done)
        };
        ctx.spawn(fut.into_actor(self).map(|(files, done), act, ctx| {
            act.marking = false;
            tracing::debug!(files = files.len(), "marked done");
            for file in files {
                let known = done.get(&file.file_id).copied();
                act.finish(file, known, ctx);
            }
            act.mark_queued(ctx);
        }));
    }

    /// A file its last batch's transaction marked done: its disk work.
    /// Files without rejects only need moving, and many small files finish
    /// at once: they are moved in rounds, one trip to the blocking pool per
    /// round. A move that fails is retried alone (`finish`).
    fn done(&mut self, file: Arc<FileTask>, rejected: i64, ctx: &mut Context<Self>) {
        metrics().files_done.inc();
        self.pending.start();
        if rejected > 0 {
            self.finish(file, Some(rejected), ctx);
            return;
        }
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
                    let moved = after_commit(&settings, &file);
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
                                act.pending.end();
                                act.finished(&file, left_by(&file, kept));
                            }
                            Err(e) => {
                                metrics().disk_errors.inc();
                                tracing::warn!(file = %file.name, error = %e, "after-commit disk work failed; retrying");
                                act.finish(file, Some(0), ctx);
                            }
                        }
                    }
                }
                // The round's files stay pending; the next start redoes
                // their disk work (they are done in the table).
                Err(e) => tracing::error!(error = %e, "moving finished files failed"),
            }
            act.move_queued(ctx);
        }));
    }

    /// The disk work of one file, once the statement said it is done (with
    /// its rejected count); a file the statement did not mark is looked at
    /// alone (`mark_done` says why, and parks it if its rows do not add up).
    fn finish(&mut self, file: Arc<FileTask>, rejected: Option<i64>, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let settings = self.settings.clone();
        let fut = async move {
            let rejected = match rejected {
                Some(r) => Some(r),
                None => {
                    let mut delay = RETRY_BASE;
                    loop {
                        match mark_done(&pool, file.file_id).await {
                            Ok(r) => break r,
                            Err(e) if e.is_transient() => {
                                tracing::warn!(file = %file.name, error = %e, "cannot mark file done yet; retrying");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(RETRY_CAP);
                            }
                            Err(e) => {
                                tracing::error!(file = %file.name, error = %e, "cannot mark file done");
                                break None;
                            }
                        }
                    }
                }
            };
            let kept = finish_on_disk(&pool, &settings, &file, rejected).await;
            (file, kept)
        };
        ctx.spawn(fut.into_actor(self).map(|(file, kept), act, _| {
            act.pending.end();
            tracing::debug!(file = %file.name, "file finished");
            act.finished(&file, left_by(&file, kept));
        }));
    }
}

/// Marks the files done whose rows add up, in one statement; returns their
/// rejected counts by id.
async fn mark_many_done(pool: &Pool, ids: &[i64]) -> Result<HashMap<i64, i64>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("mark done"))?;
    let rows =
        conn.query_typed(sql::MARK_MANY_DONE, &[(&ids, Type::INT8_ARRAY)]).await.map_err(DbError::pg("mark done"))?;
    metrics().files_done.inc_by(rows.len() as u64);
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))).collect())
}

/// Returns the file's rejected count, once it is done. A file whose rows do
/// not add up is never marked done: that would be a bug, and it is parked
/// with the reason instead of being hidden.
async fn mark_done(pool: &Pool, file_id: i64) -> Result<Option<i64>, DbError> {
    let conn = pool.get().await.map_err(DbError::pool("mark done"))?;
    // Typed queries: one round trip, no separate prepare (these run once per
    // file, and small files come by the thousand).
    if let Some(row) =
        conn.query_typed_opt(sql::MARK_DONE, &[(&file_id, Type::INT8)]).await.map_err(DbError::pg("mark done"))?
    {
        metrics().files_done.inc();
        return Ok(Some(row.get::<_, i64>(3)));
    }
    let row = conn.query_one(sql::FILE_STATE, &[&file_id]).await.map_err(DbError::pg("mark done"))?;
    let state: String = row.get(0);
    if state == "done" {
        return Ok(Some(row.get::<_, i64>(4)));
    }
    let (total, w, d, r): (i64, i64, i64, i64) = (row.get(1), row.get(2), row.get(3), row.get(4));
    let error = format!("rows do not add up: {total} rows, {w} written + {d} duplicate + {r} rejected");
    tracing::error!(file_id, %error, "file parked");
    conn.execute(sql::PARK_FILE, &[&file_id, &error]).await.map_err(DbError::pg("park file"))?;
    metrics().files_failed.inc();
    Ok(None)
}

/// The disk work after a file is done: its rejects file, then the move or
/// delete. Retried with backoff until it succeeds; never reads rows again.
/// Returns whether the file is still at its path (kept, or not done).
async fn finish_on_disk(pool: &Pool, settings: &KeeperSettings, file: &FileTask, rejected: Option<i64>) -> bool {
    let Some(rejected) = rejected else { return true };
    crate::failpoints::hit("before_disk_work", &file.name);
    let mut delay = RETRY_BASE;
    loop {
        let result = async {
            if rejected > 0 {
                write_rejects_file(pool, settings, file).await?;
            }
            crate::failpoints::hit("before_move", &file.name);
            let settings = settings.clone();
            let file = file.clone();
            tokio::task::spawn_blocking(move || after_commit(&settings, &file)).await.map_err(|e| e.to_string())?
        }
        .await;
        match result {
            Ok(kept) => return kept,
            Err(e) => {
                metrics().disk_errors.inc();
                tracing::warn!(file = %file.name, error = %e, retry_in_ms = delay.as_millis() as u64, "after-commit disk work failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_CAP);
            }
        }
    }
}

/// `<bad_records>/<file>.rejects.csv`: line, reason, detail, raw. Written to
/// a temp name page by page, fsynced, then renamed. If a file of that name
/// exists with other content (an earlier file of the same name), this one
/// gets the fingerprint in its name instead of overwriting it.
async fn write_rejects_file(pool: &Pool, settings: &KeeperSettings, file: &FileTask) -> Result<(), String> {
    let tmp = settings.bad_records.join(format!(".{}.{}.rejects.tmp", file.name, std::process::id()));
    let result = write_rejects_to(pool, settings, file, &tmp).await;
    if result.is_err() {
        // A partial temp file would keep a full disk full until the retry.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn write_rejects_to(
    pool: &Pool,
    settings: &KeeperSettings,
    file: &FileTask,
    tmp: &std::path::Path,
) -> Result<(), String> {
    let tmp = tmp.to_path_buf();
    let tmp_path = tmp.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp_path)?;
        f.write_all(b"line,reason,detail,raw\n")
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut after: i64 = 0;
    loop {
        let rows = {
            let conn = pool.get().await.map_err(|e| DbError::pool("read rejects")(e).to_string())?;
            conn.query(&format!("{} LIMIT {REJECTS_PAGE}", sql::REJECTS_OF_FILE_AFTER), &[&file.file_id, &after])
                .await
                .map_err(|e| DbError::pg("read rejects")(e).to_string())?
        };
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let page: Vec<(i64, String, String, Vec<u8>)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
        let full = page.len() as i64 == REJECTS_PAGE;
        let tmp_path = tmp.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let f = std::fs::OpenOptions::new().append(true).open(&tmp_path)?;
            let mut w = csv::Writer::from_writer(std::io::BufWriter::new(f));
            for (line, reason, detail, raw) in page {
                w.write_record([line.to_string().as_bytes(), reason.as_bytes(), detail.as_bytes(), &raw])
                    .map_err(std::io::Error::other)?;
            }
            w.flush()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
        if !full {
            break;
        }
    }
    let settings = settings.clone();
    let file = file.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::File::open(&tmp)?.sync_all()?;
        let plain = settings.bad_records.join(format!("{}.rejects.csv", file.name));
        let target = if !plain.exists() || same_content(&plain, &tmp)? {
            plain
        } else {
            settings.bad_records.join(format!("{}.{}.rejects.csv", file.name, short_fingerprint(&file.fingerprint)))
        };
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(&settings.bad_records)?.sync_all()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

fn same_content(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<bool> {
    let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

fn short_fingerprint(fp: &str) -> &str {
    let hash = fp.rsplit('-').next().unwrap_or(fp);
    &hash[..hash.len().min(12)]
}

fn left_by(file: &FileTask, kept: bool) -> Left {
    if kept {
        Left::Finished(file.stamp.clone())
    } else {
        Left::Nothing
    }
}

/// Moves, deletes or keeps the source file. A file already gone counts as
/// moved (it may have been moved before a crash, or deleted by someone).
/// `Ok(true)`: this identity is still at its path (kept).
fn after_commit(settings: &KeeperSettings, file: &FileTask) -> Result<bool, String> {
    // Only this identity is moved: a new file that took the name since (a
    // producer reusing it) is left for the Watcher, never moved unread.
    // The same inode, size and mtime as when it was identified: the same
    // file (an lstat, no open). Anything else is hashed again.
    let unchanged = std::fs::symlink_metadata(&file.path)
        .is_ok_and(|m| m.file_type().is_file() && crate::fsutil::Stamp::of(&m) == file.stamp);
    let present = unchanged
        || crate::fsutil::open_regular(&file.path)
            .and_then(|(f, meta)| {
                let size = meta.len();
                Ok(size == file.size && crate::fsutil::fingerprint(&f, size)? == file.fingerprint)
            })
            .unwrap_or(false);
    if !present {
        return Ok(false);
    }
    match settings.after_commit {
        AfterCommit::Keep => Ok(true),
        AfterCommit::Delete => std::fs::remove_file(&file.path).map(|()| false).map_err(|e| format!("delete: {e}")),
        AfterCommit::Move => {
            let failed = |to: &std::path::Path, e: std::io::Error| format!("move to {}: {e}", to.display());
            // Never overwrite an earlier file of the same name: this one
            // gets its fingerprint in its name instead (and replaces only
            // what an earlier run of this very identity left there).
            let plain = settings.processed.join(&file.name);
            match crate::fsutil::move_file(&file.path, &plain, false) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let tagged = settings
                        .processed
                        .join(crate::fsutil::tagged_name(&file.name, short_fingerprint(&file.fingerprint)));
                    crate::fsutil::move_file(&file.path, &tagged, true).map_err(|e| failed(&tagged, e))
                }
                moved => moved.map_err(|e| failed(&plain, e)),
            }
            .map(|()| false)
        }
    }
}

impl Actor for CheckpointKeeper {
    type Context = Context<Self>;

    /// Temp files of disk work cut short by a crash are ours to remove: the
    /// work is redone from the table when the file is claimed again.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let settings = self.settings.clone();
        let fut = tokio::task::spawn_blocking(move || {
            remove_leftovers(&settings.bad_records);
            remove_leftovers(&settings.processed);
        });
        ctx.wait(async move { fut.await.ok() }.into_actor(self).map(|_, _, _| ()));
    }
}

/// Removes `.*.tmp` files (what `write_rejects_file` and `fsutil` leave when
/// they are killed midway) from a folder only the daemon writes.
fn remove_leftovers(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") && entry.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "removed a leftover temp file"),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a leftover temp file")
                }
            }
        }
    }
}

/// Supervisor → CheckpointKeeper: where to announce finished files.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetWatcher(pub Recipient<FileFinished>);

impl Handler<SetWatcher> for CheckpointKeeper {
    type Result = ();
    fn handle(&mut self, msg: SetWatcher, _: &mut Context<Self>) {
        self.watcher = Some(msg.0);
    }
}

impl CheckpointKeeper {
    /// The count of files whose disk work is under way, for the drain.
    pub fn disk_work(&self) -> Arc<DiskWork> {
        self.pending.clone()
    }
}

/// Files whose after-commit disk work is under way: a count that says
/// when it reaches zero.
#[derive(Debug, Default)]
pub struct DiskWork {
    files: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl DiskWork {
    fn start(&self) {
        self.files.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn end(&self) {
        if self.files.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub fn files(&self) -> usize {
        self.files.load(std::sync::atomic::Ordering::SeqCst)
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

/// A claimed identity's row: id, state, committed offset and line, rejected
/// count; keyed by (path, fingerprint).
type ClaimedRow = (i64, String, i64, i64, i64);

impl Handler<ClaimFiles> for CheckpointKeeper {
    type Result = ResponseActFuture<Self, Result<Vec<Claim>, DbError>>;

    /// Registers (or finds) several identities in one statement, in the
    /// order asked: thousands of small files must not cost a transaction
    /// each.
    fn handle(&mut self, msg: ClaimFiles, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let settings = self.settings.clone();
        let fut = async move {
            let files = msg.0;
            let conn = pool.get().await.map_err(DbError::pool("claim files"))?;
            let paths: Vec<String> = files.iter().map(|f| f.path.to_string_lossy().into_owned()).collect();
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            let fingerprints: Vec<&str> = files.iter().map(|f| f.fingerprint.as_str()).collect();
            let sizes: Vec<i64> = files.iter().map(|f| f.stamp.size as i64).collect();
            let rows = conn
                .query_typed(
                    sql::CLAIM_FILES,
                    &[
                        (&paths, Type::TEXT_ARRAY),
                        (&names, Type::TEXT_ARRAY),
                        (&fingerprints, Type::TEXT_ARRAY),
                        (&sizes, Type::INT8_ARRAY),
                    ],
                )
                .await
                .map_err(DbError::pg("claim files"))?;
            let mut found: HashMap<(String, String), ClaimedRow> = rows
                .iter()
                .map(|r| ((r.get(1), r.get(2)), (r.get(0), r.get(3), r.get(4), r.get(5), r.get(6))))
                .collect();
            drop(conn);
            let mut claims = Vec::with_capacity(files.len());
            for (f, path) in files.into_iter().zip(paths) {
                let Some((file_id, state, offset, line, rejected)) = found.remove(&(path, f.fingerprint.clone()))
                else {
                    return Err(DbError::Claim(f.name));
                };
                let task = FileTask {
                    file_id,
                    gzip: f.name.to_ascii_lowercase().ends_with(".gz"),
                    path: f.path,
                    name: f.name,
                    fingerprint: f.fingerprint,
                    size: f.stamp.size,
                    stamp: f.stamp,
                    offset: offset as u64,
                    line: line as u64,
                };
                claims.push(match state.as_str() {
                    "done" => {
                        // Seen again: the rows are in; only the disk work may
                        // be missing (we died after the commit, or the same
                        // content was dropped again).
                        finish_on_disk(&pool, &settings, &task, Some(rejected)).await;
                        Claim::Done
                    }
                    "failed" => Claim::Parked,
                    _ => Claim::Read(task),
                });
            }
            Ok(claims)
        };
        Box::pin(fut.into_actor(self))
    }
}

impl Handler<BatchCommitted> for CheckpointKeeper {
    type Result = ();

    fn handle(&mut self, msg: BatchCommitted, ctx: &mut Context<Self>) {
        match msg.end {
            BatchEnd::More => {}
            BatchEnd::Eof => match msg.counts.file_done {
                // Marked done by the batch's own transaction: straight to
                // the disk work.
                Some(rejected) => self.done(msg.file, rejected, ctx),
                None => self.complete(msg.file, ctx),
            },
            BatchEnd::Abort(error) if !error.is_permanent() => {
                metrics().watch_errors.inc();
                tracing::warn!(file = %msg.file.name, %error, "cannot read file; will retry later");
                self.finished(&msg.file, Left::Retry(msg.file.stamp.clone()));
            }
            BatchEnd::Abort(error) => {
                let pool = self.pool.clone();
                let file = msg.file;
                let error = error.to_string();
                let fut = async move {
                    let mut delay = RETRY_BASE;
                    loop {
                        let r = async {
                            let conn = pool.get().await.map_err(DbError::pool("park file"))?;
                            conn.execute(sql::PARK_FILE, &[&file.file_id, &error])
                                .await
                                .map_err(DbError::pg("park file"))
                        }
                        .await;
                        match r {
                            Ok(_) => break,
                            Err(e) if e.is_transient() => {
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(RETRY_CAP);
                            }
                            Err(e) => {
                                tracing::error!(file = %file.name, error = %e, "cannot park file");
                                break;
                            }
                        }
                    }
                    metrics().files_failed.inc();
                    tracing::error!(file = %file.name, %error, "file parked as failed: its content cannot be read");
                    file
                };
                ctx.spawn(fut.into_actor(self).map(|file, act, _| {
                    // Parked: the file stays where it is.
                    act.finished(&file, Left::Finished(file.stamp.clone()));
                }));
            }
        }
    }
}

impl Handler<RecordFailure> for CheckpointKeeper {
    type Result = ResponseFuture<Result<bool, DbError>>;

    fn handle(&mut self, msg: RecordFailure, _: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        let limit = self.settings.max_file_attempts as i32;
        Box::pin(async move {
            let conn = pool.get().await.map_err(DbError::pool("record failure"))?;
            let row = conn
                .query_opt(sql::RECORD_FAILURE, &[&msg.file_id, &msg.error, &limit])
                .await
                .map_err(DbError::pg("record failure"))?;
            let parked = row.map(|r| r.get::<_, String>(0) == "failed").unwrap_or(false);
            if parked {
                metrics().files_failed.inc();
                tracing::error!(file_id = msg.file_id, error = %msg.error, "file parked as failed after repeated failures");
            }
            Ok(parked)
        })
    }
}
