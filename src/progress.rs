//! Progress you can see: what is left to read, in bytes.
//!
//! [`InFlightBytes`] is the CheckpointKeeper's account of the files being
//! read: how many of their bytes are not committed yet, and how many each
//! committed batch settles (`ingestd_bytes_in_flight`,
//! `ingestd_bytes_committed_total`). With `ingestd_bytes_waiting` (the
//! Watcher's files not claimed yet) they give the bytes left and the rate
//! they go at: an ETA.

use std::collections::HashMap;

use crate::messages::FileId;

/// Bytes of the files being read that are not committed yet.
///
/// A file counts from its claim to its last batch (or until reading it
/// failed). Plain files advance with each batch's end offset; a gzip file's
/// offsets are in the decompressed stream, so it counts its whole
/// (compressed) size until its last batch commits. No I/O.
#[derive(Debug, Default)]
pub struct InFlightBytes {
    files: HashMap<FileId, Reading>,
    remaining: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    size: u64,
    /// Committed offset (plain files; never past `size`).
    offset: u64,
    gzip: bool,
}

impl Reading {
    fn left(&self) -> u64 {
        if self.gzip {
            self.size
        } else {
            self.size.saturating_sub(self.offset)
        }
    }
}

impl InFlightBytes {
    /// A file claimed for reading, resuming at `offset`.
    pub fn claimed(&mut self, file: FileId, size: u64, offset: u64, gzip: bool) {
        let reading = Reading { size, offset: offset.min(size), gzip };
        self.remaining += reading.left();
        if let Some(old) = self.files.insert(file, reading) {
            self.remaining = self.remaining.saturating_sub(old.left());
        }
    }

    /// A batch of `file` committed up to `end_offset`; `last`: its last
    /// batch. Returns the bytes this settles.
    pub fn committed(&mut self, file: FileId, end_offset: u64, last: bool) -> u64 {
        let Some(r) = self.files.get_mut(&file) else { return 0 };
        let settled = if last {
            let left = r.left();
            self.files.remove(&file);
            left
        } else if r.gzip {
            0
        } else {
            let end = end_offset.min(r.size).max(r.offset);
            let settled = end - r.offset;
            r.offset = end;
            settled
        };
        self.remaining = self.remaining.saturating_sub(settled);
        settled
    }

    /// A file no longer read (it failed, or will be retried later): its
    /// bytes left are no longer in flight, and were not committed.
    pub fn dropped(&mut self, file: FileId) {
        if let Some(r) = self.files.remove(&file) {
            self.remaining = self.remaining.saturating_sub(r.left());
        }
    }

    /// Bytes not committed yet, over every file being read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_flight_go_down_as_batches_commit() {
        let mut b = InFlightBytes::default();
        b.claimed(1, 1000, 0, false);
        b.claimed(2, 500, 200, false); // resumed
        b.claimed(3, 300, 0, true);
        assert_eq!(b.remaining(), 1000 + 300 + 300);
        // (file, end offset, last, settled, remaining after)
        let steps = [
            (1, 400, false, 400, 1200),
            (3, 5000, false, 0, 1200), // gzip: decompressed offsets count for nothing
            (1, 400, false, 0, 1200),  // a replayed batch settles nothing again
            (2, 500, true, 300, 900),
            (3, 9000, true, 300, 600),
            (1, 1000, true, 600, 0),
            (1, 1000, true, 0, 0), // unknown file
        ];
        for (n, (file, end, last, settled, left)) in steps.into_iter().enumerate() {
            assert_eq!(b.committed(file, end, last), settled, "step {n}");
            assert_eq!(b.remaining(), left, "step {n}");
        }
        b.claimed(4, 100, 0, false);
        b.claimed(4, 100, 60, false); // claimed again (after a restart): counted once
        assert_eq!(b.remaining(), 40);
        b.dropped(4);
        assert_eq!(b.remaining(), 0);
    }
}
