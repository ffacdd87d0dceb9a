//! Mechanisms that need root: mounts, `chattr`, /proc/sys settings, memory
//! cgroups, network namespaces and iptables, another OS user. Each changes
//! the machine and puts it back in its `Drop`, also when the test fails.
//!
//! Tests that use them are `#[ignore = "needs root: …"]`: a plain `cargo
//! test` lists them as ignored; CI (root, with the tools `.ci/run`
//! installs) runs them with `--include-ignored`. Run anyway without what
//! they need, they fail with the reason (`require_root`, `require_tool`),
//! never pass having done nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::files::{path_exists, path_str};

pub const MIB: u64 = 1024 * 1024;

/// Fails the test unless we are root: `what` needs it.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "needs root ({what}): run as root, as CI does (`cargo test -- --include-ignored`)");
}

/// Fails the test unless `program ARGS` runs and succeeds: a tool `.ci/run`
/// installs from `package`.
pub fn require_tool(program: &str, args: &[&str], package: &str) {
    let (ok, out) = try_run(program, args);
    assert!(ok, "`{program}` does not run ({out}): apt-get install {package} (.ci/run does)");
}

/// Runs a command; (success, what it printed).
pub fn try_run(program: &str, args: &[&str]) -> (bool, String) {
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

/// Runs a command to success, or panics with what it printed.
pub fn run_ok(program: &str, args: &[&str]) {
    let (ok, out) = try_run(program, args);
    assert!(ok, "{program} {args:?}: {out}");
}

/// A file system mounted on a folder of the test; unmounted when dropped,
/// also when the test fails (lazily if something still holds it).
pub struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (e.g. `64k`) on `dir`.
    pub fn tmpfs(dir: &Path, size: &str) -> Mount {
        run_ok("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path_str(dir)]);
        Mount { dir: dir.to_owned() }
    }

    /// The file system in `image` on `dir`, through a loop device.
    pub fn image(image: &Path, dir: &Path) -> Mount {
        run_ok("mount", &["-o", "loop", path_str(image), path_str(dir)]);
        Mount { dir: dir.to_owned() }
    }

    /// `mount -o remount,OPTIONS`: e.g. `ro`, `rw`, `size=16m`.
    pub fn remount(&self, options: &str) {
        run_ok("mount", &["-o", &format!("remount,{options}"), path_str(&self.dir)]);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// `chattr +i` on a file; `chattr -i` when dropped, so a failing test
/// leaves nothing its temp folder cannot remove.
pub struct Immutable(PathBuf);

impl Immutable {
    /// Fails the test when the flag cannot be set (no chattr, or a file
    /// system without it).
    pub fn set(path: &Path) -> Immutable {
        run_ok("chattr", &["+i", path_str(path)]);
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A value written to a /proc/sys file; the old one is written back when
/// dropped.
pub struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    pub fn set(path: &str, value: &str) -> Sysctl {
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

/// An inotify instance of the test's own on a folder, never read until
/// `overflowed`: proof that the lowered queue limit is in effect.
pub struct InotifyProbe(i32);

impl InotifyProbe {
    pub fn watch(dir: &Path) -> InotifyProbe {
        // SAFETY: plain syscalls; the path is a valid C string.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
        let c = std::ffi::CString::new(path_str(dir)).unwrap();
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) };
        assert!(wd >= 0, "inotify_add_watch: {}", std::io::Error::last_os_error());
        InotifyProbe(fd)
    }

    /// Whether the queue overflowed (`IN_Q_OVERFLOW` among the events).
    pub fn overflowed(&self) -> bool {
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

pub const MEMCG_ROOT: &str = "/sys/fs/cgroup/memory";

/// A cgroup v1 memory cgroup of the test's own; whatever is left in it is
/// killed and the cgroup removed when dropped.
pub struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    /// A new cgroup limited to `limit` bytes (RAM and, when swap is
    /// accounted, RAM + swap). Fails the test when there is no v1 memory
    /// controller.
    pub fn new(name: &str, limit: u64) -> MemCgroup {
        let root = Path::new(MEMCG_ROOT);
        assert!(
            root.join("memory.limit_in_bytes").exists() && root.join("cgroup.procs").exists(),
            "needs a cgroup v1 memory controller at {MEMCG_ROOT}"
        );
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
        cg
    }

    pub fn write(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", self.dir.join(file).display()));
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.join(file).display()))
    }

    pub fn number(&self, file: &str) -> u64 {
        self.read(file).trim().parse().unwrap()
    }

    /// Lowers `memory.limit_in_bytes` by `step` at a time, from just above
    /// the current usage down, until the kernel cannot reclaim enough for the next step
    /// (EBUSY) or 4 MiB is reached; returns the limit in force.
    pub fn shrink(&self, step: u64) -> u64 {
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
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `sh -c 'echo $$ > …/cgroup.procs; exec "$@"' sh`: the shell joins
    /// the cgroup, then becomes the daemon (for `Daemon::spawn_via`).
    pub fn wrapper(&self) -> Vec<String> {
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

/// A network namespace with its loopback up; deleted when dropped.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Fails the test (with what `ip` said) when namespaces cannot be made
    /// here.
    pub fn new(name: &str) -> NetNs {
        run_ok("ip", &["netns", "add", name]);
        let ns = NetNs { name: name.into() };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME`, to prefix a command with.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut all: Vec<&str> = self.prefix()[1..].to_vec();
        all.extend_from_slice(args);
        try_run("ip", &all)
    }

    pub fn exec_ok(&self, args: &[&str]) {
        let (ok, out) = self.exec(args);
        assert!(ok, "in {}: {args:?}: {out}", self.name);
    }

    /// Runs `f` on a thread of its own that entered this namespace (its
    /// sockets are the namespace's: 127.0.0.1 is its loopback; processes it
    /// starts live in the namespace too).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open the namespace");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: a namespace descriptor we hold open; only this
                    // thread changes namespace.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// An iptables rule in a namespace (`-A` now, `-D` when dropped).
pub struct Rule<'a> {
    ns: &'a NetNs,
    spec: Vec<String>,
    active: bool,
}

impl<'a> Rule<'a> {
    pub fn append(ns: &'a NetNs, spec: &[&str]) -> Rule<'a> {
        let mut args = vec!["iptables", "-A"];
        args.extend_from_slice(spec);
        ns.exec_ok(&args);
        Rule { ns, spec: spec.iter().map(|s| s.to_string()).collect(), active: true }
    }

    /// `iptables -D` of the rule, once (a failure panics).
    pub fn delete(&mut self) {
        let (ok, out) = self.remove();
        assert!(ok, "in {}: iptables -D {:?}: {out}", self.ns.name, self.spec);
    }

    fn remove(&mut self) -> (bool, String) {
        if !std::mem::take(&mut self.active) {
            return (true, String::new());
        }
        let mut args = vec!["iptables", "-D"];
        args.extend(self.spec.iter().map(String::as_str));
        self.ns.exec(&args)
    }
}

impl Drop for Rule<'_> {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// A user the daemon can run as instead of root, created if missing
/// (`useradd`, then `runuser -u USER` to run as it); None when we are not
/// root (the daemon then runs as ourselves). As root without those tools
/// the test fails.
pub fn non_root_user() -> Option<(String, u32, u32)> {
    const USER: &str = "ingestd-it";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let out = std::process::Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER])
            .output()
            .unwrap_or_else(|e| panic!("as root the daemon runs as {USER}: useradd: {e} (apt-get install passwd)"));
        // 9: created meanwhile by another test.
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = std::process::Command::new("runuser")
        .args(["-u", USER, "--", "true"])
        .status()
        .unwrap_or_else(|e| panic!("as root the daemon runs as {USER}: runuser: {e} (apt-get install util-linux)"));
    assert!(status.success(), "runuser -u {USER} -- true: {status:?}");
    Some((USER.to_string(), id("-u").unwrap(), id("-g").unwrap()))
}
