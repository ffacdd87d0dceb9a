//! Shared liveness and readiness flags, read by `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    db_ok: AtomicBool,
    running: AtomicBool,
}

impl Health {
    pub fn set_db_ok(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Relaxed);
    }
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }
    /// Ready: the database answered the last time it was asked and the
    /// pipeline is running (not restarting, not draining).
    pub fn ready(&self) -> bool {
        self.db_ok.load(Ordering::Relaxed) && self.running.load(Ordering::Relaxed)
    }
}
