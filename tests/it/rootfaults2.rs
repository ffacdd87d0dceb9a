//! More faults that need root (faults.md F16, C10, P6, P7): an inotify queue
//! that overflows (`/proc/sys/fs/inotify/max_queued_events` lowered), a
//! cgroup v1 memory limit (held under the stated bound; an OOM kill below
//! it is survived like SIGKILL), a network blackhole between the daemon
//! and PostgreSQL (both in one network namespace, an iptables DROP rule on
//! the server's port) and connections reset by the same path (a REJECT
//! `--reject-with tcp-reset` rule). Every system setting a test changes is put back by a
//! guard's Drop, also when the test fails.
//!
//! They run only with `INGESTD_IT_ROOT=1` (CI sets it; it runs as root) and
//! as root; otherwise each test prints why it did nothing and passes. A
//! mechanism this machine lacks (no cgroup v1 memory controller, `ip netns`
//! refused) is a printed skip too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs a command; (success, what it printed).
fn try_run(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program).args(args).stdin(Stdio::null()).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{:?}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// A value written to a /proc/sys file; the old one is written back when
/// dropped.
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(path: &str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        std::fs::write(path, value).unwrap_or_else(|e| panic!("write {value} to {path}: {e}"));
        Sysctl { path: path.into(), old: old.trim().to_owned() }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.old) {
            eprintln!("could not restore {} to {}: {e}", self.path.display(), self.old);
        }
    }
}

/// A process stopped with SIGSTOP; continued when dropped.
struct Stopped(i32);

impl Stopped {
    fn stop(child: &Child) -> Stopped {
        signal(child, libc::SIGSTOP);
        Stopped(child.id() as i32)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// (done identities, identities) in `ingest_files`.
fn done_count(db: &TestDb) -> (i64, i64) {
    let row = db
        .client()
        .query_one("SELECT count(*) FILTER (WHERE state = 'done'), count(*) FROM ingest_files", &[])
        .unwrap();
    (row.get(0), row.get(1))
}

/// Every file identity is done with `rows_each` rows, all written; one
/// identity per name; the events table holds exactly `names.len() ×
/// rows_each` rows; every file moved to processed/.
fn assert_all_written_once(db: &TestDb, d: &Daemon, names: &[String], rows_each: i64) {
    let ids = db.identities();
    let by_name: BTreeSet<&str> = ids.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(ids.len(), names.len(), "one identity per file (nothing read twice)");
    assert_eq!(by_name.len(), names.len(), "one identity per file name");
    for name in names {
        assert!(by_name.contains(name.as_str()), "{name} has no identity");
    }
    for id in &ids {
        let f = &id.file;
        assert!(f.adds_up(), "{}: {f:?}", id.name);
        assert_eq!(
            (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
            (rows_each, rows_each, 0, 0, "done"),
            "{}: {id:?}",
            id.name
        );
    }
    let total = names.len() as i64 * rows_each;
    assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), total, "events stored");
    assert_eq!(db.scalar("SELECT count(DISTINCT event_id) FROM ecommerce_events"), total, "distinct events");
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), 0, "no rejects");
    for name in names {
        assert!(path_exists(&d.processed().join(name)), "{name} not moved to processed/");
        assert!(!path_exists(&d.incoming().join(name)), "{name} still in incoming/");
    }
}

// ---------------------------------------------------------------------------
// F16: inotify queue overflow

/// An inotify instance of the test's own on a folder, never read until
/// `overflowed`: proof that the lowered queue limit is in effect.
struct InotifyProbe(i32);

impl InotifyProbe {
    fn watch(dir: &Path) -> InotifyProbe {
        // SAFETY: plain syscalls; the path is a valid C string.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        let c = std::ffi::CString::new(path_str(dir)).unwrap();
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
        assert!(wd >= 0, "inotify_add_watch: {}", std::io::Error::last_os_error());
        InotifyProbe(fd)
    }

    /// Whether the queue overflowed (`IN_Q_OVERFLOW` among the events).
    fn overflowed(&self) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = false;
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return seen;
            }
            let mut at = 0usize;
            while at + 16 <= n as usize {
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
                seen |= mask & libc::IN_Q_OVERFLOW != 0;
                at += 16 + len;
            }
        }
    }
}

impl Drop for InotifyProbe {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// F16: 3 000 small files (`INGESTD_IT_FILES`; `INGESTD_IT_FILES=100000`
/// is the 100 000-file case) dropped as fast as possible into a
/// folder whose inotify queue holds 16 events (and a third of them while
/// the daemon is stopped, so its queue overflows for sure): the rescan
/// finds every one; each is read once and written exactly.
#[test]
fn inotify_overflow_misses_no_file() {
    const TEST: &str = "inotify_overflow_misses_no_file";
    if !root_enabled(TEST) {
        return;
    }
    let files: u64 = std::env::var("INGESTD_IT_FILES")
        .ok()
        .map(|v| v.parse().expect("INGESTD_IT_FILES: a whole number of files"))
        .unwrap_or(3_000);
    assert!(files >= 3, "INGESTD_IT_FILES: at least 3 (a third each before, during and after the stop)");
    // 60 s for the default 3 000 files; proportionally more for more.
    let limit = LIMIT.max(LIMIT * (files / 3_000) as u32);
    const ROWS: u64 = 5;
    let db = TestDb::new();
    let mut d = Daemon::new(&db);
    d.set("INGESTD_PIPELINE__RESCAN_INTERVAL_MS", "1000");
    // Read when an inotify instance is created: before the daemon starts.
    let _queue = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "16");
    let probe = InotifyProbe::watch(&d.incoming());
    let names: Vec<String> = (0..files).map(|i| format!("f{i:04}.csv")).collect();
    let content = |i: u64| valid_file(1 + i * ROWS, ROWS);

    let mut child = Running(d.spawn(&[]));
    // The first file done: the watcher is running.
    d.drop_file(&names[0], content(0).as_bytes());
    wait_until(LIMIT, "the first file done", || db.has_schema() && done_count(&db).0 == 1);

    let started = Instant::now();
    let mut stopped = None;
    for i in 1..files {
        // The middle third lands while the daemon is stopped.
        if i == files / 3 {
            stopped = Some(Stopped::stop(&child));
        } else if i == 2 * files / 3 {
            stopped = None;
        }
        d.drop_file(&names[i as usize], content(i).as_bytes());
    }
    assert!(stopped.is_none());
    let dropped = started.elapsed();
    assert!(probe.overflowed(), "a queue of 16 events did not overflow: the limit is not in effect");
    wait_until(limit, &format!("all {files} files done"), || {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited; log:\n{}", d.log());
        done_count(&db).0 == files as i64
    });
    let took = started.elapsed();
    println!("{TEST}: {files} files dropped in {dropped:?}; all done {took:?} after the first drop");
    // A few rescans more: nothing is read again.
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited; log:\n{}", d.log());
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, limit).expect("drain after SIGTERM");
    assert!(status.success(), "drain: {status:?}; log:\n{}", d.log());
    assert_all_written_once(&db, &d, &names, ROWS as i64);
}

// ---------------------------------------------------------------------------
// C10: memory limit and OOM kill

const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";

/// A cgroup v1 memory cgroup of the test's own; whatever is left in it is
/// killed and the cgroup removed when dropped.
struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    /// A new cgroup limited to `limit` bytes (RAM and, when swap is
    /// accounted, RAM + swap); None when there is no v1 memory controller.
    fn new(name: &str, limit: u64) -> Option<MemCgroup> {
        let root = Path::new(MEMCG_ROOT);
        if !root.join("memory.limit_in_bytes").exists() || !root.join("cgroup.procs").exists() {
            return None;
        }
        let dir = root.join(format!("{name}_{}", std::process::id()));
        if path_exists(&dir) {
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = MemCgroup { dir };
        cg.write("memory.limit_in_bytes", &limit.to_string());
        if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
            // No swapping instead of the OOM kill.
            let _ = std::fs::write(cg.dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        }
        Some(cg)
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", self.dir.join(file).display()));
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.join(file).display()))
    }

    fn number(&self, file: &str) -> u64 {
        self.read(file).trim().parse().unwrap()
    }

    /// Lowers `memory.limit_in_bytes` by `step` at a time, from just above
    /// the current usage down, until the kernel cannot reclaim enough for the next step
    /// (EBUSY) or 4 MiB is reached; returns the limit in force.
    fn shrink(&self, step: u64) -> u64 {
        let mut limit = self.number("memory.usage_in_bytes").div_ceil(step) * step;
        while limit > 4 * MIB {
            if std::fs::write(self.dir.join("memory.limit_in_bytes"), limit.to_string()).is_err() {
                break;
            }
            limit -= step;
        }
        self.number("memory.limit_in_bytes")
    }

    /// `oom_kill N` of memory.oom_control (kernels ≥ 4.13); 0 if absent.
    fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `sh -c 'echo $$ > …/cgroup.procs; exec "$@"' sh`: the shell joins
    /// the cgroup, then becomes the daemon (for `Daemon::spawn_via`).
    fn wrapper(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > '{}' && exec \"$@\"", self.dir.join("cgroup.procs").display()),
            "sh".into(),
        ]
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !path_exists(&self.dir) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove the cgroup {}", self.dir.display());
    }
}

fn spawn_in(d: &Daemon, cg: &MemCgroup, extra: &[&str]) -> Running {
    let wrapper = cg.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Running(d.spawn_via(&wrapper, extra))
}

const MIB: u64 = 1024 * 1024;

/// C10: (a) under a 64 MiB cgroup limit, 300 000 rows in 6 files with the
/// default settings go through without an OOM kill (the stated memory
/// bound holds); (b) under a limit far too low, the kernel OOM-kills the
/// daemon mid-run (SIGKILL), and a run without the limit ends exactly once.
#[test]
fn memory_limit_holds_and_oom_kill_is_survived() {
    use std::os::unix::process::ExitStatusExt;
    const TEST: &str = "memory_limit_holds_and_oom_kill_is_survived";
    if !root_enabled(TEST) {
        return;
    }
    const FILES: u64 = 6;
    const ROWS: u64 = 50_000;
    let names: Vec<String> = (0..FILES).map(|i| format!("m{i}.csv")).collect();
    let fill = |d: &Daemon| {
        for (i, name) in names.iter().enumerate() {
            d.drop_file(name, valid_file(1 + i as u64 * ROWS, ROWS).as_bytes());
        }
    };

    // (a) 64 MiB: must finish.
    let db = TestDb::new();
    let d = Daemon::new(&db);
    fill(&d);
    let Some(cg) = MemCgroup::new("ingestd_it_c10a", 64 * MIB) else {
        println!("{TEST}: skipped: no cgroup v1 memory controller at {MEMCG_ROOT}");
        return;
    };
    let started = Instant::now();
    let mut child = spawn_in(&d, &cg, &["--until-idle"]);
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| {
        panic!("not idle within {LIMIT:?} under 64 MiB; log:\n{}", d.log());
    });
    let (max_usage, failcnt, kills) =
        (cg.number("memory.max_usage_in_bytes"), cg.number("memory.failcnt"), cg.oom_kills());
    println!(
        "{TEST}: (a) 64 MiB limit: {} rows in {:?}; memory.max_usage_in_bytes = {max_usage} ({:.1} MiB), failcnt = {failcnt}, oom_kill = {kills}",
        FILES * ROWS,
        started.elapsed(),
        max_usage as f64 / MIB as f64
    );
    assert_eq!(status.signal(), None, "killed under 64 MiB (oom_kill = {kills}); log:\n{}", d.log());
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    assert_eq!(kills, 0, "the OOM killer ran in the 64 MiB cgroup");
    assert_all_written_once(&db, &d, &names, ROWS as i64);
    drop(child);
    drop(cg);

    // (b) far too low: the daemon starts under 64 MiB; once it committed
    // its first batch, the limit is lowered as far as the kernel can
    // reclaim (it refuses a limit below that with EBUSY). The pipeline
    // needs more than that for the batches to come: OOM kill mid-run.
    let db = TestDb::new();
    let d = Daemon::new(&db);
    fill(&d);
    let cg = MemCgroup::new("ingestd_it_c10b", 64 * MIB).expect("the memory controller was there a moment ago");
    let mut child = spawn_in(&d, &cg, &["--until-idle"]);
    wait_until(LIMIT, "the first batch committed", || {
        assert!(child.try_wait().unwrap().is_none(), "exited before its first commit; log:\n{}", d.log());
        db.has_schema() && committed(&db) > 0
    });
    let low = cg.shrink(MIB);
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| {
        panic!("not OOM-killed within {LIMIT:?} under {low} bytes; log:\n{}", d.log());
    });
    let kills = cg.oom_kills();
    let committed = committed(&db);
    println!(
        "{TEST}: (b) limit lowered to {low} bytes ({:.1} MiB) after the first commit: {status:?}, oom_kill = {kills}, {committed} rows committed before the kill",
        low as f64 / MIB as f64
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "expected an OOM kill (SIGKILL): {status:?}; log:\n{}", d.log());
    assert!(kills >= 1, "SIGKILL but the cgroup counts no OOM kill");
    drop(child);
    drop(cg);
    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    assert_all_written_once(&db, &d, &names, ROWS as i64);
}

/// Rows committed so far, over every file.
fn committed(db: &TestDb) -> i64 {
    db.scalar("SELECT coalesce(sum(rows_written + rows_duplicate + rows_rejected), 0)::int8 FROM ingest_files")
}

// ---------------------------------------------------------------------------
// P6: network blackhole

/// A network namespace with its loopback up; deleted when dropped.
struct NetNs {
    name: String,
}

impl NetNs {
    /// Err (with what `ip` said) when namespaces cannot be made here.
    fn new(name: &str) -> Result<NetNs, String> {
        let (ok, out) = try_run("ip", &["netns", "add", name]);
        if !ok {
            return Err(format!("ip netns add {name}: {out}"));
        }
        let ns = NetNs { name: name.into() };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `ip netns exec NAME`, to prefix a command with.
    fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut all: Vec<&str> = self.prefix()[1..].to_vec();
        all.extend_from_slice(args);
        try_run("ip", &all)
    }

    fn exec_ok(&self, args: &[&str]) {
        let (ok, out) = self.exec(args);
        assert!(ok, "in {}: {args:?}: {out}", self.name);
    }

    /// Runs `f` on a thread of its own that entered this namespace (its
    /// sockets are the namespace's: 127.0.0.1 is its loopback).
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open the namespace");
        std::thread::spawn(move || {
            // SAFETY: a namespace descriptor we hold open; only this thread
            // changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// `pg`'s cluster, stopped in the test's namespace and run by `pg_ctl`
/// inside `ns` on the same port and data directory; stopped (immediate)
/// when dropped.
struct NsServer {
    ns_name: String,
    pg_ctl: PathBuf,
    data: PathBuf,
    uid: u32,
    gid: u32,
}

impl NsServer {
    fn start(ns: &NetNs, pg: &mut PrivateDb) -> NsServer {
        use std::os::unix::fs::MetadataExt;
        pg.stop();
        let data = pg.data_dir();
        let meta = std::fs::metadata(&data).unwrap();
        let server = NsServer {
            ns_name: ns.name.clone(),
            pg_ctl: ingestd::db::embedded::EmbeddedPg::find_bin_dir().unwrap().join("pg_ctl"),
            data,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        let root = server.data.parent().unwrap().to_owned();
        let opts = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c shared_buffers=32MB -c max_connections=50",
            pg.port(),
            root.display()
        );
        let log = root.join("server.log");
        let out = server.pg_ctl(&["start", "-w", "-t", "60", "-l", path_str(&log), "-o", &opts]);
        assert!(out.0, "pg_ctl start in {}: {}\nserver log:\n{}", ns.name, out.1, pg.server_log());
        server
    }

    /// `ip netns exec NS setpriv --reuid … pg_ctl ARGS -D data`.
    fn pg_ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns_name, "setpriv"])
            .args(["--reuid", &self.uid.to_string(), "--regid", &self.gid.to_string(), "--clear-groups"])
            .arg(&self.pg_ctl)
            .args(args)
            .arg("-D")
            .arg(&self.data)
            .current_dir(self.data.parent().unwrap())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LC_ALL", "C")
            .env("HOME", self.data.parent().unwrap())
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl in the namespace");
        (
            out.status.success(),
            format!(
                "{:?}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"]);
    }
}

/// An iptables rule in a namespace (`-A` now, `-D` when dropped).
struct Rule<'a> {
    ns: &'a NetNs,
    spec: Vec<String>,
    active: bool,
}

impl<'a> Rule<'a> {
    fn append(ns: &'a NetNs, spec: &[&str]) -> Rule<'a> {
        let mut args = vec!["iptables", "-A"];
        args.extend_from_slice(spec);
        ns.exec_ok(&args);
        Rule { ns, spec: spec.iter().map(|s| s.to_string()).collect(), active: true }
    }

    fn delete(&mut self) {
        if std::mem::take(&mut self.active) {
            let mut args = vec!["iptables", "-D"];
            args.extend(self.spec.iter().map(String::as_str));
            self.ns.exec_ok(&args);
        }
    }
}

impl Drop for Rule<'_> {
    fn drop(&mut self) {
        if self.active {
            self.active = false;
            let mut args = vec!["iptables", "-D"];
            args.extend(self.spec.iter().map(String::as_str));
            let _ = self.ns.exec(&args);
        }
    }
}

/// P6: PostgreSQL and the daemon in one network namespace; mid-run every
/// packet to the server's port is dropped for 5 s (no RST, no FIN: the
/// connections just go silent). The batch timeout (2 s) detects it, the
/// batches are retried, and once the packets flow again the run ends
/// exactly once.
#[test]
fn network_blackhole_detected_by_batch_timeout() {
    const TEST: &str = "network_blackhole_detected_by_batch_timeout";
    if !root_enabled(TEST) {
        return;
    }
    if !try_run("iptables", &["--version"]).0 {
        panic!("{TEST}: INGESTD_IT_ROOT=1 but `iptables` does not run: apt-get install iptables (.ci/run does)");
    }
    let ns = match NetNs::new(&format!("ingestd_it_p6_{}", std::process::id())) {
        Ok(ns) => ns,
        Err(e) => {
            println!("{TEST}: skipped: cannot create a network namespace here: {e}");
            return;
        }
    };
    let mut pg = PrivateDb::new();
    let _server = NsServer::start(&ns, &mut pg);
    let url = pg.url();
    let db = move || TestDb::at(url.clone());
    let port = pg.port().to_string();

    const FILES: u64 = 4;
    const ROWS: u64 = 1_500;
    let names: Vec<String> = (0..FILES).map(|i| format!("p{i}.csv")).collect();
    let mut d = Daemon::new(&db());
    d.set("INGESTD_DATABASE__BATCH_TIMEOUT_SECS", "2")
        .set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20")
        .set("INGESTD_PIPELINE__BATCH_ROWS", "20");
    for (i, name) in names.iter().enumerate() {
        d.drop_file(name, valid_file(1 + i as u64 * ROWS, ROWS).as_bytes());
    }
    let started = Instant::now();
    let mut child = Running(d.spawn_via(&ns.prefix(), &["--until-idle"]));
    let committed_now = {
        let db = db.clone();
        move |ns: &NetNs| {
            let db = db.clone();
            ns.within(move || {
                let db = db();
                if db.has_schema() {
                    committed(&db)
                } else {
                    0
                }
            })
        }
    };
    wait_until(LIMIT, "rows committed", || {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited early; log:\n{}", d.log());
        committed_now(&ns) > 0
    });
    let before = committed_now(&ns);
    let mut rule = Rule::append(&ns, &["INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited during the blackhole; log:\n{}", d.log());
    rule.delete();
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| panic!("not idle within {LIMIT:?}; log:\n{}", d.log()));
    println!(
        "{TEST}: {before} of {} rows committed before the blackhole; run ended {status:?} after {:?}",
        FILES * ROWS,
        started.elapsed()
    );
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    let log = d.log();
    for line in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
        println!("{TEST}: daemon: {line}");
    }
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("no answer within 2s")),
        "no batch-timeout warning in the log:\n{log}"
    );
    assert!(before < (FILES * ROWS) as i64, "the run ended before the blackhole");
    assert_all_done_in(&ns, pg.url(), names.clone(), &d, ROWS);
}

/// P7: PostgreSQL and the daemon in one network namespace; mid-run every
/// packet to the server's port is answered with a TCP reset for 3 s (open
/// connections are reset at their next packet, new ones refused at once).
/// The writer gets immediate connection errors (no timeout involved),
/// retries, and once the rule is gone the run ends exactly once.
#[test]
fn connection_reset_mid_run_is_retried() {
    const TEST: &str = "connection_reset_mid_run_is_retried";
    if !root_enabled(TEST) {
        return;
    }
    if !try_run("iptables", &["--version"]).0 {
        panic!("{TEST}: INGESTD_IT_ROOT=1 but `iptables` does not run: apt-get install iptables (.ci/run does)");
    }
    let ns = match NetNs::new(&format!("ingestd_it_p7_{}", std::process::id())) {
        Ok(ns) => ns,
        Err(e) => {
            println!("{TEST}: skipped: cannot create a network namespace here: {e}");
            return;
        }
    };
    let mut pg = PrivateDb::new();
    let _server = NsServer::start(&ns, &mut pg);
    let url = pg.url();
    let db = move || TestDb::at(url.clone());
    let port = pg.port().to_string();

    const FILES: u64 = 4;
    const ROWS: u64 = 1_500;
    let names: Vec<String> = (0..FILES).map(|i| format!("r{i}.csv")).collect();
    let mut d = Daemon::new(&db());
    // Slow enough that the reset lands mid-run.
    d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20").set("INGESTD_PIPELINE__BATCH_ROWS", "20");
    for (i, name) in names.iter().enumerate() {
        d.drop_file(name, valid_file(1 + i as u64 * ROWS, ROWS).as_bytes());
    }
    let started = Instant::now();
    let mut child = Running(d.spawn_via(&ns.prefix(), &["--until-idle"]));
    let committed_now = {
        let db = db.clone();
        move |ns: &NetNs| {
            let db = db.clone();
            ns.within(move || {
                let db = db();
                if db.has_schema() {
                    committed(&db)
                } else {
                    0
                }
            })
        }
    };
    wait_until(LIMIT, "rows committed", || {
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited early; log:\n{}", d.log());
        committed_now(&ns) > 0
    });
    let before = committed_now(&ns);
    let mut rule =
        Rule::append(&ns, &["INPUT", "-p", "tcp", "--dport", &port, "-j", "REJECT", "--reject-with", "tcp-reset"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited during the resets; log:\n{}", d.log());
    rule.delete();
    let status = wait_exit(&mut child, LIMIT).unwrap_or_else(|| {
        let db = db.clone();
        let sessions = ns.within(move || server_sessions(&db()));
        panic!("not idle within {LIMIT:?}; server sessions:\n{sessions}\nlog:\n{}", d.log())
    });
    println!(
        "{TEST}: {before} of {} rows committed before the resets; run ended {status:?} after {:?}",
        FILES * ROWS,
        started.elapsed()
    );
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    let log = d.log();
    for line in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
        println!("{TEST}: daemon: {line}");
    }
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("batch not committed; retrying")),
        "no retry warning in the log:\n{log}"
    );
    assert!(before < (FILES * ROWS) as i64, "the run ended before the resets");
    assert_all_done_in(&ns, pg.url(), names.clone(), &d, ROWS);
}

/// The server's client sessions with the locks they hold, one a line (for
/// failure messages: a session whose client is gone can hold a lock).
fn server_sessions(db: &TestDb) -> String {
    db.client()
        .query(
            "SELECT a.pid, a.state, a.backend_start::text, a.client_port, \
             coalesce(string_agg(DISTINCT l.locktype || ' ' || l.mode, ', '), ''), left(a.query, 80) \
             FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted \
             WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() \
             GROUP BY a.pid, a.state, a.backend_start, a.client_port, a.query ORDER BY a.backend_start",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let (pid, state, start, port, locks, query): (i32, Option<String>, String, Option<i32>, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            format!("pid {pid} {state:?} since {start} client port {port:?} locks [{locks}] last query {query:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Inside the namespace: every file is one identity, done with all its rows
/// written exactly once, nothing rejected, and every file moved.
fn assert_all_done_in(ns: &NetNs, url: String, names: Vec<String>, d: &Daemon, rows: u64) {
    let (processed, incoming) = (d.processed(), d.incoming());
    ns.within(move || {
        let db = TestDb::at(url);
        let ids = db.identities();
        assert_eq!(ids.len(), names.len(), "one identity per file: {ids:?}");
        for id in &ids {
            let f = &id.file;
            assert!(f.adds_up(), "{}: {f:?}", id.name);
            assert_eq!(
                (f.rows, f.written, f.duplicate, f.rejected, f.state.as_str()),
                (rows as i64, rows as i64, 0, 0, "done"),
                "{id:?}"
            );
        }
        let total = (names.len() as u64 * rows) as i64;
        assert_eq!(db.scalar("SELECT count(*) FROM ecommerce_events"), total);
        assert_eq!(db.scalar("SELECT count(DISTINCT event_id) FROM ecommerce_events"), total);
        assert_eq!(db.scalar("SELECT count(*) FROM ingest_rejects"), 0, "no rejects");
        for name in &names {
            assert!(path_exists(&processed.join(name)) && !path_exists(&incoming.join(name)), "{name} not moved");
        }
    });
}
