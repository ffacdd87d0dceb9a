//! The credit window: what bounds memory. A batch read but not yet
//! committed holds a share of the window; a Parser reads only while it can
//! take a full batch's share; the share returns when the batch is dropped,
//! after its commit (dropping it is the ack). Mailboxes cannot do this:
//! actix's `send()` never waits for room.
//!
//! One window covers every pipeline of the daemon (`batches_in_flight` full
//! batches in all), and each pipeline may hold all of it but one batch's
//! share per other pipeline, so a stalled pipeline (its table locked)
//! cannot starve the others.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Credit units one full batch costs. A batch costs its share of a full
/// batch, by rows or by bytes, whichever is larger, so many small files can
/// be in flight at once under the same memory bound.
pub const CREDIT_UNITS: usize = 1000;

/// The units a batch of `rows` rows and `bytes` bytes costs: its share of
/// a full batch, by rows or by bytes, whichever is larger (at least one, at
/// most a full batch).
pub fn units(rows: usize, batch_rows: usize, bytes: usize, batch_bytes: usize) -> usize {
    let by_rows = rows.saturating_mul(CREDIT_UNITS).div_ceil(batch_rows.max(1));
    let by_bytes = bytes.saturating_mul(CREDIT_UNITS).div_ceil(batch_bytes.max(1));
    by_rows.max(by_bytes).clamp(1, CREDIT_UNITS)
}

/// The daemon's window, shared by its pipelines.
#[derive(Debug, Clone)]
pub struct Window {
    global: Arc<Semaphore>,
    batches: usize,
    pipelines: usize,
}

impl Window {
    /// `batches` full batches in flight at most, over `pipelines` pipelines.
    pub fn new(batches: usize, pipelines: usize) -> Window {
        let batches = batches.max(1);
        Window { global: Arc::new(Semaphore::new(batches * CREDIT_UNITS)), batches, pipelines: pipelines.max(1) }
    }

    /// A pipeline's access to the window. Each call makes a fresh one (a
    /// restarted data path starts with all its credits back).
    pub fn for_pipeline(&self) -> Credits {
        // All of it but one batch per other pipeline, and never less than
        // one batch.
        let own = self.batches.saturating_sub(self.pipelines - 1).max(1) * CREDIT_UNITS;
        Credits { global: self.global.clone(), own: Arc::new(Semaphore::new(own)), own_units: own }
    }
}

/// One pipeline's credits: its own cap, then the shared window.
#[derive(Debug, Clone)]
pub struct Credits {
    global: Arc<Semaphore>,
    own: Arc<Semaphore>,
    own_units: usize,
}

impl Credits {
    /// A full batch's credit for a read step; `None` once closed (the data
    /// path stopped).
    pub async fn step(&self) -> Option<StepCredit> {
        let own = self.own.clone().acquire_many_owned(CREDIT_UNITS as u32).await.ok()?;
        let global = self.global.clone().acquire_many_owned(CREDIT_UNITS as u32).await.ok()?;
        Some(StepCredit { own, global })
    }

    /// Every credit of this pipeline is back: nothing read is uncommitted.
    pub fn all_back(&self) -> bool {
        self.own.available_permits() == self.own_units
    }

    /// Units out (read, not committed).
    pub fn out(&self) -> usize {
        self.own_units - self.own.available_permits()
    }

    /// Resolves once every credit is back (or the credits are closed): the
    /// drain's "every batch in flight is committed", signalled by the last
    /// batch dropped rather than polled.
    pub async fn drained(&self) {
        if let Ok(all) = self.own.acquire_many(self.own_units as u32).await {
            drop(all);
        }
    }

    /// Stops every waiting and future `step`: the data path is stopped and
    /// its batches are abandoned (their credits return to a window nobody
    /// uses any more).
    pub fn close(&self) {
        self.own.close();
    }
}

/// A read step's credit: a full batch's worth, split among its batches.
#[derive(Debug)]
pub struct StepCredit {
    own: OwnedSemaphorePermit,
    global: OwnedSemaphorePermit,
}

impl StepCredit {
    /// Takes `units` of the step's credit for one batch of `rows` rows.
    pub fn split(&mut self, units: usize, rows: usize) -> Credit {
        let own = self.own.split(units).expect("a step's shares fit in its credit");
        let global = self.global.split(units).expect("a step's shares fit in its credit");
        Credit::new(StepCredit { own, global }, rows)
    }
}

/// A batch's share of the window, released when the batch is dropped.
///
/// It also accounts the batch's rows in the `ingestd_rows_in_memory` gauge,
/// so the memory bound is observable from outside.
#[derive(Debug)]
pub struct Credit {
    _permits: StepCredit,
    rows: i64,
}

impl Credit {
    fn new(permits: StepCredit, rows: usize) -> Self {
        let m = crate::metrics::metrics();
        m.batches_in_flight.inc();
        m.rows_in_memory.add(rows as i64);
        let now = m.rows_in_memory.get();
        if now > m.rows_in_memory_peak.get() {
            m.rows_in_memory_peak.set(now);
        }
        Credit { _permits: permits, rows: rows as i64 }
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        let m = crate::metrics::metrics();
        m.rows_in_memory.sub(self.rows);
        m.batches_in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn a_batch_costs_its_share_by_rows_or_bytes() {
        // (rows, batch_rows, bytes, batch_bytes) -> units
        let cases = [
            ((10_000, 10_000, 0, 1 << 20), 1000),
            ((100, 10_000, 0, 1 << 20), 10),
            ((100, 10_000, 1 << 19, 1 << 20), 500),
            ((0, 10_000, 0, 1 << 20), 1),
            ((1, 3, 0, 1 << 20), 334),
            ((20_000, 10_000, 0, 1 << 20), 1000),
        ];
        for ((rows, batch_rows, bytes, batch_bytes), want) in cases {
            assert_eq!(units(rows, batch_rows, bytes, batch_bytes), want, "{rows} rows {bytes} bytes");
        }
    }

    #[tokio::test]
    async fn a_pipeline_leaves_one_batch_to_each_other() {
        let w = Window::new(4, 2);
        let (a, b) = (w.for_pipeline(), w.for_pipeline());
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.step().await.unwrap());
        }
        // `a` may not take a fourth batch; `b` still gets one.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), a.step()).await.is_err());
        let b1 = b.step().await.unwrap();
        assert!(!a.all_back() && !b.all_back());
        drop(b1);
        assert!(b.all_back());
        let one = Window::new(1, 3).for_pipeline();
        assert!(one.step().await.is_some(), "never less than one batch");
    }

    #[tokio::test]
    async fn drained_resolves_when_the_last_credit_returns() {
        let c = Window::new(2, 1).for_pipeline();
        let mut step = c.step().await.unwrap();
        let first = step.split(400, 10);
        let second = step.split(100, 5);
        drop(step);
        assert_eq!(c.out(), 500);
        let drained = c.drained();
        tokio::pin!(drained);
        assert!(futures::poll!(&mut drained).is_pending());
        drop(first);
        assert!(futures::poll!(&mut drained).is_pending());
        drop(second);
        assert!(futures::poll!(&mut drained).is_ready());
        // Closed credits count as drained (the data path was stopped).
        let c = Window::new(1, 1).for_pipeline();
        let _held = c.step().await.unwrap();
        c.close();
        c.drained().await;
        assert!(c.step().await.is_none());
    }
}
