//! The Supervisor: wires the actors (downstream first), restarts the
//! pipeline when one of them fails, and runs the SIGTERM drain.
//!
//! Restart policy: any failure of a data-path actor (an error it cannot
//! retry, or a panic caught around parsing and validation) stops the whole
//! data path and starts it again after a backoff. In-flight batches are
//! dropped with the actors and replayed from the committed checkpoints, so a
//! restart loses and repeats nothing. A failure that names a file counts
//! against that file; past `pipeline.max_file_attempts` the file is parked
//! as `failed`, so one poison file cannot crash-loop the daemon. More than
//! `supervisor.max_restarts` restarts within `supervisor.restart_window_secs`
//! ends the process with exit code 70 and the reason.
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
use crate::actors::generator::{GenSpec, Generator};
use crate::actors::parser::{Parser, ParserSettings};
use crate::actors::validator::Validator;
use crate::actors::watcher::{Watcher, WatcherSettings};
use crate::actors::writer::{Writer, WriterSettings};
use crate::config::Config;
use crate::core::pipeline::Pipeline;
use crate::credit::{Credits, Window};
use crate::db::leader::FolderLock;
use crate::db::sql::PipelineSql;
use crate::db::Pool;
use crate::health::Health;
use crate::messages::{ChildFailed, IsIdle, RecordFailure, SetWatcher, Stop, StopIntake, StopReading};
use crate::metrics::metrics;

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

pub struct Supervisor {
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    sql: Arc<PipelineSql>,
    window: Window,
    pool: Pool,
    health: Arc<Health>,
    until_idle: bool,
    children: Option<Children>,
    generator: Option<Addr<Generator>>,
    http: Option<actix_web::dev::ServerHandle>,
    restarts: RestartBudget,
    draining: bool,
    /// Called before a hard exit (second signal), e.g. to stop the
    /// embedded database.
    on_hard_exit: Option<Box<dyn FnOnce()>>,
    /// The folder lock while this daemon leads.
    lock: Option<Arc<FolderLock>>,
    /// The incoming folder's lock key, computed once (its canonical path).
    folder_key: i64,
    /// A leadership attempt or check is under way.
    lock_busy: bool,
    standby_logged: bool,
    /// SIGTERM/SIGINT, installed by `main` before start-up; taken in
    /// `started`.
    signals: Option<signal_hook_tokio::Signals>,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        pipeline: Arc<Pipeline>,
        pool: Pool,
        health: Arc<Health>,
        until_idle: bool,
        http: Option<actix_web::dev::ServerHandle>,
        signals: signal_hook_tokio::Signals,
        on_hard_exit: Option<Box<dyn FnOnce()>>,
    ) -> Self {
        crate::metrics::metrics().declare_reasons(&pipeline.schema.reasons());
        let restarts = RestartBudget::new(
            config.supervisor.max_restarts as usize,
            Duration::from_secs(config.supervisor.restart_window_secs),
        );
        Supervisor {
            folder_key: crate::db::leader::folder_key(&config.paths.incoming),
            window: Window::new(config.pipeline.batches_in_flight, 1),
            sql: Arc::new(PipelineSql::new(&pipeline)),
            pipeline,
            config,
            pool,
            health,
            until_idle,
            children: None,
            generator: None,
            http,
            restarts,
            draining: false,
            on_hard_exit,
            lock: None,

            lock_busy: false,
            standby_logged: false,
            signals: Some(signals),
        }
    }

    /// Tries to take the folder lock; on success starts the pipeline, else
    /// stays on standby and tries again shortly. While another daemon leads,
    /// this one reads nothing and `/readyz` says not ready.
    fn seek_leadership(&mut self, ctx: &mut Context<Self>) {
        if self.lock_busy || self.lock.is_some() || self.draining {
            return;
        }
        self.lock_busy = true;
        let pool = self.pool.clone();
        let key = self.folder_key;
        let fut = async move {
            tokio::time::timeout(LOCK_CHECK_TIMEOUT, FolderLock::try_take(&pool, key))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.lock_busy = false;
            match res {
                Ok(Some(lock)) if !act.draining => {
                    tracing::info!(folder = %act.config.paths.incoming.display(), "leading: this daemon ingests the folder");
                    act.lock = Some(Arc::new(lock));
                    act.start_children(ctx);
                    act.start_generator();
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !act.standby_logged {
                        tracing::info!(folder = %act.config.paths.incoming.display(), "standby: another ingestd ingests this folder");
                        act.standby_logged = true;
                    }
                    ctx.run_later(LOCK_RETRY, |act, ctx| act.seek_leadership(ctx));
                }
                Err(e) => {
                    act.health.set_db_ok(false);
                    tracing::warn!(error = %e, "cannot take the folder lock; retrying");
                    ctx.run_later(LOCK_RETRY, |act, ctx| act.seek_leadership(ctx));
                }
            }
        }));
    }

    /// Checks that the lock connection is alive. If it is not, the lock is
    /// gone (another daemon may already lead): stop the pipeline at once and
    /// seek leadership again. Batches cut short are replayed from the
    /// checkpoints, and the checkpoint fence stops any overlap.
    fn check_leadership(&mut self, ctx: &mut Context<Self>) {
        let Some(lock) = self.lock.clone() else { return };
        if self.lock_busy {
            return;
        }
        self.lock_busy = true;
        ctx.spawn(async move { lock.alive(LOCK_CHECK_TIMEOUT).await }.into_actor(self).map(|alive, act, ctx| {
            act.lock_busy = false;
            if !alive && act.lock.is_some() {
                tracing::error!("lost the folder lock (its database connection failed); stopping the pipeline");
                act.lock = None;
                act.standby_logged = false;
                if !act.draining {
                    act.stop_children();
                    act.seek_leadership(ctx);
                }
            }
        }));
    }

    fn start_generator(&mut self) {
        let g = &self.config.generator;
        if g.enabled && self.generator.is_none() {
            self.generator = Some(
                Generator::new(
                    self.config.paths.incoming.clone(),
                    GenSpec { rows: g.rows, bad_frac: g.bad_frac, dup_frac: g.dup_frac },
                    g.files,
                    Duration::from_millis(g.interval_ms.max(1)),
                    g.seed,
                )
                .start(),
            );
        }
    }

    /// Starts the data path, downstream first, so every actor's downstream
    /// exists before anything can be sent to it.
    fn start_children(&mut self, ctx: &mut Context<Self>) {
        let c = &self.config;
        let me = ctx.address().recipient::<ChildFailed>();
        let credits = self.window.for_pipeline();
        let keeper = CheckpointKeeper::new(
            self.pool.clone(),
            KeeperSettings {
                pipeline: self.pipeline.name.clone(),
                disposal: crate::disposal::Disposal {
                    processed: c.paths.processed.clone(),
                    bad_records: c.paths.bad_records.clone(),
                    after_commit: c.pipeline.after_commit,
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
                pipeline: self.pipeline.clone(),
                sql: self.sql.clone(),
                batch_timeout: Duration::from_secs(c.database.batch_timeout_secs),
                writers: c.pipeline.writers,
                max_record_bytes: c.pipeline.max_record_bytes,
                batch_rows: c.pipeline.batch_rows,
            },
        )
        .start();
        let validator = Validator::new(self.pipeline.clone(), writer.clone().recipient(), me.clone()).start();
        let parser = Parser::new(
            ParserSettings {
                pipeline: self.pipeline.clone(),
                open_files: c.pipeline.writers,
                batch_rows: c.pipeline.batch_rows,
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
                incoming: c.paths.incoming.clone(),
                stable_for: Duration::from_millis(c.pipeline.stable_for_ms),
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
        )
        .start();
        ck.do_send(SetWatcher(watcher.clone().recipient()));
        self.children = Some(Children { ck, writer, validator, parser, watcher, credits, disk });
        self.health.set_running(true);
    }

    fn stop_children(&mut self) {
        if let Some(c) = self.children.take() {
            c.watcher.do_send(Stop);
            c.parser.do_send(Stop);
            c.validator.do_send(Stop);
            c.writer.do_send(Stop);
            c.ck.do_send(Stop);
            // Batches still queued in old actors die with them; their credits
            // return to the old window, which is dropped too.
            c.credits.close();
        }
        self.health.set_running(false);
    }

    /// Stops intake and waits for every batch in flight to commit and every
    /// finished file's disk work to end, then stops the System.
    fn drain(&mut self, ctx: &mut Context<Self>, why: &'static str) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.health.set_running(false);
        tracing::info!(reason = why, "draining: no new files; committing batches in flight");
        if let Some(g) = &self.generator {
            g.do_send(StopIntake);
        }
        let Some(c) = &self.children else {
            self.finish(ctx, 0);
            return;
        };
        c.watcher.do_send(StopIntake);
        c.parser.do_send(StopReading);
        // Done when the last batch in flight is dropped after its commit
        // (its credit comes back) and the last finished file's disk work
        // ends: both signal it, nothing is polled.
        let (credits, disk) = (c.credits.clone(), c.disk.clone());
        let drained = async move {
            credits.drained().await;
            disk.idle().await;
        };
        let limit = Duration::from_secs(self.config.shutdown.drain_timeout_secs);
        ctx.spawn(async move { tokio::time::timeout(limit, drained).await.is_ok() }.into_actor(self).map(
            |drained, act, ctx| {
                if drained {
                    tracing::info!("drained: every batch in flight is committed");
                    act.finish(ctx, 0);
                } else {
                    let (batches, files) = act.children.as_ref().map_or((0, 0), |c| (c.credits.out(), c.disk.files()));
                    tracing::error!(
                        credit_units_out = batches,
                        files_finishing = files,
                        "drain deadline passed; stopping anyway (uncommitted batches are replayed at the next start)"
                    );
                    act.finish(ctx, EXIT_DRAIN_TIMEOUT);
                }
            },
        ));
        ctx.run_interval(DRAIN_LOG, |act, _| {
            if let Some(c) = &act.children {
                tracing::info!(
                    batches_in_flight = metrics().batches_in_flight.get(),
                    files_finishing = c.disk.files(),
                    "draining"
                );
            }
        });
    }

    fn finish(&mut self, _ctx: &mut Context<Self>, code: i32) {
        self.stop_children();
        if let Some(g) = self.generator.take() {
            g.do_send(Stop);
        }
        if let Some(h) = self.http.take() {
            actix_rt::spawn(async move { h.stop(true).await });
        }
        System::current().stop_with_code(code);
    }

    fn idle_check(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let Some(c) = &self.children else { return };
        let all_returned = c.credits.all_back() && c.disk.files() == 0;
        let watcher = c.watcher.clone();
        let fut = async move { watcher.send(IsIdle).await.unwrap_or(false) };
        ctx.spawn(fut.into_actor(self).map(move |idle, act, ctx| {
            if idle && all_returned {
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
        self.seek_leadership(ctx);
        ctx.run_interval(LOCK_CHECK, |act, ctx| act.check_leadership(ctx));
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
        if self.children.is_none() {
            // Already restarting: one failure often brings more with it.
            return;
        }
        metrics().restarts.with_label_values(&[msg.actor]).inc();
        tracing::error!(actor = msg.actor, file_id = ?msg.file, error = %msg.error, "actor failed; restarting the pipeline from the checkpoints");
        if self.draining {
            tracing::error!("failure during the drain; stopping (uncommitted batches are replayed at the next start)");
            self.finish(ctx, EXIT_DRAIN_TIMEOUT);
            return;
        }
        let backoff = match self.restarts.failed(Instant::now()) {
            Budget::Restart { backoff } => backoff,
            Budget::Spent { restarts } => {
                eprintln!(
                    "ingestd: giving up: {restarts} restarts within {}s; last failure: {}: {}",
                    self.config.supervisor.restart_window_secs, msg.actor, msg.error
                );
                self.finish(ctx, EXIT_RESTART_BUDGET);
                return;
            }
        };
        let ck = self.children.as_ref().map(|c| c.ck.clone());
        // Stop the readers first so nothing new is started, then count the
        // failure against the file, then stop the rest.
        if let Some(c) = &self.children {
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
            act.stop_children();
            ctx.run_later(backoff, |act, ctx| {
                if !act.draining && act.lock.is_some() {
                    tracing::info!("restarting the pipeline");
                    act.start_children(ctx);
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
