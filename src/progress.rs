//! Progress you can see: a log line per pipeline every
//! `log.progress_secs`, or with `--until-idle` on a terminal a progress bar
//! with an ETA; and the throughput history of the status page.
//!
//! Everything comes from the metrics the daemon keeps (`crate::live`). The
//! bytes left come from two places: `ingestd_bytes_waiting` (the Watcher's
//! files not claimed yet) and [`InFlightBytes`], the CheckpointKeeper's
//! account of the files being read (how many of their bytes are not
//! committed yet, and how many each committed batch settles:
//! `ingestd_bytes_in_flight`, `ingestd_bytes_committed_total`). The ETA is
//! the bytes left over the rate bytes are committed at.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::live::{rates, History, Pipelines, Sample, Snapshot, HISTORY_STEP};
use crate::messages::FileId;

/// How often the bar is redrawn with new numbers.
const BAR_TICK: Duration = Duration::from_millis(250);
/// How often the metrics are read without a bar.
const TICK: Duration = Duration::from_secs(1);

pub struct ReporterSettings {
    /// The pipelines, in the daemon's order.
    pub names: Vec<String>,
    /// Filled every `HISTORY_STEP` (the status page's chart).
    pub history: Arc<Mutex<History>>,
    /// Progress lines this often; `None`: none.
    pub log_every: Option<Duration>,
    /// A progress bar on stderr instead of the progress lines.
    pub bar: bool,
}

/// Reads the metrics now and then: the throughput history, progress lines
/// or the bar. Runs on the System's thread until the System stops.
pub fn spawn(settings: ReporterSettings) {
    let pipelines = Pipelines::new(settings.names);
    let first = pipelines.snapshot();
    let bar = settings.bar.then(install_bar);
    let mut r = Reporter {
        pipelines,
        history: settings.history,
        last_sample: first.clone(),
        last_log: first,
        log_every: settings.log_every.filter(|_| bar.is_none()),
        idle_logged: false,
        bar,
    };
    actix_rt::spawn(async move {
        let tick = if r.bar.is_some() { BAR_TICK } else { TICK };
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            r.tick(tick);
        }
    });
}

struct Reporter {
    pipelines: Pipelines,
    history: Arc<Mutex<History>>,
    last_sample: Snapshot,
    last_log: Snapshot,
    log_every: Option<Duration>,
    /// The last progress lines said nothing waits or moves: no more until
    /// something does.
    idle_logged: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    fn tick(&mut self, tick: Duration) {
        let now = self.pipelines.snapshot();
        // A tick may come a little early: half a tick of slack.
        let due = |since: &Snapshot, every: Duration| now.at.duration_since(since.at) + tick / 2 >= every;
        if due(&self.last_sample, HISTORY_STEP) {
            let sample = Sample { at: chrono::Utc::now().timestamp(), rows_per_sec: rates(&self.last_sample, &now) };
            if let Ok(mut h) = self.history.lock() {
                h.push(sample);
            }
            self.last_sample = now.clone();
        }
        if let Some(every) = self.log_every {
            if due(&self.last_log, every) {
                self.log(&now);
            }
        }
        if let Some(bar) = &self.bar {
            let rate: f64 =
                self.history.lock().ok().and_then(|h| h.last().map(|s| s.rows_per_sec.iter().sum())).unwrap_or(0.0);
            show(bar, &now, rate);
        }
    }

    /// One line per pipeline, and one for all when there are several; once
    /// nothing waits or moves, one set of lines, then silence until
    /// something does.
    fn log(&mut self, now: &Snapshot) {
        let (before, total) = (self.last_log.total(), now.total());
        let idle = total.quiet() && total.rows() == before.rows() && total.files_done == before.files_done;
        let rates = rates(&self.last_log, now);
        self.last_log = now.clone();
        if idle && self.idle_logged {
            return;
        }
        self.idle_logged = idle;
        for ((name, p), rate) in self.pipelines.names().iter().zip(&now.pipelines).zip(&rates) {
            tracing::info!(
                pipeline = %name,
                files_done = p.files_done,
                files_in_flight = p.files_in_flight,
                files_waiting = p.files_waiting,
                rows_per_sec = rate.round() as u64,
                written = p.rows_written,
                duplicate = p.rows_duplicate,
                rejected = p.rows_rejected,
                "progress"
            );
        }
        if now.pipelines.len() > 1 {
            tracing::info!(
                pipelines = now.pipelines.len(),
                files_done = total.files_done,
                files_in_flight = total.files_in_flight,
                files_waiting = total.files_waiting,
                rows_per_sec = rates.iter().sum::<f64>().round() as u64,
                written = total.rows_written,
                duplicate = total.rows_duplicate,
                rejected = total.rows_rejected,
                "progress, all pipelines"
            );
        }
    }
}

/// The bar: bytes committed since start out of those plus the bytes left;
/// indicatif's ETA follows the rate of the committed bytes.
fn show(bar: &ProgressBar, now: &Snapshot, rows_per_sec: f64) {
    let t = now.total();
    bar.set_length(t.bytes_committed + t.bytes_left());
    bar.set_position(t.bytes_committed);
    bar.set_message(format!(
        "files {} done, {} reading, {} waiting | {:.0} rows/s | {} written, {} duplicate, {} rejected",
        t.files_done,
        t.files_in_flight,
        t.files_waiting,
        rows_per_sec,
        t.rows_written,
        t.rows_duplicate,
        t.rows_rejected
    ));
}

fn bar_slot() -> &'static Mutex<Option<ProgressBar>> {
    static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();
    BAR.get_or_init(|| Mutex::new(None))
}

fn install_bar() -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}\n  {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let bar = ProgressBar::new(0).with_style(style);
    if let Ok(mut slot) = bar_slot().lock() {
        *slot = Some(bar.clone());
    }
    bar
}

/// Takes the bar off the terminal (at exit).
pub fn finish_bar() {
    if let Some(bar) = bar_slot().lock().ok().and_then(|mut s| s.take()) {
        bar.finish_and_clear();
    }
}

/// Where the logs go: stderr, past the progress bar when one is shown (it
/// is cleared for the line, then drawn again below it).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let bar = bar_slot().lock().ok().and_then(|s| s.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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
