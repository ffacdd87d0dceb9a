//! Shared liveness and readiness flags, read by `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct Health {
    db_ok: AtomicBool,
    /// Per pipeline (in the order the daemon runs them): its data path runs.
    running: Vec<AtomicBool>,
}

impl Health {
    pub fn new(pipelines: usize) -> Health {
        Health { db_ok: AtomicBool::new(false), running: (0..pipelines).map(|_| AtomicBool::new(false)).collect() }
    }

    pub fn set_db_ok(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Relaxed);
    }

    pub fn set_running(&self, pipeline: usize, running: bool) {
        if let Some(r) = self.running.get(pipeline) {
            r.store(running, Ordering::Relaxed);
        }
    }

    pub fn running(&self, pipeline: usize) -> bool {
        self.running.get(pipeline).is_some_and(|r| r.load(Ordering::Relaxed))
    }

    pub fn db_ok(&self) -> bool {
        self.db_ok.load(Ordering::Relaxed)
    }

    /// Ready: the database answered the last time it was asked and every
    /// pipeline is running (not restarting, draining, on standby or given
    /// up).
    pub fn ready(&self) -> bool {
        self.db_ok() && !self.running.is_empty() && self.running.iter().all(|r| r.load(Ordering::Relaxed))
    }
}
