//! Test-only fault injection, compiled into debug builds only (the test
//! suite's binary); release builds have none of it.
//!
//! `INGESTD_FAILPOINTS` holds `;`-separated entries:
//! - `panic_user=VALUE`: the Validator panics on a row whose raw text
//!   contains VALUE (a poison row).
//! - `panic_once=VALUE`: the same, but only the first time in this process
//!   (a transient failure that a restart cures).
//! - `exit_at=NAME:FILE`: the process exits with code 99 when it reaches
//!   point NAME for a file whose name contains FILE. Points, in the order a
//!   file meets them: `parser_batch` (a batch is read), `writer_batch` (a
//!   transaction starts), `before_commit` (COPY and checkpoint done, COMMIT
//!   not sent), `after_commit`, `before_disk_work` (file marked done; no
//!   rejects file, no move yet), `before_move` (rejects file written).
//! - `sleep_at=NAME:MS`: sleeps MS milliseconds at point NAME (only
//!   `parser_batch` runs on a thread that may block).
//! - `fail_once=NAME:FILE`: the first time point NAME is reached for a file
//!   whose name contains FILE, the operation reports a failure. Point
//!   `lost_commit_ack`: a batch's COMMIT succeeded but the Writer is told
//!   the connection failed (an ambiguous commit).

#[cfg(debug_assertions)]
fn entries() -> &'static [(String, String)] {
    use std::sync::OnceLock;
    static ENTRIES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        std::env::var("INGESTD_FAILPOINTS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    })
}

/// A named point on the path of a file.
#[inline]
pub fn hit(_point: &str, _file: &str) {
    #[cfg(debug_assertions)]
    for (k, v) in entries() {
        match k.as_str() {
            "exit_at" => {
                if let Some((p, f)) = v.split_once(':') {
                    if p == _point && _file.contains(f) {
                        tracing::warn!(point = _point, file = _file, "failpoint: exiting");
                        std::process::exit(99);
                    }
                }
            }
            "sleep_at" => {
                if let Some((p, ms)) = v.split_once(':') {
                    if p == _point {
                        std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a `fail_once` entry fires here (once per process).
#[inline]
pub fn fail_once(_point: &str, _file: &str) -> bool {
    #[cfg(debug_assertions)]
    for (k, v) in entries() {
        if k == "fail_once" {
            if let Some((p, f)) = v.split_once(':') {
                if p == _point && _file.contains(f) {
                    use std::sync::atomic::{AtomicBool, Ordering};
                    static FIRED: AtomicBool = AtomicBool::new(false);
                    if !FIRED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(point = _point, file = _file, "failpoint: failing once");
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// Called by the Validator for each row.
#[inline]
pub fn hit_row(_raw: &[u8], _line: u64) {
    #[cfg(debug_assertions)]
    for (k, v) in entries() {
        let matches = !v.is_empty() && _raw.windows(v.len()).any(|w| w == v.as_bytes());
        if k == "panic_user" && matches {
            panic!("failpoint: poison row at line {}", _line);
        }
        if k == "panic_once" && matches {
            use std::sync::atomic::{AtomicBool, Ordering};
            static FIRED: AtomicBool = AtomicBool::new(false);
            if !FIRED.swap(true, Ordering::Relaxed) {
                panic!("failpoint: transient failure at line {}", _line);
            }
        }
    }
}
