//! The network between the daemon and PostgreSQL (faults.md P6, P7): both
//! run in one network namespace of the test's own, where an iptables rule
//! on the server's port drops every packet (a blackhole) or answers each
//! with a TCP reset, mid-run. The daemon must notice, retry, and end exactly
//! once the rule is gone.

use std::time::{Duration, Instant};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(60);
const FILES: u64 = 4;
const ROWS: u64 = 1_500;

/// A run in a namespace: the daemon running `--until-idle` inside it once
/// rows were committed, its folders and files, the cluster running inside
/// it, and the namespace. Dropped in that order (fields drop in declaration
/// order): the daemon is killed, then the cluster, then the namespace.
struct NsRun {
    child: Running,
    started: Instant,
    names: Vec<String>,
    d: Daemon,
    pg: TestCluster,
    ns: NetNs,
}

impl NsRun {
    /// Files `<prefix>0.csv`… of `ROWS` valid rows, a daemon reading them
    /// slowly (small batches, a pause per batch) so that the fault lands
    /// mid-run, `configure`d further by the test.
    fn start(tag: &str, prefix: &str, configure: impl FnOnce(&mut Daemon)) -> NsRun {
        let ns = NetNs::new(&format!("ingestd_it_{tag}_{}", std::process::id()));
        // The cluster is restarted from a thread inside the namespace, on
        // the same port: its server then listens on the namespace's loopback.
        let mut pg = TestCluster::new();
        pg.stop();
        ns.within(|| pg.start());
        let names: Vec<String> = (0..FILES).map(|i| format!("{prefix}{i}.csv")).collect();
        let mut d = Daemon::new(&pg.db());
        d.set("INGESTD_FAILPOINTS", "sleep_at=parser_batch:20").set("INGESTD_PIPELINE__BATCH_ROWS", "20");
        configure(&mut d);
        for (i, name) in names.iter().enumerate() {
            d.drop_file(name, valid_file(1 + i as u64 * ROWS, ROWS).as_bytes());
        }
        let started = Instant::now();
        let child = Running(d.spawn_via(&ns.prefix(), &["--until-idle"]));
        let mut run = NsRun { child, started, names, d, pg, ns };
        wait_until(LIMIT, "rows committed", || {
            assert!(run.child.try_wait().unwrap().is_none(), "the daemon exited early; log:\n{}", run.d.log());
            committed_in(&run.ns, &run.pg) > 0
        });
        run
    }

    fn committed(&self) -> i64 {
        committed_in(&self.ns, &self.pg)
    }

    /// The server's port, for an iptables rule.
    fn port(&self) -> String {
        self.pg.port().to_string()
    }

    /// After the fault (`before` rows were committed when it began): the
    /// run ends by itself with 0, the daemon warned with `warning`, and
    /// every file is written exactly once and moved (asked from inside the
    /// namespace).
    fn finish(mut self, test: &str, fault: &str, before: i64, warning: &str) {
        let status = wait_exit(&mut self.child, LIMIT).unwrap_or_else(|| {
            let db = self.pg.db();
            let sessions = self.ns.within(|| server_sessions(&db));
            panic!("not idle within {LIMIT:?}; server sessions:\n{sessions}\nlog:\n{}", self.d.log())
        });
        println!(
            "{test}: {before} of {} rows committed before the {fault}; run ended {status:?} after {:?}",
            FILES * ROWS,
            self.started.elapsed()
        );
        assert!(status.success(), "{status:?}; log:\n{}", self.d.log());
        let log = self.d.log();
        for line in log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
            println!("{test}: daemon: {line}");
        }
        assert!(
            log.lines().any(|l| l.contains("WARN") && l.contains(warning)),
            "no {warning:?} warning in the log:\n{log}"
        );
        assert!(before < (FILES * ROWS) as i64, "the run ended before the {fault}");
        let db = self.pg.db();
        self.ns.within(|| assert_all_written_once(&db, &self.d, &self.names, ROWS as i64));
    }
}

/// Rows committed so far, asked from inside the namespace.
fn committed_in(ns: &NetNs, pg: &TestCluster) -> i64 {
    let db = pg.db();
    ns.within(|| if db.has_schema() { db.committed_rows() } else { 0 })
}

/// P6: PostgreSQL and the daemon in one network namespace; mid-run every
/// packet to the server's port is dropped for 5 s (no RST, no FIN: the
/// connections just go silent). The batch timeout (2 s) detects it, the
/// batches are retried, and once the packets flow again the run ends
/// exactly once.
#[test]
#[ignore = "needs root: network namespace and iptables"]
fn network_blackhole_detected_by_batch_timeout() {
    const TEST: &str = "network_blackhole_detected_by_batch_timeout";
    require_root("ip netns, iptables");
    require_tool("iptables", &["--version"], "iptables");
    let mut run = NsRun::start("p6", "p", |d| {
        d.set("INGESTD_DATABASE__BATCH_TIMEOUT_SECS", "2");
    });
    let before = run.committed();
    let port = run.port();
    let mut rule = Rule::append(&run.ns, &["INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(run.child.try_wait().unwrap().is_none(), "the daemon exited during the blackhole; log:\n{}", run.d.log());
    rule.delete();
    drop(rule);
    run.finish(TEST, "blackhole", before, "no answer within 2s");
}

/// P7: PostgreSQL and the daemon in one network namespace; mid-run every
/// packet to the server's port is answered with a TCP reset for 3 s (open
/// connections are reset at their next packet, new ones refused at once).
/// The writer gets immediate connection errors (no timeout involved),
/// retries, and once the rule is gone the run ends exactly once.
#[test]
#[ignore = "needs root: network namespace and iptables"]
fn connection_reset_mid_run_is_retried() {
    const TEST: &str = "connection_reset_mid_run_is_retried";
    require_root("ip netns, iptables");
    require_tool("iptables", &["--version"], "iptables");
    let mut run = NsRun::start("p7", "r", |_| {});
    let before = run.committed();
    let port = run.port();
    let mut rule =
        Rule::append(&run.ns, &["INPUT", "-p", "tcp", "--dport", &port, "-j", "REJECT", "--reject-with", "tcp-reset"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(run.child.try_wait().unwrap().is_none(), "the daemon exited during the resets; log:\n{}", run.d.log());
    rule.delete();
    drop(rule);
    run.finish(TEST, "resets", before, "batch not committed; retrying");
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
