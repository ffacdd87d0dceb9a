//! The real binary in a temp folder: its folders and settings, starting and
//! stopping it, signals, and polling with deadlines instead of sleeps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::db::TestDb;

pub const BIN: &str = env!("CARGO_BIN_EXE_ingestd");

/// A folder layout for one daemon, and how to run it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Daemon {
    pub fn new(db: &TestDb) -> Daemon {
        let mut d = Daemon::embedded();
        d.set("DATABASE_URL", &db.url);
        d
    }

    /// The same layout with no database URL: the daemon runs its embedded
    /// PostgreSQL (under `paths.pg_data`).
    pub fn embedded() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["incoming", "processed", "bad_records"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let env = vec![
            ("INGESTD_PATHS__INCOMING".into(), dir.path().join("incoming").display().to_string()),
            ("INGESTD_PATHS__PROCESSED".into(), dir.path().join("processed").display().to_string()),
            ("INGESTD_PATHS__BAD_RECORDS".into(), dir.path().join("bad_records").display().to_string()),
            ("INGESTD_PIPELINE__STABLE_FOR_MS".into(), "50".into()),
            ("INGESTD_PIPELINE__RESCAN_INTERVAL_MS".into(), "500".into()),
            ("INGESTD_HTTP__LISTEN".into(), String::new()),
            ("INGESTD_DATABASE__STARTUP_TIMEOUT_SECS".into(), "10".into()),
            ("RUST_LOG".into(), "info,tokio_postgres=warn,actix_server=warn".into()),
        ];
        Daemon { dir, env }
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn incoming(&self) -> PathBuf {
        self.dir.path().join("incoming")
    }
    pub fn processed(&self) -> PathBuf {
        self.dir.path().join("processed")
    }
    pub fn bad_records(&self) -> PathBuf {
        self.dir.path().join("bad_records")
    }

    /// Writes a file into incoming the way producers should: temp name, then
    /// rename.
    pub fn drop_file(&self, name: &str, content: &[u8]) {
        let tmp = self.incoming().join(format!(".{name}.part"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.incoming().join(name)).unwrap();
    }

    /// `WRAPPER… ingestd ARGS…` in the daemon's folder, with its
    /// environment and nothing else (no wrapper: the binary itself).
    fn command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(args).current_dir(self.dir.path()).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `ingestd run [extra…]` in the background, logging to a file.
    pub fn spawn(&self, extra: &[&str]) -> Child {
        self.spawn_logging_to(extra, &self.log_path())
    }

    /// Like `spawn`, with its own log file (for several daemons at once).
    pub fn spawn_logging_to(&self, extra: &[&str], log_path: &Path) -> Child {
        self.spawn_with(&[], extra, log_path)
    }

    /// Starts `WRAPPER… ingestd run [extra…]` (e.g. `runuser -u USER --`),
    /// with the daemon's environment and log.
    pub fn spawn_via(&self, wrapper: &[&str], extra: &[&str]) -> Child {
        self.spawn_with(wrapper, extra, &self.log_path())
    }

    fn spawn_with(&self, wrapper: &[&str], extra: &[&str], log_path: &Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        self.command(wrapper, &args).stdout(Stdio::null()).stderr(log).spawn().expect("spawn ingestd")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("ingestd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ingestd run --until-idle`, which must end within `limit`.
    pub fn run_until_idle(&self, limit: Duration) -> ExitStatus {
        let mut child = self.spawn(&["--until-idle"]);
        wait_exit(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("ingestd --until-idle did not finish within {limit:?}; log:\n{}", self.log())
        })
    }

    /// Runs any command to completion: (status, stdout, stderr).
    pub fn output(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = self.command(&[], args).output().expect("run ingestd");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGTERM, then the exit status within the drain deadline (+ 5 s).
    pub fn stop(&self, child: &mut Child, drain_secs: u64) -> ExitStatus {
        signal(child, libc::SIGTERM);
        wait_exit(child, Duration::from_secs(drain_secs + 5))
            .unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", self.log()))
    }

    /// `stop`, which must end the daemon with exit code 0.
    pub fn stop_cleanly(&self, child: &mut Child, drain_secs: u64) {
        let status = self.stop(child, drain_secs);
        assert_eq!(status.code(), Some(0), "log:\n{}", self.log());
    }

    /// Panics with the log if the daemon exited.
    pub fn assert_alive(&self, child: &mut Child, when: &str) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited {when}: {status:?}; log:\n{}", self.log());
        }
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Polls `cond` until it holds; panics with `what` past the deadline.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

pub fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0, "kill({sig})");
}

/// A daemon under test: SIGCONTed and SIGKILLed when dropped before it
/// exited, so a failing test leaves no daemon behind, frozen or not (nor a
/// mount it holds busy).
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signals our own child, which has not been reaped.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A process stopped with SIGSTOP (the daemon, or a PostgreSQL backend);
/// continued (SIGCONT) when dropped, also when the test fails on the way, so
/// nothing is left frozen.
pub struct Stopped(i32);

impl Stopped {
    pub fn pid(pid: i32) -> Stopped {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "kill -STOP {pid}");
        Stopped(pid)
    }

    pub fn child(child: &Child) -> Stopped {
        Stopped::pid(child.id() as i32)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above; the process may be gone already.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The one child process of `pid` (the daemon a wrapper started), from the
/// parent pid field of /proc/*/stat.
pub fn only_child_of(pid: u32) -> u32 {
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            // The command name is in parentheses and may hold spaces: the
            // fields after the last ')' are state, then the parent pid.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect();
    assert_eq!(children.len(), 1, "children of {pid}: {children:?}");
    children[0]
}

/// A loopback port that was free a moment ago (bound to port 0, then
/// released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.1 on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of an unlabelled sample in Prometheus text format.
/// The value of metric `name` in a `/metrics` page, summed over its label
/// sets (every pipeline's); `None` if the page has no such metric.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Resident set size of a running process, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Peak resident set size of a running process so far, in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// A `KEY: N kB` line of /proc/PID/status.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status:\n{status}"))
}
