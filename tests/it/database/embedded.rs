//! The embedded default: with no database URL the daemon runs its own
//! PostgreSQL cluster (`paths.pg_data`), and `migrate` and `status` use the
//! same one.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Removes a relocated cluster's folder when the test ends (its server is
/// stopped by then: the daemon and `status` stop what they started).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// As root with `paths.pg_data` inside a 0700 folder (as a clone under
/// /root is), which the `postgres` OS user cannot traverse: the daemon
/// starts anyway, its cluster under /var/tmp/ingestd-pg/<hash>/ (0700,
/// owned by postgres, `origin` naming the configured path) and says so in
/// one log line; it ingests a file; `status` finds the same cluster (the
/// file is there) and `migrate` too; nothing is created in the private
/// folder.
#[test]
#[ignore = "needs root: the embedded PostgreSQL runs as OS user postgres"]
fn embedded_cluster_behind_a_private_folder_is_relocated_and_found_by_status() {
    require_root("the embedded PostgreSQL runs as OS user postgres");
    let private = tempfile::Builder::new().permissions(std::fs::Permissions::from_mode(0o700)).tempdir().unwrap();
    let pg_data = private.path().join("data/pg");
    let cluster = ingestd::db::embedded::cluster_root(&pg_data).unwrap();
    let _remove = RemoveDir(cluster.clone());
    assert_eq!(cluster.parent(), Some(std::path::Path::new("/var/tmp/ingestd-pg")), "{}", cluster.display());
    assert!(!path_exists(&cluster), "{} exists before the test", cluster.display());

    let mut d = Daemon::embedded();
    d.set("INGESTD_PATHS__PG_DATA", path_str(&pg_data));
    d.drop_file("a.csv", valid_file(1, 50).as_bytes());
    let status = d.run_until_idle(LIMIT);
    assert!(status.success(), "{status:?}; log:\n{}", d.log());
    let log = d.log();
    let relocated: Vec<&str> = log.lines().filter(|l| l.contains("embedded postgresql cluster relocated")).collect();
    assert_eq!(relocated.len(), 1, "one log line says where the cluster is; log:\n{log}");
    assert!(relocated[0].contains(path_str(&cluster)), "{}", relocated[0]);
    assert!(path_exists(&d.processed().join("a.csv")), "a.csv not ingested; log:\n{log}");
    assert!(!path_exists(&private.path().join("data")), "something was created in the private folder");

    let meta = std::fs::metadata(&cluster).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700, "{}", cluster.display());
    let postgres_uid = {
        let out = std::process::Command::new("id").args(["-u", "postgres"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    };
    assert_eq!(meta.uid(), postgres_uid, "{}", cluster.display());
    let origin = std::fs::read_to_string(cluster.join("origin")).unwrap();
    assert_eq!(origin.trim_end(), path_str(&pg_data));

    // `status` (and `migrate`) run the same rule: the same cluster, with
    // the file the daemon ingested.
    let (status, out, err) = d.output(&["status", "--json"]);
    assert!(status.success(), "{err}");
    assert!(err.contains(path_str(&cluster)), "status used another cluster:\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{out}");
    assert_eq!(
        (files[0]["file"].as_str(), files[0]["state"].as_str(), files[0]["rows_written"].as_i64()),
        (Some("a.csv"), Some("done"), Some(50)),
        "{out}"
    );
    let (status, _, err) = d.output(&["migrate"]);
    assert!(status.success(), "{err}");
    assert!(err.contains(path_str(&cluster)), "migrate used another cluster:\n{err}");
    assert!(!path_exists(&private.path().join("data")), "something was created in the private folder");
}
