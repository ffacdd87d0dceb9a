//! Parser: streams files into batches of records.
//!
//! - Receives: `ReadFiles` (Watcher), `StopReading` (Supervisor).
//! - Emits: `Parsed` to its downstream (the Validator): one read step's
//!   batches, each holding its share of the credit window.
//! - State: queued files; the open files' cursors (reader, header,
//!   position). Up to `open_files` files are read at once, a batch from each
//!   in turn, so the Writer's connections can commit different files side by
//!   side. Small files are read whole, several in one step (`read_step`):
//!   a file then costs no blocking-pool trip or message of its own.
//! - On restart: nothing is kept; files come again from the Watcher with
//!   their committed offsets.
//! - On drain: stops reading; batches already emitted flow on.
//! - Backpressure: a step runs only after a full batch's credit is taken
//!   from the window (what its batches did not use goes back once they are
//!   read), so a slow or stalled database stops the reading here.
//!
//! Reading and parsing run on tokio's blocking pool: the actor thread also
//! drives the database connections and must never block. The reading itself
//! is `crate::source`'s.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::panic_message;
use crate::core::pipeline::Pipeline;
use crate::credit::{self, Credits, StepCredit, CREDIT_UNITS};
use crate::messages::{BatchEnd, ChildFailed, FileTask, Parsed, ParsedBatch, ReadFiles, StopReading};
use crate::source::{self, Batch, Cursor, ReadError};

#[derive(Debug, Clone)]
pub struct ParserSettings {
    pub pipeline: Arc<Pipeline>,
    /// Files read at once (one per Writer connection keeps them all busy).
    pub open_files: usize,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub max_record_bytes: usize,
}

pub struct Parser {
    settings: ParserSettings,
    downstream: Recipient<Parsed>,
    supervisor: Recipient<ChildFailed>,
    credits: Credits,
    queue: VecDeque<FileTask>,
    /// Open files, read round-robin.
    open: VecDeque<Box<Cursor>>,
    busy: bool,
    stopped: bool,
}

impl Parser {
    pub fn new(
        settings: ParserSettings,
        downstream: Recipient<Parsed>,
        supervisor: Recipient<ChildFailed>,
        credits: Credits,
    ) -> Self {
        Parser {
            settings,
            downstream,
            supervisor,
            credits,
            queue: VecDeque::new(),
            open: VecDeque::new(),
            busy: false,
            stopped: false,
        }
    }

    /// Starts the next read step if there is work, no step is running,
    /// and the window has room: the next batch of an open file, or the
    /// next queued files (see `read_step`).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.stopped {
            return;
        }
        let work = if self.open.len() < self.settings.open_files && !self.queue.is_empty() {
            // With the files after it while their text stays within
            // `STEP_TEXT`: small files are read whole, several to a step.
            let mut tasks = vec![self.queue.pop_front().expect("checked non-empty")];
            let mut bytes = text_left(&tasks[0]);
            while let Some(next) = self.queue.front() {
                bytes = bytes.saturating_add(text_left(next));
                if tasks.len() >= STEP_FILES || bytes > STEP_TEXT {
                    break;
                }
                tasks.extend(self.queue.pop_front());
            }
            Work::Open(tasks)
        } else {
            match self.open.pop_front() {
                Some(c) => Work::Continue(c),
                None => return,
            }
        };
        self.busy = true;
        let credits = self.credits.clone();
        let downstream = self.downstream.clone();
        let settings = self.settings.clone();
        let settings_name = self.settings.pipeline.name.clone();
        // The file being read, for blaming a panic on the right one.
        let reading = Arc::new(AtomicI64::new(work.file_id()));
        let fut = async move {
            let Some(mut credit) = credits.step().await else {
                return Step::Stopped;
            };
            let now_reading = reading.clone();
            let read = tokio::task::spawn_blocking(move || read_step(work, &settings, &now_reading)).await;
            let read = match read {
                Ok(read) => read,
                Err(join) => {
                    return Step::Failed(ChildFailed {
                        pipeline: settings_name,
                        actor: "parser",
                        file: Some(reading.load(Ordering::Relaxed)),
                        error: panic_message(join),
                    })
                }
            };
            let batches: Vec<ParsedBatch> =
                read.pieces.into_iter().map(|piece| piece.into_message(&mut credit)).collect();
            // What the step did not use goes back to the window here.
            drop(credit);
            for b in &batches {
                tracing::debug!(file = %b.file.name, rows = b.records.len(), "batch read");
            }
            if downstream.send(Parsed(batches)).await.is_err() {
                return Step::Stopped;
            }
            Step::Sent { cursor: read.cursor, unread: read.unread }
        };
        ctx.spawn(fut.into_actor(self).map(|step, act, ctx| {
            act.busy = false;
            match step {
                Step::Sent { cursor, unread } => {
                    if act.stopped {
                        return;
                    }
                    act.open.extend(cursor);
                    for task in unread.into_iter().rev() {
                        act.queue.push_front(task);
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

/// Files one read step takes at most.
const STEP_FILES: usize = 256;
/// Text one step reads at most when it takes several files. A step's
/// records live as many mid-sized buffers, below the mmap threshold, until
/// they are validated: a whole batch's worth of them (a hundred 20 kB files)
/// left the heap 15 MB higher; half a megabyte keeps RSS where one file per
/// step had it, with a fortieth of the steps.
const STEP_TEXT: u64 = 512 * 1024;
/// Bytes of a queued file still to read (for gzip, its compressed size: a
/// rough guide, since the step's credit bounds what it reads anyway).
fn text_left(task: &FileTask) -> u64 {
    if task.gzip {
        task.size
    } else {
        task.size.saturating_sub(task.offset)
    }
}

enum Work {
    /// Files to open and read in order, each from its checkpoint.
    Open(Vec<FileTask>),
    Continue(Box<Cursor>),
}

impl Work {
    fn file_id(&self) -> i64 {
        match self {
            Work::Open(t) => t[0].file_id,
            Work::Continue(c) => c.task.file_id,
        }
    }
}

enum Step {
    Sent { cursor: Option<Box<Cursor>>, unread: Vec<FileTask> },
    Stopped,
    Failed(ChildFailed),
}

/// What one read step produced.
#[derive(Default)]
struct StepRead {
    /// In reading order, each with its share of the step's credit.
    pieces: Vec<Piece>,
    /// The file the step stopped in (its credit ran out): read on later.
    cursor: Option<Box<Cursor>>,
    /// Files the step did not reach, in order.
    unread: Vec<FileTask>,
}

/// A batch, or a file that could not be read, and the credit units it takes.
struct Piece {
    read: Result<Batch, (Arc<FileTask>, ReadError)>,
    units: usize,
}

impl Piece {
    fn into_message(self, credit: &mut StepCredit) -> ParsedBatch {
        match self.read {
            Ok(b) => {
                let credit = credit.split(self.units, b.records.len());
                ParsedBatch {
                    file: b.task,
                    header: b.header,
                    start_offset: b.start_offset,
                    start_line: b.start_line,
                    end_offset: b.end_offset,
                    end_line: b.end_line,
                    records: b.records,
                    end: if b.eof { BatchEnd::Eof } else { BatchEnd::More },
                    credit,
                }
            }
            Err((task, error)) => ParsedBatch::failed(task, error, credit.split(self.units, 0)),
        }
    }
}

/// One read step, within one full batch's credit (`CREDIT_UNITS`): the
/// next batch of an open file, or queued files in order: the first one's
/// first batch, and the next ones whole while the credit lasts. Each file
/// is read with what is left of the credit as its limits (rows and bytes
/// in proportion), so its share always fits: the step never holds more
/// than one batch's rows or bytes, however many files it reads. A later
/// file that does not end within what is left is put back (what was read
/// of it is dropped), with the files after it: every batch but a file's
/// last stays a full batch.
fn read_step(work: Work, settings: &ParserSettings, reading: &AtomicI64) -> StepRead {
    let mut step = StepRead::default();
    let mut left = CREDIT_UNITS;
    let tasks = match work {
        Work::Continue(cursor) => {
            let (piece, cursor) = read_piece(cursor, left, settings);
            step.pieces.push(piece);
            step.cursor = cursor;
            return step;
        }
        Work::Open(tasks) => tasks,
    };
    let mut tasks = tasks.into_iter();
    for task in tasks.by_ref() {
        if left * settings.batch_rows < CREDIT_UNITS || left * settings.batch_bytes < CREDIT_UNITS {
            // Not even a row's worth of credit left.
            step.unread.push(task);
            break;
        }
        reading.store(task.file_id, Ordering::Relaxed);
        let task = Arc::new(task);
        let cursor = match source::open(task.clone(), &settings.pipeline.schema, settings.max_record_bytes) {
            Ok(c) => Box::new(c),
            Err(e) => {
                step.pieces.push(Piece { read: Err((task, e)), units: 1 });
                left -= 1;
                continue;
            }
        };
        let (piece, cursor) = read_piece(cursor, left, settings);
        if cursor.is_some() {
            if step.pieces.is_empty() {
                // The step's first file: a batch like any other.
                step.pieces.push(piece);
                step.cursor = cursor;
            } else {
                // Too big for what is left: it waits for a step of its own,
                // so each of its batches is a full one.
                step.unread.push((*task).clone());
            }
            break;
        }
        left -= piece.units;
        step.pieces.push(piece);
    }
    step.unread.extend(tasks);
    step
}

/// Reads the next batch of an open file with `units` of credit (at least
/// one): up to that share of a batch's rows and bytes. The cursor comes
/// back unless the file ended or failed.
fn read_piece(cursor: Box<Cursor>, units: usize, settings: &ParserSettings) -> (Piece, Option<Box<Cursor>>) {
    let rows = settings.batch_rows * units / CREDIT_UNITS;
    let bytes = settings.batch_bytes * units / CREDIT_UNITS;
    match source::read_batch(cursor, rows.max(1), bytes.max(1)) {
        Ok((cursor, batch)) => {
            // A batch may pass its bytes by its last record; its share
            // stays within the step's credit all the same.
            let units =
                credit::units(batch.records.len(), settings.batch_rows, batch.records.bytes(), settings.batch_bytes)
                    .min(units);
            (Piece { read: Ok(batch), units }, cursor)
        }
        Err(failed) => (Piece { read: Err(failed), units: 1 }, None),
    }
}

impl Actor for Parser {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::actors::mailbox_capacity());
    }
}

impl Handler<ReadFiles> for Parser {
    type Result = ();
    fn handle(&mut self, msg: ReadFiles, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        self.queue.extend(msg.0);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::fsutil::Stamp;

    fn file(dir: &Path, name: &str, rows: usize, file_id: i64) -> FileTask {
        let mut text = String::from("event_id,user_id\n");
        for r in 0..rows {
            text.push_str(&format!("{file_id}-{r},u\n"));
        }
        let path = dir.join(name);
        std::fs::write(&path, &text).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        FileTask {
            file_id,
            path,
            name: name.into(),
            fingerprint: String::new(),
            size: meta.len(),
            stamp: Stamp::of(&meta),
            gzip: false,
            offset: 0,
            line: 1,
        }
    }

    fn settings() -> ParserSettings {
        ParserSettings {
            pipeline: crate::core::pipeline::builtin(),
            open_files: 2,
            batch_rows: 100,
            batch_bytes: 1 << 20,
            max_record_bytes: 1 << 20,
        }
    }

    /// (file, rows, last batch of its file, units) of each piece.
    fn pieces(step: &StepRead) -> Vec<(i64, usize, bool, usize)> {
        step.pieces
            .iter()
            .map(|p| {
                let b = p.read.as_ref().expect("read");
                (b.task.file_id, b.records.len(), b.eof, p.units)
            })
            .collect()
    }

    /// Small files are read whole, several to a step, each with what is left
    /// of the step's credit; one that does not end within it is put back
    /// with the files after it.
    #[test]
    fn a_step_reads_small_files_within_one_batch_credit() {
        let dir = tempfile::tempdir().unwrap();
        let tasks: Vec<FileTask> = [30, 30, 30, 30, 5]
            .iter()
            .enumerate()
            .map(|(i, &n)| file(dir.path(), &format!("{i}.csv"), n, i as i64))
            .collect();
        let reading = AtomicI64::new(-1);
        let step = read_step(Work::Open(tasks), &settings(), &reading);
        assert_eq!(pieces(&step), [(0, 30, true, 300), (1, 30, true, 300), (2, 30, true, 300)]);
        assert_eq!(step.unread.iter().map(|t| (t.file_id, t.offset)).collect::<Vec<_>>(), [(3, 0), (4, 0)]);
        assert!(step.cursor.is_none());
        assert_eq!(reading.load(Ordering::Relaxed), 3, "the file read last");

        let step = read_step(Work::Open(step.unread), &settings(), &reading);
        assert_eq!(pieces(&step), [(3, 30, true, 300), (4, 5, true, 50)]);

        // A file that ends exactly where the credit does is whole.
        let tasks = vec![file(dir.path(), "70.csv", 70, 5), file(dir.path(), "30.csv", 30, 6)];
        let step = read_step(Work::Open(tasks), &settings(), &reading);
        assert_eq!(pieces(&step), [(5, 70, true, 700), (6, 30, true, 300)]);
        assert!(step.cursor.is_none() && step.unread.is_empty());
    }

    /// A step's first file is cut like any file: a full batch, then it
    /// stays open exactly where the batch ends.
    #[test]
    fn a_step_cuts_its_first_file_at_a_full_batch() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = vec![file(dir.path(), "big.csv", 250, 1), file(dir.path(), "small.csv", 5, 2)];
        let reading = AtomicI64::new(-1);
        let step = read_step(Work::Open(tasks), &settings(), &reading);
        assert_eq!(pieces(&step), [(1, 100, false, 1000)]);
        assert_eq!(step.unread.iter().map(|t| t.file_id).collect::<Vec<_>>(), [2]);
        let cut = step.pieces[0].read.as_ref().unwrap();
        let cursor = step.cursor.expect("big.csv stays open");
        assert_eq!((cursor.task.file_id, cursor.offset, cursor.line), (1, cut.end_offset, 102));

        let next = read_step(Work::Continue(cursor), &settings(), &reading);
        assert_eq!(pieces(&next), [(1, 100, false, 1000)]);
        let b = next.pieces[0].read.as_ref().unwrap();
        assert_eq!((b.start_offset, b.start_line, b.end_line), (cut.end_offset, 102, 202));
        let last = read_step(Work::Continue(next.cursor.expect("open")), &settings(), &reading);
        assert_eq!(pieces(&last), [(1, 50, true, 500)]);
        let b = last.pieces[0].read.as_ref().unwrap();
        assert_eq!(b.end_offset, b.task.size);
        assert!(last.cursor.is_none() && last.unread.is_empty());
    }

    /// A file that cannot be opened costs one unit and its own abort; the
    /// step goes on with the next file.
    #[test]
    fn a_step_goes_past_a_file_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let gone = file(dir.path(), "gone.csv", 3, 7);
        std::fs::remove_file(&gone.path).unwrap();
        let next = file(dir.path(), "next.csv", 3, 8);
        let step = read_step(Work::Open(vec![gone, next]), &settings(), &AtomicI64::new(-1));
        assert_eq!(step.pieces.len(), 2);
        let (task, e) = step.pieces[0].read.as_ref().err().expect("cannot open");
        let kind = match e {
            ReadError::Unavailable(io) => io.kind(),
            other => panic!("{other}"),
        };
        assert_eq!((task.file_id, kind, step.pieces[0].units), (7, std::io::ErrorKind::NotFound, 1));
        let b = step.pieces[1].read.as_ref().unwrap();
        assert_eq!((b.task.file_id, b.records.len(), b.eof, step.pieces[1].units), (8, 3, true, 30));
        assert!(step.cursor.is_none() && step.unread.is_empty());
    }

    /// The actor alone, a collector downstream: files in, batches out in
    /// order per file, each checkpoint where the previous one ended, and
    /// reading stops when the window is full until credits come back.
    #[actix_rt::test]
    async fn reads_queued_files_into_batches_within_the_window() {
        use crate::actors::testing::{wait_for, Collector};
        let dir = tempfile::tempdir().unwrap();
        let (collector, got) = Collector::<Parsed>::start();
        let (failures, _) = Collector::<ChildFailed>::start();
        let credits = crate::credit::Window::new(2, 1).for_pipeline();
        let parser = Parser::new(settings(), collector.recipient(), failures.recipient(), credits.clone()).start();
        let big = file(dir.path(), "big.csv", 250, 1);
        let small = file(dir.path(), "small.csv", 5, 2);
        parser.send(ReadFiles(vec![big, small])).await.unwrap();
        // Two batches' credit: two steps, then it waits.
        wait_for(&got, 2).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(got.lock().unwrap().len(), 2, "the window is full");
        let seen = |got: &[Parsed]| -> Vec<(i64, usize, u64, u64, bool)> {
            got.iter()
                .flat_map(|p| p.0.iter())
                .map(|b| (b.file.file_id, b.records.len(), b.start_line, b.end_line, b.end.is_last()))
                .collect()
        };
        let first = std::mem::take(&mut *got.lock().unwrap());
        assert_eq!(seen(&first), [(1, 100, 1, 102, false), (2, 5, 1, 7, true)]);
        drop(first);
        wait_for(&got, 2).await;
        let rest = seen(&got.lock().unwrap());
        assert_eq!(rest, [(1, 100, 102, 202, false), (1, 50, 202, 252, true)]);
    }
}
