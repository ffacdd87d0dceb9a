//! Validator: applies the contract's rules to every record of a batch and
//! drops in-batch duplicates (first wins).
//!
//! - Receives: `ParsedBatch` (Parser).
//! - Emits: `ValidatedBatch` to the Writer, in arrival order, carrying the
//!   batch's credit on.
//! - State: a queue of accepted batches; one is validated at a time.
//! - On restart: the queue is lost with the actor; the Supervisor restarts
//!   the pipeline from the checkpoints, so nothing is lost or repeated.
//! - On drain: nothing special; batches already accepted are passed on.
//! - Backpressure: none of its own; the credit window bounds its queue.
//!
//! The rules themselves are the pure `core::validate`; this actor only runs
//! them off the actor thread.

use std::collections::{HashSet, VecDeque};

use actix::prelude::*;

use crate::actors::parser::panic_message;
use crate::actors::writer::Writer;
use crate::core::validate::validate;
use crate::db::copy::CopyEncoder;
use crate::messages::{ChildFailed, ParsedBatch, RejectRow, ValidatedBatch};

pub struct Validator {
    writer: Addr<Writer>,
    supervisor: Recipient<ChildFailed>,
    queue: VecDeque<ParsedBatch>,
    busy: bool,
}

impl Validator {
    pub fn new(writer: Addr<Writer>, supervisor: Recipient<ChildFailed>) -> Self {
        Validator { writer, supervisor, queue: VecDeque::new(), busy: false }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some(batch) = self.queue.pop_front() else { return };
        self.busy = true;
        let writer = self.writer.clone();
        let file_id = batch.file.file_id;
        let fut = async move {
            let validated = tokio::task::spawn_blocking(move || validate_batch(batch)).await;
            match validated {
                Ok(v) => {
                    // Awaiting the acceptance keeps batches in order.
                    let _ = writer.send(v).await;
                    None
                }
                Err(e) => Some(ChildFailed { actor: "validator", file: Some(file_id), error: panic_message(e) }),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|failure, act, ctx| {
            act.busy = false;
            match failure {
                None => act.pump(ctx),
                Some(f) => {
                    act.supervisor.do_send(f);
                    ctx.stop();
                }
            }
        }));
    }
}

/// Validates every record and encodes the valid ones for COPY; the first
/// valid row with a given event_id wins.
pub fn validate_batch(batch: ParsedBatch) -> ValidatedBatch {
    let now = chrono::Utc::now();
    let rows = batch.records.len();
    // Binary rows run about the size of the unescaped text plus ~120 bytes
    // of lengths and fixed-size values.
    let mut valid = Vec::with_capacity(rows);
    let mut rejects = Vec::new();
    let mut seen = HashSet::with_capacity(rows);
    let mut batch_duplicates = 0;
    for rec in batch.records.iter() {
        crate::failpoints::hit_row(rec.raw, rec.line);
        match validate(&batch.header, rec, now) {
            Ok(event) => {
                if seen.insert(event.event_id) {
                    valid.push((event, rec.line));
                } else {
                    batch_duplicates += 1;
                }
            }
            Err(rejection) => rejects.push(RejectRow {
                line: rec.line,
                reason: rejection.reason,
                detail: rejection.detail,
                raw: rec.raw.to_vec(),
                raw_truncated: rec.raw_truncated,
            }),
        }
    }
    // Rows go to the table in event_id order. Writers committing different
    // files at once then take the same ids in the same order, so one waits
    // for the other instead of deadlocking.
    valid.sort_unstable_by_key(|(e, _)| e.event_id);
    let mut events = CopyEncoder::new(batch.records.bytes() / 2 + rows * 128);
    for (event, line) in &valid {
        events.push(event, *line, &batch.file.name);
    }
    drop(valid);
    ValidatedBatch {
        file: batch.file,
        header: batch.header,
        start_offset: batch.start_offset,
        start_line: batch.start_line,
        end_offset: batch.end_offset,
        end_line: batch.end_line,
        rows: rows as u64,
        events: events.finish(),
        rejects,
        batch_duplicates,
        end: batch.end,
        credit: batch.credit,
    }
}

impl Actor for Validator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::actors::mailbox_capacity());
    }
}

impl Handler<ParsedBatch> for Validator {
    type Result = ();
    fn handle(&mut self, msg: ParsedBatch, ctx: &mut Context<Self>) {
        self.queue.push_back(msg);
        self.pump(ctx);
    }
}
