//! File intake, as a state machine with no I/O: what the Watcher knows of
//! each file of the incoming folder, and which files to claim next.
//!
//! ```text
//!   candidate ──held still (or renamed in)──► ready ──picked──► claiming
//!      ▲  │ changed                                               │
//!      └──┘                          ┌──────────── Read ───────────┤
//!                                    ▼                             │ Done/Parked, or error
//!                               in flight ──FileFinished──► finished / erroring / gone
//! ```
//!
//! A file is known by its path and its stat (`Stamp`): a finished or
//! erroring file seen again with the same stat is passed by; a different
//! stat under the same path is a new candidate. At most `window` files
//! wait (candidates and ready, the first by name); the rest of a backlog is
//! only counted, so memory does not grow with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fsutil::Stamp;
use crate::messages::Left;

/// Files claimed in one request at most.
pub const CLAIM_BATCH: usize = 128;
/// Waiting files (candidates and ready) held at most, in `files_in_flight`
/// sets: enough to keep the pipeline fed between listings (16 384 files by
/// default); a larger backlog is only counted, so memory does not grow
/// with it.
pub const WINDOW_SETS: usize = 32;

#[derive(Debug)]
struct Candidate {
    stat: Stamp,
    /// Monotonic time since the stat has not changed (wall-clock mtimes can
    /// be in the future or jump back).
    since: Instant,
    /// A rename into the folder was seen: the producer says it is complete.
    renamed: bool,
}

/// How a claim of a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// To be read: in flight until `FileFinished`.
    Read,
    /// Already finished (done or parked): passed by while its stat holds.
    Finished(Stamp),
    /// Could not be identified or claimed (unreadable, database away):
    /// tried again on a later rescan or when its stat changes.
    Failed(Stamp),
    /// Gone meanwhile: forgotten.
    Vanished,
}

/// What a listing of the folder found: the first `window` candidate files
/// by name (other than the held ones, with their stat), which of the held
/// files are still there, how many candidates wait beyond the window, and
/// the entries with a candidate's name that are not regular files (at most
/// `SKIPPED_HELD`, with what they are).
#[derive(Debug, Default)]
pub struct Listing {
    pub window: Vec<(PathBuf, Stamp)>,
    pub held_present: HashSet<PathBuf>,
    pub beyond: usize,
    pub not_regular: Vec<(PathBuf, &'static str)>,
}

/// Entries not read that a listing reports by name, at most: a folder full
/// of symlinks costs a count beyond this, not memory.
pub const SKIPPED_HELD: usize = 1000;

/// Why an entry of the folder whose name matches the input pattern is not
/// read: a bounded set (a metric label, a column of `ingest_skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// A directory, symbolic link, FIFO, socket or device: never opened.
    NotRegularFile,
    /// It cannot be opened or identified (permissions, an I/O error); tried
    /// again on every periodic rescan.
    Unreadable,
}

impl SkipReason {
    pub const ALL: [SkipReason; 2] = [SkipReason::NotRegularFile, SkipReason::Unreadable];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotRegularFile => "not_regular_file",
            SkipReason::Unreadable => "unreadable",
        }
    }
}

#[derive(Debug)]
pub struct Intake {
    stable_for: Duration,
    /// Files dispatched at once at most.
    files_in_flight: usize,
    /// Files waiting for their size and mtime to hold still.
    candidates: HashMap<PathBuf, Candidate>,
    /// Stable files waiting for a slot, claimed in name order (by the
    /// path's bytes: for one folder the same order, and far cheaper than
    /// `Path`'s comparison component by component).
    ready: BTreeMap<OsString, Stamp>,
    /// Candidate files seen beyond the window: counted, not held; the next
    /// listing picks them up.
    beyond: usize,
    /// The sizes of `candidates` and `ready` added up, kept as they change
    /// (a sum over the window per question would cost as much as the window
    /// each time a file finishes).
    held_bytes: u64,
    /// Being identified or claimed right now.
    claiming: HashSet<PathBuf>,
    /// Claimed and being read.
    in_flight: HashSet<PathBuf>,
    /// Identities already finished, by path, with the stat they had.
    finished: HashMap<PathBuf, Stamp>,
    /// Files that could not be identified or read, with the stat they had:
    /// tried again on the next periodic rescan or when they change, and not
    /// waited for by `--until-idle`.
    erroring: HashMap<PathBuf, Stamp>,
}

impl Intake {
    pub fn new(stable_for: Duration, files_in_flight: usize) -> Intake {
        Intake {
            stable_for,
            files_in_flight: files_in_flight.max(1),
            candidates: HashMap::new(),
            ready: BTreeMap::new(),
            beyond: 0,
            held_bytes: 0,
            claiming: HashSet::new(),
            in_flight: HashSet::new(),
            finished: HashMap::new(),
            erroring: HashMap::new(),
        }
    }

    /// Waiting files held at most.
    pub fn window(&self) -> usize {
        self.files_in_flight * WINDOW_SETS
    }

    /// Records what a stat said about a file of the folder.
    pub fn observe(&mut self, path: PathBuf, stat: Stamp, renamed: bool, now: Instant) {
        if self.in_flight.contains(&path) || self.claiming.contains(&path) {
            return;
        }
        if self.finished.get(&path) == Some(&stat) || self.erroring.get(&path) == Some(&stat) {
            return;
        }
        self.finished.remove(&path);
        match self.ready.get(path.as_os_str()) {
            Some(s) if *s == stat => return,
            // Changed after it looked stable: it waits again.
            Some(_) => {
                if let Some(old) = self.ready.remove(path.as_os_str()) {
                    self.held_bytes = self.held_bytes.saturating_sub(old.size);
                }
            }
            None => {}
        }
        let held_bytes = &mut self.held_bytes;
        let c = self.candidates.entry(path.clone()).or_insert_with(|| {
            *held_bytes += stat.size;
            Candidate { stat: stat.clone(), since: now, renamed: false }
        });
        if c.stat != stat {
            *held_bytes = held_bytes.saturating_sub(c.stat.size) + stat.size;
            *c = Candidate { stat, since: now, renamed: false };
        }
        c.renamed |= renamed;
        if c.renamed || now.duration_since(c.since) >= self.stable_for {
            let c = self.candidates.remove(&path).expect("just looked up");
            self.ready.insert(path.into_os_string(), c.stat);
        }
    }

    /// A waiting candidate is gone (its re-stat found nothing).
    pub fn forget_candidate(&mut self, path: &Path) {
        if let Some(c) = self.candidates.remove(path) {
            self.held_bytes = self.held_bytes.saturating_sub(c.stat.size);
        }
    }

    /// Moves candidates that have held still long enough to ready.
    pub fn promote(&mut self, now: Instant) {
        let stable: Vec<PathBuf> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.renamed || now.duration_since(c.since) >= self.stable_for)
            .map(|(p, _)| p.clone())
            .collect();
        for path in stable {
            let c = self.candidates.remove(&path).expect("listed above");
            self.ready.insert(path.into_os_string(), c.stat);
        }
    }

    /// The candidates to stat again (a growing file restarts its wait).
    pub fn candidate_paths(&self) -> Vec<PathBuf> {
        self.candidates.keys().cloned().collect()
    }

    /// The next claim round: ready files in name order, while fewer than
    /// `files_in_flight` are claiming or in flight. While half of them are
    /// busy and more wait, it waits for room for a full round instead: one
    /// statement (and commit) per few files costs the database more than
    /// the claim itself. An idle daemon claims a single file at once.
    pub fn pick(&mut self) -> Vec<(PathBuf, Stamp)> {
        let room = self.files_in_flight.saturating_sub(self.in_flight.len());
        let busy = self.in_flight.len() >= self.files_in_flight / 2;
        if busy && room < CLAIM_BATCH.min(self.ready.len()) {
            return Vec::new();
        }
        let mut picked = Vec::new();
        while self.in_flight.len() + self.claiming.len() < self.files_in_flight && picked.len() < CLAIM_BATCH {
            let Some((path, stat)) = self.ready.pop_first() else { break };
            self.held_bytes = self.held_bytes.saturating_sub(stat.size);
            let path = PathBuf::from(path);
            self.claiming.insert(path.clone());
            picked.push((path, stat));
        }
        picked
    }

    /// Records how a file's claim ended.
    pub fn claimed(&mut self, path: PathBuf, outcome: Claimed) {
        self.claiming.remove(&path);
        match outcome {
            Claimed::Read => {
                self.in_flight.insert(path);
            }
            Claimed::Finished(stat) => {
                self.finished.insert(path, stat);
            }
            Claimed::Failed(stat) => {
                self.erroring.insert(path, stat);
            }
            Claimed::Vanished => {}
        }
    }

    /// A file in flight is finished; `left` says what stays at its path.
    pub fn finished(&mut self, path: PathBuf, left: Left) {
        if self.in_flight.remove(&path) {
            // Remembered by the stat it was identified with: a different
            // file that takes the name is a new candidate.
            match left {
                Left::Nothing => {}
                Left::Finished(stat) => {
                    self.finished.insert(path, stat);
                }
                Left::Retry(stat) => {
                    self.erroring.insert(path, stat);
                }
            }
        }
    }

    /// Files that failed are tried again (a periodic rescan).
    pub fn retry_errors(&mut self) {
        self.erroring.clear();
    }

    /// The paths a listing must not offer as new: in flight, claiming,
    /// finished, erroring.
    pub fn held(&self) -> HashSet<PathBuf> {
        (self.in_flight.iter())
            .chain(self.claiming.iter())
            .chain(self.finished.keys())
            .chain(self.erroring.keys())
            .cloned()
            .collect()
    }

    /// Takes in a listing: waiting files not listed are gone, finished and
    /// erroring ones not present are forgotten, and the window is observed.
    pub fn listed(&mut self, listing: Listing, now: Instant) {
        let listed: HashSet<&Path> = listing.window.iter().map(|(p, _)| p.as_path()).collect();
        self.candidates.retain(|p, _| listed.contains(p.as_path()));
        self.ready.retain(|p, _| listed.contains(Path::new(p)));
        self.held_bytes =
            self.candidates.values().map(|c| c.stat.size).chain(self.ready.values().map(|s| s.size)).sum();
        self.finished.retain(|p, _| listing.held_present.contains(p));
        self.erroring.retain(|p, _| listing.held_present.contains(p));
        self.beyond = listing.beyond;
        for (path, stat) in listing.window {
            self.observe(path, stat, false, now);
        }
    }

    /// Whether a hint about `path` fits the window; if not, it is counted
    /// beyond it (a later listing picks it up).
    pub fn admit_hint(&mut self, path: &Path) -> bool {
        let tracked = self.candidates.contains_key(path) || self.ready.contains_key(path.as_os_str());
        if !tracked && self.candidates.len() + self.ready.len() >= self.window() {
            self.beyond += 1;
            return false;
        }
        true
    }

    /// Files waiting (candidates, ready, and beyond the window).
    pub fn waiting(&self) -> usize {
        self.candidates.len() + self.ready.len() + self.beyond
    }

    /// Bytes of the files waiting: the sizes of those held, and for those
    /// beyond the window (only counted) the held files' mean size, an
    /// estimate.
    pub fn bytes_waiting(&self) -> u64 {
        let held = (self.candidates.len() + self.ready.len()) as u64;
        match held {
            0 => 0,
            n => self.held_bytes + self.beyond as u64 * (self.held_bytes / n),
        }
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The window runs low while files wait beyond it: list again.
    pub fn wants_listing(&self) -> bool {
        self.beyond > 0 && self.candidates.len() + self.ready.len() < self.window() / 2
    }

    /// Nothing waits, nothing is claimed or in flight.
    pub fn quiet(&self) -> bool {
        self.candidates.is_empty()
            && self.ready.is_empty()
            && self.beyond == 0
            && self.in_flight.is_empty()
            && self.claiming.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64, ino: u64) -> Stamp {
        Stamp { size, mtime_ns: 1, ino }
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from(format!("/in/{name}"))
    }

    enum Ev {
        /// (file, size, renamed, at ms)
        Observe(&'static str, u64, bool, u64),
        /// at ms
        Promote(u64),
    }

    /// (event, expected: ready files, waiting files) after each step.
    #[test]
    #[rustfmt::skip]
    fn files_wait_until_they_hold_still_or_are_renamed_in() {
        use Ev::*;
        let t0 = Instant::now();
        let mut i = Intake::new(Duration::from_millis(500), 4);
        let steps = [
            (Observe("a.csv", 10, false, 0), 0, 1),
            (Promote(499), 0, 1),
            (Observe("a.csv", 20, false, 400), 0, 1),   // grew: waits again
            (Promote(899), 0, 1),
            (Promote(900), 1, 1),
            (Observe("b.csv", 5, true, 900), 2, 2),     // renamed in: at once
            (Observe("a.csv", 20, false, 950), 2, 2),   // same stat: no change
            (Observe("a.csv", 21, false, 950), 1, 2),   // changed while ready
        ];
        for (n, (ev, ready, waiting)) in steps.into_iter().enumerate() {
            match ev {
                Observe(name, size, renamed, at) => {
                    i.observe(p(name), stat(size, 1), renamed, t0 + Duration::from_millis(at))
                }
                Promote(at) => i.promote(t0 + Duration::from_millis(at)),
            }
            assert_eq!((i.ready_len(), i.waiting()), (ready, waiting), "step {n}");
        }
    }

    #[test]
    fn claims_go_in_name_order_and_outcomes_decide_what_is_seen_again() {
        let now = Instant::now();
        let mut i = Intake::new(Duration::ZERO, 4);
        for (n, name) in ["c.csv", "a.csv", "b.csv", "d.csv", "e.csv"].into_iter().enumerate() {
            i.observe(p(name), stat(1, n as u64), true, now);
        }
        let picked: Vec<PathBuf> = i.pick().into_iter().map(|(p, _)| p).collect();
        assert_eq!(picked, [p("a.csv"), p("b.csv"), p("c.csv"), p("d.csv")], "four in flight at most");
        assert!(i.pick().is_empty());
        i.claimed(p("a.csv"), Claimed::Read);
        i.claimed(p("b.csv"), Claimed::Finished(stat(1, 2)));
        i.claimed(p("c.csv"), Claimed::Failed(stat(1, 0)));
        i.claimed(p("d.csv"), Claimed::Vanished);
        assert_eq!(i.in_flight(), 1);
        // Finished and failing files are passed by while their stat holds.
        i.observe(p("b.csv"), stat(1, 2), false, now);
        i.observe(p("c.csv"), stat(1, 0), false, now);
        assert_eq!(i.ready_len(), 1, "only e.csv waits");
        // A new file under a finished name is new.
        i.observe(p("b.csv"), stat(9, 7), true, now);
        assert_eq!(i.ready_len(), 2);
        i.finished(p("a.csv"), Left::Nothing);
        assert_eq!(i.in_flight(), 0);
        assert_eq!(i.held(), [p("c.csv")].into_iter().collect(), "b.csv waits again, as a new file");
        i.retry_errors();
        i.observe(p("c.csv"), stat(1, 0), true, now);
        assert_eq!(i.ready_len(), 3);
    }

    /// While half the slots are busy, a round waits for room for a full one.
    #[test]
    fn a_busy_pipeline_waits_for_full_claim_rounds() {
        let now = Instant::now();
        let mut i = Intake::new(Duration::ZERO, 256);
        for n in 0..400 {
            i.observe(p(&format!("{n:04}.csv")), stat(1, n), true, now);
        }
        let first = i.pick();
        assert_eq!(first.len(), CLAIM_BATCH);
        for (path, _) in first {
            i.claimed(path, Claimed::Read);
        }
        let second = i.pick();
        assert_eq!(second.len(), CLAIM_BATCH, "128 of 256 busy: room for exactly one full round");
        for (path, _) in second {
            i.claimed(path, Claimed::Read);
        }
        assert!(i.pick().is_empty(), "no room for a full round");
        for n in 0..CLAIM_BATCH as u64 {
            i.finished(p(&format!("{n:04}.csv")), Left::Nothing);
        }
        assert_eq!(i.pick().len(), CLAIM_BATCH);
    }

    #[test]
    fn a_backlog_beyond_the_window_is_only_counted() {
        let now = Instant::now();
        let mut i = Intake::new(Duration::ZERO, 128);
        let window = i.window();
        let listing = Listing {
            window: (0..window as u64).map(|n| (p(&format!("{n:05}.csv")), stat(1, n))).collect(),
            held_present: HashSet::new(),
            beyond: 1000,
            not_regular: Vec::new(),
        };
        i.listed(listing, now);
        assert_eq!(i.waiting(), window + 1000);
        assert!(!i.admit_hint(&p("zzz.csv")), "the window is full");
        assert!(i.admit_hint(&p("00000.csv")), "already held");
        assert_eq!(i.waiting(), window + 1001);
        assert!(!i.wants_listing());
        // Files go through until the window runs low: then a listing.
        let mut done = 0;
        while !i.wants_listing() {
            let round = i.pick();
            assert!(!round.is_empty(), "after {done} files");
            for (path, _) in round {
                i.claimed(path.clone(), Claimed::Read);
                i.finished(path, Left::Nothing);
                done += 1;
            }
        }
        assert!(done > window / 2 && done <= window / 2 + CLAIM_BATCH, "{done}");
        assert!(!i.quiet());
    }

    /// The bytes waiting follow every way a file comes and goes.
    #[test]
    fn bytes_waiting_are_the_sizes_of_the_files_waiting() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut i = Intake::new(Duration::from_millis(100), 2);
        i.observe(p("a.csv"), stat(10, 1), false, at(0));
        i.observe(p("b.csv"), stat(20, 2), true, at(0));
        assert_eq!(i.bytes_waiting(), 30, "a candidate and a ready file");
        i.observe(p("a.csv"), stat(15, 1), false, at(50));
        assert_eq!(i.bytes_waiting(), 35, "a candidate grew");
        i.promote(at(200));
        assert_eq!(i.bytes_waiting(), 35, "promoted: still waiting");
        i.observe(p("b.csv"), stat(5, 2), false, at(200));
        assert_eq!(i.bytes_waiting(), 20, "changed while ready: waits again, at its new size");
        i.forget_candidate(&p("b.csv"));
        assert_eq!(i.bytes_waiting(), 15);
        let picked = i.pick();
        assert_eq!(picked.len(), 1);
        assert_eq!(i.bytes_waiting(), 0, "picked: no longer waiting");
        // A listing: what it does not list is gone; beyond the window, the
        // held files' mean size stands for each file counted.
        i.observe(p("c.csv"), stat(7, 3), true, at(300));
        let listing = Listing {
            window: vec![(p("d.csv"), stat(100, 4)), (p("e.csv"), stat(300, 5))],
            beyond: 3,
            ..Listing::default()
        };
        i.listed(listing, at(400));
        assert_eq!(i.bytes_waiting(), 400 + 3 * 200);
    }
}
