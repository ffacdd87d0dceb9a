//! Prometheus metrics, registered once and rendered by `/metrics`.
//! Names end in `_total` for counters, as Prometheus expects.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub rows_written: IntCounter,
    pub rows_duplicate: IntCounter,
    pub rows_rejected: IntCounter,
    pub rejects: IntCounterVec,
    pub batches: IntCounter,
    pub batch_seconds: Histogram,
    pub batches_in_flight: IntGauge,
    pub rows_in_memory: IntGauge,
    pub rows_in_memory_peak: IntGauge,
    pub files_done: IntCounter,
    pub files_failed: IntCounter,
    pub files_pending: IntGauge,
    pub restarts: IntCounterVec,
    pub db_errors: IntCounter,
    pub watch_errors: IntCounter,
    pub disk_errors: IntCounter,
    pub schema_refusals: IntCounter,
    pub routes: IntCounterVec,
    pub generated_files: IntCounter,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new("ingestd_batch_commit_seconds", "Time to commit one batch transaction.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(batch_seconds.clone())).expect("unique metric");
        let rejects = counter_vec("ingestd_rejects_total", "Rejected rows by reason.", "reason");
        Metrics {
            rows_written: counter("ingestd_rows_written_total", "Rows written to the events table."),
            rows_duplicate: counter("ingestd_rows_duplicate_total", "Valid rows whose event_id was already written."),
            rows_rejected: counter("ingestd_rows_rejected_total", "Rows stored in ingest_rejects."),
            rejects,
            batches: counter("ingestd_batches_committed_total", "Batch transactions committed."),
            batch_seconds,
            batches_in_flight: gauge(
                "ingestd_batches_in_flight",
                "Credits of the window in use: batches read but not committed.",
            ),
            rows_in_memory: gauge("ingestd_rows_in_memory", "Rows held in batches between reading and commit."),
            rows_in_memory_peak: gauge("ingestd_rows_in_memory_peak", "Highest ingestd_rows_in_memory since start."),
            files_done: counter("ingestd_files_done_total", "Files fully committed."),
            files_failed: counter("ingestd_files_failed_total", "Files parked as failed."),
            files_pending: gauge("ingestd_files_pending", "Files waiting in the incoming folder."),
            restarts: counter_vec(
                "ingestd_actor_restarts_total",
                "Pipeline restarts by the actor that failed.",
                "actor",
            ),
            db_errors: counter("ingestd_db_errors_total", "Batch attempts that failed on a transient database error."),
            watch_errors: counter(
                "ingestd_file_errors_total",
                "Files that could not be listed, identified or read (retried).",
            ),
            disk_errors: counter(
                "ingestd_disk_errors_total",
                "Failed attempts of the disk work after a commit (retried).",
            ),
            schema_refusals: counter(
                "ingestd_schema_refusals_total",
                "Rows the validator accepted but PostgreSQL refused (validator and schema disagree): alert on it.",
            ),
            generated_files: counter("ingestd_generated_files_total", "Files written by the Generator."),
            routes: {
                let c = counter_vec(
                    "ingestd_event_routes_total",
                    "Events' routes into the table, per transaction attempt: direct (COPY into the table; presumed duplicates merged apart), staging (everything through a temp table and the ON CONFLICT merge), direct_conflict (a direct COPY met a stored id; redone through staging).",
                    "route",
                );
                for r in ["direct", "staging", "direct_conflict"] {
                    c.with_label_values(&[r]);
                }
                c
            },
            registry,
        }
    }

    /// Shows every reason a pipeline can give, at 0 until it happens.
    pub fn declare_reasons(&self, reasons: &[crate::core::reason::RejectReason]) {
        for r in reasons {
            self.rejects.with_label_values(&[r.as_str()]);
        }
    }

    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
