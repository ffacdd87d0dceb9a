//! Generator: writes synthetic files into a pipeline's incoming folder,
//! for demos and benchmarks (`generator.enabled`); the files themselves
//! come from `crate::generate`, like `ingestd generate`'s.
//!
//! - Receives: `StopIntake` (Supervisor).
//! - Emits: files in the incoming folder (temp name, then rename), nothing
//!   to other actors: the Watcher finds them like any producer's.
//! - State: the file counter and the file maker (its random generator and
//!   recent keys, to make duplicates).
//! - On restart / drain: stops writing; a file is either renamed complete or
//!   not there.
//! - Backpressure: none needed; it writes one file per interval.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;

use crate::generate::{file_name, FileMaker, GenSpec};
use crate::messages::StopIntake;
use crate::metrics::{metrics, PipelineMetrics};

pub struct Generator {
    out: PathBuf,
    spec: GenSpec,
    /// 0 = endless.
    files: u64,
    interval: Duration,
    written: u64,
    maker: Option<Box<dyn FileMaker>>,
    /// File names start with this (the pipeline's name).
    prefix: String,
    m: PipelineMetrics,
    stopped: bool,
}

impl Generator {
    pub fn new(
        pipeline: &str,
        out: PathBuf,
        maker: Box<dyn FileMaker>,
        prefix: &str,
        spec: GenSpec,
        files: u64,
        interval: Duration,
    ) -> Self {
        Generator {
            out,
            spec,
            files,
            interval,
            written: 0,
            maker: Some(maker),
            prefix: prefix.to_owned(),
            m: metrics().pipeline(pipeline),
            stopped: false,
        }
    }

    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.stopped || (self.files != 0 && self.written >= self.files) {
            return;
        }
        let Some(mut maker) = self.maker.take() else { return };
        let (out, spec, seq, prefix) = (self.out.clone(), self.spec.clone(), self.written, self.prefix.clone());
        let fut = async move {
            tokio::task::spawn_blocking(move || {
                let name = file_name(&prefix, seq);
                let r = maker.write_file(&out, &name, &spec);
                (maker, name, r)
            })
            .await
        };
        ctx.wait(fut.into_actor(self).map(|res, act, _| match res {
            Ok((maker, name, r)) => {
                act.maker = Some(maker);
                act.written += 1;
                match r {
                    Ok(stats) => {
                        act.m.generated_files.inc();
                        tracing::info!(file = %name, rows = stats.rows, bad = stats.bad, duplicates = stats.duplicates, "generated file");
                    }
                    Err(e) => tracing::warn!(file = %name, error = %e, "cannot write generated file"),
                }
            }
            Err(e) => tracing::error!(error = %e, "generator task failed"),
        }));
    }
}

impl Actor for Generator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.write_next(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.write_next(ctx));
    }
}

impl Handler<StopIntake> for Generator {
    type Result = ();
    fn handle(&mut self, _: StopIntake, _: &mut Context<Self>) {
        self.stopped = true;
    }
}
