//! What the running daemon knows beyond the database, for `/api/status`'s
//! `live` key and the progress lines: each pipeline's metrics now
//! ([`Snapshot`]), throughput over the last minutes ([`History`]), and the
//! last warnings and errors it logged ([`RecentEvents`]).
//!
//! Everything here reads the process's own metrics and logs: no I/O, and
//! nothing that `ingestd status` (a separate process) could know.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use serde::Serialize;

use crate::health::Health;
use crate::metrics::{metrics, PipelineMetrics};

/// Throughput samples: one every `HISTORY_STEP`, the last `HISTORY_LEN`
/// (ten minutes).
pub const HISTORY_STEP: Duration = Duration::from_secs(2);
pub const HISTORY_LEN: usize = 300;
/// Warnings and errors kept for the status page.
pub const RECENT_EVENTS: usize = 30;

/// One pipeline's counters and gauges at one moment. Counters count since
/// the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PipelineNow {
    pub rows_written: u64,
    pub rows_duplicate: u64,
    pub rows_rejected: u64,
    pub files_done: u64,
    pub files_failed: u64,
    pub files_waiting: u64,
    pub files_in_flight: u64,
    pub bytes_waiting: u64,
    pub bytes_in_flight: u64,
    pub bytes_committed: u64,
    pub restarts: u64,
}

impl PipelineNow {
    /// Rows settled (written, duplicate or rejected).
    pub fn rows(&self) -> u64 {
        self.rows_written + self.rows_duplicate + self.rows_rejected
    }

    /// Bytes not committed yet: waiting, or in files being read.
    pub fn bytes_left(&self) -> u64 {
        self.bytes_waiting + self.bytes_in_flight
    }

    /// Nothing waits and nothing is being read.
    pub fn quiet(&self) -> bool {
        self.files_waiting == 0 && self.files_in_flight == 0
    }

    pub fn add(&mut self, o: &PipelineNow) {
        self.rows_written += o.rows_written;
        self.rows_duplicate += o.rows_duplicate;
        self.rows_rejected += o.rows_rejected;
        self.files_done += o.files_done;
        self.files_failed += o.files_failed;
        self.files_waiting += o.files_waiting;
        self.files_in_flight += o.files_in_flight;
        self.bytes_waiting += o.bytes_waiting;
        self.bytes_in_flight += o.bytes_in_flight;
        self.bytes_committed += o.bytes_committed;
        self.restarts += o.restarts;
    }
}

/// The daemon's pipelines' metrics, read again on demand.
pub struct Pipelines {
    names: Vec<String>,
    handles: Vec<PipelineMetrics>,
}

/// Every pipeline's metrics at one moment, in the daemon's order.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub pipelines: Vec<PipelineNow>,
}

impl Snapshot {
    pub fn total(&self) -> PipelineNow {
        let mut t = PipelineNow::default();
        for p in &self.pipelines {
            t.add(p);
        }
        t
    }
}

impl Pipelines {
    pub fn new(names: Vec<String>) -> Pipelines {
        let handles = names.iter().map(|n| metrics().pipeline(n)).collect();
        Pipelines { names, handles }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn snapshot(&self) -> Snapshot {
        let restarts = restarts_by_pipeline();
        let pipelines = (self.handles.iter().zip(&self.names))
            .map(|(m, name)| PipelineNow {
                rows_written: m.rows_written.get(),
                rows_duplicate: m.rows_duplicate.get(),
                rows_rejected: m.rows_rejected.get(),
                files_done: m.files_done.get(),
                files_failed: m.files_failed.get(),
                files_waiting: m.files_pending.get().max(0) as u64,
                files_in_flight: m.files_in_flight.get().max(0) as u64,
                bytes_waiting: m.bytes_waiting.get().max(0) as u64,
                bytes_in_flight: m.bytes_in_flight.get().max(0) as u64,
                bytes_committed: m.bytes_committed.get(),
                restarts: restarts.iter().filter(|(p, _)| p == name).map(|(_, n)| n).sum(),
            })
            .collect();
        Snapshot { at: Instant::now(), pipelines }
    }
}

/// `ingestd_actor_restarts_total` by pipeline (summed over the actors).
fn restarts_by_pipeline() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for family in metrics().restarts.collect() {
        for m in family.get_metric() {
            let pipeline = m.get_label().iter().find(|l| l.name() == "pipeline").map(|l| l.value().to_owned());
            if let Some(p) = pipeline {
                out.push((p, m.get_counter().get_value() as u64));
            }
        }
    }
    out
}

/// Rows per second between two snapshots, per pipeline.
pub fn rates(from: &Snapshot, to: &Snapshot) -> Vec<f64> {
    let secs = to.at.duration_since(from.at).as_secs_f64();
    (from.pipelines.iter().zip(&to.pipelines))
        .map(|(a, b)| if secs > 0.0 { b.rows().saturating_sub(a.rows()) as f64 / secs } else { 0.0 })
        .collect()
}

/// Rows per second of each pipeline over the last minutes, one sample per
/// `HISTORY_STEP`.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Unix time of the end of the step, in seconds.
    pub at: i64,
    /// Rows settled per second during the step, per pipeline (in the
    /// daemon's order).
    pub rows_per_sec: Vec<f64>,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }

    pub fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

/// A warning or error the daemon logged.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    pub at: DateTime<Utc>,
    pub level: &'static str,
    pub target: String,
    pub message: String,
    /// The event's other fields, `key=value` separated by spaces.
    pub fields: String,
}

fn recent() -> &'static Mutex<VecDeque<LogEvent>> {
    static RECENT: OnceLock<Mutex<VecDeque<LogEvent>>> = OnceLock::new();
    RECENT.get_or_init(|| Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)))
}

/// The last warnings and errors logged, oldest first.
pub fn recent_events() -> Vec<LogEvent> {
    recent().lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
}

/// A tracing layer that keeps the last `RECENT_EVENTS` warnings and errors.
pub struct RecentEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        // Levels compare by verbosity: WARN and ERROR are the least verbose.
        if *meta.level() > tracing::Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let e = LogEvent {
            at: Utc::now(),
            level: meta.level().as_str(),
            target: meta.target().to_owned(),
            message: fields.message,
            fields: fields.rest,
        };
        if let Ok(mut r) = recent().lock() {
            if r.len() == RECENT_EVENTS {
                r.pop_front();
            }
            r.push_back(e);
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            self.rest.push_str(&format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// What `/api/status` adds under `live`: this daemon now.
pub struct LiveState {
    pub pipelines: Pipelines,
    pub health: Arc<Health>,
    pub history: Arc<Mutex<History>>,
    pub started_at: DateTime<Utc>,
    started: Instant,
}

#[derive(Debug, Serialize)]
pub struct Live {
    /// `/readyz`'s answer: the database answered and every pipeline runs.
    pub ready: bool,
    /// The database answered the last time it was asked.
    pub database: bool,
    pub started_at: DateTime<Utc>,
    pub uptime_secs: u64,
    pub pipelines: Vec<LivePipeline>,
    pub throughput: Throughput,
    /// The last warnings and errors logged, newest first.
    pub recent_log: Vec<LogEvent>,
}

#[derive(Debug, Serialize)]
pub struct LivePipeline {
    pub pipeline: String,
    /// Its data path runs (not restarting, draining, on standby or given up).
    pub running: bool,
    /// Rows settled per second over the last step.
    pub rows_per_sec: f64,
    /// Counters since start and gauges now.
    #[serde(flatten)]
    pub now: PipelineNow,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub step_secs: u64,
    /// The pipelines, in the order of each sample's `rows_per_sec`.
    pub pipelines: Vec<String>,
    pub samples: Vec<Sample>,
}

impl LiveState {
    pub fn new(names: Vec<String>, health: Arc<Health>, history: Arc<Mutex<History>>) -> LiveState {
        LiveState { pipelines: Pipelines::new(names), health, history, started_at: Utc::now(), started: Instant::now() }
    }

    pub fn now(&self) -> Live {
        let snapshot = self.pipelines.snapshot();
        let (samples, last) = match self.history.lock() {
            Ok(h) => (h.samples(), h.last().map(|s| s.rows_per_sec.clone())),
            Err(_) => (Vec::new(), None),
        };
        let names = self.pipelines.names();
        let pipelines = (names.iter().zip(snapshot.pipelines).enumerate())
            .map(|(i, (name, now))| LivePipeline {
                pipeline: name.clone(),
                running: self.health.running(i),
                rows_per_sec: last.as_ref().and_then(|l| l.get(i).copied()).unwrap_or(0.0),
                now,
            })
            .collect();
        let mut recent_log = recent_events();
        recent_log.reverse();
        Live {
            ready: self.health.ready(),
            database: self.health.db_ok(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            pipelines,
            throughput: Throughput { step_secs: HISTORY_STEP.as_secs(), pipelines: names.to_vec(), samples },
            recent_log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_samples() {
        let mut h = History::default();
        for at in 0..(HISTORY_LEN as i64 + 5) {
            h.push(Sample { at, rows_per_sec: vec![at as f64] });
        }
        let s = h.samples();
        assert_eq!(s.len(), HISTORY_LEN);
        assert_eq!((s[0].at, h.last().map(|l| l.at)), (5, Some(HISTORY_LEN as i64 + 4)));
    }

    #[test]
    fn rates_are_rows_per_second_between_snapshots() {
        let t0 = Instant::now();
        let a = Snapshot { at: t0, pipelines: vec![PipelineNow { rows_written: 10, ..Default::default() }] };
        let b = Snapshot {
            at: t0 + Duration::from_secs(2),
            pipelines: vec![PipelineNow {
                rows_written: 30,
                rows_rejected: 10,
                rows_duplicate: 10,
                ..Default::default()
            }],
        };
        assert_eq!(rates(&a, &b), [20.0]);
    }
}
