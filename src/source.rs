//! Reading input files: open one at its checkpoint, read it a batch at a
//! time, and read a committed batch's range again. Used by the Parser (the
//! data path) and by the Writer (to isolate rows the database refused),
//! so neither imports the other.
//!
//! Reading is streaming: a file of any size costs the reader's buffers
//! (at most 256 KiB each) and one batch of records.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use crate::core::header::Header;
use crate::core::reader::RecordReader;
use crate::core::record::{RawRecord, RecordBatch};
use crate::core::schema::Schema;

/// Primary key of a row in `ingest_files`.
pub type FileId = i64;

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

const READ_BUFFER: usize = 256 * 1024;
/// A file with at most this much left to read is small: its batch's
/// buffers are sized for all of it at once.
const SMALL_REST: u64 = 256 * 1024;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Cannot be opened or read now (permissions, gone, an I/O error): it
    /// may work later.
    #[error("cannot read: {0}")]
    Unavailable(io::Error),
    /// Its size is not the one it was identified with.
    #[error("file changed since it was identified")]
    Changed,
    /// It shrank while being read: it is being rewritten.
    #[error("file truncated while being read")]
    Truncated,
    /// The content is damaged (a broken gzip stream, a checkpoint past its
    /// end): waiting will not help.
    #[error("damaged content: {0}")]
    Damaged(io::Error),
    /// A batch read again does not end where it did.
    #[error("the file no longer matches the batch being read again")]
    Moved,
}

impl ReadError {
    /// Damaged content will not get better by waiting: the file is parked.
    /// Anything else may: the file is retried later.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ReadError::Damaged(_))
    }

    /// An error of the (decompressed) stream: for gzip, invalid data or an
    /// early end is damage; anything else is the disk's.
    fn of_stream(e: io::Error, gzip: bool) -> ReadError {
        let damage =
            matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof);
        if gzip && damage {
            ReadError::Damaged(e)
        } else {
            ReadError::Unavailable(e)
        }
    }
}

type Stream = Box<dyn BufRead + Send>;

/// An open file being read.
pub struct Cursor {
    pub task: Arc<FileTask>,
    pub header: Arc<Header>,
    reader: RecordReader<Stream>,
    /// For noticing truncation while the file is read.
    file: File,
    /// Checkpoint where the next batch starts, and its line.
    pub offset: u64,
    pub line: u64,
    /// Reused for every record: no allocation per row.
    rec: RawRecord,
}

/// A run of records read from one file.
pub struct Batch {
    pub task: Arc<FileTask>,
    pub header: Arc<Header>,
    /// Offset and line where this batch starts (the fence: the committed
    /// checkpoint must equal it), and the checkpoint after it.
    pub start_offset: u64,
    pub start_line: u64,
    pub end_offset: u64,
    pub end_line: u64,
    pub records: RecordBatch,
    /// The file's last batch.
    pub eof: bool,
}

/// Opens a file, reads its header (mapped onto `schema`), and positions the
/// reader at the task's committed offset.
pub fn open(task: Arc<FileTask>, schema: &Schema, max_record_bytes: usize) -> Result<Cursor, ReadError> {
    let (file, meta) = crate::fsutil::open_regular(&task.path).map_err(ReadError::Unavailable)?;
    if meta.len() != task.size {
        return Err(ReadError::Changed);
    }
    let gzip = task.gzip;
    let stream_err = |e| ReadError::of_stream(e, gzip);
    let mut reader =
        RecordReader::new(stream(&file, task.size, gzip).map_err(ReadError::Unavailable)?, 0, 1, max_record_bytes);
    let mut header_rec = RawRecord::default();
    let has_header = reader.read_header(&mut header_rec).map_err(stream_err)?;
    let header = Arc::new(Header::parse(schema, &header_rec));
    if header.extra_columns() > 0 {
        tracing::info!(file = %task.name, extra_columns = header.extra_columns(), "ignoring unknown columns");
    }
    if let (true, Some(problem)) = (has_header, header.problem()) {
        tracing::warn!(file = %task.name, %problem, "every row of this file is missing_column");
    }
    if task.offset > reader.offset() {
        // Resume: a fresh stream at the committed offset (for gzip, the
        // decompressed offset, reached by decompressing up to it).
        let mut s = stream(&file, task.size, gzip).map_err(ReadError::Unavailable)?;
        if gzip {
            let skipped = io::copy(&mut (&mut s).take(task.offset), &mut io::sink()).map_err(stream_err)?;
            if skipped != task.offset {
                return Err(ReadError::Damaged(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "checkpoint beyond end of file",
                )));
            }
        } else {
            let mut f = file.try_clone().map_err(ReadError::Unavailable)?;
            f.seek(SeekFrom::Start(task.offset)).map_err(ReadError::Unavailable)?;
            s = Box::new(BufReader::with_capacity(READ_BUFFER, f));
        }
        reader = RecordReader::new(s, task.offset, task.line, max_record_bytes);
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

/// A batch and the cursor to read on from (none at the end of the file), or
/// the file that failed and why.
pub type BatchRead = Result<(Option<Box<Cursor>>, Batch), (Arc<FileTask>, ReadError)>;

/// Reads up to `max_rows` records or `max_bytes` bytes of records from the
/// cursor, whichever comes first. The cursor comes back unless the file
/// ended.
pub fn read_batch(mut cursor: Box<Cursor>, max_rows: usize, max_bytes: usize) -> BatchRead {
    crate::failpoints::hit("parser_batch", &cursor.task.name);
    let mut records = match cursor.task.size.checked_sub(cursor.offset) {
        // The rest of a small file: room for all of it at once, so its
        // buffers never grow (a copy each time) nor keep a doubling's slack
        // (a step holds a hundred such files).
        Some(rest) if !cursor.task.gzip && rest <= SMALL_REST => {
            RecordBatch::with_capacity(max_rows.min(rest as usize / 32 + 1), rest as usize)
        }
        _ => RecordBatch::with_capacity(max_rows.min(16_384), 0),
    };
    let gzip = cursor.task.gzip;
    let mut eof = false;
    let result = (|| {
        // Full at max_rows rows or max_bytes bytes, whichever comes first:
        // wide rows must not stretch the memory bound.
        while records.len() < max_rows && records.bytes() < max_bytes {
            if !cursor.reader.read_record(&mut cursor.rec).map_err(|e| ReadError::of_stream(e, gzip))? {
                eof = true;
                break;
            }
            records.push(&cursor.rec);
        }
        // Full exactly at the end of the file: this is its last batch (no
        // empty batch and transaction after it, no put-back in a step).
        eof |= cursor.reader.at_end();
        // A file that shrank under us is being rewritten: do not commit what
        // may be a torn record; the new content is a new identity.
        if cursor.file.metadata().map_err(ReadError::Unavailable)?.len() < cursor.task.size {
            return Err(ReadError::Truncated);
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
    schema: &Schema,
    start_offset: u64,
    start_line: u64,
    end_offset: u64,
    max_record_bytes: usize,
) -> Result<Vec<RawRecord>, ReadError> {
    let task = FileTask { offset: start_offset, line: start_line, ..task.clone() };
    let gzip = task.gzip;
    let mut cursor = open(Arc::new(task), schema, max_record_bytes)?;
    let mut records = Vec::new();
    while cursor.reader.offset() < end_offset {
        let mut rec = RawRecord::default();
        if !cursor.reader.read_record(&mut rec).map_err(|e| ReadError::of_stream(e, gzip))? {
            break;
        }
        records.push(rec);
    }
    if cursor.reader.offset() != end_offset {
        return Err(ReadError::Moved);
    }
    Ok(records)
}
