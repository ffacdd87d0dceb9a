//! Watcher: finds files in the incoming folder and hands each stable one,
//! once identified and claimed, to the Parser.
//!
//! - Receives: notify hints (from notify's thread, via `try_send`),
//!   `FileFinished` (CheckpointKeeper), `StopIntake`, `IsIdle` (Supervisor).
//! - Emits: `ClaimFiles` to the CheckpointKeeper (up to 128 files a
//!   request, one request at a time, full ones while the pipeline is busy),
//!   `ReadFiles` to the Parser (a round's files in one message).
//! - State: a window of at most `32 x files_in_flight` waiting files —
//!   candidates and how long they have held still, stable files waiting for
//!   a slot (in name order) — and a count of the files beyond it; files in
//!   flight; a cache of finished identities so a rescan does not hash them
//!   again.
//! - On restart: nothing is kept; a full scan rebuilds everything and the
//!   CheckpointKeeper says where each file resumes.
//! - On drain: stops scanning and dispatching; files in flight are left to
//!   the Parser's drain.
//! - Backpressure: at most `files_in_flight` files are dispatched at once;
//!   up to a window's worth more wait here as small path entries, never as
//!   data, and the rest only as a count: memory does not grow with the
//!   backlog.
//!
//! Correctness never depends on notify (it misses pre-existing files, moves
//! from other file systems and queue overflows): a full rescan runs at start
//! and every `rescan_interval_ms`; a hint only makes a file seen sooner.
//! Only arrivals and writes are hints: notify also reports every open (ours:
//! identifying, reading, moving) and every file leaving (our moves), which
//! would wake this actor several times per file for nothing. For the same
//! reason the watch is paused while a backlog waits (`pace_watch`).

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::actors::checkpoint_keeper::CheckpointKeeper;
use crate::actors::parser::Parser;
use crate::fsutil::Stamp;
use crate::messages::{Claim, ClaimFile, ClaimFiles, FileFinished, FileTask, IsIdle, Left, ReadFiles, StopIntake};
use crate::metrics::metrics;

/// How often candidates are re-checked for stability.
const TICK: Duration = Duration::from_millis(50);
/// Files claimed in one request at most.
const CLAIM_BATCH: usize = 128;
/// Waiting files (candidates and ready) held at most, in `files_in_flight`
/// sets: enough to keep the pipeline fed between listings (16 384 files by
/// default); a larger backlog is only counted, so memory does not grow
/// with it.
const WINDOW_SETS: usize = 32;

pub struct WatcherSettings {
    pub incoming: PathBuf,
    pub stable_for: Duration,
    pub rescan_interval: Duration,
    pub files_in_flight: usize,
}

struct Candidate {
    stat: Stamp,
    /// Monotonic time since the stat has not changed (wall-clock mtimes can
    /// be in the future or jump back).
    since: Instant,
    /// A rename into the folder was seen: the producer says it is complete.
    renamed: bool,
}

pub struct Watcher {
    settings: WatcherSettings,
    ck: Addr<CheckpointKeeper>,
    parser: Addr<Parser>,
    /// Files waiting for their size and mtime to hold still.
    candidates: HashMap<PathBuf, Candidate>,
    /// Stable files waiting for a slot, claimed in name order (by the
    /// path's bytes: for one folder the same order, and far cheaper than
    /// `Path`'s comparison component by component).
    ready: BTreeMap<OsString, Stamp>,
    /// Candidate files seen beyond the window: counted, not held; the next
    /// listing picks them up.
    beyond: usize,
    /// Dispatched (claimed and being read) files.
    in_flight: HashSet<PathBuf>,
    /// Being identified or claimed right now.
    claiming: HashSet<PathBuf>,
    /// Identities already finished, by path, with the stat they had.
    finished: HashMap<PathBuf, Stamp>,
    /// Files that could not be identified or read (permission denied,
    /// changing under us), with the stat they had: tried again on the next
    /// periodic rescan or when they change, and not waited for by
    /// `--until-idle`.
    erroring: HashMap<PathBuf, Stamp>,
    /// Set by notify's thread when a hint could not be queued.
    rescan_needed: Arc<AtomicBool>,
    scanning: bool,
    statting: bool,
    /// A claim round is under way.
    claim_busy: bool,
    /// A file finished or a hint arrived since the last full scan began.
    dirty: bool,
    scans_completed: u64,
    last_scan: Instant,
    intake_stopped: bool,
    /// notify's watcher (its thread lives as long as this); dropped with
    /// the actor.
    notify: Option<notify::RecommendedWatcher>,
    /// The folder is being watched (not paused for a backlog).
    watching: bool,
}

impl Watcher {
    pub fn new(settings: WatcherSettings, ck: Addr<CheckpointKeeper>, parser: Addr<Parser>) -> Self {
        Watcher {
            settings,
            ck,
            parser,
            candidates: HashMap::new(),
            ready: BTreeMap::new(),
            beyond: 0,
            in_flight: HashSet::new(),
            claiming: HashSet::new(),
            finished: HashMap::new(),
            erroring: HashMap::new(),
            rescan_needed: Arc::new(AtomicBool::new(false)),
            scanning: false,
            statting: false,
            claim_busy: false,
            dirty: true,
            scans_completed: 0,
            last_scan: Instant::now(),
            intake_stopped: false,
            notify: None,
            watching: false,
        }
    }

    fn window(&self) -> usize {
        self.settings.files_in_flight * WINDOW_SETS
    }

    fn start_notify(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let flag = self.rescan_needed.clone();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if ev.need_rescan() {
                    flag.store(true, Ordering::Relaxed);
                    return;
                }
                // Only news of a file arriving or being written is a hint.
                // Opens (ours: identifying, reading, moving) and files
                // leaving (our moves) would wake this actor for nothing;
                // rescans and re-stats drop what is gone.
                use notify::event::{AccessKind, ModifyKind, RenameMode};
                if matches!(
                    ev.kind,
                    EventKind::Access(AccessKind::Open(_))
                        | EventKind::Remove(_)
                        | EventKind::Modify(ModifyKind::Name(RenameMode::From))
                ) {
                    return;
                }
                let renamed = matches!(ev.kind, EventKind::Modify(ModifyKind::Name(_)));
                for path in ev.paths {
                    // Never block notify's thread: a full mailbox turns into
                    // a rescan.
                    if addr.try_send(Hint { path, renamed }).is_err() {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watch error; rescanning");
                flag.store(true, Ordering::Relaxed);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(&self.settings.incoming, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.notify = Some(w);
                    self.watching = true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the incoming folder; relying on rescans"),
            },
            Err(e) => tracing::warn!(error = %e, "no file watcher; relying on rescans"),
        }
    }

    /// A full listing of the folder. `retry_errors`: files that failed
    /// before are tried again (periodic rescans do; the ones `--until-idle`
    /// asks for do not, so an unreadable file cannot keep it from ending).
    fn scan(&mut self, ctx: &mut Context<Self>, retry_errors: bool) {
        if self.scanning || self.intake_stopped {
            return;
        }
        if retry_errors {
            self.erroring.clear();
        }
        self.scanning = true;
        self.dirty = false;
        self.last_scan = Instant::now();
        self.rescan_needed.store(false, Ordering::Relaxed);
        let dir = self.settings.incoming.clone();
        let window = self.window();
        let held: HashSet<PathBuf> = (self.in_flight.iter())
            .chain(self.claiming.iter())
            .chain(self.finished.keys())
            .chain(self.erroring.keys())
            .cloned()
            .collect();
        let fut = async move { tokio::task::spawn_blocking(move || list_candidates(&dir, &held, window)).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.scanning = false;
            match res {
                Ok(Ok(listing)) => {
                    act.scans_completed += 1;
                    let listed: HashSet<&Path> = listing.window.iter().map(|(p, _)| p.as_path()).collect();
                    act.candidates.retain(|p, _| listed.contains(p.as_path()));
                    act.ready.retain(|p, _| listed.contains(Path::new(p)));
                    act.finished.retain(|p, _| listing.held_present.contains(p));
                    act.erroring.retain(|p, _| listing.held_present.contains(p));
                    act.beyond = listing.beyond;
                    for (path, stat) in listing.window {
                        act.observe(path, stat, false);
                    }
                    act.dispatch(ctx);
                }
                Ok(Err(e)) => {
                    metrics().watch_errors.inc();
                    tracing::error!(folder = %act.settings.incoming.display(), error = %e, "cannot list the incoming folder");
                }
                Err(e) => tracing::error!(error = %e, "folder scan task failed"),
            }
        }));
    }

    /// Records what a stat said about a candidate.
    fn observe(&mut self, path: PathBuf, stat: Stamp, renamed: bool) {
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
                self.ready.remove(path.as_os_str());
            }
            None => {}
        }
        let stable_for = self.settings.stable_for;
        let c = self.candidates.entry(path.clone()).or_insert_with(|| Candidate {
            stat: stat.clone(),
            since: Instant::now(),
            renamed: false,
        });
        if c.stat != stat {
            *c = Candidate { stat, since: Instant::now(), renamed: false };
        }
        c.renamed |= renamed;
        if c.renamed || c.since.elapsed() >= stable_for {
            let c = self.candidates.remove(&path).expect("just looked up");
            self.ready.insert(path.into_os_string(), c.stat);
        }
    }

    /// Moves candidates that have held still long enough to `ready`.
    fn promote(&mut self) {
        let stable_for = self.settings.stable_for;
        let stable: Vec<PathBuf> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.renamed || c.since.elapsed() >= stable_for)
            .map(|(p, _)| p.clone())
            .collect();
        for path in stable {
            let c = self.candidates.remove(&path).expect("listed above");
            self.ready.insert(path.into_os_string(), c.stat);
        }
    }

    /// Claims stable candidates while the in-flight limit allows.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.intake_stopped {
            return;
        }
        if self.claim_busy {
            return;
        }
        // While plenty of files are in flight and more wait, wait for room
        // for a full round: one statement (and commit) per few files costs
        // the database more than the claim itself.
        let room = self.settings.files_in_flight.saturating_sub(self.in_flight.len());
        let busy = self.in_flight.len() >= self.settings.files_in_flight / 2;
        let wait_for_room = busy && room < CLAIM_BATCH.min(self.ready.len());
        // Name order gives producers' files a predictable order.
        let mut picked = Vec::new();
        while !wait_for_room
            && self.in_flight.len() + self.claiming.len() < self.settings.files_in_flight
            && picked.len() < CLAIM_BATCH
        {
            let Some((path, stat)) = self.ready.pop_first() else { break };
            let path = PathBuf::from(path);
            self.claiming.insert(path.clone());
            picked.push((path, stat));
        }
        if !picked.is_empty() {
            self.claim(picked, ctx);
        }
        metrics().files_pending.set((self.candidates.len() + self.ready.len() + self.beyond) as i64);
        self.pace_watch();
        // The window is running low and files wait beyond it: list again.
        if self.beyond > 0 && self.candidates.len() + self.ready.len() < self.window() / 2 {
            self.scan(ctx, false);
        }
    }

    /// Pauses the folder watch while a backlog of stable files waits, and
    /// resumes it (with a listing) when the backlog runs low.
    ///
    /// While a backlog of `2 x files_in_flight` ready files waits, a hint
    /// cannot make any file start sooner; and notify wakes its thread for
    /// every open and move of ours (two opens and a move per file), which
    /// costs about a tenth of the daemon's CPU when thousands of small files
    /// wait. Files arriving meanwhile are found by the periodic rescan or
    /// by the listing that comes with the resume, while `files_in_flight`
    /// ready files are still queued (they are then timed by `stable_for`
    /// rather than trusted on their rename).
    fn pace_watch(&mut self) {
        let files = self.settings.files_in_flight;
        let Some(w) = self.notify.as_mut() else { return };
        if self.watching && self.ready.len() >= 2 * files {
            match w.unwatch(&self.settings.incoming) {
                Ok(()) => {
                    self.watching = false;
                    tracing::debug!(ready = self.ready.len(), "backlog: folder watch paused");
                }
                Err(e) => tracing::debug!(error = %e, "cannot pause the folder watch"),
            }
        } else if !self.watching && self.ready.len() < files {
            match w.watch(&self.settings.incoming, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watching = true;
                    tracing::debug!(ready = self.ready.len(), "folder watch resumed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the incoming folder; relying on rescans");
                    self.notify = None;
                }
            }
            // What arrived while paused (the next tick lists the folder,
            // after any listing already under way).
            self.rescan_needed.store(true, Ordering::Relaxed);
            self.dirty = true;
        }
    }

    /// Identifies the files and claims them in one request: one round at a
    /// time, so many ready files share one statement.
    fn claim(&mut self, picked: Vec<(PathBuf, Stamp)>, ctx: &mut Context<Self>) {
        self.claim_busy = true;
        let ck = self.ck.clone();
        let fut = async move {
            let identified = tokio::task::spawn_blocking(move || {
                picked
                    .into_iter()
                    .map(|(p, s)| {
                        let fp = fingerprint(&p, &s);
                        (p, s, fp)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let mut outcomes = Vec::with_capacity(identified.len());
            let mut asked = Vec::new();
            for (path, stat, fp) in identified {
                match fp {
                    Ok(fp) => asked.push((path, stat, fp)),
                    Err(e) => outcomes.push((path, stat, Err(e.to_string()))),
                }
            }
            if asked.is_empty() {
                return outcomes;
            }
            let request = ClaimFiles(
                asked
                    .iter()
                    .map(|(path, _, fp)| ClaimFile {
                        path: path.clone(),
                        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                        fingerprint: fp.fingerprint.clone(),
                        stamp: fp.stat.clone(),
                    })
                    .collect(),
            );
            match ck.send(request).await {
                Ok(Ok(claims)) => {
                    for ((path, stat, fp), claim) in asked.into_iter().zip(claims) {
                        outcomes.push((path, stat, Ok((claim, fp))));
                    }
                }
                Ok(Err(e)) => outcomes.extend(asked.into_iter().map(|(p, s, _)| (p, s, Err(e.to_string())))),
                Err(e) => outcomes.extend(asked.into_iter().map(|(p, s, _)| (p, s, Err(e.to_string())))),
            }
            outcomes
        };
        ctx.spawn(fut.into_actor(self).map(|outcomes, act, ctx| {
            act.claim_busy = false;
            let tasks: Vec<FileTask> =
                outcomes.into_iter().filter_map(|(path, stat, res)| act.claimed(path, stat, res)).collect();
            if !tasks.is_empty() {
                let parser = act.parser.clone();
                ctx.spawn(
                    async move {
                        if let Err(e) = parser.send(ReadFiles(tasks)).await {
                            tracing::warn!(error = %e, "parser unavailable");
                        }
                    }
                    .into_actor(act),
                );
            }
            act.dispatch(ctx);
        }));
    }

    /// Records a claim's answer; a file to read is returned for the Parser.
    fn claimed(&mut self, path: PathBuf, stat: Stamp, res: Result<(Claim, Fingerprint), String>) -> Option<FileTask> {
        self.claiming.remove(&path);
        match res {
            Ok((Claim::Read(task), _)) => {
                tracing::debug!(file = %task.name, "claimed");
                self.in_flight.insert(path);
                return Some(task);
            }
            Ok((Claim::Done, fp)) | Ok((Claim::Parked, fp)) => {
                self.finished.insert(path, fp.stat);
            }
            Err(e) => {
                if std::fs::symlink_metadata(&path).is_err() {
                    // Gone meanwhile (e.g. a stale scan entry of a file
                    // already finished and moved): nothing to do.
                    tracing::debug!(file = %path.display(), "file vanished before it was claimed");
                } else {
                    // Unreadable (permission) or database down: looked at
                    // again on the next rescan, never marked done.
                    metrics().watch_errors.inc();
                    tracing::warn!(file = %path.display(), error = %e, "cannot claim file; will retry");
                    self.erroring.insert(path, stat);
                }
            }
        }
        None
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.intake_stopped {
            return;
        }
        if self.last_scan.elapsed() >= self.settings.rescan_interval {
            self.scan(ctx, true);
        } else if self.rescan_needed.load(Ordering::Relaxed) {
            self.scan(ctx, false);
        }
        self.promote();
        self.dispatch(ctx);
        if !self.candidates.is_empty() && !self.statting {
            self.statting = true;
            // Re-stat waiting candidates so a growing file restarts its
            // window. Ready files are checked once more when identified.
            let paths: Vec<PathBuf> = self.candidates.keys().cloned().collect();
            let fut = async move {
                tokio::task::spawn_blocking(move || {
                    paths
                        .into_iter()
                        .map(|p| {
                            let s = stat_candidate(&p);
                            (p, s)
                        })
                        .collect::<Vec<_>>()
                })
                .await
            };
            ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
                act.statting = false;
                if let Ok(stats) = res {
                    for (path, stat) in stats {
                        match stat {
                            Some(stat) => act.observe(path, stat, false),
                            None => {
                                act.candidates.remove(&path);
                            }
                        }
                    }
                }
                act.dispatch(ctx);
            }));
        }
    }
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Hints can come in bursts; a full mailbox only costs a rescan.
        ctx.set_mailbox_capacity(4096);
        self.start_notify(ctx);
        self.scan(ctx, true);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

/// notify's thread → Watcher: something happened to this path.
#[derive(Message)]
#[rtype(result = "()")]
struct Hint {
    path: PathBuf,
    renamed: bool,
}

impl Handler<Hint> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: Hint, ctx: &mut Context<Self>) {
        // Keyed like a scan's entries, whatever form notify gives the path in.
        let Some(name) = msg.path.file_name() else { return };
        let path = self.settings.incoming.join(name);
        if self.intake_stopped || !is_candidate_name(&path) {
            return;
        }
        self.dirty = true;
        let tracked = self.candidates.contains_key(&path) || self.ready.contains_key(path.as_os_str());
        if !tracked && self.candidates.len() + self.ready.len() >= self.window() {
            // The window is full: the file waits for a later listing.
            self.beyond += 1;
            return;
        }
        if let Some(stat) = stat_candidate(&path) {
            self.observe(path, stat, msg.renamed);
            if msg.renamed {
                self.dispatch(ctx);
            }
        }
    }
}

impl Handler<FileFinished> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: FileFinished, ctx: &mut Context<Self>) {
        if self.in_flight.remove(&msg.path) {
            // Remembered by the stat it was identified with: a different
            // file that takes the name is a new candidate.
            match msg.left {
                Left::Nothing => {}
                Left::Finished(stat) => {
                    self.finished.insert(msg.path, stat);
                }
                Left::Retry(stat) => {
                    self.erroring.insert(msg.path, stat);
                }
            }
        }
        self.dirty = true;
        self.dispatch(ctx);
    }
}

impl Handler<StopIntake> for Watcher {
    type Result = ();
    fn handle(&mut self, _: StopIntake, _: &mut Context<Self>) {
        self.intake_stopped = true;
        self.notify = None;
    }
}

impl Handler<IsIdle> for Watcher {
    type Result = bool;
    fn handle(&mut self, _: IsIdle, ctx: &mut Context<Self>) -> bool {
        let quiet = self.candidates.is_empty()
            && self.ready.is_empty()
            && self.beyond == 0
            && self.in_flight.is_empty()
            && self.claiming.is_empty();
        if !quiet {
            return false;
        }
        if self.dirty || self.scans_completed == 0 {
            self.scan(ctx, false);
            return false;
        }
        !self.scanning
    }
}

/// `*.csv` and `*.csv.gz` in any letter case, not hidden or temporary.
pub fn is_candidate_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".csv") && lower.len() > 4) || (lower.ends_with(".csv.gz") && lower.len() > 7)
}

/// lstat: only regular files qualify; symlinks, FIFOs, sockets and
/// directories are never opened.
fn stat_candidate(path: &Path) -> Option<Stamp> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    Some(Stamp::of(&meta))
}

/// What a scan found: the first `limit` candidate files by name, other than
/// the ones the Watcher holds (regular files, with their stat); which of the
/// held ones are still there; how many candidates wait beyond the window.
struct Listing {
    window: Vec<(PathBuf, Stamp)>,
    held_present: HashSet<PathBuf>,
    beyond: usize,
}

/// Lists the folder keeping only a window of `limit` names (a max-heap of
/// the smallest): a backlog of a million files costs a count, not a million
/// entries. Only the window is stat'ed; the type comes from the directory
/// entry.
fn list_candidates(dir: &Path, held: &HashSet<PathBuf>, limit: usize) -> std::io::Result<Listing> {
    // By the path's bytes: the same order as by name (one folder), without
    // `Path`'s comparison component by component.
    let mut heap: BinaryHeap<OsString> = BinaryHeap::new();
    let mut held_present = HashSet::new();
    let mut beyond = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !is_candidate_name(&path) {
            continue;
        }
        if held.contains(&path) {
            held_present.insert(path);
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::debug!(file = %path.display(), "skipping: not a regular file");
            continue;
        }
        heap.push(path.into_os_string());
        if heap.len() > limit {
            heap.pop();
            beyond += 1;
        }
    }
    // A file replaced or removed since the listing drops out here.
    let window = (heap.into_sorted_vec().into_iter().map(PathBuf::from))
        .filter_map(|p| stat_candidate(&p).map(|s| (p, s)))
        .collect();
    Ok(Listing { window, held_present, beyond })
}

struct Fingerprint {
    fingerprint: String,
    stat: Stamp,
}

/// size + SHA-256 of the first bytes. Opened without following links and
/// without blocking (a FIFO swapped in after the lstat must not hang us).
fn fingerprint(path: &Path, expected: &Stamp) -> std::io::Result<Fingerprint> {
    let (file, meta) = crate::fsutil::open_regular(path)?;
    let stat = Stamp::of(&meta);
    if &stat != expected {
        return Err(std::io::Error::other("file changed while being identified"));
    }
    Ok(Fingerprint { fingerprint: crate::fsutil::fingerprint(&file, stat.size)?, stat })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names() {
        for (name, want) in [
            ("a.csv", true),
            ("A.CSV", true),
            ("a.Csv.Gz", true),
            ("a.csv.gz", true),
            (".a.csv", false),
            ("a.csv.tmp", false),
            ("a.csv.part", false),
            ("a.txt", false),
            ("a.gz", false),
            (".csv", false),
            ("csv", false),
        ] {
            assert_eq!(is_candidate_name(Path::new(name)), want, "{name}");
        }
    }
}
