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
use tokio::sync::OwnedSemaphorePermit;

use crate::core::header::Header;
use crate::core::reason::RejectReason;
use crate::core::record::RecordBatch;
use crate::db::DbError;

/// Primary key of a row in `ingest_files`.
pub type FileId = i64;

/// Credit units one full batch costs. The window holds
/// `batches_in_flight x CREDIT_UNITS`; a batch costs its share of a full
/// batch, by rows or by bytes, whichever is larger, so many small files can
/// be in flight at once under the same memory bound.
pub const CREDIT_UNITS: usize = 1000;

/// A batch's share of the credit window. The Parser takes a full batch's
/// worth before a read step, splits off each batch's share once it is read,
/// and gives back what the step did not use; a share is released when its
/// batch is dropped: after its commit, or when it is abandoned (its actor
/// stopped). Dropping it is the ack.
///
/// It also accounts the batch's rows in the `ingestd_rows_in_memory` gauge,
/// so the memory bound is observable from outside.
#[derive(Debug)]
pub struct Credit {
    _permit: OwnedSemaphorePermit,
    rows: i64,
}

impl Credit {
    /// Holds `permit` for a batch of `rows` rows, and counts them as held.
    pub fn new(permit: OwnedSemaphorePermit, rows: usize) -> Self {
        let m = crate::metrics::metrics();
        m.batches_in_flight.inc();
        m.rows_in_memory.add(rows as i64);
        let now = m.rows_in_memory.get();
        if now > m.rows_in_memory_peak.get() {
            m.rows_in_memory_peak.set(now);
        }
        Credit { _permit: permit, rows: rows as i64 }
    }

    /// The units a batch of `rows` rows and `bytes` bytes costs: its share
    /// of a full batch, by rows or by bytes, whichever is larger (at least
    /// one, at most a full batch).
    pub fn units(rows: usize, batch_rows: usize, bytes: usize, batch_bytes: usize) -> usize {
        let by_rows = rows.saturating_mul(CREDIT_UNITS).div_ceil(batch_rows.max(1));
        let by_bytes = bytes.saturating_mul(CREDIT_UNITS).div_ceil(batch_bytes.max(1));
        by_rows.max(by_bytes).clamp(1, CREDIT_UNITS)
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        let m = crate::metrics::metrics();
        m.rows_in_memory.sub(self.rows);
        m.batches_in_flight.dec();
    }
}

/// A file the CheckpointKeeper has claimed for reading, with where to resume.
#[derive(Debug, Clone)]
pub struct FileTask {
    pub file_id: FileId,
    pub path: PathBuf,
    /// The file name as it sits in the incoming folder; stored as
    /// `source_file` with every event and reject.
    pub name: String,
    pub fingerprint: String,
    pub size: u64,
    /// The stat the fingerprint was taken with: the same stat later means
    /// the same file, without hashing it again.
    pub stamp: crate::fsutil::Stamp,
    pub gzip: bool,
    /// Committed byte offset in the (decompressed) stream.
    pub offset: u64,
    /// Line number at `offset`.
    pub line: u64,
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

/// Where a batch leaves its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchEnd {
    /// More batches follow.
    More,
    /// The file's last batch: once committed, the file is done.
    Eof,
    /// Reading failed; the batch holds no rows. `park`: the content is
    /// damaged (park the file as failed); otherwise retry the file later.
    Abort { error: String, park: bool },
}

/// A row that failed a rule.
#[derive(Debug, Clone)]
pub struct RejectRow {
    pub line: u64,
    pub reason: RejectReason,
    pub detail: String,
    pub raw: Vec<u8>,
    pub raw_truncated: bool,
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
    /// The valid rows, encoded for binary COPY, in event_id order.
    pub events: crate::db::copy::CopyPayload,
    /// Valid rows whose id the Validator saw in a recent batch: most likely
    /// duplicates, kept apart so the rest can still go straight into the
    /// table. The Writer checks them (see `db::write`).
    pub repeats: Repeats,
    pub rejects: Vec<RejectRow>,
    /// Valid rows dropped because an earlier row of the batch had their id.
    pub batch_duplicates: u64,
    pub end: BatchEnd,
    pub credit: Credit,
}

/// A batch's presumed duplicates: their ids (sorted) and their rows, encoded
/// like `ValidatedBatch::events`, for when an id turns out not to be stored.
#[derive(Debug, Clone, Default)]
pub struct Repeats {
    pub ids: Vec<uuid::Uuid>,
    pub rows: crate::db::copy::CopyPayload,
}

/// Counts of one committed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: u64,
    pub written: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// The batch's transaction also marked its file done (its last batch,
    /// rows adding up): the file's rejected rows in all, for its disk work.
    pub file_done: Option<i64>,
}

/// Writer → CheckpointKeeper: a batch is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BatchCommitted {
    pub file: Arc<FileTask>,
    pub counts: Counts,
    pub end: BatchEnd,
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
