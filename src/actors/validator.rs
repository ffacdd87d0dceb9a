//! Validator: applies the contract's rules to every record of a batch,
//! drops in-batch duplicates (first wins) and sets apart the rows whose id
//! it saw in a recent batch (`Repeats`).
//!
//! - Receives: `Parsed` (Parser).
//! - Emits: `Validated` to the Writer, in arrival order, each batch
//!   carrying its credit on.
//! - State: a queue of accepted read steps, one validated at a time (all
//!   its batches in one blocking-pool trip); the ids
//!   of recent valid rows (`RecentIds`, bounded).
//! - On restart: the queue is lost with the actor; the Supervisor restarts
//!   the pipeline from the checkpoints, so nothing is lost or repeated. The
//!   recent ids start empty, which only costs speed.
//! - On drain: nothing special; batches already accepted are passed on.
//! - Backpressure: none of its own; the credit window bounds its queue.
//!
//! The rules themselves are the pure `core::validate`; this actor only runs
//! them off the actor thread.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;

use crate::actors::parser::panic_message;
use crate::actors::writer::Writer;
use crate::core::validate::validate;
use crate::db::copy::CopyEncoder;
use crate::messages::{ChildFailed, Parsed, ParsedBatch, RejectRow, Repeats, Validated, ValidatedBatch};

/// Ids one generation of `RecentIds` holds: 7/8 of 65 536, so a generation
/// never outgrows its 64 Ki-bucket table (about 0.6 MB).
const GENERATION: usize = 57_344;

/// The ids of the latest valid rows (up to two generations), as 64-bit
/// hashes. A row whose id is here is very likely a duplicate, but not
/// surely: its first occurrence may still be uncommitted, refused by the
/// database, or a hash collision. So it is only *presumed* one, and the
/// Writer checks it against the table; guessing wrong costs time, never
/// correctness.
pub struct RecentIds {
    /// Keys the hash per process, so no input can aim at collisions.
    seed: u64,
    current: HashSet<u64, BuildHasherDefault<Prehashed>>,
    previous: HashSet<u64, BuildHasherDefault<Prehashed>>,
}

impl Default for RecentIds {
    fn default() -> Self {
        RecentIds { seed: RandomState::new().hash_one(0u8), current: HashSet::default(), previous: HashSet::default() }
    }
}

impl RecentIds {
    /// Both halves of the id through a 64-bit finalizer (splitmix64's):
    /// every input bit moves every output bit, so sequential ids spread
    /// over the table as well as random ones.
    fn key(&self, id: &uuid::Uuid) -> u64 {
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let (hi, lo) = id.as_u64_pair();
        mix(hi ^ mix(lo ^ self.seed))
    }

    pub fn contains(&self, id: &uuid::Uuid) -> bool {
        let k = self.key(id);
        self.current.contains(&k) || self.previous.contains(&k)
    }

    pub fn insert(&mut self, id: &uuid::Uuid) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
            self.current.reserve(GENERATION);
        }
        let k = self.key(id);
        self.current.insert(k);
    }
}

/// The hasher of sets whose keys are hashes already.
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; anything else folds in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct Validator {
    writer: Addr<Writer>,
    supervisor: Recipient<ChildFailed>,
    /// Read steps' batches, one step validated at a time.
    queue: VecDeque<Vec<ParsedBatch>>,
    /// Taken by the batch being validated (off the actor thread), given back
    /// with its result; `None` while a batch is being validated.
    recent: Option<RecentIds>,
}

impl Validator {
    pub fn new(writer: Addr<Writer>, supervisor: Recipient<ChildFailed>) -> Self {
        Validator { writer, supervisor, queue: VecDeque::new(), recent: Some(RecentIds::default()) }
    }

    /// Validates the next `Parsed` (all its batches in one blocking-pool
    /// trip) if none is being validated.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.recent.is_none() {
            return;
        }
        let Some(batches) = self.queue.pop_front() else { return };
        let mut recent = self.recent.take().expect("checked above");
        let writer = self.writer.clone();
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
                        validate_batch(b, &mut recent, &mut room)
                    })
                    .collect();
                (v, recent)
            })
            .await;
            match validated {
                Ok((v, recent)) => {
                    // Awaiting the acceptance keeps batches in order.
                    let _ = writer.send(Validated(v)).await;
                    Ok(recent)
                }
                Err(e) => Err(ChildFailed {
                    actor: "validator",
                    file: Some(validating.load(Ordering::Relaxed)),
                    error: panic_message(e),
                }),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| match result {
            Ok(recent) => {
                act.recent = Some(recent);
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

/// Validates every record and encodes the valid ones for COPY, into `room`
/// (see `CopyEncoder::within`); the first valid row with a given event_id
/// wins. Valid rows whose id is in `recent` go to the batch's repeats; the
/// ids of all valid rows join `recent`.
pub fn validate_batch(batch: ParsedBatch, recent: &mut RecentIds, room: &mut BytesMut) -> ValidatedBatch {
    let now = chrono::Utc::now();
    let rows = batch.records.len();
    let mut valid = Vec::with_capacity(rows);
    let mut rejects = Vec::new();
    for rec in batch.records.iter() {
        crate::failpoints::hit_row(rec.raw, rec.line);
        match validate(&batch.header, rec, now) {
            Ok(event) => valid.push((event, rec.line)),
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
    // for the other instead of deadlocking. Sorted by id, then line, the
    // first row of each id leads its run: the rest are in-batch duplicates.
    valid.sort_unstable_by_key(|(e, line)| (e.event_id, *line));
    let before = valid.len();
    valid.dedup_by_key(|(e, _)| e.event_id);
    let batch_duplicates = (before - valid.len()) as u64;
    let mut events = CopyEncoder::within(std::mem::take(room));
    let mut repeats = CopyEncoder::new(0);
    let mut repeat_ids = Vec::new();
    for (event, line) in &valid {
        if recent.contains(&event.event_id) {
            repeats.push(event, *line, &batch.file.name);
            repeat_ids.push(event.event_id);
        } else {
            events.push(event, *line, &batch.file.name);
        }
    }
    for (event, _) in &valid {
        recent.insert(&event.event_id);
    }
    drop(valid);
    let (events, rest) = events.finish_within();
    *room = rest;
    ValidatedBatch {
        file: batch.file,
        header: batch.header,
        start_offset: batch.start_offset,
        start_line: batch.start_line,
        end_offset: batch.end_offset,
        end_line: batch.end_line,
        rows: rows as u64,
        events,
        repeats: Repeats { ids: repeat_ids, rows: repeats.finish() },
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

    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    /// Two generations are remembered; the third start forgets the first.
    #[test]
    fn recent_ids_keep_two_generations() {
        let g = GENERATION as u128;
        let mut r = RecentIds::default();
        assert!(!r.contains(&id(0)));
        for n in 0..2 * g {
            r.insert(&id(n));
        }
        assert!((0..2 * g).all(|n| r.contains(&id(n))));
        assert!(!r.contains(&id(2 * g)));
        r.insert(&id(2 * g));
        assert_eq!((0..g).filter(|&n| r.contains(&id(n))).count(), 0, "the first generation is forgotten");
        assert!((g..=2 * g).all(|n| r.contains(&id(n))));
        // A generation never outgrows the table it was given.
        assert!(r.previous.capacity() < 2 * GENERATION, "{}", r.previous.capacity());
    }
}
