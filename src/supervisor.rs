//! The Supervisor: runs each pipeline's data path (wiring its actors
//! downstream first) while it leads its folder, restarts a pipeline when
//! one of its actors fails, and runs the SIGTERM drain.
//!
//! Restart policy: any failure of a data-path actor (an error it cannot
//! retry, or a panic caught around parsing and validation) stops that
//! pipeline's whole data path and starts it again after a backoff; the other
//! pipelines go on. In-flight batches are dropped with the actors and
//! replayed from the committed checkpoints, so a restart loses and repeats
//! nothing. A failure that names a file counts against that file; past
//! `pipeline.max_file_attempts` the file is parked as `failed`, so one poison
//! file cannot crash-loop the daemon. More than `supervisor.max_restarts`
//! restarts of one pipeline within `supervisor.restart_window_secs`: that
//! pipeline is given up (not ready, logged); when no pipeline is left, the
//! process ends with exit code 70 and the reason.
//!
//! Why not actix's `Supervisor`: it does not restart an actor that
//! panicked, and restarting one actor alone would lose the batches queued
//! in it; restarting the data path from the checkpoints is always correct.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use signal_hook::consts::SIGTERM;

use crate::actors::checkpoint_keeper::{CheckpointKeeper, DiskWork, KeeperSettings};
use crate::actors::generator::Generator;
use crate::actors::parser::{Parser, ParserSettings};
use crate::actors::validator::Validator;
use crate::actors::watcher::{Watcher, WatcherSettings};
use crate::actors::writer::{Writer, WriterSettings};
use crate::config::Config;
use crate::credit::{Credits, Window};
use crate::db::leader::FolderLock;
use crate::db::sql::PipelineSql;
use crate::db::Pool;
use crate::generate::{DeclaredMaker, FileMaker, GenSpec, RowMaker};
use crate::health::Health;
use crate::messages::{ChildFailed, IsIdle, RecordFailure, SetWatcher, Stop, StopIntake, StopReading};
use crate::metrics::metrics;
use crate::pipelines::Planned;

/// Exit code when the restart budget is spent.
pub const EXIT_RESTART_BUDGET: i32 = 70;
/// Exit code when the drain deadline passed with batches uncommitted.
pub const EXIT_DRAIN_TIMEOUT: i32 = 1;
/// Exit code after a second signal.
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// How often the drain says how far it is.
const DRAIN_LOG: Duration = Duration::from_secs(2);
/// How often the folder lock's connection is checked, and how often a
/// standby daemon tries to take the lock.
const LOCK_CHECK: Duration = Duration::from_secs(1);
const LOCK_RETRY: Duration = Duration::from_secs(1);
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

struct Children {
    ck: Addr<CheckpointKeeper>,
    writer: Addr<Writer>,
    validator: Addr<Validator>,
    parser: Addr<Parser>,
    watcher: Addr<Watcher>,
    credits: Credits,
    /// The CheckpointKeeper's disk work under way.
    disk: Arc<DiskWork>,
}

/// One pipeline's life in this daemon.
struct Run {
    planned: Planned,
    sql: Arc<PipelineSql>,
    /// The incoming folder's lock key, computed once (its canonical path).
    folder_key: i64,
    /// The folder lock while this daemon leads the pipeline's folder.
    lock: Option<Arc<FolderLock>>,
    /// A leadership attempt or check is under way.
    lock_busy: bool,
    standby_logged: bool,
    children: Option<Children>,
    generator: Option<Addr<Generator>>,
    restarts: RestartBudget,
    /// Failed too often: not run again until the daemon restarts.
    given_up: bool,
}

pub struct Supervisor {
    config: Arc<Config>,
    pool: Pool,
    health: Arc<Health>,
    until_idle: bool,
    /// The credit window, shared by every pipeline.
    window: Window,
    runs: Vec<Run>,
    http: Option<actix_web::dev::ServerHandle>,
    draining: bool,
    /// Called before a hard exit (second signal), e.g. to stop the
    /// embedded database.
    on_hard_exit: Option<Box<dyn FnOnce()>>,
    /// SIGTERM/SIGINT, installed by `main` before start-up; taken in
    /// `started`.
    signals: Option<signal_hook_tokio::Signals>,
}

impl Supervisor {
    /// `planned`: the pipelines, their tables prepared (wire types set).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        planned: Vec<Planned>,
        pool: Pool,
        health: Arc<Health>,
        until_idle: bool,
        http: Option<actix_web::dev::ServerHandle>,
        signals: signal_hook_tokio::Signals,
        on_hard_exit: Option<Box<dyn FnOnce()>>,
    ) -> Self {
        let runs = planned
            .into_iter()
            .map(|planned| {
                metrics().declare_reasons(
                    &planned.pipeline.name,
                    &planned.pipeline.reasons(),
                    &crate::intake::SkipReason::ALL.map(|r| r.as_str()),
                );
                Run {
                    sql: Arc::new(PipelineSql::new(&planned.pipeline)),
                    folder_key: crate::db::leader::folder_key(&planned.incoming),
                    planned,
                    lock: None,
                    lock_busy: false,
                    standby_logged: false,
                    children: None,
                    generator: None,
                    restarts: RestartBudget::new(
                        config.supervisor.max_restarts as usize,
                        Duration::from_secs(config.supervisor.restart_window_secs),
                    ),
                    given_up: false,
                }
            })
            .collect::<Vec<_>>();
        Supervisor {
            window: Window::new(config.pipeline.batches_in_flight, runs.len()),
            runs,
            config,
            pool,
            health,
            until_idle,
            http,
            draining: false,
            on_hard_exit,
            signals: Some(signals),
        }
    }

    /// Tries to take run `i`'s folder lock; on success starts its pipeline,
    /// else stays on standby and tries again shortly. While another daemon
    /// leads, this one reads nothing of that folder and `/readyz` says not
    /// ready.
    fn seek_leadership(&mut self, i: usize, ctx: &mut Context<Self>) {
        let run = &mut self.runs[i];
        if run.lock_busy || run.lock.is_some() || run.given_up || self.draining {
            return;
        }
        run.lock_busy = true;
        let pool = self.pool.clone();
        let key = run.folder_key;
        let fut = async move {
            tokio::time::timeout(LOCK_CHECK_TIMEOUT, FolderLock::try_take(&pool, key))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let run = &mut act.runs[i];
            run.lock_busy = false;
            let (name, folder) = (run.planned.pipeline.name.clone(), run.planned.incoming.display().to_string());
            match res {
                Ok(Some(lock)) if !act.draining => {
                    tracing::info!(pipeline = %name, %folder, "leading: this daemon ingests the folder");
                    run.lock = Some(Arc::new(lock));
                    act.start_children(i, ctx);
                    act.start_generator(i);
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !run.standby_logged {
                        tracing::info!(pipeline = %name, %folder, "standby: another ingestd ingests this folder");
                        run.standby_logged = true;
                    }
                    ctx.run_later(LOCK_RETRY, move |act, ctx| act.seek_leadership(i, ctx));
                }
                Err(e) => {
                    act.health.set_db_ok(false);
                    tracing::warn!(pipeline = %name, error = %e, "cannot take the folder lock; retrying");
                    ctx.run_later(LOCK_RETRY, move |act, ctx| act.seek_leadership(i, ctx));
                }
            }
        }));
    }

    /// Checks that run `i`'s lock connection is alive. If it is not, the
    /// lock is gone (another daemon may already lead): stop the pipeline at
    /// once and seek leadership again. Batches cut short are replayed from
    /// the checkpoints, and the checkpoint fence stops any overlap.
    fn check_leadership(&mut self, i: usize, ctx: &mut Context<Self>) {
        let run = &mut self.runs[i];
        let Some(lock) = run.lock.clone() else { return };
        if run.lock_busy {
            return;
        }
        run.lock_busy = true;
        ctx.spawn(async move { lock.alive(LOCK_CHECK_TIMEOUT).await }.into_actor(self).map(move |alive, act, ctx| {
            let run = &mut act.runs[i];
            run.lock_busy = false;
            if !alive && run.lock.is_some() {
                tracing::error!(pipeline = %run.planned.pipeline.name, "lost the folder lock (its database connection failed); stopping the pipeline");
                run.lock = None;
                run.standby_logged = false;
                if !act.draining {
                    act.stop_children(i);
                    act.seek_leadership(i, ctx);
                }
            }
        }));
    }

    /// The Generator writes into the pipeline's folder once it leads: the
    /// built-in pipeline's realistic events, or rows made from a declaration.
    fn start_generator(&mut self, i: usize) {
        let g = &self.config.generator;
        let run = &mut self.runs[i];
        if !g.enabled || run.generator.is_some() {
            return;
        }
        let p = &run.planned;
        let (maker, prefix): (Box<dyn FileMaker>, &str) = if p.is_builtin() {
            (Box::new(RowMaker::new(g.seed)), "events")
        } else {
            (Box::new(DeclaredMaker::new(p.pipeline.clone(), g.seed)), &p.pipeline.name)
        };
        run.generator = Some(
            Generator::new(
                &p.pipeline.name,
                p.incoming.clone(),
                maker,
                prefix,
                GenSpec { rows: g.rows, bad_frac: g.bad_frac, dup_frac: g.dup_frac },
                g.files,
                Duration::from_millis(g.interval_ms.max(1)),
            )
            .start(),
        );
    }

    /// Starts run `i`'s data path, downstream first, so every actor's
    /// downstream exists before anything can be sent to it.
    fn start_children(&mut self, i: usize, ctx: &mut Context<Self>) {
        let c = &self.config;
        let run = &self.runs[i];
        let p = &run.planned;
        let me = ctx.address().recipient::<ChildFailed>();
        let credits = self.window.for_pipeline();
        let keeper = CheckpointKeeper::new(
            self.pool.clone(),
            KeeperSettings {
                pipeline: p.pipeline.name.clone(),
                disposal: crate::disposal::Disposal {
                    processed: p.processed.clone(),
                    bad_records: p.bad_records.clone(),
                    after_commit: p.after_commit,
                },
                max_file_attempts: c.pipeline.max_file_attempts,
            },
        );
        let disk = keeper.disk_work();
        let ck = keeper.start();
        let writer = Writer::new(
            self.pool.clone(),
            ck.clone().recipient(),
            me.clone(),
            self.health.clone(),
            WriterSettings {
                pipeline: p.pipeline.clone(),
                sql: run.sql.clone(),
                batch_timeout: Duration::from_secs(c.database.batch_timeout_secs),
                writers: c.pipeline.writers,
                max_record_bytes: c.pipeline.max_record_bytes,
                batch_rows: p.batch_rows,
            },
        )
        .start();
        let validator = Validator::new(p.pipeline.clone(), writer.clone().recipient(), me.clone()).start();
        let parser = Parser::new(
            ParserSettings {
                pipeline: p.pipeline.clone(),
                open_files: c.pipeline.writers,
                batch_rows: p.batch_rows,
                batch_bytes: c.pipeline.batch_bytes,
                max_record_bytes: c.pipeline.max_record_bytes,
            },
            validator.clone().recipient(),
            me,
            credits.clone(),
        )
        .start();
        let watcher = Watcher::new(
            WatcherSettings {
                pipeline: p.pipeline.name.clone(),
                incoming: p.incoming.clone(),
                stable_for: Duration::from_millis(p.stable_for_ms),
                rescan_interval: Duration::from_millis(c.pipeline.rescan_interval_ms),
                // Enough files ahead to keep the window full of small files
                // (a small file's batch costs a small share of a credit), so
                // a writer's group fills to `batch_rows` (100-row files: ~95
                // per transaction, against ~70 with half as many); files
                // beyond the open ones wait as small path entries.
                files_in_flight: c.pipeline.batches_in_flight * 128,
            },
            ck.clone().recipient(),
            parser.clone().recipient(),
            ck.clone().recipient(),
        )
        .start();
        ck.do_send(SetWatcher(watcher.clone().recipient()));
        self.runs[i].children = Some(Children { ck, writer, validator, parser, watcher, credits, disk });
        self.health.set_running(i, true);
    }

    fn stop_children(&mut self, i: usize) {
        if let Some(c) = self.runs[i].children.take() {
            c.watcher.do_send(Stop);
            c.parser.do_send(Stop);
            c.validator.do_send(Stop);
            c.writer.do_send(Stop);
            c.ck.do_send(Stop);
            // Batches still queued in old actors die with them; their credits
            // return to the old window, which is dropped too.
            c.credits.close();
        }
        self.health.set_running(i, false);
    }

    /// Stops intake and waits for every batch in flight to commit and every
    /// finished file's disk work to end, in every pipeline, then stops the
    /// System.
    fn drain(&mut self, ctx: &mut Context<Self>, why: &'static str) {
        if self.draining {
            return;
        }
        self.draining = true;
        for i in 0..self.runs.len() {
            self.health.set_running(i, false);
        }
        tracing::info!(reason = why, "draining: no new files; committing batches in flight");
        // Done when the last batch in flight is dropped after its commit
        // (its credit comes back) and the last finished file's disk work
        // ends: both signal it, nothing is polled.
        let mut waits = Vec::new();
        for run in &self.runs {
            if let Some(g) = &run.generator {
                g.do_send(StopIntake);
            }
            if let Some(c) = &run.children {
                c.watcher.do_send(StopIntake);
                c.parser.do_send(StopReading);
                let (credits, disk) = (c.credits.clone(), c.disk.clone());
                waits.push(async move {
                    credits.drained().await;
                    disk.idle().await;
                });
            }
        }
        let drained = futures::future::join_all(waits);
        let limit = Duration::from_secs(self.config.shutdown.drain_timeout_secs);
        ctx.spawn(async move { tokio::time::timeout(limit, drained).await.is_ok() }.into_actor(self).map(
            |drained, act, ctx| {
                if drained {
                    tracing::info!("drained: every batch in flight is committed");
                    act.finish(ctx, 0);
                } else {
                    let (units, files) = act.in_flight();
                    tracing::error!(
                        credit_units_out = units,
                        files_finishing = files,
                        "drain deadline passed; stopping anyway (uncommitted batches are replayed at the next start)"
                    );
                    act.finish(ctx, EXIT_DRAIN_TIMEOUT);
                }
            },
        ));
        ctx.run_interval(DRAIN_LOG, |act, _| {
            let (_, files) = act.in_flight();
            tracing::info!(batches_in_flight = metrics().batches_in_flight.get(), files_finishing = files, "draining");
        });
    }

    /// Credit units out and files finishing, over every pipeline.
    fn in_flight(&self) -> (usize, usize) {
        self.runs
            .iter()
            .filter_map(|r| r.children.as_ref())
            .fold((0, 0), |(u, f), c| (u + c.credits.out(), f + c.disk.files()))
    }

    fn finish(&mut self, _ctx: &mut Context<Self>, code: i32) {
        for i in 0..self.runs.len() {
            self.stop_children(i);
            if let Some(g) = self.runs[i].generator.take() {
                g.do_send(Stop);
            }
        }
        if let Some(h) = self.http.take() {
            actix_rt::spawn(async move { h.stop(true).await });
        }
        System::current().stop_with_code(code);
    }

    /// `--until-idle`: every pipeline that runs has nothing waiting or in
    /// flight (a given-up pipeline waits for nothing).
    fn idle_check(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let mut watchers = Vec::new();
        for run in self.runs.iter().filter(|r| !r.given_up) {
            let Some(c) = &run.children else { return };
            if !c.credits.all_back() || c.disk.files() > 0 {
                return;
            }
            watchers.push(c.watcher.clone());
        }
        let fut = async move {
            for w in watchers {
                if !w.send(IsIdle).await.unwrap_or(false) {
                    return false;
                }
            }
            true
        };
        ctx.spawn(fut.into_actor(self).map(move |idle, act, ctx| {
            if idle {
                act.drain(ctx, "idle (--until-idle)");
            }
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::actors::set_mailbox_capacity(self.config.pipeline.mailbox_capacity);
        if let Some(signals) = self.signals.take() {
            ctx.add_stream(signals);
        }
        for i in 0..self.runs.len() {
            self.seek_leadership(i, ctx);
        }
        ctx.run_interval(LOCK_CHECK, |act, ctx| {
            for i in 0..act.runs.len() {
                act.check_leadership(i, ctx);
            }
        });
        ctx.run_interval(Duration::from_millis(100), |act, ctx| {
            if act.until_idle {
                act.idle_check(ctx);
            }
        });
    }
}

impl StreamHandler<i32> for Supervisor {
    fn handle(&mut self, signal: i32, ctx: &mut Context<Self>) {
        if self.draining {
            tracing::warn!(signal, "second signal: stopping now; uncommitted batches are replayed at the next start");
            if let Some(f) = self.on_hard_exit.take() {
                f();
            }
            std::process::exit(EXIT_SECOND_SIGNAL);
        }
        self.drain(ctx, if signal == SIGTERM { "SIGTERM" } else { "SIGINT" });
    }

    /// The signal stream never ends by itself; without this override actix
    /// would stop the Supervisor if it did.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<ChildFailed> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildFailed, ctx: &mut Context<Self>) {
        let Some(i) = self.runs.iter().position(|r| r.planned.pipeline.name == msg.pipeline) else { return };
        if self.runs[i].children.is_none() {
            // Already restarting: one failure often brings more with it.
            return;
        }
        metrics().restarts.with_label_values(&[&msg.pipeline, msg.actor]).inc();
        tracing::error!(pipeline = %msg.pipeline, actor = msg.actor, file_id = ?msg.file, error = %msg.error, "actor failed; restarting the pipeline from the checkpoints");
        if self.draining {
            tracing::error!("failure during the drain; stopping (uncommitted batches are replayed at the next start)");
            self.finish(ctx, EXIT_DRAIN_TIMEOUT);
            return;
        }
        let backoff = match self.runs[i].restarts.failed(Instant::now()) {
            Budget::Restart { backoff } => backoff,
            Budget::Spent { restarts } => {
                let window = self.config.supervisor.restart_window_secs;
                let alive = self.runs.iter().filter(|r| !r.given_up).count();
                if alive <= 1 {
                    eprintln!(
                        "ingestd: giving up: {restarts} restarts within {window}s; last failure: {}: {}",
                        msg.actor, msg.error
                    );
                    self.finish(ctx, EXIT_RESTART_BUDGET);
                } else {
                    tracing::error!(pipeline = %msg.pipeline, restarts, window_secs = window, last_failure = %msg.error, "giving up this pipeline (the others go on); restart the daemon to try it again");
                    self.runs[i].given_up = true;
                    self.stop_children(i);
                    if let Some(g) = self.runs[i].generator.take() {
                        g.do_send(Stop);
                    }
                }
                return;
            }
        };
        let run = &self.runs[i];
        let ck = run.children.as_ref().map(|c| c.ck.clone());
        // Stop the readers first so nothing new is started, then count the
        // failure against the file, then stop the rest.
        if let Some(c) = &run.children {
            c.watcher.do_send(Stop);
            c.parser.do_send(Stop);
        }
        let fut = async move {
            if let (Some(ck), Some(file_id)) = (ck, msg.file) {
                match ck.send(RecordFailure { file_id, error: format!("{}: {}", msg.actor, msg.error) }).await {
                    Ok(Ok(true)) => tracing::error!(file_id, "file parked: it failed too often"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the failure"),
                    Err(e) => tracing::warn!(error = %e, "cannot record the failure"),
                }
            }
        };
        ctx.wait(fut.into_actor(self).map(move |_, act, ctx| {
            act.stop_children(i);
            ctx.run_later(backoff, move |act, ctx| {
                if !act.draining && act.runs[i].lock.is_some() {
                    tracing::info!(pipeline = %act.runs[i].planned.pipeline.name, "restarting the pipeline");
                    act.start_children(i, ctx);
                }
            });
        }));
    }
}

/// The restart budget: more than `max` restarts within `window` and the
/// daemon gives up (a crash loop is not a way to run). Each restart waits
/// longer than the one before (100 ms doubling, up to 6.4 s).
#[derive(Debug)]
struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

/// What a failure leaves of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Budget {
    Restart { backoff: Duration },
    Spent { restarts: usize },
}

impl RestartBudget {
    fn new(max: usize, window: Duration) -> RestartBudget {
        RestartBudget { max, window, recent: VecDeque::new() }
    }

    /// Counts a failure at `now`.
    fn failed(&mut self, now: Instant) -> Budget {
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let n = self.recent.len();
        if n > self.max {
            return Budget::Spent { restarts: n };
        }
        Budget::Restart { backoff: Duration::from_millis(100 * 2u64.pow(n.min(7) as u32 - 1)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn the_restart_budget_backs_off_and_gives_up_past_its_limit() {
        let t0 = Instant::now();
        let mut b = RestartBudget::new(3, Duration::from_secs(60));
        // (seconds after start, expected)
        let steps = [
            (0, Budget::Restart { backoff: Duration::from_millis(100) }),
            (1, Budget::Restart { backoff: Duration::from_millis(200) }),
            (2, Budget::Restart { backoff: Duration::from_millis(400) }),
            (3, Budget::Spent { restarts: 4 }),
            // Failures older than the window no longer count.
            (62, Budget::Restart { backoff: Duration::from_millis(400) }),
            (200, Budget::Restart { backoff: Duration::from_millis(100) }),
        ];
        for (at, want) in steps {
            assert_eq!(b.failed(t0 + Duration::from_secs(at)), want, "at {at} s");
        }
        let mut long = RestartBudget::new(100, Duration::from_secs(60));
        let last = (0..10).map(|n| long.failed(t0 + Duration::from_millis(n))).last();
        assert_eq!(last, Some(Budget::Restart { backoff: Duration::from_millis(6400) }));
    }
}
