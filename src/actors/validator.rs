//! Validator: applies the pipeline's rules to every record of a batch,
//! drops in-batch duplicates (first wins) and sets apart the rows whose key
//! it saw in a recent batch (presumed duplicates).
//!
//! - Receives: `Parsed` (Parser).
//! - Emits: `Validated` to its downstream (the Writer), in arrival order,
//!   each batch carrying its credit on.
//! - State: a queue of accepted read steps, one validated at a time (all
//!   its batches in one blocking-pool trip); the keys of recent valid rows
//!   (`RecentKeys`, bounded) and reusable scratch buffers.
//! - On restart: the queue is lost with the actor; the Supervisor restarts
//!   the pipeline from the checkpoints, so nothing is lost or repeated. The
//!   recent keys start empty, which only costs speed.
//! - On drain: nothing special; batches already accepted are passed on.
//! - Backpressure: none of its own; the credit window bounds its queue.
//!
//! The rules themselves are the pure `core::validate::validate_records`;
//! this actor only runs them off the actor thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;

use crate::actors::panic_message;
use crate::core::pipeline::Pipeline;
use crate::core::validate::{validate_records, Validation};
use crate::messages::{ChildFailed, Parsed, ParsedBatch, Validated, ValidatedBatch};

pub struct Validator {
    pipeline: Arc<Pipeline>,
    downstream: Recipient<Validated>,
    supervisor: Recipient<ChildFailed>,
    /// Read steps' batches, one step validated at a time.
    queue: VecDeque<Vec<ParsedBatch>>,
    /// Taken by the step being validated (off the actor thread), given back
    /// with its result; `None` meanwhile.
    state: Option<Validation>,
}

impl Validator {
    pub fn new(pipeline: Arc<Pipeline>, downstream: Recipient<Validated>, supervisor: Recipient<ChildFailed>) -> Self {
        Validator { pipeline, downstream, supervisor, queue: VecDeque::new(), state: Some(Validation::remembering()) }
    }

    /// Validates the next `Parsed` (all its batches in one blocking-pool
    /// trip) if none is being validated.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.state.is_none() {
            return;
        }
        let Some(batches) = self.queue.pop_front() else { return };
        let mut state = self.state.take().expect("checked above");
        let downstream = self.downstream.clone();
        let pipeline = self.pipeline.clone();
        // The file being validated, for blaming a panic on the right one.
        let validating = Arc::new(AtomicI64::new(batches.first().map_or(0, |b| b.file.file_id)));
        let now_validating = validating.clone();
        let fut = async move {
            let validated = tokio::task::spawn_blocking(move || {
                let mut room = BytesMut::with_capacity(batches.iter().map(payload_room).sum());
                let v: Vec<ValidatedBatch> = batches
                    .into_iter()
                    .map(|b| {
                        now_validating.store(b.file.file_id, Ordering::Relaxed);
                        validate_batch(&pipeline, b, &mut state, &mut room)
                    })
                    .collect();
                (v, state)
            })
            .await;
            match validated {
                Ok((v, state)) => {
                    // Awaiting the acceptance keeps batches in order.
                    let _ = downstream.send(Validated(v)).await;
                    Ok(state)
                }
                Err(e) => Err(ChildFailed {
                    actor: "validator",
                    file: Some(validating.load(Ordering::Relaxed)),
                    error: panic_message(e),
                }),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(state) => {
                act.state = Some(state);
                act.pump(ctx)
            }
            Err(f) => {
                act.supervisor.do_send(f);
                ctx.stop();
            }
        }));
    }
}

/// Room for a batch's events payload: binary rows run about the size of
/// the unescaped text plus ~120 bytes of lengths and fixed-size values.
fn payload_room(batch: &ParsedBatch) -> usize {
    batch.records.bytes() / 2 + batch.records.len() * 128
}

/// Validates one batch into `room` (see `CopyEncoder::within`).
fn validate_batch(
    pipeline: &Pipeline,
    batch: ParsedBatch,
    state: &mut Validation,
    room: &mut BytesMut,
) -> ValidatedBatch {
    for rec in batch.records.iter() {
        crate::failpoints::hit_row(rec.raw, rec.line);
    }
    let mut checked = validate_records(
        &pipeline.schema,
        &batch.header,
        batch.records.iter(),
        &batch.file.name,
        chrono::Utc::now(),
        state,
        room,
    );
    // Only the Writer's isolation of refused rows needs them.
    checked.event_lines = Vec::new();
    ValidatedBatch::new(batch, checked)
}

impl Actor for Validator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::actors::mailbox_capacity());
    }
}

impl Handler<Parsed> for Validator {
    type Result = ();
    fn handle(&mut self, msg: Parsed, ctx: &mut Context<Self>) {
        self.queue.push_back(msg.0);
        self.pump(ctx);
    }
}
