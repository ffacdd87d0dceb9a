//! Watcher: finds files in the incoming folder and hands each stable one,
//! once identified and claimed, to the Parser.
//!
//! - Receives: notify hints (from notify's thread, via `try_send`),
//!   `FileFinished` (CheckpointKeeper), `StopIntake`, `IsIdle` (Supervisor).
//! - Emits: `ClaimFiles` to the CheckpointKeeper (up to 128 files a
//!   request, one request at a time, full ones while the pipeline is busy),
//!   `ReadFiles` to the Parser (a round's files in one message).
//! - Never blocks its thread: listings, stats (a hint's too) and
//!   fingerprints run on the blocking pool.
//! - State: the file intake (`crate::intake::Intake`, a state machine with
//!   no I/O): a window of at most `32 x files_in_flight` waiting files and a
//!   count of the files beyond it, files in flight, finished identities so
//!   a rescan does not hash them again; and what drives it here: the notify
//!   watch, scans, re-stats and the claim round under way.
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

use crate::fsutil::Stamp;
use crate::intake::{Claimed, Intake, Listing, SkipReason};
use crate::messages::{
    Claim, ClaimFile, ClaimFiles, FileFinished, FileTask, Hint, IsIdle, ReadFiles, Skipped, SkippedEntry, StopIntake,
};
use crate::metrics::{metrics, PipelineMetrics};

/// A claim's answer with the stat the file was identified with, or why it
/// failed.
type ClaimResult = Result<(Claim, Stamp), ClaimError>;

/// Why a file could not be claimed.
enum ClaimError {
    /// The file itself cannot be opened or identified.
    File(String),
    /// The claim did not reach the database (or it refused).
    Database(String),
}

/// How often candidates are re-checked for stability.
const TICK: Duration = Duration::from_millis(50);

pub struct WatcherSettings {
    /// The pipeline's name (for its metrics and logs).
    pub pipeline: String,
    pub incoming: PathBuf,
    pub stable_for: Duration,
    pub rescan_interval: Duration,
    pub files_in_flight: usize,
}

pub struct Watcher {
    settings: WatcherSettings,
    m: PipelineMetrics,
    claims: Recipient<ClaimFiles>,
    reader: Recipient<ReadFiles>,
    intake: Intake,
    /// Set by notify's thread when a hint could not be queued.
    rescan_needed: Arc<AtomicBool>,
    scanning: bool,
    /// Candidates being stat'ed again.
    statting: bool,
    /// Hinted paths not stat'ed yet (with whether a rename brought them),
    /// and whether a stat of hinted paths is under way.
    hinted: HashMap<PathBuf, bool>,
    hint_stat_busy: bool,
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
    /// Nothing silent: entries with a candidate's name that are not read.
    /// Not regular files, as the last listing found them (what they are);
    /// files that cannot be opened or identified (the error); and what was
    /// last reported of both (logged once, counted, recorded by the
    /// CheckpointKeeper in `ingest_skipped`).
    not_regular: HashMap<PathBuf, &'static str>,
    unreadable: HashMap<PathBuf, String>,
    reported: BTreeMap<PathBuf, (SkipReason, String)>,
    skipped_synced: bool,
    skipped_to: Recipient<Skipped>,
}

impl Watcher {
    pub fn new(
        settings: WatcherSettings,
        claims: Recipient<ClaimFiles>,
        reader: Recipient<ReadFiles>,
        skipped_to: Recipient<Skipped>,
    ) -> Self {
        Watcher {
            not_regular: HashMap::new(),
            unreadable: HashMap::new(),
            reported: BTreeMap::new(),
            skipped_synced: false,
            skipped_to,
            m: metrics().pipeline(&settings.pipeline),
            intake: Intake::new(settings.stable_for, settings.files_in_flight),
            settings,
            claims,
            reader,
            rescan_needed: Arc::new(AtomicBool::new(false)),
            scanning: false,
            statting: false,
            hinted: HashMap::new(),
            hint_stat_busy: false,
            claim_busy: false,
            dirty: true,
            scans_completed: 0,
            last_scan: Instant::now(),
            intake_stopped: false,
            notify: None,
            watching: false,
        }
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
            self.intake.retry_errors();
        }
        self.scanning = true;
        self.dirty = false;
        self.last_scan = Instant::now();
        self.rescan_needed.store(false, Ordering::Relaxed);
        let dir = self.settings.incoming.clone();
        let window = self.intake.window();
        let held = self.intake.held();
        let fut = async move { tokio::task::spawn_blocking(move || list_candidates(&dir, &held, window)).await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.scanning = false;
            match res {
                Ok(Ok(mut listing)) => {
                    act.scans_completed += 1;
                    act.not_regular = std::mem::take(&mut listing.not_regular).into_iter().collect();
                    let listed: HashSet<&PathBuf> = listing.window.iter().map(|(p, _)| p).collect();
                    act.unreadable.retain(|p, _| listing.held_present.contains(p) || listed.contains(p));
                    act.intake.listed(listing, Instant::now());
                    act.report_skipped();
                    act.dispatch(ctx);
                }
                Ok(Err(e)) => {
                    act.m.watch_errors.inc();
                    tracing::error!(folder = %act.settings.incoming.display(), error = %e, "cannot list the incoming folder");
                }
                Err(e) => tracing::error!(error = %e, "folder scan task failed"),
            }
        }));
    }

    /// Claims the next round of ready files, if no round is under way.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.intake_stopped || self.claim_busy {
            return;
        }
        let picked = self.intake.pick();
        if !picked.is_empty() {
            self.claim(picked, ctx);
        }
        self.m.files_pending.set(self.intake.waiting() as i64);
        self.m.set_intake(self.intake.in_flight(), self.intake.bytes_waiting());
        self.pace_watch();
        // The window is running low and files wait beyond it: list again.
        if self.intake.wants_listing() {
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
        let ready = self.intake.ready_len();
        let Some(w) = self.notify.as_mut() else { return };
        if self.watching && ready >= 2 * files {
            match w.unwatch(&self.settings.incoming) {
                Ok(()) => {
                    self.watching = false;
                    tracing::debug!(ready, "backlog: folder watch paused");
                }
                Err(e) => tracing::debug!(error = %e, "cannot pause the folder watch"),
            }
        } else if !self.watching && ready < files {
            match w.watch(&self.settings.incoming, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watching = true;
                    tracing::debug!(ready, "folder watch resumed");
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
    /// time, so many ready files share one statement. A file whose claim
    /// failed is looked at again (off this thread): gone meanwhile, or to be
    /// retried.
    fn claim(&mut self, picked: Vec<(PathBuf, Stamp)>, ctx: &mut Context<Self>) {
        self.claim_busy = true;
        let claims = self.claims.clone();
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
            let mut outcomes: Vec<(PathBuf, Stamp, ClaimResult)> = Vec::with_capacity(identified.len());
            let mut asked = Vec::new();
            for (path, stat, fp) in identified {
                match fp {
                    Ok(fp) => asked.push((path, stat, fp)),
                    Err(e) => outcomes.push((path, stat, Err(ClaimError::File(e.to_string())))),
                }
            }
            if !asked.is_empty() {
                let request = ClaimFiles(
                    asked
                        .iter()
                        .map(|(path, _, fp)| ClaimFile {
                            path: path.clone(),
                            name: path.file_name().map(crate::fsutil::display_name).unwrap_or_default(),
                            fingerprint: fp.fingerprint.clone(),
                            stamp: fp.stat.clone(),
                        })
                        .collect(),
                );
                match claims.send(request).await {
                    Ok(Ok(answers)) => {
                        for ((path, stat, fp), claim) in asked.into_iter().zip(answers) {
                            outcomes.push((path, stat, Ok((claim, fp.stat))));
                        }
                    }
                    Ok(Err(e)) => outcomes
                        .extend(asked.into_iter().map(|(p, s, _)| (p, s, Err(ClaimError::Database(e.to_string()))))),
                    Err(e) => outcomes
                        .extend(asked.into_iter().map(|(p, s, _)| (p, s, Err(ClaimError::Database(e.to_string()))))),
                }
            }
            // Whether the files that failed are still there, off the actor
            // thread.
            tokio::task::spawn_blocking(move || {
                outcomes
                    .into_iter()
                    .map(|(path, stat, res)| {
                        let gone = res.is_err() && std::fs::symlink_metadata(&path).is_err();
                        (path, stat, res, gone)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default()
        };
        ctx.spawn(fut.into_actor(self).map(|outcomes, act, ctx| {
            act.claim_busy = false;
            let mut tasks: Vec<FileTask> = Vec::new();
            for (path, stat, res, gone) in outcomes {
                let outcome = match res {
                    Ok((Claim::Read(task), _)) => {
                        tracing::debug!(file = %task.name, "claimed");
                        tasks.push(task);
                        act.unreadable.remove(&path);
                        Claimed::Read
                    }
                    Ok((Claim::Done | Claim::Parked, identified)) => {
                        act.unreadable.remove(&path);
                        Claimed::Finished(identified)
                    }
                    // Gone meanwhile (e.g. a stale scan entry of a file
                    // already finished and moved): nothing to do.
                    Err(_) if gone => {
                        tracing::debug!(file = %path.display(), "file vanished before it was claimed");
                        act.unreadable.remove(&path);
                        Claimed::Vanished
                    }
                    // Unreadable (permission): reported once (see
                    // `report_skipped`), looked at again on the next
                    // rescan, never marked done.
                    Err(ClaimError::File(e)) => {
                        act.m.watch_errors.inc();
                        act.unreadable.insert(path.clone(), e);
                        Claimed::Failed(stat)
                    }
                    // The database is away: tried again on the next rescan.
                    Err(ClaimError::Database(e)) => {
                        act.m.watch_errors.inc();
                        tracing::warn!(file = %path.display(), error = %e, "cannot claim file; will retry");
                        Claimed::Failed(stat)
                    }
                };
                act.intake.claimed(path, outcome);
            }
            act.report_skipped();
            if !tasks.is_empty() {
                let reader = act.reader.clone();
                ctx.spawn(
                    async move {
                        if let Err(e) = reader.send(ReadFiles(tasks)).await {
                            tracing::warn!(error = %e, "parser unavailable");
                        }
                    }
                    .into_actor(act),
                );
            }
            act.dispatch(ctx);
        }));
    }

    /// Reports the entries not read when that set changes: each new one
    /// once at warn, the count by reason as a metric, and the whole set to
    /// the CheckpointKeeper (for `ingest_skipped`, what `ingestd status`
    /// and the status page show).
    fn report_skipped(&mut self) {
        let now: BTreeMap<PathBuf, (SkipReason, String)> = (self.not_regular.iter())
            .map(|(p, kind)| (p.clone(), (SkipReason::NotRegularFile, format!("{kind}: never opened"))))
            .chain(self.unreadable.iter().map(|(p, e)| (p.clone(), (SkipReason::Unreadable, e.clone()))))
            .collect();
        // The first report after a start always goes: it replaces what an
        // earlier run left in `ingest_skipped`.
        if now == self.reported && self.skipped_synced {
            return;
        }
        self.skipped_synced = true;
        for (path, (reason, detail)) in &now {
            if self.reported.get(path).is_none_or(|(r, _)| r != reason) {
                tracing::warn!(pipeline = %self.settings.pipeline, file = %crate::fsutil::display_name(path.as_os_str()), reason = reason.as_str(), %detail, "not reading this entry");
            }
        }
        for reason in SkipReason::ALL {
            let n = now.values().filter(|(r, _)| *r == reason).count();
            metrics().skipped(&self.settings.pipeline, reason.as_str(), n);
        }
        let entries = now
            .iter()
            .map(|(p, (r, d))| SkippedEntry {
                path: crate::fsutil::display_name(p.as_os_str()),
                reason: r.as_str(),
                detail: d.clone(),
            })
            .collect();
        self.skipped_to.do_send(Skipped(entries));
        self.reported = now;
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
        self.intake.promote(Instant::now());
        self.dispatch(ctx);
        let paths = self.intake.candidate_paths();
        if !paths.is_empty() && !self.statting {
            self.statting = true;
            // Re-stat waiting candidates so a growing file restarts its
            // window. Ready files are checked once more when identified.
            let fut = tokio::task::spawn_blocking(move || {
                paths
                    .into_iter()
                    .map(|p| {
                        let s = stat_candidate(&p);
                        (p, s)
                    })
                    .collect::<Vec<_>>()
            });
            ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
                act.statting = false;
                if let Ok(stats) = res {
                    let now = Instant::now();
                    for (path, stat) in stats {
                        match stat {
                            Some(stat) => act.intake.observe(path, stat, false, now),
                            None => act.intake.forget_candidate(&path),
                        }
                    }
                }
                act.dispatch(ctx);
            }));
        }
    }

    /// Stats the hinted paths off this thread, all that came in meanwhile
    /// in one trip; a rename is dispatched at once (that is the latency).
    fn stat_hinted(&mut self, ctx: &mut Context<Self>) {
        if self.hint_stat_busy || self.hinted.is_empty() {
            return;
        }
        self.hint_stat_busy = true;
        let hinted = std::mem::take(&mut self.hinted);
        let fut = tokio::task::spawn_blocking(move || {
            hinted.into_iter().map(|(p, renamed)| (stat_candidate(&p), p, renamed)).collect::<Vec<_>>()
        });
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.hint_stat_busy = false;
            if let Ok(stats) = res {
                let now = Instant::now();
                for (stat, path, renamed) in stats {
                    if let Some(stat) = stat {
                        act.intake.observe(path, stat, renamed, now);
                    }
                }
                act.dispatch(ctx);
            }
            act.stat_hinted(ctx);
        }));
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
        if !self.intake.admit_hint(&path) {
            // The window is full: the file waits for a later listing.
            return;
        }
        *self.hinted.entry(path).or_default() |= msg.renamed;
        self.stat_hinted(ctx);
    }
}

impl Handler<FileFinished> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: FileFinished, ctx: &mut Context<Self>) {
        self.intake.finished(msg.path, msg.left);
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
        if !self.intake.quiet() || !self.hinted.is_empty() || self.hint_stat_busy {
            return false;
        }
        if self.dirty || self.scans_completed == 0 {
            self.scan(ctx, false);
            return false;
        }
        !self.scanning
    }
}

/// `*.csv` and `*.csv.gz` in any letter case, not hidden or temporary. By
/// the name's bytes: a name need not be UTF-8 to be read.
pub fn is_candidate_name(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = path.file_name() else { return false };
    let name = name.as_bytes();
    if name.starts_with(b".") {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(b".csv") && lower.len() > 4) || (lower.ends_with(b".csv.gz") && lower.len() > 7)
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
    let mut not_regular = Vec::new();
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
        match entry.file_type() {
            Ok(t) if t.is_file() => {}
            Ok(t) => {
                if not_regular.len() < crate::intake::SKIPPED_HELD {
                    not_regular.push((path, file_kind(&t)));
                }
                continue;
            }
            Err(_) => continue,
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
    Ok(Listing { window, held_present, beyond, not_regular })
}

/// What an entry that is not a regular file is, for people.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    }
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
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = std::ffi::OsStr::from_bytes(b"caf\xe9.CSV");
        assert!(is_candidate_name(Path::new(not_utf8)), "a name need not be UTF-8");
    }
}
