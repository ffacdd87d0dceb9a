//! The embedded default: a private PostgreSQL cluster under a directory of
//! ours (`data/pg` by default), run from the server binaries already on the
//! machine, for when no database URL is configured.
//!
//! Layout of the cluster root (`root`):
//!
//! ```text
//! root/.lock            flock'ed around every start/stop, so concurrent
//!                       `ingestd` processes never initdb or start twice
//! root/data/            PGDATA (created by initdb in data.initdb/, then renamed,
//!                       so a half-done initdb is never mistaken for a cluster)
//! root/server.log       the server's log (pg_ctl -l)
//! root/.s.PGSQL.<port>  the unix socket (when the path fits in sun_path)
//! ```
//!
//! The server listens on 127.0.0.1 only, on a port picked afresh at every
//! start: other clusters may already listen on the machine, and the port is
//! read back from `postmaster.pid` when a running server is reused.
//!
//! Everything here is blocking `std::process`: it runs before the async
//! runtime starts (and from tests), never on an actor thread.
//!
//! Running as root: initdb and pg_ctl refuse to run as root, so they run as
//! the owner of an existing data directory, else as the `postgres` OS user.
//! `root` is chowned to that user, and every parent of `root` must be
//! traversable by it (`o+x`). Directories this module creates are made 0755.
//!
//! Location (root only; see [`cluster_root`]): when the configured root holds
//! no cluster yet and that user cannot traverse its way to it (a clone under
//! `/root`, any 0700 folder), the cluster lives instead in
//! `/var/tmp/ingestd-pg/<hash>/` (0700, owned by that user), where `<hash>`
//! names the canonical configured path: every `ingestd` command, and the
//! tests, given the same configured root compute the same place. `start`
//! says where in one info line; `<hash>/origin` names the configured path. A
//! cluster stays where it was first created: one already in the configured
//! root is run there (else [`EmbeddedError::NotTraversable`] names the
//! directory), one already relocated is found again even if the folder has
//! become traversable since.
//!
//! Lifetime: a server this process started is stopped by [`EmbeddedPg::stop`]
//! or on drop. A server found already running under `root` (another `ingestd`,
//! or one left behind by a SIGKILL) is reused and left running.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// The database `start` creates; the one `ingestd` uses by default.
pub const DEFAULT_DB: &str = "ingestd";

/// Superuser role created by initdb (`-U`), independent of the OS user.
const SUPERUSER: &str = "postgres";
/// OS user that runs the server when we are root and no data dir exists yet.
const SERVER_OS_USER: &str = "postgres";
/// Where Debian/Ubuntu packages put versioned server binaries.
const PKG_LIB_DIR: &str = "/usr/lib/postgresql";
/// Bound on pg_ctl's own wait and on ours for readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A freshly released port can be taken by someone else before the server
/// binds it; then we pick another, this many times in all.
const PORT_ATTEMPTS: usize = 5;
/// How much of a failing command's output or of the log goes into an error.
const TAIL_CHARS: usize = 400;
/// `sizeof(sockaddr_un.sun_path)`: PostgreSQL refuses longer socket paths.
const SUN_PATH_MAX: usize = 108;
/// How long a killed postmaster may stay unreaped before we give up.
const ZOMBIE_WAIT: Duration = Duration::from_secs(10);
/// Where a cluster goes when its configured root is out of the server
/// user's reach (see the module docs): kept across reboots, unlike /tmp.
const STATE_DIR: &str = "/var/tmp/ingestd-pg";
/// A restart on the port a cluster already had: the port may still be
/// held for a moment (another process, a dying postmaster), so wait for it.
const SAME_PORT_ATTEMPTS: usize = 20;
const SAME_PORT_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (searched {searched}): install postgresql \
         (apt-get install postgresql-15) or set database.url / DATABASE_URL"
    )]
    NoBinaries { searched: String },

    #[error(
        "no psql found (searched {searched}): install postgresql-client \
         (apt-get install postgresql-client-15) or set database.url / DATABASE_URL"
    )]
    NoPsql { searched: String },

    #[error(
        "running as root, and OS user `{user}` does not exist to run PostgreSQL: create it \
         (installing the postgresql package does), run as a non-root user, \
         or set database.url / DATABASE_URL"
    )]
    NoServerUser { user: String },

    #[error(
        "{dir} is not traversable by OS user `{user}` (uid {uid}), which runs the embedded \
         PostgreSQL: chmod o+x every parent of the cluster directory, put it elsewhere, \
         or set database.url / DATABASE_URL"
    )]
    NotTraversable { dir: PathBuf, user: String, uid: u32 },

    #[error(
        "{dir} must be a directory owned by root and writable by nobody else, to hold \
         relocated embedded clusters: fix or remove it, or set database.url / DATABASE_URL"
    )]
    UnsafeStateDir { dir: PathBuf },

    #[error(
        "{path} exists but holds no PostgreSQL cluster (no PG_VERSION): move it away \
         so a new cluster can be created there"
    )]
    NotADataDir { path: PathBuf },

    #[error(
        "the cluster in {data} is PostgreSQL {data_version} but the binaries in {bin_dir} are \
         {bin_version}: install postgresql-{data_version}, or remove {data} to start afresh"
    )]
    VersionMismatch { data: PathBuf, data_version: String, bin_dir: PathBuf, bin_version: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{what} failed ({status}): {output}")]
    Command { what: String, status: String, output: String },

    #[error("embedded PostgreSQL did not start: {reason} (see {log}): {tail}")]
    Start { reason: String, log: PathBuf, tail: String },
}

impl EmbeddedError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
        let what = what.into();
        move |source| EmbeddedError::Io { what, source }
    }
}

/// A running PostgreSQL cluster under a root directory; see the module docs.
#[derive(Debug)]
pub struct EmbeddedPg {
    cluster: Cluster,
    /// TCP port on 127.0.0.1: picked afresh by `start`, kept by
    /// `start_again` and `restart_fast` (a client's URL stays valid).
    port: u16,
    /// Only a server we started is ours to stop: a reused one may serve
    /// another process.
    started_here: bool,
    /// Makes `stop` (and so drop after `stop`) idempotent.
    stopped: bool,
}

/// Server settings that differ between uses of a cluster (the daemon's
/// default; a test's small private cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `shared_buffers`, in PostgreSQL's units (`128MB`).
    pub shared_buffers: String,
    /// `max_connections`.
    pub max_connections: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { shared_buffers: "128MB".into(), max_connections: 100 }
    }
}

/// Paths and identity needed to run the PostgreSQL tools on one cluster.
#[derive(Debug, Clone)]
struct Cluster {
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    bin_dir: PathBuf,
    /// Some when we are root: initdb/pg_ctl run as this user instead.
    run_as: Option<OsUser>,
    settings: Settings,
}

#[derive(Debug, Clone)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// Where a configured cluster root lives; see the module docs.
#[derive(Debug, PartialEq)]
enum Location {
    /// The configured root (absolute).
    Configured(PathBuf),
    /// `STATE_DIR/<hash>`: `user` cannot reach the configured root, or
    /// could not when the cluster was made there.
    Relocated { root: PathBuf, user: String, reachable_now: bool },
}

/// The directory the cluster configured at `configured` lives in: that
/// path made absolute, or its place under `/var/tmp/ingestd-pg` when it is
/// out of reach of the OS user that runs PostgreSQL (see the module docs).
/// [`EmbeddedPg::start`] uses the same rule, so this is where it runs it.
pub fn cluster_root(configured: &Path) -> Result<PathBuf, EmbeddedError> {
    let abs = absolute(configured)?;
    Ok(match locate(&abs, Path::new(STATE_DIR))? {
        Location::Configured(root) | Location::Relocated { root, .. } => root,
    })
}

impl EmbeddedPg {
    /// Finds initdb/pg_ctl/postgres: PATH first, then the highest
    /// `/usr/lib/postgresql/*/bin`. A PATH hit that is a symlink (Debian's
    /// wrappers, `/usr/local/bin` links) resolves to the real directory when
    /// that directory holds all three, so psql of the same version is found
    /// beside them.
    pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
        find_bin_dir_in(std::env::var_os("PATH").as_deref(), Path::new(PKG_LIB_DIR))
    }

    /// Ensures a cluster for the configured `root` (see [`cluster_root`]) is
    /// running and holds [`DEFAULT_DB`]: initdb if absent, reuse a server
    /// already running from it, else start one on a free port. Returns once
    /// the server accepts queries.
    pub fn start(root: &Path) -> Result<EmbeddedPg, EmbeddedError> {
        Self::start_with(root, Settings::default())
    }

    /// `start` with other server settings (they apply to a server started
    /// here, not to one reused).
    pub fn start_with(root: &Path, settings: Settings) -> Result<EmbeddedPg, EmbeddedError> {
        Self::start_in(root, settings, Path::new(STATE_DIR))
    }

    /// `start_with`, relocating into `state_dir` (a seam for the tests).
    fn start_in(root: &Path, settings: Settings, state_dir: &Path) -> Result<EmbeddedPg, EmbeddedError> {
        let found_bin_dir = Self::find_bin_dir()?;
        let abs = absolute(root)?;
        let root = match locate(&abs, state_dir)? {
            Location::Configured(abs) => {
                let run_as = server_user(&abs.join("data"))?;
                if let Some(user) = &run_as {
                    // Before creating anything: fail without leaving directories behind.
                    if let Some(existing) = abs.ancestors().find(|p| p.exists()) {
                        check_traversable(&canonical(existing)?, user)?;
                    }
                }
                prepare_root(&abs)?
            }
            Location::Relocated { root, user, reachable_now } => {
                prepare_state_root(&root, &abs)?;
                let why = if reachable_now { "was not" } else { "is not" };
                info!(
                    configured = %abs.display(),
                    cluster = %root.display(),
                    "embedded postgresql cluster relocated: the configured folder {why} traversable by OS user `{user}`"
                );
                root
            }
        };
        let data = root.join("data");
        let run_as = server_user(&data)?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&root, Some(user.uid), Some(user.gid)).map_err(EmbeddedError::io(format!(
                "chown {} to {}",
                root.display(),
                user.name
            )))?;
            check_traversable(&root, user)?;
        }

        // Held until we return: initdb, start and CREATE DATABASE by two
        // processes at once would race on the same files and port.
        let _lock = lock(&root)?;

        let bin_dir = matching_bin_dir(found_bin_dir, &data)?;
        let cluster = Cluster { log: root.join("server.log"), root, data, bin_dir, run_as, settings };

        if let Some(port) = cluster.running_port()? {
            if cluster.wait_ready(port)? {
                info!(root = %cluster.root.display(), port, "reusing running embedded postgresql");
                let pg = EmbeddedPg { cluster, port, started_here: false, stopped: false };
                pg.ensure_database(DEFAULT_DB)?;
                return Ok(pg);
            }
            warn!(root = %cluster.root.display(), "running postgresql exited; starting a new one");
            // Waits out a zombie; removes a pid file the postmaster would refuse.
            if let Some(port) = cluster.running_port()? {
                return Err(EmbeddedError::Start {
                    reason: format!(
                        "another postmaster (port {port}) took over {} meanwhile; try again",
                        cluster.root.display()
                    ),
                    log: cluster.log.clone(),
                    tail: tail(&read_from(&cluster.log, 0)),
                });
            }
        }

        if !cluster.data.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        let port = cluster.start_server()?;
        let mut pg = EmbeddedPg { cluster, port, started_here: true, stopped: false };
        if let Err(e) = pg.await_ready().and_then(|()| pg.ensure_database(DEFAULT_DB)) {
            // Not via drop: that would wait for the lock we still hold.
            if let Err(stop_err) = pg.stop_locked("fast") {
                warn!(error = %stop_err, "could not stop embedded postgresql after a failed start");
            }
            pg.stopped = true;
            return Err(e);
        }
        info!(root = %pg.cluster.root.display(), port, "embedded postgresql started");
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/<db>`; `db` is used verbatim.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Whether this value started the server (and so will stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// The cluster's root directory: the configured one made absolute, or
    /// where it was relocated (see [`cluster_root`]).
    pub fn root(&self) -> &Path {
        &self.cluster.root
    }

    /// The data directory (PGDATA) under [`root`](Self::root).
    pub fn data_dir(&self) -> &Path {
        &self.cluster.data
    }

    /// The server's log so far (`pg_ctl -l`), for diagnostics.
    pub fn server_log(&self) -> String {
        read_from(&self.cluster.log, 0)
    }

    /// Creates database `db` unless it exists (e.g. one per integration test).
    pub fn ensure_database(&self, db: &str) -> Result<(), EmbeddedError> {
        let literal = format!("'{}'", db.replace('\'', "''"));
        let exists = self.psql("postgres", &format!("SELECT 1 FROM pg_database WHERE datname = {literal}"))?;
        if exists.trim() == "1" {
            return Ok(());
        }
        let ident = format!("\"{}\"", db.replace('"', "\"\""));
        match self.psql("postgres", &format!("CREATE DATABASE {ident}")) {
            Ok(_) => {
                info!(db, "created database");
                Ok(())
            }
            // Another process (not holding our lock, e.g. a test) won the race.
            Err(EmbeddedError::Command { output, .. }) if output.contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `pg_ctl stop -m fast`, only if we started the server. Idempotent.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        if !self.started_here || self.stopped {
            return Ok(());
        }
        let _lock = lock(&self.cluster.root)?;
        self.stop_locked("fast")
    }

    /// `pg_ctl stop -m immediate`: the server dies as in a crash, and the
    /// next start recovers from the WAL. Also a server this value reused.
    pub fn crash(&mut self) -> Result<(), EmbeddedError> {
        let _lock = lock(&self.cluster.root)?;
        self.stop_locked("immediate")
    }

    /// Starts the server again after `stop` or `crash`, on the same port.
    /// This value then owns the server (stops it on drop).
    pub fn start_again(&mut self) -> Result<(), EmbeddedError> {
        let _lock = lock(&self.cluster.root)?;
        self.start_locked()
    }

    /// `stop -m fast`, then a start on the same port: sessions are ended
    /// and the server comes back, as `pg_ctl restart -m fast`.
    pub fn restart_fast(&mut self) -> Result<(), EmbeddedError> {
        let _lock = lock(&self.cluster.root)?;
        self.stop_locked("fast")?;
        self.start_locked()
    }

    /// Runs one statement through psql over TCP as the superuser; returns
    /// psql's unaligned, tuples-only output (`|` between columns, a line
    /// per row). One statement per call: ALTER SYSTEM refuses a string of
    /// several.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, EmbeddedError> {
        let psql = find_psql(&self.cluster.bin_dir)?;
        let mut cmd = Command::new(psql);
        scrub_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db, "-c", sql]);
        let out = run(&mut cmd, &format!("psql -c {sql:?}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pg_ctl stop -m <mode>` for a caller that holds the lock.
    fn stop_locked(&mut self, mode: &str) -> Result<(), EmbeddedError> {
        let mut cmd = self.cluster.tool("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.cluster.data).args(["-m", mode, "-w", "-t"]);
        cmd.arg(READY_TIMEOUT.as_secs().to_string());
        if let Err(e) = run(&mut cmd, "pg_ctl stop") {
            // Someone stopped it before us: the goal is reached.
            if self.cluster.running_port()?.is_some() {
                return Err(e);
            }
        }
        self.stopped = true;
        info!(root = %self.cluster.root.display(), port = self.port, mode, "embedded postgresql stopped");
        Ok(())
    }

    /// Starts the stopped server on `self.port`, for a caller that holds
    /// the lock.
    fn start_locked(&mut self) -> Result<(), EmbeddedError> {
        self.port = self.cluster.start_server_on(self.port)?;
        self.started_here = true;
        self.stopped = false;
        self.await_ready()?;
        info!(root = %self.cluster.root.display(), port = self.port, "embedded postgresql started again");
        Ok(())
    }

    /// Waits until the server we just started accepts connections.
    fn await_ready(&self) -> Result<(), EmbeddedError> {
        match self.cluster.wait_ready(self.port)? {
            true => Ok(()),
            false => Err(EmbeddedError::Start {
                reason: "the server exited right after starting".into(),
                log: self.cluster.log.clone(),
                tail: tail(&read_from(&self.cluster.log, 0)),
            }),
        }
    }
}

impl Drop for EmbeddedPg {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!(error = %e, "could not stop embedded postgresql");
        }
    }
}

impl Cluster {
    /// A command for one of the server tools, as the right OS user, with a
    /// clean environment (PG* variables would override our flags) and C
    /// messages (we match on the log's wording).
    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        scrub_env(&mut cmd);
        // The server user may not be able to enter our working directory.
        cmd.current_dir(&self.root);
        if let Some(user) = &self.run_as {
            // Rather than `runuser -u`: no util-linux needed, and std drops
            // supplementary groups (setgroups) before setuid.
            cmd.uid(user.uid).gid(user.gid);
            cmd.env("USER", &user.name).env("LOGNAME", &user.name).env("HOME", &self.root);
        }
        cmd
    }

    /// Port of a postmaster running from our data dir, if one is.
    ///
    /// Not `pg_ctl status`: it only does `kill(pid, 0)`, which also succeeds
    /// for a SIGKILLed postmaster its parent has not reaped yet (a zombie),
    /// and for an unrelated process that got the pid after a reboot.
    fn running_port(&self) -> Result<Option<u16>, EmbeddedError> {
        let deadline = Instant::now() + ZOMBIE_WAIT;
        loop {
            let Some(pid_file) = read_pid_file(&self.data)? else {
                return Ok(None);
            };
            match liveness(pid_file.pid, &self.data) {
                Liveness::Alive if pid_file.port != 0 => return Ok(Some(pid_file.port)),
                // A dead pid in postmaster.pid is handled by the postmaster itself.
                Liveness::Dead => return Ok(None),
                Liveness::Foreign => {
                    // The postmaster would refuse to start, taking this
                    // process for a live postmaster.
                    warn!(pid = pid_file.pid, "removing stale postmaster.pid (pid reused)");
                    let path = self.data.join("postmaster.pid");
                    fs::remove_file(&path).map_err(EmbeddedError::io(format!("remove {}", path.display())))?;
                    return Ok(None);
                }
                // A zombie: the postmaster would refuse to start while its pid
                // exists. Alive without a port: the file is being written.
                Liveness::Zombie | Liveness::Alive if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Liveness::Alive => {
                    return Err(EmbeddedError::Start {
                        reason: format!("postmaster.pid of pid {} names no port", pid_file.pid),
                        log: self.log.clone(),
                        tail: String::new(),
                    });
                }
                Liveness::Zombie => {
                    return Err(EmbeddedError::Start {
                        reason: format!(
                            "the previous postmaster (pid {}) died but its parent has not \
                             reaped it",
                            pid_file.pid
                        ),
                        log: self.log.clone(),
                        tail: String::new(),
                    });
                }
            }
        }
    }

    /// initdb into a scratch directory, then rename it into place: if we die
    /// here, the next start finds no `data/PG_VERSION` and starts over.
    fn initdb(&self) -> Result<(), EmbeddedError> {
        if self.data.exists() {
            return Err(EmbeddedError::NotADataDir { path: self.data.clone() });
        }
        let scratch = self.root.join("data.initdb");
        if scratch.exists() {
            fs::remove_dir_all(&scratch)
                .map_err(EmbeddedError::io(format!("remove leftover {}", scratch.display())))?;
        }
        info!(data = %self.data.display(), "initializing embedded postgresql cluster");
        let mut cmd = self.tool("initdb");
        cmd.arg("-D").arg(&scratch);
        cmd.args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"]);
        run(&mut cmd, "initdb")?;
        fs::rename(&scratch, &self.data).map_err(EmbeddedError::io(format!(
            "rename {} to {}",
            scratch.display(),
            self.data.display()
        )))
    }

    /// `pg_ctl start -w` on a free port, retrying when the port was taken
    /// between our probe and the server's bind.
    fn start_server(&self) -> Result<u16, EmbeddedError> {
        self.start_server_with(&mut free_port, PORT_ATTEMPTS, Duration::ZERO)
    }

    /// `pg_ctl start -w` on `port`, waiting while it is still taken.
    fn start_server_on(&self, port: u16) -> Result<u16, EmbeddedError> {
        self.start_server_with(&mut || Ok(port), SAME_PORT_ATTEMPTS, SAME_PORT_PAUSE)
    }

    /// `pg_ctl start -w` on the port `pick_port` gives, up to `attempts`
    /// times while it is taken, `pause` apart (the picker is a seam for the
    /// clash test).
    fn start_server_with(
        &self,
        pick_port: &mut dyn FnMut() -> io::Result<u16>,
        attempts: usize,
        pause: Duration,
    ) -> Result<u16, EmbeddedError> {
        let socket_dir = self.root.to_string_lossy().into_owned();
        // Too long a path would make the server refuse to start; TCP suffices.
        let socket_dir = if socket_dir.len() + "/.s.PGSQL.65535".len() < SUN_PATH_MAX {
            socket_dir
        } else {
            warn!(root = %socket_dir, "cluster path too long for a unix socket; tcp only");
            String::new()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = pick_port().map_err(EmbeddedError::io("pick a free port on 127.0.0.1"))?;
            // pg_ctl hands -o to /bin/sh, hence the quoting.
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers={} -c max_connections={}",
                sh_quote(&socket_dir),
                sh_quote(&self.settings.shared_buffers),
                self.settings.max_connections
            );
            let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            debug!(port, attempt, "starting embedded postgresql");
            let mut cmd = self.tool("pg_ctl");
            cmd.arg("start").arg("-D").arg(&self.data).arg("-l").arg(&self.log);
            cmd.args(["-w", "-t", &READY_TIMEOUT.as_secs().to_string(), "-o", &opts]);
            let out = output(&mut cmd, "pg_ctl start")?;
            if out.status.success() {
                return Ok(port);
            }
            let log_text = read_from(&self.log, log_start);
            if log_text.contains("Address already in use") && attempt < attempts {
                warn!(port, attempt, "port taken before postgresql could bind it; retrying");
                std::thread::sleep(pause);
                continue;
            }
            let pg_ctl_out = combined(&out);
            return Err(EmbeddedError::Start {
                reason: format!("pg_ctl start exited with {}", out.status),
                log: self.log.clone(),
                tail: tail(&format!("{pg_ctl_out}\n{log_text}")),
            });
        }
    }

    /// Waits until postmaster.pid says "ready" and the port accepts TCP.
    /// `Ok(false)`: the server exited meanwhile.
    fn wait_ready(&self, port: u16) -> Result<bool, EmbeddedError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            let Some(pid_file) = read_pid_file(&self.data)? else {
                return Ok(false);
            };
            if matches!(liveness(pid_file.pid, &self.data), Liveness::Dead | Liveness::Zombie) {
                return Ok(false);
            }
            if pid_file.status.as_deref() == Some("ready")
                && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::Start {
                    reason: format!(
                        "not accepting connections on 127.0.0.1:{port} after {}s (status {:?}); \
                         if postmaster.pid is stale, stop that process or remove the file",
                        READY_TIMEOUT.as_secs(),
                        pid_file.status.unwrap_or_default()
                    ),
                    log: self.log.clone(),
                    tail: tail(&read_from(&self.log, 0)),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The part of `postmaster.pid` we use (one field per line; see
/// `LOCK_FILE_LINE_*` in PostgreSQL's `miscadmin.h`).
struct PidFile {
    pid: i32,
    port: u16,
    /// "starting", "stopping", "ready" or "standby" (PostgreSQL 10+).
    status: Option<String>,
}

fn read_pid_file(data: &Path) -> Result<Option<PidFile>, EmbeddedError> {
    let path = data.join("postmaster.pid");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EmbeddedError::io(format!("read {}", path.display()))(e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let field = |n: usize| lines.get(n).map(|l| l.trim());
    // The postmaster writes the file in steps: a partial one reads as
    // "starting", and an empty one (pid not yet written) as a live pid 0.
    Ok(Some(PidFile {
        pid: field(0).and_then(|l| l.parse().ok()).unwrap_or(0),
        port: field(3).and_then(|l| l.parse().ok()).unwrap_or(0),
        status: Some(field(7).unwrap_or("starting").to_string()),
    }))
}

#[derive(Debug, PartialEq)]
enum Liveness {
    Alive,
    /// Exited, but not yet reaped by its parent: still holds its pid.
    Zombie,
    Dead,
    /// The pid now belongs to another program, or to another cluster.
    Foreign,
}

/// Whether `pid`, read from `data`'s postmaster.pid, is that postmaster.
fn liveness(pid: i32, data: &Path) -> Liveness {
    if pid <= 0 {
        return Liveness::Alive; // not written yet: a postmaster is starting
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "<pid> (<comm>) <state> ...": comm may hold ") ", so split at the last ')'.
        Ok(stat) => {
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return Liveness::Alive;
            };
            let comm = &stat[open + 1..close];
            let state = stat[close + 1..].trim_start().chars().next();
            if state == Some('Z') {
                return Liveness::Zombie;
            }
            if comm != "postgres" && comm != "postmaster" {
                return Liveness::Foreign;
            }
            // The postmaster chdirs into its data dir: tells ours from another
            // cluster's that got the pid. Unreadable unless same user or root.
            match fs::read_link(format!("/proc/{pid}/cwd")) {
                Ok(cwd) if fs::canonicalize(data).is_ok_and(|data| data != cwd) => Liveness::Foreign,
                _ => Liveness::Alive,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && Path::new("/proc/self/stat").exists() => Liveness::Dead,
        // No procfs: what pg_ctl status would say.
        Err(_) => {
            // SAFETY: signal 0 only checks that the pid exists.
            let rc = unsafe { libc::kill(pid, 0) };
            if rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                Liveness::Alive
            } else {
                Liveness::Dead
            }
        }
    }
}

fn find_bin_dir_in(path_var: Option<&std::ffi::OsStr>, lib_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    const TOOLS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
    let has_all = |dir: &Path| TOOLS.iter().all(|t| is_executable(&dir.join(t)));

    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(path_var) {
            if !dir.is_absolute() || !has_all(&dir) {
                continue;
            }
            let real = fs::canonicalize(dir.join("initdb")).ok();
            let real_dir = real.as_deref().and_then(Path::parent);
            return Ok(match real_dir {
                Some(real_dir) if has_all(real_dir) => real_dir.to_path_buf(),
                _ => dir,
            });
        }
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(lib_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            let bin = entry.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| EmbeddedError::NoBinaries { searched: format!("PATH and {}/*/bin", lib_dir.display()) })
}

fn find_psql(bin_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let beside = bin_dir.join("psql");
    if is_executable(&beside) {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_absolute() && is_executable(p))
        .ok_or_else(|| EmbeddedError::NoPsql { searched: format!("{} and PATH", bin_dir.display()) })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An existing cluster must be run by binaries of its own major version:
/// prefer the packaged ones of that version over whatever PATH gave.
fn matching_bin_dir(found: PathBuf, data: &Path) -> Result<PathBuf, EmbeddedError> {
    let Ok(data_version) = fs::read_to_string(data.join("PG_VERSION")) else {
        return Ok(found);
    };
    let data_version = data_version.trim().to_string();
    let bin_version = bin_major_version(&found)?;
    if bin_version == data_version {
        return Ok(found);
    }
    let packaged = Path::new(PKG_LIB_DIR).join(&data_version).join("bin");
    if is_executable(&packaged.join("pg_ctl")) && is_executable(&packaged.join("postgres")) {
        return Ok(packaged);
    }
    Err(EmbeddedError::VersionMismatch { data: data.to_path_buf(), data_version, bin_dir: found, bin_version })
}

/// "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" → "15"; "9.6.24" → "9.6",
/// the form PG_VERSION uses.
fn bin_major_version(bin_dir: &Path) -> Result<String, EmbeddedError> {
    let mut cmd = Command::new(bin_dir.join("pg_ctl"));
    cmd.arg("--version");
    let out = run(&mut cmd, "pg_ctl --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split("(PostgreSQL)").nth(1).and_then(|rest| rest.split_whitespace().next());
    let parts: Vec<&str> = version.unwrap_or_default().split('.').collect();
    match parts.first().and_then(|p| p.parse::<u32>().ok()) {
        Some(major) if major >= 10 => Ok(major.to_string()),
        Some(major) if parts.len() > 1 => Ok(format!("{major}.{}", parts[1])),
        _ => Err(EmbeddedError::Command {
            what: "pg_ctl --version".into(),
            status: "unrecognized output".into(),
            output: tail(&text),
        }),
    }
}

/// Makes `root` exist (new directories 0755, so the server user can pass
/// through them) and returns it canonical. `abs` is absolute.
fn prepare_root(abs: &Path) -> Result<PathBuf, EmbeddedError> {
    let missing: Vec<&Path> = abs.ancestors().take_while(|p| !p.exists()).collect();
    fs::create_dir_all(abs).map_err(EmbeddedError::io(format!("create {}", abs.display())))?;
    for dir in missing {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(EmbeddedError::io(format!("chmod 0755 {}", dir.display())))?;
    }
    fs::canonicalize(abs).map_err(EmbeddedError::io(format!("resolve {}", abs.display())))
}

/// `path` made absolute (not resolved: it may not exist yet).
fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(EmbeddedError::io(format!("resolve {}", path.display())))
}

fn canonical(path: &Path) -> Result<PathBuf, EmbeddedError> {
    fs::canonicalize(path).map_err(EmbeddedError::io(format!("resolve {}", path.display())))
}

/// `abs` with its longest existing ancestor resolved (symlinks, `..`): the
/// same string for the same place whether or not `abs` exists yet.
fn canonical_lenient(abs: &Path) -> Result<PathBuf, EmbeddedError> {
    let existing = abs.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let rest = abs.strip_prefix(existing).unwrap_or(Path::new(""));
    Ok(canonical(existing)?.join(rest))
}

/// Where the cluster configured at `abs` (absolute) lives; see the module
/// docs. Only as root can the server user differ from us; as anyone else the
/// configured root is used as it always was.
fn locate(abs: &Path, state_dir: &Path) -> Result<Location, EmbeddedError> {
    let Some(user) = server_user(&abs.join("data"))? else {
        return Ok(Location::Configured(abs.to_path_buf()));
    };
    // Something is there already (a cluster, or what `start` will report):
    // it stays where it is.
    if abs.join("data").exists() {
        return Ok(Location::Configured(abs.to_path_buf()));
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(canonical_lenient(abs)?.as_os_str().as_encoded_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let relocated = state_dir.join(hash);
    let reachable = match abs.ancestors().find(|p| p.exists()) {
        Some(existing) => check_traversable(&canonical(existing)?, &user).is_ok(),
        None => true,
    };
    Ok(if reachable && !relocated.join("data").exists() {
        Location::Configured(abs.to_path_buf())
    } else {
        Location::Relocated { root: relocated, user: user.name, reachable_now: reachable }
    })
}

/// Makes a relocated cluster root exist: `state_dir` owned by root, 0755
/// (the server user passes through it; nobody else may plant a directory
/// in it), and `root` 0700 with an `origin` file naming the configured
/// path (`start` chowns `root` to the server user).
fn prepare_state_root(root: &Path, configured: &Path) -> Result<(), EmbeddedError> {
    let state_dir = root.parent().expect("a relocated root has a parent");
    if !state_dir.exists() {
        fs::create_dir_all(state_dir).map_err(EmbeddedError::io(format!("create {}", state_dir.display())))?;
        fs::set_permissions(state_dir, fs::Permissions::from_mode(0o755))
            .map_err(EmbeddedError::io(format!("chmod 0755 {}", state_dir.display())))?;
    }
    let meta = fs::symlink_metadata(state_dir).map_err(EmbeddedError::io(format!("stat {}", state_dir.display())))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(EmbeddedError::UnsafeStateDir { dir: state_dir.to_path_buf() });
    }
    if !root.exists() {
        fs::create_dir(root).map_err(EmbeddedError::io(format!("create {}", root.display())))?;
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))
        .map_err(EmbeddedError::io(format!("chmod 0700 {}", root.display())))?;
    let origin = root.join("origin");
    fs::write(&origin, format!("{}\n", configured.display()))
        .map_err(EmbeddedError::io(format!("write {}", origin.display())))
}

/// None when we are not root (the tools run as us). As root: the owner of an
/// existing data dir (the server must run as its owner), else `postgres`.
fn server_user(data: &Path) -> Result<Option<OsUser>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    if let Ok(meta) = fs::metadata(data) {
        if meta.uid() != 0 {
            let name = user_name(meta.uid()).unwrap_or_else(|| format!("uid {}", meta.uid()));
            return Ok(Some(OsUser { name, uid: meta.uid(), gid: meta.gid() }));
        }
    }
    let (uid, gid) =
        lookup_user(SERVER_OS_USER).ok_or_else(|| EmbeddedError::NoServerUser { user: SERVER_OS_USER.into() })?;
    Ok(Some(OsUser { name: SERVER_OS_USER.into(), uid, gid }))
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids);
        // getpwnam_r only writes into `pwd` and `buf`, whose size we pass.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid));
    }
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: as in `lookup_user`; pw_name points into `buf` when found.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// Mode bits only (no ACLs): every directory from `/` down to `root` must
/// grant search permission to `user`, with its primary group (std drops
/// supplementary groups when switching user).
fn check_traversable(root: &Path, user: &OsUser) -> Result<(), EmbeddedError> {
    let mut dirs: Vec<&Path> = root.ancestors().collect();
    dirs.reverse();
    for dir in dirs {
        let meta = fs::metadata(dir).map_err(EmbeddedError::io(format!("stat {}", dir.display())))?;
        let mode = meta.mode();
        let bit = if meta.uid() == user.uid {
            0o100
        } else if meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(EmbeddedError::NotTraversable {
                dir: dir.to_path_buf(),
                user: user.name.clone(),
                uid: user.uid,
            });
        }
    }
    Ok(())
}

/// Exclusive flock on `root/.lock`, released when the file is dropped. The
/// fd is close-on-exec (std's default), so the server never inherits it.
fn lock(root: &Path) -> Result<File, EmbeddedError> {
    let path = root.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        // A lock file made by another user: read access is enough for flock.
        .or_else(|_| File::open(&path))
        .map_err(EmbeddedError::io(format!("open {}", path.display())))?;
    // std's file locks are flock(2) on Unix, the lock the tests' cluster
    // manager and concurrent starts agree on.
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(EmbeddedError::io(format!("lock {}", path.display()))(e)),
    }
    info!(lock = %path.display(), "waiting for another process to finish starting the embedded postgresql");
    loop {
        match file.lock() {
            Ok(()) => return Ok(file),
            // A signal arrived while waiting: wait again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EmbeddedError::io(format!("lock {}", path.display()))(e)),
        }
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Removes PG* variables (PGPORT, PGDATA, PGOPTIONS… would override or add
/// to our flags) and makes messages English, which we match on.
fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C").env("LANG", "C").env_remove("LANGUAGE");
    cmd.stdin(Stdio::null());
}

fn output(cmd: &mut Command, what: &str) -> Result<Output, EmbeddedError> {
    debug!(command = ?cmd, "running");
    cmd.output().map_err(EmbeddedError::io(format!("run {what} ({})", cmd.get_program().to_string_lossy())))
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, EmbeddedError> {
    let out = output(cmd, what)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_error(what, &out))
    }
}

fn command_error(what: &str, out: &Output) -> EmbeddedError {
    EmbeddedError::Command { what: what.into(), status: out.status.to_string(), output: tail(&combined(out)) }
}

fn combined(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The end of `text` on one line: errors must stay one line.
fn tail(text: &str) -> String {
    let joined = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
    if joined.len() <= TAIL_CHARS {
        return joined;
    }
    let mut start = joined.len() - TAIL_CHARS;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &joined[start..])
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir the `postgres` OS user can enter when we run as root.
    fn tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("create temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        dir
    }

    fn sql(pg: &EmbeddedPg, sql: &str) -> String {
        pg.psql(DEFAULT_DB, sql).expect("psql").trim().to_string()
    }

    fn accepts_tcp(port: u16) -> bool {
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(1)).is_ok()
    }

    #[test]
    fn start_reuse_stop_restart() {
        let dir = tempdir();
        let root = dir.path().join("nested/pg");

        let mut first = EmbeddedPg::start(&root).expect("first start");
        assert!(first.started_here());
        assert_eq!(first.url(DEFAULT_DB), format!("postgres://postgres@127.0.0.1:{}/ingestd", first.port()));
        assert_eq!(sql(&first, "SELECT current_database()"), "ingestd");
        sql(&first, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)");
        assert_eq!(sql(&first, "SHOW shared_buffers"), "128MB");
        assert_eq!(sql(&first, "SHOW fsync"), "on");
        assert_eq!(sql(&first, "SHOW listen_addresses"), "127.0.0.1");
        let mode = fs::metadata(dir.path().join("nested")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "created parents are 0755");

        // The unix socket lives in root too.
        let socket = Command::new(find_psql(&first.cluster.bin_dir).unwrap())
            .args(["-X", "-A", "-t", "-h"])
            .arg(first.root())
            .args(["-p", &first.port().to_string(), "-U", "postgres", "-d", "ingestd", "-c", "SELECT 7"])
            .output()
            .expect("psql over the unix socket");
        assert!(socket.status.success(), "{}", String::from_utf8_lossy(&socket.stderr));
        assert_eq!(String::from_utf8_lossy(&socket.stdout).trim(), "7");

        let mut second = EmbeddedPg::start(&root).expect("second start reuses");
        assert!(!second.started_here());
        assert_eq!(second.port(), first.port());
        second.stop().expect("stop of a reused server is a no-op");
        drop(second);
        assert!(accepts_tcp(first.port()), "a reused server is left running");

        first.stop().expect("stop");
        first.stop().expect("stop is idempotent");
        assert!(!accepts_tcp(first.port()));
        assert!(!root.join("data/postmaster.pid").exists());

        let restarted = EmbeddedPg::start(&root).expect("restart from existing data");
        assert!(restarted.started_here());
        assert_eq!(sql(&restarted, "SELECT v FROM kept"), "42");
        restarted.ensure_database("it_one").expect("ensure_database");
        restarted.ensure_database("it_one").expect("ensure_database twice");
        assert_eq!(restarted.psql("it_one", "SELECT current_database()").unwrap().trim(), "it_one");
        let port = restarted.port();
        drop(restarted);
        assert!(!accepts_tcp(port), "drop stops a server we started");
    }

    #[test]
    fn restarts_after_the_postmaster_is_killed() {
        let dir = tempdir();
        let root = dir.path().join("pg");
        let first = EmbeddedPg::start(&root).expect("first start");
        sql(&first, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (1)");
        let pid = read_pid_file(&root.join("data")).unwrap().unwrap().pid;
        // SAFETY: sends a signal to the postmaster we just started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        drop(first); // its stop finds nothing to stop

        let again = EmbeddedPg::start(&root).expect("start over a stale postmaster.pid");
        assert!(again.started_here());
        assert_eq!(sql(&again, "SELECT v FROM kept"), "1", "committed data survives");
    }

    #[test]
    fn a_port_taken_before_the_server_binds_it_is_retried() {
        let dir = tempdir();
        let mut pg = EmbeddedPg::start(&dir.path().join("pg")).expect("start");
        pg.stop().expect("stop");

        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut picks = 0;
        let mut pick = || {
            picks += 1;
            if picks == 1 {
                Ok(taken_port)
            } else {
                free_port()
            }
        };
        let port =
            pg.cluster.start_server_with(&mut pick, PORT_ATTEMPTS, Duration::ZERO).expect("retried on another port");
        assert_eq!(picks, 2);
        assert_ne!(port, taken_port);
        // Hand the server back to an owner that stops it on drop.
        let restarted = EmbeddedPg { cluster: pg.cluster.clone(), port, started_here: true, stopped: false };
        assert!(restarted.cluster.wait_ready(port).unwrap());
        assert_eq!(sql(&restarted, "SELECT 1"), "1");
    }

    #[test]
    fn a_pid_file_naming_another_program_is_stale() {
        let dir = tempdir();
        let root = dir.path().join("pg");
        let mut pg = EmbeddedPg::start(&root).expect("start");
        let pid_path = root.join("data/postmaster.pid");
        let pid_file = fs::read_to_string(&pid_path).unwrap();
        pg.stop().expect("stop");

        // As after a reboot: the recorded pid now runs something else.
        let mut other = Command::new("sleep").arg("60").spawn().unwrap();
        let (_, rest) = pid_file.split_once('\n').unwrap();
        fs::write(&pid_path, format!("{}\n{rest}", other.id())).unwrap();

        let again = EmbeddedPg::start(&root);
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(again.expect("start over a reused pid").started_here());
    }

    #[test]
    fn concurrent_starts_share_one_cluster() {
        let dir = tempdir();
        let root = dir.path().join("pg");
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || EmbeddedPg::start(&root))
            })
            .collect();
        let mut pgs: Vec<EmbeddedPg> = handles.into_iter().map(|h| h.join().unwrap().expect("start")).collect();
        assert_eq!(pgs[0].port(), pgs[1].port());
        assert_eq!(pgs.iter().filter(|pg| pg.started_here()).count(), 1);
        assert_eq!(sql(&pgs[0], "SELECT count(*) FROM pg_database WHERE datname = 'ingestd'"), "1");
        // Stop the owner last so the other's checks above ran against a live server.
        pgs.sort_by_key(|pg| pg.started_here());
        let port = pgs[0].port();
        drop(pgs);
        assert!(!accepts_tcp(port));
    }

    #[test]
    fn crash_start_again_and_restart_fast_keep_the_port_and_the_data() {
        let dir = tempdir();
        let settings = Settings { shared_buffers: "32MB".into(), max_connections: 20 };
        let mut pg = EmbeddedPg::start_with(&dir.path().join("pg"), settings).expect("start");
        assert_eq!(sql(&pg, "SHOW shared_buffers"), "32MB");
        assert_eq!(sql(&pg, "SHOW max_connections"), "20");
        assert_eq!(pg.data_dir(), pg.root().join("data"));
        let port = pg.port();
        sql(&pg, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (3)");

        pg.crash().expect("crash");
        assert!(!accepts_tcp(port), "down after a crash");
        pg.start_again().expect("start again");
        assert_eq!(pg.port(), port);
        assert_eq!(sql(&pg, "SELECT v FROM kept"), "3", "committed data survives a crash");
        assert!(pg.server_log().contains("database system was interrupted"), "{}", pg.server_log());

        let backend = sql(&pg, "SELECT pg_backend_pid()");
        pg.restart_fast().expect("restart");
        assert_eq!(pg.port(), port);
        assert_ne!(sql(&pg, "SELECT pg_backend_pid()"), backend);
        assert_eq!(sql(&pg, "SHOW max_connections"), "20", "settings kept across restarts");
        assert_eq!(pg.psql(DEFAULT_DB, "SELECT 1, NULL, 'a'").unwrap(), "1||a\n");

        pg.stop().expect("stop");
        pg.start_again().expect("start again after stop");
        assert!(pg.started_here());
        drop(pg);
        assert!(!accepts_tcp(port), "drop stops a server started again");
    }

    /// Fails unless we are root; (a dir for the state folder, a 0700 dir
    /// the `postgres` user cannot enter).
    fn as_root_with_a_private_dir() -> (tempfile::TempDir, tempfile::TempDir) {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root: run as root (CI does)");
        // tempfile 3.27 makes 0777 & !umask dirs; ask for a private one.
        let private = tempfile::Builder::new().permissions(fs::Permissions::from_mode(0o700)).tempdir().unwrap();
        (tempdir(), private)
    }

    /// As root: a cluster root the server user cannot reach goes to the
    /// state folder, under the same name every time, and stays there.
    #[test]
    #[ignore = "needs root: the server runs as OS user postgres"]
    fn a_root_out_of_reach_is_relocated_and_found_again() {
        let (state, private) = as_root_with_a_private_dir();
        let state_dir = state.path().join("ingestd-pg");
        let configured = private.path().join("data/pg");
        let abs = absolute(&configured).unwrap();

        let mut pg = EmbeddedPg::start_in(&configured, Settings::default(), &state_dir).expect("relocated start");
        let root = pg.root().to_path_buf();
        assert_eq!(root.parent(), Some(state_dir.as_path()));
        assert_eq!(
            locate(&abs, &state_dir).unwrap(),
            Location::Relocated { root: root.clone(), user: "postgres".into(), reachable_now: false }
        );
        let meta = fs::metadata(&root).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), lookup_user("postgres").unwrap().0);
        assert_eq!(fs::metadata(&state_dir).unwrap().mode() & 0o777, 0o755);
        assert_eq!(fs::read_to_string(root.join("origin")).unwrap(), format!("{}\n", abs.display()));
        assert!(!private.path().join("data").exists(), "nothing created in the unreachable folder");
        sql(&pg, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (5)");
        pg.stop().unwrap();
        drop(pg);

        // Reachable now: the cluster is found where it was made.
        fs::set_permissions(private.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let want = Location::Relocated { root: root.clone(), user: "postgres".into(), reachable_now: true };
        assert_eq!(locate(&abs, &state_dir).unwrap(), want);
        let again = EmbeddedPg::start_in(&configured, Settings::default(), &state_dir).expect("second start");
        assert_eq!(again.root(), root);
        assert_eq!(sql(&again, "SELECT v FROM kept"), "5");
        drop(again);

        // A state folder others could write to is refused.
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let other = tempfile::Builder::new().permissions(fs::Permissions::from_mode(0o700)).tempdir().unwrap();
        let err = EmbeddedPg::start_in(&other.path().join("pg"), Settings::default(), &state_dir).unwrap_err();
        assert!(matches!(err, EmbeddedError::UnsafeStateDir { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));
    }

    /// As root: something already in a configured root out of reach is not
    /// abandoned for a new cluster elsewhere: the error names the folder.
    #[test]
    #[ignore = "needs root: the server runs as OS user postgres"]
    fn an_existing_cluster_out_of_reach_is_reported_not_moved() {
        let (state, private) = as_root_with_a_private_dir();
        let state_dir = state.path().join("ingestd-pg");
        fs::create_dir_all(private.path().join("pg/data")).unwrap();
        let err = EmbeddedPg::start_in(&private.path().join("pg"), Settings::default(), &state_dir)
            .expect_err("postgres cannot enter a 0700 dir");
        match &err {
            EmbeddedError::NotTraversable { dir, user, .. } => {
                assert_eq!(dir, &fs::canonicalize(private.path()).unwrap());
                assert_eq!(user, "postgres");
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(!err.to_string().contains('\n'));
        assert!(!state_dir.exists(), "nothing relocated");
    }

    #[test]
    fn bin_dir_search_prefers_path_then_highest_version() {
        let dir = tempdir();
        let make = |rel: &str| {
            let bin = dir.path().join(rel);
            fs::create_dir_all(&bin).unwrap();
            for tool in ["initdb", "pg_ctl", "postgres"] {
                fs::write(bin.join(tool), "#!/bin/sh\n").unwrap();
                fs::set_permissions(bin.join(tool), fs::Permissions::from_mode(0o755)).unwrap();
            }
            bin
        };
        let lib = dir.path().join("lib");
        make("lib/9.6/bin");
        let v16 = make("lib/16/bin");
        make("lib/15/bin");
        fs::create_dir_all(lib.join("17/bin")).unwrap(); // no binaries: skipped
        fs::create_dir_all(lib.join("common")).unwrap(); // not a version: skipped

        assert_eq!(find_bin_dir_in(None, &lib).unwrap(), v16);

        let on_path = make("custom/bin");
        let empty = dir.path().join("empty");
        let path_var = std::env::join_paths([&empty, &on_path]).unwrap();
        assert_eq!(find_bin_dir_in(Some(&path_var), &lib).unwrap(), on_path);

        // Symlinks on PATH resolve to the directory holding the real binaries.
        let links = dir.path().join("links");
        fs::create_dir_all(&links).unwrap();
        for tool in ["initdb", "pg_ctl", "postgres"] {
            std::os::unix::fs::symlink(v16.join(tool), links.join(tool)).unwrap();
        }
        let path_var = std::env::join_paths([&links]).unwrap();
        assert_eq!(find_bin_dir_in(Some(&path_var), &lib).unwrap(), fs::canonicalize(&v16).unwrap());

        let err = find_bin_dir_in(None, &empty).unwrap_err();
        assert!(matches!(err, EmbeddedError::NoBinaries { .. }));
        assert!(err.to_string().contains("apt-get install postgresql-15"), "{err}");
    }

    #[test]
    fn tail_is_one_line_and_bounded() {
        assert_eq!(tail("a\n\n  b  \n"), "a | b");
        let long = "é".repeat(TAIL_CHARS);
        let t = tail(&long);
        assert!(t.starts_with('…') && !t.contains('\n'));
        assert!(t.len() <= TAIL_CHARS + '…'.len_utf8());
    }

    #[test]
    fn sh_quote_survives_the_shell() {
        for s in ["plain", "with space", "it's", ""] {
            let out = Command::new("/bin/sh").arg("-c").arg(format!("printf %s {}", sh_quote(s))).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }
}
