//! Prometheus metrics, registered once and rendered by `/metrics`.
//! Names end in `_total` for counters, as Prometheus expects. Every metric
//! of a pipeline's work carries a `pipeline` label; the memory bound (the
//! credit window) is the daemon's, so its gauges carry none.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::core::reason::RejectReason;

pub struct Metrics {
    pub registry: Registry,
    rows_written: IntCounterVec,
    rows_duplicate: IntCounterVec,
    rows_rejected: IntCounterVec,
    rejects: IntCounterVec,
    batches: IntCounterVec,
    batch_seconds: HistogramVec,
    pub batches_in_flight: IntGauge,
    pub rows_in_memory: IntGauge,
    pub rows_in_memory_peak: IntGauge,
    files_done: IntCounterVec,
    files_failed: IntCounterVec,
    files_pending: IntGaugeVec,
    files_in_flight: IntGaugeVec,
    bytes_waiting: IntGaugeVec,
    bytes_in_flight: IntGaugeVec,
    bytes_committed: IntCounterVec,
    pub restarts: IntCounterVec,
    db_errors: IntCounterVec,
    watch_errors: IntCounterVec,
    disk_errors: IntCounterVec,
    schema_refusals: IntCounterVec,
    routes: IntCounterVec,
    generated_files: IntCounterVec,
    skipped: IntGaugeVec,
}

/// One pipeline's metrics, resolved once (an actor keeps its own copy).
#[derive(Clone)]
pub struct PipelineMetrics {
    name: String,
    pub rows_written: IntCounter,
    pub rows_duplicate: IntCounter,
    pub rows_rejected: IntCounter,
    pub batches: IntCounter,
    pub batch_seconds: Histogram,
    pub files_done: IntCounter,
    pub files_failed: IntCounter,
    pub files_pending: IntGauge,
    /// Files claimed and being read (set by the Watcher).
    pub files_in_flight: IntGauge,
    /// Bytes of the files waiting (set by the Watcher).
    pub bytes_waiting: IntGauge,
    /// Bytes of the files being read that are not committed yet (set by
    /// the CheckpointKeeper).
    pub bytes_in_flight: IntGauge,
    /// Bytes of input committed (by the CheckpointKeeper).
    pub bytes_committed: IntCounter,
    pub db_errors: IntCounter,
    pub watch_errors: IntCounter,
    pub disk_errors: IntCounter,
    pub schema_refusals: IntCounter,
    pub generated_files: IntCounter,
}

impl PipelineMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn reject(&self, reason: RejectReason) {
        metrics().rejects.with_label_values(&[&self.name, reason.as_str()]).inc();
    }

    /// What the Watcher's intake holds besides the files waiting: files in
    /// flight, and the bytes waiting.
    pub fn set_intake(&self, files_in_flight: usize, bytes_waiting: u64) {
        self.files_in_flight.set(files_in_flight as i64);
        self.bytes_waiting.set(bytes_waiting as i64);
    }
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let per_pipeline = |name: &str, help: &str| counter_vec(name, help, &["pipeline"]);
        let batch_seconds = HistogramVec::new(
            HistogramOpts::new("ingestd_batch_commit_seconds", "Time to commit one batch transaction.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["pipeline"],
        )
        .expect("valid metric");
        registry.register(Box::new(batch_seconds.clone())).expect("unique metric");
        let gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["pipeline"]).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let files_in_flight = gauge_vec("ingestd_files_in_flight", "Files claimed and being read.");
        let bytes_waiting = gauge_vec(
            "ingestd_bytes_waiting",
            "Bytes of the files waiting in the incoming folder (beyond the Watcher's window: estimated from the mean size).",
        );
        let bytes_in_flight =
            gauge_vec("ingestd_bytes_in_flight", "Bytes of the files being read that are not committed yet.");
        let bytes_committed = per_pipeline(
            "ingestd_bytes_committed_total",
            "Bytes of input files committed (a gzip file counts its compressed size when its last batch commits).",
        );
        let files_pending = IntGaugeVec::new(
            Opts::new("ingestd_files_pending", "Files waiting in the incoming folder."),
            &["pipeline"],
        )
        .expect("valid metric");
        registry.register(Box::new(files_pending.clone())).expect("unique metric");
        let skipped = IntGaugeVec::new(
            Opts::new(
                "ingestd_files_skipped",
                "Entries of the incoming folder with an input file's name that are not read, by reason (not_regular_file, unreadable).",
            ),
            &["pipeline", "reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(skipped.clone())).expect("unique metric");
        Metrics {
            rows_written: per_pipeline("ingestd_rows_written_total", "Rows written to the pipeline's table."),
            rows_duplicate: per_pipeline("ingestd_rows_duplicate_total", "Valid rows whose key was already written."),
            rows_rejected: per_pipeline("ingestd_rows_rejected_total", "Rows stored in ingest_rejects."),
            rejects: counter_vec("ingestd_rejects_total", "Rejected rows by reason.", &["pipeline", "reason"]),
            batches: per_pipeline("ingestd_batches_committed_total", "Batch transactions committed."),
            batch_seconds,
            batches_in_flight: gauge(
                "ingestd_batches_in_flight",
                "Credits of the window in use: batches read but not committed.",
            ),
            rows_in_memory: gauge("ingestd_rows_in_memory", "Rows held in batches between reading and commit."),
            rows_in_memory_peak: gauge("ingestd_rows_in_memory_peak", "Highest ingestd_rows_in_memory since start."),
            files_done: per_pipeline("ingestd_files_done_total", "Files fully committed."),
            files_failed: per_pipeline("ingestd_files_failed_total", "Files parked as failed."),
            files_pending,
            files_in_flight,
            bytes_waiting,
            bytes_in_flight,
            bytes_committed,
            restarts: counter_vec(
                "ingestd_actor_restarts_total",
                "Pipeline restarts by the actor that failed.",
                &["pipeline", "actor"],
            ),
            db_errors: per_pipeline(
                "ingestd_db_errors_total",
                "Batch attempts that failed on a transient database error.",
            ),
            watch_errors: per_pipeline(
                "ingestd_file_errors_total",
                "Files that could not be listed, identified or read (retried).",
            ),
            disk_errors: per_pipeline(
                "ingestd_disk_errors_total",
                "Failed attempts of the disk work after a commit (retried).",
            ),
            schema_refusals: per_pipeline(
                "ingestd_schema_refusals_total",
                "Rows the validator accepted but PostgreSQL refused (validator and schema disagree): alert on it.",
            ),
            generated_files: per_pipeline("ingestd_generated_files_total", "Files written by the Generator."),
            skipped,
            routes: counter_vec(
                "ingestd_event_routes_total",
                "Rows' routes into the table, per transaction attempt: direct (COPY into the table; presumed duplicates merged apart), staging (everything through a temp table and the ON CONFLICT merge), direct_conflict (a direct COPY met a stored key; redone through staging).",
                &["pipeline", "route"],
            ),
            registry,
        }
    }

    /// A pipeline's metrics (every series shown at 0 from the start).
    pub fn pipeline(&self, name: &str) -> PipelineMetrics {
        let l = &[name];
        PipelineMetrics {
            name: name.to_owned(),
            rows_written: self.rows_written.with_label_values(l),
            rows_duplicate: self.rows_duplicate.with_label_values(l),
            rows_rejected: self.rows_rejected.with_label_values(l),
            batches: self.batches.with_label_values(l),
            batch_seconds: self.batch_seconds.with_label_values(l),
            files_done: self.files_done.with_label_values(l),
            files_failed: self.files_failed.with_label_values(l),
            files_pending: self.files_pending.with_label_values(l),
            files_in_flight: self.files_in_flight.with_label_values(l),
            bytes_waiting: self.bytes_waiting.with_label_values(l),
            bytes_in_flight: self.bytes_in_flight.with_label_values(l),
            bytes_committed: self.bytes_committed.with_label_values(l),
            db_errors: self.db_errors.with_label_values(l),
            watch_errors: self.watch_errors.with_label_values(l),
            disk_errors: self.disk_errors.with_label_values(l),
            schema_refusals: self.schema_refusals.with_label_values(l),
            generated_files: self.generated_files.with_label_values(l),
        }
    }

    /// Shows every reason a pipeline can give and every route, at 0 until
    /// it happens.
    pub fn declare_reasons(&self, pipeline: &str, reasons: &[RejectReason], skip_reasons: &[&str]) {
        for r in reasons {
            self.rejects.with_label_values(&[pipeline, r.as_str()]);
        }
        for route in ["direct", "staging", "direct_conflict"] {
            self.routes.with_label_values(&[pipeline, route]);
        }
        for reason in skip_reasons {
            self.skipped.with_label_values(&[pipeline, reason]);
        }
        self.pipeline(pipeline);
    }

    /// Entries not read now, by reason.
    pub fn skipped(&self, pipeline: &str, reason: &str, n: usize) {
        self.skipped.with_label_values(&[pipeline, reason]).set(n as i64);
    }

    /// A transaction attempt's route (`direct`, `staging`,
    /// `direct_conflict`).
    pub fn route(&self, pipeline: &str, route: &str) {
        self.routes.with_label_values(&[pipeline, route]).inc();
    }

    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
