//! The CSV reader (`ingestd::core::reader`) over bytes in memory: one
//! harness for the tests that check it against other readings (the
//! property tests' model, the corpora's expected outputs).

use std::io::BufReader;

use ingestd::core::reader::RecordReader;
use ingestd::core::record::RawRecord;

/// Reads `input` (which starts at `offset`/`line` of its stream) through a
/// buffer of `chunk` bytes with records capped at `cap`: the header first
/// if `header`, then data records to the end. `each` sees every record with
/// the reader's offset and line after it. One `RawRecord` is reused, as the
/// reader intends; the end of the stream must be sticky.
pub fn read_with(
    input: &[u8],
    (offset, line): (u64, u64),
    cap: usize,
    chunk: usize,
    header: bool,
    mut each: impl FnMut(&RawRecord, u64, u64),
) {
    let mut reader = RecordReader::new(BufReader::with_capacity(chunk, input), offset, line, cap);
    let mut rec = RawRecord::default();
    let mut want_header = header;
    loop {
        let more = if want_header { reader.read_header(&mut rec) } else { reader.read_record(&mut rec) };
        want_header = false;
        if !more.expect("in-memory reads do not fail") {
            break;
        }
        each(&rec, reader.offset(), reader.line());
    }
    assert!(!reader.read_record(&mut rec).unwrap(), "end of stream is sticky");
}

/// Line ends in `bytes` (`\r\n` counts once).
pub fn line_ends(bytes: &[u8]) -> u64 {
    (0..bytes.len()).filter(|&i| bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n'))).count()
        as u64
}
