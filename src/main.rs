//! The `ingestd` command: parses the command line, loads the config, sets
//! up logging and the database, runs, and maps failures to exit codes
//! (2: bad config or folders, 3: database unreachable, 1: anything else).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use clap::{Parser, Subcommand};

use ingestd::config::{Config, LogFormat};
use ingestd::db::embedded::EmbeddedPg;
use ingestd::db::{self, Pool};
use ingestd::generate::{file_name, DeclaredMaker, FileMaker, GenSpec, RowMaker};
use ingestd::health::Health;
use ingestd::supervisor::Supervisor;

const DEFAULT_CONFIG: &str = "config/ingestd.toml";
/// Threads for blocking work (see `run`).
const BLOCKING_THREADS: usize = 8;

#[derive(Parser)]
#[command(name = "ingestd", version, about = "Streams CSV event files from a folder into PostgreSQL, exactly once.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Config file (default config/ingestd.toml; defaults apply if it is absent).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PipelineArg {
    /// A pipeline declaration file, in addition to `pipelines.files`
    /// (repeatable). With none, the built-in pipeline runs.
    #[arg(long = "pipeline", value_name = "FILE")]
    pipelines: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM/SIGINT (or until idle).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        pipelines: PipelineArg,
        /// Exit 0 once every file present (and any that arrive meanwhile)
        /// is committed and nothing is in flight.
        #[arg(long)]
        until_idle: bool,
    },
    /// Write synthetic files (temp name, then rename): events to the
    /// built-in contract, or rows of any declared pipeline.
    Generate {
        /// Folder to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Generate for this pipeline declaration instead of the built-in
        /// contract.
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Number of files; 0 = endless.
        #[arg(long, default_value_t = 10)]
        files: u64,
        /// Data rows per file.
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Pause between files (default: 0, or 1000 when endless).
        #[arg(long)]
        interval_ms: Option<u64>,
        /// Fraction of rows that break a rule.
        #[arg(long, default_value_t = 0.0)]
        bad_frac: f64,
        /// Fraction of rows that repeat an earlier key.
        #[arg(long, default_value_t = 0.0)]
        dup_frac: f64,
        /// Seed for reproducible output.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Per-file progress read from the database, totals per pipeline.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// JSON output: one object, the same as `/api/status` without its
        /// `live` key (totals, pipelines, files, file_errors, skipped).
        #[arg(long)]
        json: bool,
        /// Files listed at most, the most recent first (totals always
        /// cover every file); 0 = all.
        #[arg(long, value_name = "N", default_value_t = ingestd::status::FILES_SHOWN)]
        limit: usize,
    },
    /// Validate the config file, the pipeline files and the folders without
    /// starting anything.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        pipelines: PipelineArg,
    },
    /// Re-run stored rejects of finished files through the current rules;
    /// rows that now pass are written (or counted as duplicates).
    ReplayRejects {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        pipelines: PipelineArg,
        /// Only this file (its name, as in `source_file`).
        #[arg(long, value_name = "F")]
        file: Option<String>,
        /// Only rejects with this reason.
        #[arg(long, value_name = "R")]
        reason: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// A failure that ends the process: one line on stderr and an exit code.
struct Fatal {
    code: u8,
    message: String,
}

impl Fatal {
    fn config(e: impl std::fmt::Display) -> Fatal {
        Fatal { code: 2, message: e.to_string() }
    }
    fn database(e: impl std::fmt::Display) -> Fatal {
        Fatal { code: 3, message: format!("database unreachable: {e}") }
    }
    fn other(e: impl std::fmt::Display) -> Fatal {
        Fatal { code: 1, message: e.to_string() }
    }
}

fn main() -> ExitCode {
    // Keep RSS near the live data (the memory bound is about RSS):
    // - glibc gives each allocating thread its own arena; batches are built
    //   on blocking-pool threads and freed on the actor thread, and many
    //   arenas hold freed memory apart. Two suffice on two cores.
    // - Batch buffers are large; a fixed mmap threshold returns them to the
    //   kernel when freed, where glibc's moving threshold would keep them.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("ingestd: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(command: Command) -> Result<u8, Fatal> {
    match command {
        Command::Run { config, pipelines, until_idle } => {
            let config = load_config(&config)?;
            let planned = ingestd::pipelines::plan(&config, &pipelines.pipelines).map_err(Fatal::config)?;
            run(config, planned, until_idle)
        }
        Command::Generate { out, pipeline, files, rows, interval_ms, bad_frac, dup_frac, seed } => {
            let spec = GenSpec { rows, bad_frac, dup_frac };
            generate(&out, pipeline.as_deref(), files, interval_ms, spec, seed)
        }
        Command::Migrate { config } => {
            let config = load_config(&config)?;
            init_logging(&config);
            with_database(&config, |pool| async move {
                let applied = db::migrate::run(&pool).await.map_err(Fatal::other)?;
                println!("migrations applied: {applied:?}");
                Ok(0)
            })
        }
        Command::Status { config, json, limit } => {
            let config = load_config(&config)?;
            init_logging(&config);
            with_database(&config, |pool| async move {
                db::migrate::run(&pool).await.map_err(Fatal::other)?;
                let limit = (limit > 0).then_some(limit);
                let report = ingestd::status::read(&pool, limit).await.map_err(Fatal::other)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).map_err(Fatal::other)?);
                } else {
                    print!("{}", ingestd::status::render_text(&report));
                }
                Ok(0)
            })
        }
        Command::ReplayRejects { config, pipelines, file, reason, json } => {
            let config = load_config(&config)?;
            let planned = ingestd::pipelines::plan(&config, &pipelines.pipelines).map_err(Fatal::config)?;
            if let Some(r) = &reason {
                let known = planned
                    .iter()
                    .flat_map(|p| p.pipeline.reasons())
                    .chain(ingestd::core::reason::RejectReason::BUILT_IN);
                if !known.into_iter().any(|k| k.as_str() == r) {
                    return Err(Fatal::config(format!("--reason {r}: not a reject reason of these pipelines")));
                }
            }
            init_logging(&config);
            with_database(&config, |pool| async move {
                db::migrate::run(&pool).await.map_err(Fatal::other)?;
                let mut done = Vec::new();
                for p in &planned {
                    let pipeline = prepare_tables(&pool, p).await?;
                    done.extend(
                        ingestd::replay::run(&pool, &pipeline, file.as_deref(), reason.as_deref())
                            .await
                            .map_err(Fatal::other)?,
                    );
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&done).map_err(Fatal::other)?);
                } else {
                    for r in &done {
                        println!(
                            "{}: replayed {}, written {}, duplicate {}, still rejected {}",
                            r.file, r.replayed, r.written, r.duplicate, r.still_rejected
                        );
                    }
                    println!("{} files", done.len());
                }
                Ok(0)
            })
        }
        Command::CheckConfig { config, pipelines } => {
            let c = load_config(&config)?;
            let planned = ingestd::pipelines::plan(&c, &pipelines.pipelines).map_err(Fatal::config)?;
            ingestd::pipelines::prepare_folders(&planned).map_err(Fatal::config)?;
            for p in planned.iter().filter(|p| !p.is_builtin()) {
                println!(
                    "pipeline {} ({}): table {}, incoming {}",
                    p.pipeline.name,
                    p.pipeline.source,
                    p.pipeline.table.plain(),
                    p.incoming.display()
                );
            }
            println!("config ok");
            Ok(0)
        }
    }
}

/// Makes a pipeline's tables match its declaration (see `db::tables`) and
/// returns the pipeline with each column's wire type as the table has it.
async fn prepare_tables(
    pool: &Pool,
    p: &ingestd::pipelines::Planned,
) -> Result<Arc<ingestd::core::pipeline::Pipeline>, Fatal> {
    use ingestd::db::tables::TableError;
    let prepared = db::tables::prepare(pool, &p.pipeline).await.map_err(|e| match &e {
        TableError::Database { source, .. } if source.is_transient() => Fatal::database(&e),
        TableError::Database { .. } => Fatal::other(&e),
        TableError::Mismatch { .. } | TableError::Invalid { .. } => Fatal::config(&e),
    })?;
    for change in &prepared.changes {
        tracing::info!(pipeline = %p.pipeline.name, "{change}");
    }
    let mut pipeline = (*p.pipeline).clone();
    pipeline.set_wire_types(&prepared.wire_types);
    Ok(Arc::new(pipeline))
}

fn load_config(arg: &ConfigArg) -> Result<Config, Fatal> {
    let (path, explicit) = match &arg.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    Config::load(&path, explicit).map_err(Fatal::config)
}

/// Logs to stderr (past the progress bar when one is shown); the last
/// warnings and errors are also kept for the status page.
fn init_logging(config: &Config) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Colours only for a person at a terminal: a journal, a file or a
    // collector gets plain text (and NO_COLOR is honoured).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer().with_ansi(colour).with_writer(ingestd::progress::LogWriter);
    let registry = tracing_subscriber::registry().with(filter).with(ingestd::live::RecentEvents);
    let _ = match config.log.format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
}

/// The database the config names, or the embedded cluster.
fn resolve_database(config: &Config) -> Result<(tokio_postgres::Config, Option<EmbeddedPg>), Fatal> {
    match &config.database.url {
        Some(url) => Ok((url.parse().map_err(|_| Fatal::config("database.url: not a valid PostgreSQL URL"))?, None)),
        None => {
            // The same rule for every command, so `migrate` and `status` find
            // the cluster `run` uses (possibly relocated: see db::embedded).
            let pg = EmbeddedPg::start(&config.paths.pg_data).map_err(Fatal::database)?;
            let url = pg.url(ingestd::db::embedded::DEFAULT_DB);
            tracing::info!(port = pg.port(), root = %pg.root().display(), "embedded PostgreSQL running");
            Ok((url.parse().map_err(Fatal::other)?, Some(pg)))
        }
    }
}

/// Runs a short command against the database on a current-thread runtime.
fn with_database<F, Fut>(config: &Config, f: F) -> Result<u8, Fatal>
where
    F: FnOnce(Pool) -> Fut,
    Fut: std::future::Future<Output = Result<u8, Fatal>>,
{
    let (pg_config, mut embedded) = resolve_database(config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Fatal::other)?;
    let result = rt.block_on(async {
        let pool = db::build_pool(pg_config, 2);
        db::wait_ready(&pool, Duration::from_secs(config.database.startup_timeout_secs))
            .await
            .map_err(Fatal::database)?;
        f(pool).await
    });
    if let Some(pg) = embedded.as_mut() {
        let _ = pg.stop();
    }
    result
}

fn run(config: Config, planned: Vec<ingestd::pipelines::Planned>, until_idle: bool) -> Result<u8, Fatal> {
    init_logging(&config);
    ingestd::pipelines::prepare_folders(&planned).map_err(Fatal::config)?;
    let (pg_config, embedded) = resolve_database(&config)?;
    let names: Vec<String> = planned.iter().map(|p| p.pipeline.name.clone()).collect();
    tracing::info!(database = %db::redacted(&pg_config), pipelines = ?names, "starting");
    let embedded = Arc::new(Mutex::new(embedded));
    let config = Arc::new(config);
    // actix's single-threaded runtime, with a small blocking pool: file
    // work (reads, fingerprints, moves) runs there, and hundreds of small
    // files finishing at once must not become hundreds of threads (each
    // costs memory); the work queues instead.
    let system = System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS)
            .build()
            .expect("a tokio runtime")
    });
    let setup = {
        let config = config.clone();
        let embedded = embedded.clone();
        async move {
            // Health first, so /healthz answers and /readyz says "not ready"
            // while the database is still away; /api/status answers 503
            // until the pool is in its slot (after the migrations).
            let health = Arc::new(Health::new(planned.len()));
            let history = Arc::new(Mutex::new(ingestd::live::History::default()));
            let pool_slot = Arc::new(OnceLock::new());
            let http = if config.http.listen.is_empty() {
                None
            } else {
                let live = ingestd::live::LiveState::new(names.clone(), health.clone(), history.clone());
                let status = ingestd::http::StatusSource { pool: pool_slot.clone(), live: Arc::new(live) };
                Some(
                    ingestd::http::start(&config.http.listen, health.clone(), status)
                        .map_err(|e| Fatal::config(format!("http.listen = {}: {e}", config.http.listen)))?,
                )
            };
            // Progress lines, or a bar for a backfill watched on a terminal.
            let progress_secs = config.log.progress_secs;
            ingestd::progress::spawn(ingestd::progress::ReporterSettings {
                names,
                history,
                log_every: (progress_secs > 0).then(|| Duration::from_secs(progress_secs)),
                bar: until_idle && std::io::stderr().is_terminal(),
            });
            // Signals are ours from here on: a SIGTERM while start-up still
            // waits for the database ends the process cleanly (nothing is in
            // flight yet), and later the Supervisor drains on it.
            let mut signals =
                signal_hook_tokio::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
                    .map_err(|e| Fatal::other(format!("cannot install signal handlers: {e}")))?;
            let pool = db::build_pool(pg_config, config.database.pool_size);
            let startup = Duration::from_secs(config.database.startup_timeout_secs);
            let deadline = tokio::time::Instant::now() + startup;
            let prepare = async {
                db::wait_ready(&pool, startup).await.map_err(Fatal::database)?;
                db::migrate_when_ready(&pool, deadline).await.map_err(|e| {
                    if e.is_transient() {
                        Fatal::database(e)
                    } else {
                        Fatal::other(e)
                    }
                })
            };
            let prepare = async {
                let applied = prepare.await?;
                // Each pipeline's tables, made to match its declaration
                // before anything is read.
                let mut ready = Vec::with_capacity(planned.len());
                for p in planned {
                    let pipeline = prepare_tables(&pool, &p).await?;
                    ready.push(ingestd::pipelines::Planned { pipeline, ..p });
                }
                Ok::<_, Fatal>((applied, ready))
            };
            let (applied, planned) = tokio::select! {
                r = prepare => r?,
                _ = futures::StreamExt::next(&mut signals) => {
                    tracing::info!("signal during start-up: stopping");
                    return Ok(false);
                }
            };
            if !applied.is_empty() {
                tracing::info!(versions = ?applied, "migrations applied");
            }
            health.set_db_ok(true);
            let _ = pool_slot.set(pool.clone());
            let hard_exit: Box<dyn FnOnce()> = Box::new(move || {
                if let Some(pg) = embedded.lock().ok().and_then(|mut g| g.take()) {
                    let mut pg = pg;
                    let _ = pg.stop();
                }
            });
            Supervisor::new(config.clone(), planned, pool, health, until_idle, http, signals, Some(hard_exit)).start();
            Ok::<bool, Fatal>(true)
        }
    };
    let started = system.block_on(setup);
    let code = match started {
        Ok(true) => system.run_with_code(),
        Ok(false) => Ok(0),
        Err(f) => {
            ingestd::progress::finish_bar();
            stop_embedded(&embedded);
            return Err(f);
        }
    };
    ingestd::progress::finish_bar();
    let code = code.map_err(Fatal::other)?;
    stop_embedded(&embedded);
    tracing::info!(code, "stopped");
    Ok(code.clamp(0, 255) as u8)
}

fn stop_embedded(embedded: &Mutex<Option<EmbeddedPg>>) {
    if let Some(mut pg) = embedded.lock().ok().and_then(|mut g| g.take()) {
        if let Err(e) = pg.stop() {
            tracing::warn!(error = %e, "cannot stop the embedded PostgreSQL");
        }
    }
}

fn generate(
    out: &Path,
    pipeline: Option<&Path>,
    files: u64,
    interval_ms: Option<u64>,
    spec: GenSpec,
    seed: Option<u64>,
) -> Result<u8, Fatal> {
    if !(0.0..=1.0).contains(&spec.bad_frac) || !(0.0..=1.0).contains(&spec.dup_frac) {
        return Err(Fatal::config("--bad-frac and --dup-frac must be between 0 and 1"));
    }
    let (mut maker, prefix): (Box<dyn FileMaker>, String) = match pipeline {
        None => (Box::new(RowMaker::new(seed)), "events".into()),
        Some(file) => {
            let p = Arc::new(ingestd::pipelines::load_file(file).map_err(Fatal::config)?);
            let name = p.name.clone();
            (Box::new(DeclaredMaker::new(p, seed)), name)
        }
    };
    std::fs::create_dir_all(out).map_err(|e| Fatal::config(format!("--out {}: {e}", out.display())))?;
    let interval = Duration::from_millis(interval_ms.unwrap_or(if files == 0 { 1000 } else { 0 }));
    let mut seq = 0u64;
    while files == 0 || seq < files {
        let name = file_name(&prefix, seq);
        let stats = maker
            .write_file(out, &name, &spec)
            .map_err(|e| Fatal::other(format!("{}: {e}", out.join(&name).display())))?;
        println!("{name} rows={} bad={} duplicates={}", stats.rows, stats.bad, stats.duplicates);
        seq += 1;
        if !interval.is_zero() && (files == 0 || seq < files) {
            std::thread::sleep(interval);
        }
    }
    Ok(0)
}
