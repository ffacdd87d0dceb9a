//! Parser: streams one file at a time into batches of records.
//!
//! - Receives: `ReadFile` (Watcher), `StopReading` (Supervisor).
//! - Emits: `ParsedBatch` to the Validator, each holding one credit.
//! - State: queued files; the open files' cursors (reader, header,
//!   position). Up to `open_files` files are read at once, a batch from each
//!   in turn, so the Writer's connections can commit different files side by
//!   side.
//! - On restart: nothing is kept; files come again from the Watcher with
//!   their committed offsets.
//! - On drain: stops reading; batches already emitted flow on.
//! - Backpressure: a batch is read only after a full batch's credit is
//!   taken from the window (what it did not use goes back once it is read),
//!   so a slow or stalled database stops the reading here.
//!
//! Reading and parsing run on tokio's blocking pool: the actor thread also
//! drives the database connections and must never block.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::Semaphore;

use crate::actors::validator::Validator;
use crate::core::header::Header;
use crate::core::reader::RecordReader;
use crate::core::record::{RawRecord, RecordBatch};
use crate::messages::{BatchEnd, ChildFailed, Credit, FileTask, ParsedBatch, ReadFile, StopReading, CREDIT_UNITS};

const READ_BUFFER: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct ParserSettings {
    /// Files read at once (one per Writer connection keeps them all busy).
    pub open_files: usize,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub max_record_bytes: usize,
}

type Stream = Box<dyn BufRead + Send>;

/// An open file being read.
struct Cursor {
    task: Arc<FileTask>,
    header: Arc<Header>,
    reader: RecordReader<Stream>,
    /// For noticing truncation while the file is read.
    file: File,
    /// Checkpoint where the next batch starts, and its line.
    offset: u64,
    line: u64,
    /// Reused for every record: no allocation per row.
    rec: RawRecord,
}

pub struct Parser {
    settings: ParserSettings,
    validator: Addr<Validator>,
    supervisor: Recipient<ChildFailed>,
    credits: Arc<Semaphore>,
    queue: VecDeque<FileTask>,
    /// Open files, read round-robin.
    open: VecDeque<Box<Cursor>>,
    busy: bool,
    stopped: bool,
}

impl Parser {
    pub fn new(
        settings: ParserSettings,
        validator: Addr<Validator>,
        supervisor: Recipient<ChildFailed>,
        credits: Arc<Semaphore>,
    ) -> Self {
        Parser {
            settings,
            validator,
            supervisor,
            credits,
            queue: VecDeque::new(),
            open: VecDeque::new(),
            busy: false,
            stopped: false,
        }
    }

    /// Reads the next batch if there is work, no batch is being read, and
    /// the window has room.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.stopped {
            return;
        }
        let work = if self.open.len() < self.settings.open_files && !self.queue.is_empty() {
            Work::Open(self.queue.pop_front().expect("checked non-empty"))
        } else {
            match self.open.pop_front() {
                Some(c) => Work::Continue(c),
                None => return,
            }
        };
        self.busy = true;
        let credits = self.credits.clone();
        let validator = self.validator.clone();
        let settings = self.settings.clone();
        let (settings_rows, settings_bytes) = (settings.batch_rows, settings.batch_bytes);
        let fut = async move {
            let Ok(permit) = credits.acquire_many_owned(CREDIT_UNITS as u32).await else {
                return Step::Stopped;
            };
            let mut credit = Credit::new(permit);
            let file_id = work.file_id();
            let parsed = tokio::task::spawn_blocking(move || read_batch(work, &settings)).await;
            let (msg, cursor) = match parsed {
                Ok(Ok((cursor, batch))) => {
                    credit.settle(batch.records.len(), settings_rows, batch.records.bytes(), settings_bytes);
                    (batch.into_message(credit), cursor)
                }
                Ok(Err((task, error))) => {
                    credit.settle(0, 1, 0, 1);
                    let park = is_permanent(&error);
                    let msg = ParsedBatch {
                        start_offset: task.offset,
                        start_line: task.line,
                        end_offset: task.offset,
                        end_line: task.line,
                        header: Arc::new(Header::parse(&RawRecord::default())),
                        file: task,
                        records: RecordBatch::default(),
                        end: BatchEnd::Abort { error: error.to_string(), park },
                        credit,
                    };
                    (msg, None)
                }
                Err(join) => {
                    return Step::Failed(ChildFailed {
                        actor: "parser",
                        file: Some(file_id),
                        error: panic_message(join),
                    })
                }
            };
            tracing::debug!(file = %msg.file.name, rows = msg.records.len(), "batch read");
            if validator.send(msg).await.is_err() {
                return Step::Stopped;
            }
            Step::Sent(cursor)
        };
        ctx.spawn(fut.into_actor(self).map(|step, act, ctx| {
            act.busy = false;
            match step {
                Step::Sent(cursor) => {
                    if let Some(c) = cursor {
                        act.open.push_back(c);
                    }
                    act.pump(ctx);
                }
                Step::Stopped => {}
                Step::Failed(failure) => {
                    act.supervisor.do_send(failure);
                    ctx.stop();
                }
            }
        }));
    }
}

enum Work {
    Open(FileTask),
    Continue(Box<Cursor>),
}

impl Work {
    fn file_id(&self) -> i64 {
        match self {
            Work::Open(t) => t.file_id,
            Work::Continue(c) => c.task.file_id,
        }
    }
}

enum Step {
    Sent(Option<Box<Cursor>>),
    Stopped,
    Failed(ChildFailed),
}

struct Batch {
    task: Arc<FileTask>,
    header: Arc<Header>,
    start_offset: u64,
    start_line: u64,
    end_offset: u64,
    end_line: u64,
    records: RecordBatch,
    eof: bool,
}

impl Batch {
    fn into_message(self, credit: Credit) -> ParsedBatch {
        ParsedBatch {
            file: self.task,
            header: self.header,
            start_offset: self.start_offset,
            start_line: self.start_line,
            end_offset: self.end_offset,
            end_line: self.end_line,
            records: self.records,
            end: if self.eof { BatchEnd::Eof } else { BatchEnd::More },
            credit,
        }
    }
}

type ReadResult = Result<(Option<Box<Cursor>>, Batch), (Arc<FileTask>, io::Error)>;

fn read_batch(work: Work, settings: &ParserSettings) -> ReadResult {
    let mut cursor = match work {
        Work::Continue(c) => c,
        Work::Open(task) => {
            let task = Arc::new(task);
            match open(task.clone(), settings) {
                Ok(c) => Box::new(c),
                Err(e) => return Err((task, e)),
            }
        }
    };
    crate::failpoints::hit("parser_batch", &cursor.task.name);
    // Room for the rows the rest of the file can hold (a row takes 10
    // bytes at least): a small file must not reserve a full batch's room,
    // which thousands of them would scatter over the heap.
    let left = if cursor.task.gzip { u64::MAX } else { cursor.task.size.saturating_sub(cursor.offset) / 10 + 1 };
    let mut records = RecordBatch::with_capacity(settings.batch_rows.min(16_384).min(left as usize));
    let mut eof = false;
    let result = (|| {
        // Full at batch_rows rows or batch_bytes bytes, whichever comes
        // first: wide rows must not stretch the memory bound.
        while records.len() < settings.batch_rows && records.bytes() < settings.batch_bytes {
            if !cursor.reader.read_record(&mut cursor.rec)? {
                eof = true;
                break;
            }
            records.push(&cursor.rec);
        }
        // A file that shrank under us is being rewritten: do not commit what
        // may be a torn record; the new content is a new identity.
        if cursor.file.metadata()?.len() < cursor.task.size {
            return Err(io::Error::other("file truncated while being read"));
        }
        Ok(())
    })();
    if let Err(e) = result {
        return Err((cursor.task.clone(), e));
    }
    let batch = Batch {
        task: cursor.task.clone(),
        header: cursor.header.clone(),
        start_offset: cursor.offset,
        start_line: cursor.line,
        end_offset: cursor.reader.offset(),
        end_line: cursor.reader.line(),
        records,
        eof,
    };
    cursor.offset = batch.end_offset;
    cursor.line = batch.end_line;
    Ok((if eof { None } else { Some(cursor) }, batch))
}

/// Reads a batch's records again, from `start_offset` (at `start_line`) to
/// `end_offset`: the Writer isolates a row the database refused this way,
/// without keeping every batch's raw text until its commit.
pub fn read_range(
    task: &FileTask,
    start_offset: u64,
    start_line: u64,
    end_offset: u64,
    max_record_bytes: usize,
) -> io::Result<Vec<RawRecord>> {
    let task = FileTask { offset: start_offset, line: start_line, ..task.clone() };
    let settings = ParserSettings { open_files: 1, batch_rows: 0, batch_bytes: 0, max_record_bytes };
    let mut cursor = open(Arc::new(task), &settings)?;
    let mut records = Vec::new();
    while cursor.reader.offset() < end_offset {
        let mut rec = RawRecord::default();
        if !cursor.reader.read_record(&mut rec)? {
            break;
        }
        records.push(rec);
    }
    if cursor.reader.offset() != end_offset {
        return Err(io::Error::other("the file no longer matches the batch being isolated"));
    }
    Ok(records)
}

/// Opens a file, reads its header, and positions the reader at the task's
/// committed offset.
fn open(task: Arc<FileTask>, settings: &ParserSettings) -> io::Result<Cursor> {
    let (file, meta) = crate::fsutil::open_regular(&task.path)?;
    if meta.len() != task.size {
        return Err(io::Error::other("file changed since it was identified"));
    }
    let mut reader = RecordReader::new(stream(&file, task.size, task.gzip)?, 0, 1, settings.max_record_bytes);
    let mut header_rec = RawRecord::default();
    let has_header = reader.read_header(&mut header_rec)?;
    let header = Arc::new(Header::parse(&header_rec));
    if header.extra_columns() > 0 {
        tracing::info!(file = %task.name, extra_columns = header.extra_columns(), "ignoring unknown columns");
    }
    if let (true, Some(problem)) = (has_header, header.problem()) {
        tracing::warn!(file = %task.name, %problem, "every row of this file is missing_column");
    }
    if task.offset > reader.offset() {
        // Resume: a fresh stream at the committed offset (for gzip, the
        // decompressed offset, reached by decompressing up to it).
        let mut s = stream(&file, task.size, task.gzip)?;
        if task.gzip {
            let skipped = io::copy(&mut (&mut s).take(task.offset), &mut io::sink())?;
            if skipped != task.offset {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "checkpoint beyond end of file"));
            }
        } else {
            let mut f = file.try_clone()?;
            f.seek(SeekFrom::Start(task.offset))?;
            s = Box::new(BufReader::with_capacity(READ_BUFFER, f));
        }
        reader = RecordReader::new(s, task.offset, task.line, settings.max_record_bytes);
    }
    Ok(Cursor { offset: task.offset, line: task.line, task, header, reader, file, rec: RawRecord::default() })
}

fn stream(file: &File, size: u64, gzip: bool) -> io::Result<Stream> {
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(0))?;
    // A small file gets a small buffer: thousands of small files must not
    // each cost a large allocation.
    let cap = (size as usize).saturating_add(64).clamp(8 * 1024, READ_BUFFER);
    Ok(if gzip {
        let inner = BufReader::with_capacity(cap, f);
        Box::new(BufReader::with_capacity(READ_BUFFER, flate2::bufread::MultiGzDecoder::new(inner)))
    } else {
        Box::new(BufReader::with_capacity(cap, f))
    })
}

/// Damaged content will not get better by waiting: park the file. Missing
/// permissions or a file that changed may: retry later.
fn is_permanent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof)
}

pub fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

impl Actor for Parser {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::actors::mailbox_capacity());
    }
}

impl Handler<ReadFile> for Parser {
    type Result = ();
    fn handle(&mut self, msg: ReadFile, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        self.queue.push_back(msg.0);
        self.pump(ctx);
    }
}

impl Handler<StopReading> for Parser {
    type Result = ();
    fn handle(&mut self, _: StopReading, _: &mut Context<Self>) {
        self.stopped = true;
        self.queue.clear();
        self.open.clear();
    }
}
