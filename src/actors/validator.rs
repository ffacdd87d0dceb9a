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
        let name = self.pipeline.name.clone();
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
                    pipeline: name,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::testing::{wait_for, Collector};
    use crate::core::header::Header;
    use crate::core::pipeline::builtin;
    use crate::core::reader::RecordReader;
    use crate::core::record::{RawRecord, RecordBatch};
    use crate::credit::Window;
    use crate::messages::{BatchEnd, FileTask};

    const A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    /// A file's header and records, read as the Parser reads them.
    fn read(text: &str) -> (Header, RecordBatch) {
        let mut reader = RecordReader::new(text.as_bytes(), 0, 1, 1 << 20);
        let mut rec = RawRecord::default();
        reader.read_header(&mut rec).unwrap();
        let header = Header::parse(&builtin().schema, &rec);
        let mut batch = RecordBatch::with_capacity(8, text.len());
        while reader.read_record(&mut rec).unwrap() {
            batch.push(&rec);
        }
        (header, batch)
    }

    /// One batch in, the same batch out validated: events, rejects and
    /// duplicates counted, its credit carried on (back once dropped).
    #[actix_rt::test]
    async fn validates_a_batch_and_passes_it_on_with_its_credit() {
        let (collector, got) = Collector::<Validated>::start();
        let (failures, failed) = Collector::<ChildFailed>::start();
        let validator = Validator::new(builtin(), collector.recipient(), failures.recipient()).start();
        let text = format!(
            "event_id,event_type,user_id,product_id,event_timestamp\n\
             {A},view,u1,p1,2026-01-01 00:00:00\n\
             nope,view,u2,p2,2026-01-01 00:00:00\n\
             {A},view,u3,p3,2026-01-01 00:00:00\n\
             {B},purchase,u4,p4,2026-01-01 00:00:00\n\
             {B},VIEW,u5,p5,2026-01-01 00:00:00\n"
        );
        let (header, records) = read(&text);
        let credits = Window::new(1, 1).for_pipeline();
        let mut step = credits.step().await.unwrap();
        let file = Arc::new(FileTask {
            file_id: 7,
            path: "/in/f.csv".into(),
            name: "f.csv".into(),
            fingerprint: String::new(),
            size: text.len() as u64,
            stamp: crate::fsutil::Stamp { size: 0, mtime_ns: 0, ino: 0 },
            gzip: false,
            offset: 0,
            line: 1,
        });
        let batch = ParsedBatch {
            file,
            header: Arc::new(header),
            start_offset: 0,
            start_line: 1,
            end_offset: text.len() as u64,
            end_line: 7,
            credit: step.split(500, records.len()),
            records,
            end: BatchEnd::Eof,
        };
        drop(step);
        validator.send(Parsed(vec![batch])).await.unwrap();
        wait_for(&got, 1).await;
        let out = got.lock().unwrap().remove(0);
        let [b] = &out.0[..] else { panic!("one batch") };
        let rejects: Vec<(u64, &str)> = b.rejects.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(rejects, [(3, "invalid_uuid"), (5, "purchase_without_price")]);
        assert_eq!((b.rows, b.events.rows(), b.batch_duplicates, b.repeats.rows()), (5, 2, 1, 0));
        assert!(b.end.is_last() && b.file.file_id == 7);
        assert!(failed.lock().unwrap().is_empty());
        assert_eq!(credits.out(), 500, "the credit travels with the batch");
        drop(out);
        assert!(credits.all_back());
    }
}
