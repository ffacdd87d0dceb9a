//! Every message exchanged between actors, in one place.
//!
//! The data path is Watcher → Parser → Validator → Writer → CheckpointKeeper.
//! Data-path messages are sent with `send()` and the receiving stage answers
//! as soon as it has queued the message ("accepted", not "done"): that keeps
//! order between stages and lets them overlap. Memory is bounded by the
//! [`Credit`] each batch carries, not by mailboxes (actix's `send()` never
//! waits for mailbox room).

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::core::copy::CopyPayload;
use crate::core::header::Header;
use crate::core::record::RecordBatch;
use crate::core::validate::{Checked, RejectRow};
use crate::credit::Credit;
use crate::db::write::Counts;
use crate::db::DbError;
use crate::source::ReadError;
pub use crate::source::{FileId, FileTask};

impl FileTask {
    /// The task for a file the CheckpointKeeper claimed: where it resumes.
    pub fn claimed(f: ClaimFile, c: &crate::db::files::Claimed) -> FileTask {
        FileTask {
            file_id: c.id,
            gzip: f.name.to_ascii_lowercase().ends_with(".gz"),
            path: f.path,
            name: f.name,
            fingerprint: f.fingerprint,
            size: f.stamp.size,
            stamp: f.stamp,
            offset: c.committed_offset,
            line: c.committed_line,
        }
    }
}

/// A stable candidate file, identified.
#[derive(Debug, Clone)]
pub struct ClaimFile {
    pub path: PathBuf,
    pub name: String,
    pub fingerprint: String,
    /// The stat the fingerprint was taken with (its size is the file's).
    pub stamp: crate::fsutil::Stamp,
}

/// Watcher → CheckpointKeeper: files to register (or find); answers a
/// `Claim` per file, in the same order.
#[derive(Message)]
#[rtype(result = "Result<Vec<Claim>, DbError>")]
pub struct ClaimFiles(pub Vec<ClaimFile>);

#[derive(Debug)]
pub enum Claim {
    /// Read it from the task's offset.
    Read(FileTask),
    /// Every row of this identity is already committed; only the disk work
    /// after the commit (move, bad_records) may be missing and has been redone.
    Done,
    /// Parked after repeated failures; not read again.
    Parked,
}

/// Watcher → Parser: the files of one claim round, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReadFiles(pub Vec<FileTask>);

/// Parser → Validator: what one read step produced: a batch of one file, or
/// several small files whole (together within one batch's rows, bytes and
/// credit), so a small file costs no step, trip or message of its own.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Parsed(pub Vec<ParsedBatch>);

/// A run of records from one file.
pub struct ParsedBatch {
    pub file: Arc<FileTask>,
    pub header: Arc<Header>,
    /// Offset and line where this batch starts (the fence: the committed
    /// checkpoint must equal it).
    pub start_offset: u64,
    pub start_line: u64,
    /// Checkpoint after this batch.
    pub end_offset: u64,
    pub end_line: u64,
    pub records: RecordBatch,
    pub end: BatchEnd,
    pub credit: Credit,
}

impl ParsedBatch {
    /// A file that could not be read: no rows, and why.
    pub fn failed(file: Arc<FileTask>, error: ReadError, credit: Credit) -> ParsedBatch {
        ParsedBatch {
            start_offset: file.offset,
            start_line: file.line,
            end_offset: file.offset,
            end_line: file.line,
            header: Arc::new(Header::unread()),
            file,
            records: RecordBatch::default(),
            end: BatchEnd::Abort(Arc::new(error)),
            credit,
        }
    }
}

/// Where a batch leaves its file.
#[derive(Debug, Clone)]
pub enum BatchEnd {
    /// More batches follow.
    More,
    /// The file's last batch: once committed, the file is done.
    Eof,
    /// Reading failed; the batch holds no rows. A permanent error (damaged
    /// content) parks the file as failed; otherwise it is retried later.
    Abort(Arc<ReadError>),
}

impl BatchEnd {
    pub fn is_last(&self) -> bool {
        matches!(self, BatchEnd::Eof)
    }
    pub fn is_abort(&self) -> bool {
        matches!(self, BatchEnd::Abort(_))
    }
}

/// Validator → Writer: the batches of one `Parsed`, validated, in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Validated(pub Vec<ValidatedBatch>);

/// One batch's worth of work for a transaction (the Writer groups batches of
/// different files into one).
pub struct ValidatedBatch {
    pub file: Arc<FileTask>,
    /// Stored with the file's checkpoint (for `replay-rejects`).
    pub header: Arc<Header>,
    pub start_offset: u64,
    pub start_line: u64,
    pub end_offset: u64,
    pub end_line: u64,
    /// Data rows in the batch: events + repeats + rejects + in-batch
    /// duplicates.
    pub rows: u64,
    /// The valid rows, encoded for binary COPY, in key order.
    pub events: CopyPayload,
    /// Valid rows whose key the Validator saw in a recent batch: most
    /// likely duplicates, kept apart so the rest can still go straight into
    /// the table. The Writer checks them (see `db::write`).
    pub repeats: CopyPayload,
    pub rejects: Vec<RejectRow>,
    /// Valid rows dropped because an earlier row of the batch had their key.
    pub batch_duplicates: u64,
    pub end: BatchEnd,
    pub credit: Credit,
}

impl ValidatedBatch {
    /// The batch `parsed` became once its rows were `checked`.
    pub fn new(parsed: ParsedBatch, checked: Checked) -> ValidatedBatch {
        ValidatedBatch {
            file: parsed.file,
            header: parsed.header,
            start_offset: parsed.start_offset,
            start_line: parsed.start_line,
            end_offset: parsed.end_offset,
            end_line: parsed.end_line,
            rows: checked.rows,
            events: checked.events,
            repeats: checked.repeats,
            rejects: checked.rejects,
            batch_duplicates: checked.batch_duplicates,
            end: parsed.end,
            credit: parsed.credit,
        }
    }

    /// What the database layer needs of it.
    pub fn as_db(&self) -> crate::db::write::Batch<'_> {
        crate::db::write::Batch {
            file_id: self.file.file_id,
            file_name: &self.file.name,
            header: self.header.raw(),
            start_offset: self.start_offset,
            end_offset: self.end_offset,
            end_line: self.end_line,
            rows: self.rows,
            events: &self.events,
            repeats: &self.repeats,
            rejects: &self.rejects,
            batch_duplicates: self.batch_duplicates,
            last: self.end.is_last(),
        }
    }
}

/// Writer → CheckpointKeeper: a batch is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BatchCommitted {
    pub file: Arc<FileTask>,
    pub counts: Counts,
    pub end: BatchEnd,
    /// The file's committed offset after this batch (for the bytes left).
    pub end_offset: u64,
}

/// CheckpointKeeper → Watcher: a file identity is finished (done, or parked).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FileFinished {
    pub path: PathBuf,
    pub left: Left,
}

/// What a finished file left at its path in the incoming folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// Nothing of it: moved, deleted, or gone already.
    Nothing,
    /// The file itself, finished (kept by `after_commit = keep`, or parked):
    /// remembered by the stat it was identified with, so a rescan passes it
    /// by while a different file that takes the name is seen.
    Finished(crate::fsutil::Stamp),
    /// Not finished after all: reading failed in a way that may pass (file
    /// unreadable or changing); looked at again on a later scan, or as soon
    /// as its stat differs from this one.
    Retry(crate::fsutil::Stamp),
}

/// A child → the Supervisor: it failed and the pipeline must restart from
/// the checkpoints. `file` names the file being processed, if known, so a
/// poison file can be parked instead of crash-looping.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ChildFailed {
    /// The pipeline whose data path must restart.
    pub pipeline: String,
    pub actor: &'static str,
    pub file: Option<FileId>,
    pub error: String,
}

/// Supervisor → CheckpointKeeper: count a failure against a file; parks it
/// past the limit. Answers whether it is now parked.
#[derive(Message)]
#[rtype(result = "Result<bool, DbError>")]
pub struct RecordFailure {
    pub file_id: FileId,
    pub error: String,
}

/// Supervisor → Watcher and Generator: stop taking new work (SIGTERM).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopIntake;

/// Supervisor → Watcher: are all present files finished and nothing in
/// flight? (`--until-idle`)
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsIdle;

/// Supervisor → Parser: stop reading and forget queued files (drain).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReading;

/// Supervisor → any child: stop now (in-flight work is dropped; the
/// checkpoints make that safe).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// notify's thread → Watcher: something happened to this path (a hint:
/// correctness never depends on it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hint {
    pub path: PathBuf,
    pub renamed: bool,
}

/// Supervisor → CheckpointKeeper: where to announce finished files (the
/// Watcher starts after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetWatcher(pub Recipient<FileFinished>);

/// Watcher → CheckpointKeeper: every entry of the incoming folder whose
/// name matches the input pattern but which is not read, with why; the
/// whole set, sent whenever it changes (recorded in `ingest_skipped`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Skipped(pub Vec<SkippedEntry>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// As `fsutil::display_name` shows it.
    pub path: String,
    /// A `intake::SkipReason`'s name.
    pub reason: &'static str,
    pub detail: String,
}
